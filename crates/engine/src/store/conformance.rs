//! The conformance suite every [`EventStore`] backend must pass.
//!
//! Written once, over `&dyn EventStore`, so that a second backend runs exactly the same checks
//! (`crates/engine/tests/store_conformance.rs` runs them against [`SledStore`](super::SledStore)).
//! It is test code that lives in the library so that a backend in another crate can use it too:
//! every function panics, with a message saying which property broke, when the store is wrong.
//!
//! The checks do not assume an empty store: each works with fresh dossiers and code prefixes
//! and compares positions relative to where it started, so they can share one store.
//! They block on appends (`blocking_recv`), so call them from plain threads, not from inside an
//! async runtime.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use lienthong_proto::v1::{Actor, Envelope, Event, StepCompleted, event::Body};
use sha2::{Digest, Sha256};

use super::chain::{GENESIS_HASH, hash_of};
use super::{
    AppendRequest, Appended, EVENTS_PER_APPEND_MAX, Error, EventStore, IdempotencyKey,
    IdempotencyRecord, NewDossier, Recorded, Timer, TimerKind, TimerOp,
};
use crate::ids::DossierId;

/// Concurrent writers used by the concurrency checks.
pub const WRITERS: usize = 8;

/// An event for `dossier` with envelope fields a caller fills (the store stamps the rest).
pub fn event(dossier: &DossierId, note: &str) -> Event {
    Event {
        envelope: Some(Envelope {
            dossier_id: dossier.to_string(),
            recorded_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            actor: Some(Actor {
                agency: "tu-phap".into(),
                officer: "officer-1".into(),
                channel: 4,
            }),
            command_id: format!("cmd-{note}"),
            ..Default::default()
        }),
        body: Some(Body::StepCompleted(StepCompleted {
            step_id: "register-birth".into(),
            agency: "tu-phap".into(),
            outcome: "approve".into(),
            results: Vec::new(),
            note: note.into(),
        })),
    }
}

/// A code prefix no other check uses (`T<12 hex>-261122`).
pub fn fresh_prefix() -> String {
    let id = DossierId::new().0.simple().to_string();
    format!("T{}-261122", &id[20..])
}

/// A request opening a new dossier with `n` events.
pub fn open_request(dossier: &DossierId, prefix: &str, n: usize) -> AppendRequest {
    AppendRequest {
        dossier: *dossier,
        expected_seq: 0,
        events: (0..n)
            .map(|i| event(dossier, &format!("open-{i}")))
            .collect(),
        idempotency: None,
        new_dossier: Some(NewDossier {
            code_prefix: prefix.into(),
            stripe: None,
        }),
        definitions: Vec::new(),
        timers: Vec::new(),
    }
}

/// A request appending `n` events after `expected_seq`.
pub fn next_request(dossier: &DossierId, expected_seq: u64, n: usize) -> AppendRequest {
    AppendRequest {
        dossier: *dossier,
        expected_seq,
        events: (0..n)
            .map(|i| event(dossier, &format!("after-{expected_seq}-{i}")))
            .collect(),
        idempotency: None,
        new_dossier: None,
        definitions: Vec::new(),
        timers: Vec::new(),
    }
}

/// Appends and waits for the answer.
pub fn append(store: &dyn EventStore, req: AppendRequest) -> Result<Appended, Error> {
    store
        .append(req)
        .blocking_recv()
        .unwrap_or(Err(Error::Closed))
}

fn ok(store: &dyn EventStore, req: AppendRequest, what: &str) -> Appended {
    match append(store, req) {
        Ok(a) => a,
        Err(e) => panic!("{what}: append failed: {e}"),
    }
}

