//! Tests specific to [`SledStore`]: group commit, damage detection (by writing through sled
//! directly, as a crash or a bad disk would), schema versions and closing. The backend-neutral
//! properties are in `store_conformance.rs`.

use std::path::Path;
use std::time::Instant;

use lienthong_engine::DossierId;
use lienthong_engine::store::chain::Break;
use lienthong_engine::store::conformance::{self, fresh_prefix, next_request, open_request};
use lienthong_engine::store::{
    ChainError, Corruption, Error, EventStore, SledStore, keys, sled_store::SCHEMA_VERSION,
};

/// Writes `dossiers` dossiers of `events` events each and closes the store.
fn populate(dir: &Path, dossiers: usize, events: u64) -> Vec<DossierId> {
    let store = SledStore::open(dir).expect("open");
    let prefix = fresh_prefix();
    let ids: Vec<DossierId> = (0..dossiers)
        .map(|_| {
            let d = DossierId::new();
            conformance::append(&store, open_request(&d, &prefix, 1)).expect("open dossier");
            for seq in 1..events {
                conformance::append(&store, next_request(&d, seq, 1)).expect("append");
            }
            d
        })
        .collect();
    store.close().expect("close");
    ids
}

/// Opens the store's sled database directly (waiting for the closed store's sled threads to let
/// go of the lock, as `SledStore::open` does).
fn open_sled(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}

/// Changes one stored value directly through sled, with the store closed.
fn damage(dir: &Path, key: &[u8], change: impl FnOnce(&mut Vec<u8>)) {
    let db = open_sled(dir);
    let mut value = db.get(key).expect("get").expect("value present").to_vec();
    change(&mut value);
    db.insert(key, value).expect("insert");
    db.flush().expect("flush");
}

/// Proves group commit: 64 concurrent writers, each waiting for its append to be durable
/// before sending the next, complete with far fewer flush+fsync rounds than appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_appends_share_flushes() {
    const WRITERS: usize = 64;
    const APPENDS_EACH: u64 = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = std::sync::Arc::new(SledStore::open(dir.path()).expect("open"));
    let prefix = fresh_prefix();
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                let d = DossierId::new();
                store.append(open_request(&d, &prefix, 1)).await??;
                for seq in 1..APPENDS_EACH {
                    store.append(next_request(&d, seq, 1)).await??;
                }
                Ok::<_, anyhow_free::Error>(d)
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("appends");
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    let appends = (WRITERS as u64) * APPENDS_EACH;
    println!(
        "{appends} appends by {WRITERS} writers in {elapsed:?} ({:.0} appends/s): {stats:?}",
        appends as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stats.appends, appends);
    assert!(stats.fsyncs <= stats.groups, "{stats:?}");
    assert!(
        stats.fsyncs * 4 <= appends,
        "group commit must share flushes: {} fsyncs for {appends} appends",
        stats.fsyncs
    );
    assert!(stats.largest_group > 8, "{stats:?}");
    conformance::verify_is_clean(&*store);
}

/// Lets `?` convert both the channel and the store error in the task above.
mod anyhow_free {
    #[derive(Debug)]
    pub enum Error {
        Store(#[allow(dead_code)] lienthong_engine::store::Error),
        Dropped,
    }
    impl From<lienthong_engine::store::Error> for Error {
        fn from(e: lienthong_engine::store::Error) -> Self {
            Error::Store(e)
        }
    }
    impl From<tokio::sync::oneshot::error::RecvError> for Error {
        fn from(_: tokio::sync::oneshot::error::RecvError) -> Self {
            Error::Dropped
        }
    }
}

#[test]
fn a_flipped_byte_in_an_event_is_named_by_read_stream_and_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = populate(dir.path(), 3, 4);
    let victim = ids[1];
    // The value is a SealedEvent: byte 10 is inside `raw`.
    damage(dir.path(), &keys::stream_key(&victim, 2), |v| v[10] ^= 0x01);

