//! One calendar file: its TOML shape, and its validation into a checked [`CalendarFile`].
//!
//! TOML deserialises into raw structs that keep the byte span of every value a person may get
//! wrong; validation turns them into typed values or into [`Error`]s that point at the value
//! (`file:line:column`) with a hint. Unknown keys are errors, so a typo never silently drops data.
//! See the crate documentation for the format.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::{Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::Error;
use crate::hours::{OfficeHours, Problem, parse_weekday};

/// Longest a single file may cover: ten years and a bit; more is a typo.
pub const COVERS_DAYS_MAX: i64 = 3700;
/// Longest range in `holidays` or `working_days`; Tết is at most nine or ten days.
pub const RANGE_DAYS_MAX: i64 = 31;
/// Most entries in `holidays` or `working_days`, and most office overrides.
pub const ENTRIES_MAX: usize = 400;
/// Longest name, family or office key.
pub const NAME_LEN_MAX: usize = 64;
/// Years a calendar may cover (keeps all local arithmetic far from chrono's limits).
pub const YEARS: std::ops::RangeInclusive<i32> = 1900..=2199;

const DATE_HINT: &str = "write dates as YYYY-MM-DD, ranges as YYYY-MM-DD..YYYY-MM-DD";
const NAME_HINT: &str = "use lower-case letters, digits, `-` and `_`, e.g. \"vn-2026\"";
const OFFICE_HINT: &str =
    "use lower-case letters, digits, `-`, `_`, `.` and `/`, e.g. \"cong-an\" or \"ha-noi/cong-an\"";

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// The `[calendar]` table.
    calendar: RawCalendar,
    /// `[office."key"]` tables: office-hour overrides by agency or province key.
    #[serde(default)]
    office: BTreeMap<Spanned<String>, RawOffice>,
}

/// The `[calendar]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    name: Spanned<String>,
    family: Option<Spanned<String>>,
    covers: Option<Spanned<String>>,
    /// Free text: where the data came from (kept for the record; not interpreted).
    source: Option<String>,
    timezone: Spanned<String>,
    weekend: Vec<Spanned<String>>,
    hours: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    #[serde(default)]
    working_days: Vec<Spanned<String>>,
}

/// One `[office."key"]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffice {
    /// Free text naming the office (kept for people; not interpreted).
    #[allow(dead_code)]
    note: Option<String>,
    hours: Spanned<Vec<Spanned<String>>>,
}

/// A position in a file, for errors raised after validation (e.g. when merging a family).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// One validated calendar file.
#[derive(Clone, Debug)]
pub(crate) struct CalendarFile {
    /// Where it was read from, for messages.
    pub origin: String,
    /// Lower-case hex SHA-256 of the file's exact text.
    pub hash: String,
    /// `name` key, e.g. `vn-2026`.
    pub name: String,
    /// `source` key: where the data came from, if the file says.
    pub source_note: Option<String>,
    /// Family, e.g. `vn`.
    pub family: String,
    /// First and last covered day.
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub tz: Tz,
    /// Indexed by `Weekday::num_days_from_monday`.
    pub weekend: [bool; 7],
    pub hours: OfficeHours,
    pub holidays: BTreeSet<NaiveDate>,
    pub working_days: BTreeSet<NaiveDate>,
    pub offices: BTreeMap<String, OfficeHours>,
    /// Positions of the keys that must agree across a family.
    pub pos_name: Pos,
    pub pos_timezone: Pos,
    pub pos_weekend: Pos,
    pub pos_hours: Pos,
    pub pos_offices: BTreeMap<String, Pos>,
}

/// Collects errors of one file, all pointing into its text.
struct Ctx<'a> {
    origin: &'a str,
    source: &'a str,
    errors: Vec<Error>,
}

