//! JSON bodies of the API, and the [`Render`](crate::actors::sku::Render) functions that turn
//! an actor's answer into a status and body (the same bytes are stored for idempotent replay).

use serde::Serialize;

use super::error::ApiError;
use super::error_parts;
use crate::actors::cart::{CartOutcome, CartReply, CartView};
use crate::actors::order::OrderReply;
use crate::actors::{SkuAnswer, SkuOutcome};
use crate::config::PublicStock;
use crate::domain::cart::CartStatus;
use crate::domain::clock::rfc3339;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::sku::{Reservation, ReservationState, SkuView};
use crate::domain::Currency;

/// The SKU body: `available = on_hand - reserved`. A public read shows the counters
/// `catalog.public_stock` allows ([`SkuBody::public`]); staff see them all.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkuBody<'a> {
    /// The SKU id.
    pub sku: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Unit price in minor units.
    pub price_minor: u64,
    /// ISO-4217 code.
    pub currency: &'a str,
    /// Units in stock (staff, or `public_stock = "exact"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<u64>,
    /// Units held by reservations (staff, or `public_stock = "exact"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u64>,
    /// Units sold, not yet shipped (staff, or `public_stock = "exact"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    /// `on_hand - reserved - committed` (all but `public_stock = "level"`): below zero by
    /// the units backordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// `in_stock`, `low` or `out` (only with `public_stock = "level"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub stock_level: Option<&'static str>,
    /// The same counters at each location; the top-level ones are their sums.
    pub locations: Vec<LocationStockBody<'a>>,
    /// Units on their way between locations (staff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_transit: Option<u64>,
    /// At or below this many available units a location is low (staff; 0: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<u64>,
    /// Holds and sales may take `available` down to minus this (staff; 0: no backorders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backorder_limit: Option<u64>,
    /// Units held or sold beyond the shelves, waiting for a restock (staff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backordered: Option<u64>,
    /// When a preorder becomes available (absent: not a preorder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_from: Option<String>,
}

/// A SKU's counters at one location, shown as the SKU's own are.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationStockBody<'a> {
    /// The location id.
    pub location: &'a str,
    /// Units on the shelf there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<u64>,
    /// Units held there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u64>,
    /// Units sold there, not yet shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    /// `on_hand - reserved - committed` there (below zero by the units backordered there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// `in_stock`, `low` or `out` (only with `public_stock = "level"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub stock_level: Option<&'static str>,
}

impl<'a> SkuBody<'a> {
    /// The SKU as the public may see it.
    pub fn public(view: &'a SkuView, shown: PublicStock, low_stock_level: u64) -> Self {
        let mut body = SkuBody::from(view);
        body.in_transit = None;
        body.low_stock_threshold = None;
        body.backorder_limit = None;
        body.backordered = None;
        match shown {
            PublicStock::Exact => {}
            PublicStock::Available => {
                body.on_hand = None;
                body.reserved = None;
                body.committed = None;
                for location in &mut body.locations {
                    location.on_hand = None;
                    location.reserved = None;
                    location.committed = None;
                }
            }
            PublicStock::Level => {
                body.on_hand = None;
                body.reserved = None;
                body.committed = None;
                body.available = None;
                body.stock_level = Some(stock_level(view.available, low_stock_level));
                for (location, (_, stock)) in body.locations.iter_mut().zip(&view.locations) {
                    location.on_hand = None;
                    location.reserved = None;
                    location.committed = None;
                    location.available = None;
                    location.stock_level = Some(stock_level(stock.available(), low_stock_level));
                }
            }
        }
        body
    }
}

/// What `public_stock = "level"` shows for `available` units: `out`, `low` (at or below
/// `low_stock_level`) or `in_stock`.
pub fn stock_level(available: u64, low_stock_level: u64) -> &'static str {
    match available {
        0 => "out",
        units if units <= low_stock_level => "low",
        _ => "in_stock",
    }
}

impl<'a> From<&'a SkuView> for SkuBody<'a> {
    /// Every counter (what staff see).
    fn from(view: &'a SkuView) -> Self {
        SkuBody {
            sku: view.sku.as_str(),
            name: view.product.name.as_str(),
            price_minor: view.product.price_minor,
            currency: view.product.currency.as_str(),
            on_hand: Some(view.on_hand),
            reserved: Some(view.reserved),
            committed: Some(view.committed),
            available: Some(
                i64::try_from(view.on_hand).unwrap_or(i64::MAX)
                    - i64::try_from(view.reserved + view.committed).unwrap_or(i64::MAX),
            ),
            stock_level: None,
            locations: view
                .locations
                .iter()
                .map(|(location, stock)| LocationStockBody {
                    location: location.as_str(),
                    on_hand: Some(stock.on_hand),
                    reserved: Some(stock.reserved),
                    committed: Some(stock.committed),
                    available: Some(stock.available_signed()),
                    stock_level: None,
                })
                .collect(),
            in_transit: Some(view.in_transit.iter().map(|transfer| transfer.qty).sum()),
            low_stock_threshold: Some(view.low_stock_threshold),
            backorder_limit: Some(view.backorder_limit),
            backordered: Some(view.backordered),
            available_from: view.available_from_ms.map(rfc3339),
        }
    }
}

