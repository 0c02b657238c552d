//! `DueTimer`: an actor's timer for one instant (a cart's expiry, an order's payment timeout,
//! or a retry of work that could not be written yet).
//!
//! Re-arming for the instant already armed keeps the armed timer, and an overdue retry that is
//! already armed stands: re-arming on every message would let a client that polls push the
//! timer back forever.

use std::time::Duration;

use actix::prelude::*;

/// How soon overdue work (it could not be written yet) is tried again.
pub const RETRY: Duration = Duration::from_millis(200);

/// An actor's timer for one instant.
#[derive(Default)]
pub struct DueTimer {
    /// When the armed timer fires (ms since the epoch), and its handle.
    armed: Option<(u64, SpawnHandle)>,
}

impl DueTimer {
    /// Cancels the armed timer, if any.
    pub fn cancel<A>(&mut self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some((_, handle)) = self.armed.take() {
            ctx.cancel_future(handle);
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
        if let Some((armed_ms, handle)) = self.armed.take() {
            let overdue_and_armed = due_ms <= now_ms && armed_ms <= now_ms.saturating_add(retry_ms);
            if armed_ms == due_ms || overdue_and_armed {
                self.armed = Some((armed_ms, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let (armed_ms, delay) = if due_ms <= now_ms {
            (now_ms.saturating_add(retry_ms), RETRY)
        } else {
            (due_ms, Duration::from_millis(due_ms - now_ms))
        };
        let handle = ctx.run_later(delay, move |actor, ctx| {
            slot(actor).armed = None;
            fire(actor, ctx);
        });
        self.armed = Some((armed_ms, handle));
    }
}
