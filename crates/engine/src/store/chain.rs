//! The hash chain: sealing events and checking streams of sealed events.
//!
//! Pure code with no storage in it, so that the store (on write and on read), the `verify`
//! command and an auditor holding only an export file all run the same checks.
//!
//! - `raw` is the protobuf encoding of one [`Event`], produced exactly once, by [`seal`].
//! - `hash = SHA-256(raw)`.
//! - `envelope.prev_hash` is the previous event's `hash` (32 zero bytes for seq 1), so each hash
//!   covers the event's canonical bytes *and* everything before it.
//!
//! Checks always start from `raw` and never re-encode: protobuf encoding is not canonical (maps
//! are hash maps, unknown fields from a newer writer are kept as bytes), so re-encoding a decoded
//! event can legitimately give different bytes. The decoded [`Event`] is returned for
//! convenience only.
//!
//! [`check`] checks one event against its predecessor; [`Verifier`] checks whole streams, fed
//! either in order ([`Verifier::stream`]) or in any order ([`Verifier::push`], for export files
//! whose records are interleaved), and reports the first break of every dossier.

use std::collections::BTreeMap;
use std::fmt;

use lienthong_proto::v1::{Event, SealedEvent};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::ids::DossierId;

/// The `prev_hash` of the first event of every stream.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Length of every hash in the chain, in bytes.
pub const HASH_BYTES: usize = 32;

/// Where a stream stands after one event: what the next event must point back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Sequence number of the event (1 for the first).
    pub seq: u64,
    /// SHA-256 of the event's `raw` bytes.
    pub hash: [u8; 32],
}

/// What broke at one event of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// `raw` is not a protobuf `Event`, or it has no envelope, or `hash` is not 32 bytes.
    Undecodable {
        /// Why decoding failed.
        reason: String,
    },
    /// `hash` is not SHA-256 of `raw`: the bytes were altered after sealing.
    HashMismatch {
        /// The hash stored beside the event (hex).
        stored: String,
        /// SHA-256 of the stored `raw` (hex).
        computed: String,
    },
    /// `prev_hash` does not point at the previous event: an event was replaced, removed or
    /// inserted before this one.
    PrevHashMismatch {
        /// The previous event's hash (hex).
        expected: String,
        /// The `prev_hash` inside this event (hex).
        found: String,
    },
    /// The event does not have the next sequence number.
    SeqGap {
        /// The sequence number found in the event (or its storage key).
        found: u64,
    },
    /// The event belongs to another dossier.
    WrongDossier {
        /// The dossier id inside the event.
        found: String,
    },
    /// The event carries another dossier code than the stream's first event.
    CodeChanged {
        /// The code of the stream's first event.
        expected: String,
        /// The code inside this event.
        found: String,
    },
    /// Two records claim the same position in the stream.
    Duplicate,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Undecodable { reason } => write!(f, "undecodable: {reason}"),
            Break::HashMismatch { stored, computed } => {
                write!(
                    f,
                    "hash mismatch: stored {stored}, SHA-256 of raw is {computed}"
                )
            }
            Break::PrevHashMismatch { expected, found } => write!(
                f,
                "prev_hash mismatch: previous event's hash is {expected}, event points at {found}"
            ),
            Break::SeqGap { found } => write!(f, "sequence gap: found seq {found}"),
            Break::WrongDossier { found } => write!(f, "event belongs to dossier {found}"),
            Break::CodeChanged { expected, found } => {
                write!(f, "dossier code changed from `{expected}` to `{found}`")
            }
            Break::Duplicate => write!(f, "two records at the same seq"),
        }
    }
}

/// A broken chain: which dossier, at which seq, and what broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("broken chain in dossier {dossier} at seq {seq}: {what}")]
pub struct ChainError {
    /// The stream that is broken.
    pub dossier: DossierId,
    /// The sequence number expected at the broken event.
    pub seq: u64,
    /// What broke.
    pub what: Break,
}

/// Seals an event: encodes it once (`raw`) and hashes the bytes.
///
/// The envelope must already carry everything the chain covers (seq, positions, `prev_hash`).
pub fn seal(event: &Event) -> SealedEvent {
    seal_linked(event).0
}

/// [`seal`], also answering the hash as the next event's `prev_hash` will name it.
pub fn seal_linked(event: &Event) -> (SealedEvent, [u8; HASH_BYTES]) {
    let raw = event.encode_to_vec();
    let hash = hash_of(&raw);
    (
        SealedEvent {
            raw,
            hash: hash.to_vec(),
        },
        hash,
    )
}