/// Checks what a reader sees of one stream: seq 1..n, each `prev_hash` the previous hash, the
/// head agreeing. Returns the stream.
pub fn assert_stream(store: &dyn EventStore, dossier: &DossierId, n: u64) -> Vec<Recorded> {
    let stream = store
        .read_stream(dossier)
        .unwrap_or_else(|e| panic!("read_stream({dossier}): {e}"));
    assert_eq!(
        stream.len() as u64,
        n,
        "dossier {dossier} must have {n} events"
    );
    let mut prev = GENESIS_HASH;
    for (i, r) in stream.iter().enumerate() {
        let env = r
            .event
            .envelope
            .as_ref()
            .expect("stored events have envelopes");
        assert_eq!(env.seq, i as u64 + 1, "seq must be 1..n without gaps");
        assert_eq!(
            env.prev_hash,
            prev.to_vec(),
            "prev_hash must chain at seq {}",
            env.seq
        );
        assert_eq!(r.sealed.hash, hash_of(&r.sealed.raw).to_vec());
        prev = hash_of(&r.sealed.raw);
    }
    let head = store.head(dossier).expect("head").expect("a head");
    assert_eq!(
        (head.seq, head.hash),
        (n, prev),
        "head must be the last event"
    );
    stream
}

/// Appends keep seq 1..n with no gaps and each `prev_hash` the previous event's hash; the store
/// stamps seq, position, code and `prev_hash` whatever the caller put there.
pub fn seq_has_no_gaps(store: &dyn EventStore) {
    let d = DossierId::new();
    let prefix = fresh_prefix();
    let opened = ok(store, open_request(&d, &prefix, 3), "open");
    assert_eq!((opened.first_seq, opened.last_seq), (1, 3));
    assert_eq!(opened.code.0, format!("{prefix}-0001"));
    let mut seq = 3;
    for n in [1, 2, 5] {
        let mut req = next_request(&d, seq, n);
        // Whatever the caller puts in the stamped fields is overwritten.
        if let Some(env) = req.events[0].envelope.as_mut() {
            env.seq = 999;
            env.global_position = 999;
            env.prev_hash = vec![1; 32];
        }
        let a = ok(store, req, "append");
        assert_eq!((a.first_seq, a.last_seq), (seq + 1, seq + n as u64));
        assert_eq!(a.code, opened.code);
        seq += n as u64;
    }
    let stream = assert_stream(store, &d, seq);
    for r in &stream {
        let env = r.event.envelope.as_ref().expect("envelope");
        assert_eq!(
            env.dossier_code, opened.code.0,
            "every event carries the code"
        );
    }
    assert!(
        store
            .read_stream(&DossierId::new())
            .expect("read")
            .is_empty()
    );
    assert_eq!(store.head(&DossierId::new()).expect("head"), None);
}

/// Many writers append to one dossier with the same expected seq: exactly one wins per round,
/// the others get `Conflict` naming the actual head, and the stream never forks.
pub fn expected_seq_conflict_has_one_winner(store: &dyn EventStore) {
    let d = DossierId::new();
    ok(store, open_request(&d, &fresh_prefix(), 1), "open");
    for round in 1..=5u64 {
        let results: Vec<Result<Appended, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|_| s.spawn(|| append(store, next_request(&d, round, 1))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread"))
                .collect()
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: exactly one writer must win");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            match r {
                Error::Conflict {
                    dossier,
                    expected,
                    actual,
                } => assert_eq!((*dossier, *expected, *actual), (d, round, round + 1)),
                other => panic!("round {round}: losers must get Conflict, got {other}"),
            }
        }
    }
    assert_stream(store, &d, 6);
    match append(store, next_request(&d, 0, 1)) {
        Err(Error::Conflict { actual: 6, .. }) => {}
        other => panic!("expected seq 0 on an existing dossier must conflict: {other:?}"),
    }
}