impl Ctx<'_> {
    fn push(&mut self, span: Range<usize>, (message, hint): Problem) {
        self.errors.push(Error::at(
            self.origin,
            self.source,
            Some(span),
            message,
            hint,
        ));
    }

    fn pos(&self, span: Range<usize>) -> Pos {
        match crate::error::line_column(self.source, span.start) {
            Some((l, c)) => Pos {
                line: Some(l),
                column: Some(c),
            },
            None => Pos::default(),
        }
    }
}

/// Parses and validates one file; every problem found is returned, in file order.
pub(crate) fn parse_file(source: &str, origin: &str) -> Result<CalendarFile, Vec<Error>> {
    let raw: RawFile = toml::from_str(source).map_err(|e| vec![toml_error(source, origin, &e)])?;
    let mut cx = Ctx {
        origin,
        source,
        errors: Vec::new(),
    };
    let c = raw.calendar;

    // name, family, coverage
    let name = c.name.get_ref().clone();
    if !valid_name(&name) {
        cx.push(
            c.name.span(),
            (
                format!("\"{name}\" is not a valid calendar name"),
                Some(NAME_HINT.to_string()),
            ),
        );
    }
    let year_suffix = year_suffix(&name);
    let family = match &c.family {
        Some(f) => {
            if !valid_name(f.get_ref()) {
                cx.push(
                    f.span(),
                    (
                        format!("\"{}\" is not a valid family name", f.get_ref()),
                        Some(NAME_HINT.to_string()),
                    ),
                );
            }
            f.get_ref().clone()
        }
        None => year_suffix.map_or(name.clone(), |(base, _)| base.to_string()),
    };
    let covers = match (&c.covers, year_suffix) {
        (Some(cov), _) => match parse_range(cov.get_ref(), COVERS_DAYS_MAX) {
            Ok(r) => Some(r),
            Err(p) => {
                cx.push(cov.span(), p);
                None
            }
        },
        (None, Some((_, year))) => {
            NaiveDate::from_ymd_opt(year, 1, 1).zip(NaiveDate::from_ymd_opt(year, 12, 31))
        }
        (None, None) => {
            cx.push(
                c.name.span(),
                (
                    format!("cannot tell which dates \"{name}\" covers"),
                    Some("end the name with the year (\"vn-2026\") or add covers = \"2026-01-01..2026-12-31\"".to_string()),
                ),
            );
            None
        }
    };
    if let Some((first, last)) = covers
        && !(YEARS.contains(&first.year()) && YEARS.contains(&last.year()))
    {
        let span = c.covers.as_ref().map_or(c.name.span(), |s| s.span());
        cx.push(
            span,
            (
                format!(
                    "coverage {first}..{last} is outside the years {}..={}",
                    YEARS.start(),
                    YEARS.end()
                ),
                None,
            ),
        );
    }

    // timezone
    let tz = match c.timezone.get_ref().parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            cx.push(
                c.timezone.span(),
                (
                    format!("\"{}\" is not a known time zone", c.timezone.get_ref()),
                    Some("use an IANA time-zone name, e.g. \"Asia/Ho_Chi_Minh\"".to_string()),
                ),
            );
            None
        }
    };

    // weekend
    let mut weekend = [false; 7];
    // Checks that depend on the weekend run only if it parsed, so one typo gives one error.
    let mut weekend_ok = true;
    for w in &c.weekend {
        match parse_weekday(w.get_ref()) {
            Ok(day) => {
                let i = day.num_days_from_monday() as usize;
                if weekend[i] {
                    cx.push(
                        w.span(),
                        (format!("\"{}\" is listed twice", w.get_ref()), None),
                    );
                }
                weekend[i] = true;
            }
            Err(p) => {
                weekend_ok = false;
                cx.push(w.span(), p);
            }
        }
    }
    let pos_weekend = c
        .weekend
        .first()
        .map(|w| cx.pos(w.span()))
        .unwrap_or_default();
    if weekend.iter().all(|&w| w) {
        cx.push(
            c.weekend.first().map_or(0..0, |w| w.span()),
            (
                "every day of the week is a weekend day".to_string(),
                Some("list only the days off, e.g. [\"sat\", \"sun\"]".to_string()),
            ),
        );
    }

    // hours
    let hours = parse_hours(&mut cx, &c.hours);

    // offices
    let mut offices = BTreeMap::new();
    let mut pos_offices = BTreeMap::new();
    if raw.office.len() > ENTRIES_MAX {
        cx.push(
            0..0,
            (format!("more than {ENTRIES_MAX} office overrides"), None),
        );
    }
    for (key, office) in &raw.office {
        if !valid_office_key(key.get_ref()) {
            cx.push(
                key.span(),
                (
                    format!("\"{}\" is not a valid office key", key.get_ref()),
                    Some(OFFICE_HINT.to_string()),
                ),
            );
        }
        if let Some(h) = parse_hours(&mut cx, &office.hours) {
            offices.insert(key.get_ref().clone(), h);
            pos_offices.insert(key.get_ref().clone(), cx.pos(key.span()));
        }
    }

    // days
    let holidays = parse_days(&mut cx, &c.holidays, covers, "holidays");
    let working_days = parse_days(&mut cx, &c.working_days, covers, "working_days");
    for d in &working_days {
        if holidays.contains(d) {
            let span = span_of_day(&c.working_days, *d);
            cx.push(
                span,
                (
                    format!("{d} is both a holiday and a working day"),
                    Some("remove it from one of the two lists".to_string()),
                ),
            );
        } else if weekend_ok && !weekend[d.weekday().num_days_from_monday() as usize] {
            let span = span_of_day(&c.working_days, *d);
            cx.push(
                span,
                (
                    format!(
                        "{d} is a {} and already a working day",
                        weekday_name(d.weekday())
                    ),
                    Some(
                        "working_days lists only make-up days (làm bù) that would otherwise be off"
                            .to_string(),
                    ),
                ),
            );
        }
    }

    match (cx.errors.is_empty(), covers, tz, hours) {
        (true, Some((first, last)), Some(tz), Some(hours)) => Ok(CalendarFile {
            origin: origin.to_string(),
            hash: hex::encode(Sha256::digest(source.as_bytes())),
            pos_name: cx.pos(c.name.span()),
            pos_timezone: cx.pos(c.timezone.span()),
            pos_weekend,
            pos_hours: cx.pos(c.hours.span()),
            pos_offices,
            name,
            source_note: c.source,
            family,
            first,
            last,
            tz,
            weekend,
            hours,
            holidays,
            working_days,
            offices,
        }),
        _ => {
            if cx.errors.is_empty() {
                // Unreachable in practice: every `None` above pushed an error. Keep a message anyway.
                cx.push(0..0, ("the calendar file is incomplete".to_string(), None));
            }
            Err(cx.errors)
        }
    }
}

