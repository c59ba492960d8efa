//! Where the runtime gets the time. `decide` never reads a clock; the runtime passes `now` in.
//!
//! [`SystemClock`] is the machine's wall clock; [`ManualClock`] is set and advanced by hand, for
//! simulations and tests (timers fire when the test says the time has come).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;

/// Where the runtime gets the time. `decide` never reads a clock; the runtime passes this in.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told: clones share one instant, so a test keeps a clone and
/// advances the engine's time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    /// The shared current instant.
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// The current instant (also through [`Clock::now`]).
    pub fn now(&self) -> DateTime<Utc> {
        *self.now.lock()
    }

    /// Sets the time (it may go back: the runtime does not assume a monotonic clock).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock() = t;
    }

    /// Moves the time forward by `by` (back, if negative); returns the new instant.
    pub fn advance(&self, by: TimeDelta) -> DateTime<Utc> {
        let mut now = self.now.lock();
        *now = now.checked_add_signed(by).unwrap_or(*now);
        *now
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        ManualClock::now(self)
    }
}