/// Concurrent appends to many dossiers: the feed from the starting position holds every new
/// event exactly once, positions strictly increasing by one, each equal to its stream's copy.
pub fn feed_is_strictly_increasing_and_complete(store: &dyn EventStore) {
    let start = store.last_position().expect("last_position");
    let prefix = fresh_prefix();
    let per_writer = 6u64;
    let dossiers: Vec<DossierId> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let prefix = prefix.clone();
                s.spawn(move || {
                    let d = DossierId::new();
                    ok(store, open_request(&d, &prefix, 2), "open");
                    for seq in 2..2 + per_writer {
                        ok(store, next_request(&d, seq, 1), "append");
                    }
                    d
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let end = store.last_position().expect("last_position");
    let mut feed = Vec::new();
    let mut after = start;
    loop {
        let page = store.read_feed(after, 7).expect("read_feed");
        if page.is_empty() {
            break;
        }
        after = page.last().map(Recorded::position).unwrap_or(after);
        feed.extend(page);
    }
    assert_eq!(after, end, "the feed must reach last_position");
    for (i, r) in feed.iter().enumerate() {
        assert_eq!(
            r.position(),
            start + 1 + i as u64,
            "positions increase by one"
        );
    }
    let mut from_streams = BTreeMap::new();
    for d in &dossiers {
        for r in assert_stream(store, d, 2 + per_writer) {
            from_streams.insert(r.position(), r);
        }
    }
    let ours: BTreeMap<u64, Recorded> = feed
        .into_iter()
        .filter(|r| {
            r.event
                .envelope
                .as_ref()
                .is_some_and(|e| dossiers.iter().any(|d| d.to_string() == e.dossier_id))
        })
        .map(|r| (r.position(), r))
        .collect();
    assert_eq!(
        ours, from_streams,
        "the feed must hold every event of the streams once"
    );
}

/// Concurrent new dossiers under one prefix get codes `-0001` .. `-N`, each once; another
/// prefix starts again at `-0001`; codes resolve to their dossiers.
pub fn codes_are_unique_per_prefix_under_concurrency(store: &dyn EventStore) {
    let prefix = fresh_prefix();
    let per_writer = 4;
    let opened: Vec<Appended> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let prefix = prefix.clone();
                s.spawn(move || {
                    (0..per_writer)
                        .map(|_| ok(store, open_request(&DossierId::new(), &prefix, 1), "open"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let codes: BTreeSet<String> = opened.iter().map(|a| a.code.0.clone()).collect();
    let expected: BTreeSet<String> = (1..=WRITERS * per_writer)
        .map(|n| format!("{prefix}-{n:04}"))
        .collect();
    assert_eq!(codes, expected, "codes must be unique and without gaps");
    for a in &opened {
        assert_eq!(
            store.dossier_by_code(&a.code.0).expect("by code"),
            Some(a.dossier)
        );
    }
    let listed: BTreeMap<DossierId, String> = store
        .dossiers()
        .expect("dossiers")
        .into_iter()
        .map(|(d, c)| (d, c.0))
        .collect();
    for a in &opened {
        assert_eq!(
            listed.get(&a.dossier),
            Some(&a.code.0),
            "dossiers() lists each"
        );
    }
    let other = fresh_prefix();
    let a = ok(store, open_request(&DossierId::new(), &other, 1), "open");
    assert_eq!(a.code.0, format!("{other}-0001"));
    assert_eq!(
        store
            .dossier_by_code(&format!("{prefix}-9999"))
            .expect("by code"),
        None
    );
}

/// With a stripe, a new dossier's number is the next one of its partition's stripe: partitions
/// of one store interleave without ever sharing a number, and numbering stays increasing.
pub fn striped_codes_keep_partitions_apart(store: &dyn EventStore) {
    use super::CodeStripe;
    let prefix = fresh_prefix();
    let open = |partition: u32| {
        let mut req = open_request(&DossierId::new(), &prefix, 1);
        if let Some(n) = req.new_dossier.as_mut() {
            n.stripe = Some(CodeStripe {
                partition,
                count: 16,
            });
        }
        ok(store, req, "open striped").code.0
    };
    let numbers: Vec<String> = [3, 3, 5, 0, 15]
        .into_iter()
        .map(|p| open(p).rsplit('-').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        numbers,
        ["0004", "0020", "0022", "0033", "0048"],
        "partition p numbers n = p + 1 (mod 16), each above the last"
    );
    let mut bad = open_request(&DossierId::new(), &prefix, 1);
    if let Some(n) = bad.new_dossier.as_mut() {
        n.stripe = Some(CodeStripe {
            partition: 16,
            count: 16,
        });
    }
    assert!(
        matches!(append(store, bad), Err(Error::Invalid(_))),
        "a partition outside the count is refused"
    );
}

/// An idempotency key is stored with its append, atomically: a second use (even concurrent)
/// gets `DuplicateKey` with the first use's record and writes nothing at all.
pub fn idempotency_is_stored_atomically(store: &dyn EventStore) {
    let key = |k: &str, fp: u8| IdempotencyKey {
        actor: "tu-phap".into(),
        key: k.into(),
        fingerprint: [fp; 32],
    };
    let d = DossierId::new();
    let prefix = fresh_prefix();
    let k1 = format!("submit-{d}");
    let mut req = open_request(&d, &prefix, 2);
    req.idempotency = Some(key(&k1, 7));
    ok(store, req, "open with key");
    let expected = IdempotencyRecord {
        fingerprint: [7; 32],
        dossier: d,
        first_seq: 1,
        last_seq: 2,
    };
    assert_eq!(
        store.idempotency("tu-phap", &k1).expect("idem"),
        Some(expected.clone())
    );
    assert_eq!(
        store.idempotency("cong-an", &k1).expect("idem"),
        None,
        "keys are per actor"
    );

    // Reusing the key for another new dossier: nothing of it may be written.
    let before = store.last_position().expect("last_position");
    let d2 = DossierId::new();
    let mut req = open_request(&d2, &prefix, 1);
    req.idempotency = Some(key(&k1, 9));
    match append(store, req) {
        Err(Error::DuplicateKey { record }) => assert_eq!(record, expected),
        other => panic!("a reused key must be DuplicateKey: {other:?}"),
    }
    assert_eq!(
        store.last_position().expect("last_position"),
        before,
        "nothing appended"
    );
    assert!(store.read_stream(&d2).expect("read").is_empty());
    let next = ok(store, open_request(&DossierId::new(), &prefix, 1), "open");
    assert_eq!(
        next.code.0,
        format!("{prefix}-0002"),
        "the failed append took no code"
    );

    // Concurrent first uses of one key on one dossier: one wins, the rest are duplicates.
    let k2 = format!("complete-{d}");
    let results: Vec<Result<Appended, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let k2 = k2.clone();
                s.spawn(move || {
                    let mut req = next_request(&d, 2, 1);
                    req.idempotency = Some(key(&k2, i as u8));
                    append(store, req)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "one first use wins"
    );
    let record = store
        .idempotency("tu-phap", &k2)
        .expect("idem")
        .expect("the winner's record");
    assert_eq!(
        (record.dossier, record.first_seq, record.last_seq),
        (d, 3, 3)
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        match r {
            Error::DuplicateKey { record: dup } => assert_eq!(dup, &record),
            // A writer that lost on the key after another won on the seq may see either.
            Error::Conflict { .. } => {}
            other => panic!("losers must get DuplicateKey or Conflict, got {other}"),
        }
    }
    assert_stream(store, &d, 3);
}

/// Definitions are kept by their SHA-256; putting one again is harmless; a wrong hash is
/// refused and fails the whole append.
pub fn definitions_are_content_addressed(store: &dyn EventStore) {
    let text = format!("[procedure]\ncode = \"2.000986\"\n# {}\n", DossierId::new());
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    assert_eq!(store.definition(&hash).expect("definition"), None);
    let prefix = fresh_prefix();
    for _ in 0..2 {
        let mut req = open_request(&DossierId::new(), &prefix, 1);
        req.definitions = vec![(hash.clone(), text.clone()), (hash.clone(), text.clone())];
        ok(store, req, "open with definition");
    }
    assert_eq!(
        store.definition(&hash).expect("definition"),
        Some(text.clone())
    );
    let d = DossierId::new();
    let mut req = open_request(&d, &prefix, 1);
    req.definitions = vec![(hash.clone(), format!("{text} changed"))];
    match append(store, req) {
        Err(Error::Invalid(_)) => {}
        other => panic!("a definition under a wrong hash must be Invalid: {other:?}"),
    }
    assert!(
        store.read_stream(&d).expect("read").is_empty(),
        "nothing written"
    );
    assert_eq!(store.definition(&hash).expect("definition"), Some(text));
}

/// Malformed or oversized requests are refused and write nothing.
pub fn invalid_requests_write_nothing(store: &dyn EventStore) {
    let before = store.last_position().expect("last_position");
    let d = DossierId::new();
    let prefix = fresh_prefix();
    let mut cases: Vec<(&str, AppendRequest)> = Vec::new();
    cases.push(("no events", open_request(&d, &prefix, 0)));
    cases.push((
        "too many events",
        open_request(&d, &prefix, EVENTS_PER_APPEND_MAX + 1),
    ));
    let mut big = open_request(&d, &prefix, 1);
    if let Some(Body::StepCompleted(s)) = big.events[0].body.as_mut() {
        s.note = "x".repeat(super::EVENT_BYTES_MAX + 1);
    }
    cases.push(("oversized event", big));
    let mut other = open_request(&d, &prefix, 2);
    other.events[1] = event(&DossierId::new(), "stray");
    cases.push(("event of another dossier", other));
    let mut no_env = open_request(&d, &prefix, 1);
    no_env.events[0].envelope = None;
    cases.push(("event without envelope", no_env));
    let mut no_code = open_request(&d, &prefix, 1);
    no_code.new_dossier = None;
    cases.push(("new dossier without a code prefix", no_code));
    let mut bad_prefix = open_request(&d, &prefix, 1);
    bad_prefix.new_dossier = Some(NewDossier {
        stripe: None,
        code_prefix: "has space".into(),
    });
    cases.push(("bad code prefix", bad_prefix));
    let mut bad_key = open_request(&d, &prefix, 1);
    bad_key.idempotency = Some(IdempotencyKey {
        actor: "tu-phap".into(),
        key: "a\0b".into(),
        fingerprint: [0; 32],
    });
    cases.push(("NUL in idempotency key", bad_key));
    for (what, req) in cases {
        match append(store, req) {
            Err(Error::Invalid(_) | Error::Limit { .. }) => {}
            other => panic!("{what}: must be Invalid or Limit, got {other:?}"),
        }
    }
    assert_eq!(
        store.last_position().expect("last_position"),
        before,
        "nothing appended"
    );
    assert!(store.read_stream(&d).expect("read").is_empty());
    let a = ok(store, open_request(&d, &prefix, 1), "open");
    assert_eq!(
        a.code.0,
        format!("{prefix}-0001"),
        "refused requests took no code"
    );
}

/// `verify` finds nothing wrong in a store that only this suite wrote to.
pub fn verify_is_clean(store: &dyn EventStore) {
    let report = store.verify().expect("verify");
    assert!(report.is_clean(), "verify must be clean: {report:#?}");
    assert_eq!(
        report.last_position,
        store.last_position().expect("last_position")
    );
    assert_eq!(report.feed_entries, report.last_position);
    assert!(report.chains.events >= report.last_position);
}

/// Everything a reader can see, for comparing a store before and after reopening.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// Every dossier with its code and stream.
    pub streams: BTreeMap<DossierId, (String, Vec<Recorded>)>,
    /// The whole feed.
    pub feed: Vec<Recorded>,
    /// The last position.
    pub last_position: u64,
}

/// Reads everything a reader can see.
pub fn snapshot(store: &dyn EventStore) -> Snapshot {
    let mut streams = BTreeMap::new();
    for (d, code) in store.dossiers().expect("dossiers") {
        streams.insert(d, (code.0, store.read_stream(&d).expect("read_stream")));
    }
    let mut feed = Vec::new();
    loop {
        let after = feed.last().map_or(0, Recorded::position);
        let page = store
            .read_feed(after, super::FEED_READ_MAX)
            .expect("read_feed");
        if page.is_empty() {
            break;
        }
        feed.extend(page);
    }
    Snapshot {
        streams,
        feed,
        last_position: store.last_position().expect("last_position"),
    }
}

/// Closing and reopening keeps every event, head, code, counter, key and definition, and
/// appends continue where they stopped. `open` must return the same store each time; the
/// previous instance is dropped before the next `open`.
pub fn reopen_keeps_everything(open: &dyn Fn() -> Box<dyn EventStore>) {
    let store = open();
    let prefix = fresh_prefix();
    let d = DossierId::new();
    let text = format!("calendar {}", DossierId::new());
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let mut req = open_request(&d, &prefix, 2);
    req.idempotency = Some(IdempotencyKey {
        actor: "bhxh".into(),
        key: format!("k-{d}"),
        fingerprint: [3; 32],
    });
    req.definitions = vec![(hash.clone(), text.clone())];
    ok(&*store, req, "open");
    ok(&*store, next_request(&d, 2, 3), "append");
    let before = snapshot(&*store);
    let record = store.idempotency("bhxh", &format!("k-{d}")).expect("idem");
    assert!(record.is_some());
    drop(store);

    let store = open();
    let after = snapshot(&*store);
    assert_eq!(before, after, "a reopened store must read the same");
    assert_eq!(
        store.idempotency("bhxh", &format!("k-{d}")).expect("idem"),
        record
    );
    assert_eq!(store.definition(&hash).expect("definition"), Some(text));
    verify_is_clean(&*store);
    let a = ok(&*store, next_request(&d, 5, 1), "append after reopen");
    assert_eq!(
        a.events[0].position(),
        before.last_position + 1,
        "positions continue"
    );
    let b = ok(
        &*store,
        open_request(&DossierId::new(), &prefix, 1),
        "open after reopen",
    );
    assert_eq!(
        b.code.0,
        format!("{prefix}-0002"),
        "the daily counter continues"
    );
    assert_stream(&*store, &d, 6);
}

/// A timer of `dossier` firing at second `at_s` (a warning with a 1wd lead, or a miss).
pub fn timer(dossier: &DossierId, at_s: i64, kind: TimerKind, step: Option<&str>) -> Timer {
    let at = DateTime::from_timestamp(at_s, 0).expect("a valid instant");
    Timer {
        at,
        dossier: *dossier,
        kind,
        step: step.map(str::to_string),
        due: at + chrono::TimeDelta::milliseconds(1_500),
        lead: (kind == TimerKind::Warning).then_some(lienthong_calendar::Duration::WorkingDays(1)),
    }
}

/// The due timers of `dossier` only (other checks may share the store).
pub fn timers_of(store: &dyn EventStore, dossier: &DossierId, until_s: i64) -> Vec<Timer> {
    let until = DateTime::from_timestamp(until_s, 0).expect("a valid instant");
    store
        .due_timers(until, super::TIMERS_READ_MAX)
        .expect("due_timers")
        .into_iter()
        .filter(|t| t.dossier == *dossier)
        .collect()
}

/// Changes timers without events and waits for the answer.
pub fn update(store: &dyn EventStore, ops: Vec<TimerOp>) -> Result<(), Error> {
    store
        .update_timers(ops)
        .blocking_recv()
        .unwrap_or(Err(Error::Closed))
}

/// Clears timers without events and waits for the answer.
pub fn clear(store: &dyn EventStore, timers: Vec<Timer>) -> Result<(), Error> {
    update(store, timers.into_iter().map(TimerOp::Clear).collect())
}

/// Timers are set and cleared in the same atomic append as the events; `due_timers` lists them
/// by firing time up to `until` (inclusive), within `limit`; a refused append sets none; a
/// change alone clears and sets them without an event.
pub fn timers_are_set_and_cleared_with_the_events(store: &dyn EventStore) {
    let d = DossierId::new();
    let t0 = 1_790_000_000;
    let warn = timer(&d, t0 + 100, TimerKind::Warning, Some("register-birth"));
    let miss = timer(&d, t0 + 200, TimerKind::Missed, Some("register-birth"));
    let appt = timer(&d, t0 + 300, TimerKind::Missed, None);
    let mut req = open_request(&d, &fresh_prefix(), 1);
    req.timers = vec![
        TimerOp::Set(appt.clone()),
        TimerOp::Set(miss.clone()),
        TimerOp::Set(warn.clone()),
    ];
    ok(store, req, "open with timers");
    assert_eq!(
        timers_of(store, &d, t0 + 1_000),
        [warn.clone(), miss.clone(), appt.clone()],
        "earliest first, exactly as set"
    );
    assert_eq!(timers_of(store, &d, t0 + 200), [warn.clone(), miss.clone()]);
    assert_eq!(timers_of(store, &d, t0 + 99), Vec::<Timer>::new());
    let first = store
        .due_timers(DateTime::from_timestamp(t0 + 1_000, 0).expect("valid"), 1)
        .expect("due_timers");
    assert_eq!(first.len(), 1, "the limit holds");

    // A refused append (wrong expected seq) sets and clears nothing.
    let later = timer(&d, t0 + 400, TimerKind::Missed, Some("return-result"));
    let mut bad = next_request(&d, 7, 1);
    bad.timers = vec![TimerOp::Clear(warn.clone()), TimerOp::Set(later.clone())];
    assert!(matches!(append(store, bad), Err(Error::Conflict { .. })));
    assert_eq!(timers_of(store, &d, t0 + 1_000).len(), 3);

    // An accepted one clears and sets with its events; clearing and setting one timer keeps it.
    let mut next = next_request(&d, 1, 1);
    next.timers = vec![
        TimerOp::Clear(warn.clone()),
        TimerOp::Set(later.clone()),
        TimerOp::Clear(appt.clone()),
        TimerOp::Set(appt.clone()),
    ];
    ok(store, next, "append with timers");
    assert_eq!(
        timers_of(store, &d, t0 + 1_000),
        [miss.clone(), appt.clone(), later.clone()]
    );

    // Timers of another dossier in an append are refused.
    let mut stray = next_request(&d, 2, 1);
    stray.timers = vec![TimerOp::Set(timer(
        &DossierId::new(),
        t0,
        TimerKind::Missed,
        None,
    ))];
    assert!(matches!(append(store, stray), Err(Error::Invalid(_))));
    // So is a firing time that is not a whole second.
    let mut odd = next_request(&d, 2, 1);
    let mut t = miss.clone();
    t.at += chrono::TimeDelta::milliseconds(5);
    odd.timers = vec![TimerOp::Set(t)];
    assert!(matches!(append(store, odd), Err(Error::Invalid(_))));

    // A clear alone (a stale timer) removes without appending; clearing twice is fine.
    let position = store.last_position().expect("last_position");
    clear(store, vec![miss.clone(), later.clone()]).expect("clear");
    clear(store, vec![miss.clone()]).expect("clear again");
    assert_eq!(
        timers_of(store, &d, t0 + 1_000),
        std::slice::from_ref(&appt)
    );
    // Another dossier appends after `d`'s last event: a timer set alone for `d` is stamped with
    // `d`'s own last position, so `verify` still finds it within `d`'s stream.
    let other = DossierId::new();
    ok(
        store,
        open_request(&other, &fresh_prefix(), 2),
        "another dossier",
    );
    // A change alone clears before it sets: the stale timer goes, the next one comes.
    update(
        store,
        vec![TimerOp::Set(later.clone()), TimerOp::Clear(appt.clone())],
    )
    .expect("clear and set");
    assert_eq!(
        timers_of(store, &d, t0 + 1_000),
        std::slice::from_ref(&later)
    );
    update(
        store,
        vec![TimerOp::Clear(later.clone()), TimerOp::Set(later.clone())],
    )
    .expect("clear and set one timer");
    assert_eq!(
        timers_of(store, &d, t0 + 1_000),
        std::slice::from_ref(&later)
    );
    verify_is_clean(store);
    // A timer for a dossier that does not exist is refused.
    assert!(matches!(
        update(
            store,
            vec![TimerOp::Set(timer(
                &DossierId::new(),
                t0,
                TimerKind::Missed,
                None
            ))]
        ),
        Err(Error::Invalid(_))
    ));
    // The change is checked like an append's.
    let mut odd = later.clone();
    odd.at += chrono::TimeDelta::milliseconds(5);
    assert!(matches!(
        update(store, vec![TimerOp::Set(odd)]),
        Err(Error::Invalid(_))
    ));
    clear(store, vec![later]).expect("clear");
    assert_eq!(timers_of(store, &d, t0 + 1_000), []);
    assert_eq!(
        store.last_position().expect("last_position"),
        position + 2,
        "a change alone appends no event (the other dossier appended two)"
    );
    assert_stream(store, &d, 2);
}

/// Timers survive closing and reopening the store, with their leads and exact dues.
pub fn timers_survive_reopen(open: &dyn Fn() -> Box<dyn EventStore>) {
    let store = open();
    let d = DossierId::new();
    let t0 = 1_790_000_000;
    let warn = timer(&d, t0 + 10, TimerKind::Warning, None);
    let miss = timer(&d, t0 + 20, TimerKind::Missed, Some("issue-health-card"));
    let mut req = open_request(&d, &fresh_prefix(), 1);
    req.timers = vec![TimerOp::Set(warn.clone()), TimerOp::Set(miss.clone())];
    ok(&*store, req, "open with timers");
    drop(store);

    let store = open();
    assert_eq!(timers_of(&*store, &d, t0 + 20), [warn.clone(), miss]);
    verify_is_clean(&*store);
    clear(&*store, vec![warn]).expect("clear after reopen");
    assert_eq!(timers_of(&*store, &d, t0 + 20).len(), 1);
}
