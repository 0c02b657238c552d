//! Domain events as the rest of the shop sees them: CloudEvents 1.0 JSON (structured mode),
//! one topic per aggregate kind, keyed by the aggregate id.
//!
//! The event log stores [`EventRecord`]s in bincode; this module is the one place that turns
//! them into the public JSON contract (`API.md`, "Events"). Field names follow the HTTP API:
//! `sku`, `reservation_id`, `cart_id`, `order_id`, `qty`, money in `*_minor` with `currency`,
//! times as RFC 3339 UTC.

use serde_json::{json, Value};

use crate::domain::clock::rfc3339;
use crate::domain::location::LocationEvent;
use crate::domain::location::DEFAULT_LOCATION;
use crate::domain::sku::stock::at_default;
use crate::domain::sku::{Part, SkuEvent};
use crate::domain::{CartEvent, DomainEvent, EventRecord, OrderEvent};

/// The media type of a structured-mode CloudEvent, sent as the `content-type` record header.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The aggregate kinds, each with a topic of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// SKUs, their stock and the locations that hold it: `<prefix>.inventory`.
    Inventory,
    /// Carts: `<prefix>.carts`.
    Carts,
    /// Orders: `<prefix>.orders`.
    Orders,
}

impl TopicKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TopicKind; 3] = [TopicKind::Inventory, TopicKind::Carts, TopicKind::Orders];

    /// The kind an event belongs to.
    pub fn of(event: &DomainEvent) -> Self {
        match event {
            DomainEvent::Sku { .. } | DomainEvent::Location { .. } | DomainEvent::Movement { .. } => {
                TopicKind::Inventory
            }
            DomainEvent::Cart { .. } => TopicKind::Carts,
            DomainEvent::Order { .. } => TopicKind::Orders,
        }
    }

    /// The topic's name under `prefix`.
    pub fn topic(self, prefix: &str) -> String {
        let suffix = match self {
            TopicKind::Inventory => "inventory",
            TopicKind::Carts => "carts",
            TopicKind::Orders => "orders",
        };
        format!("{prefix}.{suffix}")
    }
}

/// The CloudEvent for one record of the log, as a JSON value. Who made the change is the
/// extension attribute `by` (a credential's name, `admin`, `cart`, `anonymous` or `system`;
/// absent for events logged before it was recorded).
pub fn cloud_event(record: &EventRecord, source: &str) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": record.seq.to_string(),
        "source": source,
        "type": record.event.type_name(),
        "subject": record.event.subject(),
        "time": rfc3339(record.time_ms),
        "datacontenttype": "application/json",
        "data": data(&record.event),
    });
    if !record.by.is_empty() {
        event["by"] = Value::from(&*record.by);
    }
    event
}

/// The CloudEvent for one record, serialized.
pub fn encode(record: &EventRecord, source: &str) -> Vec<u8> {
    // expect: a `serde_json::Value` always serializes.
    serde_json::to_vec(&cloud_event(record, source)).expect("JSON values serialize")
}

/// The `data` member: what happened, in the API's field names.
fn data(event: &DomainEvent) -> Value {
    match event {
        DomainEvent::Sku { sku, event } => sku_data(sku.as_str(), event),
        DomainEvent::Movement { sku, movement } => json!({
            "sku": sku.as_str(),
            "seq": movement.seq,
            "location": movement.location.as_str(),
            "kind": movement.kind.as_str(),
            "on_hand_delta": movement.on_hand_delta,
            "reserved_delta": movement.reserved_delta,
            "committed_delta": movement.committed_delta,
            "available": movement.available_after,
            "reason": movement.reason,
            "reference": movement.reference.map(|reference| reference.to_string()),
        }),
        DomainEvent::Location {
            location: id,
            event: LocationEvent::Saved { location, .. },
        } => json!({
            "location": id.as_str(),
            "name": location.name,
            "kind": location.kind.as_str(),
            "priority": location.priority,
            "active": location.active,
        }),
        DomainEvent::Cart { cart, event } => {
            let cart_id = cart.to_string();
            match event {
                CartEvent::Created | CartEvent::Expired => json!({ "cart_id": cart_id }),
                CartEvent::LineSet { sku, qty } => json!({ "cart_id": cart_id, "sku": sku.as_str(), "qty": qty }),
                CartEvent::CheckoutStarted { order } | CartEvent::CheckedOut { order } => {
                    json!({ "cart_id": cart_id, "order_id": order.to_string() })
                }
                CartEvent::CheckoutFailed { skus } => json!({
                    "cart_id": cart_id,
                    "skus": skus.iter().map(|sku| sku.as_str()).collect::<Vec<_>>(),
                }),
            }
        }
        DomainEvent::Order { order, event } => {
            let order_id = order.to_string();
            match event {
                OrderEvent::Placed {
                    total_minor,
                    currency,
                    lines,
                } => json!({
                    "order_id": order_id,
                    "status": "placed",
                    "total_minor": total_minor,
                    "currency": currency.as_str(),
                    "lines": lines
                        .iter()
                        .map(|line| json!({
                            "sku": line.sku.as_str(),
                            "qty": line.qty,
                            "price_minor": line.price_minor,
                            "reservation_id": line.reservation.to_string(),
                        }))
                        .collect::<Vec<_>>(),
                }),
                OrderEvent::StatusChanged { seq, status } => json!({
                    "order_id": order_id,
                    "status": status.as_str(),
                    "seq": seq,
                }),
                OrderEvent::StockReturned => json!({ "order_id": order_id }),
                OrderEvent::Fulfilled { fulfilment } => json!({
                    "order_id": order_id,
                    "fulfilment_id": fulfilment.id.to_string(),
                    "location": fulfilment.location.as_str(),
                    "lines": units_json(&fulfilment.lines),
                }),
                OrderEvent::ReturnReceived { taken } => json!({
                    "order_id": order_id,
                    "return_id": taken.id.to_string(),
                    "location": taken.location.as_str(),
                    "restock": taken.restock,
                    "refund_minor": taken.refund_minor,
                    "lines": units_json(&taken.lines),
                }),
            }
        }
    }
}

