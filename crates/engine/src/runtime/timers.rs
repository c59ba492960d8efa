//! Firing the durable timers: deadline warnings and misses.
//!
//! [`Engine::fire_due_timers`] reads the timers due at the clock's `now` from the store and runs
//! each as a `FireTimer` command on its dossier (under the dossier's lock, like any command):
//! `decide` records the notice if the deadline is still current, and the append clears the timer
//! and sets the dossier's next one in the same batch; a timer that records nothing (stale: the step
//! was completed, the deadline moved, the dossier closed; or a warning whose deadline passed) is
//! cleared and the dossier's next timer set, with no event. A timer whose dossier's definition or
//! calendar does not load in this process stays stored and is passed over until a restart (clearing
//! it would leave the dossier with no timer); one whose dossier is missing or refuses it is logged
//! and cleared. A dossier stores only its earliest timer (see [`crate::dossier::timers`]), so one
//! call goes on reading until no timer due at its `now` is left (at most [`FIRE_ROUNDS_MAX`]
//! rounds, and it stops when a round reads the same timers as the one before): a firing may set the
//! next timer, due already (a warning and then the miss of a deadline that passed while the engine
//! was down).
//!
//! A crash between deciding and clearing cannot double a notice: the notice and the clear are
//! one atomic batch, the command's idempotency key is derived from the timer (a second firing of
//! the same timer finds the key used and only clears), and `decide` refuses to notice one
//! deadline twice anyway.
//!
//! [`Engine::spawn_timer_loop`] runs this for a server: fire, then sleep until the next timer
//! (at most `Options::timer_sleep_ms_max`, at least [`TIMER_SLEEP_MS_MIN`]), waking early when
//! an append sets a timer due before the sleep ends, until the shutdown future completes. Most
//! appends set a timer days ahead and do not wake the loop (a wake read the store twice): the
//! loop publishes when its sleep ends, and an append compares the timer it set with that.

use std::future::Future;
use std::sync::atomic::{Ordering, fence};

use chrono::{DateTime, Utc};
use lienthong_proto::v1::{Actor, Channel};
use lienthong_workflow::StepId;
use sha2::{Digest, Sha256};

use super::{Engine, Error, Request, fingerprint};
use crate::dossier::{Command, ENGINE, FireTimer, Timer, TimerOp};
use crate::store;

/// Timers read from the store per round of [`Engine::fire_due_timers`].
pub const TIMERS_PER_ROUND_MAX: usize = 1_000;
/// Rounds of one [`Engine::fire_due_timers`] call: bounds one call to
/// `FIRE_ROUNDS_MAX * TIMERS_PER_ROUND_MAX` timers; the rest wait for the next call.
pub const FIRE_ROUNDS_MAX: usize = 100;
/// Shortest sleep of the timer loop, in milliseconds (no busy loop when a timer keeps failing).
pub const TIMER_SLEEP_MS_MIN: u64 = 50;

/// The actor of the engine's own acts (timers, undeliverable tasks): agency [`ENGINE`], no
/// officer, channel SYSTEM.
pub fn engine_actor() -> Actor {
    Actor {
        agency: ENGINE.to_string(),
        officer: String::new(),
        channel: Channel::System as i32,
    }
}

/// The idempotency key of a timer's firing: one per (dossier, kind, step, due), so a retried or
/// doubled firing of one timer is recognised.
fn timer_key(t: &Timer) -> String {
    let mut h = Sha256::new();
    h.update(t.dossier.as_bytes());
    h.update(t.kind.as_str().as_bytes());
    h.update([0u8]);
    h.update(t.step.as_deref().unwrap_or("").as_bytes());
    h.update([0u8]);
    h.update(t.due.timestamp().to_be_bytes());
    h.update(t.due.timestamp_subsec_nanos().to_be_bytes());
    format!("timer-{}", &hex::encode(h.finalize())[..32])
}

