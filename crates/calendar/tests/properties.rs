//! Property tests of the calendar arithmetic, on the shipped `vn` family, its office view, and a
//! synthetic calendar in a zone with daylight saving (Europe/Berlin, three segments a day, one of
//! them at night across the clock change) so nothing silently relies on Vietnam having no DST.
//!
//! What they prove, for random instants in the covered dates and random working durations:
//! - a due instant from `add` in working units is inside office hours by the end-of-day rule:
//!   `start < due <= end` of a segment of a working day (`is_due_instant`);
//! - adding in two steps equals adding once: `add(add(t, a), b) == add(t, a + b)` (same unit);
//! - `working_time_between(t, add(t, d)) == working_time(d)`;
//! - `working_time_between(a, b) == -working_time_between(b, a)`;
//! - `clock_start` returns a working instant at or after receipt, with no working time skipped.

use std::sync::OnceLock;

use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use lienthong_calendar::{Calendar, Duration};
use proptest::prelude::*;

fn vn() -> &'static Calendar {
    static VN: OnceLock<Calendar> = OnceLock::new();
    VN.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/calendars");
        Calendar::load_dir(&dir).unwrap().remove("vn").unwrap()
    })
}

fn berlin() -> &'static Calendar {
    static BERLIN: OnceLock<Calendar> = OnceLock::new();
    BERLIN.get_or_init(|| {
        let source = r#"
            [calendar]
            name = "dst-2026"
            timezone = "Europe/Berlin"
            weekend = ["sun"]
            hours = ["01:30-03:30", "08:00-12:00", "13:00-17:00"]
            holidays = ["2026-03-30", "2026-10-26..2026-10-27"]
            working_days = ["2026-03-29", "2026-10-25"]
        "#;
        Calendar::parse(source, "dst-2026.toml").unwrap()
    })
}

/// The calendars under test, picked by index.
fn calendar(i: usize) -> Calendar {
    match i {
        0 => vn().clone(),
        1 => vn().for_office("ha-noi"),
        _ => berlin().clone(),
    }
}

/// An instant in the first part of the calendar's coverage, on a 1-minute grid, leaving room for
/// the durations below before the coverage ends.
fn instant(c: &Calendar, minutes: i64) -> DateTime<Utc> {
    let (first, last) = c.coverage();
    let start = c
        .timezone()
        .from_utc_datetime(&first.and_time(NaiveTime::MIN))
        .with_timezone(&Utc);
    let span_min = (last - first).num_minutes() - 120 * 24 * 60;
    start + TimeDelta::minutes(minutes.rem_euclid(span_min))
}

fn working(unit_days: bool, n: u32) -> Duration {
    if unit_days {
        Duration::WorkingDays(n)
    } else {
        Duration::WorkingHours(n)
    }
}

