//! Real cases against the shipped calendars in `workflows/calendars/` (no mocks): holidays,
//! make-up Saturdays, cut-offs, the end-of-day rule, wall-clock units, year crossings, coverage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use lienthong_calendar::{Calendar, Duration, Error};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows/calendars")
}

fn all() -> BTreeMap<String, Calendar> {
    Calendar::load_dir(&dir()).unwrap_or_else(|es| {
        panic!(
            "{}",
            es.iter().map(|e| format!("{e}\n")).collect::<String>()
        )
    })
}

fn vn() -> Calendar {
    all().remove("vn").expect("family vn")
}

/// Local Vietnam time as UTC.
fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Ho_Chi_Minh
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

#[test]
fn the_directory_holds_one_family_of_three_years() {
    let cals = all();
    assert_eq!(cals.keys().collect::<Vec<_>>(), ["vn"]);
    let vn = &cals["vn"];
    assert_eq!(vn.name(), "vn");
    assert_eq!(vn.coverage(), (date(2025, 1, 1), date(2027, 12, 31)));
    let names: Vec<_> = vn.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["vn-2025", "vn-2026", "vn-2027"]);
    assert!(
        vn.members().iter().all(|m| m.source.is_some()),
        "every shipped file says where its data came from"
    );
    assert!(
        vn.members()[2]
            .source
            .as_deref()
            .unwrap()
            .starts_with("PROVISIONAL")
    );
    assert_eq!(vn.hash().len(), 64);
    assert!(
        vn.hash()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(vn.timezone(), chrono_tz::Asia::Ho_Chi_Minh);
    assert_eq!(vn.working_day_length(), TimeDelta::hours(8));
    // Loading twice gives the same hash: it depends on the data only.
    assert_eq!(vn.hash(), all()["vn"].hash());
}

#[test]
fn a_holiday_never_counts() {
    let vn = vn();
    assert!(!vn.is_working_day(date(2026, 4, 30)));
    assert!(!vn.is_working_instant(at(2026, 4, 30, 9, 0)));
    let whole_holiday = vn
        .working_time_between(at(2026, 4, 30, 0, 0), at(2026, 5, 4, 0, 0))
        .unwrap();
    assert_eq!(
        whole_holiday,
        TimeDelta::zero(),
        "30/4, 1/5 and the weekend"
    );
    // All nine days of Tết Bính Ngọ.
    let tet = vn
        .working_time_between(at(2026, 2, 14, 0, 0), at(2026, 2, 23, 0, 0))
        .unwrap();
    assert_eq!(tet, TimeDelta::zero());
}

#[test]
fn a_make_up_saturday_counts() {
    let vn = vn();
    assert!(vn.is_working_day(date(2026, 1, 10)));
    assert!(
        !vn.is_working_day(date(2026, 1, 17)),
        "an ordinary Saturday"
    );
    assert!(vn.is_working_instant(at(2026, 1, 10, 9, 0)));
    assert_eq!(
        vn.working_time_between(at(2026, 1, 10, 0, 0), at(2026, 1, 11, 0, 0))
            .unwrap(),
        TimeDelta::hours(8)
    );
    // Fri 9/1 08:00 + 1wd lands on the make-up Saturday, not on Monday.
    assert_eq!(
        vn.add(at(2026, 1, 9, 8, 0), Duration::WorkingDays(1))
            .unwrap(),
        at(2026, 1, 10, 8, 0)
    );
}

#[test]
fn a_receipt_after_the_cutoff_starts_the_next_working_morning() {
    let vn = vn();
    let cutoff = Some(hm(15, 0));
    // Tue 2026-03-10 16:00 → Wed 07:30.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 16, 0), cutoff).unwrap(),
        at(2026, 3, 11, 7, 30)
    );
    // Before the cutoff the clock starts at once.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 14, 59), cutoff).unwrap(),
        at(2026, 3, 10, 14, 59)
    );
    // Exactly at the cutoff is not after it.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 15, 0), cutoff).unwrap(),
        at(2026, 3, 10, 15, 0)
    );
    // Wed 2026-04-29 16:00: 30/4, 1/5 and the weekend are off → Mon 4/5 07:30.
    assert_eq!(
        vn.clock_start(at(2026, 4, 29, 16, 0), cutoff).unwrap(),
        at(2026, 5, 4, 7, 30)
    );
    // Without a cutoff, 16:00 is inside office hours.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 16, 0), None).unwrap(),
        at(2026, 3, 10, 16, 0)
    );
}

