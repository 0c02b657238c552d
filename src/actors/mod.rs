//! The actors: one per aggregate, each the single writer of its state. They route, persist
//! and reply; the rules are in [`crate::domain`].
//!
//! The aggregates:
//! - [`sku`]: `SkuActor`, one SKU's stock and the reservations held against it.
//! - [`cart`]: `CartActor`, one cart's lines, and the coordinator of its checkout saga.
//! - [`order`]: `OrderActor`, one order's status, payment timeout and live tracking.
//!
//! Beside them:
//! - [`kafka`]: `KafkaBridge`, which publishes the event log to Kafka as CloudEvents.
//! - [`feed`]: who watches which SKU's live stock.
//! - [`batch`]: bulk stock sync, all SKUs of a batch or none (two phases over their actors).
//!
//! The plumbing every actor uses:
//! - [`mailbox`]: the hard bound on every actor's mailbox, and the ask protocol (`Reply`,
//!   `Acked`: an answer with the ticket to wait on before reporting it).
//! - [`services`]: what every actor shares: writer, store view, clock; `persist`.
//! - [`registry`]: where each actor lives (spread over the arbiters), the directories of SKUs,
//!   carts and orders, and the narrow context each kind of actor gets.
//! - [`timer`]: `DueTimer`, an actor's timer for one instant.
//! - [`turns`]: each SKU's fair share of the writer, so a flash sale queues behind itself.

pub mod batch;
pub mod cart;
pub mod feed;
pub mod kafka;
pub mod mailbox;
pub mod order;
pub mod registry;
pub mod services;
pub mod sku;
pub mod timer;
pub mod turns;

pub use crate::access::Access;
pub use mailbox::{Acked, AskError, Mailbox, MailboxSlot, Reply};
pub use registry::Registry;
pub use services::{persist, Services};
pub use sku::{SkuActor, SkuAnswer, SkuDeps, SkuFailure, SkuOutcome, SkuReply};
