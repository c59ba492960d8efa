//! The wire contract: subject, stream, consumer and header names, the partition function, and the
//! checked names ([`Agency`], [`TaskId`]) that go into subjects and message ids.
//!
//! Everything a client in another language needs to interoperate is here (and in
//! `docs/nats.md`); the NATS implementation builds every name through these functions, so the
//! documentation and the code cannot drift apart.
//!
//! # Subjects
//!
//! | subject                      | what                                   | carried by                     |
//! |------------------------------|----------------------------------------|--------------------------------|
//! | `lienthong.cmd.<partition>`  | a command for a dossier of a partition | core NATS request/reply        |
//! | `lienthong.feed.<dossier>`   | one event of a dossier                 | stream `LIENTHONG_FEED`        |
//! | `lienthong.task.<agency>`    | a task for an agency                   | stream `LIENTHONG_TASKS`       |
//! | `lienthong.dead.<agency>`    | a task that exhausted its deliveries   | stream `LIENTHONG_DEAD`        |
//!
//! `<partition>` is a decimal number in `0..partition count` (see [`partition_of`]), `<dossier>`
//! the dossier's UUID in lowercase hyphenated form, `<agency>` an agency code (`[a-z0-9-]`).
//!
//! # Partitions
//!
//! A dossier belongs to partition `fnv1a64(uuid bytes) mod count`: FNV-1a, 64 bits, over the 16
//! bytes of the UUID in their standard (big-endian, RFC 9562) order, offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`, arithmetic modulo 2^64. Test vectors (checked
//! by the unit tests), with 16 partitions:
//!
//! | dossier                                | hash                 | partition |
//! |----------------------------------------|----------------------|-----------|
//! | `00000000-0000-0000-0000-000000000000` | `0x88201fb960ff6465` | 5         |
//! | `0190f5c2-7d1e-7a3b-9c4d-5e6f708192a3` | `0x687437ea0dfd258b` | 11        |
//!
//! The hash is stable across processes, machines and versions; the partition count is configuration and
//! changing it re-maps dossiers (drain the command subjects first).

use std::fmt;

use uuid::Uuid;

/// Prefix of every subject the bus uses.
pub const SUBJECT_PREFIX: &str = "lienthong";

/// Stream holding the event feed (`lienthong.feed.>`), limits retention.
pub const FEED_STREAM: &str = "LIENTHONG_FEED";
/// Stream holding agency tasks (`lienthong.task.>`), work-queue retention.
pub const TASK_STREAM: &str = "LIENTHONG_TASKS";
/// Stream holding dead-letter records (`lienthong.dead.>`), limits retention, never discards old.
pub const DEAD_STREAM: &str = "LIENTHONG_DEAD";

/// Queue group of the command subscribers. Each partition must be served by exactly one engine
/// node (its dossiers live in that node's store); the queue group only keeps a restarted node's
/// overlapping subscription from doubling a command.
pub const COMMAND_QUEUE_GROUP: &str = "lienthong-engine";

/// Standard NATS header: JetStream drops a second message with the same id within the stream's
/// duplicate window.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Feed: the dossier's UUID.
pub const HEADER_DOSSIER: &str = "Lienthong-Dossier";
/// Feed: the event's sequence number within its dossier (decimal, from 1).
pub const HEADER_SEQ: &str = "Lienthong-Seq";
/// Tasks and dead letters: the task's id (also its `Nats-Msg-Id` on the task stream).
pub const HEADER_TASK_ID: &str = "Lienthong-Task-Id";
/// Dead letters: the agency whose consumer gave up on the task.
pub const HEADER_AGENCY: &str = "Lienthong-Agency";
/// Dead letters: how many times the task was delivered to the agency before it was given up.
pub const HEADER_DELIVERIES: &str = "Lienthong-Deliveries";

/// Longest agency code accepted in a subject (bytes).
pub const AGENCY_BYTES_MAX: usize = 64;
/// Longest task id accepted (bytes).
pub const TASK_ID_BYTES_MAX: usize = 256;
/// Most partitions a deployment may have.
pub const PARTITIONS_MAX: u32 = 4096;
/// Partitions when the configuration does not say: enough to spread over a few engine nodes,
/// few enough that one node can own them all. Every process of a deployment must use the same
/// count (it is part of the routing).
pub const PARTITION_COUNT_DEFAULT: u32 = 16;

