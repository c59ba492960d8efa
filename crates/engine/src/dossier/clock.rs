//! The dossier clock across supplements: the appointment as the indicator rules count it.
//!
//! The events record each supplement period (requested, provided) but never shift a deadline:
//! the contract has no field to carry a shifted appointment or due, and `evolve` may not compute
//! one (it has no calendar and holds no rules). Readers that must judge on-time-ness (the
//! indicators, the deadline board) derive it here from the state, the pinned workflow and the
//! calendar:
//!
//! - a request made during processing (by a step) follows the procedure's `supplement_clock`:
//!   `pause` adds the working time spent waiting to the appointment; `restart` counts the whole
//!   limit again from the provision instant (never earlier than the appointment it replaces);
//! - a request made at intake (by the receiving desk) always restarts: the clock starts only when
//!   the dossier is complete;
//! - an outstanding request is not counted yet (its end is unknown).

use chrono::{DateTime, Utc};
use lienthong_calendar::Calendar;
use lienthong_workflow::{SupplementClock, Workflow};

use super::state::DossierState;

/// The appointment with supplement time taken out; `None` before the receipt.
pub fn adjusted_appointment(
    state: &DossierState,
    workflow: &Workflow,
    calendar: &Calendar,
) -> Result<Option<DateTime<Utc>>, lienthong_calendar::Error> {
    let Some(mut running) = state.appointment else {
        return Ok(None);
    };
    for s in &state.supplements {
        let (Some(requested), Some(provided)) = (s.requested_at, s.provided_at) else {
            continue;
        };
        let clock = if s.step.is_none() {
            SupplementClock::Restart
        } else {
            workflow.supplement_clock
        };
        running = match clock {
            SupplementClock::Pause => {
                let waited = calendar.working_time_between(requested, provided)?;
                calendar.add_working(running, waited)?
            }
            SupplementClock::Restart => running.max(calendar.add(provided, workflow.limit)?),
        };
    }
    Ok(Some(running))
}
