//! The order aggregate: lines with prices captured at checkout, a status with only the legal
//! moves, and a history with a per-order sequence number.
//!
//! ```text
//! placed ──pay──► paid ──► packed ──► shipped ──► delivered ──► partially_returned ──► returned
//!   │               │  │      │          ▲            │                                  ▲
//!   │               │  └──────┴─► partially_shipped ─┘            └──────────────────────┘
//!   ├──cancel───────┴──► cancelled   (stock returns)
//!   └──payment timeout──► expired    (stock returns)
//! ```
//!
//! Units are committed at checkout and leave the shelf when shipped: by a fulfilment (from
//! one location, partial allowed), or all at once when staff move the order to `shipped`.
//! Cancelling a partially shipped order cancels the lines not yet shipped (their units go
//! back) and leaves it `shipped`. Delivered units can come back (returns): restocked or
//! written off, with the refund computed.
//!
//! Invariants: `history` is non-empty, its `seq` runs 1, 2, 3… and its last entry is the
//! current status; `total_minor` is the sum of the line totals; `progress` has one entry per
//! line, with `shipped + cancelled <= qty` and `returned <= shipped`; a cancelled or expired
//! order owes its stock back until `stock_returned`, and every step in `pending` is owed to a
//! SKU until it is confirmed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::{CartId, FulfilmentId, OrderId, ReservationId, ReturnId, SkuId};
use super::location::LocationId;
use super::sku::stock::{shrink_at, units_at, Part};
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
    /// Some units shipped, some not yet.
    PartiallyShipped,
    /// Some delivered units came back.
    PartiallyReturned,
    /// Every shipped unit came back.
    Returned,
}

impl OrderStatus {
    /// Every status, for tables and tests.
    pub const ALL: [OrderStatus; 10] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Packed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::PartiallyShipped,
        OrderStatus::PartiallyReturned,
        OrderStatus::Returned,
    ];

    /// Whether the order has reached an end: nothing more ships. (A delivered order still
    /// takes returns.)
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered
                | OrderStatus::Cancelled
                | OrderStatus::Expired
                | OrderStatus::PartiallyReturned
                | OrderStatus::Returned
        )
    }

    /// Whether moving from `self` to `to` is one of the legal moves. Fulfilments move an
    /// order to `partially_shipped`, or to `shipped` once nothing is left to ship (from
    /// `paid` too); returns move it to `partially_returned` and `returned`.
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
                | (Paid | Packed, PartiallyShipped)
                | (Paid | PartiallyShipped, Shipped)
                | (Delivered, PartiallyReturned | Returned)
                | (PartiallyReturned, Returned)
        )
    }

    /// Whether staff may ask for `to` by name (`POST /v1/orders/{id}/status`). The others
    /// are the server's: `placed`, `expired`, and the moves that fulfilments and returns
    /// make. (Asking for `shipped` ships whatever is left.)
    pub fn may_be_asked_for(self) -> bool {
        !matches!(
            self,
            OrderStatus::Placed
                | OrderStatus::Expired
                | OrderStatus::PartiallyShipped
                | OrderStatus::PartiallyReturned
                | OrderStatus::Returned
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
            OrderStatus::PartiallyShipped => "partially_shipped",
            OrderStatus::PartiallyReturned => "partially_returned",
            OrderStatus::Returned => "returned",
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

/// What became of one line's units, beside the line itself (whose layout events keep).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineProgress {
    /// The SKU's name at checkout (`None` for orders from before it was kept).
    pub name: Option<String>,
    /// Where the units not yet shipped are committed; `None` for an order from before
    /// fulfilment, until read from its reservation.
    pub parts: Option<Vec<Part>>,
    /// Units shipped.
    pub shipped: u64,
    /// Units cancelled before they shipped.
    pub cancelled: u64,
    /// Shipped units that came back.
    pub returned: u64,
    /// Units that were not on a shelf when the order was placed (a backorder).
    pub backordered: u64,
}

/// A line of a fulfilment or a return: units of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitsOf {
    /// The SKU.
    pub sku: SkuId,
    /// Units.
    pub qty: u64,
}

/// Units of an order shipped from one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    /// The fulfilment's id.
    pub id: FulfilmentId,
    /// Where the units left.
    pub location: LocationId,
    /// What shipped.
    pub lines: Vec<UnitsOf>,
    /// When.
    pub at_ms: u64,
}

