//! The engine: the dossier state machine, the hash-chained event store on sled, and the
//! embedded runtime that ties them together.
//!
//! - [`dossier`]: the pure core, `decide(state, command, context) -> events | rejection` and
//!   `evolve(state, event) -> state`. No clock, no randomness, no storage.
//! - [`store`]: the durable, hash-chained, group-committed event store, behind a trait.
//! - [`runtime`]: the in-process command loop: serialises commands per dossier, runs `decide`,
//!   appends durably, and only then answers.

pub mod dossier;
pub mod ids;
pub mod runtime;
pub mod store;
pub mod view;

pub use ids::{DossierCode, DossierId};
