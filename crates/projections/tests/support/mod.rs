//! Shared by the projection tests: the shipped catalog, local Hà Nội time, and an in-memory feed
//! of hand-written events (independent of the store's append API, so scenarios can say exactly
//! which events happened when, including the engine's clock-rule events).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::convert::timestamp;
use lienthong_engine::store::{self, Recorded};
use lienthong_projections::FeedSource;
use lienthong_proto::v1::{Actor, Channel, Envelope, Event, SealedEvent, event::Body};
use lienthong_workflow::Catalog;
use parking_lot::Mutex;
use uuid::Uuid;

/// The shipped `workflows/` catalog.
pub fn catalog() -> Arc<Catalog> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    match Catalog::load(&dir) {
        Ok(c) => Arc::new(c),
        Err(ds) => panic!("workflows/ does not load: {ds:#?}"),
    }
}

/// Local time in Hà Nội as a UTC instant.
pub fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Ho_Chi_Minh
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("a valid local time")
        .with_timezone(&Utc)
}

/// A feed kept in memory: positions and seqs stamped on push, like the store does.
#[derive(Default)]
pub struct MemFeed {
    /// Every event in global order.
    events: Mutex<Vec<Recorded>>,
}

/// A dossier of a hand-written scenario.
#[derive(Clone, Debug)]
pub struct Dossier {
    /// Its id.
    pub id: Uuid,
    /// Its code.
    pub code: String,
}

impl Dossier {
    /// A dossier with a fixed id (deterministic snapshots) and code.
    pub fn new(n: u128, code: &str) -> Dossier {
        Dossier {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n),
            code: code.to_string(),
        }
    }
}

impl MemFeed {
    /// Appends one event of `d`, recorded at `at`, acted by `agency`.
    pub fn push(&self, d: &Dossier, at: DateTime<Utc>, agency: &str, body: Body) {
        let mut events = self.events.lock();
        let seq = events
            .iter()
            .filter(|r| {
                r.event
                    .envelope
                    .as_ref()
                    .is_some_and(|e| e.dossier_id == d.id.to_string())
            })
            .count() as u64
            + 1;
        let position = events.len() as u64 + 1;
        let event = Event {
            envelope: Some(Envelope {
                dossier_id: d.id.to_string(),
                dossier_code: d.code.clone(),
                seq,
                global_position: position,
                recorded_at: Some(timestamp(at)),
                actor: Some(Actor {
                    agency: agency.to_string(),
                    officer: "test".into(),
                    channel: Channel::System as i32,
                }),
                // Events of one act (same instant, same actor) are one command, as in the engine.
                command_id: format!("cmd-{}-{agency}", at.timestamp()),
                prev_hash: Vec::new(),
            }),
            body: Some(body),
        };
        events.push(Recorded {
            event,
            sealed: SealedEvent::default(),
        });
    }
}

impl FeedSource for MemFeed {
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, store::Error> {
        Ok(self
            .events
            .lock()
            .iter()
            .filter(|r| r.position() > after_position)
            .take(limit)
            .cloned()
            .collect())
    }

    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, store::Error> {
        let id = dossier.to_string();
        Ok(self
            .events
            .lock()
            .iter()
            .filter(|r| {
                r.event
                    .envelope
                    .as_ref()
                    .is_some_and(|e| e.dossier_id == id)
            })
            .cloned()
            .collect())
    }

    fn last_position(&self) -> Result<u64, store::Error> {
        Ok(self.events.lock().len() as u64)
    }
}
