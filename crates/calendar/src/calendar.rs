//! The [`Calendar`]: a family of checked calendar files merged into one immutable value, and all
//! the arithmetic on it (clock start, adding durations, working time between instants).
//!
//! Every instant in and out is UTC; days, office hours and cut-offs are local to the calendar's
//! zone. Working time accrues only inside office-hour segments of working days. Every loop walks
//! days forward or backward and stops at the family's coverage, so no call can run unbounded, and
//! a computation that needs an uncovered day returns [`Error::BeyondCoverage`] instead of guessing.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::file::{CalendarFile, Pos, parse_file};
use crate::hours::OfficeHours;
use crate::{Duration, Error};

/// Most files in one family.
pub const FAMILY_MEMBERS_MAX: usize = 200;
/// Most calendar files read by [`Calendar::load_dir`].
pub const DIR_FILES_MAX: usize = 1000;
/// Largest calendar file read, in bytes.
pub const FILE_BYTES_MAX: u64 = 1 << 20;

/// One file of a family, for the record: which exact data a deadline was computed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The file's `name`, e.g. `vn-2026`.
    pub name: String,
    /// Lower-case hex SHA-256 of the file's exact text.
    pub hash: String,
    /// Where it was read from.
    pub origin: String,
    /// The file's `source` key: where its data came from, if it says.
    pub source: Option<String>,
    /// First covered day.
    pub first: NaiveDate,
    /// Last covered day.
    pub last: NaiveDate,
}

/// The data shared by a family and all its office views.
#[derive(Debug)]
struct Family {
    /// Family name, e.g. `vn`.
    name: String,
    /// Zone of all local arithmetic.
    tz: Tz,
    /// Weekend days, indexed by `Weekday::num_days_from_monday`.
    weekend: [bool; 7],
    /// Default office hours.
    hours: OfficeHours,
    /// Days off that would otherwise be working days (or are anyway, e.g. within Tết).
    holidays: BTreeSet<NaiveDate>,
    /// Make-up working days (làm bù) that would otherwise be off.
    working_days: BTreeSet<NaiveDate>,
    /// Office-hour overrides by agency or province key.
    offices: BTreeMap<String, OfficeHours>,
    /// First covered day.
    first: NaiveDate,
    /// Last covered day.
    last: NaiveDate,
    /// Member files in name order.
    members: Vec<Member>,
    /// SHA-256 over the members' hashes (see [`Calendar::hash`]).
    hash: String,
}

/// A working-day calendar: immutable and cheap to clone (the data is shared).
#[derive(Clone, Debug)]
pub struct Calendar {
    /// The family's data.
    family: Arc<Family>,
    /// Office hours in force: the family's, or an office's override.
    hours: OfficeHours,
    /// The office key whose hours are in force, if any.
    office: Option<String>,
    /// Hash of exactly the data used: the family's, plus the office override if any.
    hash: String,
    /// The office segments of every covered day under `hours`, computed on first use and
    /// shared by clones (see [`Calendar::segments_on`]).
    segments: Arc<SegmentTable>,
}

/// Each covered day's office segments, by day from the first covered one (`None` inside: the
/// coverage is too long to keep).
#[derive(Default)]
struct SegmentTable(OnceLock<Option<Vec<Box<[Segment]>>>>);

impl std::fmt::Debug for SegmentTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(Some(days)) => write!(f, "SegmentTable({} days)", days.len()),
            Some(None) => write!(f, "SegmentTable(not kept)"),
            None => write!(f, "SegmentTable(not built)"),
        }
    }
}

/// Longest coverage whose days' segments are kept in memory (about a century): a calendar
/// covering more computes each day's segments when asked, as before.
pub const SEGMENT_CACHE_DAYS_MAX: i64 = 36_600;

/// A UTC interval `[start, end)` of office time.
type Segment = (DateTime<Utc>, DateTime<Utc>);

impl Calendar {
    /// Parses one calendar file; `origin` (its path) is used in messages. The result is a family
    /// of one member.
    pub fn parse(source: &str, origin: &str) -> Result<Calendar, Error> {
        let file = parse_file(source, origin).map_err(first_error)?;
        merge(vec![file]).map_err(first_error)
    }

    /// Reads and parses one calendar file.
    pub fn load(path: &Path) -> Result<Calendar, Error> {
        let source = read(path)?;
        Calendar::parse(&source, &path.display().to_string())
    }