/// Shipped units of an order that came back to a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReturn {
    /// The return's id.
    pub id: ReturnId,
    /// Where the units came back.
    pub location: LocationId,
    /// Back on the shelf (`true`), or written off as damaged.
    pub restock: bool,
    /// What came back.
    pub lines: Vec<UnitsOf>,
    /// What to refund: the units at the prices they were sold at.
    pub refund_minor: u64,
    /// When.
    pub at_ms: u64,
}

/// A change an order owes a SKU's stock, written with the order before it is made, and
/// made once under `key` (an idempotency key), so that a crash in between repeats it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockStep {
    /// Unique per order and step.
    pub key: String,
    /// The SKU.
    pub sku: SkuId,
    /// The reservation the units were sold under.
    pub reservation: ReservationId,
    /// Where.
    pub location: LocationId,
    /// Units.
    pub qty: u64,
    /// What to do.
    pub kind: StepKind,
}

/// What a [`StockStep`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// Ship committed units: they leave `on_hand`.
    Ship,
    /// Take shipped units back: restocked, or written off.
    TakeBack {
        /// Back on the shelf.
        restock: bool,
    },
}

/// An order as the releases before fulfilment stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyOrder {
    id: OrderId,
    cart: CartId,
    token_hash: [u8; 32],
    lines: Vec<OrderLine>,
    total_minor: u64,
    currency: Currency,
    history: Vec<HistoryEntry>,
    payment_ref: Option<String>,
    payment_due_ms: u64,
    stock_returned: bool,
}

impl From<LegacyOrder> for Order {
    fn from(legacy: LegacyOrder) -> Self {
        Order {
            progress: vec![LineProgress::default(); legacy.lines.len()],
            id: legacy.id,
            cart: legacy.cart,
            token_hash: legacy.token_hash,
            lines: legacy.lines,
            total_minor: legacy.total_minor,
            currency: legacy.currency,
            history: legacy.history,
            payment_ref: legacy.payment_ref,
            payment_due_ms: legacy.payment_due_ms,
            stock_returned: legacy.stock_returned,
            release_pending: false,
            fulfilments: Vec::new(),
            returns: Vec::new(),
            pending: Vec::new(),
            customer: None,
            metadata: BTreeMap::new(),
        }
    }
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
    /// One entry per line: name, where its units are, what shipped, was cancelled, came back.
    pub progress: Vec<LineProgress>,
    /// Lines not yet shipped were cancelled; their units are owed back until this clears.
    pub release_pending: bool,
    /// Shipments, oldest first.
    pub fulfilments: Vec<Fulfilment>,
    /// Returns, oldest first.
    pub returns: Vec<OrderReturn>,
    /// Stock changes owed to SKUs, in order.
    pub pending: Vec<StockStep>,
    /// Who ordered, as the shop's JSON object (reference, email, shipping address).
    pub customer: Option<String>,
    /// The shop's own keys and values.
    pub metadata: BTreeMap<String, String>,
}

impl crate::persistence::codec::Versioned for Order {
    type Legacy = LegacyOrder;
    type Previous = Order;
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
    /// A fulfilment or return names a SKU the order does not have.
    #[error("the order has no line for {sku}")]
    NoSuchLine {
        /// The SKU.
        sku: SkuId,
    },
    /// A fulfilment asks for more units than are left to ship.
    #[error("{sku}: only {remaining} units are left to ship")]
    ExceedsOrdered {
        /// The SKU.
        sku: SkuId,
        /// Units left to ship.
        remaining: u64,
    },
    /// A fulfilment ships from a location where the line's units are not committed.
    #[error("{sku}: only {committed} units are committed at {location}")]
    NotCommittedHere {
        /// The SKU.
        sku: SkuId,
        /// The location.
        location: LocationId,
        /// The line's units committed there.
        committed: u64,
    },
    /// A fulfilment asks for units that are backordered: not on the shelf yet.
    #[error("{sku}: {waiting} units are backordered, not on the shelf at {location} yet")]
    Backordered {
        /// The SKU.
        sku: SkuId,
        /// The location.
        location: LocationId,
        /// The line's units waiting for stock.
        waiting: u64,
    },
    /// A return asks for more units than were shipped and not yet returned.
    #[error("{sku}: only {returnable} shipped units can come back")]
    ExceedsShipped {
        /// The SKU.
        sku: SkuId,
        /// Units shipped and not yet returned.
        returnable: u64,
    },
}