impl Engine {
    /// Fires every timer due at the clock's `now`, including those the firings set; returns how
    /// many notices (`DeadlineWarning`, `DeadlineMissed`) were appended. Stale timers are
    /// cleared. Stops early when a round reads the same timers as the one before (a timer kept
    /// because its firing recorded nothing yet, e.g. after the clock stepped back).
    ///
    /// A timer whose dossier is gone or refuses it is logged and cleared (it would fail
    /// forever); one whose dossier's definition or calendar does not load is logged and kept for
    /// a later start, and passed over by this process; a storage fault stops the call.
    #[tracing::instrument(skip_all)]
    pub async fn fire_due_timers(&self) -> Result<usize, Error> {
        let now = self.now();
        let mut notices = 0;
        let mut last: Vec<Timer> = Vec::new();
        for _ in 0..FIRE_ROUNDS_MAX {
            let mut due = self.store().due_timers(now, TIMERS_PER_ROUND_MAX)?;
            {
                let held = self.inner.held_timers.lock();
                due.retain(|t| !held.contains(t));
            }
            if due.is_empty() || due == last {
                break;
            }
            for timer in &due {
                notices += self.fire(timer).await?;
            }
            last = due;
        }
        Ok(notices)
    }

    /// Fires one timer; returns the number of notices appended.
    #[tracing::instrument(skip_all, fields(dossier = %timer.dossier, kind = timer.kind.as_str(), step = ?timer.step))]
    async fn fire(&self, timer: &Timer) -> Result<usize, Error> {
        let req = Request {
            dossier: Some(timer.dossier),
            actor: engine_actor(),
            idempotency_key: timer_key(timer),
            command: Command::FireTimer(FireTimer {
                timer: timer.kind,
                step: timer.step.clone().map(StepId),
                due: timer.due,
                lead: timer.lead,
            }),
        };
        let fp = fingerprint(&req);
        let result = match self.replay_if_known(&req, &fp).await {
            // Fired before (a crash or a race after its append): only the clear may be missing.
            Ok(Some(_)) => Err(None),
            // `act` clears the timer: with the notice, or alone when it is stale.
            Ok(None) => match self.act(timer.dossier, &req, fp, Some(timer)).await {
                Ok(outcome) => Ok(outcome.events.len()),
                // A concurrent firing of the same timer won.
                Err(Error::Store(store::Error::DuplicateKey { .. })) => Err(None),
                Err(e) => Err(Some(e)),
            },
            Err(e) => Err(Some(e)),
        };
        match result {
            Ok(n) => Ok(n),
            Err(None) => {
                self.clear(timer).await?;
                Ok(0)
            }
            // A definition or calendar that does not load may load again after a restart (a
            // catalog fixed): the timer stays in the store, since clearing it would leave its
            // dossier with no timer at all (only the earliest is stored), and this process
            // passes it over from now on.
            Err(Some(e @ Error::Definition { .. })) => {
                if self.inner.held_timers.lock().insert(timer.clone()) {
                    tracing::warn!(error = %e, "deadline timer cannot fire while its dossier's definition does not load; kept for a later start");
                }
                Ok(0)
            }
            Err(Some(e @ (Error::Rejected(_) | Error::NotFound(_) | Error::KeyReused { .. }))) => {
                tracing::warn!(error = %e, "deadline timer cannot fire; clearing it: check the dossier with `lienthong verify` and its history");
                self.clear(timer).await?;
                Ok(0)
            }
            Err(Some(e)) => Err(e),
        }
    }

    async fn clear(&self, timer: &Timer) -> Result<(), Error> {
        self.store()
            .update_timers(vec![TimerOp::Clear(timer.clone())])
            .await
            .map_err(|_| store::Error::Closed)??;
        Ok(())
    }

