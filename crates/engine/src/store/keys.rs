//! The key layout of the sled store and the encodings of its values.
//!
//! Everything lives in ONE sled tree (the default tree) with a two-byte prefix per kind of
//! record, so that a whole group commit is one `sled::Batch` (see the parent module for why).
//! Integers are big-endian so that keys sort in numeric order.
//!
//! | key                                   | value                                                  |
//! |---------------------------------------|--------------------------------------------------------|
//! | `s/` dossier (16) first seq (u64)     | a run: the `SealedEvent`s of one append, each length-delimited |
//! | `f/` first position (u64)             | a feed group: [`FeedRef`]s of one group commit, in order |
//! | `h/` dossier (16)                     | [`HeadValue`]: seq, last and first position, hash, code|
//! | `i/` actor `\0` key                   | [`IdemValue`]: fingerprint, dossier, seqs, position    |
//! | `c/` code (UTF-8)                     | dossier (16)                                           |
//! | `n/` code prefix (UTF-8)              | last daily sequence number (u64)                       |
//! | `d/` hash (lower-case hex)            | definition text (UTF-8)                                |
//! | `t/` at dossier kind due step         | [`TimerValue`]: position of the append that set it, lead |
//! | `m/schema`                            | schema version (u32)                                   |
//!
//! Schema 2 (this layout) keeps one `s/` key per *append* and one `f/` key per *group commit*,
//! where schema 1 kept one of each per event: a group of 256 one-event appends is 513 keys
//! instead of 768, and the feed is read with one range scan of a few large keys. A run's key is
//! its first event's seq, so a stream's runs sort in seq order and the event at a seq is in the
//! last run whose key is at or before it. A feed group's key is its first position; its refs
//! cover the next positions without gaps, each ref naming a run (dossier, first seq, count).
//!
//! A timer key sorts by firing time first, so the due timers are a prefix scan: `t/`, the firing
//! second (i64, sign bit flipped, big-endian: 8), the dossier (16), the kind (`w` or `m`: 1), the
//! watched due's second (8, same encoding) and nanosecond (u32: 4), then the step id (UTF-8, the
//! rest; empty for the appointment). The watched due is part of the key so that two deadlines of
//! one step never share a timer.
//!
//! Public so that tools and tests can inspect (or, in corruption tests, damage) a store directly.

use chrono::DateTime;
use uuid::Uuid;

use crate::dossier::{Timer, TimerKind};
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
/// Prefix of the durable timers.
pub const TIMER: &[u8] = b"t/";
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

/// `s/<dossier><first seq>`: one run (the events of one append, from `seq` on).
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

/// `f/<first position>`: one feed group.
pub fn feed_key(position: u64) -> Vec<u8> {
    key(FEED, &[&position.to_be_bytes()])
}

/// The position of an `f/` key.
pub fn parse_feed_key(k: &[u8]) -> Option<u64> {
    u64_from(k.strip_prefix(FEED)?)
}

/// One entry of a feed group: a run of `count` events of `dossier` from `first_seq` on, at the
/// positions following the previous entry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedRef {
    /// The dossier.
    pub dossier: DossierId,
    /// The run's first seq (its `s/` key).
    pub first_seq: u64,
    /// Events in the run (at least 1).
    pub count: u32,
}

/// Bytes of one [`FeedRef`]: dossier (16), first seq (8), count (u32: 4).
pub const FEED_REF_BYTES: usize = 28;

/// The value of an `f/` key: its refs, each [`FEED_REF_BYTES`] long.
pub fn feed_group(refs: &[FeedRef]) -> Vec<u8> {
    let mut v = Vec::with_capacity(refs.len() * FEED_REF_BYTES);
    for r in refs {
        v.extend_from_slice(r.dossier.as_bytes());
        v.extend_from_slice(&r.first_seq.to_be_bytes());
        v.extend_from_slice(&r.count.to_be_bytes());
    }
    v
}

/// Decodes an `f/` value; `None` unless it is one or more whole refs, each of at least one
/// event from seq 1 on.
pub fn parse_feed_group(v: &[u8]) -> Option<Vec<FeedRef>> {
    if v.is_empty() || !v.len().is_multiple_of(FEED_REF_BYTES) {
        return None;
    }
    v.chunks_exact(FEED_REF_BYTES)
        .map(|c| {
            let r = FeedRef {
                dossier: dossier_from(&c[..16])?,
                first_seq: u64_from(&c[16..24])?,
                count: u32::from_be_bytes(c[24..].try_into().ok()?),
            };
            (r.count > 0 && r.first_seq > 0).then_some(r)
        })
        .collect()
}

/// Events the refs of a feed group cover.
pub fn refs_len(refs: &[FeedRef]) -> u64 {
    refs.iter().map(|r| u64::from(r.count)).sum()
}

/// Events a feed group covers, or `None` when its value does not decode.
pub fn feed_group_len(v: &[u8]) -> Option<u64> {
    Some(refs_len(&parse_feed_group(v)?))
}

