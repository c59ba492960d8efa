//! Error messages for malformed calendar files: each points at `file:line:column` of the offending
//! value and gives a hint. The full rendered text is asserted, so a change to a message people
//! read is a reviewed change (a snapshot in plain `assert_eq!`).

use lienthong_calendar::{Calendar, Error};

const ORIGIN: &str = "workflows/calendars/vn-2026.toml";

/// A valid file with `key = value` lines of `[calendar]` replaced or added.
fn file(replace: &[(&str, &str)], extra: &str) -> String {
    let mut lines = vec![
        ("name", "\"vn-2026\""),
        ("timezone", "\"Asia/Ho_Chi_Minh\""),
        ("weekend", "[\"sat\", \"sun\"]"),
        ("hours", "[\"07:30-11:30\", \"13:00-17:00\"]"),
        ("holidays", "[\"2026-04-30\", \"2026-02-14..2026-02-22\"]"),
        ("working_days", "[\"2026-01-10\"]"),
    ];
    for (k, v) in replace {
        match lines.iter_mut().find(|(key, _)| key == k) {
            Some(line) => line.1 = v,
            None => lines.push((k, v)),
        }
    }
    let body: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!("# test calendar\n[calendar]\n{body}{extra}")
}

fn error_of(source: &str) -> Error {
    Calendar::parse(source, ORIGIN).expect_err("the file should be rejected")
}

fn shown(replace: &[(&str, &str)]) -> String {
    error_of(&file(replace, "")).to_string()
}

#[test]
fn the_base_file_is_valid() {
    let c = Calendar::parse(&file(&[], ""), ORIGIN).unwrap();
    assert_eq!(c.name(), "vn");
}

#[test]
fn a_bad_date() {
    let e = error_of(&file(
        &[("holidays", "[\"2026-04-30\", \"2026-02-30\"]")],
        "",
    ));
    assert_eq!(
        (e.origin(), e.line(), e.column()),
        (ORIGIN, Some(7), Some(27))
    );
    assert_eq!(e.message(), "\"2026-02-30\" is not a date");
    assert_eq!(
        e.to_string(),
        "workflows/calendars/vn-2026.toml:7:27: \"2026-02-30\" is not a date\n  hint: write dates as YYYY-MM-DD, ranges as YYYY-MM-DD..YYYY-MM-DD"
    );
}

#[test]
fn a_bad_range() {
    assert_eq!(
        shown(&[("holidays", "[\"2026-02-22..2026-02-14\"]")]),
        "workflows/calendars/vn-2026.toml:7:13: \"2026-02-22..2026-02-14\" ends before it starts\n  hint: write dates as YYYY-MM-DD, ranges as YYYY-MM-DD..YYYY-MM-DD"
    );
    assert_eq!(
        shown(&[("holidays", "[\"2026-1-5\"]")]),
        "workflows/calendars/vn-2026.toml:7:13: \"2026-1-5\" is not a date\n  hint: write dates as YYYY-MM-DD, ranges as YYYY-MM-DD..YYYY-MM-DD"
    );
}

#[test]
fn hours_that_end_before_they_start() {
    assert_eq!(
        shown(&[("hours", "[\"17:00-07:30\"]")]),
        "workflows/calendars/vn-2026.toml:6:10: \"17:00-07:30\" ends before it starts\n  hint: office hours cannot cross midnight; write the earlier time first"
    );
    assert_eq!(
        shown(&[("hours", "[\"7h30-11h30\"]")]),
        "workflows/calendars/vn-2026.toml:6:10: \"7h30-11h30\" is not a time range\n  hint: write office hours as HH:MM-HH:MM in 24-hour local time, start before end, e.g. \"07:30-11:30\""
    );
}

#[test]
fn overlapping_hours() {
    assert_eq!(
        shown(&[("hours", "[\"07:30-12:00\", \"11:30-17:00\"]")]),
        "workflows/calendars/vn-2026.toml:6:25: office hours \"11:30-17:00\" overlaps the previous range \"07:30-12:00\"\n  hint: list ranges in order of the day, with a break between them (or merge them into one)"
    );
}

#[test]
fn an_unknown_weekday() {
    assert_eq!(
        shown(&[("weekend", "[\"saturday\", \"sun\"]")]),
        "workflows/calendars/vn-2026.toml:5:12: \"saturday\" is not a weekday\n  hint: use mon, tue, wed, thu, fri, sat, sun"
    );
}

#[test]
fn an_unknown_key() {
    let e = error_of(&file(&[("holiday", "[\"2026-04-30\"]")], ""));
    assert_eq!((e.line(), e.column()), (Some(9), Some(1)));
    assert_eq!(
        e.to_string(),
        "workflows/calendars/vn-2026.toml:9:1: unknown field `holiday`, expected one of `name`, `family`, `covers`, `source`, `timezone`, `weekend`, `hours`, `holidays`, `working_days`\n  hint: valid keys here: `name`, `family`, `covers`, `source`, `timezone`, `weekend`, `hours`, `holidays`, `working_days`"
    );
    // In an office table too.
    let e = error_of(&file(
        &[],
        "[office.\"cong-an\"]\nhour = [\"07:00-11:00\"]\n",
    ));
    assert_eq!(e.line(), Some(10));
    assert!(e.hint().unwrap().contains("`note` or `hours`"), "{e}");
}

