//! Instants in projection records: seconds and nanoseconds since 1970 in the stored form,
//! chrono's RFC 3339 text in human-readable ones.
//!
//! The database stores records with postcard ([`crate::record::to_bytes`]), which is not
//! human-readable: there an instant is `(seconds, nanoseconds)`, two varints, written and read
//! without formatting or parsing text. chrono's own form, which formats every part through
//! `core::fmt`, was two fifths of the time spent encoding a dossier record. A human-readable
//! serialiser (JSON) still gets chrono's text for each instant. Used as
//! `#[serde(with = "crate::instant")]`, [`option`] for optional instants, and [`option_pair`],
//! [`option_pair_option`] for the records' optional pairs that end with one.

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `t` as `(seconds, nanoseconds)` since 1970, or chrono's text when `s` is human-readable.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        t.serialize(s)
    } else {
        (t.timestamp(), t.timestamp_subsec_nanos()).serialize(s)
    }
}

/// An instant written by [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    if d.is_human_readable() {
        return DateTime::<Utc>::deserialize(d);
    }
    let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
    DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| D::Error::custom(format!("instant {secs}s {nanos}ns is out of range")))
}

/// An instant as [`serialize`] writes it and [`deserialize`] reads it, inside other types.
#[derive(Serialize, Deserialize)]
struct Instant(#[serde(with = "self")] DateTime<Utc>);

/// [`serialize`] and [`deserialize`] for an optional instant.
pub mod option {
    use super::*;

    /// `None`, or the instant as [`super::serialize`] writes it.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        t.map(Instant).serialize(s)
    }

    /// An optional instant written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Instant>::deserialize(d)?.map(|Instant(t)| t))
    }
}

/// For `Option<(T, DateTime<Utc>)>`: the instant as [`serialize`] writes it.
pub mod option_pair {
    use super::*;

    /// `None`, or `T` and the instant as [`super::serialize`] writes it.
    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<(T, DateTime<Utc>)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|(x, t)| (x, Instant(*t))).serialize(s)
    }

    /// A pair written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<(T, DateTime<Utc>)>, D::Error> {
        Ok(Option::<(T, Instant)>::deserialize(d)?.map(|(x, Instant(t))| (x, t)))
    }
}

/// For `Option<(T, Option<DateTime<Utc>>)>`: the instant as [`serialize`] writes it.
pub mod option_pair_option {
    use super::*;

    /// The pair: something, and maybe when.
    type Pair<T> = Option<(T, Option<DateTime<Utc>>)>;

    /// `None`, or `T` and the optional instant as [`super::serialize`] writes it.
    pub fn serialize<S: Serializer, T: Serialize>(v: &Pair<T>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|(x, t)| (x, t.map(Instant))).serialize(s)
    }

    /// A pair written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Pair<T>, D::Error> {
        Ok(
            Option::<(T, Option<Instant>)>::deserialize(d)?
                .map(|(x, t)| (x, t.map(|Instant(t)| t))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "crate::instant")]
        at: DateTime<Utc>,
        #[serde(with = "crate::instant::option")]
        maybe: Option<DateTime<Utc>>,
        #[serde(with = "crate::instant::option_pair")]
        pair: Option<(String, DateTime<Utc>)>,
        #[serde(with = "crate::instant::option_pair_option")]
        pair_option: Option<(String, Option<DateTime<Utc>>)>,
    }

    #[test]
    fn instants_round_trip_and_read_as_chrono_writes_them() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("leap second");
        let cases = [
            Utc.with_ymd_and_hms(2026, 12, 7, 16, 45, 35)
                .single()
                .expect("instant"),
            DateTime::from_timestamp(-1, 999_999_999).expect("before 1970"),
            DateTime::from_timestamp(0, 0).expect("epoch"),
            DateTime::from_timestamp(1_796_000_000, 123_456_789).expect("nanoseconds"),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.from_utc_datetime(&leap),
        ];
        for at in cases {
            for maybe in [None, Some(at)] {
                let r = Record {
                    at,
                    maybe,
                    pair: maybe.map(|t| ("finished".to_string(), t)),
                    pair_option: Some(("closed".to_string(), maybe)),
                };
                let stored = postcard::to_stdvec(&r).expect("encode");
                assert_eq!(postcard::from_bytes::<Record>(&stored).expect("decode"), r);
                // Human-readable: chrono's own text, both ways.
                let json = serde_json::to_value(&r).expect("json");
                assert_eq!(json["at"], serde_json::to_value(at).expect("chrono"));
                assert_eq!(json["maybe"], serde_json::to_value(maybe).expect("chrono"));
                assert_eq!(json["pair"], serde_json::to_value(&r.pair).expect("chrono"));
                assert_eq!(
                    json["pair_option"],
                    serde_json::to_value(&r.pair_option).expect("chrono")
                );
                assert_eq!(
                    serde_json::from_value::<Record>(json).expect("json back"),
                    r
                );
            }
        }
        // Out of range numbers are an error, not a panic.
        let bad = postcard::to_stdvec(&(
            (i64::MAX, 0u32),
            None::<(i64, u32)>,
            None::<(String, (i64, u32))>,
            None::<(String, Option<(i64, u32)>)>,
        ))
        .expect("encode");
        assert!(postcard::from_bytes::<Record>(&bad).is_err());
    }
}
