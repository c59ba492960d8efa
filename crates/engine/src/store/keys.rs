//! The key layout of the sled store and the encodings of its values.
//!
//! Everything lives in ONE sled tree (the default tree) with a two-byte prefix per kind of
//! record, so that a whole group commit is one `sled::Batch` (see the parent module for why).
//! Integers are big-endian so that keys sort in numeric order.
//!
//! | key                                   | value                                                  |
//! |---------------------------------------|--------------------------------------------------------|
//! | `s/` dossier (16) seq (u64)           | `SealedEvent` protobuf (`raw`, `hash`)                 |
//! | `f/` position (u64)                   | dossier (16) seq (u64)                                 |
//! | `h/` dossier (16)                     | [`HeadValue`]: seq, last and first position, hash, code|
//! | `i/` actor `\0` key                   | [`IdemValue`]: fingerprint, dossier, seqs, position    |
//! | `c/` code (UTF-8)                     | dossier (16)                                           |
//! | `n/` code prefix (UTF-8)              | last daily sequence number (u64)                       |
//! | `d/` hash (lower-case hex)            | definition text (UTF-8)                                |
//! | `m/schema`                            | schema version (u32)                                   |
//!
//! Public so that tools and tests can inspect (or, in corruption tests, damage) a store directly.

use uuid::Uuid;

use crate::ids::DossierId;

/// Prefix of the event records.
pub const STREAM: &[u8] = b"s/";
/// Prefix of the global feed.
pub const FEED: &[u8] = b"f/";
/// Prefix of the stream heads.
pub const HEAD: &[u8] = b"h/";
/// Prefix of the idempotency records.
pub const IDEMPOTENCY: &[u8] = b"i/";
/// Prefix of the code -> dossier index.
pub const CODE: &[u8] = b"c/";
/// Prefix of the daily code counters.
pub const COUNTER: &[u8] = b"n/";
/// Prefix of the content-addressed definitions.
pub const DEFINITION: &[u8] = b"d/";
/// The schema version key.
pub const META_SCHEMA: &[u8] = b"m/schema";

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `s/<dossier>`: the prefix of one dossier's events.
pub fn stream_prefix(dossier: &DossierId) -> Vec<u8> {
    key(STREAM, &[dossier.as_bytes()])
}

/// `s/<dossier><seq>`: one event.
pub fn stream_key(dossier: &DossierId, seq: u64) -> Vec<u8> {
    key(STREAM, &[dossier.as_bytes(), &seq.to_be_bytes()])
}

/// Splits an `s/` key into dossier and seq.
pub fn parse_stream_key(k: &[u8]) -> Option<(DossierId, u64)> {
    let rest = k.strip_prefix(STREAM)?;
    if rest.len() != 24 {
        return None;
    }
    let (d, s) = rest.split_at(16);
    Some((dossier_from(d)?, u64_from(s)?))
}

/// `f/<position>`: one feed entry.
pub fn feed_key(position: u64) -> Vec<u8> {
    key(FEED, &[&position.to_be_bytes()])
}

/// The position of an `f/` key.
pub fn parse_feed_key(k: &[u8]) -> Option<u64> {
    u64_from(k.strip_prefix(FEED)?)
}

/// The value of an `f/` key: which event sits at that position.
pub fn feed_value(dossier: &DossierId, seq: u64) -> Vec<u8> {
    key(b"", &[dossier.as_bytes(), &seq.to_be_bytes()])
}

/// Decodes an `f/` value.
pub fn parse_feed_value(v: &[u8]) -> Option<(DossierId, u64)> {
    if v.len() != 24 {
        return None;
    }
    let (d, s) = v.split_at(16);
    Some((dossier_from(d)?, u64_from(s)?))
}

/// `h/<dossier>`: a stream head.
pub fn head_key(dossier: &DossierId) -> Vec<u8> {
    key(HEAD, &[dossier.as_bytes()])
}

/// The dossier of an `h/` key.
pub fn parse_head_key(k: &[u8]) -> Option<DossierId> {
    dossier_from(k.strip_prefix(HEAD)?)
}

/// `i/<actor>\0<key>`: an idempotency record. Neither part may contain `\0`.
pub fn idempotency_key(actor: &str, key_text: &str) -> Vec<u8> {
    key(IDEMPOTENCY, &[actor.as_bytes(), b"\0", key_text.as_bytes()])
}

