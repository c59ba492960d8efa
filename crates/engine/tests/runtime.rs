//! The embedded runtime against a real sled store and the real shipped workflows.
//!
//! Proves what callers rely on: a retried command (same actor, same idempotency key) returns the
//! first answer and appends nothing; the same key with another command is refused; concurrent
//! commands on one dossier never fork its stream (exactly one of two racing completions wins);
//! a dossier stays pinned to the workflow definition it started with even after the file changes
//! and the engine restarts; everything acknowledged is there after a reopen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{Applicant, Command, CompleteStep, Document, Status, Submit};
use lienthong_engine::runtime::{Clock, Engine, Error, Request};
use lienthong_engine::store::{EventStore, SledStore};
use lienthong_proto::v1::{Actor, Channel};
use lienthong_workflow::{AttrValue, Catalog, StepId};
use parking_lot::Mutex;

/// A clock the test sets.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

fn workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

fn tuesday_9am() -> DateTime<Utc> {
    chrono_tz::Asia::Ho_Chi_Minh
        .with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn engine_on(store: Arc<SledStore>, catalog: Catalog) -> Engine {
    Engine::new(
        store,
        Arc::new(catalog),
        Arc::new(TestClock(Mutex::new(tuesday_9am()))),
    )
}

fn actor(agency: &str) -> Actor {
    Actor {
        agency: agency.into(),
        officer: "test".into(),
        channel: Channel::System as i32,
    }
}

fn birth(age_months: i64) -> Command {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        AttrValue::Integer(age_months),
    );
    let born = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    attributes.insert("child.birth_date".to_string(), AttrValue::Date(born));
    Command::Submit(Submit {
        procedure_code: "2.000986".into(),
        channel: Channel::InPerson,
        applicant: Applicant {
            full_name: "Trần Thị Hà".into(),
            id_number: "001190000001".into(),
            ..Default::default()
        },
        attributes,
        documents: vec![Document {
            kind: "to-khai-khai-sinh".into(),
            uri: "dms://t/1".into(),
            sha256: "00".repeat(32),
        }],
    })
}

fn submit_req(key: &str, cmd: Command) -> Request {
    Request {
        dossier: None,
        actor: actor("ubnd-xa"),
        idempotency_key: key.into(),
        command: cmd,
    }
}

fn complete(dossier: DossierId, agency: &str, step: &str, key: &str) -> Request {
    Request {
        dossier: Some(dossier),
        actor: actor(agency),
        idempotency_key: key.into(),
        command: Command::CompleteStep(CompleteStep {
            step: StepId(step.into()),
            outcome: "approve".into(),
            results: vec![],
            note: String::new(),
        }),
    }
}