    let store = SledStore::open(dir.path()).expect("reopen");
    match store.read_stream(&victim) {
        Err(Error::Corrupt(Corruption::Chain(ChainError { dossier, seq, what }))) => {
            assert_eq!((dossier, seq), (victim, 2));
            assert!(matches!(what, Break::HashMismatch { .. }), "{what:?}");
        }
        other => panic!("a damaged event must be Corrupt, got {other:?}"),
    }
    let message = store.read_stream(&victim).expect_err("corrupt").to_string();
    assert!(
        message.contains(&victim.to_string()) && message.contains("seq 2"),
        "{message}"
    );
    assert_eq!(store.read_stream(&ids[0]).expect("intact").len(), 4);

    let report = store.verify().expect("verify");
    assert!(!report.is_clean());
    assert_eq!(report.chains.breaks.len(), 1, "{report:#?}");
    assert_eq!(
        (report.chains.breaks[0].dossier, report.chains.breaks[0].seq),
        (victim, 2)
    );
    // The feed reader re-hashes each event, so it refuses the damaged one too.
    assert!(matches!(
        store.read_feed(0, 100),
        Err(Error::Corrupt(Corruption::Chain(ChainError { seq: 2, .. })))
    ));
}

#[test]
fn a_flipped_byte_in_a_head_is_named_by_read_stream_and_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = populate(dir.path(), 2, 3);
    let victim = ids[0];
    // Bytes 24..56 of a head are the last event's hash.
    damage(dir.path(), &keys::head_key(&victim), |v| v[30] ^= 0x80);

    let store = SledStore::open(dir.path()).expect("reopen");
    match store.read_stream(&victim) {
        Err(Error::Corrupt(Corruption::Head { dossier, seq, .. })) => {
            assert_eq!((dossier, seq), (victim, 3));
        }
        other => panic!("a damaged head must be Corrupt, got {other:?}"),
    }
    let report = store.verify().expect("verify");
    assert!(report.chains.is_clean(), "the chains themselves are intact");
    assert!(
        matches!(
            report.problems.as_slice(),
            [Corruption::Head { dossier, seq: 3, .. }] if *dossier == victim
        ),
        "{report:#?}"
    );
}

#[test]
fn a_missing_feed_entry_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    populate(dir.path(), 2, 3);
    {
        let db = open_sled(dir.path());
        db.remove(keys::feed_key(4)).expect("remove");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert!(matches!(
        store.read_feed(0, 100),
        Err(Error::Corrupt(Corruption::Feed { position: 4, .. }))
    ));
    let report = store.verify().expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Corruption::Feed { position: 4, .. })),
        "{report:#?}"
    );
}

/// A feed group that names a run with the wrong number of events (here: a one-event run said to
/// hold two) is refused by the feed reader and named by `verify`, at the run's position.
#[test]
fn a_feed_group_naming_the_wrong_run_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    populate(dir.path(), 2, 3);
    // Appends awaited one by one: each group is one run of one event, so the group at
    // position 2 names dossier 0's seq 2. Its last 4 bytes are the run's event count.
    damage(dir.path(), &keys::feed_key(2), |v| {
        let at = v.len() - 4;
        v[at..].copy_from_slice(&2u32.to_be_bytes());
    });
    let store = SledStore::open(dir.path()).expect("reopen");
    match store.read_feed(0, 100) {
        Err(Error::Corrupt(Corruption::Feed { position, reason })) => {
            assert_eq!(position, 2, "{reason}");
            assert!(reason.contains("names 2 events"), "{reason}");
        }
        other => panic!("a wrong feed group must be Corrupt, got {other:?}"),
    }
    let report = store.verify().expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Corruption::Feed { position: 2, .. })),
        "{report:#?}"
    );
}

