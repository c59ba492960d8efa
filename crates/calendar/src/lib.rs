//! Working-day calendars and durations: how the law counts time.
//!
//! Pure code, no I/O beyond reading a calendar file's text: used alike by the engine (to set
//! deadlines) and by projections (to measure lateness in working time).
//!
//! # Model
//!
//! A [`Calendar`] answers in UTC instants; days, office hours and cut-offs are local to its time
//! zone. Working time accrues only inside the office-hour segments of working days. A working day
//! is a weekday not listed in `holidays`, or any day listed in `working_days` (make-up days, làm
//! bù). `Nwd` is N × [`Calendar::working_day_length`] of working time and `Nwh` is N hours of it;
//! a due instant landing exactly at the end of a segment stays there (17:00, or 11:30), so a due
//! instant satisfies `start < t <= end` for some segment ([`Calendar::is_due_instant`]), while a
//! working instant satisfies `start <= t < end` ([`Calendar::is_working_instant`]). `Nd` adds
//! local calendar days at the same local time, `Nh` wall-clock hours.
//!
//! Holidays are known only for the dates a calendar covers: a computation that needs any other
//! day returns [`Error::BeyondCoverage`]. Every loop is bounded by the coverage.
//!
//! # File format (`workflows/calendars/*.toml`)
//!
//! ```toml
//! [calendar]
//! name = "vn-2026"                  # required; [a-z0-9_-]; a trailing -YYYY names family and year
//! family = "vn"                     # optional; default: name minus its trailing -YYYY (or name)
//! covers = "2026-01-01..2026-12-31" # optional; default: the year in the name (required without)
//! source = "where the data came from"   # optional free text
//! timezone = "Asia/Ho_Chi_Minh"     # required; IANA name
//! weekend = ["sat", "sun"]          # required; mon tue wed thu fri sat sun (may be empty)
//! hours = ["07:30-11:30", "13:00-17:00"]   # required; HH:MM-HH:MM local, in order, not touching
//! holidays = ["2026-04-30", "2026-02-14..2026-02-22"]   # days off; ranges of at most 31 days
//! working_days = ["2026-01-10"]     # make-up working days; each must be a weekend day
//!
//! [office."ha-noi"]                 # optional, any number: office-hour overrides
//! note = "Hà Nội: administrative offices"   # optional free text
//! hours = ["08:00-12:00", "13:00-17:00"]    # required; same rules as above
//! ```
//!
//! Unknown keys are errors. Every holiday and working day must lie inside the file's coverage, and
//! a date may not be listed twice or be both a holiday and a working day.
//!
//! # Families
//!
//! Governments publish one schedule per year, but deadlines cross year ends. [`Calendar::load_dir`]
//! groups the files of a directory by family and merges each group into one calendar: the members
//! must agree on `timezone`, `weekend`, `hours` and the `[office]` tables, have distinct names, and
//! cover contiguous dates without overlap. [`Calendar::hash`] identifies exactly the data used (the
//! members' file hashes, plus the office override for [`Calendar::for_office`]);
//! [`Calendar::members`] lists each file's own hash for the record.
//!
//! # Offices
//!
//! `[office."KEY"]` gives an agency's or a province's own office hours. [`Calendar::for_office`]
//! returns the calendar with those hours (same days off) and a hash that includes the override; an
//! unknown key returns the calendar unchanged, so callers may pass every agency key they have.

mod calendar;
pub mod duration;
mod error;
mod file;
mod hours;

pub use calendar::{Calendar, Member};
pub use duration::Duration;
pub use error::Error;
pub use hours::OfficeHours;
