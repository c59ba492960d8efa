//! Shared by the fuzz targets in `fuzz_targets/`: the shipped `workflows/` catalog (agencies,
//! calendars, procedures) that the targets check their inputs against, and the framing of the
//! `proto_decode` target's input, which the seed generator (`examples/seeds.rs`) writes too.
//!
//! Nothing here re-implements project code: the targets call the crates' own parse, validate,
//! decode and decide functions; this file only loads the real definitions once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lienthong_workflow::Catalog;

/// The repository's `workflows/` directory.
pub fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// The shipped catalog, loaded once per fuzzing process. Panics if it does not load: a fuzz run
/// against a broken catalog would test nothing.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| match Catalog::load(&workflows_dir()) {
        Ok(c) => c,
        Err(ds) => panic!("workflows/ does not load: {ds:#?}"),
    })
}

/// What the first byte of a `proto_decode` input selects; the rest is the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoKind {
    /// A stored `SealedEvent` value, exactly as a store record holds it.
    StoredRecord,
    /// A stream of `Event` encodings, each framed by a protobuf length delimiter, sealed with
    /// their true hashes: what a writer of another version could have stored.
    StoredStream,
    /// The store's own small binary values: a head, an idempotency record, a timer key/value.
    StoreKeys,
    /// A `BusCommand` as the node receives it from the bus.
    BusCommand,
    /// One of the gateway's gRPC request messages (the next byte picks which).
    Request,
}

impl ProtoKind {
    /// Every kind, in the order of their selector bytes.
    pub const ALL: [ProtoKind; 5] = [
        ProtoKind::StoredRecord,
        ProtoKind::StoredStream,
        ProtoKind::StoreKeys,
        ProtoKind::BusCommand,
        ProtoKind::Request,
    ];

    /// The kind a selector byte stands for (any byte stands for one).
    pub fn from_byte(b: u8) -> ProtoKind {
        ProtoKind::ALL[usize::from(b) % ProtoKind::ALL.len()]
    }

    /// The selector byte of this kind.
    pub fn byte(self) -> u8 {
        ProtoKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }
}

/// The gRPC request messages a `Request` input may be, by the selector's second byte.
pub const REQUESTS: [&str; 11] = [
    "SubmitRequest",
    "CompleteStepRequest",
    "RejectStepRequest",
    "RequestSupplementRequest",
    "ProvideSupplementRequest",
    "RefuseRequest",
    "StopRequest",
    "IssueApologyRequest",
    "ReturnResultRequest",
    "WithdrawRequest",
    "GetDossierRequest",
];