/// SHA-256 of a byte string, as the chain uses it.
pub fn hash_of(raw: &[u8]) -> [u8; 32] {
    Sha256::digest(raw).into()
}

/// Checks one sealed event as the `expected_seq`-th event of `dossier`, following `prev` (`None`
/// for the first event). Returns the decoded event.
///
/// Checks, in order: `hash` is SHA-256 of `raw`; `raw` decodes with an envelope; the envelope
/// names `dossier`; its seq is `expected_seq`; its `prev_hash` is `prev`'s hash (or
/// [`GENESIS_HASH`]).
pub fn check(
    prev: Option<&Link>,
    dossier: &DossierId,
    expected_seq: u64,
    sealed: &SealedEvent,
) -> Result<Event, ChainError> {
    let fail = |what: Break| ChainError {
        dossier: *dossier,
        seq: expected_seq,
        what,
    };
    if sealed.hash.len() != HASH_BYTES {
        return Err(fail(Break::Undecodable {
            reason: format!("hash has {} bytes, not {HASH_BYTES}", sealed.hash.len()),
        }));
    }
    let computed = hash_of(&sealed.raw);
    if computed.as_slice() != sealed.hash.as_slice() {
        return Err(fail(Break::HashMismatch {
            stored: hex::encode(&sealed.hash),
            computed: hex::encode(computed),
        }));
    }
    let event = Event::decode(sealed.raw.as_slice()).map_err(|e| {
        fail(Break::Undecodable {
            reason: e.to_string(),
        })
    })?;
    check_envelope(prev, dossier, expected_seq, &event)?;
    Ok(event)
}

/// The envelope half of [`check`], on an event already decoded (or about to be sealed): the
/// envelope is there, names `dossier`, has seq `expected_seq` and the `prev_hash` of `prev` (or
/// [`GENESIS_HASH`]).
pub fn check_envelope(
    prev: Option<&Link>,
    dossier: &DossierId,
    expected_seq: u64,
    event: &Event,
) -> Result<(), ChainError> {
    let fail = |what: Break| ChainError {
        dossier: *dossier,
        seq: expected_seq,
        what,
    };
    let Some(envelope) = event.envelope.as_ref() else {
        return Err(fail(Break::Undecodable {
            reason: "event has no envelope".into(),
        }));
    };
    if envelope.dossier_id != dossier.to_string() {
        return Err(fail(Break::WrongDossier {
            found: envelope.dossier_id.clone(),
        }));
    }
    if envelope.seq != expected_seq {
        return Err(fail(Break::SeqGap {
            found: envelope.seq,
        }));
    }
    let expected_prev = prev.map_or(GENESIS_HASH, |link| link.hash);
    if envelope.prev_hash.as_slice() != expected_prev.as_slice() {
        return Err(fail(Break::PrevHashMismatch {
            expected: hex::encode(expected_prev),
            found: hex::encode(&envelope.prev_hash),
        }));
    }
    Ok(())
}

/// What a [`Verifier`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Dossiers (streams) seen.
    pub dossiers: u64,
    /// Events checked (up to and excluding each stream's first break).
    pub events: u64,
    /// The first break of every broken stream, by dossier.
    pub breaks: Vec<ChainError>,
    /// Records that could not be attributed to any dossier (in [`Verifier::push`] mode).
    pub unattributed: Vec<String>,
}

impl Report {
    /// True when every stream verified and every record was attributed.
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty() && self.unattributed.is_empty()
    }
}

/// The state of one stream being checked in order.
#[derive(Clone, Debug)]
pub struct StreamCheck {
    /// The dossier of the stream.
    pub dossier: DossierId,
    /// The last event that checked, if any.
    pub last: Option<Link>,
    /// The dossier code of the first event (later events must carry the same).
    pub code: Option<String>,
    /// The first break, after which nothing more is checked.
    pub broken: Option<ChainError>,
    /// Events that checked.
    pub events: u64,
}

impl StreamCheck {
    /// A check of `dossier`'s stream, from seq 1.
    pub fn new(dossier: DossierId) -> Self {
        StreamCheck {
            dossier,
            last: None,
            code: None,
            broken: None,
            events: 0,
        }
    }

    /// The sequence number the next event must have.
    pub fn next_seq(&self) -> u64 {
        self.last.map_or(1, |l| l.seq + 1)
    }

