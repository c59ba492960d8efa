//! Upgrades a data directory written by an older release to the store's
//! [`SCHEMA_VERSION`].
//!
//! Schema 1 kept one `s/` key per event (a bare `SealedEvent`) and one `f/` key per event
//! (dossier, seq). Schema 2 keeps one `s/` key per append (a run of length-delimited events) and
//! one `f/` key per group commit (see [`keys`]). A schema-1 event is a run of one, and a
//! schema-1 feed entry is a group of one run, so the upgrade rewrites those two kinds of value
//! under the same keys and copies every other record as it is.
//!
//! The upgrade works in place, in sled batches of `MIGRATE_BATCH_RECORDS` records. Each batch
//! rewrites its values *and* records the last key it visited (`m/migrating`), atomically, so a
//! crash at any point leaves a prefix of the keys upgraded and says where it ends: running the
//! migration again carries on from there. The first batch sets the schema record to
//! [`SCHEMA_UPGRADING`], which no release opens (schema-1 releases included), and only the last
//! batch sets it to 2, so a half-upgraded store is never opened. The last batch leaves the
//! progress record empty, meaning "verify pending": the upgraded store is then verified in full
//! (chains, feed, heads, codes, idempotency, timers), and only a clean verify removes the record,
//! so a crash before the verify finished is caught up by the next run. The data directory's other
//! contents (projections, outbox spill, node id) are left as they are.

use std::path::Path;

use prost::encoding::encode_varint;

use super::keys::{self, FeedRef};
use super::sled_store::{SCHEMA_VERSION, SledStore, backend, open_sled_db};
use super::sync::Syncer;
use super::writer::printable;
use super::{Corruption, Error, EventStore};

/// Records rewritten per sled batch while migrating.
const MIGRATE_BATCH_RECORDS: usize = 10_000;

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The schema found (the schema now on disk is always
    /// [`SCHEMA_VERSION`]).
    pub from: u32,
    /// Events in the upgraded store (0 when nothing was to do).
    pub events: u64,
    /// Records rewritten by this run.
    pub records: u64,
}

/// The progress record of an unfinished migration: the last key visited, or empty once every
/// record is rewritten and only the verify is pending.
const MIGRATING: &[u8] = b"m/migrating";

/// The schema record of a store whose upgrade from schema 1 has begun and not ended: no release
/// opens it, only [`migrate`] carries it on.
pub const SCHEMA_UPGRADING: u32 = 0x8000_0002;

/// Upgrades the store in `dir` to the current schema (see the module docs). A store already at
/// the current schema is left alone; a directory that holds no store, or a schema this build
/// cannot upgrade, is an error, as is a store that does not verify after the upgrade.
pub fn migrate(dir: &Path) -> Result<Migration, Error> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let no_store = || {
        Error::Invalid(format!(
            "{} holds no lienthong store (no schema record)",
            dir.display()
        ))
    };
    if !dir.join("db").is_file() {
        return Err(no_store()); // not even sled's file: opening would create one
    }
    let (from, records) = {
        let db = open_sled_db(dir).map_err(backend)?;
        let from = match db.get(keys::META_SCHEMA).map_err(backend)? {
            Some(v) => keys::schema_of(&v),
            None => return Err(no_store()),
        };
        let pending = db.get(MIGRATING).map_err(backend)?;
        match from {
            SCHEMA_VERSION if pending.is_none() => {
                return Ok(Migration {
                    from,
                    events: 0,
                    records: 0,
                });
            }
            // Rewritten, but the verify did not finish: do it now.
            SCHEMA_VERSION => (1, 0),
            1 | SCHEMA_UPGRADING => {
                let (records, _) = upgrade_v1(&db, MIGRATE_BATCH_RECORDS, None)?;
                make_durable(db, dir)?;
                (1, records)
            }
            found => {
                return Err(Error::Schema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
    };

    let store = SledStore::open(dir)?;
    let report = store.verify()?;
    store.close()?;
    drop(store);
    let events = report.feed_entries;
    if !report.is_clean() {
        let problems = report.chains.breaks.len() + report.problems.len();
        let first = report
            .problems
            .first()
            .map(ToString::to_string)
            .or_else(|| {
                report
                    .chains
                    .breaks
                    .first()
                    .map(|b| format!("dossier {} seq {}", b.dossier, b.seq))
            })
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "{} is at schema {SCHEMA_VERSION} now, but it does not verify ({problems} problem(s), \
             first: {first}); see `lienthong verify --data {}`",
            dir.display(),
            dir.display()
        )));
    }
    let db = open_sled_db(dir).map_err(backend)?;
    db.remove(MIGRATING).map_err(backend)?;
    make_durable(db, dir)?;
    tracing::info!(events, records, "store migrated to schema {SCHEMA_VERSION}");
    Ok(Migration {
        from,
        events,
        records,
    })
}

