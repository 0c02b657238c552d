//! The actors: one per aggregate, each the single writer of its state.
//!
//! - [`sku::SkuActor`]: one SKU's stock and the reservations held against it.
//! - [`registry::Registry`]: finds (and starts) actors; spreads them over the arbiters.
//! - [`mailbox::Mailbox`]: the hard bound on every actor's mailbox.

pub mod mailbox;
pub mod registry;
pub mod sku;

pub use mailbox::{AskError, Mailbox, MailboxSlot};
pub use registry::Registry;
pub use sku::{Acked, SkuActor, SkuDeps, SkuFailure, SkuOutcome, SkuReply};
