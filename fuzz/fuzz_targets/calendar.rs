//! Fuzz target `calendar`: calendar files (`lienthong_calendar::Calendar::parse`, which runs
//! `file.rs`'s TOML parse and validation), then working-time arithmetic on what parsed.
//!
//! Input: the calendar file's text up to the first NUL byte; the bytes after it choose instants
//! near the calendar's coverage, durations (`Nwd`, `Nwh`, `Nd`, `Nh`, also parsed from text), an
//! intake cut-off and an office view.
//!
//! Checks: nothing panics; errors name the file and, when placed, a line inside it; for every
//! working duration that can be added, the crate's own properties (tests/properties.rs) hold:
//! the due instant is a due instant of the calendar, the working time from the start to it is
//! the duration, and working time between two instants is antisymmetric; `clock_start` returns a
//! working instant at or after receipt.

#![no_main]

use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lienthong_calendar::{Calendar, Duration};

const ORIGIN: &str = "fuzz-2026.toml";

/// Operations per input: enough to reach the interesting paths, few enough to stay fast.
const OPERATIONS_MAX: usize = 8;

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let calendar = match Calendar::parse(text, ORIGIN) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.origin(), ORIGIN);
            if let Some(line) = e.line() {
                assert!(line >= 1 && line <= text.split('\n').count(), "{e}");
            }
            let _ = (e.to_string(), e.message(), e.hint());
            return;
        }
    };
    let mut u = Unstructured::new(rest);
    let _ = arithmetic(&calendar, &mut u);
});

/// Working-time arithmetic on a parsed calendar, until the input runs out.
fn arithmetic(calendar: &Calendar, u: &mut Unstructured<'_>) -> Result<()> {
    let offices: Vec<String> = calendar.offices().map(str::to_string).collect();
    let calendar = match u.choose(&offices) {
        Ok(office) if u.arbitrary()? => calendar.for_office(office),
        _ => calendar.clone(),
    };
    let _ = (
        calendar.hash(),
        calendar.view_name(),
        calendar.office_hours(),
    );
    for _ in 0..OPERATIONS_MAX {
        let t = instant(&calendar, u)?;
        match u.int_in_range(0..=4u8)? {
            0 => {
                let d = duration(u)?;
                let working = calendar.working_time(d);
                if let (Ok(due), Some(amount)) = (calendar.add(t, d), working) {
                    assert!(calendar.is_due_instant(due), "{due} = {t} + {d}");
                    if let Ok(between) = calendar.working_time_between(t, due) {
                        assert_eq!(
                            between, amount,
                            "working time from {t} to {due} = {t} + {d}"
                        );
                    }
                    let _ = calendar.format_working_time(amount);
                }
            }
            1 => {
                let b = instant(&calendar, u)?;
                if let (Ok(ab), Ok(ba)) = (
                    calendar.working_time_between(t, b),
                    calendar.working_time_between(b, t),
                ) {
                    assert_eq!(ab, -ba, "from {t} to {b}");
                    let _ = calendar.format_working_time(ab);
                }
            }
            2 => {
                let cutoff = if u.arbitrary()? {
                    let s = u.int_in_range(0..=86_399u32)?;
                    NaiveTime::from_num_seconds_from_midnight_opt(s, 0)
                } else {
                    None
                };
                if let Ok(start) = calendar.clock_start(t, cutoff) {
                    assert!(start >= t, "clock start {start} before receipt {t}");
                    assert!(calendar.is_working_instant(start), "{start}");
                }
            }
            3 => {
                if let Ok(next) = calendar.next_working_instant(t) {
                    assert!(
                        next >= t && calendar.is_working_instant(next),
                        "{next} after {t}"
                    );
                }
                let _ = calendar.working_day(
                    calendar
                        .timezone()
                        .from_utc_datetime(&t.naive_utc())
                        .date_naive(),
                );
            }
            _ => {
                let text: &str = u.arbitrary()?;
                if let Ok(d) = text.parse::<Duration>() {
                    assert_eq!(d.to_string().parse::<Duration>().ok(), Some(d), "`{text}`");
                    let _ = calendar.add(t, d);
                }
            }
        }
    }
    Ok(())
}

/// An instant from two days before the coverage to two days after it, to the second.
fn instant(calendar: &Calendar, u: &mut Unstructured<'_>) -> Result<DateTime<Utc>> {
    let (first, last) = calendar.coverage();
    let start = first.and_time(NaiveTime::MIN).and_utc() - TimeDelta::days(2);
    let span_s = ((last - first).num_days() + 5) * 86_400;
    let offset = u.int_in_range(0..=span_s.max(1) as u64)? as i64;
    Ok(start + TimeDelta::seconds(offset))
}

/// A duration of any unit, with a number in the range the parser accepts.
fn duration(u: &mut Unstructured<'_>) -> Result<Duration> {
    let n = u.int_in_range(1..=lienthong_calendar::duration::DURATION_NUMBER_MAX)?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Duration::WorkingDays(n),
        1 => Duration::WorkingHours(n),
        2 => Duration::Days(n),
        _ => Duration::Hours(n),
    })
}