#[test]
fn an_unknown_timezone() {
    assert_eq!(
        shown(&[("timezone", "\"Asia/Hanoi\"")]),
        "workflows/calendars/vn-2026.toml:4:12: \"Asia/Hanoi\" is not a known time zone\n  hint: use an IANA time-zone name, e.g. \"Asia/Ho_Chi_Minh\""
    );
}

#[test]
fn toml_syntax_errors_have_a_position() {
    let e = error_of("[calendar]\nname = \"vn-2026\nweekend = []\n");
    assert_eq!(e.origin(), ORIGIN);
    assert_eq!(e.line(), Some(2));
    assert!(e.column().is_some());
}

#[test]
fn days_outside_the_file_and_contradictions() {
    assert_eq!(
        shown(&[("holidays", "[\"2027-01-01\"]")]),
        "workflows/calendars/vn-2026.toml:7:13: \"2027-01-01\" is outside the dates this file covers (2026-01-01..2026-12-31)\n  hint: put it in the file of its year, or widen `covers`"
    );
    assert_eq!(
        shown(&[("working_days", "[\"2026-01-12\"]")]),
        "workflows/calendars/vn-2026.toml:8:17: 2026-01-12 is a Monday and already a working day\n  hint: working_days lists only make-up days (làm bù) that would otherwise be off"
    );
    assert_eq!(
        shown(&[("working_days", "[\"2026-02-14\"]")]),
        "workflows/calendars/vn-2026.toml:8:17: 2026-02-14 is both a holiday and a working day\n  hint: remove it from one of the two lists"
    );
    assert_eq!(
        shown(&[("holidays", "[\"2026-04-30\", \"2026-04-29..2026-05-01\"]")]),
        "workflows/calendars/vn-2026.toml:7:27: 2026-04-30 is listed twice in holidays"
    );
}

#[test]
fn a_name_without_a_year_needs_covers() {
    assert_eq!(
        shown(&[("name", "\"vn-special\"")]),
        "workflows/calendars/vn-2026.toml:3:8: cannot tell which dates \"vn-special\" covers\n  hint: end the name with the year (\"vn-2026\") or add covers = \"2026-01-01..2026-12-31\""
    );
    let c = Calendar::parse(
        &file(
            &[
                ("name", "\"vn-special\""),
                ("family", "\"vn\""),
                ("covers", "\"2026-01-01..2026-12-31\""),
            ],
            "",
        ),
        ORIGIN,
    )
    .unwrap();
    assert_eq!(c.name(), "vn");
    assert_eq!(c.members()[0].name, "vn-special");
}

#[test]
fn a_family_must_agree_and_be_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(tmp.path().join(name), text).unwrap();
    write("a-2026.toml", file(&[("name", "\"a-2026\"")], ""));
    write(
        "a-2027.toml",
        file(
            &[
                ("name", "\"a-2027\""),
                ("timezone", "\"Asia/Bangkok\""),
                ("holidays", "[]"),
                ("working_days", "[]"),
            ],
            "",
        ),
    );
    write(
        "b-2025.toml",
        file(
            &[
                ("name", "\"b-2025\""),
                ("holidays", "[]"),
                ("working_days", "[]"),
            ],
            "",
        ),
    );
    write(
        "b-2027.toml",
        file(
            &[
                ("name", "\"b-2027\""),
                ("holidays", "[]"),
                ("working_days", "[]"),
            ],
            "",
        ),
    );
    let errors = Calendar::load_dir(tmp.path()).unwrap_err();
    let shown: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", tmp.path().display()), "")
        })
        .collect();
    assert_eq!(
        shown,
        [
            "a-2027.toml:4:12: timezone \"Asia/Bangkok\" differs from \"Asia/Ho_Chi_Minh\"\n  hint: all files of family \"a\" must agree; first seen in a-2026.toml".to_string(),
            "b-2027.toml:3:8: \"b-2027\" (2027-01-01..2027-12-31) leaves a gap after \"b-2025\" (2025-01-01..2025-12-31)\n  hint: files of a family must cover contiguous dates without overlap, e.g. one file per year".to_string(),
        ]
    );
}

#[test]
fn a_missing_key_names_the_required_ones() {
    let e = error_of("[calendar]\nname = \"vn-2026\"\nweekend = []\nhours = [\"07:30-11:30\"]\n");
    assert_eq!(e.message(), "missing field `timezone`");
    assert!(
        e.hint()
            .unwrap()
            .contains("name, timezone, weekend and hours"),
        "{e}"
    );
}

#[test]
fn unreadable_paths_are_io_errors() {
    let e = Calendar::load(std::path::Path::new("/nonexistent/vn-2026.toml")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("/nonexistent/vn-2026.toml: "),
        "{e}"
    );
    let es = Calendar::load_dir(std::path::Path::new("/nonexistent")).unwrap_err();
    assert!(matches!(es.as_slice(), [Error::Io { .. }]), "{es:?}");
}

#[test]
fn load_dir_reports_every_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("a-2026.toml"),
        file(
            &[("name", "\"a-2026\""), ("timezone", "\"Mars/Olympus\"")],
            "",
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("b-2026.toml"),
        file(&[("name", "\"b-2026\""), ("weekend", "[\"caturday\"]")], ""),
    )
    .unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "not a calendar").unwrap();
    let es = Calendar::load_dir(tmp.path()).unwrap_err();
    let messages: Vec<String> = es.iter().map(Error::message).collect();
    assert_eq!(
        messages,
        [
            "\"Mars/Olympus\" is not a known time zone",
            "\"caturday\" is not a weekday"
        ]
    );
}