/// The reservation body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReservationBody<'a> {
    /// The reservation id.
    pub reservation_id: String,
    /// The SKU it holds.
    pub sku: &'a str,
    /// Units.
    pub qty: u64,
    /// Where the units are held: one part per location.
    pub parts: Vec<PartBody<'a>>,
    /// `held`, `committed`, `released` or `expired`.
    pub state: ReservationState,
    /// When it was taken (RFC 3339 UTC).
    pub created_at: String,
    /// When it lapses, or lapsed (RFC 3339 UTC).
    pub expires_at: String,
    /// When it left `held`, if it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
}

/// One location's share of a reservation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartBody<'a> {
    /// The location id.
    pub location: &'a str,
    /// Units there.
    pub qty: u64,
}

impl<'a> From<&'a Reservation> for ReservationBody<'a> {
    fn from(reservation: &'a Reservation) -> Self {
        ReservationBody {
            reservation_id: reservation.id.to_string(),
            sku: reservation.sku.as_str(),
            qty: reservation.qty,
            parts: reservation
                .parts
                .iter()
                .map(|part| PartBody {
                    location: part.location.as_str(),
                    qty: part.qty,
                })
                .collect(),
            state: reservation.state,
            created_at: rfc3339(reservation.created_ms),
            expires_at: rfc3339(reservation.expires_ms),
            settled_at: reservation.settled_ms.map(rfc3339),
        }
    }
}

/// Serialises a body; our bodies are plain structs, so this cannot fail in practice.
pub fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

fn unexpected(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    error_parts(&ApiError::Internal(anyhow::anyhow!(
        "unexpected actor answer: {reply:?}"
    )))
}

/// `PUT /v1/skus/{sku}`: 201 when created, 200 when updated.
pub fn render_upsert(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Sku { view, created }) => (if *created { 201 } else { 200 }, to_json(&SkuBody::from(view))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Restock and adjust: 200 with the SKU.
pub fn render_sku(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Sku { view, .. }) => (200, to_json(&SkuBody::from(view))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Creating a reservation: 201 with the reservation.
pub fn render_reserved(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Reservation(reservation)) => (201, to_json(&ReservationBody::from(reservation))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Releasing or committing a reservation: 200 with the reservation.
pub fn render_reservation(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Reservation(reservation)) => (200, to_json(&ReservationBody::from(reservation))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// One line of a cart or order body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineBody<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// The SKU's display name (cart lines; an order keeps prices, not names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Units.
    pub qty: u64,
    /// Unit price in minor units.
    pub price_minor: u64,
    /// `qty * price_minor`.
    pub line_total_minor: u64,
}

/// The cart body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartBody<'a> {
    /// The cart id.
    pub cart_id: String,
    /// `open`, `checking_out`, `checked_out` or `expired`.
    pub status: &'static str,
    /// Lines holding stock.
    pub lines: Vec<LineBody<'a>>,
    /// Sum of the line totals.
    pub total_minor: u64,
    /// The currency of the prices (null while the cart is empty).
    pub currency: Option<&'a str>,
    /// When the cart expires unless written to again.
    pub expires_at: String,
    /// The order it was checked out into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The lines the last refused checkout could not commit, and why (`hold_lapsed`: set the
    /// line again to hold it; `currency_changed`: remove it; `total_too_large`; `not_ordered`:
    /// it was fine, another line was not). Absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkout_failures: Vec<CheckoutFailureBody<'a>>,
}

/// A line a refused checkout could not commit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutFailureBody<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// The units the line had.
    pub qty: u64,
    /// Why: `hold_lapsed`, `currency_changed`, `total_too_large` or `not_ordered`.
    pub reason: &'static str,
}

impl<'a> From<&'a CartView> for CartBody<'a> {
    fn from(view: &'a CartView) -> Self {
        let order_id = match view.cart.status {
            CartStatus::CheckedOut(order) | CartStatus::CheckingOut(order) => Some(order.to_string()),
            _ => None,
        };
        CartBody {
            cart_id: view.cart.id.to_string(),
            status: view.cart.status.as_str(),
            lines: view
                .lines
                .iter()
                .map(|line| LineBody {
                    sku: line.sku.as_str(),
                    name: view
                        .names
                        .iter()
                        .find(|(sku, _)| *sku == line.sku)
                        .map(|(_, name)| name.as_str()),
                    qty: line.qty,
                    price_minor: line.price_minor,
                    line_total_minor: line.line_total_minor,
                })
                .collect(),
            total_minor: view.total_minor,
            currency: view.cart.currency.as_ref().map(Currency::as_str),
            expires_at: rfc3339(view.cart.expires_ms),
            order_id,
            checkout_failures: view
                .cart
                .checkout_failures
                .iter()
                .map(|(sku, qty, reason)| CheckoutFailureBody {
                    sku: sku.as_str(),
                    qty: *qty,
                    reason: reason.as_str(),
                })
                .collect(),
        }
    }
}

