//! The projections role on its own machine: the read models (`lienthong-projections`) folded from
//! the bus's event feed instead of the engine's sled store.
//!
//! The projections fold a [`FeedSource`]: a synchronous, local, gap-free-per-dossier log that
//! they read in global order and by dossier. The bus's feed is none of that (it is remote, async,
//! and only as trustworthy as the network and the broker), so this module puts a **mirror** in
//! between:
//!
//! - [`BusFeed`] is the mirror: a small sled database of its own (not the projections' database,
//!   whose handle is private to its crate) holding every event of the bus's feed that passed the
//!   checks below, and the mirror's checkpoint. It implements [`FeedSource`], answering
//!   `read_feed`, `read_stream` and `last_position` locally and synchronously, and checking the
//!   stored bytes again on every read, as the engine's store does.
//! - [`Follower`] runs the role: it follows the bus's feed from the mirror's checkpoint
//!   ([`lienthong_bus::Feed::subscribe`]), writes what arrives into the mirror in batches
//!   ([`BusFeed::apply`]), and folds the read models after each batch through the gateway's
//!   [`ReadModels`] handle, whose lock keeps these folds apart from the folds and reads of a
//!   report service served from the same handle. [`Follower::progress`] is a watch of
//!   [`Progress`], lag included.
//!
//! # What the mirror checks before it keeps an event
//!
//! A feed message's payload is the engine's stored `lienthong.v1.SealedEvent`, byte for byte
//! (see [`crate::outbox`]). For the message of `(dossier, seq)` the mirror requires, in order:
//!
//! 1. `seq` is the dossier's next one (1 for a dossier it has not seen). A `seq` it already holds
//!    is a **duplicate** (an outbox republished it after the bus's duplicate window): dropped if
//!    its bytes are exactly the ones kept, refused otherwise (two histories of one dossier). A
//!    `seq` further on is a **gap** and refused: events of the dossier are missing from the feed
//!    (no longer retained, or never published).
//! 2. The payload decodes as a `SealedEvent` whose `hash` is the SHA-256 of its `raw` bytes, `raw`
//!    decodes as an `Event` whose envelope names this dossier and seq, its `prev_hash` is the hash
//!    of the dossier's previous event (the engine's own [`chain::check`]), its dossier code is the
//!    one of the dossier's first event, and `raw` is within the store's
//!    [`store::EVENT_BYTES_MAX`].
//!
//! A refused message stops the role with [`Error::Refused`], which names the feed position, the
//! dossier, the seq and what is wrong. The messages before it in the same batch are kept and
//! folded; nothing from it on is: the views stay exactly those of the feed's verified prefix.
//! A restarted role refuses the same message again. The engine's store is the record: compare it
//! with the feed there (`lienthong verify`), and repair the bus, not the mirror.
//!
//! # Positions
//!
//! The global position of a [`Recorded`] read from the mirror is the **bus feed position** of
//! its message (the JetStream stream sequence, or the in-process bus's position): strictly
//! increasing, not necessarily dense (dropped duplicates, messages no longer retained, and other
//! engine nodes' events all leave holes that the fold does not mind). The projections'
//! checkpoint is therefore a bus position. To make that true the mirror rewrites
//! `envelope.global_position` in the *decoded* copy of each event ([`Recorded::event`], which is
//! a convenience); the sealed bytes ([`Recorded::sealed`]) and the hash are untouched, so the
//! event's position in its engine's store stays readable there. With one engine publishing to
//! a fresh stream the two numberings coincide; with several engine nodes on one bus, store
//! positions would collide, and only the bus's numbering orders everything.
//!
//! # Durability and restarts
//!
//! Every batch (the events kept, their index entries, the dossiers' new heads and the mirror's
//! checkpoint) is ONE `sled::Batch`, atomic also across a crash, then flushed. After a restart
//! the follower subscribes again after the checkpoint; whatever the bus delivers again is
//! recognised by `(dossier, seq)` and dropped. Because positions are the bus's own, the mirror is
//! a pure function of the bus's feed: a mirror that lost its last batches (a crash before the
//! flush reached the disk), or was deleted, is filled again with the same positions. Until it
//! is back at the projections' checkpoint the follower does not fold (that would be
//! [`lienthong_projections::Error::AheadOfStore`], which is also what a report that folds for
//! itself meanwhile gets, as FAILED_PRECONDITION); if the bus cannot bring it back there
//! (the stream was replaced or lost its messages), it stops with [`Error::ProjectionsAhead`].
//! A bus whose feed ends before the mirror's checkpoint, or holds another event at the
//! checkpoint's position, was replaced: [`Error::BusBehind`], [`Error::BusReplaced`].
//!
//! # Limits
//!
//! The bus carries events only, not the content-addressed workflow definitions the engine's
//! store keeps ([`FeedSource::definition`] answers `None`): a dossier is folded with the
//! projections' catalog's version of its procedure. Run the projections with the same
//! `workflows/` directory as the engines (every pinned version of every procedure).
//!
//! A command's events are consecutive on the feed but may be split between two of the mirror's
//! batches: the views may then show a dossier half-way through one command until the next batch,
//! which re-folds the dossier from its stream. The final views do not depend on the cut (see the
//! projections crate on why rebuild equals incremental).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::{Bus, FeedRecord, PULL_BATCH_MAX};
use lienthong_engine::DossierId;
use lienthong_engine::store::chain::{self, Break, ChainError, Link, StreamCheck};
use lienthong_engine::store::{self, Corruption, FEED_READ_MAX, Recorded};
use lienthong_gateway::ReadModels;
use lienthong_gateway::backend::Mirror;
use lienthong_projections::FeedSource;
use lienthong_proto::v1::{Event, SealedEvent};
use prost::Message;
use tokio::sync::watch;
use uuid::Uuid;