/// The schema version a `m/schema` value holds (0: not one).
pub fn schema_of(v: &[u8]) -> u32 {
    <[u8; 4]>::try_from(v).map_or(0, u32::from_be_bytes)
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

/// An i64 as 8 bytes that sort like the numbers (sign bit flipped, big-endian).
pub fn sortable_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Reads [`sortable_i64`] back from exactly 8 bytes.
pub fn i64_from_sortable(b: &[u8]) -> Option<i64> {
    Some((u64_from(b)? ^ (1 << 63)) as i64)
}

fn kind_byte(kind: TimerKind) -> u8 {
    match kind {
        TimerKind::Warning => b'w',
        TimerKind::Missed => b'm',
    }
}

/// `t/<at><dossier><kind><due s><due ns><step>`: one timer (see the module docs).
pub fn timer_key(t: &Timer) -> Vec<u8> {
    let step = t.step.as_deref().unwrap_or("");
    key(
        TIMER,
        &[
            &sortable_i64(t.at.timestamp()),
            t.dossier.as_bytes(),
            &[kind_byte(t.kind)],
            &sortable_i64(t.due.timestamp()),
            &t.due.timestamp_subsec_nanos().to_be_bytes(),
            step.as_bytes(),
        ],
    )
}

/// The first key after every timer firing at or before second `at_s`.
pub fn timer_key_after(at_s: i64) -> Vec<u8> {
    match at_s.checked_add(1) {
        Some(next) => key(TIMER, &[&sortable_i64(next)]),
        // Past the last second: the first key after the whole prefix.
        None => key(b"t0", &[]),
    }
}

/// The stored value of a timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerValue {
    /// Global position of its dossier's last event when it was set: of the append that set it,
    /// or, for a timer set alone, of the dossier's last append (decides visibility).
    pub position: u64,
    /// The warning's lead as text (`1wd`); empty for a miss.
    pub lead: String,
}

impl TimerValue {
    /// `position | lead (UTF-8)`.
    pub fn encode(&self) -> Vec<u8> {
        key(b"", &[&self.position.to_be_bytes(), self.lead.as_bytes()])
    }

    /// Decodes a value; `None` when the bytes are not one.
    pub fn decode(v: &[u8]) -> Option<TimerValue> {
        Some(TimerValue {
            position: u64_at(v, 0)?,
            lead: String::from_utf8(v.get(8..)?.to_vec()).ok()?,
        })
    }
}

/// A timer and its visibility from a `t/` key and its value; `None` when either is damaged.
pub fn parse_timer(k: &[u8], v: &[u8]) -> Option<(Timer, u64)> {
    let rest = k.strip_prefix(TIMER)?;
    let at = DateTime::from_timestamp(i64_from_sortable(rest.get(0..8)?)?, 0)?;
    let dossier = dossier_from(rest.get(8..24)?)?;
    let kind = match *rest.get(24)? {
        b'w' => TimerKind::Warning,
        b'm' => TimerKind::Missed,
        _ => return None,
    };
    let due_s = i64_from_sortable(rest.get(25..33)?)?;
    let due_ns = u32::from_be_bytes(rest.get(33..37)?.try_into().ok()?);
    let due = DateTime::from_timestamp(due_s, due_ns)?;
    let step = std::str::from_utf8(rest.get(37..)?).ok()?;
    let value = TimerValue::decode(v)?;
    let lead = match (kind, value.lead.as_str()) {
        (TimerKind::Missed, "") => None,
        (TimerKind::Warning, text) => Some(text.parse().ok()?),
        (TimerKind::Missed, _) => return None,
    };
    let timer = Timer {
        at,
        dossier,
        kind,
        step: (!step.is_empty()).then(|| step.to_string()),
        due,
        lead,
    };
    Some((timer, value.position))
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
        let refs = [
            FeedRef {
                dossier: d,
                first_seq: 3,
                count: 2,
            },
            FeedRef {
                dossier: DossierId::new(),
                first_seq: 1,
                count: 1,
            },
        ];
        assert_eq!(parse_feed_group(&feed_group(&refs)), Some(refs.to_vec()));
        assert_eq!(feed_group_len(&feed_group(&refs)), Some(3));
        assert_eq!(parse_feed_group(&[]), None);
        assert_eq!(parse_feed_group(&feed_group(&refs)[..27]), None);
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

    #[test]
    fn timers_round_trip_and_sort_by_firing_time() {
        let d = DossierId::new();
        let t = |at_s: i64, kind, step: Option<&str>| Timer {
            at: DateTime::from_timestamp(at_s, 0).expect("valid"),
            dossier: d,
            kind,
            step: step.map(str::to_string),
            due: DateTime::from_timestamp(1_800_000_000, 123).expect("valid"),
            lead: (kind == TimerKind::Warning)
                .then_some(lienthong_calendar::Duration::WorkingDays(1)),
        };
        for timer in [
            t(1_790_000_000, TimerKind::Warning, Some("register-birth")),
            t(1_800_000_001, TimerKind::Missed, None),
        ] {
            let value = TimerValue {
                position: 7,
                lead: timer.lead.map(|l| l.to_string()).unwrap_or_default(),
            };
            assert_eq!(
                parse_timer(&timer_key(&timer), &value.encode()),
                Some((timer, 7))
            );
        }
        let early = timer_key(&t(-5, TimerKind::Missed, None));
        let later = timer_key(&t(5, TimerKind::Missed, None));
        assert!(early < later, "negative seconds sort first");
        assert!(later < timer_key_after(5) && timer_key_after(4) < later);
        assert!(
            timer_key(&t(100_000_000_000, TimerKind::Missed, None)) < timer_key_after(i64::MAX)
        );
    }
}