    /// Reads every `*.toml` file of a directory and merges the files of each family (see the crate
    /// documentation); returns the calendars by family name, or every problem found.
    pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Calendar>, Vec<Error>> {
        let io = |e: std::io::Error| {
            vec![Error::Io {
                origin: dir.display().to_string(),
                message: e.to_string(),
            }]
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        if paths.len() > DIR_FILES_MAX {
            return Err(vec![Error::Invalid {
                origin: dir.display().to_string(),
                line: None,
                column: None,
                message: format!("more than {DIR_FILES_MAX} calendar files"),
                hint: None,
            }]);
        }
        paths.sort();
        let mut errors = Vec::new();
        let mut families: BTreeMap<String, Vec<CalendarFile>> = BTreeMap::new();
        for path in &paths {
            let parsed = read(path)
                .map_err(|e| vec![e])
                .and_then(|source| parse_file(&source, &path.display().to_string()));
            match parsed {
                Ok(file) => families.entry(file.family.clone()).or_default().push(file),
                Err(mut es) => errors.append(&mut es),
            }
        }
        let mut calendars = BTreeMap::new();
        for (name, files) in families {
            match merge(files) {
                Ok(c) => {
                    calendars.insert(name, c);
                }
                Err(mut es) => errors.append(&mut es),
            }
        }
        if errors.is_empty() {
            Ok(calendars)
        } else {
            Err(errors)
        }
    }

    /// Family name, e.g. `vn`.
    pub fn name(&self) -> &str {
        &self.family.name
    }

    /// Lower-case hex SHA-256 identifying exactly the data used.
    ///
    /// For a family: SHA-256 of the lines `"{member name} {member hash}\n"` in name order, where a
    /// member's hash is the SHA-256 of its file's exact text; so any edit of any file changes it.
    /// For an office view ([`Calendar::for_office`]): SHA-256 of
    /// `"{family hash}\noffice {key} {hours}\n"`, with hours in canonical form.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The member files in name order, with their own hashes.
    pub fn members(&self) -> &[Member] {
        &self.family.members
    }

    /// The name that identifies exactly these hours: the family (`vn`), or `family@office`
    /// (`vn@ha-noi`) for an office view. Events record it so that readers can find the same view.
    pub fn view_name(&self) -> String {
        match &self.office {
            Some(o) => format!("{}@{o}", self.family.name),
            None => self.family.name.clone(),
        }
    }

    /// The office key whose hours are in force, if this is an office view.
    pub fn office(&self) -> Option<&str> {
        self.office.as_deref()
    }

    /// The keys of the office-hour overrides this family defines.
    pub fn offices(&self) -> impl Iterator<Item = &str> {
        self.family.offices.keys().map(String::as_str)
    }

    /// Zone of all local arithmetic.
    pub fn timezone(&self) -> Tz {
        self.family.tz
    }

    /// First and last covered day; outside them holidays are unknown.
    pub fn coverage(&self) -> (NaiveDate, NaiveDate) {
        (self.family.first, self.family.last)
    }

    /// Office-hour segments in force, local time.
    pub fn office_hours(&self) -> Vec<(NaiveTime, NaiveTime)> {
        self.hours.segments()
    }

    /// Office time of one working day, e.g. 8h for 07:30-11:30 + 13:00-17:00.
    pub fn working_day_length(&self) -> TimeDelta {
        self.hours.length()
    }

    /// Whether `d` is a working day. Outside [`Calendar::coverage`] holidays are unknown and this
    /// answers by the weekend rule alone; use [`Calendar::working_day`] to get an error instead.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        let f = &self.family;
        if f.working_days.contains(&d) {
            return true;
        }
        !f.holidays.contains(&d) && !f.weekend[d.weekday().num_days_from_monday() as usize]
    }

    /// Whether `d` is a working day, or [`Error::BeyondCoverage`] if the calendar does not know.
    pub fn working_day(&self, d: NaiveDate) -> Result<bool, Error> {
        self.check_covered(d)?;
        Ok(self.is_working_day(d))
    }

    /// Whether `t` is inside office hours of a working day: `start <= t < end` for a segment.
    /// (A clock started at `t` would run at once.) Outside coverage, see [`Calendar::is_working_day`].
    pub fn is_working_instant(&self, t: DateTime<Utc>) -> bool {
        let d = self.local_date(t);
        self.is_working_day(d) && self.segments_on(d).iter().any(|&(s, e)| s <= t && t < e)
    }