/// The key-value bucket of the partition leases (a JetStream stream `KV_LIENTHONG_LEASES`).
pub const LEASE_BUCKET: &str = "LIENTHONG_LEASES";

/// `partition.<n>`: the key of a partition's lease in [`LEASE_BUCKET`]; its value is the
/// holder's id (UTF-8).
pub fn lease_key(partition: Partition) -> String {
    format!("partition.{}", partition.0)
}

/// `lienthong.cmd.<partition>`: where commands for a partition's dossiers are requested.
pub fn command_subject(partition: Partition) -> String {
    format!("{SUBJECT_PREFIX}.cmd.{}", partition.0)
}

/// `lienthong.feed.<dossier>`: where a dossier's events are published.
pub fn feed_subject(dossier: Uuid) -> String {
    format!("{SUBJECT_PREFIX}.feed.{}", dossier.hyphenated())
}

/// `lienthong.feed.>`: every feed subject (the feed stream's subject filter).
pub fn feed_subjects() -> String {
    format!("{SUBJECT_PREFIX}.feed.>")
}

/// `<dossier>/<seq>`: the feed message's `Nats-Msg-Id`, so that a republished event is dropped.
pub fn feed_msg_id(dossier: Uuid, seq: u64) -> String {
    format!("{}/{seq}", dossier.hyphenated())
}

/// `lienthong.task.<agency>`: where an agency's tasks are queued.
pub fn task_subject(agency: &Agency) -> String {
    format!("{SUBJECT_PREFIX}.task.{}", agency.0)
}

/// `lienthong.task.>`: every task subject (the task stream's subject filter).
pub fn task_subjects() -> String {
    format!("{SUBJECT_PREFIX}.task.>")
}

/// `lienthong.dead.<agency>`: where the dead-letter records of an agency's tasks go.
pub fn dead_subject(agency: &Agency) -> String {
    format!("{SUBJECT_PREFIX}.dead.{}", agency.0)
}

/// `lienthong.dead.>`: every dead-letter subject (the dead-letter stream's subject filter).
pub fn dead_subjects() -> String {
    format!("{SUBJECT_PREFIX}.dead.>")
}

/// `dead/<task id>`: the dead-letter record's `Nats-Msg-Id`, so that a task is dead-lettered
/// once even if the process moving it crashes between recording it and removing the task.
pub fn dead_msg_id(task: &TaskId) -> String {
    format!("dead/{}", task.0)
}

/// `agency-<agency>`: the durable pull consumer of an agency on the task stream.
pub fn agency_consumer(agency: &Agency) -> String {
    format!("agency-{}", agency.0)
}

/// A partition of the dossier space: commands for its dossiers go to `lienthong.cmd.<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u32);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How many partitions the dossier space is split into (1 ..= [`PARTITIONS_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionCount(u32);

impl PartitionCount {
    /// A count in 1 ..= [`PARTITIONS_MAX`], or `None`.
    pub fn new(count: u32) -> Option<Self> {
        (1..=PARTITIONS_MAX).contains(&count).then_some(Self(count))
    }

    /// The number of partitions.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Every partition, `0..count`.
    pub fn all(self) -> impl Iterator<Item = Partition> {
        (0..self.0).map(Partition)
    }
}

/// FNV-1a over 64 bits: tiny, specified in one paragraph, and the same in every language.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(PRIME)
    })
}

/// The partition that owns `dossier`: `fnv1a64(uuid bytes) mod count`.
pub fn partition_of(dossier: Uuid, count: PartitionCount) -> Partition {
    let hash = fnv1a64(dossier.as_bytes());
    // The remainder is below `count`, which is a u32.
    Partition((hash % u64::from(count.0)) as u32)
}