    /// Checks the next event; returns the decoded event, or `None` once the stream is broken
    /// (the first break is kept in [`StreamCheck::broken`]).
    pub fn next(&mut self, sealed: &SealedEvent) -> Option<Event> {
        if self.broken.is_some() {
            return None;
        }
        let seq = self.next_seq();
        match check(self.last.as_ref(), &self.dossier, seq, sealed) {
            Ok(event) => {
                let code = event
                    .envelope
                    .as_ref()
                    .map(|e| e.dossier_code.clone())
                    .unwrap_or_default();
                match &self.code {
                    None => self.code = Some(code),
                    Some(expected) if *expected != code => {
                        self.broken = Some(ChainError {
                            dossier: self.dossier,
                            seq,
                            what: Break::CodeChanged {
                                expected: expected.clone(),
                                found: code,
                            },
                        });
                        return None;
                    }
                    Some(_) => {}
                }
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&sealed.hash);
                self.last = Some(Link { seq, hash });
                self.events += 1;
                Some(event)
            }
            Err(e) => {
                self.broken = Some(e);
                None
            }
        }
    }
}

/// Walks many streams and reports the first break of each.
///
/// Two ways to feed it: [`Verifier::stream`] when the records of a dossier come in seq order
/// (the store's own key order); [`Verifier::push`] when records come in any order (an export
/// file): they are grouped per dossier and sorted by the seq they claim, then checked in
/// [`Verifier::finish`].
#[derive(Debug, Default)]
pub struct Verifier {
    /// Records pushed in any order: dossier -> claimed seq -> records claiming it.
    pending: BTreeMap<DossierId, BTreeMap<u64, Vec<SealedEvent>>>,
    /// The report so far.
    report: Report,
}

