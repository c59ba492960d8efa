//! Crash test: every acknowledged append survives a SIGKILL, and nothing is half-written.
//!
//! How: the test re-executes its own binary as a child running `crash_child_writer` (selected
//! with `--exact`, told to write by an environment variable). The child appends from many
//! threads (new dossiers, and appends to existing ones that race each other on the expected
//! seq) and prints one line per append the store ACKNOWLEDGED (`ACK dossier seq hash key`),
//! flushed. The parent reads those lines and SIGKILLs the child (`Child::kill`) after a random
//! number of acknowledgements, or (one round in five) after a random few milliseconds, often
//! before the first. Then it reopens the store and checks
//! that every append ever acknowledged (in this and every earlier round) is there with the same
//! hash (which covers the content and the whole chain before it), that its idempotency record
//! is there, and that `verify` is clean: every chain, no gaps, heads, feed and codes agree.
//! Same data directory for all rounds, so recovery runs on a store that has crashed before.
//!
//! Bounded: [`ROUNDS`] rounds (raise with `LIENTHONG_CRASH_ROUNDS` for a long run), each child
//! killed after at most [`ROUND_SECS_MAX`]. Deterministic enough: the kill points come from a
//! seeded generator (`LIENTHONG_CRASH_SEED`); the thread interleavings do not.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lienthong_engine::DossierId;
use lienthong_engine::store::conformance::{append, event, fresh_prefix, open_request};
use lienthong_engine::store::{AppendRequest, Error, EventStore, IdempotencyKey, SledStore};

/// Kill rounds in a normal test run.
const ROUNDS: u32 = 20;
/// Longest a child may run in one round before it is killed anyway.
const ROUND_SECS_MAX: u64 = 3;
/// Acknowledged appends after which the child is killed, at most.
const KILL_AFTER_ACKS_MAX: u64 = 400;
/// Latest kill, in milliseconds after spawning, in the rounds killed by time.
const EARLY_KILL_MS_MAX: u64 = 300;
/// Writer threads in the child.
const CHILD_THREADS: usize = 12;
/// A child never runs longer than this, even if nobody kills it.
const CHILD_SECS_MAX: u64 = 30;
/// Tells the child test to act as the writer, and where.
const CHILD_ENV: &str = "LIENTHONG_CRASH_CHILD_DIR";
/// The actor of every idempotency key the child uses.
const ACTOR: &str = "crash-test";

/// SIGKILL's number (9 on every Unix), which `Child::kill` sends.
const SIGKILL: i32 = 9;

/// splitmix64: a small seeded generator for the kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One acknowledged append as the child reported it.
#[derive(Clone, Debug)]
struct Ack {
    dossier: DossierId,
    last_seq: u64,
    hash: String,
    key: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        dossier: parts.next()?.parse().ok()?,
        last_seq: parts.next()?.parse().ok()?,
        hash: parts.next()?.to_string(),
        key: parts.next()?.to_string(),
    })
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let rounds = env_u64("LIENTHONG_CRASH_ROUNDS", u64::from(ROUNDS));
    let seed = env_u64("LIENTHONG_CRASH_SEED", 0x1157_7409);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir for child logs");
    let exe = std::env::current_exe().expect("own test binary");
    // Every append acknowledged so far: (dossier, seq) -> ack.
    let mut acked: BTreeMap<(DossierId, u64), Ack> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        // One round in five is killed by time, early: during open and recovery or the first
        // appends. The others after a number of acknowledgements.
        let (kill_after, deadline) = if rng.next().is_multiple_of(5) {
            (
                u64::MAX,
                Duration::from_millis(rng.next() % EARLY_KILL_MS_MAX),
            )
        } else {
            let acks = rng.next() % (KILL_AFTER_ACKS_MAX + 1);
            (acks, Duration::from_secs(ROUND_SECS_MAX))
        };
        let stderr_path = logs.path().join(format!("child-{round}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("LIENTHONG_CRASH_CHILD_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_path).expect("child stderr file"),
            ))
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut by the kill has no newline: it was never fully printed.
                    Ok(_) if line.last() == Some(&b'\n') => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Ok(_) => break,
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + deadline;
        let mut acks = 0;
        while acks < kill_after && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) => {
                    if line.starts_with(b"ACK ") {
                        acks += 1;
                    }
                    lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        if status.signal() != Some(SIGKILL) {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "round {round}: the child ended by itself ({status}) instead of being killed:\n{stderr}"
            );
        }
        reader.join().expect("reader thread");
        lines.extend(rx.try_iter());
        let mut round_acks = 0;
        for line in &lines {
            let text = String::from_utf8_lossy(line);
            if let Some(ack) = parse_ack(text.trim_end()) {
                round_acks += 1;
                acked.insert((ack.dossier, ack.last_seq), ack);
            }
        }
        check_after_crash(dir.path(), &acked, round);
        println!(
            "round {round}: killed after {round_acks} acks ({status}); {} acked in total, all present",
            acked.len()
        );
    }
    println!(
        "{rounds} SIGKILL rounds, {} acknowledged appends checked, in {:?}",
        acked.len(),
        started.elapsed()
    );
}