/// The partition a submission goes to, before its dossier has an id: FNV-1a 64 over
/// `<agency>/<idempotency key>` (the submitting actor's agency code and key), modulo `count`. A
/// retry of the submission (same agency, same key) reaches the same partition, and so the same
/// engine node, whose idempotency record answers it; that node gives the new dossier an id in a
/// partition it owns.
pub fn partition_of_key(agency: &str, idempotency_key: &str, count: PartitionCount) -> Partition {
    let mut bytes = Vec::with_capacity(agency.len() + 1 + idempotency_key.len());
    bytes.extend_from_slice(agency.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(idempotency_key.as_bytes());
    Partition((fnv1a64(&bytes) % u64::from(count.0)) as u32)
}

/// An agency code as it appears in subjects and consumer names: 1 ..= [`AGENCY_BYTES_MAX`]
/// bytes of `[a-z0-9-]` (the codes of `workflows/agencies.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Agency(String);

impl Agency {
    /// Checks `code` and wraps it.
    pub fn new(code: &str) -> Result<Self, crate::Error> {
        let ok = !code.is_empty()
            && code.len() <= AGENCY_BYTES_MAX
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(code.to_owned()))
        } else {
            Err(crate::Error::InvalidName {
                what: "agency code",
                name: code.to_owned(),
                rule: "1 to 64 characters of a-z, 0-9 and '-'",
            })
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Agency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id, chosen by the publisher and stable across republishing (the engine uses the
/// `<dossier>/<seq>` of the event that opened the step). It is the task's `Nats-Msg-Id`, so a
/// task published twice is queued once, and the key an agency uses to complete it idempotently.
/// 1 ..= [`TASK_ID_BYTES_MAX`] bytes of printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    /// Checks `id` and wraps it.
    pub fn new(id: &str) -> Result<Self, crate::Error> {
        let ok = !id.is_empty()
            && id.len() <= TASK_ID_BYTES_MAX
            && id.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(crate::Error::InvalidName {
                what: "task id",
                name: id.to_owned(),
                rule: "1 to 256 printable ASCII characters without spaces",
            })
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partition_of_is_stable() {
        let count = PartitionCount::new(16).expect("16 partitions");
        let nil = Uuid::nil();
        let v7 = Uuid::parse_str("0190f5c2-7d1e-7a3b-9c4d-5e6f708192a3").expect("uuid");
        // These values are part of the contract (docs/nats.md): never change them.
        assert_eq!(fnv1a64(nil.as_bytes()), 0x8820_1fb9_60ff_6465);
        assert_eq!(partition_of(nil, count), Partition(5));
        assert_eq!(fnv1a64(v7.as_bytes()), 0x6874_37ea_0dfd_258b);
        assert_eq!(partition_of(v7, count), Partition(11));
    }

    #[test]
    fn partitions_spread_dossiers() {
        let count = PartitionCount::new(8).expect("8 partitions");
        let mut seen = [0u32; 8];
        for _ in 0..800 {
            seen[partition_of(Uuid::now_v7(), count).0 as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 40), "uneven spread: {seen:?}");
    }

    #[test]
    fn names_are_checked() {
        assert!(Agency::new("tu-phap").is_ok());
        for bad in ["", "Tu-Phap", "tu.phap", "tu phap", "tu*", ">"] {
            assert!(Agency::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(TaskId::new("0190f5c2-7d1e-7a3b-9c4d-5e6f708192a3/7").is_ok());
        assert!(TaskId::new("a b").is_err());
        assert!(TaskId::new(&"x".repeat(257)).is_err());
    }

    #[test]
    fn subjects() {
        let a = Agency::new("tu-phap").expect("agency");
        assert_eq!(command_subject(Partition(3)), "lienthong.cmd.3");
        assert_eq!(task_subject(&a), "lienthong.task.tu-phap");
        assert_eq!(dead_subject(&a), "lienthong.dead.tu-phap");
        assert_eq!(agency_consumer(&a), "agency-tu-phap");
        let d = Uuid::nil();
        assert_eq!(
            feed_subject(d),
            "lienthong.feed.00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(feed_msg_id(d, 7), "00000000-0000-0000-0000-000000000000/7");
    }
}
