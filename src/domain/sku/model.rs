//! What a SKU sells and holds: its product, held and settled reservations, and its limits.

use serde::{Deserialize, Serialize};

use crate::domain::ids::{ReservationId, SkuId};
use crate::domain::values::{Currency, Name};

/// The most units one SKU may have on hand; keeps every sum far from overflow.
pub const ON_HAND_MAX: u64 = 1_000_000_000_000;

/// Most holds expired by one `ExpireDue` command, so one pass stays short.
pub const EXPIRE_BATCH_MAX: usize = 10_000;

/// What a SKU sells as: name and unit price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Display name.
    pub name: Name,
    /// Unit price in minor units of `currency`.
    pub price_minor: u64,
    /// ISO-4217 currency of the price.
    pub currency: Currency,
}

/// A reservation currently held against a SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The reservation's id.
    pub id: ReservationId,
    /// Units held.
    pub qty: u64,
    /// When the hold was taken.
    pub created_ms: u64,
    /// When the hold lapses unless committed or released first.
    pub expires_ms: u64,
}

/// The lifecycle state of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Units are held and not available to others.
    Held,
    /// Units left `on_hand` for good.
    Committed,
    /// Released early by its owner; units are available again.
    Released,
    /// Lapsed at `expires_ms`; units are available again.
    Expired,
    /// Committed, then given back to `on_hand` (its order was cancelled or expired).
    Returned,
}

/// A reservation as clients see it, held or settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation's id.
    pub id: ReservationId,
    /// The SKU it holds units of.
    pub sku: SkuId,
    /// Units.
    pub qty: u64,
    /// Where it is in its lifecycle.
    pub state: ReservationState,
    /// When it was taken.
    pub created_ms: u64,
    /// When it lapses (or lapsed) if still held.
    pub expires_ms: u64,
    /// When it left `held`, if it has.
    pub settled_ms: Option<u64>,
}

/// The counters a SKU reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuView {
    /// The SKU id.
    pub sku: SkuId,
    /// Name and price.
    pub product: Product,
    /// Units physically in stock, held ones included.
    pub on_hand: u64,
    /// Units held by reservations.
    pub reserved: u64,
    /// Units a new reservation can take: `on_hand - reserved`.
    pub available: u64,
}

/// Limits that bound a SKU's state; from configuration.
#[derive(Debug, Clone, Copy)]
pub struct SkuLimits {
    /// Most reservations one SKU may hold at once.
    pub holds_max: usize,
}

/// The settled record a settling event leaves behind, built from the hold before it went.
pub fn settled_reservation(sku: &SkuId, hold: &Hold, state: ReservationState, now_ms: u64) -> Reservation {
    Reservation {
        id: hold.id,
        sku: sku.clone(),
        qty: hold.qty,
        state,
        created_ms: hold.created_ms,
        expires_ms: hold.expires_ms,
        settled_ms: Some(now_ms),
    }
}