/// Default: records written to the mirror per batch (one atomic sled batch each).
pub const BATCH_RECORDS_DEFAULT: usize = PULL_BATCH_MAX;
/// Default: how long the follower waits for a new message before it looks at the bus's head
/// (for the lag) and folds again.
pub const IDLE_WAIT_DEFAULT: Duration = Duration::from_millis(500);
/// Default: first wait before the follower reconnects after a retryable bus error.
pub const RETRY_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(50);
/// Default: longest wait between reconnections.
pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// The mirror's schema version. A mirror of another version is wiped on open and filled again
/// from the bus.
pub const SCHEMA_VERSION: u32 = 2;

/// The mirror's key layout: one sled tree, a two-byte prefix per kind of record, integers
/// big-endian so that keys sort numerically.
///
/// | key                           | value                                               |
/// |-------------------------------|-----------------------------------------------------|
/// | `m/schema`                    | [`super::projections::SCHEMA_VERSION`] (u32)        |
/// | `m/checkpoint`                | last bus position consumed (8), its dossier (16) and seq (8) |
/// | `f/` position (8)             | dossier (16), seq (8): the feed, in bus order       |
/// | `s/` dossier (16) seq (8)     | position (8), the message's payload (a `SealedEvent`) |
/// | `h/` dossier (16)             | last seq (8), its hash (32), the dossier code (UTF-8) |
/// | `c/` dossier code (UTF-8)     | dossier (16): codes to ids, for a gateway's lookups  |
pub mod keys {
    use uuid::Uuid;

    /// The schema version.
    pub const SCHEMA: &[u8] = b"m/schema";
    /// The checkpoint: the last bus message consumed (kept or dropped as a duplicate).
    pub const CHECKPOINT: &[u8] = b"m/checkpoint";
    /// Prefix of the feed index.
    pub const FEED: &[u8] = b"f/";
    /// Prefix of the streams.
    pub const STREAM: &[u8] = b"s/";
    /// Prefix of the dossiers' heads.
    pub const HEAD: &[u8] = b"h/";
    /// Prefix of the code index.
    pub const CODE: &[u8] = b"c/";

    /// `c/<code>`.
    pub fn code(code: &str) -> Vec<u8> {
        [CODE, code.as_bytes()].concat()
    }

    /// `f/<position>`.
    pub fn feed(position: u64) -> Vec<u8> {
        [FEED, &position.to_be_bytes()].concat()
    }

    /// `s/<dossier>`: the prefix of one stream.
    pub fn stream_prefix(dossier: &Uuid) -> Vec<u8> {
        [STREAM, dossier.as_bytes()].concat()
    }

    /// `s/<dossier><seq>`.
    pub fn stream(dossier: &Uuid, seq: u64) -> Vec<u8> {
        [STREAM, dossier.as_bytes(), &seq.to_be_bytes()].concat()
    }

    /// `h/<dossier>`.
    pub fn head(dossier: &Uuid) -> Vec<u8> {
        [HEAD, dossier.as_bytes()].concat()
    }

    /// A key for error messages.
    pub fn printable(k: &[u8]) -> String {
        let (prefix, rest) = k.split_at(k.len().min(2));
        format!("{}{}", String::from_utf8_lossy(prefix), hex::encode(rest))
    }
}