#[test]
fn a_receipt_outside_office_hours_starts_at_the_next_office_instant() {
    let vn = vn();
    // Lunch.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 12, 0), None).unwrap(),
        at(2026, 3, 10, 13, 0)
    );
    // Early morning.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 6, 0), Some(hm(15, 0)))
            .unwrap(),
        at(2026, 3, 10, 7, 30)
    );
    // 17:00 is the end of the day: nothing starts then.
    assert_eq!(
        vn.clock_start(at(2026, 3, 10, 17, 0), None).unwrap(),
        at(2026, 3, 11, 7, 30)
    );
    // Saturday → Monday 07:30.
    assert_eq!(
        vn.clock_start(at(2026, 3, 14, 10, 0), None).unwrap(),
        at(2026, 3, 16, 7, 30)
    );
    // Saturday at the start of Tết → Monday after Tết.
    assert_eq!(
        vn.clock_start(at(2026, 2, 14, 10, 0), None).unwrap(),
        at(2026, 2, 23, 7, 30)
    );
}

#[test]
fn working_days_skip_weekends_and_holidays() {
    let vn = vn();
    // Thu 23/4 08:00 + 3wd: Thu 7.5h, Fri 8h, weekend, Mon 27/4 off (Hùng Kings compensated),
    // Tue 8h, Wed 0.5h → Wed 29/4 08:00.
    assert_eq!(
        vn.add(at(2026, 4, 23, 8, 0), Duration::WorkingDays(3))
            .unwrap(),
        at(2026, 4, 29, 8, 0)
    );
    // One more day jumps over 30/4, 1/5 and the weekend → Mon 4/5 08:00.
    assert_eq!(
        vn.add(at(2026, 4, 23, 8, 0), Duration::WorkingDays(4))
            .unwrap(),
        at(2026, 5, 4, 8, 0)
    );
    // Tue 28/4 08:00 + 3wd → Tue 5/5 08:00.
    assert_eq!(
        vn.add(at(2026, 4, 28, 8, 0), Duration::WorkingDays(3))
            .unwrap(),
        at(2026, 5, 5, 8, 0)
    );
    // Working hours cross lunch: 10:30 + 2wh → 14:00.
    assert_eq!(
        vn.add(at(2026, 3, 10, 10, 30), Duration::WorkingHours(2))
            .unwrap(),
        at(2026, 3, 10, 14, 0)
    );
}

#[test]
fn a_due_landing_at_the_end_of_the_day_stays_there() {
    let vn = vn();
    assert_eq!(
        vn.add(at(2026, 3, 9, 7, 30), Duration::WorkingDays(1))
            .unwrap(),
        at(2026, 3, 9, 17, 0)
    );
    assert_eq!(
        vn.add(at(2026, 3, 9, 13, 0), Duration::WorkingHours(4))
            .unwrap(),
        at(2026, 3, 9, 17, 0)
    );
    // The same at the end of the morning.
    assert_eq!(
        vn.add(at(2026, 3, 9, 7, 30), Duration::WorkingHours(4))
            .unwrap(),
        at(2026, 3, 9, 11, 30)
    );
    assert!(vn.is_due_instant(at(2026, 3, 9, 17, 0)));
    assert!(!vn.is_working_instant(at(2026, 3, 9, 17, 0)));
    assert!(!vn.is_due_instant(at(2026, 3, 9, 7, 30)));
    assert!(vn.is_working_instant(at(2026, 3, 9, 7, 30)));
}

#[test]
fn days_and_hours_are_wall_clock() {
    let vn = vn();
    // 7d from Thu 23/4 08:00 is Thu 30/4 08:00, a holiday: calendar days do not care.
    assert_eq!(
        vn.add(at(2026, 4, 23, 8, 0), Duration::Days(7)).unwrap(),
        at(2026, 4, 30, 8, 0)
    );
    // 12h from Fri 16:00 is Sat 04:00.
    assert_eq!(
        vn.add(at(2026, 3, 13, 16, 0), Duration::Hours(12)).unwrap(),
        at(2026, 3, 14, 4, 0)
    );
    // They need no holidays, so they work beyond coverage.
    assert_eq!(
        vn.add(at(2027, 12, 30, 9, 0), Duration::Days(7)).unwrap(),
        at(2028, 1, 6, 9, 0)
    );
    assert_eq!(vn.working_time(Duration::Days(7)), None);
    assert_eq!(
        vn.working_time(Duration::WorkingDays(3)),
        Some(TimeDelta::hours(24))
    );
}

#[test]
fn deadlines_cross_the_year_end_through_the_family() {
    let vn = vn();
    // Thu 31/12/2026 08:00 + 3wd: Thu 7.5h, Fri 1/1/2027 off, weekend, Mon 8h, Tue 8h, Wed 0.5h.
    assert_eq!(
        vn.add(at(2026, 12, 31, 8, 0), Duration::WorkingDays(3))
            .unwrap(),
        at(2027, 1, 6, 8, 0)
    );
    assert_eq!(
        vn.working_time_between(at(2026, 12, 31, 8, 0), at(2027, 1, 6, 8, 0))
            .unwrap(),
        TimeDelta::hours(24)
    );
    // The 2026 file alone does not know 2027: it says so instead of guessing.
    let only_2026 = Calendar::load(&dir().join("vn-2026.toml")).unwrap();
    assert_eq!(only_2026.name(), "vn");
    let err = only_2026
        .add(at(2026, 12, 31, 8, 0), Duration::WorkingDays(3))
        .unwrap_err();
    assert!(
        matches!(err, Error::BeyondCoverage { date, .. } if date == date_2027_01_01()),
        "{err}"
    );
}

