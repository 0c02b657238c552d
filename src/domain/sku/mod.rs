//! The SKU aggregate: stock counters and the reservations held against them.
//!
//! Invariants, checked after every applied event (cheap ones always, the full sum in debug
//! builds and in recovery):
//! - at every location, `reserved == sum(qty of the held parts there)`;
//! - at every location, `reserved + committed <= on_hand`, so `available` is never negative
//!   anywhere, and never in total;
//! - every hold's `qty` is the sum of its parts;
//! - total `on_hand <= ON_HAND_MAX`.
//!
//! Every change to a counter is a movement of the stock ledger ([`apply`] returns them), so
//! the movements of a location sum to its counters.
//!
//! A reservation is `held` until it is committed (its units leave `on_hand`), released, or
//! expired at `expires_ms`; a committed one may later be returned. Settled reservations leave
//! the state; the caller keeps them (in storage) and hands the record to [`decide()`] when a
//! command names one.
//!
//! One concept per file:
//! - [`model`]: what a SKU sells and holds (product, holds, reservations, transfers,
//!   movements, limits);
//! - [`stock`]: counters per location, and allocation (which locations a hold takes);
//! - [`command`]: what may be asked of a SKU, and why it may be refused;
//! - [`event`]: what happened to a SKU (facts, applied without failing);
//! - [`state`]: a live SKU, its invariants, and how an event changes it ([`apply`]);
//! - [`decide`](mod@decide): every rule: command and state in, events or a refusal out;
//! - [`execute`](mod@execute): one command as the SKU's single writer runs it (expire due
//!   holds, look up a settled record, decide, apply, answer).

pub mod command;
pub mod decide;
pub mod event;
pub mod execute;
pub mod expiry;
pub mod holds;
pub mod model;
pub mod state;
pub mod stock;

pub use command::{SkuCommand, SkuRejection};
pub use decide::decide;
pub use event::Crossing;
pub use event::SkuEvent;
pub use execute::{execute, settled_before, Executed, SkuOutcome};
pub use model::{
    settled_reservation, Backorder, Hold, LegacyHold, LegacyReservation, Movement, MovementKind, Product, Reference,
    Reservation, ReservationState, SkuLimits, SkuView, Transfer, TransferRecord, EXPIRE_BATCH_MAX, ON_HAND_MAX,
};
pub use state::{apply, apply_all, SkuSnapshot, SkuSnapshotV2, SkuState};
pub use stock::{Allocation, Part, Parts, Placement, Site, Sites, Stock, Strategy};