/// Why the mirror or the follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("invalid projections follower configuration: {0}")]
    Config(String),
    /// The mirror's own database failed or holds a damaged record. The mirror is a cache of the
    /// bus: it can be deleted and is filled again.
    #[error(
        "bus feed mirror database error: {0}; if it persists, stop the projections, delete the \
         mirror directory and start again (it is filled again from the bus)"
    )]
    Db(String),
    /// The bus failed for a reason retrying will not cure (retryable errors are retried).
    #[error("projections cannot read the bus's feed: {0}")]
    Bus(#[from] lienthong_bus::Error),
    /// A feed message that is not the next verified event of its dossier: not kept, not folded.
    #[error(
        "bus feed position {position} (event {dossier}/{seq}) is refused: {why}. The projections \
         stop before it. The engine's store is the record: check it (`lienthong verify` on the \
         engine node) and republish the feed from it; do not edit the mirror"
    )]
    Refused {
        /// The message's feed position.
        position: u64,
        /// The dossier it names.
        dossier: Uuid,
        /// The seq it names.
        seq: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The bus's feed ends before the mirror's checkpoint: it is not the feed the mirror
    /// followed.
    #[error(
        "the bus's feed ends at position {bus_last} but the mirror has consumed it up to \
         {checkpoint}: the feed stream was replaced. Delete the mirror and the projections \
         directories to follow the new feed from its start"
    )]
    BusBehind {
        /// The mirror's checkpoint.
        checkpoint: u64,
        /// The bus feed's last position.
        bus_last: u64,
    },
    /// The message at the mirror's checkpoint is not the one the mirror consumed there.
    #[error(
        "the bus's feed holds event {found} at position {position}, where the mirror consumed \
         {expected}: the feed stream was replaced. Delete the mirror and the projections \
         directories to follow the new feed from its start"
    )]
    BusReplaced {
        /// The checkpoint's position.
        position: u64,
        /// `<dossier>/<seq>` consumed there.
        expected: String,
        /// `<dossier>/<seq>` on the bus there now.
        found: String,
    },
    /// The views were folded further than the mirror, and the bus cannot bring the mirror back
    /// there.
    #[error(
        "the projections are folded up to feed position {checkpoint} but the mirror holds only up \
         to {mirrored} and the bus's feed has nothing more: rebuild the projections \
         (`lienthong projections rebuild`) or delete their directory"
    )]
    ProjectionsAhead {
        /// The projections' checkpoint.
        checkpoint: u64,
        /// The mirror's last position.
        mirrored: u64,
    },
    /// A call on the projections failed.
    #[error(transparent)]
    Projections(#[from] lienthong_projections::Error),
    /// Folding the mirrored feed into the read models failed (the projections' advice is in
    /// the message).
    #[error("the projections cannot fold the mirrored feed: {}", .0.message())]
    Fold(Box<tonic::Status>),
    /// A blocking task of the follower panicked or was cancelled.
    #[error("a projections task failed: {0}")]
    Task(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Db(e.to_string())
    }
}

/// Name of the feed mirror's directory inside a projections-role data directory.
pub const BUS_FEED_DIR: &str = "bus-feed";

/// The last message of the bus's feed the mirror consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Its bus position (0: nothing consumed yet).
    pub position: u64,
    /// The dossier it named.
    pub dossier: Uuid,
    /// The seq it named.
    pub seq: u64,
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        [
            &self.position.to_be_bytes()[..],
            self.dossier.as_bytes(),
            &self.seq.to_be_bytes(),
        ]
        .concat()
    }

    fn decode(v: &[u8]) -> Option<Checkpoint> {
        if v.len() != 32 {
            return None;
        }
        Some(Checkpoint {
            position: u64::from_be_bytes(v[0..8].try_into().ok()?),
            dossier: Uuid::from_slice(&v[8..24]).ok()?,
            seq: u64::from_be_bytes(v[24..32].try_into().ok()?),
        })
    }
}

/// Where a dossier's stream ends in the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    /// The last seq and its hash.
    link: Link,
    /// The dossier code of its first event (every later one must carry it).
    code: String,
}

impl Head {
    fn encode(&self) -> Vec<u8> {
        [
            &self.link.seq.to_be_bytes()[..],
            &self.link.hash,
            self.code.as_bytes(),
        ]
        .concat()
    }

    fn decode(v: &[u8]) -> Option<Head> {
        if v.len() < 40 {
            return None;
        }
        Some(Head {
            link: Link {
                seq: u64::from_be_bytes(v[0..8].try_into().ok()?),
                hash: v[8..40].try_into().ok()?,
            },
            code: String::from_utf8(v[40..].to_vec()).ok()?,
        })
    }
}

/// What one [`BusFeed::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Events kept.
    pub stored: u64,
    /// Messages dropped because the mirror already held the same bytes for their `(dossier, seq)`.
    pub duplicates: u64,
    /// Messages at or before the checkpoint (delivered again after a resubscription): ignored.
    pub replayed: u64,
}

/// The local, verified mirror of the bus's feed; a [`FeedSource`] for the projections. See the
/// module docs.
pub struct BusFeed {
    /// The mirror's database (one tree, see [`keys`]).
    db: sled::Db,
}

impl std::fmt::Debug for BusFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusFeed").finish_non_exhaustive()
    }
}

