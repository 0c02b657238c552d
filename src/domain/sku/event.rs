//! What happened to a SKU. Events are facts: applying one never fails.

use serde::{Deserialize, Serialize};

use super::model::{Hold, Product, ReservationState};
use crate::domain::ids::ReservationId;
use crate::domain::values::Name;

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
    /// Units were received.
    StockRestocked {
        /// Units added to `on_hand`.
        qty: u64,
    },
    /// `on_hand` was corrected.
    StockAdjusted {
        /// Signed change of `on_hand`.
        delta: i64,
        /// Why.
        reason: Name,
    },
    /// Units were held.
    StockReserved {
        /// The new hold.
        hold: Hold,
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
    /// A held reservation changed size or expiry.
    ReservationChanged {
        /// Which reservation.
        id: ReservationId,
        /// Units it holds now.
        qty: u64,
        /// When it lapses now.
        expires_ms: u64,
    },
    /// A committed reservation's units went back to `on_hand`.
    ReservationReturned {
        /// Which reservation.
        id: ReservationId,
        /// Units returned.
        qty: u64,
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
            SkuEvent::ReservationReturned { .. } => "stockroom.stock.returned",
        }
    }

    /// The reservation an event settles, with the state it settles into.
    pub fn settles(&self) -> Option<(ReservationId, ReservationState)> {
        match self {
            SkuEvent::ReservationReleased { id, .. } => Some((*id, ReservationState::Released)),
            SkuEvent::ReservationCommitted { id, .. } => Some((*id, ReservationState::Committed)),
            SkuEvent::ReservationExpired { id, .. } => Some((*id, ReservationState::Expired)),
            _ => None,
        }
    }
}