#[test]
fn a_lost_last_event_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = populate(dir.path(), 1, 3);
    {
        let db = open_sled(dir.path());
        db.remove(keys::stream_key(&ids[0], 3)).expect("remove");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert!(matches!(
        store.read_stream(&ids[0]),
        Err(Error::Corrupt(Corruption::Head { seq: 3, .. }))
    ));
    assert!(!store.verify().expect("verify").is_clean());
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    populate(dir.path(), 1, 1);
    damage(dir.path(), keys::META_SCHEMA, |v| {
        *v = (SCHEMA_VERSION + 1).to_be_bytes().to_vec()
    });
    match SledStore::open(dir.path()) {
        Err(e @ Error::Schema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert!(e.to_string().contains("schema version"), "{e}");
        }
        other => panic!("must refuse another schema: {other:?}"),
    }

    let foreign = tempfile::tempdir().expect("temp dir");
    {
        let db = open_sled(foreign.path());
        db.insert(b"something", b"else").expect("insert");
        db.flush().expect("flush");
    }
    assert!(matches!(
        SledStore::open(foreign.path()),
        Err(Error::Schema { found: 0, .. })
    ));
}

#[test]
fn close_answers_queued_appends_then_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let prefix = fresh_prefix();
    let receivers: Vec<_> = (0..50)
        .map(|_| store.append(open_request(&DossierId::new(), &prefix, 1)))
        .collect();
    store.close().expect("close");
    for rx in receivers {
        rx.blocking_recv()
            .expect("answered")
            .expect("queued appends are written");
    }
    assert!(matches!(
        conformance::append(&store, open_request(&DossierId::new(), &prefix, 1)),
        Err(Error::Closed)
    ));
    assert_eq!(store.last_position().expect("reads still work"), 50);
    store.close().expect("closing twice is fine");
}

/// An acknowledged append is visible the moment its answer arrives: the sync thread publishes a
/// group (the durable position, the recent feed) before it answers, while the writer thread is
/// already applying the next group. Many writers keep groups back to back, so answers and the
/// next group's apply overlap all the time.
#[test]
fn an_acknowledged_append_is_readable_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let prefix = fresh_prefix();
    std::thread::scope(|s| {
        for _ in 0..16 {
            let (store, prefix) = (&store, &prefix);
            s.spawn(move || {
                let d = DossierId::new();
                let mut appended =
                    conformance::append(store, open_request(&d, prefix, 1)).expect("open");
                for seq in 1..=20 {
                    let last = appended.events.last().expect("events").position();
                    assert!(
                        store.last_position().expect("position") >= last,
                        "answered before the durable position reached {last}"
                    );
                    let feed = store.read_feed(last - 1, 1).expect("feed");
                    assert_eq!(feed.len(), 1, "position {last} not in the feed yet");
                    assert_eq!(
                        feed[0].sealed,
                        appended.events.last().expect("events").sealed
                    );
                    assert_eq!(store.read_stream(&d).expect("stream").len() as u64, seq);
                    assert_eq!(store.head(&d).expect("head").expect("head").seq, seq);
                    appended =
                        conformance::append(store, next_request(&d, seq, 1)).expect("append");
                }
            });
        }
    });
    assert_eq!(store.stats().appends, 16 * 21);
    conformance::verify_is_clean(&store);
}

/// Readers running while writers append never see damage or a half-written group: `verify`,
/// the feed and the streams stay consistent at every moment (reads are cut at the durable
/// position, which moves only after a group's fsync).
#[test]
fn reads_during_appends_are_consistent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let prefix = fresh_prefix();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (store, prefix) = (&store, &prefix);
                s.spawn(move || {
                    for _ in 0..5 {
                        let d = DossierId::new();
                        conformance::append(store, open_request(&d, prefix, 2)).expect("open");
                        for seq in (2..12).step_by(2) {
                            conformance::append(store, next_request(&d, seq, 2)).expect("append");
                        }
                    }
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || rounds == 0 {
                rounds += 1;
                let report = store.verify().expect("verify");
                assert!(report.is_clean(), "{report:#?}");
                let feed = store.read_feed(0, usize::MAX).expect("feed");
                for (i, r) in feed.iter().enumerate() {
                    assert_eq!(r.position(), i as u64 + 1);
                }
                for (d, _) in store.dossiers().expect("dossiers") {
                    let stream = store.read_stream(&d).expect("stream");
                    assert!(
                        !stream.is_empty() && stream.len() % 2 == 0,
                        "whole appends only"
                    );
                    let head = store.head(&d).expect("head").expect("visible head");
                    assert!(head.seq >= stream.len() as u64);
                }
            }
            rounds
        });
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let rounds = reader.join().expect("reader");
        println!("{rounds} consistent read rounds during the appends");
    });
    conformance::verify_is_clean(&store);
}