impl BusFeed {
    /// Opens (or creates) the mirror in `dir`. A mirror of another schema version is wiped (it
    /// is filled again from the bus).
    pub fn open(dir: &Path) -> Result<BusFeed, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Db(e.to_string()))?;
        let db = lienthong_engine::store::sled_store::open_sled_db(dir)?;
        let schema = db
            .get(keys::SCHEMA)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if schema != Some(SCHEMA_VERSION) {
            if schema.is_some() || !db.is_empty() {
                tracing::warn!(
                    ?schema,
                    "the bus feed mirror is of another schema; filling it again from the bus"
                );
            }
            db.clear()?;
            db.insert(keys::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            db.flush()?;
        }
        Ok(BusFeed { db })
    }

    /// The last bus message consumed (position 0: none).
    pub fn checkpoint(&self) -> Result<Checkpoint, Error> {
        match self.db.get(keys::CHECKPOINT)? {
            None => Ok(Checkpoint::default()),
            Some(v) => Checkpoint::decode(&v).ok_or_else(|| {
                Error::Db(format!(
                    "record `{}` is damaged: not a checkpoint",
                    keys::printable(keys::CHECKPOINT)
                ))
            }),
        }
    }

    /// The position of the last event kept (0: none); what [`FeedSource::last_position`] says.
    pub fn stored_position(&self) -> Result<u64, Error> {
        match self.db.scan_prefix(keys::FEED).keys().next_back() {
            None => Ok(0),
            Some(k) => {
                let k = k?;
                feed_position(&k).ok_or_else(|| {
                    Error::Db(format!("record `{}` is damaged", keys::printable(&k)))
                })
            }
        }
    }

    /// Writes sled's buffers out.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// Checks `records` (in bus order) and writes those that pass, with the new checkpoint, as
    /// one atomic batch, then flushes. Records at or before the checkpoint are ignored, exact
    /// duplicates dropped. At the first record that fails a check (see the module docs) the
    /// records before it are written and [`Error::Refused`] is returned: the checkpoint stays
    /// before the refused record, so it is refused again if offered again.
    pub fn apply(&self, records: &[FeedRecord]) -> Result<Applied, Error> {
        let start = self.checkpoint()?;
        let mut checkpoint = start;
        let mut applied = Applied::default();
        let mut batch = sled::Batch::default();
        // What this batch has written so far, readable before it is applied.
        let mut heads: BTreeMap<Uuid, Option<Head>> = BTreeMap::new();
        let mut kept: BTreeMap<(Uuid, u64), Vec<u8>> = BTreeMap::new();
        let mut refused = None;
        for r in records {
            if r.position <= checkpoint.position {
                applied.replayed += 1;
                continue;
            }
            let head = match heads.get(&r.dossier) {
                Some(h) => h.clone(),
                None => self.head(&r.dossier)?,
            };
            match self.check(head.as_ref(), r, &kept) {
                Ok(Verdict::Duplicate) => applied.duplicates += 1,
                Ok(Verdict::Next(new)) => {
                    let mut value = r.position.to_be_bytes().to_vec();
                    value.extend_from_slice(&r.payload);
                    let key = keys::stream(&r.dossier, r.seq);
                    batch.insert(key, value.clone());
                    kept.insert((r.dossier, r.seq), value);
                    let mut entry = r.dossier.as_bytes().to_vec();
                    entry.extend_from_slice(&r.seq.to_be_bytes());
                    batch.insert(keys::feed(r.position), entry);
                    batch.insert(keys::head(&r.dossier), new.encode());
                    if r.seq == 1 {
                        batch.insert(keys::code(&new.code), r.dossier.as_bytes().to_vec());
                    }
                    heads.insert(r.dossier, Some(new));
                    applied.stored += 1;
                }
                Err(why) => {
                    refused = Some(Error::Refused {
                        position: r.position,
                        dossier: r.dossier,
                        seq: r.seq,
                        why,
                    });
                    break;
                }
            }
            checkpoint = Checkpoint {
                position: r.position,
                dossier: r.dossier,
                seq: r.seq,
            };
        }
        if checkpoint != start {
            batch.insert(keys::CHECKPOINT, checkpoint.encode());
            self.db.apply_batch(batch)?;
            self.db.flush()?;
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    /// The mirror's head of `dossier`.
    fn head(&self, dossier: &Uuid) -> Result<Option<Head>, Error> {
        let key = keys::head(dossier);
        self.db
            .get(&key)?
            .map(|v| {
                Head::decode(&v).ok_or_else(|| {
                    Error::Db(format!("record `{}` is damaged", keys::printable(&key)))
                })
            })
            .transpose()
    }

    /// Whether `r` is the next event of its dossier (after `head`), a duplicate, or refused (why).
    fn check(
        &self,
        head: Option<&Head>,
        r: &FeedRecord,
        kept: &BTreeMap<(Uuid, u64), Vec<u8>>,
    ) -> Result<Verdict, String> {
        let next = head.map_or(1, |h| h.link.seq + 1);
        if r.seq == 0 {
            return Err("seq 0: sequence numbers start at 1".into());
        }
        if r.seq < next {
            let stored = match kept.get(&(r.dossier, r.seq)) {
                Some(v) => Some(v.clone()),
                None => self
                    .db
                    .get(keys::stream(&r.dossier, r.seq))
                    .map_err(|e| format!("cannot read the mirror to compare: {e}"))?
                    .map(|v| v.to_vec()),
            };
            return match stored {
                Some(v) if v.get(8..) == Some(r.payload.as_ref()) => Ok(Verdict::Duplicate),
                Some(_) => Err(format!(
                    "the mirror already holds a different event for seq {}: two histories of \
                     one dossier",
                    r.seq
                )),
                None => Err(format!(
                    "the mirror's stream of this dossier lacks seq {} below its head",
                    r.seq
                )),
            };
        }
        if r.seq > next {
            return Err(format!(
                "gap: the dossier's last event on the feed so far is seq {}, so seq {}..={} are \
                 missing (no longer retained by the bus, or never published)",
                next - 1,
                next,
                r.seq - 1
            ));
        }
        let sealed = SealedEvent::decode(r.payload.as_ref())
            .map_err(|e| format!("the payload is not a lienthong.v1.SealedEvent: {e}"))?;
        if sealed.raw.len() > store::EVENT_BYTES_MAX {
            return Err(format!(
                "the event has {} bytes, more than the store's limit of {}",
                sealed.raw.len(),
                store::EVENT_BYTES_MAX
            ));
        }
        let event = chain::check(head.map(|h| &h.link), &DossierId(r.dossier), r.seq, &sealed)
            .map_err(|e| e.to_string())?;
        let code = event
            .envelope
            .as_ref()
            .map(|e| e.dossier_code.clone())
            .unwrap_or_default();
        if let Some(h) = head
            && h.code != code
        {
            return Err(format!(
                "the dossier code changed from `{}` to `{code}`",
                h.code
            ));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&sealed.hash);
        Ok(Verdict::Next(Head {
            link: Link { seq: r.seq, hash },
            code,
        }))
    }

    /// The kept event `(dossier, seq)` named by the feed at `position`, checked again.
    fn event_at(&self, position: u64, dossier: Uuid, seq: u64) -> Result<Recorded, store::Error> {
        let feed_problem = |reason: String| -> store::Error {
            Corruption::Feed {
                position,
                reason: format!("{reason} (in the bus feed mirror)"),
            }
            .into()
        };
        let broken = |what: Break| -> store::Error {
            Corruption::Chain(ChainError {
                dossier: DossierId(dossier),
                seq,
                what,
            })
            .into()
        };
        let Some(v) = self.db.get(keys::stream(&dossier, seq)).map_err(backend)? else {
            return Err(feed_problem(format!(
                "points at {dossier}/{seq}, which is missing"
            )));
        };
        let (at, sealed) =
            stored_value(&v).map_err(|reason| broken(Break::Undecodable { reason }))?;
        if at != position {
            return Err(feed_problem(format!(
                "points at {dossier}/{seq}, which was kept at position {at}"
            )));
        }
        let computed = chain::hash_of(&sealed.raw);
        if computed.as_slice() != sealed.hash.as_slice() {
            return Err(broken(Break::HashMismatch {
                stored: hex::encode(&sealed.hash),
                computed: hex::encode(computed),
            }));
        }
        let event = Event::decode(sealed.raw.as_slice()).map_err(|e| {
            broken(Break::Undecodable {
                reason: e.to_string(),
            })
        })?;
        let found = event
            .envelope
            .as_ref()
            .map(|e| (e.dossier_id.clone(), e.seq));
        if found != Some((dossier.to_string(), seq)) {
            return Err(feed_problem(format!(
                "points at {dossier}/{seq}, whose event says {found:?}"
            )));
        }
        Ok(recorded(event, sealed, position))
    }
}

/// The verdict on one feed message.
enum Verdict {
    /// The dossier's next event: keep it; the dossier's head becomes this.
    Next(Head),
    /// The same bytes as an event already kept: drop it.
    Duplicate,
}

/// A kept event as a [`Recorded`] whose global position is the bus position.
fn recorded(mut event: Event, sealed: SealedEvent, position: u64) -> Recorded {
    if let Some(env) = event.envelope.as_mut() {
        env.global_position = position;
    }
    Recorded { event, sealed }
}

/// A stream record's value: the bus position and the `SealedEvent`.
fn stored_value(v: &[u8]) -> Result<(u64, SealedEvent), String> {
    let Some((position, payload)) = v.split_first_chunk::<8>() else {
        return Err("shorter than a position".into());
    };
    let sealed = SealedEvent::decode(payload).map_err(|e| e.to_string())?;
    Ok((u64::from_be_bytes(*position), sealed))
}

/// The position in an `f/` key.
fn feed_position(k: &[u8]) -> Option<u64> {
    let rest = k.strip_prefix(keys::FEED)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

fn backend(e: sled::Error) -> store::Error {
    store::Error::Backend(format!("bus feed mirror: {e}"))
}

fn damaged(key: &[u8], reason: &str) -> store::Error {
    Corruption::Record {
        key: keys::printable(key),
        reason: format!(
            "{reason} (in the bus feed mirror: delete its directory to fill it again from the bus)"
        ),
    }
    .into()
}

impl Mirror for BusFeed {
    fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, store::Error> {
        let key = keys::code(code);
        match self.db.get(&key).map_err(backend)? {
            None => Ok(None),
            Some(v) => Uuid::from_slice(&v)
                .map(|u| Some(DossierId(u)))
                .map_err(|_| damaged(&key, "not a dossier id")),
        }
    }
}

impl FeedSource for BusFeed {
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, store::Error> {
        let limit = limit.min(FEED_READ_MAX);
        let mut out = Vec::new();
        let Some(first) = after_position.checked_add(1) else {
            return Ok(out);
        };
        if limit == 0 {
            return Ok(out);
        }
        for kv in self.db.range(keys::feed(first)..) {
            let (k, v) = kv.map_err(backend)?;
            if !k.starts_with(keys::FEED) {
                break;
            }
            let position = feed_position(&k).ok_or_else(|| damaged(&k, "not a feed key"))?;
            if v.len() != 24 {
                return Err(damaged(&k, "not a dossier and seq"));
            }
            let dossier = Uuid::from_slice(&v[..16]).map_err(|_| damaged(&k, "bad dossier"))?;
            let seq = u64::from_be_bytes(v[16..].try_into().map_err(|_| damaged(&k, "bad seq"))?);
            out.push(self.event_at(position, dossier, seq)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, store::Error> {
        let mut check = StreamCheck::new(*dossier);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(keys::stream_prefix(&dossier.0)) {
            let (k, v) = kv.map_err(backend)?;
            let seq = k
                .get(18..)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| damaged(&k, "not a stream key"))?;
            let expected = check.next_seq();
            let broken = |what: Break| -> store::Error {
                Corruption::Chain(ChainError {
                    dossier: *dossier,
                    seq: expected,
                    what,
                })
                .into()
            };
            if seq != expected {
                return Err(broken(Break::SeqGap { found: seq }));
            }
            let (position, sealed) =
                stored_value(&v).map_err(|reason| broken(Break::Undecodable { reason }))?;
            let Some(event) = check.next(&sealed) else {
                let what = check.broken.clone().map_or(
                    Break::Undecodable {
                        reason: "unchecked".into(),
                    },
                    |e| e.what,
                );
                return Err(broken(what));
            };
            out.push(recorded(event, sealed, position));
        }
        Ok(out)
    }

    fn last_position(&self) -> Result<u64, store::Error> {
        self.stored_position().map_err(|e| match e {
            Error::Db(reason) => store::Error::Backend(reason),
            other => store::Error::Backend(other.to_string()),
        })
    }
}

/// The follower's timings and limits; [`Config::default`] uses the `*_DEFAULT` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Messages written to the mirror per batch (at most [`PULL_BATCH_MAX`]).
    pub batch_records: usize,
    /// How long to wait for a new message before looking at the bus's head and folding.
    pub idle_wait: Duration,
    /// First wait before reconnecting after a retryable bus error; it doubles on every failure.
    pub retry_backoff_min: Duration,
    /// Longest wait between reconnections.
    pub retry_backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_records: BATCH_RECORDS_DEFAULT,
            idle_wait: IDLE_WAIT_DEFAULT,
            retry_backoff_min: RETRY_BACKOFF_MIN_DEFAULT,
            retry_backoff_max: RETRY_BACKOFF_MAX_DEFAULT,
        }
    }
}

impl Config {
    /// Checks the combination.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Config(why.to_owned()));
        if !(1..=PULL_BATCH_MAX).contains(&self.batch_records) {
            return bad("batch_records must be 1 to 256");
        }
        if self.idle_wait < Duration::from_millis(1) {
            return bad("idle_wait must be at least 1 ms");
        }
        if self.retry_backoff_min < Duration::from_millis(1)
            || self.retry_backoff_max < self.retry_backoff_min
        {
            return bad(
                "retry backoff must satisfy 1 ms <= retry_backoff_min <= retry_backoff_max",
            );
        }
        Ok(())
    }
}