    /// Whether `t` can be a due instant computed by [`Calendar::add`] in working units: inside a
    /// segment of a working day or exactly at its end, `start < t <= end` (17:00 is a due instant,
    /// 07:30 is not: a deadline at 07:30 would be the previous working day's end).
    pub fn is_due_instant(&self, t: DateTime<Utc>) -> bool {
        let d = self.local_date(t);
        // A segment ending at 24:00 ends on the next local date: look at the day before too.
        [d.pred_opt(), Some(d)].into_iter().flatten().any(|d| {
            self.is_working_day(d) && self.segments_on(d).iter().any(|&(s, e)| s < t && t <= e)
        })
    }

    /// When the clock starts for something received at `received`: `received` itself if inside
    /// office hours; else the next office-hours instant; the start of the next working day if
    /// received on a working day strictly after `cutoff` (local time).
    pub fn clock_start(
        &self,
        received: DateTime<Utc>,
        cutoff: Option<NaiveTime>,
    ) -> Result<DateTime<Utc>, Error> {
        let local = received.with_timezone(&self.family.tz);
        let day = local.date_naive();
        if let Some(cutoff) = cutoff
            && self.working_day(day)?
            && local.time() > cutoff
        {
            let next = day
                .succ_opt()
                .ok_or_else(|| self.out_of_range("date after the received day"))?;
            let start = self.local_to_utc(next.and_time(NaiveTime::MIN));
            return self.next_working_instant(start);
        }
        self.next_working_instant(received)
    }

