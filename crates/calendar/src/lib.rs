//! Working-day calendars and durations: how the law counts time.
//!
//! Pure code, no I/O beyond reading a calendar file's text: used alike by the engine (to set
//! deadlines) and by projections (to measure lateness in working time).

pub mod duration;

pub use duration::Duration;