fn sku_data(sku: &str, event: &SkuEvent) -> Value {
    match event {
        SkuEvent::SkuCreated { product, on_hand } => json!({
            "sku": sku,
            "name": product.name.as_str(),
            "price_minor": product.price_minor,
            "currency": product.currency.as_str(),
            "on_hand": on_hand,
        }),
        SkuEvent::SkuUpdated { product } => json!({
            "sku": sku,
            "name": product.name.as_str(),
            "price_minor": product.price_minor,
            "currency": product.currency.as_str(),
        }),
        SkuEvent::StockRestocked { qty } => json!({ "sku": sku, "location": DEFAULT_LOCATION, "qty": qty }),
        SkuEvent::Received { location, qty, reason } => json!({
            "sku": sku,
            "location": location.as_str(),
            "qty": qty,
            "reason": reason.as_ref().map(|reason| reason.as_str()),
        }),
        SkuEvent::StockAdjusted { delta, reason } => json!({
            "sku": sku,
            "location": DEFAULT_LOCATION,
            "delta": delta,
            "reason": reason.as_str(),
        }),
        SkuEvent::Adjusted {
            location,
            delta,
            reason,
        } => json!({
            "sku": sku,
            "location": location.as_str(),
            "delta": delta,
            "reason": reason.as_str(),
        }),
        SkuEvent::Counted {
            location,
            on_hand,
            reason,
        } => json!({
            "sku": sku,
            "location": location.as_str(),
            "on_hand": on_hand,
            "reason": reason.as_ref().map(|reason| reason.as_str()),
        }),
        SkuEvent::StockReserved { hold } => json!({
            "sku": sku,
            "reservation_id": hold.id.to_string(),
            "qty": hold.qty,
            "parts": parts_json(&at_default(hold.qty)),
            "expires_at": rfc3339(hold.expires_ms),
        }),
        SkuEvent::Held { hold } => json!({
            "sku": sku,
            "reservation_id": hold.id.to_string(),
            "qty": hold.qty,
            "parts": parts_json(&hold.parts),
            "expires_at": rfc3339(hold.expires_ms),
        }),
        SkuEvent::ReservationChanged { id, qty, expires_ms } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "qty": qty,
            "expires_at": rfc3339(*expires_ms),
        }),
        SkuEvent::HoldChanged {
            id,
            qty,
            parts,
            expires_ms,
        } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "qty": qty,
            "parts": parts_json(parts),
            "expires_at": rfc3339(*expires_ms),
        }),
        SkuEvent::ReservationReleased { id, qty }
        | SkuEvent::ReservationCommitted { id, qty }
        | SkuEvent::Committed { id, qty }
        | SkuEvent::ReservationExpired { id, qty } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "qty": qty,
        }),
        SkuEvent::ReservationReturned { id, qty } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "qty": qty,
            "parts": parts_json(&at_default(*qty)),
        }),
        SkuEvent::Shipped { id, location, qty, .. } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "location": location.as_str(),
            "qty": qty,
        }),
        SkuEvent::TakenBack {
            id,
            location,
            qty,
            restock,
        } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "location": location.as_str(),
            "qty": qty,
            "restock": restock,
        }),
        SkuEvent::Returned { id, parts } | SkuEvent::Uncommitted { id, parts } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "qty": parts.iter().map(|part| part.qty).sum::<u64>(),
            "parts": parts_json(parts),
        }),
        SkuEvent::TransferSent { transfer } => json!({
            "sku": sku,
            "transfer_id": transfer.id.to_string(),
            "from": transfer.from.as_str(),
            "to": transfer.to.as_str(),
            "qty": transfer.qty,
        }),
        SkuEvent::TransferReceived { id, to, qty } => json!({
            "sku": sku,
            "transfer_id": id.to_string(),
            "to": to.as_str(),
            "qty": qty,
        }),
        SkuEvent::LevelCrossed {
            location, available, ..
        } => json!({
            "sku": sku,
            "location": location.as_str(),
            "available": available,
        }),
        SkuEvent::BackorderFilled { id, location, qty } => json!({
            "sku": sku,
            "reservation_id": id.to_string(),
            "location": location.as_str(),
            "qty": qty,
        }),
        SkuEvent::BackorderSettingsChanged {
            backorder_limit,
            available_from_ms,
        } => json!({
            "sku": sku,
            "backorder_limit": backorder_limit,
            "available_from": available_from_ms.map(rfc3339),
        }),
        SkuEvent::SettingsChanged { low_stock_threshold } => json!({
            "sku": sku,
            "low_stock_threshold": low_stock_threshold,
        }),
        SkuEvent::LedgerTrimmed { from_seq, upto_seq, .. } => json!({
            "sku": sku,
            "from_seq": from_seq,
            "upto_seq": upto_seq,
        }),
    }
}

