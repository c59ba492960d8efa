//! Read models folded from the engine's global feed: the deadline board per agency, SLA breaches
//! with attribution (the process-control slip), and the Decision 766 indicators per agency ×
//! procedure × month.
//!
//! - [`projector`]: [`Projections`], a checkpointed fold of [`EventStore::read_feed`] into its own
//!   sled database (`<data>/projections/`), the checkpoint written in the same atomic batch as the
//!   view changes it covers. [`Projections::catch_up`] applies what is new,
//!   [`Projections::rebuild`] wipes and replays from position 0 and gives byte for byte the same
//!   database, [`Projections::lag`] says how far behind the store the views are.
//! - [`record`]: the per-dossier record, folded with the engine's own `dossier::evolve`, and the
//!   exact definitions of *finished*, *late*, *early*, processing time and attribution.
//! - [`keys`]: the database's key layout.
//! - `instant`: how records store instants (numbers when stored, chrono's text in JSON).
//! - [`views`]: the queries (they take `now`; the projections never read a clock).
//! - [`report`]: rendering as aligned text, JSON or CSV.
//!
//! Why rebuild equals incremental: a dossier's record is a pure function of its event prefix (up
//! to the checkpoint), the loaded calendars and its pinned workflow, and everything else in the
//! database (indexes, counters) is a pure function of the records, maintained by replacing a
//! record's old contribution (stored in it) with its new one. How the feed was cut into batches
//! cannot show. The record stores nothing that compares the loaded catalog with the one the
//! events were written with (a calendar family's hash changes whenever a year file is added), so
//! publishing a year does not set records folded before it apart from those folded after.
//!
//! Projections are a cache: they are not fsynced, and any doubt (schema change, interrupted
//! rebuild, store replaced) is answered by folding again from 0.
//!
//! [`EventStore::read_feed`]: lienthong_engine::store::EventStore::read_feed

pub mod error;
mod instant;
pub mod keys;
pub mod projector;
pub mod record;
pub mod report;
pub mod views;

pub use error::Error;
pub use projector::{
    BATCH_EVENTS_MAX, FOLD_CACHE_EVENTS_MAX, FeedSource, Lag, Progress, Projections,
};
pub use report::Format;
pub use views::{
    Board, BoardQuery, BoardState, Breach, BreachQuery, Breaches, IndicatorQuery, IndicatorRow,
    Indicators, Month,
};
