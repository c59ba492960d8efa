//! The key layout of the projections database.
//!
//! Everything lives in ONE sled tree (the default tree) with a two-byte prefix per kind of record,
//! so that the view changes of one feed batch and the checkpoint that covers them are one
//! `sled::Batch` (atomic, also across a crash). Integers and instants are big-endian so that keys
//! sort in numeric and chronological order; instants are whole UTC seconds with the sign bit
//! flipped (so that the order holds before 1970 too). Values are the structs in
//! [`crate::record`] encoded by [`crate::record::to_bytes`] (postcard: deterministic, fields in
//! declaration order without their names), which is what lets the
//! rebuild-equals-incremental test compare databases byte for byte. Schema 2 stored JSON,
//! schemas 3 and 4 instants (all, then two) as text; a rebuild profile put JSON at a fifth of the
//! fold and the instants' text at a twentieth. Any change to a stored struct (a
//! field, a variant's place) changes the encoding, so it must come with a new
//! [`SCHEMA_VERSION`], which makes `open` fold everything again.
//!
//! | key                                                   | value                                    |
//! |-------------------------------------------------------|------------------------------------------|
//! | `m/schema`                                            | schema version (u32)                     |
//! | `m/checkpoint`                                        | last applied feed position (u64)         |
//! | `d/` dossier (16)                                     | [`crate::record::DossierRecord`]         |
//! | `o/` agency `\0` due (8) dossier (16) step (UTF-8)    | [`crate::record::OpenStepEntry`]         |
//! | `a/` appointment (8) dossier (16)                     | [`crate::record::OpenDossierEntry`]      |
//! | `r/` rate appointment (8) dossier (16)                | empty: unfinished, by rate appointment   |
//! | `k/` dossier (16)                                     | empty: finished late or late by rule     |
//! | `i/` month `\0` level `\0` agency `\0` procedure      | [`crate::record::Counters`]              |
//!
//! `o/` is the deadline board (open steps per agency in due order), `a/` the open dossiers in
//! appointment order (current appointment, apology included), `r/` and `k/` the breach
//! candidates, `i/` the indicator counters (month in the calendar's zone, `YYYY-MM`; level
//! `dossier` or `step`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Prefix of the meta records.
pub const META: &[u8] = b"m/";
/// The schema version key. A database of another version is wiped and rebuilt on open.
pub const META_SCHEMA: &[u8] = b"m/schema";
/// The checkpoint key: the last feed position whose effects are in the views.
pub const META_CHECKPOINT: &[u8] = b"m/checkpoint";
/// Prefix of the per-dossier records.
pub const DOSSIER: &[u8] = b"d/";
/// Prefix of the open-steps index (deadline board).
pub const OPEN_STEP: &[u8] = b"o/";
/// Prefix of the open-dossiers-by-appointment index (deadline board).
pub const OPEN_DOSSIER: &[u8] = b"a/";
/// Prefix of the unfinished-dossiers-by-rate-appointment index (breaches).
pub const RATE_DUE: &[u8] = b"r/";
/// Prefix of the late-dossiers set (breaches).
pub const LATE: &[u8] = b"k/";
/// Prefix of the indicator counters.
pub const INDICATOR: &[u8] = b"i/";

/// The schema version of this layout.
pub const SCHEMA_VERSION: u32 = 5;

/// An instant as 8 bytes that sort chronologically (whole UTC seconds, sign bit flipped).
pub fn instant_bytes(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The first key of a prefix scan that covers every instant up to `t` (inclusive): the bytes of
/// the second after `t`.
pub fn instant_bound(t: DateTime<Utc>) -> [u8; 8] {
    ((t.timestamp().saturating_add(1) as u64) ^ (1 << 63)).to_be_bytes()
}

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `d/<dossier>`.
pub fn dossier_key(id: &Uuid) -> Vec<u8> {
    join(DOSSIER, &[id.as_bytes()])
}

/// `o/<agency>\0`: the prefix of one agency's open steps.
pub fn open_step_prefix(agency: &str) -> Vec<u8> {
    join(OPEN_STEP, &[agency.as_bytes(), b"\0"])
}

/// `o/<agency>\0<due><dossier><step>`.
pub fn open_step_key(agency: &str, due: DateTime<Utc>, id: &Uuid, step: &str) -> Vec<u8> {
    join(
        OPEN_STEP,
        &[
            agency.as_bytes(),
            b"\0",
            &instant_bytes(due),
            id.as_bytes(),
            step.as_bytes(),
        ],
    )
}

/// `a/<appointment><dossier>`.
pub fn open_dossier_key(appointment: DateTime<Utc>, id: &Uuid) -> Vec<u8> {
    join(OPEN_DOSSIER, &[&instant_bytes(appointment), id.as_bytes()])
}

/// `r/<rate appointment><dossier>`.
pub fn rate_due_key(appointment: DateTime<Utc>, id: &Uuid) -> Vec<u8> {
    join(RATE_DUE, &[&instant_bytes(appointment), id.as_bytes()])
}

/// `k/<dossier>`.
pub fn late_key(id: &Uuid) -> Vec<u8> {
    join(LATE, &[id.as_bytes()])
}

/// `i/<month>\0`: the prefix of one month's counters.
pub fn indicator_month_prefix(month: &str) -> Vec<u8> {
    join(INDICATOR, &[month.as_bytes(), b"\0"])
}

/// `i/<month>\0<level>\0<agency>\0<procedure>`.
pub fn indicator_key(month: &str, level: &str, agency: &str, procedure: &str) -> Vec<u8> {
    join(
        INDICATOR,
        &[
            month.as_bytes(),
            b"\0",
            level.as_bytes(),
            b"\0",
            agency.as_bytes(),
            b"\0",
            procedure.as_bytes(),
        ],
    )
}

/// Splits an `i/` key into month, level, agency and procedure.
pub fn parse_indicator_key(k: &[u8]) -> Option<(String, String, String, String)> {
    let rest = std::str::from_utf8(k.strip_prefix(INDICATOR)?).ok()?;
    let mut parts = rest.split('\0');
    let out = (
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    );
    parts.next().is_none().then_some(out)
}

/// The dossier id at the end of an `a/`, `r/` or `k/` key.
pub fn trailing_dossier(k: &[u8]) -> Option<Uuid> {
    let at = k.len().checked_sub(16)?;
    Some(Uuid::from_bytes(k.get(at..)?.try_into().ok()?))
}

/// A key, printable for messages.
pub fn printable(k: &[u8]) -> String {
    k.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_sort_chronologically_and_keys_round_trip() {
        let a = DateTime::from_timestamp(-5, 0).expect("valid");
        let b = DateTime::from_timestamp(5, 0).expect("valid");
        let c = DateTime::from_timestamp(1 << 40, 0).expect("valid");
        assert!(instant_bytes(a) < instant_bytes(b));
        assert!(instant_bytes(b) < instant_bytes(c));
        assert!(instant_bytes(b) < instant_bound(b));
        let k = indicator_key("2026-11", "dossier", "ubnd-xa", "2.000986");
        assert_eq!(
            parse_indicator_key(&k),
            Some((
                "2026-11".into(),
                "dossier".into(),
                "ubnd-xa".into(),
                "2.000986".into()
            ))
        );
        let id = Uuid::from_u128(7);
        assert_eq!(trailing_dossier(&late_key(&id)), Some(id));
        assert_eq!(trailing_dossier(&open_dossier_key(b, &id)), Some(id));
    }
}