impl Order {
    /// A placed order; fails only if its total overflows.
    #[allow(clippy::too_many_arguments)]
    pub fn place(
        id: OrderId,
        cart: CartId,
        token_hash: [u8; 32],
        lines: Vec<OrderLine>,
        progress: Vec<LineProgress>,
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
            progress,
            release_pending: false,
            fulfilments: Vec::new(),
            returns: Vec::new(),
            pending: Vec::new(),
            customer: None,
            metadata: BTreeMap::new(),
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

    /// Whether the order still owes its SKUs a change: a cancelled or expired order's
    /// stock, the units of cancelled lines, or a shipment or return not yet confirmed.
    pub fn owes_stock(&self) -> bool {
        let cancelled = matches!(self.status(), OrderStatus::Cancelled | OrderStatus::Expired);
        (cancelled && !self.stock_returned) || self.release_pending || !self.pending.is_empty()
    }

    /// Units of line `index` neither shipped nor cancelled.
    pub fn left_to_ship(&self, index: usize) -> u64 {
        let progress = &self.progress[index];
        self.lines[index].qty - progress.shipped - progress.cancelled
    }

    /// The index of the line of `sku`.
    fn line_of(&self, sku: &SkuId) -> Result<usize, OrderRejection> {
        self.lines
            .iter()
            .position(|line| line.sku == *sku)
            .ok_or_else(|| OrderRejection::NoSuchLine { sku: sku.clone() })
    }

    /// Ships `lines` from `location`: the units must be left to ship and, where the order
    /// knows where they are committed, committed there. Moves the order to
    /// `partially_shipped`, or to `shipped` once nothing is left, and owes each SKU its
    /// shipment.
    ///
    /// `waiting` has, per line, its units that are backordered (not on a shelf yet): they do
    /// not ship.
    pub fn fulfil(
        &mut self,
        id: FulfilmentId,
        location: LocationId,
        lines: Vec<UnitsOf>,
        waiting: &[u64],
        now_ms: u64,
    ) -> Result<Fulfilment, OrderRejection> {
        let from = self.status();
        if !matches!(
            from,
            OrderStatus::Paid | OrderStatus::Packed | OrderStatus::PartiallyShipped
        ) {
            return Err(OrderRejection::InvalidTransition {
                from,
                to: OrderStatus::Shipped,
            });
        }
        let mut shipping = Vec::with_capacity(lines.len());
        for units in &lines {
            let index = self.line_of(&units.sku)?;
            let remaining = self.left_to_ship(index);
            if units.qty > remaining {
                return Err(OrderRejection::ExceedsOrdered {
                    sku: units.sku.clone(),
                    remaining,
                });
            }
            if let Some(parts) = &self.progress[index].parts {
                let committed = units_at(parts, &location);
                if units.qty > committed {
                    return Err(OrderRejection::NotCommittedHere {
                        sku: units.sku.clone(),
                        location: location.clone(),
                        committed,
                    });
                }
                let waiting = waiting.get(index).copied().unwrap_or(0);
                if units.qty > committed.saturating_sub(waiting) {
                    return Err(OrderRejection::Backordered {
                        sku: units.sku.clone(),
                        location: location.clone(),
                        waiting,
                    });
                }
            }
            shipping.push((index, units.qty));
        }
        for (index, qty) in shipping {
            let progress = &mut self.progress[index];
            progress.shipped += qty;
            if let Some(parts) = &mut progress.parts {
                *parts = shrink_at(parts, &location, qty);
            }
            self.pending.push(StockStep {
                key: format!("{id}/{index}"),
                sku: self.lines[index].sku.clone(),
                reservation: self.lines[index].reservation,
                location: location.clone(),
                qty,
                kind: StepKind::Ship,
            });
        }
        let fulfilment = Fulfilment {
            id,
            location,
            lines,
            at_ms: now_ms,
        };
        self.fulfilments.push(fulfilment.clone());
        let done = (0..self.lines.len()).all(|index| self.left_to_ship(index) == 0);
        let to = if done {
            OrderStatus::Shipped
        } else {
            OrderStatus::PartiallyShipped
        };
        if to != from {
            self.move_to(to, now_ms)?;
        }
        Ok(fulfilment)
    }

    /// What is left to ship, by location: one fulfilment each ships it all (staff moving
    /// the order to `shipped`). Lines whose places are unknown ship from `default`.
    pub fn rest_by_location(&self) -> Vec<(LocationId, Vec<UnitsOf>)> {
        let mut by_location: BTreeMap<LocationId, Vec<UnitsOf>> = BTreeMap::new();
        for (index, line) in self.lines.iter().enumerate() {
            let left = self.left_to_ship(index);
            if left == 0 {
                continue;
            }
            let parts = match &self.progress[index].parts {
                Some(parts) => parts.clone(),
                None => super::sku::stock::at_default(left),
            };
            for part in parts {
                by_location.entry(part.location).or_default().push(UnitsOf {
                    sku: line.sku.clone(),
                    qty: part.qty,
                });
            }
        }
        by_location.into_iter().collect()
    }

    /// Cancels the lines of a partially shipped order that are not yet shipped: their units
    /// are owed back, and the order is `shipped`.
    pub fn cancel_rest(&mut self, now_ms: u64) -> Result<(), OrderRejection> {
        let from = self.status();
        if from != OrderStatus::PartiallyShipped {
            return Err(OrderRejection::InvalidTransition {
                from,
                to: OrderStatus::Cancelled,
            });
        }
        self.move_to(OrderStatus::Shipped, now_ms)?;
        for index in 0..self.lines.len() {
            let left = self.left_to_ship(index);
            let progress = &mut self.progress[index];
            progress.cancelled += left;
            if let Some(parts) = &mut progress.parts {
                parts.clear();
            }
        }
        self.release_pending = true;
        Ok(())
    }

    /// Takes `lines` back at `location` after delivery: at most the units shipped and not
    /// yet returned. Moves the order to `partially_returned`, or `returned` once every
    /// shipped unit is back, computes the refund, and owes each SKU its units.
    pub fn take_back(
        &mut self,
        id: ReturnId,
        location: LocationId,
        restock: bool,
        lines: Vec<UnitsOf>,
        now_ms: u64,
    ) -> Result<OrderReturn, OrderRejection> {
        let from = self.status();
        if !matches!(from, OrderStatus::Delivered | OrderStatus::PartiallyReturned) {
            return Err(OrderRejection::InvalidTransition {
                from,
                to: OrderStatus::Returned,
            });
        }
        let mut taking = Vec::with_capacity(lines.len());
        let mut refund = Some(Money::from_minor(0));
        for units in &lines {
            let index = self.line_of(&units.sku)?;
            let progress = &self.progress[index];
            let returnable = progress.shipped - progress.returned;
            if units.qty > returnable {
                return Err(OrderRejection::ExceedsShipped {
                    sku: units.sku.clone(),
                    returnable,
                });
            }
            let line_refund = Money::from_minor(self.lines[index].price_minor).times(units.qty);
            refund = Money::sum([refund, line_refund]);
            taking.push((index, units.qty));
        }
        let refund_minor = refund.ok_or(OrderRejection::TotalTooLarge)?.minor();
        for (index, qty) in taking {
            self.progress[index].returned += qty;
            self.pending.push(StockStep {
                key: format!("{id}/{index}"),
                sku: self.lines[index].sku.clone(),
                reservation: self.lines[index].reservation,
                location: location.clone(),
                qty,
                kind: StepKind::TakeBack { restock },
            });
        }
        let taken = OrderReturn {
            id,
            location,
            restock,
            lines,
            refund_minor,
            at_ms: now_ms,
        };
        self.returns.push(taken.clone());
        let all_back = self
            .progress
            .iter()
            .all(|progress| progress.returned == progress.shipped);
        let to = if all_back {
            OrderStatus::Returned
        } else {
            OrderStatus::PartiallyReturned
        };
        if to != from {
            self.move_to(to, now_ms)?;
        }
        Ok(taken)
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
    /// Units shipped.
    Fulfilled {
        /// The fulfilment.
        fulfilment: Fulfilment,
    },
    /// Shipped units came back.
    ReturnReceived {
        /// The return.
        taken: OrderReturn,
    },
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
                OrderStatus::PartiallyShipped => "stockroom.order.partially_shipped",
                OrderStatus::PartiallyReturned => "stockroom.order.partially_returned",
                OrderStatus::Returned => "stockroom.order.returned",
            },
            OrderEvent::StockReturned => "stockroom.order.stock_returned",
            OrderEvent::Fulfilled { .. } => "stockroom.order.fulfilment_created",
            OrderEvent::ReturnReceived { .. } => "stockroom.order.return_received",
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
        let progress = vec![LineProgress {
            parts: Some(crate::domain::sku::stock::at_default(3)),
            ..LineProgress::default()
        }];
        Order::place(
            OrderId::generate(),
            CartId::generate(),
            [0; 32],
            vec![line],
            progress,
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
            (Paid, PartiallyShipped),
            (Packed, PartiallyShipped),
            (PartiallyShipped, Shipped),
            (Paid, Shipped),
            (Delivered, PartiallyReturned),
            (Delivered, Returned),
            (PartiallyReturned, Returned),
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

    fn units(sku: &str, qty: u64) -> Vec<UnitsOf> {
        vec![UnitsOf {
            sku: SkuId::parse(sku).unwrap(),
            qty,
        }]
    }

    fn default_location() -> LocationId {
        LocationId::default_location()
    }

    /// Ships `qty` of `sku` from the default location at `now_ms`, nothing waiting; it must
    /// be let.
    fn ship(order: &mut Order, sku: &str, qty: u64, now_ms: u64) {
        order
            .fulfil(
                FulfilmentId::generate(),
                default_location(),
                units(sku, qty),
                &[0],
                now_ms,
            )
            .unwrap();
    }

    #[test]
    fn fulfilments_ship_in_parts_and_never_more_than_was_ordered() {
        let mut order = order();
        let early = order.fulfil(
            FulfilmentId::generate(),
            default_location(),
            units("mug", 1),
            &[0],
            1_500,
        );
        assert!(
            matches!(early, Err(OrderRejection::InvalidTransition { .. })),
            "{early:?}"
        );
        order.move_to(OrderStatus::Paid, 2_000).unwrap();
        ship(&mut order, "mug", 1, 3_000);
        assert_eq!(order.status(), OrderStatus::PartiallyShipped);
        assert_eq!(order.pending.len(), 1);
        let before = order.clone();
        assert_eq!(
            order.fulfil(
                FulfilmentId::generate(),
                default_location(),
                units("mug", 3),
                &[0],
                4_000
            ),
            Err(OrderRejection::ExceedsOrdered {
                sku: SkuId::parse("mug").unwrap(),
                remaining: 2
            })
        );
        let elsewhere = LocationId::parse("north").unwrap();
        assert!(matches!(
            order.fulfil(FulfilmentId::generate(), elsewhere, units("mug", 1), &[0], 4_000),
            Err(OrderRejection::NotCommittedHere { committed: 0, .. })
        ));
        assert!(matches!(
            order.fulfil(
                FulfilmentId::generate(),
                default_location(),
                units("tee", 1),
                &[0],
                4_000
            ),
            Err(OrderRejection::NoSuchLine { .. })
        ));
        order = before;
        ship(&mut order, "mug", 2, 5_000);
        assert_eq!(order.status(), OrderStatus::Shipped);
        assert_eq!(order.progress[0].shipped, 3);
        assert_eq!(order.progress[0].parts, Some(Vec::new()));
    }

    #[test]
    fn cancelling_a_partially_shipped_order_cancels_what_is_left_and_owes_it_back() {
        let mut order = order();
        order.move_to(OrderStatus::Paid, 2_000).unwrap();
        ship(&mut order, "mug", 1, 3_000);
        order.pending.clear();
        order.cancel_rest(4_000).unwrap();
        assert_eq!(order.status(), OrderStatus::Shipped);
        assert_eq!((order.progress[0].shipped, order.progress[0].cancelled), (1, 2));
        assert!(order.owes_stock());
        assert_eq!(order.left_to_ship(0), 0);
    }

    #[test]
    fn returns_take_back_at_most_what_shipped_and_compute_the_refund() {
        let mut order = order();
        order.move_to(OrderStatus::Paid, 2_000).unwrap();
        ship(&mut order, "mug", 3, 3_000);
        let early = order.take_back(ReturnId::generate(), default_location(), true, units("mug", 1), 3_500);
        assert!(matches!(early, Err(OrderRejection::InvalidTransition { .. })));
        order.move_to(OrderStatus::Delivered, 4_000).unwrap();
        let taken = order
            .take_back(ReturnId::generate(), default_location(), true, units("mug", 2), 5_000)
            .unwrap();
        assert_eq!(taken.refund_minor, 2 * 1299);
        assert_eq!(order.status(), OrderStatus::PartiallyReturned);
        assert_eq!(
            order.take_back(ReturnId::generate(), default_location(), false, units("mug", 2), 6_000),
            Err(OrderRejection::ExceedsShipped {
                sku: SkuId::parse("mug").unwrap(),
                returnable: 1
            })
        );
        order
            .take_back(ReturnId::generate(), default_location(), false, units("mug", 1), 7_000)
            .unwrap();
        assert_eq!(order.status(), OrderStatus::Returned);
        assert_eq!(order.pending.len(), 3, "one shipment and two returns owed to the SKU");
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
            vec![LineProgress::default(); 3],
            Currency::parse("EUR").unwrap(),
            0,
            0,
        );
        assert_eq!(placed, Err(OrderRejection::TotalTooLarge));
    }
}
