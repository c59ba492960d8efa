//! The bus's limits and timings, with their defaults as named constants.
//!
//! Both implementations read the same [`Config`], so the in-process bus behaves like the NATS
//! one with the same numbers. For NATS they become the stream and consumer settings:
//!
//! | field                      | NATS setting                                                      |
//! |----------------------------|-------------------------------------------------------------------|
//! | `replicas`                 | `num_replicas` of the three streams                               |
//! | `duplicate_window`         | `duplicate_window` of the three streams                           |
//! | `feed_messages_max`        | feed stream `max_msgs` (discard old: the engine's log is the record) |
//! | `feed_bytes_max`           | feed stream `max_bytes`                                           |
//! | `task_redelivery_backoff`  | agency consumer `backoff` (and `ack_wait` = its first element)    |
//! | `task_deliveries_max`      | enforced by the bus client (consumer `max_deliver` is -1): delivery number `task_deliveries_max + 1` is dead-lettered instead |
//! | `task_unacked_max`         | agency consumer `max_ack_pending`                                 |
//! | `tasks_per_agency_max`     | task stream `max_msgs_per_subject`, discard new per subject       |
//! | `dead_letters_max`         | dead-letter stream `max_msgs`, discard new                        |
//! | `payload_bytes_max`        | checked before publishing (the server's own `max_payload` also applies) |
//! | `lease_ttl`                | `max_age` of the lease bucket `LIENTHONG_LEASES` (a lease not renewed expires) |

use std::time::Duration;

use crate::Error;

/// Default: one replica (a single node); a 3-node cluster uses 3.
pub const REPLICAS_DEFAULT: usize = 1;
/// Default duplicate window: a republish within 2 hours of the first publish is dropped. The
/// feed publisher also resumes after the feed's last message ([`crate::Feed::last`]), so the
/// window only has to cover publishes that were not yet checkpointed.
pub const DUPLICATE_WINDOW_DEFAULT: Duration = Duration::from_secs(2 * 60 * 60);
/// Default bound on feed messages kept in the stream (the oldest are discarded).
pub const FEED_MESSAGES_MAX_DEFAULT: u64 = 50_000_000;
/// Default bound on feed bytes kept in the stream (the oldest are discarded): 16 GiB.
pub const FEED_BYTES_MAX_DEFAULT: u64 = 16 << 30;
/// Default redelivery delays: an unacknowledged task comes back after 30 s, then 1 min, 5 min,
/// 15 min, then every hour.
pub const TASK_REDELIVERY_BACKOFF_DEFAULT: [Duration; 5] = [
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(60 * 60),
];
/// Default number of deliveries of one task before it is dead-lettered.
pub const TASK_DELIVERIES_MAX_DEFAULT: u32 = 10;
/// Default bound on the tasks an agency holds without acknowledging them (back-pressure).
pub const TASK_UNACKED_MAX_DEFAULT: u32 = 1_000;
/// Default bound on the tasks queued for one agency (waiting or unacknowledged); publishing
/// more fails with [`Error::QueueFull`].
pub const TASKS_PER_AGENCY_MAX_DEFAULT: u64 = 100_000;
/// Default bound on dead-letter records kept (all agencies).
pub const DEAD_LETTERS_MAX_DEFAULT: u64 = 1_000_000;
/// Default bound on one payload: 1 MiB (the default `max_payload` of nats-server) less the room
/// kept for headers.
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = (1 << 20) - HEADERS_BYTES_MAX;
/// Room kept for the headers lienthong writes (message id, dossier, seq, task id, agency: well
/// under this), so that payload plus headers fit nats-server's default `max_payload` of 1 MiB
/// and the streams' `max_message_size`, which count both.
pub const HEADERS_BYTES_MAX: usize = 4 << 10;
/// Default time to live of a partition lease: a node that stops renewing (it died, or lost the
/// bus) loses its partitions this long after its last renewal. Nodes renew every third of it.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(15);
/// Shortest lease time to live accepted.
pub const LEASE_TTL_MIN: Duration = Duration::from_secs(1);
/// Default capacity of a command inbox (requests received and not yet taken by the server).
pub const COMMAND_INBOX_CAPACITY_DEFAULT: usize = 1_024;