fn sum(a: Duration, b: Duration) -> Duration {
    match (a, b) {
        (Duration::WorkingDays(x), Duration::WorkingDays(y)) => Duration::WorkingDays(x + y),
        (Duration::WorkingHours(x), Duration::WorkingHours(y)) => Duration::WorkingHours(x + y),
        _ => unreachable!("same unit only"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn due_is_inside_office_hours(c in 0usize..3, m in any::<i64>(), days in any::<bool>(), n in 1u32..40) {
        let cal = calendar(c);
        let due = cal.add(instant(&cal, m), working(days, n)).unwrap();
        prop_assert!(cal.is_due_instant(due), "{due} in {}", cal.name());
    }

    #[test]
    fn adding_in_two_steps_is_adding_once(
        c in 0usize..3, m in any::<i64>(), days in any::<bool>(), a in 1u32..30, b in 1u32..30, from_working in any::<bool>(),
    ) {
        let cal = calendar(c);
        let mut t = instant(&cal, m);
        if from_working {
            t = cal.clock_start(t, None).unwrap();
            prop_assert!(cal.is_working_instant(t));
        }
        let (a, b) = (working(days, a), working(days, b));
        let twice = cal.add(cal.add(t, a).unwrap(), b).unwrap();
        prop_assert_eq!(twice, cal.add(t, sum(a, b)).unwrap());
    }

    #[test]
    fn working_time_to_the_due_is_the_duration(c in 0usize..3, m in any::<i64>(), days in any::<bool>(), n in 1u32..40) {
        let cal = calendar(c);
        let t = instant(&cal, m);
        let d = working(days, n);
        let due = cal.add(t, d).unwrap();
        prop_assert_eq!(cal.working_time_between(t, due).unwrap(), cal.working_time(d).unwrap());
    }

    #[test]
    fn working_time_is_antisymmetric(c in 0usize..3, a in any::<i64>(), b in any::<i64>()) {
        let cal = calendar(c);
        let (a, b) = (instant(&cal, a), instant(&cal, b));
        let ab = cal.working_time_between(a, b).unwrap();
        prop_assert_eq!(ab, -cal.working_time_between(b, a).unwrap());
        let sign_ok = if a <= b { ab >= TimeDelta::zero() } else { ab <= TimeDelta::zero() };
        prop_assert!(sign_ok, "{ab} from {a} to {b}");
    }

    /// `working_start_before` is exact: `amount` of working time is left from its answer, and any
    /// earlier instant leaves more (so it went back across non-working time, never into work).
    #[test]
    fn working_start_before_leaves_exactly_the_amount(
        c in 0usize..3, m in any::<i64>(), sub_ns in 0i64..60_000_000_000, amount_s in 0i64..(40 * 3600),
    ) {
        let cal = calendar(c);
        let to = instant(&cal, m) + TimeDelta::nanoseconds(sub_ns);
        let amount = TimeDelta::seconds(amount_s);
        let start = cal.working_start_before(to, amount);
        prop_assume!(start.is_ok(), "walked back out of the coverage");
        let start = start.unwrap();
        prop_assert!(start <= to);
        prop_assert_eq!(cal.working_time_between(start, to).unwrap(), amount);
        let before = start - TimeDelta::nanoseconds(1);
        prop_assert!(cal.working_time_between(before, to).unwrap() > amount, "{start} is not the earliest");
    }

    #[test]
    fn the_clock_starts_at_the_next_working_instant(c in 0usize..3, m in any::<i64>(), cutoff_min in 0u32..(24 * 60), with_cutoff in any::<bool>()) {
        let cal = calendar(c);
        let received = instant(&cal, m);
        let cutoff = with_cutoff.then(|| NaiveTime::from_num_seconds_from_midnight_opt(cutoff_min * 60, 0).unwrap());
        let start = cal.clock_start(received, cutoff).unwrap();
        prop_assert!(start >= received);
        prop_assert!(cal.is_working_instant(start), "{start}");
        if cutoff.is_none() {
            prop_assert_eq!(cal.working_time_between(received, start).unwrap(), TimeDelta::zero());
        }
    }
}

/// The synthetic calendar's clock changes really exercise the DST paths.
#[test]
fn daylight_saving_days_have_other_lengths() {
    let cal = berlin();
    let day = |y, m, d| {
        let a = chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, m, d, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        cal.working_time_between(a, a + TimeDelta::hours(23))
            .unwrap()
    };
    // 01:30-03:30 loses an hour on 2026-03-29 (a make-up Sunday) and gains one on 2026-10-25.
    assert_eq!(day(2026, 3, 29), TimeDelta::hours(9));
    assert_eq!(day(2026, 3, 28), TimeDelta::hours(10));
    assert_eq!(day(2026, 10, 25), TimeDelta::hours(11));
    assert_eq!(cal.working_day_length(), TimeDelta::hours(10));
    // Spring: 01:30 CET + 1wh is the end of the shortened night segment, 03:30 CEST.
    let berlin = |d, h, m| {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 3, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    };
    assert_eq!(
        cal.add(berlin(29, 1, 30), Duration::WorkingHours(1))
            .unwrap(),
        berlin(29, 3, 30)
    );
    assert_eq!(
        cal.add(berlin(29, 1, 30), Duration::WorkingHours(2))
            .unwrap(),
        berlin(29, 9, 0)
    );
}

/// A local time inside the spring-forward gap maps to the transition instant, so a clock started
/// there runs from the first instant after the gap.
#[test]
fn a_receipt_in_the_gap_starts_after_it() {
    let cal = berlin();
    // 2026-03-29 01:00 UTC is 03:00 CEST, the first instant after the gap (02:00-03:00 CET).
    let t = Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 0).unwrap();
    assert_eq!(
        cal.clock_start(t, None).unwrap(),
        t,
        "01:59 CET is inside 01:30-03:30"
    );
    assert!(cal.is_working_instant(Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()));
}

#[test]
fn calendars_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<Calendar>();
}