/// One entry of an order's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryBody {
    /// 1 for `placed`, then one more per change.
    pub seq: u64,
    /// The status entered.
    pub status: OrderStatus,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// One line of an order body: what was ordered, and what became of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderLineBody<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// The SKU's name at checkout (absent for orders placed before names were kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Units ordered.
    pub qty: u64,
    /// Unit price in minor units, at checkout.
    pub price_minor: u64,
    /// `qty * price_minor`.
    pub line_total_minor: u64,
    /// Where the units not yet shipped are committed (absent when not known yet, for an
    /// order placed before fulfilment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartBody<'a>>>,
    /// Units shipped.
    pub shipped: u64,
    /// Units cancelled before they shipped.
    pub cancelled: u64,
    /// Shipped units that came back.
    pub returned: u64,
    /// Whether units of the line were backordered when it was placed (present only then).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backordered: bool,
}

/// Units of one SKU in a fulfilment or a return.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitsBody<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// Units.
    pub qty: u64,
}

fn units_body(lines: &[crate::domain::order::UnitsOf]) -> Vec<UnitsBody<'_>> {
    lines
        .iter()
        .map(|units| UnitsBody {
            sku: units.sku.as_str(),
            qty: units.qty,
        })
        .collect()
}

/// A fulfilment: units of an order shipped from one location.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FulfilmentBody<'a> {
    /// The fulfilment id.
    pub fulfilment_id: String,
    /// The order.
    pub order_id: String,
    /// Where the units left.
    pub location: &'a str,
    /// What shipped.
    pub lines: Vec<UnitsBody<'a>>,
    /// When.
    pub created_at: String,
    /// The order's status after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_status: Option<OrderStatus>,
}

impl<'a> FulfilmentBody<'a> {
    fn of(order: &Order, fulfilment: &'a crate::domain::order::Fulfilment, order_status: Option<OrderStatus>) -> Self {
        FulfilmentBody {
            fulfilment_id: fulfilment.id.to_string(),
            order_id: order.id.to_string(),
            location: fulfilment.location.as_str(),
            lines: units_body(&fulfilment.lines),
            created_at: rfc3339(fulfilment.at_ms),
            order_status,
        }
    }
}

/// A return: shipped units of an order that came back to a location.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReturnBody<'a> {
    /// The return id.
    pub return_id: String,
    /// The order.
    pub order_id: String,
    /// Where the units came back.
    pub location: &'a str,
    /// Back on the shelf (`true`), or written off as damaged.
    pub restock: bool,
    /// What came back.
    pub lines: Vec<UnitsBody<'a>>,
    /// What to refund, in minor units of `currency`: the units at the prices they sold at.
    /// No payment is made.
    pub refund_minor: u64,
    /// The order's currency.
    pub currency: &'a str,
    /// When.
    pub created_at: String,
    /// The order's status after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_status: Option<OrderStatus>,
}

impl<'a> ReturnBody<'a> {
    fn of(order: &'a Order, taken: &'a crate::domain::order::OrderReturn, order_status: Option<OrderStatus>) -> Self {
        ReturnBody {
            return_id: taken.id.to_string(),
            order_id: order.id.to_string(),
            location: taken.location.as_str(),
            restock: taken.restock,
            lines: units_body(&taken.lines),
            refund_minor: taken.refund_minor,
            currency: order.currency.as_str(),
            created_at: rfc3339(taken.at_ms),
            order_status,
        }
    }
}