/// `c/<code>`: the dossier a code belongs to.
pub fn code_key(code: &str) -> Vec<u8> {
    key(CODE, &[code.as_bytes()])
}

/// `n/<prefix>`: the last daily sequence number given out under a code prefix.
pub fn counter_key(prefix: &str) -> Vec<u8> {
    key(COUNTER, &[prefix.as_bytes()])
}

/// `d/<hash>`: a definition text.
pub fn definition_key(hash: &str) -> Vec<u8> {
    key(DEFINITION, &[hash.as_bytes()])
}

/// A dossier id from 16 bytes.
pub fn dossier_from(b: &[u8]) -> Option<DossierId> {
    let bytes: [u8; 16] = b.try_into().ok()?;
    Some(DossierId(Uuid::from_bytes(bytes)))
}

/// A big-endian u64 from exactly 8 bytes.
pub fn u64_from(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    u64_from(v.get(at..at + 8)?)
}

/// The stored head of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadValue {
    /// Seq of the last event.
    pub seq: u64,
    /// Global position of the last event (decides visibility: see the store's docs).
    pub last_position: u64,
    /// Global position of the first event (decides whether the dossier is visible at all).
    pub first_position: u64,
    /// Hash of the last event.
    pub hash: [u8; 32],
    /// The dossier code.
    pub code: String,
}

impl HeadValue {
    /// `seq | last_position | first_position | hash(32) | code`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(56 + self.code.len());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.last_position.to_be_bytes());
        v.extend_from_slice(&self.first_position.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(self.code.as_bytes());
        v
    }

    /// Decodes a head; `None` when the bytes are not a head.
    pub fn decode(v: &[u8]) -> Option<HeadValue> {
        let hash: [u8; 32] = v.get(24..56)?.try_into().ok()?;
        Some(HeadValue {
            seq: u64_at(v, 0)?,
            last_position: u64_at(v, 8)?,
            first_position: u64_at(v, 16)?,
            hash,
            code: String::from_utf8(v.get(56..)?.to_vec()).ok()?,
        })
    }
}

/// The stored idempotency record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemValue {
    /// Fingerprint of the command the key was first used with.
    pub fingerprint: [u8; 32],
    /// The dossier it appended to.
    pub dossier: DossierId,
    /// First seq it appended.
    pub first_seq: u64,
    /// Last seq it appended.
    pub last_seq: u64,
    /// Global position of its last event (decides visibility).
    pub position: u64,
}

impl IdemValue {
    /// `fingerprint(32) | dossier(16) | first_seq | last_seq | position`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(72);
        v.extend_from_slice(&self.fingerprint);
        v.extend_from_slice(self.dossier.as_bytes());
        v.extend_from_slice(&self.first_seq.to_be_bytes());
        v.extend_from_slice(&self.last_seq.to_be_bytes());
        v.extend_from_slice(&self.position.to_be_bytes());
        v
    }

    /// Decodes a record; `None` when the bytes are not one.
    pub fn decode(v: &[u8]) -> Option<IdemValue> {
        if v.len() != 72 {
            return None;
        }
        Some(IdemValue {
            fingerprint: v.get(0..32)?.try_into().ok()?,
            dossier: dossier_from(v.get(32..48)?)?,
            first_seq: u64_at(v, 48)?,
            last_seq: u64_at(v, 56)?,
            position: u64_at(v, 64)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        let d = DossierId::new();
        assert_eq!(parse_stream_key(&stream_key(&d, 7)), Some((d, 7)));
        assert!(stream_key(&d, 255) < stream_key(&d, 256));
        assert!(feed_key(255) < feed_key(256));
        assert_eq!(parse_feed_key(&feed_key(42)), Some(42));
        assert_eq!(parse_feed_value(&feed_value(&d, 3)), Some((d, 3)));
        assert_eq!(parse_head_key(&head_key(&d)), Some(d));
    }

    #[test]
    fn values_round_trip() {
        let h = HeadValue {
            seq: 3,
            last_position: 9,
            first_position: 2,
            hash: [7; 32],
            code: "UBND.XA-261122-0001".into(),
        };
        assert_eq!(HeadValue::decode(&h.encode()), Some(h));
        let i = IdemValue {
            fingerprint: [1; 32],
            dossier: DossierId::new(),
            first_seq: 1,
            last_seq: 2,
            position: 5,
        };
        assert_eq!(IdemValue::decode(&i.encode()), Some(i));
        assert_eq!(HeadValue::decode(&[0; 10]), None);
    }
}
