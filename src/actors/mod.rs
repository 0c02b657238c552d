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

/// Who is asking: the admin, or the holder of a cart token (identified by the hash of its
/// secret). Cart and order actors check it against their own token hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The admin token: everything.
    Admin,
    /// A cart token: its own cart and the orders made from it.
    Token([u8; 32]),
}

impl Access {
    /// Whether these credentials may use an aggregate guarded by `token_hash`.
    pub fn allows(&self, token_hash: &[u8; 32]) -> bool {
        match self {
            Access::Admin => true,
            // Compared in time independent of where the hashes differ.
            Access::Token(hash) => hash.iter().zip(token_hash).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0,
        }
    }
}

/// Submits rows and events as one change; `None` when the writer's queue is full.
pub fn persist(writer: &Writer, ops: Vec<Op>, events: Vec<DomainEvent>, time_ms: u64) -> Option<Ticket> {
    let permit = writer.try_reserve()?;
    Some(permit.submit(Change { ops, events, time_ms }))
}

pub use mailbox::{AskError, Mailbox, MailboxSlot};
pub use registry::Registry;
pub use sku::{Acked, SkuActor, SkuDeps, SkuFailure, SkuOutcome, SkuReply};
