//! Office hours of a working day (`"07:30-11:30"`, `"13:00-17:00"`) and weekend day names.
//!
//! Kept apart from the file format so the arithmetic in [`crate::calendar`] sees only checked
//! values: segments are sorted, non-empty, and neither overlap nor touch, all within one local day.

use chrono::{NaiveTime, TimeDelta, Weekday};

/// Most segments a day's office hours may have; more is a typo.
pub const SEGMENTS_MAX: usize = 8;

/// The office hours of a working day, local time: sorted, disjoint, non-touching segments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OfficeHours {
    /// `(start, end)` in seconds from local midnight, `start < end <= 24h`.
    segments_s: Vec<(u32, u32)>,
}

/// A problem with one value, before it is placed in a file: a message and an optional hint.
pub(crate) type Problem = (String, Option<String>);

const HOURS_HINT: &str = "write office hours as HH:MM-HH:MM in 24-hour local time, start before end, e.g. \"07:30-11:30\"";

impl OfficeHours {
    /// Checks one segment `HH:MM-HH:MM`.
    pub(crate) fn parse_segment(s: &str) -> Result<(u32, u32), Problem> {
        let bad = || {
            (
                format!("\"{s}\" is not a time range"),
                Some(HOURS_HINT.to_string()),
            )
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start_s = parse_clock_s(a.trim()).ok_or_else(bad)?;
        let end_s = parse_clock_s(b.trim()).ok_or_else(bad)?;
        if start_s >= end_s {
            return Err((
                format!("\"{s}\" ends before it starts"),
                Some(
                    "office hours cannot cross midnight; write the earlier time first".to_string(),
                ),
            ));
        }
        Ok((start_s, end_s))
    }

    /// Builds office hours from checked segments in the order written; on failure returns the
    /// index of the offending segment and the problem.
    pub(crate) fn from_segments(
        segments_s: Vec<(u32, u32)>,
    ) -> Result<OfficeHours, (usize, Problem)> {
        if segments_s.is_empty() {
            return Err((
                0,
                (
                    "office hours are empty".to_string(),
                    Some(
                        "list at least one range, e.g. hours = [\"07:30-11:30\", \"13:00-17:00\"]"
                            .to_string(),
                    ),
                ),
            ));
        }
        if segments_s.len() > SEGMENTS_MAX {
            return Err((
                SEGMENTS_MAX,
                (format!("more than {SEGMENTS_MAX} office-hour ranges"), None),
            ));
        }
        for (i, pair) in segments_s.windows(2).enumerate() {
            let (prev, next) = (pair[0], pair[1]);
            if next.0 <= prev.1 {
                let what = if next.0 == prev.1 {
                    "touches"
                } else {
                    "overlaps"
                };
                return Err((
                    i + 1,
                    (
                        format!(
                            "office hours \"{}\" {what} the previous range \"{}\"",
                            render(next),
                            render(prev)
                        ),
                        Some("list ranges in order of the day, with a break between them (or merge them into one)".to_string()),
                    ),
                ));
            }
        }
        Ok(OfficeHours { segments_s })
    }

    /// The segments, `(start, end)` in seconds from local midnight.
    pub(crate) fn segments_s(&self) -> &[(u32, u32)] {
        &self.segments_s
    }

    /// The segments as local times.
    pub fn segments(&self) -> Vec<(NaiveTime, NaiveTime)> {
        self.segments_s
            .iter()
            .map(|&(a, b)| (to_time(a), to_time(b)))
            .collect()
    }

    /// Total office time of one working day.
    pub fn length(&self) -> TimeDelta {
        let total_s: u32 = self.segments_s.iter().map(|(a, b)| b - a).sum();
        TimeDelta::seconds(i64::from(total_s))
    }

    /// Canonical text, e.g. `07:30-11:30,13:00-17:00` (used in hashes and messages).
    pub fn canonical(&self) -> String {
        self.segments_s
            .iter()
            .map(|&s| render(s))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `HH:MM` (00:00..=24:00) as seconds from midnight.
fn parse_clock_s(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 3600 + m * 60)
}

fn render((a, b): (u32, u32)) -> String {
    format!(
        "{:02}:{:02}-{:02}:{:02}",
        a / 3600,
        a % 3600 / 60,
        b / 3600,
        b % 3600 / 60
    )
}

/// Seconds from midnight as a time; 24:00 is shown as 23:59:59.999999999 (the end of the day).
fn to_time(s: u32) -> NaiveTime {
    NaiveTime::from_num_seconds_from_midnight_opt(s, 0)
        .or_else(|| NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999))
        .unwrap_or(NaiveTime::MIN)
}

/// Weekday from its three-letter English name (`mon` … `sun`), case-insensitive.
pub(crate) fn parse_weekday(s: &str) -> Result<Weekday, Problem> {
    match s.to_ascii_lowercase().as_str() {
        "mon" => Ok(Weekday::Mon),
        "tue" => Ok(Weekday::Tue),
        "wed" => Ok(Weekday::Wed),
        "thu" => Ok(Weekday::Thu),
        "fri" => Ok(Weekday::Fri),
        "sat" => Ok(Weekday::Sat),
        "sun" => Ok(Weekday::Sun),
        _ => Err((
            format!("\"{s}\" is not a weekday"),
            Some("use mon, tue, wed, thu, fri, sat, sun".to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_segments_and_length() {
        let segs = ["07:30-11:30", "13:00-17:00"].map(|s| OfficeHours::parse_segment(s).unwrap());
        let h = OfficeHours::from_segments(segs.to_vec()).unwrap();
        assert_eq!(h.length(), TimeDelta::hours(8));
        assert_eq!(h.canonical(), "07:30-11:30,13:00-17:00");
    }

    #[test]
    fn rejects_bad_segments() {
        for bad in [
            "7:30-11:30",
            "07:30",
            "07:60-08:00",
            "25:00-26:00",
            "17:00-07:30",
            "08:00-08:00",
        ] {
            assert!(OfficeHours::parse_segment(bad).is_err(), "{bad}");
        }
        let a = OfficeHours::parse_segment("07:30-12:00").unwrap();
        let b = OfficeHours::parse_segment("11:00-17:00").unwrap();
        assert_eq!(OfficeHours::from_segments(vec![a, b]).unwrap_err().0, 1);
        assert!(OfficeHours::from_segments(vec![]).is_err());
    }
}
