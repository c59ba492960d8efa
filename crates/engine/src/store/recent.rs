//! The feed's recent tail, kept in memory by the store for the readers that follow it.
//!
//! Task streams, the projections' catch-up and the outbox all read the feed just behind its
//! head, each on its own: from sled, every event of the tail would be looked up, re-hashed and
//! decoded once per reader. The writer already holds each event it commits, stamped, its links
//! checked by [`chain::check_envelope`](super::chain::check_envelope) and sealed from that very
//! value before it was written. So after a group is durable and before readers may see it, the
//! store's sync thread puts the group's events here, shared
//! (the same `Arc` each appender receives in its `Appended`), and a feed read that falls inside
//! the window is answered from memory: `read_feed_shared` hands out the `Arc`s themselves,
//! `read_feed` a copy. A read that reaches further back goes to sled, with every check of the
//! read path.
//!
//! The window holds the last [`RECENT_FEED_EVENTS`] positions, always one contiguous run: a gap
//! (which the single writer never makes) empties it rather than answering around the hole. It
//! starts empty at open, so events written before a restart are always read from disk.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Recorded;

/// Positions kept in memory behind the feed's head (about 1.5 KiB each, decoded and sealed).
pub const RECENT_FEED_EVENTS: usize = 8192;

/// A contiguous run of the most recent durable feed positions.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// The events at positions `first ..= first + len - 1`.
    events: VecDeque<Arc<Recorded>>,
    /// The position of `events[0]`.
    first: u64,
}

impl Recent {
    /// Adds the next durable event; the window slides past [`RECENT_FEED_EVENTS`].
    pub(crate) fn push(&mut self, r: Arc<Recorded>) {
        let position = r.position();
        if self.events.is_empty() || position != self.first + self.events.len() as u64 {
            self.events.clear();
            self.first = position;
        }
        self.events.push_back(r);
        if self.events.len() > RECENT_FEED_EVENTS {
            self.events.pop_front();
            self.first += 1;
        }
    }

    /// Positions `after + 1 ..= end`, when the window holds all of them.
    pub(crate) fn range(&self, after: u64, end: u64) -> Option<Vec<Arc<Recorded>>> {
        let last = self.first + self.events.len() as u64;
        if self.events.is_empty() || after < self.first.saturating_sub(1) || end >= last {
            return None;
        }
        if end <= after {
            return Some(Vec::new());
        }
        let from = (after + 1 - self.first) as usize;
        let to = (end - self.first) as usize;
        Some(self.events.range(from..=to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use lienthong_proto::v1::{Envelope, Event, SealedEvent};

    use super::*;

    fn at(position: u64) -> Arc<Recorded> {
        Arc::new(Recorded {
            event: Event {
                envelope: Some(Envelope {
                    global_position: position,
                    ..Envelope::default()
                }),
                ..Event::default()
            },
            sealed: SealedEvent::default(),
        })
    }

    fn positions(v: Option<Vec<Arc<Recorded>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|r| r.position()).collect())
    }

    #[test]
    fn answers_only_what_the_window_holds_whole() {
        let mut recent = Recent::default();
        assert_eq!(positions(recent.range(0, 1)), None, "empty");
        for p in 5..=9 {
            recent.push(at(p));
        }
        assert_eq!(positions(recent.range(4, 9)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(positions(recent.range(6, 8)), Some(vec![7, 8]));
        assert_eq!(positions(recent.range(9, 9)), Some(vec![]));
        assert_eq!(
            positions(recent.range(3, 9)),
            None,
            "position 4 is not held"
        );
        assert_eq!(
            positions(recent.range(8, 10)),
            None,
            "position 10 is not held"
        );
    }

    #[test]
    fn slides_and_restarts_on_a_gap() {
        let mut recent = Recent::default();
        for p in 1..=(RECENT_FEED_EVENTS as u64 + 10) {
            recent.push(at(p));
        }
        assert_eq!(recent.events.len(), RECENT_FEED_EVENTS);
        assert_eq!(recent.first, 11);
        assert_eq!(positions(recent.range(9, 12)), None);
        assert_eq!(positions(recent.range(10, 12)), Some(vec![11, 12]));
        recent.push(at(RECENT_FEED_EVENTS as u64 + 20));
        assert_eq!(recent.events.len(), 1);
        assert_eq!(positions(recent.range(10, 12)), None);
    }
}
