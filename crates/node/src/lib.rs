//! The processes of the distributed mode (issue 4), built over the bus (`lienthong-bus`) and the
//! engine (`lienthong-engine`), one module per job. `lienthong serve --nats URL --role ...` wires
//! them; this crate holds no `main`.
//!
//! - [`outbox`]: the engine node's publisher. It tails the engine's global feed (the sled log,
//!   the record of truth) and publishes every event to the bus's feed and every task an event
//!   makes to its agency's queue, in feed order, resuming after a restart from the bus's own
//!   last feed message and relying on the bus's message-id deduplication for the overlap.
//!
//! - [`commands`]: the engine node's command server: the partitions it owns, served on the bus's
//!   `Commands` with the gateway's own conversion and error map (`lienthong.v1.BusCommand` in,
//!   `BusReply` out).
//!
//! - [`dead_letters`]: the engine node's watch over the bus's dead letters, recording each task
//!   its agency never acknowledged in the dossier (`TaskUndeliverable`), so the board shows it.
//!
//! - [`lease`]: exclusive partition ownership: an engine node takes the bus's lease of every
//!   partition it owns before serving, renews them, and stops if it loses one.
//!
//! - [`projections`]: the projections role on its own machine: a verified local mirror of the
//!   bus's feed ([`projections::BusFeed`], a `lienthong_projections::FeedSource`) filled from
//!   the bus, and the loop that mirrors and folds the read models from it.
//!
//! - [`client`]: the requester's side of the commands ([`client::BusCommands`]): routing by
//!   partition, resending what got no answer. The gateway role forwards its callers' commands
//!   through it (as the gateway crate's `CommandSink`), reading histories from its own
//!   [`projections::BusFeed`] mirror, kept by a [`projections::Follower::mirror_only`];
//!   `lienthong agent --nats` acts through it too.
//!
//! `lienthong serve --nats URL --role engine|gateway|projections|all` wires them (crates/cli).

pub mod client;
pub mod commands;
pub mod dead_letters;
pub mod lease;
pub mod outbox;
pub mod projections;

pub use outbox::Outbox;