fn date_2027_01_01() -> NaiveDate {
    date(2027, 1, 1)
}

#[test]
fn beyond_coverage_is_an_error_with_a_hint() {
    let vn = vn();
    let err = vn
        .add(at(2027, 12, 31, 16, 0), Duration::WorkingHours(2))
        .unwrap_err();
    let Error::BeyondCoverage {
        family, date: d, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((family.as_str(), *d), ("vn", date(2028, 1, 1)));
    let shown = err.to_string();
    assert!(shown.ends_with(
        ": calendar \"vn\" does not cover 2028-01-01 (it covers 2025-01-01..2027-12-31), so its holidays are unknown\n  hint: add the calendar file for 2028 (e.g. `vn-2028.toml`, with `name = \"vn-2028\"`) to the calendars directory"
    ), "{shown}");
    assert!(err.origin().ends_with("vn-2027.toml"));
    // Before the first year too, and for every operation that needs days.
    assert!(matches!(
        vn.clock_start(at(2024, 12, 31, 9, 0), None),
        Err(Error::BeyondCoverage { .. })
    ));
    assert!(matches!(
        vn.working_time_between(at(2024, 12, 31, 9, 0), at(2025, 1, 2, 9, 0)),
        Err(Error::BeyondCoverage { .. })
    ));
    assert!(matches!(
        vn.working_day(date(2028, 1, 3)),
        Err(Error::BeyondCoverage { .. })
    ));
    // 3660wd (the largest duration) runs into the end of coverage, in bounded time.
    assert!(matches!(
        vn.add(at(2025, 1, 2, 8, 0), Duration::WorkingDays(3660)),
        Err(Error::BeyondCoverage { .. })
    ));
}

#[test]
fn working_time_is_antisymmetric_and_formatted_in_days() {
    let vn = vn();
    let (a, b) = (at(2026, 3, 9, 7, 30), at(2026, 3, 11, 11, 15));
    let t = vn.working_time_between(a, b).unwrap();
    assert_eq!(t, TimeDelta::hours(19) + TimeDelta::minutes(45));
    assert_eq!(vn.working_time_between(b, a).unwrap(), -t);
    assert_eq!(vn.format_working_time(t), "2wd 3h45m");
    assert_eq!(vn.format_working_time(TimeDelta::hours(-1)), "-0wd 1h");
    assert_eq!(vn.format_working_time(TimeDelta::zero()), "0wd");
    assert_eq!(vn.format_working_time(TimeDelta::hours(16)), "2wd");
    assert_eq!(vn.format_working_time(TimeDelta::seconds(90)), "0wd 1m30s");
}

#[test]
fn an_office_override_changes_hours_and_hash() {
    let vn = vn();
    let hn = vn.for_office("ha-noi");
    assert_eq!(hn.office(), Some("ha-noi"));
    assert_ne!(hn.hash(), vn.hash());
    assert_eq!(hn.hash(), vn.for_office("ha-noi").hash(), "deterministic");
    assert_eq!(
        hn.office_hours(),
        vec![(hm(8, 0), hm(12, 0)), (hm(13, 0), hm(17, 0))]
    );
    assert_eq!(
        hn.clock_start(at(2026, 3, 10, 7, 45), None).unwrap(),
        at(2026, 3, 10, 8, 0)
    );
    assert_eq!(
        hn.add(at(2026, 3, 10, 8, 0), Duration::WorkingHours(4))
            .unwrap(),
        at(2026, 3, 10, 12, 0)
    );
    // Same days off.
    assert!(!hn.is_working_day(date(2026, 4, 30)));
    // Unknown key: the calendar itself.
    let same = vn.for_office("no-such-office");
    assert_eq!((same.hash(), same.office()), (vn.hash(), None));
    assert_eq!(vn.offices().collect::<Vec<_>>(), ["ha-noi"]);
}

#[test]
fn any_edit_of_any_member_changes_the_family_hash() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["vn-2025.toml", "vn-2026.toml", "vn-2027.toml"] {
        std::fs::copy(dir().join(name), tmp.path().join(name)).unwrap();
    }
    let before = Calendar::load_dir(tmp.path()).unwrap()["vn"].clone();
    assert_eq!(
        before.hash(),
        vn().hash(),
        "the hash depends on contents, not on paths"
    );
    let path = tmp.path().join("vn-2025.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("# Tết Dương lịch (Wed)", "# Tết Dương lịch"),
    )
    .unwrap();
    let after = Calendar::load_dir(tmp.path()).unwrap()["vn"].clone();
    assert_ne!(
        after.hash(),
        before.hash(),
        "even a comment is part of the data on record"
    );
    assert_ne!(after.members()[0].hash, before.members()[0].hash);
    assert_eq!(after.members()[1].hash, before.members()[1].hash);
}
