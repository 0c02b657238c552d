//! The stored rows, and how a SKU change turns into puts and deletes.
//!
//! Rows are fine-grained current state (one per SKU, one per hold, one per settled
//! reservation), so recovery reads state instead of replaying events.

use serde::{Deserialize, Serialize};

use super::{codec, keys, Op};
use crate::domain::order::{OrderLine, OrderStatus};
use crate::domain::sku::{Hold, Product, Reservation, SkuEvent, SkuState};
use crate::domain::{CartId, Currency, OrderId, SkuId};

/// A SKU's product and counters; its holds are rows of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuRow {
    /// Name and price.
    pub product: Product,
    /// Units in stock.
    pub on_hand: u64,
    /// Units held: equals the sum of the SKU's hold rows.
    pub reserved: u64,
}

/// A domain event tagged with the aggregate it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainEvent {
    /// An event of a SKU's inventory.
    Sku {
        /// The SKU.
        sku: SkuId,
        /// What happened.
        event: SkuEvent,
    },
    /// An event of a cart.
    Cart {
        /// The cart.
        cart: CartId,
        /// What happened.
        event: CartEvent,
    },
    /// An event of an order.
    Order {
        /// The order.
        order: OrderId,
        /// What happened.
        event: OrderEvent,
    },
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    /// The cart was created.
    Created,
    /// A line's quantity was set (0: removed).
    LineSet {
        /// The SKU.
        sku: SkuId,
        /// Units held for the cart now.
        qty: u64,
    },
    /// Checkout began for this order id.
    CheckoutStarted {
        /// The order being placed.
        order: OrderId,
    },
    /// Checkout failed: these lines could not be committed; committed ones went back.
    CheckoutFailed {
        /// The lines that failed.
        skus: Vec<SkuId>,
    },
    /// Checkout placed the order.
    CheckedOut {
        /// The order.
        order: OrderId,
    },
    /// The cart's hold time passed; its stock was released.
    Expired,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order was placed with these lines.
    Placed {
        /// The order's total.
        total_minor: u64,
        /// Its currency.
        currency: Currency,
        /// Lines with prices.
        lines: Vec<OrderLine>,
    },
    /// The status changed.
    StatusChanged {
        /// The history sequence number of the change.
        seq: u64,
        /// The new status.
        status: OrderStatus,
    },
    /// A cancelled or expired order's stock went back to the shelves.
    StockReturned,
}

impl DomainEvent {
    /// The aggregate id, used as the Kafka record key and CloudEvents subject.
    pub fn subject(&self) -> String {
        match self {
            DomainEvent::Sku { sku, .. } => sku.to_string(),
            DomainEvent::Cart { cart, .. } => cart.to_string(),
            DomainEvent::Order { order, .. } => order.to_string(),
        }
    }

    /// The CloudEvents type.
    pub fn type_name(&self) -> &'static str {
        match self {
            DomainEvent::Sku { event, .. } => event.type_name(),
            DomainEvent::Cart { event, .. } => match event {
                CartEvent::Created => "stockroom.cart.created",
                CartEvent::LineSet { .. } => "stockroom.cart.line_set",
                CartEvent::CheckoutStarted { .. } => "stockroom.cart.checkout_started",
                CartEvent::CheckoutFailed { .. } => "stockroom.cart.checkout_failed",
                CartEvent::CheckedOut { .. } => "stockroom.cart.checked_out",
                CartEvent::Expired => "stockroom.cart.expired",
            },
            DomainEvent::Order { event, .. } => match event {
                OrderEvent::Placed { .. } => "stockroom.order.placed",
                OrderEvent::StatusChanged { status, .. } => match status {
                    OrderStatus::Placed => "stockroom.order.placed",
                    OrderStatus::Paid => "stockroom.order.paid",
                    OrderStatus::Packed => "stockroom.order.packed",
                    OrderStatus::Shipped => "stockroom.order.shipped",
                    OrderStatus::Delivered => "stockroom.order.delivered",
                    OrderStatus::Cancelled => "stockroom.order.cancelled",
                    OrderStatus::Expired => "stockroom.order.expired",
                },
                OrderEvent::StockReturned => "stockroom.order.stock_returned",
            },
        }
    }
}

/// One entry of the event log (the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global sequence number: unique, increasing, in commit order.
    pub seq: u64,
    /// When the change was decided.
    pub time_ms: u64,
    /// What happened.
    pub event: DomainEvent,
}

/// The puts and deletes that store a SKU after `events` applied, given the records they
/// settled. Settled records are kept until `now_ms + settled_retention_ms`.
pub fn sku_change_ops(
    after: &SkuState,
    events: &[SkuEvent],
    settled: &[Reservation],
    now_ms: u64,
    settled_retention_ms: u64,
) -> Vec<Op> {
    let sku = after.sku();
    let mut ops = Vec::with_capacity(1 + 3 * events.len());
    ops.push(Op::Put(keys::sku(sku), codec::encode(&sku_row(after))));
    // Settled holds first: a hold settled early in the call (expired) may be held again later
    // in it under the same id, and the later put must win.
    let due_ms = now_ms.saturating_add(settled_retention_ms);
    for record in settled {
        let key = keys::reservation(&record.id);
        ops.push(Op::Delete(keys::hold(sku, &record.id)));
        ops.push(Op::Put(keys::expiring(due_ms, &key), Vec::new()));
        ops.push(Op::Put(key, codec::encode(record)));
    }
    for event in events {
        let changed = match event {
            SkuEvent::StockReserved { hold } => Some(hold.id),
            SkuEvent::ReservationChanged { id, .. } => Some(*id),
            _ => None,
        };
        // The hold as it stands after every event (a later event may have settled it).
        if let Some(hold) = changed.and_then(|id| after.hold(&id)) {
            ops.push(Op::Put(keys::hold(sku, &hold.id), codec::encode(hold)));
        }
    }
    ops
}

/// The stored counters of a SKU.
pub fn sku_row(state: &SkuState) -> SkuRow {
    SkuRow {
        product: state.product().clone(),
        on_hand: state.on_hand(),
        reserved: state.reserved(),
    }
}

/// Rebuilds a SKU from its row and hold rows, checking its invariants.
pub fn restore_sku(sku: SkuId, row: SkuRow, holds: Vec<Hold>) -> Result<SkuState, String> {
    SkuState::restore(sku, row.product, row.on_hand, row.reserved, holds)
}