/// A `toml` syntax or shape error, with a hint listing the valid keys when a key is unknown.
fn toml_error(source: &str, origin: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim().to_string();
    let hint = if message.starts_with("unknown field") {
        message
            .split_once("expected ")
            .map(|(_, keys)| format!("valid keys here: {}", keys.trim_start_matches("one of ")))
    } else if message.starts_with("missing field") {
        Some(
            "[calendar] needs name, timezone, weekend and hours; each [office.\"KEY\"] needs hours"
                .to_string(),
        )
    } else {
        None
    };
    Error::at(origin, source, e.span(), message, hint)
}

fn parse_hours(cx: &mut Ctx<'_>, raw: &Spanned<Vec<Spanned<String>>>) -> Option<OfficeHours> {
    let mut segments = Vec::new();
    let mut ok = true;
    for s in raw.get_ref() {
        match OfficeHours::parse_segment(s.get_ref()) {
            Ok(seg) => segments.push(seg),
            Err(p) => {
                cx.push(s.span(), p);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    match OfficeHours::from_segments(segments) {
        Ok(h) => Some(h),
        Err((i, p)) => {
            let span = raw.get_ref().get(i).map_or(raw.span(), |s| s.span());
            cx.push(span, p);
            None
        }
    }
}

fn parse_days(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<String>],
    covers: Option<(NaiveDate, NaiveDate)>,
    key: &str,
) -> BTreeSet<NaiveDate> {
    let mut days = BTreeSet::new();
    if raw.len() > ENTRIES_MAX {
        cx.push(
            raw[ENTRIES_MAX].span(),
            (format!("more than {ENTRIES_MAX} entries in {key}"), None),
        );
        return days;
    }
    for entry in raw {
        let (first, last) = match parse_range(entry.get_ref(), RANGE_DAYS_MAX) {
            Ok(r) => r,
            Err(p) => {
                cx.push(entry.span(), p);
                continue;
            }
        };
        if let Some((cf, cl)) = covers
            && (first < cf || last > cl)
        {
            cx.push(
                entry.span(),
                (
                    format!(
                        "\"{}\" is outside the dates this file covers ({cf}..{cl})",
                        entry.get_ref()
                    ),
                    Some("put it in the file of its year, or widen `covers`".to_string()),
                ),
            );
            continue;
        }
        for d in first.iter_days().take_while(|d| *d <= last) {
            if !days.insert(d) {
                cx.push(
                    entry.span(),
                    (format!("{d} is listed twice in {key}"), None),
                );
            }
        }
    }
    days
}

/// The span of the entry that contains day `d`, for messages.
fn span_of_day(raw: &[Spanned<String>], d: NaiveDate) -> Range<usize> {
    raw.iter()
        .find(|e| parse_range(e.get_ref(), RANGE_DAYS_MAX).is_ok_and(|(a, b)| a <= d && d <= b))
        .map_or(0..0, |e| e.span())
}

/// `YYYY-MM-DD` or `YYYY-MM-DD..YYYY-MM-DD`, first <= last, at most `days_max` days long.
pub(crate) fn parse_range(s: &str, days_max: i64) -> Result<(NaiveDate, NaiveDate), Problem> {
    let (first, last) = match s.split_once("..") {
        Some((a, b)) => (parse_date(a)?, parse_date(b)?),
        None => {
            let d = parse_date(s)?;
            (d, d)
        }
    };
    if last < first {
        return Err((
            format!("\"{s}\" ends before it starts"),
            Some(DATE_HINT.to_string()),
        ));
    }
    let len_days = (last - first).num_days() + 1;
    if len_days > days_max {
        return Err((
            format!("\"{s}\" spans {len_days} days, more than {days_max}"),
            Some("split it, or check the years".to_string()),
        ));
    }
    Ok((first, last))
}

fn parse_date(s: &str) -> Result<NaiveDate, Problem> {
    let bytes = s.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shape_ok
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| {
            (
                format!("\"{s}\" is not a date"),
                Some(DATE_HINT.to_string()),
            )
        })
}

/// `vn-2026` → `("vn", 2026)`.
fn year_suffix(name: &str) -> Option<(&str, i32)> {
    let (base, year) = name.rsplit_once('-')?;
    (year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then(|| year.parse().ok().map(|y| (base, y)))
        .flatten()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_LEN_MAX
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_office_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
}

pub(crate) fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_suffix_and_ranges() {
        assert_eq!(year_suffix("vn-2026"), Some(("vn", 2026)));
        assert_eq!(year_suffix("vn"), None);
        assert_eq!(year_suffix("-2026"), None);
        assert!(parse_range("2026-02-14..2026-02-22", 31).is_ok());
        assert!(parse_range("2026-02-22..2026-02-14", 31).is_err());
        assert!(parse_range("2026-2-14", 31).is_err());
        assert!(parse_range("2026-02-30", 31).is_err());
    }
}