/// Flushes and closes `db`, then fdatasyncs its files (sled's own flush is not enough: see
/// `store/sync.rs`).
fn make_durable(db: sled::Db, dir: &Path) -> Result<(), Error> {
    db.flush().map_err(backend)?;
    drop(db);
    Syncer::open(dir)?.sync()?;
    Ok(())
}

/// Rewrites the schema-1 records of `db` after the progress record (all of them on a first
/// run), `per_batch` records at a time, the last batch setting the schema; stops after
/// `batches_max` batches if given (tests use it to leave a migration half done). Returns the
/// records rewritten by this run, and whether the schema was set.
fn upgrade_v1(
    db: &sled::Db,
    per_batch: usize,
    batches_max: Option<usize>,
) -> Result<(u64, bool), Error> {
    let resume = db.get(MIGRATING).map_err(backend)?;
    let mut todo = match &resume {
        Some(last) if !last.is_empty() => db.range::<&[u8], _>((
            std::ops::Bound::Excluded(last.as_ref()),
            std::ops::Bound::Unbounded,
        )),
        _ => db.iter(),
    };
    let mut records = 0u64;
    for _ in 0..batches_max.unwrap_or(usize::MAX) {
        let mut batch = sled::Batch::default();
        let mut last = None;
        let mut in_batch = 0;
        for entry in todo.by_ref() {
            let (k, v) = entry.map_err(backend)?;
            if let Some(value) = upgraded(&k, &v)? {
                batch.insert(k.clone(), value);
                records += 1;
                in_batch += 1;
            }
            last = Some(k);
            if in_batch >= per_batch {
                break;
            }
        }
        let Some(last) = last else {
            // Everything is rewritten: the schema moves on, in the same batch as the last rest,
            // and the verify is pending.
            batch.insert(keys::META_SCHEMA, &SCHEMA_VERSION.to_be_bytes());
            batch.insert(MIGRATING, &[]);
            db.apply_batch(batch).map_err(backend)?;
            return Ok((records, true));
        };
        batch.insert(MIGRATING, last);
        batch.insert(keys::META_SCHEMA, &SCHEMA_UPGRADING.to_be_bytes());
        db.apply_batch(batch).map_err(backend)?;
    }
    Ok((records, false))
}