fn units_json(lines: &[crate::domain::order::UnitsOf]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|units| json!({ "sku": units.sku.as_str(), "qty": units.qty }))
            .collect(),
    )
}

fn parts_json(parts: &[Part]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|part| json!({ "location": part.location.as_str(), "qty": part.qty }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sku::LegacyHold;
    use crate::domain::{ReservationId, SkuId};

    #[test]
    fn a_reservation_is_a_cloud_event_on_the_inventory_topic() {
        let id = ReservationId::generate();
        let record = EventRecord {
            seq: 42,
            time_ms: 1_700_000_000_000,
            event: DomainEvent::Sku {
                sku: SkuId::parse("tee-red-m").unwrap(),
                event: SkuEvent::StockReserved {
                    hold: LegacyHold {
                        id,
                        qty: 2,
                        created_ms: 1_700_000_000_000,
                        expires_ms: 1_700_000_600_000,
                    },
                },
            },
            by: std::sync::Arc::from("erp"),
        };
        let value: Value = serde_json::from_slice(&encode(&record, "/stockroom")).unwrap();
        assert_eq!(value["by"], "erp");
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["id"], "42");
        assert_eq!(value["source"], "/stockroom");
        assert_eq!(value["type"], "stockroom.stock.reserved");
        assert_eq!(value["subject"], "tee-red-m");
        assert_eq!(value["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["data"]["reservation_id"], id.to_string());
        assert_eq!(value["data"]["qty"], 2);
        assert_eq!(value["data"]["expires_at"], "2023-11-14T22:23:20.000Z");
        assert_eq!(TopicKind::of(&record.event).topic("shop"), "shop.inventory");
    }

    #[test]
    fn a_movement_is_a_cloud_event_with_its_location_and_what_is_available_there() {
        use crate::domain::location::LocationId;
        use crate::domain::sku::{Movement, MovementKind, Reference};
        let id = ReservationId::generate();
        let record = EventRecord {
            seq: 7,
            time_ms: 1_700_000_000_000,
            event: DomainEvent::Movement {
                sku: SkuId::parse("tee").unwrap(),
                movement: Movement {
                    seq: 3,
                    location: LocationId::parse("shop-1").unwrap(),
                    kind: MovementKind::Reservation,
                    on_hand_delta: 0,
                    reserved_delta: 2,
                    committed_delta: 0,
                    available_after: 5,
                    reason: None,
                    reference: Some(Reference::Reservation(id)),
                },
            },
            by: std::sync::Arc::from("cart"),
        };
        let value = cloud_event(&record, "/stockroom");
        assert_eq!(value["type"], "stockroom.stock.movement");
        assert_eq!(value["subject"], "tee");
        assert_eq!(
            value["data"],
            json!({"sku": "tee", "seq": 3, "location": "shop-1", "kind": "reservation", "on_hand_delta": 0,
                   "reserved_delta": 2, "committed_delta": 0, "available": 5, "reason": null,
                   "reference": id.to_string()})
        );
        assert_eq!(TopicKind::of(&record.event), TopicKind::Inventory);
    }
}