    /// `from + d`. Working units (`wd`, `wh`) accrue only inside office hours of working days, a
    /// working day being [`Calendar::working_day_length`] of office time; a result landing exactly
    /// at the end of a segment stays there (17:00, not next morning). `d` adds local calendar days
    /// at the same local time; `h` adds wall-clock hours.
    pub fn add(&self, from: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, Error> {
        match d {
            Duration::WorkingDays(_) | Duration::WorkingHours(_) => {
                let amount = self
                    .working_time(d)
                    .ok_or_else(|| self.out_of_range("working time"))?;
                self.add_working(from, amount)
            }
            Duration::Days(n) => {
                let local = from.with_timezone(&self.family.tz).naive_local();
                let to = local
                    .checked_add_days(chrono::Days::new(u64::from(n)))
                    .filter(|t| crate::file::YEARS.contains(&t.year()))
                    .ok_or_else(|| self.out_of_range(&format!("{from} + {d}")))?;
                Ok(self.local_to_utc(to))
            }
            Duration::Hours(n) => from
                .checked_add_signed(TimeDelta::hours(i64::from(n)))
                .ok_or_else(|| self.out_of_range(&format!("{from} + {d}"))),
        }
    }

    /// The working time a working duration stands for in this calendar (`None` for `d` and `h`).
    pub fn working_time(&self, d: Duration) -> Option<TimeDelta> {
        match d {
            Duration::WorkingDays(n) => self
                .working_day_length()
                .checked_mul(i32::try_from(n).ok()?),
            Duration::WorkingHours(n) => Some(TimeDelta::hours(i64::from(n))),
            Duration::Days(_) | Duration::Hours(_) => None,
        }
    }

    /// `from` plus `amount` (> 0) of working time; see [`Calendar::add`].
    pub fn add_working(
        &self,
        from: DateTime<Utc>,
        amount: TimeDelta,
    ) -> Result<DateTime<Utc>, Error> {
        let mut remaining = amount;
        if remaining <= TimeDelta::zero() {
            self.check_covered(self.local_date(from))?;
            return Ok(from);
        }
        let mut day = self.local_date(from);
        loop {
            self.check_covered(day)?;
            if self.is_working_day(day) {
                for &(s, e) in self.segments_on(day).iter() {
                    if e <= from {
                        continue;
                    }
                    let start = s.max(from);
                    let available = e - start;
                    if remaining <= available {
                        return Ok(start + remaining);
                    }
                    remaining -= available;
                }
            }
            // Terminates: `check_covered` fails once `day` passes the coverage.
            day = day.succ_opt().ok_or_else(|| self.out_of_range("date"))?;
        }
    }

    /// The earliest instant `t <= to` with at most `amount` (>= 0) of working time in `[t, to]`:
    /// `amount` of working time back from `to`, then back across any non-working time before it
    /// (where the working time left does not grow). The inverse of [`Calendar::add_working`]:
    /// one walk back over the office segments, where a search with
    /// [`Calendar::working_time_between`] would walk the same days once per probe. Needs every
    /// day walked over to be covered.
    pub fn working_start_before(
        &self,
        to: DateTime<Utc>,
        amount: TimeDelta,
    ) -> Result<DateTime<Utc>, Error> {
        let mut remaining = amount.max(TimeDelta::zero());
        // The walk reached the start of a segment with nothing left: the answer is the end of the
        // working time before it.
        let mut exhausted = false;
        let mut day = self.local_date(to);
        loop {
            self.check_covered(day)?;
            if self.is_working_day(day) {
                for &(s, e) in self.segments_on(day).iter().rev() {
                    if s >= to {
                        continue;
                    }
                    let end = e.min(to);
                    if exhausted {
                        return Ok(end);
                    }
                    let available = end - s;
                    if remaining < available {
                        return Ok(end - remaining);
                    }
                    remaining -= available;
                    exhausted = remaining.is_zero();
                }
            }
            // Terminates: `check_covered` fails once `day` passes the coverage.
            day = day.pred_opt().ok_or_else(|| self.out_of_range("date"))?;
        }
    }

    /// Working time between two instants: office time of working days inside `[a, b]`, negative
    /// when `b < a`. Needs every day from `a` to `b` to be covered.
    pub fn working_time_between(
        &self,
        a: DateTime<Utc>,
        b: DateTime<Utc>,
    ) -> Result<TimeDelta, Error> {
        if b < a {
            return self.working_time_between(b, a).map(|t| -t);
        }
        if a == b {
            return Ok(TimeDelta::zero());
        }
        let (first, last) = (self.local_date(a), self.local_date(b));
        self.check_covered(first)?;
        self.check_covered(last)?;
        let mut total = TimeDelta::zero();
        for day in first.iter_days().take_while(|d| *d <= last) {
            if !self.is_working_day(day) {
                continue;
            }
            for &(s, e) in self.segments_on(day).iter() {
                let (s, e) = (s.max(a), e.min(b));
                if s < e {
                    total += e - s;
                }
            }
        }
        Ok(total)
    }

    /// Human rendering of a working time in this calendar's day length: `2wd 3h15m`, `-0wd 1h`,
    /// `0wd`. Seconds show only when not zero; sub-second parts are dropped.
    pub fn format_working_time(&self, d: TimeDelta) -> String {
        let sign = if d < TimeDelta::zero() { "-" } else { "" };
        let total_s = d.num_seconds().unsigned_abs();
        let day_s = self
            .working_day_length()
            .num_seconds()
            .unsigned_abs()
            .max(1);
        let (days, rest_s) = (total_s / day_s, total_s % day_s);
        let mut out = format!("{sign}{days}wd");
        if rest_s > 0 {
            out.push(' ');
            let (h, m, s) = (rest_s / 3600, rest_s % 3600 / 60, rest_s % 60);
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            if m > 0 {
                out.push_str(&format!("{m}m"));
            }
            if s > 0 {
                out.push_str(&format!("{s}s"));
            }
        }
        out
    }

    /// The same calendar with an agency's or province's office hours (the `[office."key"]` tables);
    /// an unknown key gives `self` unchanged. Always derived from the family's data, so
    /// `c.for_office("a").for_office("b") == c.for_office("b")`.
    pub fn for_office(&self, key: &str) -> Calendar {
        let Some(hours) = self.family.offices.get(key) else {
            return self.clone();
        };
        let hash = hex::encode(Sha256::digest(format!(
            "{}\noffice {key} {}\n",
            self.family.hash,
            hours.canonical()
        )));
        Calendar {
            family: Arc::clone(&self.family),
            hours: hours.clone(),
            office: Some(key.to_string()),
            hash,
            segments: Arc::default(),
        }
    }

    /// The first office instant at or after `t` (`t` itself if inside office hours).
    pub fn next_working_instant(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
        let mut day = self.local_date(t);
        loop {
            self.check_covered(day)?;
            if self.is_working_day(day) {
                for &(s, e) in self.segments_on(day).iter() {
                    if t < e {
                        return Ok(s.max(t));
                    }
                }
            }
            // Terminates: `check_covered` fails once `day` passes the coverage.
            day = day.succ_opt().ok_or_else(|| self.out_of_range("date"))?;
        }
    }

    fn check_covered(&self, d: NaiveDate) -> Result<(), Error> {
        let f = &self.family;
        if f.first <= d && d <= f.last {
            return Ok(());
        }
        let nearest = if d < f.first {
            f.members.first()
        } else {
            f.members.last()
        };
        Err(Error::BeyondCoverage {
            family: f.name.clone(),
            date: d,
            covered_first: f.first,
            covered_last: f.last,
            origin: nearest.map_or_else(|| f.name.clone(), |m| m.origin.clone()),
        })
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.family.tz).date_naive()
    }