#[tokio::test]
async fn a_retried_command_returns_the_first_answer_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let engine = engine_on(store.clone(), Catalog::load(&workflows()).unwrap());

    let first = engine.execute(submit_req("k-1", birth(3))).await.unwrap();
    assert!(!first.replayed);
    let again = engine.execute(submit_req("k-1", birth(3))).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.dossier, first.dossier);
    assert_eq!(again.code, first.code);
    assert_eq!(
        again
            .events
            .iter()
            .map(|r| r.sealed.hash.clone())
            .collect::<Vec<_>>(),
        first
            .events
            .iter()
            .map(|r| r.sealed.hash.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.dossiers().unwrap().len(),
        1,
        "the retry created no dossier"
    );

    // The same key with another command is refused, and writes nothing.
    let before = store.last_position().unwrap();
    let err = engine
        .execute(submit_req("k-1", birth(90)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    assert_eq!(store.last_position().unwrap(), before);

    // Keys are per actor: another agency may use the same key text.
    let d = first.dossier;
    let done = engine
        .execute(complete(d, "tu-phap", "register-birth", "k-1"))
        .await
        .unwrap();
    assert!(!done.replayed);
    let retry = engine
        .execute(complete(d, "tu-phap", "register-birth", "k-1"))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.events.len(), done.events.len());

    // On an existing dossier too, where the record is consulted only once a decision fails,
    // decides nothing, or the store refuses the key: the same key with another command is
    // refused and writes nothing.
    let before = store.last_position().unwrap();
    for step in ["register-birth", "return-result", "no-such-step"] {
        let reused = engine.execute(complete(d, "tu-phap", step, "k-1")).await;
        match (step, reused) {
            ("register-birth", Ok(o)) => assert!(o.replayed, "the same command is a retry"),
            (_, Err(Error::KeyReused { .. })) => {}
            (step, other) => panic!("{step}: the key is taken, got {other:?}"),
        }
    }
    assert_eq!(store.last_position().unwrap(), before);
}

#[tokio::test]
async fn racing_commands_on_one_dossier_never_fork_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let engine = engine_on(store.clone(), Catalog::load(&workflows()).unwrap());
    let d = engine
        .execute(submit_req("s", birth(3)))
        .await
        .unwrap()
        .dossier;

    // 16 officers complete the same step at once with different keys: one wins, the rest are
    // told the step is no longer open.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .execute(complete(
                    d,
                    "tu-phap",
                    "register-birth",
                    &format!("race-{i}"),
                ))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Rejected(r)) => assert_eq!(r.code(), "step-not-open", "{r}"),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won, 1);
    let stream = store.read_stream(&d).unwrap();
    let completed = stream
        .iter()
        .filter(|r| lienthong_engine::view::kind(&r.event) == "step-completed")
        .count();
    assert_eq!(completed, 1);
    for (i, r) in stream.iter().enumerate() {
        assert_eq!(r.seq(), i as u64 + 1);
    }
}

#[tokio::test]
async fn a_dossier_stays_pinned_to_its_definition_across_edits_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = Catalog::load(&workflows()).unwrap();
    let old_hash = original.procedure("2.000986").unwrap().hash.clone();

    let (d, code) = {
        let store = Arc::new(SledStore::open(&data).unwrap());
        let engine = engine_on(store.clone(), original);
        let out = engine.execute(submit_req("p", birth(3))).await.unwrap();
        store.close().unwrap();
        (out.dossier, out.code)
    };

    // A designer edits the birth workflow: the police step now belongs to another agency.
    let edited_dir = dir.path().join("workflows");
    copy_dir(&workflows(), &edited_dir);
    let path = edited_dir.join("procedures/birth.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("agency = \"cong-an\"", "agency = \"tu-phap\"", 1);
    assert_ne!(text, edited, "the birth workflow names cong-an");
    std::fs::write(&path, edited).unwrap();
    let catalog = Catalog::load(&edited_dir).unwrap();
    let new_hash = catalog.procedure("2.000986").unwrap().hash.clone();
    assert_ne!(old_hash, new_hash);

    // After a restart on the edited files, the running dossier still follows its own version:
    // the residence step opens for the police.
    let store = Arc::new(SledStore::open(&data).unwrap());
    let engine = engine_on(store.clone(), catalog);
    let state = engine.state(d).await.unwrap();
    assert_eq!(state.code, code.0);
    assert_eq!(state.definition_hash, old_hash);
    let out = engine
        .execute(complete(d, "tu-phap", "register-birth", "c"))
        .await
        .unwrap();
    assert_eq!(out.state.steps["register-residence"].agency, "cong-an");

    // A new dossier uses the edited version.
    let fresh = engine.execute(submit_req("p2", birth(3))).await.unwrap();
    assert_eq!(fresh.state.definition_hash, new_hash);
    let fresh = engine
        .execute(complete(fresh.dossier, "tu-phap", "register-birth", "c2"))
        .await
        .unwrap();
    assert_eq!(fresh.state.steps["register-residence"].agency, "tu-phap");
}