/// How far the projections role is, for logs and metrics. Positions are bus feed positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The mirror's checkpoint when the follower started.
    pub resumed_after: u64,
    /// The bus feed's last position, when the follower last looked (or the last message seen).
    pub bus_position: u64,
    /// The last bus position the mirror consumed (kept or dropped as a duplicate).
    pub mirrored_position: u64,
    /// The last position the mirror kept an event at: the head the projections fold up to.
    pub stored_position: u64,
    /// The projections' checkpoint.
    pub folded_position: u64,
    /// Events kept in the mirror by this run.
    pub events_mirrored: u64,
    /// Messages dropped as duplicates of kept events by this run.
    pub duplicates: u64,
    /// Events folded into the views by this run.
    pub events_folded: u64,
}

impl Progress {
    /// How far behind the bus the views are: messages on the bus not consumed yet plus events
    /// kept but not folded yet. 0 when everything the bus had when last looked is in the views.
    pub fn lag(&self) -> u64 {
        self.bus_position.saturating_sub(self.mirrored_position)
            + self.stored_position.saturating_sub(self.folded_position)
    }
}

/// The projections role: follows the bus's feed into the [`BusFeed`] mirror and folds the read
/// models from it. Build with [`Follower::new`], then [`Follower::run`] until shutdown.
pub struct Follower {
    /// Where the feed comes from.
    bus: Arc<dyn Bus>,
    /// The mirror the projections fold from (the same `Arc` they were opened over).
    feed: Arc<BusFeed>,
    /// The projections, behind the lock that keeps folds and report reads apart; `None` for a
    /// mirror only (the gateway role, whose reads come from the mirror itself).
    models: Option<ReadModels>,
    /// Timings and limits.
    config: Config,
    /// Progress, for whoever watches.
    progress: watch::Sender<Progress>,
}