    /// Office segments of day `d` in UTC, whether or not `d` is a working day; empty segments
    /// (possible only across a daylight-saving change) are dropped. For a covered day they come
    /// from a table computed once per calendar: deadline arithmetic asks for the same days
    /// thousands of times a second, and each computation converts local times through the time
    /// zone.
    fn segments_on(&self, d: NaiveDate) -> Cow<'_, [Segment]> {
        let f = &self.family;
        let table = self.segments.0.get_or_init(|| {
            let days = (f.last - f.first).num_days();
            (days <= SEGMENT_CACHE_DAYS_MAX).then(|| {
                f.first
                    .iter_days()
                    .take_while(|day| *day <= f.last)
                    .map(|day| self.compute_segments(day).into_boxed_slice())
                    .collect()
            })
        });
        if let Some(table) = table
            && f.first <= d
            && d <= f.last
            && let Some(day) = table.get((d - f.first).num_days() as usize)
        {
            return Cow::Borrowed(day);
        }
        Cow::Owned(self.compute_segments(d))
    }

    /// [`Calendar::segments_on`] computed.
    fn compute_segments(&self, d: NaiveDate) -> Vec<Segment> {
        let midnight = d.and_time(NaiveTime::MIN);
        self.hours
            .segments_s()
            .iter()
            .map(|&(a, b)| {
                let at = |s: u32| self.local_to_utc(midnight + TimeDelta::seconds(i64::from(s)));
                (at(a), at(b))
            })
            .filter(|(s, e)| s < e)
            .collect()
    }

    /// A local time as UTC: the earlier instant when ambiguous; in a daylight-saving gap, the
    /// instant of the transition (the first instant after the gap). This mapping never decreases
    /// as the local time grows, so office segments that are disjoint locally stay disjoint in UTC.
    fn local_to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = self.family.tz;
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
            LocalResult::None => {
                // Offsets before and after the gap (no zone changes offset twice within a day).
                let offset_s = |probe: NaiveDateTime| {
                    i64::from(tz.offset_from_utc_datetime(&probe).fix().local_minus_utc())
                };
                let before_s = offset_s(local - TimeDelta::days(1));
                let after_s = offset_s(local + TimeDelta::days(1));
                // `lo` is before the transition, `hi` after it; bisect on seconds (about 12 steps
                // for a one-hour gap, at most 64).
                let mut lo = local - TimeDelta::seconds(after_s);
                let mut hi = local - TimeDelta::seconds(before_s);
                let offset_lo = offset_s(lo);
                for _ in 0..64 {
                    if hi - lo <= TimeDelta::seconds(1) {
                        break;
                    }
                    let mid = lo + (hi - lo) / 2;
                    if offset_s(mid) == offset_lo {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                Utc.from_utc_datetime(&hi)
            }
        }
    }

    fn out_of_range(&self, what: &str) -> Error {
        Error::OutOfRange {
            family: self.family.name.clone(),
            message: format!("{what} is out of range"),
        }
    }
}

/// The first error of a non-empty list (used where the API returns one error).
fn first_error(mut errors: Vec<Error>) -> Error {
    if errors.is_empty() {
        Error::Invalid {
            origin: String::new(),
            line: None,
            column: None,
            message: "unknown error".to_string(),
            hint: None,
        }
    } else {
        errors.swap_remove(0)
    }
}

