//! What happened to a SKU. Events are facts: applying one never fails.

use serde::{Deserialize, Serialize};

use super::model::{Hold, LegacyHold, Product, ReservationState, Transfer};
use super::stock::Part;
use crate::domain::ids::{ReservationId, TransferId};
use crate::domain::location::LocationId;
use crate::domain::values::Name;

/// Which side of a threshold a location's availability crossed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Crossing {
    /// Down to `low_stock_threshold` or below (still above zero).
    Low,
    /// Down to zero.
    Out,
    /// Up from zero.
    BackIn,
}

/// Events are stored in bincode, which numbers variants in order: new variants go at the
/// end, and the variants marked "before locations" are kept, unchanged, so that records written
/// by earlier releases still read (they are about `default`). This build writes the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkuEvent {
    /// The SKU came into existence with `on_hand` units.
    SkuCreated {
        /// Name and price.
        product: Product,
        /// Initial stock.
        on_hand: u64,
    },
    /// Name or price changed.
    SkuUpdated {
        /// The new name and price.
        product: Product,
    },
    /// Before locations: units were received at `default`.
    StockRestocked {
        /// Units added to `on_hand`.
        qty: u64,
    },
    /// Before locations: `on_hand` at `default` was corrected.
    StockAdjusted {
        /// Signed change of `on_hand`.
        delta: i64,
        /// Why.
        reason: Name,
    },
    /// Before locations: units were held at `default`.
    StockReserved {
        /// The new hold.
        hold: LegacyHold,
    },
    /// A hold was released by its owner.
    ReservationReleased {
        /// Which reservation.
        id: ReservationId,
        /// Units made available again.
        qty: u64,
    },
    /// A hold was committed; its units left `on_hand`.
    ReservationCommitted {
        /// Which reservation.
        id: ReservationId,
        /// Units sold.
        qty: u64,
    },
    /// A hold lapsed; its units are available again.
    ReservationExpired {
        /// Which reservation.
        id: ReservationId,
        /// Units made available again.
        qty: u64,
    },
    /// Before locations: a held reservation (all at `default`) changed size or expiry.
    ReservationChanged {
        /// Which reservation.
        id: ReservationId,
        /// Units it holds now.
        qty: u64,
        /// When it lapses now.
        expires_ms: u64,
    },
    /// Before locations: a committed reservation's units went back to `on_hand` at `default`.
    ReservationReturned {
        /// Which reservation.
        id: ReservationId,
        /// Units returned.
        qty: u64,
    },
    /// Units were received at a location.
    Received {
        /// Where.
        location: LocationId,
        /// Units added to `on_hand` there.
        qty: u64,
        /// Why, when given.
        reason: Option<Name>,
    },
    /// `on_hand` at a location was corrected.
    Adjusted {
        /// Where.
        location: LocationId,
        /// Signed change of `on_hand` there.
        delta: i64,
        /// Why.
        reason: Name,
    },
    /// A physical count set `on_hand` at a location.
    Counted {
        /// Where.
        location: LocationId,
        /// The units counted.
        on_hand: u64,
        /// Why, when given.
        reason: Option<Name>,
    },
    /// Units were held, at the locations its parts name.
    Held {
        /// The new hold.
        hold: Hold,
    },
    /// A held reservation changed size, places or expiry.
    HoldChanged {
        /// Which reservation.
        id: ReservationId,
        /// Units it holds now.
        qty: u64,
        /// Where it holds them now.
        parts: Vec<Part>,
        /// When it lapses now.
        expires_ms: u64,
    },
    /// A committed reservation's units went back on the shelves its parts name.
    Returned {
        /// Which reservation.
        id: ReservationId,
        /// Units returned, per location.
        parts: Vec<Part>,
    },
    /// Units left one location for another.
    TransferSent {
        /// The transfer.
        transfer: Transfer,
    },
    /// A transfer arrived: its units are on the destination's shelf.
    TransferReceived {
        /// Which transfer.
        id: TransferId,
        /// Where it arrived.
        to: LocationId,
        /// Units received.
        qty: u64,
    },
    /// A location's availability crossed `low_stock_threshold` or zero. Changes no counter.
    LevelCrossed {
        /// Where.
        location: LocationId,
        /// Which way.
        crossing: Crossing,
        /// Units available there now.
        available: u64,
    },
    /// The SKU's stock settings changed.
    SettingsChanged {
        /// Below this many available units a location is low (0: never).
        low_stock_threshold: u64,
    },
    /// Retention folded the ledger's oldest movements, up to `upto_seq`, into the opening
    /// balance; their rows are deleted. Changes no counter.
    LedgerTrimmed {
        /// The first movement folded.
        from_seq: u64,
        /// The last movement folded.
        upto_seq: u64,
        /// Their sums per location: on_hand, reserved and committed deltas.
        folded: Vec<(LocationId, [i64; 3])>,
    },
    /// A hold was sold: its units went from `reserved` to `committed`, still on the shelf
    /// until shipped.
    Committed {
        /// Which reservation.
        id: ReservationId,
        /// Units sold.
        qty: u64,
    },
    /// Sold units were shipped from a location: they left `on_hand` and `committed` there
    /// (`on_shelf`), or, for a reservation sold before fulfilment (its units left `on_hand`
    /// when committed), only its record changed.
    Shipped {
        /// Which reservation.
        id: ReservationId,
        /// Where from.
        location: LocationId,
        /// Units shipped.
        qty: u64,
        /// Whether the units were still counted on the shelf.
        on_shelf: bool,
    },
    /// A sold reservation's units not yet shipped were given back (its order was cancelled
    /// or expired): `committed` went down, `available` up.
    Uncommitted {
        /// Which reservation.
        id: ReservationId,
        /// Units given back, per location.
        parts: Vec<Part>,
    },
    /// Shipped units came back to a location: restocked (back in `on_hand`), or written off
    /// as damaged (a `return` movement and an `adjustment` that takes them off again).
    TakenBack {
        /// The reservation they were sold under.
        id: ReservationId,
        /// Where they came back.
        location: LocationId,
        /// Units.
        qty: u64,
        /// Whether they went back on the shelf.
        restock: bool,
    },
    /// Backordered units of a reservation are on the shelf now (a restock, or units freed):
    /// oldest backorders first. Changes no counter.
    BackorderFilled {
        /// The reservation.
        id: ReservationId,
        /// Where.
        location: LocationId,
        /// Units filled.
        qty: u64,
    },
    /// The SKU's backorder settings changed.
    BackorderSettingsChanged {
        /// Most units that may be held or sold beyond the shelves.
        backorder_limit: u64,
        /// When a preorder becomes available (none: not a preorder).
        available_from_ms: Option<u64>,
    },
}

