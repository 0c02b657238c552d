//! What every actor shares: the writer its changes go through, the store view it reads, and
//! the clock.

use std::sync::Arc;

use crate::access::By;
use crate::domain::{Clock, DomainEvent};
use crate::persistence::writer::Change;
use crate::persistence::{Op, StateView, Ticket, Writer};

/// The writer, the store and the clock, shared by every actor.
#[derive(Clone)]
pub struct Services {
    /// The group-commit writer.
    pub writer: Arc<Writer>,
    /// The state as readers see it (settled records, reloads, loading carts and orders).
    pub store: StateView,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
}

/// Submits rows and events as one change; `None` when the writer's queue is full.
pub fn persist(writer: &Writer, ops: Vec<Op>, events: Vec<DomainEvent>, time_ms: u64, by: &By) -> Option<Ticket> {
    let permit = writer.try_reserve()?;
    Some(permit.submit(Change {
        ops,
        events,
        time_ms,
        by: Arc::clone(by),
    }))
}
