//! The world the node's tests run in: the real engine over a sled store in a temporary
//! directory, with the project's workflows and a manual clock, and the commands that give the
//! birth procedure's agencies work.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use lienthong_engine::DossierId;
use lienthong_engine::dossier::{Applicant, Command, CompleteStep, Document, Submit};
use lienthong_engine::runtime::{Engine, ManualClock, Request};
use lienthong_engine::store::{EventStore, SledStore};
use lienthong_proto::v1 as pb;
use lienthong_workflow::{AttrValue, Catalog, StepId};

/// An engine over a sled store in a temporary directory, with the project's workflows.
pub struct World {
    pub store: Arc<SledStore>,
    pub engine: Engine,
    pub catalog: Arc<Catalog>,
    _dir: tempfile::TempDir,
    next_key: std::sync::atomic::AtomicU64,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let workflows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let catalog = Arc::new(Catalog::load(&workflows).expect("the project's workflows load"));
        let store = Arc::new(SledStore::open(dir.path()).expect("store opens"));
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00+07:00")
            .expect("instant")
            .with_timezone(&chrono::Utc);
        let engine = Engine::new(
            store.clone(),
            catalog.clone(),
            Arc::new(ManualClock::new(start)),
        );
        World {
            store,
            engine,
            catalog,
            _dir: dir,
            next_key: 0.into(),
        }
    }

    pub fn key(&self) -> String {
        let n = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("k-{n}")
    }

    /// A birth dossier received at the desk: a task for the justice officer.
    pub async fn submit(&self) -> DossierId {
        let mut attributes = BTreeMap::new();
        attributes.insert("child.age_months".to_string(), AttrValue::Integer(1));
        let born = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).expect("date");
        attributes.insert("child.birth_date".to_string(), AttrValue::Date(born));
        let command = Command::Submit(Submit {
            procedure_code: "2.000986".into(),
            channel: pb::Channel::InPerson,
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
        });
        self.execute(None, "ubnd-xa", command).await
    }

    /// The justice officer registers the birth: steps open for the police and social insurance.
    pub async fn register_birth(&self, dossier: DossierId) {
        let command = Command::CompleteStep(CompleteStep {
            step: StepId("register-birth".into()),
            outcome: "approve".into(),
            results: vec![],
            note: String::new(),
        });
        self.execute(Some(dossier), "tu-phap", command).await;
    }

    /// A dossier with open steps at three agencies.
    pub async fn dossier(&self) -> DossierId {
        let d = self.submit().await;
        self.register_birth(d).await;
        d
    }

    pub async fn execute(
        &self,
        dossier: Option<DossierId>,
        agency: &str,
        command: Command,
    ) -> DossierId {
        let request = Request {
            dossier,
            actor: pb::Actor {
                agency: agency.into(),
                officer: "test".into(),
                channel: pb::Channel::System as i32,
            },
            idempotency_key: self.key(),
            command,
        };
        self.engine
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("command refused: {e}"))
            .dossier
    }

    pub fn last_position(&self) -> u64 {
        self.store.last_position().expect("last position")
    }
}