/// The schema-2 value of a schema-1 record, or `None` when it stays as it is.
fn upgraded(k: &[u8], v: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    if k.starts_with(keys::STREAM) {
        // A run of one: the event's length, then the event as it was.
        let mut run = Vec::with_capacity(v.len() + 3);
        encode_varint(v.len() as u64, &mut run);
        run.extend_from_slice(v);
        return Ok(Some(run));
    }
    if k.starts_with(keys::FEED) {
        let (Some(dossier), Some(seq)) = (
            v.get(..16).and_then(keys::dossier_from),
            v.get(16..).and_then(keys::u64_from),
        ) else {
            return Err(Corruption::Record {
                key: printable(k),
                reason: "not a schema-1 feed entry (dossier and seq)".into(),
            }
            .into());
        };
        return Ok(Some(keys::feed_group(&[FeedRef {
            dossier,
            first_seq: seq,
            count: 1,
        }])));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// The schema-1 store of `tests/fixtures/store-schema-1` (12 dossiers of the demo, written
    /// by the last schema-1 release), unpacked into a temporary directory.
    fn schema_1_store() -> (tempfile::TempDir, PathBuf) {
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/store-schema-1");
        let tmp = tempfile::tempdir().expect("temp dir");
        let status = Command::new("tar")
            .arg("xzf")
            .arg(fixtures.join("data.tgz"))
            .arg("-C")
            .arg(tmp.path())
            .status()
            .expect("run tar");
        assert!(status.success());
        let dir = tmp.path().join("data");
        (tmp, dir)
    }

    /// (dossier, seq, position, hash) of every event, as the schema-1 release exported them.
    fn expected_events() -> Vec<String> {
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/store-schema-1");
        std::fs::read_to_string(fixtures.join("events.txt"))
            .expect("events.txt")
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn events_of(store: &SledStore) -> Vec<String> {
        store
            .read_feed(0, usize::MAX)
            .expect("feed")
            .iter()
            .map(|r| {
                let e = r.event.envelope.as_ref().expect("envelope");
                format!(
                    "{} {} {} {}",
                    e.dossier_id,
                    e.seq,
                    e.global_position,
                    hex::encode(&r.sealed.hash)
                )
            })
            .collect()
    }

    #[test]
    fn a_schema_1_store_is_refused_then_upgraded_with_every_event_kept() {
        let (_tmp, dir) = schema_1_store();
        assert!(matches!(
            SledStore::open(&dir),
            Err(Error::Schema {
                found: 1,
                supported: SCHEMA_VERSION
            })
        ));
        let done = migrate(&dir).expect("migrate");
        assert_eq!((done.from, done.events), (1, 167));
        let store = SledStore::open(&dir).expect("open the upgraded store");
        assert_eq!(events_of(&store), expected_events());
        assert_eq!(store.dossiers().expect("dossiers").len(), 12);
        for (d, _) in store.dossiers().expect("dossiers") {
            assert!(!store.read_stream(&d).expect("stream").is_empty());
        }
        store.close().expect("close");
        drop(store);
        let again = migrate(&dir).expect("migrate again");
        assert_eq!((again.from, again.records), (SCHEMA_VERSION, 0));
    }

    /// A migration stopped after some batches (as by a crash: each batch is atomic) leaves a
    /// store that no release opens, and the next run carries on from its progress record.
    #[test]
    fn an_interrupted_migration_carries_on() {
        let (_tmp, dir) = schema_1_store();
        {
            let db = open_sled_db(&dir).expect("sled");
            let (records, finished) = upgrade_v1(&db, 50, Some(2)).expect("two batches");
            assert_eq!((records, finished), (100, false));
            assert!(db.get(MIGRATING).expect("get").is_some());
            db.flush().expect("flush");
        }
        // Neither this release nor a schema-1 one (which opens only schema 1) opens it.
        assert!(matches!(
            SledStore::open(&dir),
            Err(Error::Schema {
                found: SCHEMA_UPGRADING,
                ..
            })
        ));
        let done = migrate(&dir).expect("carry on");
        assert_eq!((done.records, done.events), (334 - 100, 167));
        let store = SledStore::open(&dir).expect("open");
        assert_eq!(events_of(&store), expected_events());
        assert!(store.verify().expect("verify").is_clean());
    }

    /// A migration that stopped after its last batch and before its verify finished is verified
    /// by the next run, not taken for one that is done.
    #[test]
    fn a_migration_stopped_before_its_verify_is_verified_by_the_next_run() {
        let (_tmp, dir) = schema_1_store();
        {
            let db = open_sled_db(&dir).expect("sled");
            let (_, finished) = upgrade_v1(&db, 1_000, None).expect("every batch");
            assert!(finished);
            assert_eq!(db.get(MIGRATING).expect("get").as_deref(), Some(&[][..]));
            db.flush().expect("flush");
        }
        let done = migrate(&dir).expect("verify");
        assert_eq!((done.from, done.records, done.events), (1, 0, 167));
        {
            let db = open_sled_db(&dir).expect("sled");
            assert_eq!(db.get(MIGRATING).expect("get"), None, "verified: done");
        }
        let again = migrate(&dir).expect("nothing left");
        assert_eq!(again.from, SCHEMA_VERSION);
    }

    #[test]
    fn what_is_not_a_schema_1_store_is_refused() {
        let tmp = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            migrate(&tmp.path().join("absent")),
            Err(Error::Invalid(_))
        ));
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        assert!(
            matches!(migrate(&empty), Err(Error::Invalid(m)) if m.contains("no lienthong store"))
        );
        assert!(
            !empty.join("db").exists(),
            "nothing is created in a directory without a store"
        );
        {
            let db = open_sled_db(&empty).expect("sled");
            db.insert(keys::META_SCHEMA, &7u32.to_be_bytes())
                .expect("insert");
            db.flush().expect("flush");
        }
        assert!(matches!(
            migrate(&empty),
            Err(Error::Schema { found: 7, .. })
        ));
    }
}