fn read(path: &Path) -> Result<String, Error> {
    let origin = path.display().to_string();
    let io = |e: std::io::Error| Error::Io {
        origin: origin.clone(),
        message: e.to_string(),
    };
    let len_bytes = std::fs::metadata(path).map_err(io)?.len();
    if len_bytes > FILE_BYTES_MAX {
        return Err(Error::Io {
            origin,
            message: format!("file is larger than {FILE_BYTES_MAX} bytes"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Merges the files of one family: they must agree on zone, weekend and office hours (and
/// overrides), have distinct names, and cover contiguous, non-overlapping dates.
fn merge(mut files: Vec<CalendarFile>) -> Result<Calendar, Vec<Error>> {
    let mut errors = Vec::new();
    let Some(base) = files.first().cloned() else {
        return Err(vec![first_error(Vec::new())]);
    };
    let at = |f: &CalendarFile, pos: &Pos, message: String, hint: Option<String>| Error::Invalid {
        origin: f.origin.clone(),
        line: pos.line,
        column: pos.column,
        message,
        hint,
    };
    if files.len() > FAMILY_MEMBERS_MAX {
        errors.push(at(
            &base,
            &base.pos_name,
            format!(
                "family \"{}\" has more than {FAMILY_MEMBERS_MAX} files",
                base.family
            ),
            None,
        ));
    }
    let agree = format!(
        "all files of family \"{}\" must agree; first seen in {}",
        base.family, base.origin
    );
    for f in &files[1..] {
        if f.tz != base.tz {
            errors.push(at(
                f,
                &f.pos_timezone,
                format!(
                    "timezone \"{}\" differs from \"{}\"",
                    f.tz.name(),
                    base.tz.name()
                ),
                Some(agree.clone()),
            ));
        }
        if f.weekend != base.weekend {
            errors.push(at(
                f,
                &f.pos_weekend,
                "weekend differs from the rest of the family".to_string(),
                Some(agree.clone()),
            ));
        }
        if f.hours != base.hours {
            errors.push(at(
                f,
                &f.pos_hours,
                format!(
                    "hours {} differ from {}",
                    f.hours.canonical(),
                    base.hours.canonical()
                ),
                Some(agree.clone()),
            ));
        }
        if f.offices != base.offices {
            let pos = f
                .pos_offices
                .values()
                .next()
                .cloned()
                .unwrap_or_else(|| f.pos_name.clone());
            errors.push(at(
                f,
                &pos,
                "office overrides differ from the rest of the family".to_string(),
                Some(agree.clone()),
            ));
        }
    }
    files.sort_by_key(|f| f.first);
    for pair in files.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let expected = prev.last.succ_opt();
        if Some(next.first) != expected {
            let what = if next.first <= prev.last {
                "overlaps"
            } else {
                "leaves a gap after"
            };
            errors.push(at(
                next,
                &next.pos_name,
                format!("\"{}\" ({}..{}) {what} \"{}\" ({}..{})", next.name, next.first, next.last, prev.name, prev.first, prev.last),
                Some("files of a family must cover contiguous dates without overlap, e.g. one file per year".to_string()),
            ));
        }
    }
    let mut names = BTreeSet::new();
    for f in &files {
        if !names.insert(f.name.clone()) {
            errors.push(at(
                f,
                &f.pos_name,
                format!("two files are named \"{}\"", f.name),
                None,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (first, last) = match (files.first(), files.last()) {
        (Some(a), Some(b)) => (a.first, b.last),
        _ => (base.first, base.last),
    };
    let mut members: Vec<Member> = files
        .iter()
        .map(|f| Member {
            name: f.name.clone(),
            hash: f.hash.clone(),
            origin: f.origin.clone(),
            source: f.source_note.clone(),
            first: f.first,
            last: f.last,
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for m in &members {
        hasher.update(format!("{} {}\n", m.name, m.hash).as_bytes());
    }
    let hash = hex::encode(hasher.finalize());
    let family = Family {
        name: base.family.clone(),
        tz: base.tz,
        weekend: base.weekend,
        hours: base.hours.clone(),
        holidays: files
            .iter()
            .flat_map(|f| f.holidays.iter().copied())
            .collect(),
        working_days: files
            .iter()
            .flat_map(|f| f.working_days.iter().copied())
            .collect(),
        offices: base.offices.clone(),
        first,
        last,
        members,
        hash: hash.clone(),
    };
    Ok(Calendar {
        hours: family.hours.clone(),
        family: Arc::new(family),
        office: None,
        hash,
        segments: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept table gives, for every covered day, exactly what computing the day gives, for
    /// the family's hours and for an office's.
    #[test]
    fn the_segment_table_is_the_computed_segments() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/calendars");
        let families = Calendar::load_dir(&dir).expect("the shipped calendars load");
        let vn = &families["vn"];
        let mut views = vec![vn.clone()];
        views.extend(vn.offices().map(|o| vn.for_office(o)));
        for cal in &views {
            let (first, last) = cal.coverage();
            for d in first.iter_days().take_while(|d| *d <= last) {
                assert_eq!(*cal.segments_on(d), cal.compute_segments(d), "{d}");
            }
            assert!(
                format!("{:?}", cal.segments).contains("days)"),
                "the table was built: {:?}",
                cal.segments
            );
            // Outside the coverage, days are computed.
            let after = last.succ_opt().expect("a next day");
            assert!(matches!(cal.segments_on(after), Cow::Owned(_)));
        }
    }
}
