//! Every domain event, tagged with the aggregate it belongs to ([`DomainEvent`]), and its entry
//! in the event log ([`EventRecord`]). Each aggregate's events live with the aggregate
//! ([`SkuEvent`], [`CartEvent`], [`OrderEvent`]) and name their own CloudEvents type.

use serde::{Deserialize, Serialize};

pub use super::cart::CartEvent;
use super::ids::{CartId, OrderId, SkuId};
use super::location::{LocationEvent, LocationId};
pub use super::order::OrderEvent;
pub use super::sku::SkuEvent;

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
    /// An event of a location (new variants go last: the log stores their position).
    Location {
        /// The location.
        location: LocationId,
        /// What happened.
        event: LocationEvent,
    },
    /// A movement of a SKU's stock ledger (`stockroom.stock.movement`), published with the
    /// SKU's events so that the ledger can be kept outside too.
    Movement {
        /// The SKU.
        sku: SkuId,
        /// The movement.
        movement: super::sku::Movement,
    },
}

impl DomainEvent {
    /// The aggregate id, used as the Kafka record key and CloudEvents subject.
    pub fn subject(&self) -> String {
        match self {
            DomainEvent::Sku { sku, .. } => sku.to_string(),
            DomainEvent::Cart { cart, .. } => cart.to_string(),
            DomainEvent::Order { order, .. } => order.to_string(),
            DomainEvent::Location { location, .. } => location.to_string(),
            DomainEvent::Movement { sku, .. } => sku.to_string(),
        }
    }

    /// The CloudEvents type: each aggregate's events name themselves.
    pub fn type_name(&self) -> &'static str {
        match self {
            DomainEvent::Sku { event, .. } => event.type_name(),
            DomainEvent::Cart { event, .. } => event.type_name(),
            DomainEvent::Order { event, .. } => event.type_name(),
            DomainEvent::Location { event, .. } => event.type_name(),
            DomainEvent::Movement { .. } => "stockroom.stock.movement",
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
    /// Who made the change ([`By`](crate::access::By)); empty for events logged before it
    /// was recorded.
    pub by: std::sync::Arc<str>,
}