/// Reopens the store after a kill and checks every acknowledged append and every invariant.
fn check_after_crash(dir: &Path, acked: &BTreeMap<(DossierId, u64), Ack>, round: u64) {
    let store = SledStore::open(dir).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
    let report = store
        .verify()
        .unwrap_or_else(|e| panic!("round {round}: verify: {e}"));
    assert!(
        report.is_clean(),
        "round {round}: verify after SIGKILL: {report:#?}"
    );
    assert_eq!(report.feed_entries, report.last_position);
    let mut streams = HashMap::new();
    for ((dossier, seq), ack) in acked {
        let stream = streams.entry(*dossier).or_insert_with(|| {
            store
                .read_stream(dossier)
                .unwrap_or_else(|e| panic!("round {round}: read {dossier}: {e}"))
        });
        let Some(r) = stream.get(*seq as usize - 1) else {
            panic!(
                "round {round}: acknowledged dossier {dossier} seq {seq} is lost (stream has {})",
                stream.len()
            );
        };
        assert_eq!(
            hex::encode(&r.sealed.hash),
            ack.hash,
            "round {round}: dossier {dossier} seq {seq} changed after the crash"
        );
        let record = store
            .idempotency(ACTOR, &ack.key)
            .expect("idempotency")
            .unwrap_or_else(|| panic!("round {round}: key {} of an acked append is lost", ack.key));
        assert_eq!((record.dossier, record.last_seq), (*dossier, *seq));
    }
    store.close().expect("close");
}

/// The writer child. Does nothing unless started by `acknowledged_appends_survive_sigkill`.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let round = std::env::var("LIENTHONG_CRASH_CHILD_ROUND").unwrap_or_default();
    let store = SledStore::open(Path::new(&dir)).expect("child: open store");
    let known = parking_lot::Mutex::new(
        store
            .dossiers()
            .expect("child: dossiers")
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
    );
    let stop = Instant::now() + Duration::from_secs(CHILD_SECS_MAX);
    let prefix = fresh_prefix();
    std::thread::scope(|s| {
        for t in 0..CHILD_THREADS {
            let (store, known, prefix, round) = (&store, &known, &prefix, &round);
            s.spawn(move || {
                let mut rng = Rng(t as u64 * 7919 + 1);
                let mut n = 0u64;
                while Instant::now() < stop {
                    n += 1;
                    let key = format!("r{round}-t{t}-n{n}");
                    let pick = {
                        let known = known.lock();
                        if known.is_empty() || rng.next().is_multiple_of(4) {
                            None
                        } else {
                            Some(known[(rng.next() % known.len() as u64) as usize])
                        }
                    };
                    let events = 1 + (rng.next() % 3) as usize;
                    let mut req = match pick {
                        None => open_request(&DossierId::new(), prefix, events),
                        Some(d) => {
                            let seq = store.head(&d).expect("child: head").map_or(0, |h| h.seq);
                            AppendRequest {
                                dossier: d,
                                expected_seq: seq,
                                events: (0..events)
                                    .map(|i| event(&d, &format!("{key}-{i}")))
                                    .collect(),
                                idempotency: None,
                                new_dossier: None,
                                definitions: Vec::new(),
                                timers: Vec::new(),
                            }
                        }
                    };
                    req.idempotency = Some(IdempotencyKey {
                        actor: ACTOR.into(),
                        key: key.clone(),
                        fingerprint: [t as u8; 32],
                    });
                    let dossier = req.dossier;
                    match append(store, req) {
                        Ok(a) => {
                            if pick.is_none() {
                                known.lock().push(dossier);
                            }
                            let last = a.events.last().expect("appended events");
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(
                                out,
                                "ACK {} {} {} {key}",
                                a.dossier,
                                a.last_seq,
                                hex::encode(&last.sealed.hash)
                            );
                            let _ = out.flush();
                        }
                        Err(Error::Conflict { .. } | Error::Overloaded { .. }) => {}
                        Err(e) => panic!("child: append failed: {e}"),
                    }
                }
            });
        }
    });
}