/// Limits and timings of the bus (see the module docs for what each becomes on NATS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Replicas of each stream: 1 on a single node, 3 on a 3-node cluster.
    pub replicas: usize,
    /// How long a message id is remembered to drop a republish (feed, tasks, dead letters).
    pub duplicate_window: Duration,
    /// Feed messages kept before the oldest are discarded.
    pub feed_messages_max: u64,
    /// Feed bytes kept before the oldest are discarded.
    pub feed_bytes_max: u64,
    /// Delay before delivery n+1 of an unacknowledged task is element n-1 (the last repeats);
    /// the first element is the ack wait.
    pub task_redelivery_backoff: Vec<Duration>,
    /// Deliveries of one task to its agency before it is dead-lettered.
    pub task_deliveries_max: u32,
    /// Tasks an agency may hold unacknowledged; no more are delivered until it acks.
    pub task_unacked_max: u32,
    /// Tasks queued for one agency (waiting or unacknowledged) before publishing is refused.
    pub tasks_per_agency_max: u64,
    /// Dead-letter records kept, all agencies together.
    pub dead_letters_max: u64,
    /// Largest payload accepted for a command, reply, feed event or task.
    pub payload_bytes_max: usize,
    /// Requests a command inbox buffers before the serving side takes them.
    pub command_inbox_capacity: usize,
    /// How long a partition lease lasts unless renewed (the same for every process of a
    /// deployment: the first one creates the lease bucket with it).
    pub lease_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            replicas: REPLICAS_DEFAULT,
            duplicate_window: DUPLICATE_WINDOW_DEFAULT,
            feed_messages_max: FEED_MESSAGES_MAX_DEFAULT,
            feed_bytes_max: FEED_BYTES_MAX_DEFAULT,
            task_redelivery_backoff: TASK_REDELIVERY_BACKOFF_DEFAULT.to_vec(),
            task_deliveries_max: TASK_DELIVERIES_MAX_DEFAULT,
            task_unacked_max: TASK_UNACKED_MAX_DEFAULT,
            tasks_per_agency_max: TASKS_PER_AGENCY_MAX_DEFAULT,
            dead_letters_max: DEAD_LETTERS_MAX_DEFAULT,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            command_inbox_capacity: COMMAND_INBOX_CAPACITY_DEFAULT,
            lease_ttl: LEASE_TTL_DEFAULT,
        }
    }
}

impl Config {
    /// Checks the combination; both implementations call it before using the config.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Config(why));
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas must be 1 to 5, not {}", self.replicas));
        }
        if self.duplicate_window < Duration::from_millis(100) {
            return bad("duplicate_window must be at least 100 ms".into());
        }
        if self.lease_ttl < LEASE_TTL_MIN {
            return bad(format!(
                "lease_ttl must be at least {} ms, not {} ms",
                LEASE_TTL_MIN.as_millis(),
                self.lease_ttl.as_millis()
            ));
        }
        if self.task_redelivery_backoff.is_empty() {
            return bad("task_redelivery_backoff needs at least one delay".into());
        }
        if let Some(d) = self
            .task_redelivery_backoff
            .iter()
            .find(|d| **d < Duration::from_millis(50))
        {
            return bad(format!(
                "task_redelivery_backoff delays must be at least 50 ms, not {} ms",
                d.as_millis()
            ));
        }
        if self.task_deliveries_max == 0 {
            return bad("task_deliveries_max must be at least 1".into());
        }
        // Delays past the last delivery would never apply: a sign of a mistaken config.
        if self.task_redelivery_backoff.len() > self.task_deliveries_max as usize {
            return bad(format!(
                "task_redelivery_backoff has {} delays but a task is delivered at most {} times",
                self.task_redelivery_backoff.len(),
                self.task_deliveries_max
            ));
        }
        let positive = [
            ("task_unacked_max", u64::from(self.task_unacked_max)),
            ("tasks_per_agency_max", self.tasks_per_agency_max),
            ("dead_letters_max", self.dead_letters_max),
            ("feed_messages_max", self.feed_messages_max),
            ("feed_bytes_max", self.feed_bytes_max),
            ("payload_bytes_max", self.payload_bytes_max as u64),
            ("command_inbox_capacity", self.command_inbox_capacity as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be at least 1"));
        }
        if i64::try_from(self.feed_bytes_max).is_err()
            || i64::try_from(self.feed_messages_max).is_err()
            || i64::try_from(self.tasks_per_agency_max).is_err()
            || i64::try_from(self.dead_letters_max).is_err()
        {
            return bad("stream limits must fit in a signed 64-bit integer".into());
        }
        Ok(())
    }

    /// How long delivery `n` (from 1) of a task waits for its ack before the next delivery.
    pub fn ack_wait_of_delivery(&self, n: u32) -> Duration {
        let last = self.task_redelivery_backoff.len().saturating_sub(1);
        let i = (n.saturating_sub(1) as usize).min(last);
        self.task_redelivery_backoff
            .get(i)
            .copied()
            .unwrap_or(TASK_REDELIVERY_BACKOFF_DEFAULT[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        Config::default().validate().expect("default config");
    }

    #[test]
    fn backoff_longer_than_deliveries_is_refused() {
        let c = Config {
            task_deliveries_max: 2,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn ack_wait_follows_the_backoff_and_repeats_the_last() {
        let c = Config::default();
        assert_eq!(c.ack_wait_of_delivery(1), Duration::from_secs(30));
        assert_eq!(c.ack_wait_of_delivery(2), Duration::from_secs(60));
        assert_eq!(c.ack_wait_of_delivery(9), Duration::from_secs(3600));
    }
}