impl Verifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one whole stream given in seq order and adds it to the report. Returns the check
    /// state (last link, code, first break) for cross-checks by the caller.
    pub fn stream<'a>(
        &mut self,
        dossier: DossierId,
        records: impl IntoIterator<Item = &'a SealedEvent>,
    ) -> StreamCheck {
        let mut check = StreamCheck::new(dossier);
        for sealed in records {
            if check.next(sealed).is_none() {
                break;
            }
        }
        self.add(&check);
        check
    }

    /// Adds a finished stream check (run by the caller) to the report.
    pub fn add(&mut self, check: &StreamCheck) {
        self.report.dossiers += 1;
        self.report.events += check.events;
        if let Some(broken) = &check.broken {
            self.report.breaks.push(broken.clone());
        }
    }

    /// Queues one record seen in any order. It is attributed to the dossier and seq its own
    /// envelope claims (a record that does not decode is reported as unattributed).
    pub fn push(&mut self, sealed: SealedEvent) {
        match Event::decode(sealed.raw.as_slice()) {
            Ok(Event {
                envelope: Some(envelope),
                ..
            }) => match envelope.dossier_id.parse::<DossierId>() {
                Ok(dossier) => self.push_for(dossier, envelope.seq, sealed),
                Err(e) => self.report.unattributed.push(format!(
                    "record with dossier id `{}`: {e}",
                    envelope.dossier_id
                )),
            },
            Ok(_) => self
                .report
                .unattributed
                .push("record without an envelope".into()),
            Err(e) => self
                .report
                .unattributed
                .push(format!("undecodable record: {e}")),
        }
    }

    /// Queues one record whose dossier and seq are known from outside (e.g. a storage key).
    pub fn push_for(&mut self, dossier: DossierId, seq: u64, sealed: SealedEvent) {
        self.pending
            .entry(dossier)
            .or_default()
            .entry(seq)
            .or_default()
            .push(sealed);
    }

    /// Checks every queued stream and returns the report.
    pub fn finish(mut self) -> Report {
        let pending = std::mem::take(&mut self.pending);
        for (dossier, by_seq) in pending {
            let mut check = StreamCheck::new(dossier);
            for (seq, records) in by_seq {
                if check.broken.is_some() {
                    break;
                }
                if seq != check.next_seq() {
                    check.broken = Some(ChainError {
                        dossier,
                        seq: check.next_seq(),
                        what: Break::SeqGap { found: seq },
                    });
                    break;
                }
                if records.len() > 1 {
                    check.broken = Some(ChainError {
                        dossier,
                        seq,
                        what: Break::Duplicate,
                    });
                    break;
                }
                for sealed in &records {
                    check.next(sealed);
                }
            }
            self.add(&check);
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_proto::v1::{Envelope, Withdrawn, event::Body};
    use proptest::prelude::*;

    fn chain(dossier: DossierId, n: u64) -> Vec<SealedEvent> {
        let mut prev = GENESIS_HASH.to_vec();
        (1..=n)
            .map(|seq| {
                let sealed = seal(&Event {
                    envelope: Some(Envelope {
                        dossier_id: dossier.to_string(),
                        dossier_code: "UBND.XA-261122-0001".into(),
                        seq,
                        global_position: seq,
                        prev_hash: prev.clone(),
                        command_id: format!("cmd-{seq}"),
                        ..Default::default()
                    }),
                    body: Some(Body::Withdrawn(Withdrawn {
                        reason: format!("reason {seq}"),
                    })),
                });
                prev = sealed.hash.clone();
                sealed
            })
            .collect()
    }

    #[test]
    fn a_sealed_chain_verifies() {
        let d = DossierId::new();
        let mut v = Verifier::new();
        let check = v.stream(d, &chain(d, 5));
        assert_eq!(check.last.map(|l| l.seq), Some(5));
        let report = v.finish();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.dossiers, report.events), (1, 5));
    }

    #[test]
    fn given_a_swapped_event_when_checked_then_prev_hash_breaks() {
        let d = DossierId::new();
        let mut events = chain(d, 4);
        events.swap(1, 2);
        let report = {
            let mut v = Verifier::new();
            v.stream(d, &events);
            v.finish()
        };
        assert_eq!(report.breaks.len(), 1);
        assert_eq!(report.breaks[0].seq, 2);
        assert!(matches!(report.breaks[0].what, Break::SeqGap { found: 3 }));
    }

    #[test]
    fn given_a_missing_event_when_pushed_in_any_order_then_the_gap_is_named() {
        let a = DossierId::new();
        let b = DossierId::new();
        let mut records: Vec<SealedEvent> = chain(a, 3).into_iter().chain(chain(b, 4)).collect();
        records.remove(5); // b's seq 3
        records.reverse();
        let mut v = Verifier::new();
        for r in records {
            v.push(r);
        }
        let report = v.finish();
        assert_eq!(report.dossiers, 2);
        assert_eq!(report.breaks.len(), 1);
        let broken = &report.breaks[0];
        assert_eq!((broken.dossier, broken.seq), (b, 3));
        assert_eq!(broken.what, Break::SeqGap { found: 4 });
        assert_eq!(report.events, 3 + 2);
    }

    #[test]
    fn the_error_names_dossier_seq_and_what_broke() {
        let d = DossierId::new();
        let mut events = chain(d, 2);
        events[1].raw[3] ^= 0x40;
        let link = Link {
            seq: 1,
            hash: hash_of(&events[0].raw),
        };
        let err = check(Some(&link), &d, 2, &events[1]).expect_err("tampered raw must not verify");
        let text = err.to_string();
        assert!(
            text.contains(&d.to_string()) && text.contains("seq 2"),
            "{text}"
        );
        assert!(text.contains("hash mismatch"), "{text}");
    }

    #[test]
    fn wrong_dossier_is_named() {
        let d = DossierId::new();
        let other = DossierId::new();
        let events = chain(other, 1);
        let err = check(None, &d, 1, &events[0]).expect_err("other dossier");
        assert_eq!(
            err.what,
            Break::WrongDossier {
                found: other.to_string()
            }
        );
    }

    proptest! {
        /// Flipping any bit of any stored byte (raw or hash) of any event is detected, and the
        /// break is reported at that event or before it.
        #[test]
        fn any_flipped_bit_is_detected(
            n in 1u64..6,
            pick in any::<prop::sample::Index>(),
            byte in any::<prop::sample::Index>(),
            bit in 0u8..8,
            in_hash in any::<bool>(),
        ) {
            let d = DossierId::new();
            let mut events = chain(d, n);
            let i = pick.index(events.len());
            let target = if in_hash { &mut events[i].hash } else { &mut events[i].raw };
            let at = byte.index(target.len());
            target[at] ^= 1 << bit;
            let mut v = Verifier::new();
            v.stream(d, &events);
            let report = v.finish();
            prop_assert_eq!(report.breaks.len(), 1);
            prop_assert!(report.breaks[0].seq <= i as u64 + 1);
        }
    }
}
