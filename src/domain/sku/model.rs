//! What a SKU sells and holds: its product, held and settled reservations, and its limits.

use serde::{Deserialize, Serialize};

use super::stock::{at_default, Allocation, Part, Parts, Stock};
use crate::domain::ids::{ReservationId, SkuId, TransferId};
use crate::domain::location::LocationId;
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
    /// Units held: the sum of `parts`.
    pub qty: u64,
    /// Where the units are held, one part per location (almost always one: kept inline).
    pub parts: Parts,
    /// When the hold was taken.
    pub created_ms: u64,
    /// When the hold lapses unless committed or released first.
    pub expires_ms: u64,
}

/// A hold as the releases before locations stored it: all of it at `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyHold {
    /// The reservation's id.
    pub id: ReservationId,
    /// Units held.
    pub qty: u64,
    /// When the hold was taken.
    pub created_ms: u64,
    /// When the hold lapses.
    pub expires_ms: u64,
}

impl From<LegacyHold> for Hold {
    fn from(legacy: LegacyHold) -> Self {
        Hold {
            id: legacy.id,
            qty: legacy.qty,
            parts: at_default(legacy.qty).into_iter().collect(),
            created_ms: legacy.created_ms,
            expires_ms: legacy.expires_ms,
        }
    }
}

/// Units of a reservation held or sold beyond a location's shelf, waiting for a restock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backorder {
    /// The reservation (held, or sold to an order).
    pub id: ReservationId,
    /// Where its units will come from.
    pub location: LocationId,
    /// Units not on the shelf yet.
    pub qty: u64,
}

/// The lifecycle state of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Units are held and not available to others.
    Held,
    /// Sold outright: its units left `on_hand` when it was committed (a reservation
    /// committed directly, which nothing here ships, or any sale of a release before
    /// fulfilment). Shown as `committed`.
    #[serde(rename(serialize = "committed"))]
    Sold,
    /// Released early by its owner; units are available again.
    Released,
    /// Lapsed at `expires_ms`; units are available again.
    Expired,
    /// Committed, then given back (its order was cancelled or expired).
    Returned,
    /// Sold to an order, not shipped yet: its units are `committed`, still on the shelf,
    /// and its `parts` are the units not shipped yet. Shown as `committed`.
    Committed,
}

impl ReservationState {
    /// Whether the reservation was sold (committed before or since fulfilment).
    pub fn is_sold(self) -> bool {
        matches!(self, ReservationState::Sold | ReservationState::Committed)
    }
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
    /// Where the units are (were) held.
    pub parts: Vec<Part>,
    /// Where it is in its lifecycle.
    pub state: ReservationState,
    /// When it was taken.
    pub created_ms: u64,
    /// When it lapses (or lapsed) if still held.
    pub expires_ms: u64,
    /// When it left `held`, if it has.
    pub settled_ms: Option<u64>,
}

/// A settled reservation as the releases before locations stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyReservation {
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

impl From<LegacyReservation> for Reservation {
    fn from(legacy: LegacyReservation) -> Self {
        Reservation {
            id: legacy.id,
            sku: legacy.sku,
            qty: legacy.qty,
            parts: at_default(legacy.qty),
            state: legacy.state,
            created_ms: legacy.created_ms,
            expires_ms: legacy.expires_ms,
            settled_ms: legacy.settled_ms,
        }
    }
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
    /// Units sold, not yet shipped.
    pub committed: u64,
    /// Units a new reservation can take: `on_hand - reserved - committed`.
    pub available: u64,
    /// The counters at each location the SKU has been stocked at, by id.
    pub locations: Vec<(LocationId, Stock)>,
    /// Transfers on their way between locations.
    pub in_transit: Vec<Transfer>,
    /// Below this many available units, a location is low on stock (0: never low).
    pub low_stock_threshold: u64,
    /// Most units that may be held or sold beyond the shelves (0: none).
    pub backorder_limit: u64,
    /// Units held or sold beyond the shelves now.
    pub backordered: u64,
    /// When a preorder becomes available.
    pub available_from_ms: Option<u64>,
}

impl SkuView {
    /// The counters of a stored SKU row.
    pub fn from_snapshot(sku: SkuId, snapshot: super::state::SkuSnapshot) -> Self {
        let mut view = SkuView {
            sku,
            product: snapshot.product,
            on_hand: 0,
            reserved: 0,
            committed: 0,
            available: 0,
            locations: snapshot.stock,
            in_transit: snapshot.in_transit,
            low_stock_threshold: snapshot.low_stock_threshold,
            backorder_limit: snapshot.backorder_limit,
            backordered: snapshot.backorders.iter().map(|backorder| backorder.qty).sum(),
            available_from_ms: snapshot.available_from_ms,
        };
        view.sum_locations();
        view
    }