/// The feed's recent tail is answered from the writer's memory, older positions from sled: both
/// give the same events, byte for byte, in shared and copied form, on either side of the
/// window's edge and after a reopen (when everything comes from disk again).
#[test]
fn the_recent_feed_window_answers_what_the_disk_answers() {
    use lienthong_engine::store::RECENT_FEED_EVENTS;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let prefix = fresh_prefix();
    let total = RECENT_FEED_EVENTS as u64 + 300;
    let mut written = 0;
    while written < total {
        let d = DossierId::new();
        conformance::append(&store, open_request(&d, &prefix, 50)).expect("open");
        written += 50;
    }
    let read_all = |store: &SledStore| {
        let mut all = Vec::new();
        loop {
            let batch = store.read_feed(all.len() as u64, 1000).expect("feed");
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    };
    let live = read_all(&store);
    assert_eq!(live.len() as u64, written);
    let shared = store.read_feed_shared(0, usize::MAX).expect("shared feed");
    let edge = written - RECENT_FEED_EVENTS as u64 - 5;
    let across = store.read_feed(edge, 10).expect("across the window's edge");
    store.close().expect("close");
    drop(store);
    let reopened = SledStore::open(dir.path()).expect("reopen");
    let disk = read_all(&reopened);
    assert_eq!(live, disk, "memory and disk answers differ");
    assert_eq!(
        shared.iter().map(|r| (**r).clone()).collect::<Vec<_>>(),
        disk[..shared.len()]
    );
    assert_eq!(across, disk[edge as usize..edge as usize + 10]);
    conformance::verify_is_clean(&reopened);
}

/// A definition bigger than sled's inline threshold goes to sled's `blobs/` directory, which
/// sled never fsyncs itself: it must still come back after a reopen.
#[test]
fn a_large_definition_survives_reopen() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "# lịch làm việc\n".repeat(12_000);
    assert!(text.len() > 128 * 1024 && text.len() <= lienthong_engine::store::DEFINITION_BYTES_MAX);
    let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    {
        let store = SledStore::open(dir.path()).expect("open");
        let mut req = open_request(&DossierId::new(), &fresh_prefix(), 1);
        req.definitions = vec![(hash.clone(), text.clone())];
        conformance::append(&store, req).expect("append");
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .expect("blobs dir")
            .count();
        assert!(blobs > 0, "the definition must have gone to a blob file");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.definition(&hash).expect("definition"), Some(text));
    conformance::verify_is_clean(&store);
}

/// A store whose reserve is more than the file system has free refuses every append with
/// `DiskFull`, naming both figures, and writes nothing; reads go on, and the store is not
/// poisoned: the same store opened with no reserve takes the same append.
#[test]
fn below_the_free_space_reserve_appends_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = populate(dir.path(), 1, 2);
    let store = SledStore::open_with(dir.path(), u64::MAX).expect("open");
    let d = DossierId::new();
    let prefix = fresh_prefix();
    match conformance::append(&store, open_request(&d, &prefix, 1)) {
        Err(Error::DiskFull {
            free_bytes,
            min_bytes,
        }) => {
            assert_eq!(min_bytes, u64::MAX);
            assert!(free_bytes < min_bytes);
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(
        store.poisoned().is_none(),
        "a refusal is not a failed write"
    );
    assert_eq!(store.read_stream(&ids[0]).expect("reads go on").len(), 2);
    assert!(store.read_stream(&d).expect("read").is_empty());
    store.close().expect("close");
    drop(store);
    let store = SledStore::open_with(dir.path(), 0).expect("open without a reserve");
    conformance::append(&store, open_request(&d, &prefix, 1)).expect("appends with no reserve");
    assert!(store.verify().expect("verify").is_clean());
}