impl SkuEvent {
    /// The CloudEvents-style type name of the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            SkuEvent::SkuCreated { .. } => "stockroom.sku.created",
            SkuEvent::SkuUpdated { .. } => "stockroom.sku.updated",
            SkuEvent::StockRestocked { .. } => "stockroom.stock.restocked",
            SkuEvent::StockAdjusted { .. } => "stockroom.stock.adjusted",
            SkuEvent::StockReserved { .. } => "stockroom.stock.reserved",
            SkuEvent::ReservationReleased { .. } => "stockroom.stock.released",
            SkuEvent::ReservationCommitted { .. } => "stockroom.stock.committed",
            SkuEvent::ReservationExpired { .. } => "stockroom.stock.expired",
            SkuEvent::ReservationChanged { .. } => "stockroom.stock.hold_changed",
            SkuEvent::ReservationReturned { .. } | SkuEvent::Returned { .. } => "stockroom.stock.returned",
            SkuEvent::Received { .. } => "stockroom.stock.restocked",
            SkuEvent::Adjusted { .. } => "stockroom.stock.adjusted",
            SkuEvent::Counted { .. } => "stockroom.stock.counted",
            SkuEvent::Held { .. } => "stockroom.stock.reserved",
            SkuEvent::HoldChanged { .. } => "stockroom.stock.hold_changed",
            SkuEvent::TransferSent { .. } => "stockroom.transfer.sent",
            SkuEvent::TransferReceived { .. } => "stockroom.transfer.received",
            SkuEvent::LevelCrossed { crossing, .. } => match crossing {
                Crossing::Low => "stockroom.stock.low",
                Crossing::Out => "stockroom.stock.out",
                Crossing::BackIn => "stockroom.stock.back_in",
            },
            SkuEvent::SettingsChanged { .. } => "stockroom.sku.settings_changed",
            SkuEvent::LedgerTrimmed { .. } => "stockroom.ledger.trimmed",
            SkuEvent::Committed { .. } => "stockroom.stock.committed",
            SkuEvent::Shipped { .. } => "stockroom.stock.shipped",
            SkuEvent::Uncommitted { .. } => "stockroom.stock.returned",
            SkuEvent::TakenBack { .. } => "stockroom.stock.taken_back",
            SkuEvent::BackorderFilled { .. } => "stockroom.stock.backorder_filled",
            SkuEvent::BackorderSettingsChanged { .. } => "stockroom.sku.settings_changed",
        }
    }

    /// The reservation an event settles, with the state it settles into.
    pub fn settles(&self) -> Option<(ReservationId, ReservationState)> {
        match self {
            SkuEvent::ReservationReleased { id, .. } => Some((*id, ReservationState::Released)),
            SkuEvent::ReservationCommitted { id, .. } => Some((*id, ReservationState::Sold)),
            SkuEvent::Committed { id, .. } => Some((*id, ReservationState::Committed)),
            SkuEvent::ReservationExpired { id, .. } => Some((*id, ReservationState::Expired)),
            _ => None,
        }
    }
}
