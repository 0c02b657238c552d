//! The actors: one per aggregate, each the single writer of its state.
//!
//! - [`sku::SkuActor`]: one SKU's stock and the reservations held against it.
//! - [`registry::Registry`]: finds (and starts) actors; spreads them over the arbiters.
//! - [`mailbox::Mailbox`]: the hard bound on every actor's mailbox.
//! - [`turns::Turns`]: each SKU's fair share of the writer, so a flash sale queues behind itself.

pub mod cart;
pub mod feed;
pub mod kafka;
pub mod mailbox;
pub mod order;
pub mod registry;
pub mod sku;
pub mod timer;
pub mod turns;

use crate::domain::DomainEvent;
use crate::persistence::writer::Change;
use crate::persistence::{Op, Ticket, Writer};

/// Submits rows and events as one change; `None` when the writer's queue is full.
pub fn persist(writer: &Writer, ops: Vec<Op>, events: Vec<DomainEvent>, time_ms: u64) -> Option<Ticket> {
    let permit = writer.try_reserve()?;
    Some(permit.submit(Change { ops, events, time_ms }))
}

pub use crate::access::Access;
pub use mailbox::{AskError, Mailbox, MailboxSlot};
pub use registry::Registry;
pub use sku::{Acked, SkuActor, SkuAnswer, SkuDeps, SkuFailure, SkuOutcome, SkuReply};