#[tokio::test]
async fn everything_acknowledged_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let engine = engine_on(store.clone(), Catalog::load(&workflows()).unwrap());
        for i in 0..20 {
            let out = engine
                .execute(submit_req(&format!("r{i}"), birth(i * 5)))
                .await
                .unwrap();
            let out = engine
                .execute(complete(
                    out.dossier,
                    "tu-phap",
                    "register-birth",
                    &format!("c{i}"),
                ))
                .await
                .unwrap();
            acked.push(out.state);
        }
        store.close().unwrap();
    }
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let engine = engine_on(store.clone(), Catalog::load(&workflows()).unwrap());
    for s in acked {
        let id: DossierId = s.id.parse().unwrap();
        let now = engine.state(id).await.unwrap();
        assert_eq!(now, *s);
        assert_eq!(now.status(), Status::Processing);
    }
    assert!(store.verify().unwrap().is_clean());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_procedure_may_run_on_an_office_view_of_its_calendar() {
    // The shipped vn family has an office override `ha-noi` (08:00-12:00, 13:00-17:00). A
    // procedure naming `vn@ha-noi` starts its clock at 08:00, not 07:30, and records the view's
    // name and hash so readers use the same hours.
    let dir = tempfile::tempdir().unwrap();
    let wf_dir = dir.path().join("workflows");
    copy_dir(&workflows(), &wf_dir);
    let path = wf_dir.join("procedures/birth.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("calendar = \"vn\"", "calendar = \"vn@ha-noi\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    let catalog = Catalog::load(&wf_dir).unwrap();
    let view_hash = catalog.calendar("vn@ha-noi").unwrap().hash().to_string();
    assert_ne!(view_hash, catalog.calendar("vn").unwrap().hash());

    let store = Arc::new(SledStore::open(&dir.path().join("data")).unwrap());
    let early = chrono_tz::Asia::Ho_Chi_Minh
        .with_ymd_and_hms(2026, 11, 24, 7, 40, 0)
        .unwrap()
        .with_timezone(&Utc);
    let engine = Engine::new(
        store,
        Arc::new(catalog),
        Arc::new(TestClock(Mutex::new(early))),
    );
    let out = engine.execute(submit_req("o", birth(3))).await.unwrap();
    let start = out.state.clock_started_at.unwrap();
    assert_eq!(
        start
            .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
            .format("%H:%M")
            .to_string(),
        "08:00"
    );
    assert_eq!(out.state.calendar_name, "vn@ha-noi");
    assert_eq!(out.state.calendar_hash, view_hash);
}

#[tokio::test]
async fn overlapping_retries_with_one_key_all_get_the_first_answer() {
    // A client whose retry overlaps its first attempt must be told the act succeeded, with the
    // same events, not that the step is no longer open.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let engine = engine_on(store.clone(), Catalog::load(&workflows()).unwrap());
    for round in 0..10 {
        let d = engine
            .execute(submit_req(&format!("s{round}"), birth(3)))
            .await
            .unwrap()
            .dossier;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("same-key-{round}");
                engine
                    .execute(complete(d, "tu-phap", "register-birth", &key))
                    .await
            }));
        }
        let mut hashes = Vec::new();
        for t in tasks {
            let out = t
                .await
                .unwrap()
                .expect("every attempt gets the first answer");
            hashes.push(
                out.events
                    .iter()
                    .map(|r| r.sealed.hash.clone())
                    .collect::<Vec<_>>(),
            );
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "round {round}");
    }
}

/// A store that holds back the answer to a new dossier's append after it is durable (and so in
/// the feed), until the test releases it: the moment an agency can see its task and act while
/// the submission has not yet returned.
struct HeldSubmission {
    inner: Arc<SledStore>,
    /// Told when the held append is durable.
    durable: Arc<tokio::sync::Notify>,
    /// Releases its answer.
    release: Arc<tokio::sync::Notify>,
}