/// The shutdown signal, boxed so that helpers can wait on it.
type Shutdown<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs `fut` unless `shutdown` fires first (`None` then).
async fn unless_shutdown<T>(
    shutdown: &mut Shutdown<'_>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.as_mut() => None,
        v = fut => Some(v),
    }
}

impl Follower {
    /// A follower of `bus`'s feed into `feed`, folding `models`. The projections in `models`
    /// must have been opened over `feed` (`Projections::open(dir, feed.clone(), catalog)`).
    pub fn new(
        bus: Arc<dyn Bus>,
        feed: Arc<BusFeed>,
        models: ReadModels,
        config: Config,
    ) -> Result<Follower, Error> {
        Self::build(bus, feed, Some(models), config)
    }

    /// A follower of `bus`'s feed into `feed` that folds nothing: the gateway role's mirror.
    pub fn mirror_only(
        bus: Arc<dyn Bus>,
        feed: Arc<BusFeed>,
        config: Config,
    ) -> Result<Follower, Error> {
        Self::build(bus, feed, None, config)
    }

    fn build(
        bus: Arc<dyn Bus>,
        feed: Arc<BusFeed>,
        models: Option<ReadModels>,
        config: Config,
    ) -> Result<Follower, Error> {
        config.validate()?;
        Ok(Follower {
            bus,
            feed,
            models,
            config,
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// A watch of the follower's [`Progress`].
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Mirrors and folds until `shutdown` completes (then returns `Ok`) or a fault stops it.
    /// Retryable bus errors (no connection, timeout) are retried with backoff, resubscribing
    /// after the mirror's checkpoint; everything else stops it with the error (a refused
    /// message, a replaced bus, a failing mirror or fold): restarting does not cure those, an
    /// operator must act on the error's advice. Cancelling the returned future is also safe: a
    /// batch is written whole or not at all, and what was not written is delivered again.
    pub async fn run<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        use tracing::Instrument;
        self.follow(shutdown)
            .instrument(tracing::info_span!("projections"))
            .await
    }

    async fn follow<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown: Shutdown<'_> = Box::pin(shutdown);
        let start = self.feed.checkpoint()?;
        let stored = self.feed.stored_position()?;
        let folded = self.folded()?;
        tracing::info!(
            after = start.position,
            folded,
            "projections following the bus's feed after position {}",
            start.position
        );
        self.progress.send_modify(|p| {
            p.resumed_after = start.position;
            p.mirrored_position = start.position;
            p.stored_position = stored;
            p.folded_position = folded;
        });
        let mut backoff = self.config.retry_backoff_min;
        loop {
            match self.session(&mut shutdown, &mut backoff).await {
                Ok(()) => return Ok(()),
                Err(Error::Bus(e)) if e.is_retryable() => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.retry_backoff_max);
                    tracing::warn!(
                        error = %e,
                        wait_ms = wait.as_millis() as u64,
                        "reading the bus's feed failed; subscribing again after the mirror's checkpoint"
                    );
                    if unless_shutdown(&mut shutdown, tokio::time::sleep(wait))
                        .await
                        .is_none()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the projections stop");
                    return Err(e);
                }
            }
        }
    }

    /// One subscription: checks the bus against the checkpoint, then mirrors and folds until
    /// shutdown (`Ok`) or an error.
    async fn session(
        &self,
        shutdown: &mut Shutdown<'_>,
        backoff: &mut Duration,
    ) -> Result<(), Error> {
        let checkpoint = self.feed.checkpoint()?;
        let Some(()) = unless_shutdown(shutdown, self.check_bus(&checkpoint))
            .await
            .transpose()?
        else {
            return Ok(());
        };
        let Some(sub) =
            unless_shutdown(shutdown, self.bus.subscribe(checkpoint.position + 1)).await
        else {
            return Ok(());
        };
        let mut sub = sub?;
        self.fold().await?;
        loop {
            let first =
                match unless_shutdown(shutdown, sub.next_within(self.config.idle_wait)).await {
                    None => return Ok(()),
                    Some(r) => r?,
                };
            let Some(first) = first else {
                let Some(idle) = unless_shutdown(shutdown, self.idle()).await else {
                    return Ok(());
                };
                idle?;
                continue;
            };
            let mut batch = vec![first];
            // Whatever else is already there, without waiting.
            let mut pending_error = None;
            while batch.len() < self.config.batch_records {
                match sub.next_within(Duration::ZERO).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) => break,
                    Err(e) => {
                        pending_error = Some(e);
                        break;
                    }
                }
            }
            let last_seen = batch.last().map_or(0, |r| r.position);
            let feed = self.feed.clone();
            let result = tokio::task::spawn_blocking(move || feed.apply(&batch))
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
            if let Ok(applied) = &result {
                tracing::debug!(
                    up_to = last_seen,
                    stored = applied.stored,
                    duplicates = applied.duplicates,
                    "mirrored a batch of the bus's feed"
                );
            }
            let checkpoint = self.feed.checkpoint()?.position;
            let stored = self.feed.stored_position()?;
            let applied = result.as_ref().copied().unwrap_or_default();
            self.progress.send_modify(|p| {
                p.bus_position = p.bus_position.max(last_seen);
                p.mirrored_position = checkpoint;
                p.stored_position = stored;
                p.events_mirrored += applied.stored;
                p.duplicates += applied.duplicates;
            });
            // Fold what was kept, also the verified prefix before a refused message.
            self.fold().await?;
            result?;
            *backoff = self.config.retry_backoff_min;
            if let Some(e) = pending_error {
                return Err(e.into());
            }
        }
    }

    /// The projections' checkpoint; a mirror only counts as folded up to what it stores.
    fn folded(&self) -> Result<u64, Error> {
        match &self.models {
            Some(m) => Ok(m.projections().checkpoint()?),
            None => Ok(self.feed.stored_position()?),
        }
    }

    /// Checks that the bus's feed is the one the mirror followed.
    async fn check_bus(&self, checkpoint: &Checkpoint) -> Result<(), Error> {
        if checkpoint.position == 0 {
            return Ok(());
        }
        let bus_last = self.bus.last().await?.map_or(0, |r| r.position);
        if bus_last < checkpoint.position {
            return Err(Error::BusBehind {
                checkpoint: checkpoint.position,
                bus_last,
            });
        }
        self.progress
            .send_modify(|p| p.bus_position = p.bus_position.max(bus_last));
        let at = self.bus.read(checkpoint.position, 1).await?;
        if let Some(r) = at.first()
            && r.position == checkpoint.position
            && (r.dossier, r.seq) != (checkpoint.dossier, checkpoint.seq)
        {
            return Err(Error::BusReplaced {
                position: checkpoint.position,
                expected: format!("{}/{}", checkpoint.dossier, checkpoint.seq),
                found: format!("{}/{}", r.dossier, r.seq),
            });
        }
        Ok(())
    }

    /// Nothing new within the idle wait: look at the bus's head (for the lag), and stop if the
    /// projections are ahead of everything the bus can give back.
    async fn idle(&self) -> Result<(), Error> {
        let bus_last = self.bus.last().await?.map_or(0, |r| r.position);
        let mirrored = self.feed.checkpoint()?.position;
        if bus_last < mirrored {
            return Err(Error::BusBehind {
                checkpoint: mirrored,
                bus_last,
            });
        }
        self.progress.send_modify(|p| p.bus_position = bus_last);
        let stored = self.feed.stored_position()?;
        let folded = self.folded()?;
        if bus_last <= mirrored && folded > stored {
            return Err(Error::ProjectionsAhead {
                checkpoint: folded,
                mirrored: stored,
            });
        }
        self.fold().await
    }

    /// Folds what the mirror holds into the views, unless the views are further than the
    /// mirror (a mirror filled again after a loss): then it waits for the mirror.
    async fn fold(&self) -> Result<(), Error> {
        let stored = self.feed.stored_position()?;
        let folded = self.folded()?;
        if folded >= stored {
            if folded > stored {
                tracing::debug!(
                    folded,
                    stored,
                    "the mirror is behind the projections' checkpoint; mirroring before folding"
                );
            }
            self.progress.send_modify(|p| p.folded_position = folded);
            return Ok(());
        }
        let Some(models) = &self.models else {
            return Ok(());
        };
        let done = models
            .catch_up()
            .await
            .map_err(|s| Error::Fold(Box::new(s)))?;
        self.progress.send_modify(|p| {
            p.folded_position = done.to;
            p.events_folded += done.events;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid() {
        Config::default().validate().expect("defaults");
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let bad = [
            Config {
                batch_records: 0,
                ..Config::default()
            },
            Config {
                batch_records: PULL_BATCH_MAX + 1,
                ..Config::default()
            },
            Config {
                idle_wait: Duration::ZERO,
                ..Config::default()
            },
            Config {
                retry_backoff_min: Duration::from_secs(2),
                retry_backoff_max: Duration::from_secs(1),
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(Error::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn checkpoints_and_heads_round_trip() {
        let c = Checkpoint {
            position: 7,
            dossier: Uuid::from_u128(42),
            seq: 3,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        let h = Head {
            link: Link {
                seq: 9,
                hash: [7; 32],
            },
            code: "UBND.XA-260302-0001".into(),
        };
        assert_eq!(Head::decode(&h.encode()), Some(h));
        assert_eq!(Head::decode(&[0; 39]), None);
    }

    #[test]
    fn progress_lag_counts_unread_and_unfolded() {
        let p = Progress {
            bus_position: 10,
            mirrored_position: 7,
            stored_position: 6,
            folded_position: 4,
            ..Progress::default()
        };
        assert_eq!(p.lag(), 3 + 2);
        let caught_up = Progress {
            bus_position: 10,
            mirrored_position: 10,
            stored_position: 8,
            folded_position: 8,
            ..Progress::default()
        };
        assert_eq!(caught_up.lag(), 0, "trailing duplicates are not lag");
    }
}
