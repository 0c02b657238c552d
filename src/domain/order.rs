//! The order aggregate: lines with prices captured at checkout, a status with only the legal
//! moves, and a history with a per-order sequence number.
//!
//! ```text
//! placed ──pay──► paid ──► packed ──► shipped ──► delivered
//!   │               │
//!   ├──cancel───────┴──► cancelled   (stock returns)
//!   └──payment timeout──► expired    (stock returns)
//! ```
//!
//! Invariants: `history` is non-empty, its `seq` runs 1, 2, 3… and its last entry is the
//! current status; `total_minor` is the sum of the line totals; a cancelled or expired order
//! owes its stock back until `stock_returned`.

use serde::{Deserialize, Serialize};

use super::ids::{CartId, OrderId, ReservationId, SkuId};
use super::values::{Currency, Money};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock committed, waiting for payment.
    Placed,
    /// Paid.
    Paid,
    /// Packed for shipping.
    Packed,
    /// Handed to the carrier.
    Shipped,
    /// Arrived.
    Delivered,
    /// Cancelled by the customer or an admin; its stock went back.
    Cancelled,
    /// Not paid in time; its stock went back.
    Expired,
}

impl OrderStatus {
    /// Every status, for tables and tests.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Packed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];

    /// Whether the order has reached an end (no further move is legal).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Cancelled | OrderStatus::Expired
        )
    }

    /// Whether moving from `self` to `to` is one of the legal moves.
    pub fn can_move_to(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Placed, Paid)
                | (Paid, Packed)
                | (Packed, Shipped)
                | (Shipped, Delivered)
                | (Placed, Cancelled)
                | (Paid, Cancelled)
                | (Placed, Expired)
        )
    }

    /// Whether the shopper (the cart token) may make the legal move `self -> to`: only
    /// cancelling an order not yet paid. Paying and every later move are the shop's.
    pub fn shopper_may_move_to(self, to: OrderStatus) -> bool {
        self == OrderStatus::Placed && to == OrderStatus::Cancelled
    }

    /// The lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Packed => "packed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

/// One line of an order, priced at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The SKU.
    pub sku: SkuId,
    /// Units.
    pub qty: u64,
    /// Unit price at checkout, in minor units.
    pub price_minor: u64,
    /// The committed reservation behind the line (returned if the order is cancelled).
    pub reservation: ReservationId,
}

impl OrderLine {
    /// `qty * price_minor`, or `None` on overflow.
    pub fn total(&self) -> Option<Money> {
        Money::from_minor(self.price_minor).times(self.qty)
    }
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// 1 for `placed`, then one more per change.
    pub seq: u64,
    /// The status entered.
    pub status: OrderStatus,
    /// When.
    pub at_ms: u64,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order id.
    pub id: OrderId,
    /// The cart it was checked out from; its token reads and changes the order.
    pub cart: CartId,
    /// SHA-256 of the cart token's secret.
    pub token_hash: [u8; 32],
    /// Lines with prices.
    pub lines: Vec<OrderLine>,
    /// Sum of the line totals.
    pub total_minor: u64,
    /// Currency of every price.
    pub currency: Currency,
    /// Status changes, oldest first; the last is the current status.
    pub history: Vec<HistoryEntry>,
    /// The payment reference given when paid.
    pub payment_ref: Option<String>,
    /// When an unpaid order expires.
    pub payment_due_ms: u64,
    /// For a cancelled or expired order: whether every line's stock went back.
    pub stock_returned: bool,
}

/// Why an order change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRejection {
    /// The move is not one of the legal moves.
    #[error("an order that is {from} cannot become {to}", from = .from.as_str(), to = .to.as_str())]
    InvalidTransition {
        /// The current status.
        from: OrderStatus,
        /// The status asked for.
        to: OrderStatus,
    },
    /// The line totals do not fit in 64 bits.
    #[error("the order total is too large")]
    TotalTooLarge,
}