impl EventStore for HeldSubmission {
    fn append(
        &self,
        req: lienthong_engine::store::AppendRequest,
    ) -> tokio::sync::oneshot::Receiver<
        Result<lienthong_engine::store::Appended, lienthong_engine::store::Error>,
    > {
        let held = req.new_dossier.is_some();
        let answer = self.inner.append(req);
        if !held {
            return answer;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (durable, release) = (self.durable.clone(), self.release.clone());
        tokio::spawn(async move {
            let result = answer.await.expect("the writer answers");
            durable.notify_one();
            release.notified().await;
            let _ = tx.send(result);
        });
        rx
    }
    fn read_stream(
        &self,
        d: &DossierId,
    ) -> Result<Vec<lienthong_engine::store::Recorded>, lienthong_engine::store::Error> {
        self.inner.read_stream(d)
    }
    fn head(
        &self,
        d: &DossierId,
    ) -> Result<Option<lienthong_engine::store::Head>, lienthong_engine::store::Error> {
        self.inner.head(d)
    }
    fn read_feed(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<lienthong_engine::store::Recorded>, lienthong_engine::store::Error> {
        self.inner.read_feed(after, limit)
    }
    fn last_position(&self) -> Result<u64, lienthong_engine::store::Error> {
        self.inner.last_position()
    }
    fn dossiers(
        &self,
    ) -> Result<Vec<(DossierId, lienthong_engine::DossierCode)>, lienthong_engine::store::Error>
    {
        self.inner.dossiers()
    }
    fn dossier_by_code(
        &self,
        code: &str,
    ) -> Result<Option<DossierId>, lienthong_engine::store::Error> {
        self.inner.dossier_by_code(code)
    }
    fn idempotency(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<lienthong_engine::store::IdempotencyRecord>, lienthong_engine::store::Error>
    {
        self.inner.idempotency(actor, key)
    }
    fn definition(&self, hash: &str) -> Result<Option<String>, lienthong_engine::store::Error> {
        self.inner.definition(hash)
    }
    fn verify(
        &self,
    ) -> Result<lienthong_engine::store::VerifyReport, lienthong_engine::store::Error> {
        self.inner.verify()
    }
    fn due_timers(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<lienthong_engine::store::Timer>, lienthong_engine::store::Error> {
        self.inner.due_timers(until, limit)
    }
    fn update_timers(
        &self,
        ops: Vec<lienthong_engine::store::TimerOp>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), lienthong_engine::store::Error>> {
        self.inner.update_timers(ops)
    }
}

/// Found by `lienthong bench e2e --transport grpc`: the submission cached the dossier's state
/// after its own events once its append returned, overwriting the newer state of an agency that
/// had already seen its task in the feed and completed its step. The gateway then refused the
/// next agencies as "not routed", and those dossiers never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_acting_while_the_submission_returns_is_not_undone_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(SledStore::open(dir.path()).unwrap());
    let store = Arc::new(HeldSubmission {
        inner: sled.clone(),
        durable: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Notify::new()),
    });
    let engine = Engine::new(
        store.clone(),
        Arc::new(Catalog::load(&workflows()).unwrap()),
        Arc::new(TestClock(Mutex::new(tuesday_9am()))),
    );
    let submitting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(submit_req("held", birth(1))).await }
    });
    store.durable.notified().await;
    let (id, _) = sled.dossiers().unwrap()[0].clone();
    // Justice sees its task in the feed and acts at once, while the submission has not returned.
    let acting = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .execute(complete(id, "tu-phap", "register-birth", "justice"))
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    store.release.notify_one();
    submitting.await.unwrap().expect("submitted");
    acting.await.unwrap().expect("justice completed its step");

    let state = engine.state(id).await.unwrap();
    let stored = sled.head(&id).unwrap().expect("stored").seq;
    assert_eq!(
        state.seq, stored,
        "the engine's state is the stored stream's"
    );
    engine
        .execute(complete(id, "cong-an", "register-residence", "police"))
        .await
        .expect("the police step is open once justice completed");
}