/// The order body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderBody<'a> {
    /// The order id.
    pub order_id: String,
    /// The current status.
    pub status: OrderStatus,
    /// Lines priced at checkout.
    pub lines: Vec<OrderLineBody<'a>>,
    /// Sum of the line totals.
    pub total_minor: u64,
    /// The currency of the prices.
    pub currency: &'a str,
    /// When it was placed.
    pub created_at: String,
    /// Every status change, oldest first.
    pub history: Vec<HistoryBody>,
    /// The payment reference, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<&'a str>,
    /// When an unpaid order expires.
    pub payment_due_at: String,
    /// The cart it was checked out from.
    pub cart_id: String,
    /// Shipments, oldest first.
    pub fulfilments: Vec<FulfilmentBody<'a>>,
    /// Returns, oldest first.
    pub returns: Vec<ReturnBody<'a>>,
    /// Who ordered, as given at checkout (reference, email, shipping address).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub customer: Option<serde_json::Value>,
    /// The shop's own keys and values, as given at checkout.
    pub metadata: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> From<&'a Order> for OrderBody<'a> {
    fn from(order: &'a Order) -> Self {
        OrderBody {
            order_id: order.id.to_string(),
            cart_id: order.cart.to_string(),
            status: order.status(),
            lines: order
                .lines
                .iter()
                .zip(&order.progress)
                .map(|(line, progress)| OrderLineBody {
                    sku: line.sku.as_str(),
                    name: progress.name.as_deref(),
                    qty: line.qty,
                    price_minor: line.price_minor,
                    // An order is placed only when its total fits, so each line's total does.
                    line_total_minor: line.total().map_or(order.total_minor, crate::domain::Money::minor),
                    parts: progress.parts.as_ref().map(|parts| {
                        parts
                            .iter()
                            .map(|part| PartBody {
                                location: part.location.as_str(),
                                qty: part.qty,
                            })
                            .collect()
                    }),
                    shipped: progress.shipped,
                    cancelled: progress.cancelled,
                    returned: progress.returned,
                    backordered: progress.backordered > 0,
                })
                .collect(),
            total_minor: order.total_minor,
            currency: order.currency.as_str(),
            created_at: rfc3339(order.history.first().map_or(0, |entry| entry.at_ms)),
            history: order
                .history
                .iter()
                .map(|entry| HistoryBody {
                    seq: entry.seq,
                    status: entry.status,
                    at: rfc3339(entry.at_ms),
                })
                .collect(),
            payment_ref: order.payment_ref.as_deref(),
            payment_due_at: rfc3339(order.payment_due_ms),
            fulfilments: order
                .fulfilments
                .iter()
                .map(|fulfilment| FulfilmentBody::of(order, fulfilment, None))
                .collect(),
            returns: order
                .returns
                .iter()
                .map(|taken| ReturnBody::of(order, taken, None))
                .collect(),
            customer: order
                .customer
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            metadata: &order.metadata,
        }
    }
}

/// A fulfilment: 201 with the fulfilment the change made (the order's last).
pub fn render_fulfilment(reply: &OrderReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(order) => match order.fulfilments.last() {
            Some(fulfilment) => (
                201,
                to_json(&FulfilmentBody::of(order, fulfilment, Some(order.status()))),
            ),
            None => (200, to_json(&OrderBody::from(order))),
        },
        Err(failure) => error_parts(&failure.clone().into()),
    }
}

/// A return: 201 with the return the change made (the order's last).
pub fn render_return(reply: &OrderReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(order) => match order.returns.last() {
            Some(taken) => (201, to_json(&ReturnBody::of(order, taken, Some(order.status())))),
            None => (200, to_json(&OrderBody::from(order))),
        },
        Err(failure) => error_parts(&failure.clone().into()),
    }
}

/// Cart reads and line changes: 200 with the cart.
pub fn render_cart(reply: &CartReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(CartOutcome::Cart(view)) => (200, to_json(&CartBody::from(view))),
        Ok(CartOutcome::Order(order) | CartOutcome::CheckedOutBefore(order)) => (200, to_json(&OrderBody::from(order))),
        Err(failure) => error_parts(&failure.clone().into()),
    }
}

/// Checkout: 201 with the order placed, 200 with the order of a cart checked out before.
pub fn render_checkout(reply: &CartReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(CartOutcome::Order(order)) => (201, to_json(&OrderBody::from(order))),
        Ok(CartOutcome::CheckedOutBefore(order)) => (200, to_json(&OrderBody::from(order))),
        Ok(CartOutcome::Cart(view)) => (200, to_json(&CartBody::from(view))),
        Err(failure) => error_parts(&failure.clone().into()),
    }
}

/// Order reads and changes: 200 with the order.
pub fn render_order(reply: &OrderReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(order) => (200, to_json(&OrderBody::from(order))),
        Err(failure) => error_parts(&failure.clone().into()),
    }
}
