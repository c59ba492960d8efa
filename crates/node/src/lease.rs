//! Exclusive partition ownership for engine nodes: the leases of the bus ([`lienthong_bus::Leases`]).
//!
//! A partition's dossiers live in one engine node's store, so exactly one node may serve its
//! commands. Two nodes configured with the same partition would share its queue group and split
//! its commands between two stores: dossiers "not found" on one, and a submission's retry
//! answered by a node that never saw the first try. So, before it serves anything, an engine node
//! takes the lease of every partition it owns ([`acquire_all`]), and while it runs it renews
//! them ([`keep`]):
//!
//! - A lease held by another node is waited for, up to the bus's `lease_ttl` and a margin (the
//!   holder may have just died: its lease then expires), then refused with the holder's name
//!   ([`Error::Held`]). A node restarted with the same holder id ([`holder_id`]: the node id kept
//!   in its data directory) takes its own leases back at once.
//! - Every lease is renewed each third of `lease_ttl`. If one is lost (it expired and another
//!   node took it), or renewals keep failing (no bus) until two thirds of `lease_ttl` have passed
//!   since the last success, [`keep`] returns an error and the node stops: it gives up serving
//!   before the lease can expire on the bus and another node take the partition, so two nodes
//!   never serve one partition at once (assuming their clocks run at about the same rate).
//! - On a clean shutdown the leases are released, so a replacement may start at once.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use lienthong_bus::{Bus, Lease, Partition};
use tokio::time::Instant;

/// The name of the file in an engine node's data directory that keeps its node id.
pub const NODE_ID_FILE: &str = "node-id";

/// Extra wait, beyond the lease time to live, for a partition held by another node at start.
pub const ACQUIRE_MARGIN: Duration = Duration::from_secs(2);

/// How often a held partition is tried again while waiting for it.
pub const ACQUIRE_RETRY: Duration = Duration::from_millis(250);

/// Why the leases could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another node holds a partition this node was configured to own.
    #[error(
        "partition {partition} is served by `{holder}`, still alive after {waited_ms} ms: each \
         partition belongs to exactly one engine node. Give this node other --partitions, or stop \
         that node first"
    )]
    Held {
        /// The partition.
        partition: Partition,
        /// Its holder.
        holder: String,
        /// How long this node waited for it.
        waited_ms: u128,
    },
    /// A lease was lost while serving.
    #[error("{0}; this node stops serving its partitions")]
    Lost(lienthong_bus::Error),
    /// Renewals failed for too long: the lease may expire before the bus can be reached.
    #[error(
        "the lease on partition {partition} could not be renewed for {elapsed_ms} ms (last \
         error: {last}); this node stops serving before the lease expires and another node takes \
         the partition"
    )]
    Unrenewed {
        /// The partition.
        partition: Partition,
        /// Since the last successful renewal.
        elapsed_ms: u128,
        /// The last renewal's error.
        last: String,
    },
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] lienthong_bus::Error),
    /// The node id file could not be read or written.
    #[error("node id file {path}: {source}")]
    NodeId {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// This node's holder id: `<node id>@<host name>`, the node id being a UUID made on the first
/// start and kept in `DATA/node-id`, so that a restarted node (same data directory, same host)
/// takes its own leases back at once, and a lease names where its holder runs.
pub fn holder_id(data: &Path) -> Result<String, Error> {
    let path = data.join(NODE_ID_FILE);
    let io = |source| Error::NodeId {
        path: path.display().to_string(),
        source,
    };
    let id = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            std::fs::create_dir_all(data).map_err(io)?;
            // Written whole to a temporary file then renamed: never a half-written id.
            let tmp = data.join(format!("{NODE_ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            id
        }
        Err(e) => return Err(io(e)),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    Ok(format!("{id}@{host}"))
}

/// Takes the lease of every partition of `partitions` for `holder`, waiting up to `ttl` and
/// [`ACQUIRE_MARGIN`] for one held by another node. On failure, the leases already taken are
/// released.
pub async fn acquire_all(
    bus: &dyn Bus,
    partitions: &BTreeSet<u32>,
    holder: &str,
    ttl: Duration,
) -> Result<Vec<Lease>, Error> {
    let start = Instant::now();
    let deadline = start + ttl + ACQUIRE_MARGIN;
    let mut leases = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let partition = Partition(p);
        let taken = loop {
            match bus.acquire(partition, holder).await {
                Ok(lease) => break Ok(lease),
                Err(lienthong_bus::Error::LeaseHeld { holder: other, .. }) => {
                    if Instant::now() >= deadline {
                        break Err(Error::Held {
                            partition,
                            holder: other,
                            waited_ms: start.elapsed().as_millis(),
                        });
                    }
                    tracing::warn!(%partition, holder = %other, "partition held by another engine node; waiting for its lease to expire");
                    tokio::time::sleep(ACQUIRE_RETRY).await;
                }
                Err(e) => break Err(Error::Bus(e)),
            }
        };
        match taken {
            Ok(lease) => leases.push(lease),
            Err(e) => {
                release_all(bus, leases).await;
                return Err(e);
            }
        }
    }
    Ok(leases)
}

/// Gives every lease up (errors are logged: an unreleased lease only expires later).
pub async fn release_all(bus: &dyn Bus, leases: Vec<Lease>) {
    for lease in leases {
        let partition = lease.partition;
        if let Err(e) = bus.release(lease).await {
            tracing::warn!(%partition, error = %e, "could not release a partition lease; it expires by itself");
        }
    }
}

/// Renews `leases` every third of `ttl` (each call bounded to a sixth of it) until `shutdown`
/// completes, then releases them and returns `Ok`. Returns an error, without releasing, as soon as a lease is lost or could not be
/// renewed for two thirds of `ttl` (see the module docs): the caller must stop serving.
pub async fn keep(
    bus: &dyn Bus,
    mut leases: Vec<Lease>,
    ttl: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let period = ttl / 3;
    let give_up = ttl * 2 / 3;
    let mut renewed: Vec<Instant> = vec![Instant::now(); leases.len()];
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                release_all(bus, leases).await;
                return Ok(());
            }
            () = tokio::time::sleep(period) => {}
        }
        for (lease, at) in leases.iter_mut().zip(renewed.iter_mut()) {
            // Bounded, so that a hung call cannot carry the node past its lease's expiry.
            let renewal = match tokio::time::timeout(ttl / 6, bus.renew(lease)).await {
                Ok(r) => r,
                Err(_) => Err(lienthong_bus::Error::Timeout {
                    partition: lease.partition,
                    timeout_ms: u64::try_from((ttl / 6).as_millis()).unwrap_or(u64::MAX),
                }),
            };
            match renewal {
                Ok(new) => {
                    *lease = new;
                    *at = Instant::now();
                }
                Err(e @ lienthong_bus::Error::LeaseLost { .. }) => return Err(Error::Lost(e)),
                Err(e) if at.elapsed() >= give_up => {
                    return Err(Error::Unrenewed {
                        partition: lease.partition,
                        elapsed_ms: at.elapsed().as_millis(),
                        last: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::warn!(partition = %lease.partition, error = %e, "could not renew a partition lease; trying again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = holder_id(dir.path()).expect("made");
        let again = holder_id(dir.path()).expect("read");
        assert_eq!(first, again, "a restarted node has the same holder id");
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(
            holder_id(other.path()).expect("made"),
            first,
            "another data directory is another node"
        );
    }
}
