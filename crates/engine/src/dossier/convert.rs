//! Conversions between the engine's typed values and the protobuf contract.
//!
//! Attribute values, timestamps and document references cross the boundary between the typed
//! domain (`lienthong_workflow::AttrValue`, `chrono`) and the stored events (`lienthong_proto`).
//! Both sides are foreign to this crate, so these are free functions rather than `From` impls.
//! Dates travel as `YYYY-MM-DD`, as the contract says.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use lienthong_proto::v1::{AttributeValue, attribute_value::Kind};
use lienthong_workflow::AttrValue;

/// The text form of a date attribute in events and commands.
pub const DATE_FORMAT: &str = "%Y-%m-%d";

/// Why a stored attribute value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The value has no kind set (an empty `AttributeValue`).
    #[error("attribute `{0}` has no value")]
    Empty(String),
    /// A date attribute that is not `YYYY-MM-DD`.
    #[error("attribute `{name}` holds `{text}`, which is not a date in the form YYYY-MM-DD")]
    Date {
        /// The attribute.
        name: String,
        /// The text found.
        text: String,
    },
}

/// The contract's form of a typed attribute value.
pub fn attr_to_proto(value: &AttrValue) -> AttributeValue {
    let kind = match value {
        AttrValue::Text(s) => Kind::Text(s.clone()),
        AttrValue::Integer(i) => Kind::Integer(*i),
        AttrValue::Boolean(b) => Kind::Boolean(*b),
        AttrValue::Date(d) => Kind::Date(d.format(DATE_FORMAT).to_string()),
    };
    AttributeValue { kind: Some(kind) }
}

/// The typed value of a stored attribute; `name` is only used in the error.
pub fn attr_from_proto(name: &str, value: &AttributeValue) -> Result<AttrValue, Error> {
    match &value.kind {
        None => Err(Error::Empty(name.to_string())),
        Some(Kind::Text(s)) => Ok(AttrValue::Text(s.clone())),
        Some(Kind::Integer(i)) => Ok(AttrValue::Integer(*i)),
        Some(Kind::Boolean(b)) => Ok(AttrValue::Boolean(*b)),
        Some(Kind::Date(text)) => NaiveDate::parse_from_str(text, DATE_FORMAT)
            .map(AttrValue::Date)
            .map_err(|_| Error::Date {
                name: name.to_string(),
                text: text.clone(),
            }),
    }
}

/// A whole attribute map in the contract's form.
pub fn attrs_to_proto(attrs: &BTreeMap<String, AttrValue>) -> BTreeMap<String, AttributeValue> {
    attrs
        .iter()
        .map(|(k, v)| (k.clone(), attr_to_proto(v)))
        .collect()
}

/// A whole stored attribute map, typed; fails on the first unreadable value.
pub fn attrs_from_proto(
    attrs: &BTreeMap<String, AttributeValue>,
) -> Result<BTreeMap<String, AttrValue>, Error> {
    attrs
        .iter()
        .map(|(k, v)| Ok((k.clone(), attr_from_proto(k, v)?)))
        .collect()
}

/// An instant as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9, so it fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(i32::MAX),
    }
}

/// A protobuf timestamp as an instant; `None` when absent or out of chrono's range.
pub fn instant(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_dates_as_text() {
        let values = [
            AttrValue::Text("Nguyễn Văn A".into()),
            AttrValue::Integer(-5),
            AttrValue::Boolean(true),
            AttrValue::Date(NaiveDate::from_ymd_opt(2026, 2, 28).expect("valid date")),
        ];
        for v in values {
            let p = attr_to_proto(&v);
            assert_eq!(attr_from_proto("x", &p), Ok(v));
        }
        let d = attr_to_proto(&AttrValue::Date(
            NaiveDate::from_ymd_opt(2026, 1, 2).expect("valid date"),
        ));
        assert_eq!(d.kind, Some(Kind::Date("2026-01-02".into())));
    }

    #[test]
    fn bad_stored_values_are_errors_not_panics() {
        let bad = AttributeValue {
            kind: Some(Kind::Date("02/01/2026".into())),
        };
        assert!(matches!(
            attr_from_proto("child.birth_date", &bad),
            Err(Error::Date { .. })
        ));
        assert!(matches!(
            attr_from_proto("x", &AttributeValue { kind: None }),
            Err(Error::Empty(_))
        ));
    }

    #[test]
    fn timestamps_round_trip() {
        let at = DateTime::from_timestamp(1_790_000_000, 123_000_000).expect("in range");
        assert_eq!(instant(Some(&timestamp(at))), Some(at));
        assert_eq!(instant(None), None);
    }
}