impl Order {
    /// A placed order; fails only if its total overflows.
    pub fn place(
        id: OrderId,
        cart: CartId,
        token_hash: [u8; 32],
        lines: Vec<OrderLine>,
        currency: Currency,
        now_ms: u64,
        payment_timeout_ms: u64,
    ) -> Result<Self, OrderRejection> {
        let total_minor = Money::sum(lines.iter().map(OrderLine::total))
            .ok_or(OrderRejection::TotalTooLarge)?
            .minor();
        Ok(Self {
            id,
            cart,
            token_hash,
            lines,
            total_minor,
            currency,
            history: vec![HistoryEntry {
                seq: 1,
                status: OrderStatus::Placed,
                at_ms: now_ms,
            }],
            payment_ref: None,
            payment_due_ms: now_ms.saturating_add(payment_timeout_ms),
            stock_returned: false,
        })
    }

    /// The current status.
    pub fn status(&self) -> OrderStatus {
        self.history.last().map_or(OrderStatus::Placed, |entry| entry.status)
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.history.last().map_or(0, |entry| entry.seq)
    }

    /// Whether a cancelled or expired order still owes stock back.
    pub fn owes_stock(&self) -> bool {
        matches!(self.status(), OrderStatus::Cancelled | OrderStatus::Expired) && !self.stock_returned
    }

    /// Moves to `to` if legal, recording it in the history.
    pub fn move_to(&mut self, to: OrderStatus, now_ms: u64) -> Result<(), OrderRejection> {
        let from = self.status();
        if !from.can_move_to(to) {
            return Err(OrderRejection::InvalidTransition { from, to });
        }
        let seq = self.seq() + 1;
        self.history.push(HistoryEntry {
            seq,
            status: to,
            at_ms: now_ms,
        });
        Ok(())
    }
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

impl OrderEvent {
    /// The CloudEvents type name of the event: a status change is named by its status.
    pub fn type_name(&self) -> &'static str {
        match self {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        let line = OrderLine {
            sku: SkuId::parse("mug").unwrap(),
            qty: 3,
            price_minor: 1299,
            reservation: ReservationId::generate(),
        };
        Order::place(
            OrderId::generate(),
            CartId::generate(),
            [0; 32],
            vec![line],
            Currency::parse("EUR").unwrap(),
            1_000,
            60_000,
        )
        .unwrap()
    }

    #[test]
    fn a_placed_order_totals_its_lines_and_starts_its_history_at_one() {
        let order = order();
        assert_eq!(order.total_minor, 3 * 1299);
        assert_eq!(
            (order.status(), order.seq(), order.payment_due_ms),
            (OrderStatus::Placed, 1, 61_000)
        );
    }

    #[test]
    fn only_the_documented_moves_are_legal() {
        use OrderStatus::*;
        let legal = [
            (Placed, Paid),
            (Paid, Packed),
            (Packed, Shipped),
            (Shipped, Delivered),
            (Placed, Cancelled),
            (Paid, Cancelled),
            (Placed, Expired),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(from.can_move_to(to), legal.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn moves_append_to_the_history_and_illegal_ones_change_nothing() {
        let mut order = order();
        order.move_to(OrderStatus::Paid, 2_000).unwrap();
        let before = order.clone();
        assert_eq!(
            order.move_to(OrderStatus::Expired, 3_000),
            Err(OrderRejection::InvalidTransition {
                from: OrderStatus::Paid,
                to: OrderStatus::Expired
            })
        );
        assert_eq!(order, before);
        order.move_to(OrderStatus::Cancelled, 4_000).unwrap();
        assert_eq!(
            order.history.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(order.owes_stock());
    }

    #[test]
    fn a_total_that_overflows_is_refused() {
        let line = |qty| OrderLine {
            sku: SkuId::parse("gold").unwrap(),
            qty,
            price_minor: u64::MAX / 2,
            reservation: ReservationId::generate(),
        };
        let placed = Order::place(
            OrderId::generate(),
            CartId::generate(),
            [0; 32],
            vec![line(1), line(1), line(1)],
            Currency::parse("EUR").unwrap(),
            0,
            0,
        );
        assert_eq!(placed, Err(OrderRejection::TotalTooLarge));
    }
}