    /// The SKU as seen from some locations only: `locations` lists those of `ids` (in that
    /// order, zero where the SKU has no stock) and the counters are their sums.
    pub fn at_locations(&self, ids: &[LocationId]) -> SkuView {
        let mut view = self.clone();
        view.locations = ids
            .iter()
            .map(|id| {
                let stock = self
                    .locations
                    .iter()
                    .find(|(at, _)| at == id)
                    .map(|(_, stock)| *stock)
                    .unwrap_or_default();
                (id.clone(), stock)
            })
            .collect();
        view.sum_locations();
        view
    }

    fn sum_locations(&mut self) {
        let mut totals = Stock::default();
        for (_, stock) in &self.locations {
            totals.add(stock);
        }
        self.on_hand = totals.on_hand;
        self.reserved = totals.reserved;
        self.committed = totals.committed;
        self.available = totals.available();
    }
}

/// Limits that bound a SKU's state and the rules that place its holds; from configuration.
#[derive(Debug, Clone, Default)]
pub struct SkuLimits {
    /// Most reservations one SKU may hold at once.
    pub holds_max: usize,
    /// How holds are placed across locations.
    pub allocation: Allocation,
}

/// Units on their way from one location to another: they left `from`'s shelf and reach
/// `to`'s when the transfer is received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The transfer's id.
    pub id: TransferId,
    /// Where the units left.
    pub from: LocationId,
    /// Where they go.
    pub to: LocationId,
    /// How many.
    pub qty: u64,
    /// When they left.
    pub created_ms: u64,
}

/// A transfer as stored and shown: in transit, or received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The SKU moved.
    pub sku: SkuId,
    /// The transfer.
    pub transfer: Transfer,
    /// When it was received, once it was.
    pub received_ms: Option<u64>,
}

/// What kind of change a movement of the stock ledger is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Units received (restock, or the stock a SKU is created with).
    Receipt,
    /// A correction of `on_hand` with a reason.
    Adjustment,
    /// A physical count set `on_hand`.
    Count,
    /// Units held.
    Reservation,
    /// Held units given back.
    Release,
    /// A hold lapsed.
    Expiry,
    /// Held units sold.
    Sale,
    /// Sold units left the shelf.
    Shipment,
    /// Sold units came back.
    Return,
    /// Units left for another location.
    TransferOut,
    /// Units arrived from another location.
    TransferIn,
    /// A backorder was filled.
    BackorderFilled,
}

impl MovementKind {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Receipt => "receipt",
            MovementKind::Adjustment => "adjustment",
            MovementKind::Count => "count",
            MovementKind::Reservation => "reservation",
            MovementKind::Release => "release",
            MovementKind::Expiry => "expiry",
            MovementKind::Sale => "sale",
            MovementKind::Shipment => "shipment",
            MovementKind::Return => "return",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::BackorderFilled => "backorder_filled",
        }
    }
}

/// One change to the counters of one SKU at one location: an entry of the stock ledger.
/// For every SKU and location, the deltas of its movements sum to its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// Position in the SKU's ledger: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// Where.
    pub location: LocationId,
    /// What kind of change.
    pub kind: MovementKind,
    /// Change of `on_hand`.
    pub on_hand_delta: i64,
    /// Change of `reserved`.
    pub reserved_delta: i64,
    /// Change of `committed`.
    pub committed_delta: i64,
    /// Units available at the location right after it (what the stock events on Kafka show
    /// per location).
    pub available_after: u64,
    /// Why (adjustments, counts, restocks with a reason).
    pub reason: Option<String>,
    /// What it belongs to: a reservation or a transfer.
    pub reference: Option<Reference>,
}

/// What a movement belongs to (stored as the id's 16 bytes, shown as its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reference {
    /// A reservation (held, released, lapsed, sold or returned units).
    Reservation(ReservationId),
    /// A transfer (units sent or received).
    Transfer(TransferId),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Reservation(id) => id.fmt(f),
            Reference::Transfer(id) => id.fmt(f),
        }
    }
}

/// The settled record a settling event leaves behind, built from the hold before it went.
pub fn settled_reservation(sku: &SkuId, hold: &Hold, state: ReservationState, now_ms: u64) -> Reservation {
    Reservation {
        id: hold.id,
        sku: sku.clone(),
        qty: hold.qty,
        parts: hold.parts.to_vec(),
        state,
        created_ms: hold.created_ms,
        expires_ms: hold.expires_ms,
        settled_ms: Some(now_ms),
    }
}
