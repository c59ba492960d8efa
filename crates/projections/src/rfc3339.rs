//! Instants written into projection records as chrono's serde writes them, without `core::fmt`.
//!
//! chrono serialises a `DateTime<Utc>` through `Display` (`collect_str`), one `fmt` call per
//! part; a profile of `bench rebuild` put that at half of the time spent encoding dossier
//! records. [`serialize`] writes the same text (`2026-11-30T08:00:00Z`, with `.mmm`, `.uuuuuu`
//! or `.nnnnnnnnn` when the sub-second part needs them, as chrono's `SecondsFormat::AutoSi`) from
//! the date's and time's numbers into a stack buffer, so a record reads back through chrono's own
//! `Deserialize`, and the record structs keep chrono's text form wherever else they are
//! serialised. Years outside 0..=9999 and leap seconds, which chrono writes in other forms, go
//! through chrono itself.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest form written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LEN_MAX: usize = 30;

/// `t` as chrono's serde writes it, or `None` when chrono writes it in another form (a year
/// outside 0..=9999, a leap second).
fn format(t: &DateTime<Utc>, buf: &mut [u8; LEN_MAX]) -> Option<usize> {
    let (year, nano) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let mut w = Writer { buf, at: 0 };
    w.digits(year.unsigned_abs(), 4);
    w.byte(b'-');
    w.digits(t.month(), 2);
    w.byte(b'-');
    w.digits(t.day(), 2);
    w.byte(b'T');
    w.digits(t.hour(), 2);
    w.byte(b':');
    w.digits(t.minute(), 2);
    w.byte(b':');
    w.digits(t.second(), 2);
    if nano != 0 {
        w.byte(b'.');
        if nano % 1_000_000 == 0 {
            w.digits(nano / 1_000_000, 3);
        } else if nano % 1_000 == 0 {
            w.digits(nano / 1_000, 6);
        } else {
            w.digits(nano, 9);
        }
    }
    w.byte(b'Z');
    Some(w.at)
}

/// Bytes written into a buffer long enough for every form [`format`] writes.
struct Writer<'a> {
    buf: &'a mut [u8; LEN_MAX],
    at: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    /// `n`'s last `count` decimal digits, zero-padded.
    fn digits(&mut self, n: u32, count: u32) {
        for i in (0..count).rev() {
            self.byte(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    }
}

/// Serialises `t` exactly as `DateTime<Utc>`'s own `Serialize` does (for `serialize_with`).
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; LEN_MAX];
    match format(t, &mut buf) {
        Some(n) => match std::str::from_utf8(&buf[..n]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => t.serialize(s),
        },
        None => t.serialize(s),
    }
}

/// [`serialize`] for an optional instant (`null` when absent, as serde writes `None`).
pub fn option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    /// An instant written by [`serialize`], for `serialize_some`.
    struct Instant<'a>(&'a DateTime<Utc>);
    impl Serialize for Instant<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Instant(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn ours(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).expect("serialise");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn writes_what_chrono_writes() {
        let mut cases: Vec<DateTime<Utc>> = Vec::new();
        for (y, mo, d, h, mi, s) in [
            (2026, 12, 7, 16, 45, 35),
            (0, 1, 1, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59),
            (1970, 1, 1, 0, 0, 0),
            (1969, 12, 31, 23, 59, 59),
            (10000, 1, 1, 0, 0, 0),
            (-1, 6, 15, 12, 0, 0),
            (2024, 2, 29, 9, 5, 7),
        ] {
            let base = Utc
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("instant");
            for nano in [
                0,
                1,
                7,
                999,
                1_000,
                120_000,
                999_999,
                1_000_000,
                5_000_000,
                123_000_000,
                123_456_000,
                123_456_789,
                999_999_999,
            ] {
                cases.push(base + chrono::TimeDelta::nanoseconds(nano));
            }
        }
        // A leap second: chrono writes it as second 60.
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("leap second");
        cases.push(Utc.from_utc_datetime(&leap));
        // And a spread of ordinary instants.
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = x.rem_euclid(253_402_300_800); // 0001-01-01 .. 9999-12-31
            let nano = (x >> 20).rem_euclid(1_000_000_000) as u32;
            let nano = match x.rem_euclid(4) {
                0 => 0,
                1 => nano / 1_000_000 * 1_000_000,
                2 => nano / 1_000 * 1_000,
                _ => nano,
            };
            cases.push(DateTime::from_timestamp(secs - 62_135_596_800, nano).expect("instant"));
        }
        for t in &cases {
            assert_eq!(ours(t), serde_json::to_string(t).expect("chrono"), "{t:?}");
        }
        let some = Some(cases[0]);
        let mut out = Vec::new();
        option(&some, &mut serde_json::Serializer::new(&mut out)).expect("serialise");
        assert_eq!(out, serde_json::to_vec(&some).expect("chrono"));
        let mut out = Vec::new();
        option(&None, &mut serde_json::Serializer::new(&mut out)).expect("serialise");
        assert_eq!(out, b"null");
    }
}
