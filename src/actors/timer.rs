//! `DueTimer`: an actor's timer for one instant (a cart's expiry, an order's payment timeout,
//! or a retry of work that could not be written yet).
//!
//! Re-arming for the instant already armed keeps the armed timer, and an overdue retry that is
//! already armed stands: re-arming on every message would let a client that polls push the
//! timer back forever. A timer is kept only while it still fires in time by the real clock
//! too: after the wall clock stepped forward (or a test moved its clock), an instant that is
//! due now, or sooner than armed for, is armed anew instead of waiting for the old delay.

use std::time::{Duration, Instant};

use actix::prelude::*;

/// How soon overdue work (it could not be written yet) is tried again.
pub const RETRY: Duration = Duration::from_millis(200);

/// An actor's timer for one instant.
#[derive(Default)]
pub struct DueTimer {
    /// The armed timer, if any.
    armed: Option<Armed>,
}

/// An armed timer.
struct Armed {
    /// The instant it is for (ms since the epoch, by the server's clock).
    due_ms: u64,
    /// When it fires, by the real clock.
    fires_at: Instant,
    handle: SpawnHandle,
}

impl DueTimer {
    /// Cancels the armed timer, if any.
    pub fn cancel<A>(&mut self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some(armed) = self.armed.take() {
            ctx.cancel_future(armed.handle);
        }
    }

    /// Arms the timer to run `fire` at `due_ms` (after [`RETRY`] when it is already due),
    /// unless the armed timer already fits. `slot` finds this timer in the actor, so that it
    /// reads as disarmed while `fire` runs.
    pub fn arm<A>(
        &mut self,
        ctx: &mut Context<A>,
        now_ms: u64,
        due_ms: u64,
        slot: fn(&mut A) -> &mut DueTimer,
        fire: fn(&mut A, &mut Context<A>),
    ) where
        A: Actor<Context = Context<A>>,
    {
        let retry_ms = RETRY.as_millis() as u64;
        let (armed_ms, delay) = if due_ms <= now_ms {
            (now_ms.saturating_add(retry_ms), RETRY)
        } else {
            (due_ms, Duration::from_millis(due_ms - now_ms))
        };
        let now = Instant::now();
        if let Some(armed) = self.armed.take() {
            // Overdue: a timer that fires within a retry stands. Not due yet: the timer for
            // this very instant stands unless it would fire late (armed before the clock
            // stepped forward).
            let in_time = armed.fires_at <= now + delay + RETRY;
            let keep = if due_ms <= now_ms {
                armed.fires_at <= now + RETRY
            } else {
                armed.due_ms == due_ms && in_time
            };
            if keep {
                self.armed = Some(armed);
                return;
            }
            ctx.cancel_future(armed.handle);
        }
        let handle = ctx.run_later(delay, move |actor, ctx| {
            slot(actor).armed = None;
            fire(actor, ctx);
        });
        self.armed = Some(Armed {
            due_ms: armed_ms,
            fires_at: now + delay,
            handle,
        });
    }
}