    /// When the earliest stored timer that this process fires is due, if any.
    fn next_timer_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let held = self.inner.held_timers.lock().clone();
        Ok(self
            .store()
            .due_timers(DateTime::<Utc>::MAX_UTC, held.len() + 1)?
            .into_iter()
            .find(|t| !held.contains(t))
            .map(|t| t.at))
    }

    /// Runs [`Engine::fire_due_timers`] until `shutdown` completes: after each round it sleeps
    /// until the next timer is due (bounded, see the module docs) or an append sets an earlier one.
    /// Errors are logged and retried after the sleep. Must be called inside a tokio runtime.
    pub fn spawn_timer_loop<F>(&self, shutdown: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let next_look = &engine.inner.timer_loop_next_look_ms;
            loop {
                if let Err(e) = engine.fire_due_timers().await {
                    tracing::error!(error = %e, "firing deadline timers failed; retrying after the next sleep");
                }
                // Looking: every append that sets a timer from here on wakes the next sleep,
                // until the sleep's end is published below, after the store was read for it.
                // (Not before the firings: the timers they set themselves would wake it.) The
                // fence pairs with the one in `timers_set`: an append that set a timer before
                // this read is seen by it, or sees `i64::MAX` and wakes the sleep.
                next_look.store(i64::MAX, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                let sleep_ms = engine.sleep_ms();
                let until = engine.now() + chrono::Duration::milliseconds(sleep_ms as i64);
                next_look.store(until.timestamp_millis(), Ordering::SeqCst);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => {}
                    () = engine.inner.timers_changed.notified() => {}
                }
            }
            next_look.store(i64::MAX, Ordering::SeqCst);
            tracing::debug!("timer loop stopped");
        })
    }

    /// How long the loop sleeps: until the next timer, within the bounds.
    fn sleep_ms(&self) -> u64 {
        let max_ms = self
            .inner
            .options
            .timer_sleep_ms_max
            .max(TIMER_SLEEP_MS_MIN);
        let until_next_ms = match self.next_timer_at() {
            Ok(Some(at)) => u64::try_from((at - self.now()).num_milliseconds()).unwrap_or(0),
            Ok(None) => max_ms,
            Err(e) => {
                tracing::error!(error = %e, "reading the next deadline timer failed");
                max_ms
            }
        };
        until_next_ms.clamp(TIMER_SLEEP_MS_MIN, max_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};
    use lienthong_workflow::Catalog;

    use crate::runtime::{Engine, ManualClock};
    use crate::store::SledStore;

    /// Whether the timer loop's next `notified()` returns at once (an append woke it).
    async fn woken(e: &Engine) -> bool {
        tokio::select! {
            biased;
            () = e.inner.timers_changed.notified() => true,
            () = std::future::ready(()) => false,
        }
    }

    /// An append wakes the loop for a timer due before the loop's next look, and for any timer
    /// while the loop is looking (or none runs); not for a later one, nor when it set none.
    #[tokio::test]
    async fn an_append_wakes_the_loop_only_for_a_timer_before_its_next_look() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("open"));
        let catalog = Arc::new(Catalog {
            agencies: Default::default(),
            procedures: Default::default(),
            calendars: Default::default(),
        });
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0).unwrap();
        let e = Engine::new(store, catalog, Arc::new(ManualClock::new(now)));
        let (minute, day) = (chrono::Duration::minutes(1), chrono::Duration::days(1));

        e.timers_set(Some(now + day * 365));
        assert!(
            woken(&e).await,
            "no loop has published a look: every timer wakes"
        );
        e.timers_set(None);
        assert!(
            !woken(&e).await,
            "an append that set no timer does not wake"
        );

        let next_look = now + minute;
        (e.inner.timer_loop_next_look_ms).store(
            next_look.timestamp_millis(),
            std::sync::atomic::Ordering::SeqCst,
        );
        e.timers_set(Some(now + day));
        assert!(!woken(&e).await, "a timer after the next look waits for it");
        e.timers_set(Some(next_look));
        assert!(
            !woken(&e).await,
            "a timer due at the next look is found by it"
        );
        e.timers_set(Some(next_look - chrono::Duration::milliseconds(1)));
        assert!(
            woken(&e).await,
            "a timer due before the next look wakes the loop"
        );
        assert!(!woken(&e).await, "one wake per append");
    }
}
