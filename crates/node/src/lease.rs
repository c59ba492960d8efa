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

/// The leases an engine node holds, and the instant before their last acquisition or renewal
/// was sent (the bus's expiry counts from no earlier than that).
#[derive(Debug)]
pub struct Held {
    /// The leases.
    pub leases: Vec<Lease>,
    /// When the requests that took them were sent, at the earliest.
    pub since: Instant,
}

/// Takes the lease of every partition of `partitions` for `holder`, waiting up to `ttl` and
/// [`ACQUIRE_MARGIN`] for one held by another node. Leases taken early may expire during such a
/// wait, so once all are taken they are all taken again in one pass (granted at once to their
/// holder, refused if another node took one meanwhile). On failure, the leases already taken
/// are released.
pub async fn acquire_all(
    bus: &dyn Bus,
    partitions: &BTreeSet<u32>,
    holder: &str,
    ttl: Duration,
) -> Result<Held, Error> {
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
    let since = Instant::now();
    let mut fresh = Vec::with_capacity(leases.len());
    for lease in &leases {
        match bus.acquire(lease.partition, holder).await {
            Ok(l) => fresh.push(l),
            Err(lienthong_bus::Error::LeaseHeld {
                partition,
                holder: other,
            }) => {
                release_all(bus, fresh).await;
                return Err(Error::Held {
                    partition,
                    holder: other,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            Err(e) => {
                release_all(bus, fresh).await;
                return Err(Error::Bus(e));
            }
        }
    }
    Ok(Held {
        leases: fresh,
        since,
    })
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

/// Renews the `held` leases every third of `ttl` until `shutdown` completes, then releases them
/// and returns `Ok`. Returns an error, without releasing, as soon as a lease is lost, or when
/// two thirds of `ttl` have passed since a lease's last renewal was sent without a renewal
/// succeeding (each call is bounded by what is left of that, and by a sixth of `ttl`; the
/// deadline fires on its own, whatever the calls do): the caller must stop serving.
pub async fn keep(
    bus: &dyn Bus,
    held: Held,
    ttl: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let period = ttl / 3;
    let give_up = ttl * 2 / 3;
    let mut leases = held.leases;
    // Per lease: when its last successful renewal was sent, and the last failure since.
    let mut renewed: Vec<(Instant, Option<String>)> = vec![(held.since, None); leases.len()];
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let oldest = renewed
            .iter()
            .map(|r| r.0)
            .min()
            .unwrap_or_else(Instant::now);
        let next = (Instant::now() + period).min(oldest + give_up);
        tokio::select! {
            () = &mut shutdown => {
                release_all(bus, leases).await;
                return Ok(());
            }
            () = tokio::time::sleep_until(next) => {}
        }
        for (lease, (at, failed)) in leases.iter_mut().zip(renewed.iter_mut()) {
            let left = (*at + give_up).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unrenewed {
                    partition: lease.partition,
                    elapsed_ms: at.elapsed().as_millis(),
                    last: failed
                        .clone()
                        .unwrap_or_else(|| "no renewal was attempted in time".to_owned()),
                });
            }
            let sent = Instant::now();
            match tokio::time::timeout(left.min(ttl / 6), bus.renew(lease)).await {
                Ok(Ok(new)) => {
                    *lease = new;
                    *at = sent;
                    *failed = None;
                }
                Ok(Err(e @ lienthong_bus::Error::LeaseLost { .. })) => return Err(Error::Lost(e)),
                Ok(Err(e)) => {
                    tracing::warn!(partition = %lease.partition, error = %e, "could not renew a partition lease; trying again");
                    *failed = Some(e.to_string());
                }
                Err(_) => {
                    tracing::warn!(partition = %lease.partition, "renewing a partition lease timed out; trying again");
                    *failed = Some("the renewal timed out".to_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_bus::Leases;
    use lienthong_bus::memory::MemoryBus;

    const TTL: Duration = Duration::from_secs(1);

    fn bus() -> MemoryBus {
        MemoryBus::new(lienthong_bus::Config {
            lease_ttl: TTL,
            ..lienthong_bus::Config::default()
        })
        .expect("valid config")
    }

    #[tokio::test]
    async fn kept_leases_outlive_their_ttl_and_are_released_at_shutdown() {
        let bus = bus();
        let owned: BTreeSet<u32> = [0, 1, 2].into();
        let held = acquire_all(&bus, &owned, "a", TTL).await.expect("free");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let keeper = tokio::spawn({
            let bus = bus.clone();
            async move {
                keep(&bus, held, TTL, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        tokio::time::sleep(TTL * 3).await;
        match bus.acquire(Partition(1), "b").await {
            Err(lienthong_bus::Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "a"),
            other => panic!("kept past its ttl, not {other:?}"),
        }
        let _ = stop.send(());
        keeper.await.expect("joined").expect("a clean stop");
        bus.acquire(Partition(1), "b")
            .await
            .expect("released at shutdown: free at once");
    }

    #[tokio::test]
    async fn a_partition_held_elsewhere_is_refused_after_the_wait_and_nothing_is_kept() {
        let bus = bus();
        bus.acquire(Partition(1), "b").await.expect("free");
        let owned: BTreeSet<u32> = [0, 1].into();
        // "b" keeps its lease alive while "a" waits.
        let renewer = tokio::spawn({
            let bus = bus.clone();
            async move {
                let mut lease = bus.acquire(Partition(1), "b").await.expect("own");
                loop {
                    tokio::time::sleep(TTL / 4).await;
                    lease = bus.renew(&lease).await.expect("renewed");
                }
            }
        });
        match acquire_all(&bus, &owned, "a", TTL).await {
            Err(Error::Held {
                partition, holder, ..
            }) => {
                assert_eq!(partition, Partition(1));
                assert_eq!(holder, "b");
            }
            other => panic!("refused, not {other:?}"),
        }
        renewer.abort();
        bus.acquire(Partition(0), "c")
            .await
            .expect("the lease taken before the refusal was released");
    }

    #[tokio::test]
    async fn a_lost_lease_ends_the_keeper_with_an_error() {
        let bus = bus();
        let owned: BTreeSet<u32> = [0].into();
        let held = acquire_all(&bus, &owned, "a", TTL).await.expect("free");
        let lease = held.leases[0].clone();
        bus.release(lease)
            .await
            .expect("released behind the keeper's back");
        bus.acquire(Partition(0), "b")
            .await
            .expect("taken by another");
        let outcome = keep(&bus, held, TTL, std::future::pending()).await;
        assert!(matches!(outcome, Err(Error::Lost(_))), "{outcome:?}");
    }

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
