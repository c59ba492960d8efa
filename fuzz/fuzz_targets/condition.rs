//! Fuzz target `condition`: the CEL condition language of `when = "..."`
//! (`lienthong_workflow::condition`), compiled and evaluated as the engine does.
//!
//! Input: the condition text up to the first NUL byte; the bytes after it choose the dossier's
//! attribute values (present or absent, and of which value; now and then of the wrong type).
//! The declared attributes cover every type, required and optional, under two namespaces, the
//! way the shipped procedures declare theirs.
//!
//! Checks: compiling never panics and its issues point inside the text (or just after it); a compiled condition
//! evaluates without panicking to true, false or an `Error`; a constant condition evaluates to its
//! constant; evaluation is deterministic.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::NaiveDate;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lienthong_workflow::condition::Error;
use lienthong_workflow::{AttrType, AttrValue, AttributeSpec, Condition};

/// The declared attributes: (name, type, required).
const DECLARED: [(&str, AttrType, bool); 8] = [
    ("child.age_months", AttrType::Integer, true),
    ("child.birth_date", AttrType::Date, true),
    ("child.has_health_card", AttrType::Boolean, false),
    ("child.name", AttrType::Text, false),
    ("request.benefit", AttrType::Boolean, true),
    ("request.kind", AttrType::Text, true),
    ("request.count", AttrType::Integer, false),
    ("request.filed_on", AttrType::Date, false),
];

fn declared() -> &'static BTreeMap<String, AttributeSpec> {
    static SPECS: OnceLock<BTreeMap<String, AttributeSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        DECLARED
            .iter()
            .map(|&(name, ty, required)| {
                let spec = AttributeSpec {
                    name: name.to_string(),
                    ty,
                    required,
                    description: String::new(),
                };
                (name.to_string(), spec)
            })
            .collect()
    })
}

/// A value of `ty` (or, one time in eight, of another type).
fn value(u: &mut Unstructured<'_>, ty: AttrType) -> Result<AttrValue> {
    let ty = if u.ratio(1, 8)? {
        *u.choose(&[
            AttrType::Integer,
            AttrType::Text,
            AttrType::Boolean,
            AttrType::Date,
        ])?
    } else {
        ty
    };
    Ok(match ty {
        AttrType::Integer => AttrValue::Integer(u.arbitrary()?),
        AttrType::Text => AttrValue::Text(u.arbitrary()?),
        AttrType::Boolean => AttrValue::Boolean(u.arbitrary()?),
        AttrType::Date => {
            let days: i32 = u.arbitrary()?;
            let date = NaiveDate::from_num_days_from_ce_opt(days).unwrap_or(NaiveDate::MIN);
            AttrValue::Date(date)
        }
    })
}

/// The dossier's attributes; an exhausted input gives the defaults (every one present).
fn attributes(u: &mut Unstructured<'_>) -> BTreeMap<String, AttrValue> {
    let mut attrs = BTreeMap::new();
    for &(name, ty, _) in &DECLARED {
        let absent = u.ratio(1, 6).unwrap_or(false);
        if absent {
            continue;
        }
        let v = value(u, ty).unwrap_or(match ty {
            AttrType::Integer => AttrValue::Integer(0),
            AttrType::Text => AttrValue::Text(String::new()),
            AttrType::Boolean => AttrValue::Boolean(false),
            AttrType::Date => AttrValue::Date(NaiveDate::MIN),
        });
        attrs.insert(name.to_string(), v);
    }
    attrs
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // Conditions come from TOML strings, which are UTF-8.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let condition = match Condition::compile(text, declared()) {
        Ok(c) => c,
        Err(issues) => {
            assert!(!issues.is_empty());
            let chars = text.chars().count();
            for i in &issues {
                // A syntax error at the end of the text points one past its last character
                // (the caret after it), so the end may be `chars + 1`.
                assert!(
                    i.span.start <= chars && i.span.start <= i.span.end && i.span.end <= chars + 1,
                    "issue span {:?} outside a text of {chars} characters: {i:?}",
                    i.span
                );
                assert!(!i.message.is_empty());
            }
            return;
        }
    };
    let attrs = attributes(&mut Unstructured::new(rest));
    let result = condition.evaluate(&attrs);
    assert_eq!(result, condition.evaluate(&attrs), "deterministic");
    match (&result, condition.constant()) {
        (Ok(v), Some(c)) => assert_eq!(*v, c, "constant condition `{text}`"),
        (Ok(_), None) | (Err(_), _) => {}
    }
    if let Err(e) = result {
        let _ = e.to_string();
        if let Error::NotBoolean(_) = e {
            panic!("a checked condition produced a non-boolean: `{text}`");
        }
    }
});
