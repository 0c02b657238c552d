//! The cart aggregate: which SKUs a shopper holds, until when, and where checkout stands.
//!
//! The quantity of a line lives at the SKU, as the hold with id
//! [`ReservationId::for_cart_line`]: the SKU is the single writer of stock, so the cart never
//! disagrees with it about how much it holds. The cart records the SKUs it has touched (a
//! superset of its lines, written before the hold is set), its expiry, and its status.
//!
//! Checkout is a saga the cart coordinates: it records `checking_out` with the new order's
//! id, commits each line's hold, and then either writes the order together with
//! `checked_out` in one atomic batch, or returns what it committed and goes back to `open`
//! with the next `attempt` (so its next holds get fresh ids). After a crash, a cart found in
//! `checking_out` runs the saga again: every step is idempotent.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ids::{CartId, OrderId, ReservationId, SkuId};
use super::order::{LineProgress, Order, OrderLine};
use super::sku::stock::Part;
use super::values::{Currency, Money};

/// Where a cart is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartStatus {
    /// Lines can change.
    Open,
    /// Checkout is under way for this order id.
    CheckingOut(OrderId),
    /// Checked out into this order.
    CheckedOut(OrderId),
    /// Abandoned: its hold time passed and its stock was released.
    Expired,
}

impl CartStatus {
    /// The lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::CheckingOut(_) => "checking_out",
            CartStatus::CheckedOut(_) => "checked_out",
            CartStatus::Expired => "expired",
        }
    }
}

/// A cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// The cart id.
    pub id: CartId,
    /// SHA-256 of the cart token's secret (the token itself is never stored).
    pub token_hash: [u8; 32],
    /// Where the cart is.
    pub status: CartStatus,
    /// SKUs whose line may hold stock for this cart (a superset of the lines).
    pub skus: BTreeSet<SkuId>,
    /// The currency of the cart's prices, fixed by its first line.
    pub currency: Option<Currency>,
    /// Failed checkouts so far; part of every line's hold id.
    pub attempt: u32,
    /// When it was created.
    pub created_ms: u64,
    /// When it expires unless written to again.
    pub expires_ms: u64,
    /// What the checkout in progress gives its order: who orders, and the shop's metadata.
    pub details: OrderDetails,
    /// The lines the last refused checkout could not commit: SKU, units, why. A line leaves
    /// the list when it is set or removed again.
    pub checkout_failures: Vec<(SkuId, u64, LineFailure)>,
}

/// What a checkout gives its order besides the lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    /// Who orders, as a JSON object (reference, email, shipping address), checked and
    /// bounded by the HTTP layer.
    pub customer: Option<String>,
    /// The shop's own keys and values.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A cart as the releases before order details stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyCart {
    id: CartId,
    token_hash: [u8; 32],
    status: CartStatus,
    skus: BTreeSet<SkuId>,
    currency: Option<Currency>,
    attempt: u32,
    created_ms: u64,
    expires_ms: u64,
}

impl From<LegacyCart> for Cart {
    fn from(legacy: LegacyCart) -> Self {
        Cart {
            id: legacy.id,
            token_hash: legacy.token_hash,
            status: legacy.status,
            skus: legacy.skus,
            currency: legacy.currency,
            attempt: legacy.attempt,
            created_ms: legacy.created_ms,
            expires_ms: legacy.expires_ms,
            details: OrderDetails::default(),
            checkout_failures: Vec::new(),
        }
    }
}

impl crate::persistence::codec::Versioned for Cart {
    type Legacy = LegacyCart;
    type Previous = Cart;
}

/// Why a cart change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartRejection {
    /// The cart is checked out, checking out, or expired.
    #[error("the cart is {status} and can no longer change", status = .0.as_str())]
    Closed(CartStatus),
    /// Checkout of a cart without lines.
    #[error("the cart has no lines")]
    Empty,
    /// The cart already has the configured maximum of lines.
    #[error("a cart holds at most {0} lines")]
    TooManyLines(usize),
    /// The SKU is priced in another currency than the cart's lines.
    #[error("this SKU is priced in {sku}, the cart in {cart}")]
    CurrencyMismatch {
        /// The cart's currency.
        cart: Currency,
        /// The SKU's currency.
        sku: Currency,
    },
    /// Removing a line the cart does not have.
    #[error("the cart has no line for this SKU")]
    LineNotFound,
    /// A line's or the cart's total would not fit in 64 bits.
    #[error("the cart total is too large")]
    TotalTooLarge,
}

/// What a SKU says of one cart line: the units its hold has and the SKU's price now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAtSku {
    /// Units the line's hold has now (0 when none).
    pub held: u64,
    /// The SKU's unit price now, in minor units.
    pub price_minor: u64,
    /// The SKU's currency.
    pub currency: Currency,
}

/// What setting a line does, decided before the line's hold is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineChange {
    /// Hold the quantity at the SKU. `joins` when the SKU is new to the cart: the cart records
    /// it (and its currency) first, so after a crash it still knows every SKU that may hold
    /// stock for it.
    Hold {
        /// The SKU is new to the cart.
        joins: bool,
    },
    /// Release the line's hold (quantity 0).
    Release,
}

/// Why checkout could not take a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineFailure {
    /// Its hold lapsed (or was released) before checkout committed it.
    HoldLapsed,
    /// The SKU was repriced into another currency than the cart's.
    CurrencyChanged,
    /// The order's total would not fit in 64 bits.
    TotalTooLarge,
    /// The line could be committed, but another line could not, so nothing was ordered.
    NotOrdered,
}

impl LineFailure {
    /// The reason as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            LineFailure::HoldLapsed => "hold_lapsed",
            LineFailure::CurrencyChanged => "currency_changed",
            LineFailure::TotalTooLarge => "total_too_large",
            LineFailure::NotOrdered => "not_ordered",
        }
    }
}

/// Where a checkout request starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStart {
    /// A new checkout into this order: record `checking_out` first, then run the saga.
    Begin(OrderId),
    /// A checkout was interrupted (a crash, a full queue): run its saga again.
    Resume(OrderId),
    /// Checked out before into this order: answer with it (checkout is idempotent per cart).
    Done(OrderId),
}

/// What committing one line's hold at its SKU found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineCommit {
    /// Committed: its units and the SKU's unit price and currency now (`None` when the SKU
    /// could not be read: the line cannot be priced and goes back).
    Committed {
        /// Units committed.
        qty: u64,
        /// The SKU's unit price now, in minor units.
        price_minor: u64,
        /// The SKU's currency now.
        currency: Option<Currency>,
        /// The SKU's name now.
        name: Option<String>,
        /// Where the units are committed.
        parts: Vec<Part>,
        /// Units not on a shelf yet (a backorder).
        backordered: u64,
    },
    /// No hold: the line was never set, or was emptied. Nothing to commit, nothing failed.
    NoHold,
    /// The hold expired before checkout reached it.
    Lapsed,
}

/// Why a checkout placed no order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutFailure {
    /// No line held anything.
    Empty,
    /// These lines could not be taken (with why).
    Lines(Vec<(SkuId, LineFailure)>),
}

/// How a checkout saga ends, once every line was asked to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutEnd {
    /// Place this order and mark the cart checked out, in one write.
    Place(Box<Order>),
    /// Give back these committed lines, reopen the cart, and answer with `failure`.
    Compensate {
        /// Lines committed at their SKUs, to return.
        give_back: Vec<OrderLine>,
        /// Why no order was placed.
        failure: CheckoutFailure,
    },
}

/// A cart line priced now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The SKU.
    pub sku: SkuId,
    /// Units held for the cart.
    pub qty: u64,
    /// The SKU's unit price now.
    pub price_minor: u64,
    /// `qty * price_minor`.
    pub line_total_minor: u64,
}

/// Prices lines of `(sku, qty held, unit price)`: the lines that hold stock, each with its
/// total, and the sum. `TotalTooLarge` when a total does not fit.
pub fn price_lines(
    lines: impl IntoIterator<Item = (SkuId, u64, u64)>,
) -> Result<(Vec<PricedLine>, Money), CartRejection> {
    let mut priced = Vec::new();
    let mut total = Money::ZERO;
    for (sku, qty, price_minor) in lines.into_iter().filter(|(_, qty, _)| *qty > 0) {
        let line_total = Money::from_minor(price_minor)
            .times(qty)
            .ok_or(CartRejection::TotalTooLarge)?;
        total = total.plus(line_total).ok_or(CartRejection::TotalTooLarge)?;
        priced.push(PricedLine {
            sku,
            qty,
            price_minor,
            line_total_minor: line_total.minor(),
        });
    }
    Ok((priced, total))
}

impl Cart {
    /// A new open cart.
    pub fn new(id: CartId, token_hash: [u8; 32], now_ms: u64, ttl_ms: u64) -> Self {
        Self {
            id,
            token_hash,
            status: CartStatus::Open,
            skus: BTreeSet::new(),
            currency: None,
            attempt: 0,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            details: OrderDetails::default(),
            checkout_failures: Vec::new(),
        }
    }

    /// The hold id of the line for `sku` in the current attempt.
    pub fn line_id(&self, sku: &SkuId) -> ReservationId {
        ReservationId::for_cart_line(&self.id, sku, self.attempt)
    }

    /// Whether the cart is open and its hold time has not passed at `now_ms`.
    pub fn check_open(&self, now_ms: u64) -> Result<(), CartRejection> {
        match self.status {
            CartStatus::Open if self.expires_ms > now_ms => Ok(()),
            CartStatus::Open => Err(CartRejection::Closed(CartStatus::Expired)),
            other => Err(CartRejection::Closed(other)),
        }
    }

    /// Decides what setting the line for `sku` to `qty` does, given what the SKU says of the
    /// line now. Removing a line the cart does not have is
    /// refused; a new line must fit the cart's currency and line limit, and its own total
    /// must fit in 64 bits.
    pub fn decide_line(
        &self,
        sku: &SkuId,
        qty: u64,
        at_sku: LineAtSku,
        lines_max: usize,
        now_ms: u64,
    ) -> Result<LineChange, CartRejection> {
        let LineAtSku {
            held,
            price_minor,
            currency,
        } = at_sku;
        self.check_open(now_ms)?;
        if qty == 0 {
            // A line exists when it holds stock (the SKU set is a superset: a refused set
            // leaves its SKU there with nothing held).
            return if held == 0 || !self.skus.contains(sku) {
                Err(CartRejection::LineNotFound)
            } else {
                Ok(LineChange::Release)
            };
        }
        self.check_line(sku, currency, lines_max, now_ms)?;
        if Money::from_minor(price_minor).times(qty).is_none() {
            return Err(CartRejection::TotalTooLarge);
        }
        Ok(LineChange::Hold {
            joins: !self.skus.contains(sku),
        })
    }

    /// Records `sku` (priced in `currency`) as a SKU that may hold stock for the cart.
    pub fn join(&mut self, sku: &SkuId, currency: Currency) {
        self.skus.insert(sku.clone());
        self.currency.get_or_insert(currency);
    }

    /// After the line for `sku` was set to `qty` and every line's hold extended to
    /// `expires_ms`: the cart's hold time moves on, and an emptied line leaves the cart.
    pub fn line_set(&mut self, sku: &SkuId, qty: u64, expires_ms: u64) {
        self.expires_ms = expires_ms;
        self.checkout_failures.retain(|(failed, ..)| failed != sku);
        if qty == 0 {
            self.skus.remove(sku);
            if self.skus.is_empty() {
                self.currency = None;
            }
        }
    }

    /// Where a checkout request starts, given the id a new checkout's order would get.
    pub fn start_checkout(&self, new_order: OrderId, now_ms: u64) -> Result<CheckoutStart, CartRejection> {
        match self.status {
            CartStatus::CheckingOut(order) => Ok(CheckoutStart::Resume(order)),
            CartStatus::CheckedOut(order) => Ok(CheckoutStart::Done(order)),
            CartStatus::Expired => Err(CartRejection::Closed(CartStatus::Expired)),
            CartStatus::Open => {
                self.check_open(now_ms)?;
                if self.skus.is_empty() {
                    return Err(CartRejection::Empty);
                }
                Ok(CheckoutStart::Begin(new_order))
            }
        }
    }

    /// Ends a checkout saga: given what committing each line found (`(sku, hold id, what)`),
    /// places the order if every line held stock committed in the cart's currency and the
    /// total fits; otherwise names what failed and what must go back.
    pub fn end_checkout(
        &self,
        order: OrderId,
        commits: Vec<(SkuId, ReservationId, LineCommit)>,
        now_ms: u64,
        payment_timeout_ms: u64,
    ) -> CheckoutEnd {
        let mut committed: Vec<OrderLine> = Vec::new();
        let mut progress: Vec<LineProgress> = Vec::new();
        let mut failed: Vec<(SkuId, LineFailure)> = Vec::new();
        for (sku, reservation, commit) in commits {
            match commit {
                LineCommit::Committed {
                    qty,
                    price_minor,
                    currency,
                    name,
                    parts,
                    backordered,
                } => {
                    progress.push(LineProgress {
                        name,
                        parts: Some(parts),
                        backordered,
                        ..LineProgress::default()
                    });
                    if currency.is_none() || currency != self.currency {
                        // Repriced into another currency since it was added: it goes back.
                        failed.push((sku.clone(), LineFailure::CurrencyChanged));
                    }
                    committed.push(OrderLine {
                        sku,
                        qty,
                        price_minor,
                        reservation,
                    });
                }
                LineCommit::NoHold => {}
                LineCommit::Lapsed => failed.push((sku, LineFailure::HoldLapsed)),
            }
        }
        if failed.is_empty() && !committed.is_empty() {
            if let Some(currency) = self.currency {
                if let Ok(order) = Order::place(
                    order,
                    self.id,
                    self.token_hash,
                    committed.clone(),
                    progress,
                    currency,
                    now_ms,
                    payment_timeout_ms,
                ) {
                    let mut order = order;
                    order.customer = self.details.customer.clone();
                    order.metadata = self.details.metadata.clone();
                    return CheckoutEnd::Place(Box::new(order));
                }
                // Nothing failed, yet no order: its total overflowed. Every line is named.
                failed = committed
                    .iter()
                    .map(|line| (line.sku.clone(), LineFailure::TotalTooLarge))
                    .collect();
            }
        }
        let failure = if committed.is_empty() && failed.is_empty() {
            CheckoutFailure::Empty
        } else {
            CheckoutFailure::Lines(failed)
        };
        CheckoutEnd::Compensate {
            give_back: committed,
            failure,
        }
    }

    /// Marks a checkout under way into `order`.
    pub fn begin_checkout(&mut self, order: OrderId, details: OrderDetails) {
        self.status = CartStatus::CheckingOut(order);
        self.details = details;
    }

    /// After a failed checkout gave its stock back: the cart opens again with the next
    /// attempt (so its next holds get fresh ids), holding nothing, and lists every line it
    /// had in `checkout_failures`, with why (`kept`), so the shopper can set them again.
    pub fn reopen_keeping(&mut self, kept: Vec<(SkuId, u64, LineFailure)>) {
        self.reopen();
        self.checkout_failures = kept;
    }

    /// After a failed checkout gave its stock back: the cart opens again, empty, with the
    /// next attempt (so its next holds get fresh ids).
    pub fn reopen(&mut self) {
        self.status = CartStatus::Open;
        self.attempt += 1;
        self.skus.clear();
        self.currency = None;
        self.details = OrderDetails::default();
    }

    /// Whether the cart is open and its hold time has passed: then it expires.
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.status == CartStatus::Open && self.expires_ms <= now_ms
    }

    /// Checks that a line for `sku`, priced in `currency`, may be set.
    pub fn check_line(
        &self,
        sku: &SkuId,
        currency: Currency,
        lines_max: usize,
        now_ms: u64,
    ) -> Result<(), CartRejection> {
        self.check_open(now_ms)?;
        if let Some(cart) = self.currency {
            if cart != currency {
                return Err(CartRejection::CurrencyMismatch { cart, sku: currency });
            }
        }
        if !self.skus.contains(sku) && self.skus.len() >= lines_max {
            return Err(CartRejection::TooManyLines(lines_max));
        }
        Ok(())
    }
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

impl CartEvent {
    /// The CloudEvents type name of the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            CartEvent::Created => "stockroom.cart.created",
            CartEvent::LineSet { .. } => "stockroom.cart.line_set",
            CartEvent::CheckoutStarted { .. } => "stockroom.cart.checkout_started",
            CartEvent::CheckoutFailed { .. } => "stockroom.cart.checkout_failed",
            CartEvent::CheckedOut { .. } => "stockroom.cart.checked_out",
            CartEvent::Expired => "stockroom.cart.expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cart_is_open_until_its_hold_time_passes() {
        let cart = Cart::new(CartId::generate(), [0; 32], 1_000, 500);
        assert_eq!(cart.check_open(1_499), Ok(()));
        assert_eq!(cart.check_open(1_500), Err(CartRejection::Closed(CartStatus::Expired)));
    }

    #[test]
    fn lines_are_bounded_and_share_one_currency() {
        let mut cart = Cart::new(CartId::generate(), [0; 32], 0, 1_000);
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let (mug, tee) = (SkuId::parse("mug").unwrap(), SkuId::parse("tee").unwrap());
        cart.skus.insert(mug.clone());
        cart.currency = Some(eur);
        assert_eq!(
            cart.check_line(&mug, eur, 1, 10),
            Ok(()),
            "changing an existing line is not a new line"
        );
        assert_eq!(cart.check_line(&tee, eur, 1, 10), Err(CartRejection::TooManyLines(1)));
        assert_eq!(
            cart.check_line(&mug, usd, 5, 10),
            Err(CartRejection::CurrencyMismatch { cart: eur, sku: usd })
        );
    }

    #[test]
    fn a_new_attempt_gives_every_line_a_fresh_hold_id() {
        let mut cart = Cart::new(CartId::generate(), [0; 32], 0, 1_000);
        let mug = SkuId::parse("mug").unwrap();
        let first = cart.line_id(&mug);
        cart.attempt += 1;
        assert_ne!(cart.line_id(&mug), first);
    }
    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn sku(id: &str) -> SkuId {
        SkuId::parse(id).unwrap()
    }

    fn at(held: u64, price_minor: u64) -> LineAtSku {
        LineAtSku {
            held,
            price_minor,
            currency: eur(),
        }
    }

    /// An open cart (ttl 1000 from 0) with `skus` in EUR.
    fn cart_with(skus: &[&str]) -> Cart {
        let mut cart = Cart::new(CartId::generate(), [0; 32], 0, 1_000);
        for id in skus {
            cart.join(&sku(id), eur());
        }
        cart
    }

    #[test]
    fn setting_a_line_decides_membership_removal_and_limits_before_any_stock_moves() {
        let cart = cart_with(&["mug"]);
        assert_eq!(
            cart.decide_line(&sku("tee"), 2, at(0, 100), 5, 10),
            Ok(LineChange::Hold { joins: true }),
            "a new SKU joins the cart first"
        );
        assert_eq!(
            cart.decide_line(&sku("mug"), 3, at(2, 100), 5, 10),
            Ok(LineChange::Hold { joins: false })
        );
        assert_eq!(
            cart.decide_line(&sku("mug"), 0, at(2, 100), 5, 10),
            Ok(LineChange::Release)
        );
        assert_eq!(
            cart.decide_line(&sku("mug"), 0, at(0, 100), 5, 10),
            Err(CartRejection::LineNotFound),
            "a line that holds nothing is not there to remove"
        );
        assert_eq!(
            cart.decide_line(&sku("tee"), 0, at(0, 100), 5, 10),
            Err(CartRejection::LineNotFound)
        );
        assert_eq!(
            cart.decide_line(&sku("tee"), 1, at(0, 100), 1, 10),
            Err(CartRejection::TooManyLines(1))
        );
        assert_eq!(
            cart.decide_line(&sku("tee"), 1, at(0, 100), 5, 1_000),
            Err(CartRejection::Closed(CartStatus::Expired))
        );
        assert_eq!(
            cart.decide_line(&sku("mug"), 3, at(0, u64::MAX / 2), 5, 10),
            Err(CartRejection::TotalTooLarge),
            "a line whose total does not fit is refused, not saturated"
        );
    }

    #[test]
    fn an_emptied_line_leaves_the_cart_and_the_last_one_frees_the_currency() {
        let mut cart = cart_with(&["mug", "tee"]);
        cart.line_set(&sku("mug"), 0, 500);
        assert_eq!(cart.expires_ms, 500);
        assert_eq!(cart.currency, Some(eur()));
        cart.line_set(&sku("tee"), 0, 600);
        assert!(cart.skus.is_empty());
        assert_eq!(cart.currency, None);
    }

    #[test]
    fn cart_totals_are_checked_never_saturated() {
        let (lines, total) = price_lines([(sku("mug"), 2, 1299), (sku("tee"), 0, 5), (sku("cap"), 1, 1)]).unwrap();
        assert_eq!(lines.len(), 2, "a line holding nothing is not shown");
        assert_eq!(total, Money::from_minor(2599));
        assert_eq!(
            price_lines([(sku("mug"), 2, u64::MAX / 2 + 1)]),
            Err(CartRejection::TotalTooLarge)
        );
        assert_eq!(
            price_lines([(sku("mug"), 1, u64::MAX), (sku("tee"), 1, 1)]),
            Err(CartRejection::TotalTooLarge)
        );
    }

    #[test]
    fn checkout_starts_resumes_or_answers_from_the_cart_status() {
        let order = OrderId::generate();
        let mut cart = cart_with(&["mug"]);
        assert_eq!(cart.start_checkout(order, 10), Ok(CheckoutStart::Begin(order)));
        assert_eq!(cart_with(&[]).start_checkout(order, 10), Err(CartRejection::Empty));
        assert_eq!(
            cart.start_checkout(order, 1_000),
            Err(CartRejection::Closed(CartStatus::Expired))
        );
        let earlier = OrderId::generate();
        cart.begin_checkout(earlier, OrderDetails::default());
        assert_eq!(cart.start_checkout(order, 10), Ok(CheckoutStart::Resume(earlier)));
        cart.status = CartStatus::CheckedOut(earlier);
        assert_eq!(cart.start_checkout(order, 10), Ok(CheckoutStart::Done(earlier)));
        cart.status = CartStatus::Expired;
        assert_eq!(
            cart.start_checkout(order, 10),
            Err(CartRejection::Closed(CartStatus::Expired))
        );
    }

    fn committed(qty: u64, price_minor: u64, currency: Option<Currency>) -> LineCommit {
        LineCommit::Committed {
            qty,
            price_minor,
            currency,
            name: None,
            parts: crate::domain::sku::stock::at_default(qty),
            backordered: 0,
        }
    }

    #[test]
    fn checkout_places_the_order_when_every_held_line_committed() {
        let cart = cart_with(&["mug", "tee", "cap"]);
        let order = OrderId::generate();
        let commits = vec![
            (sku("mug"), cart.line_id(&sku("mug")), committed(2, 1299, Some(eur()))),
            (sku("tee"), cart.line_id(&sku("tee")), LineCommit::NoHold),
            (sku("cap"), cart.line_id(&sku("cap")), committed(1, 500, Some(eur()))),
        ];
        match cart.end_checkout(order, commits, 20, 60_000) {
            CheckoutEnd::Place(placed) => {
                assert_eq!(placed.id, order);
                assert_eq!(placed.total_minor, 3098);
                assert_eq!(placed.lines.len(), 2, "a line without a hold is not ordered");
                assert_eq!(placed.payment_due_ms, 60_020);
            }
            other => panic!("expected an order, got {other:?}"),
        }
    }

    #[test]
    fn checkout_gives_back_every_committed_line_when_one_fails() {
        let cart = cart_with(&["mug", "tee", "cap"]);
        let commits = vec![
            (sku("mug"), cart.line_id(&sku("mug")), committed(2, 1299, Some(eur()))),
            (sku("tee"), cart.line_id(&sku("tee")), LineCommit::Lapsed),
            (
                sku("cap"),
                cart.line_id(&sku("cap")),
                committed(1, 500, Some(Currency::parse("USD").unwrap())),
            ),
        ];
        match cart.end_checkout(OrderId::generate(), commits, 20, 60_000) {
            CheckoutEnd::Compensate { give_back, failure } => {
                let returned: Vec<&str> = give_back.iter().map(|line| line.sku.as_str()).collect();
                assert_eq!(
                    returned,
                    ["mug", "cap"],
                    "the repriced line was committed too: it goes back"
                );
                assert_eq!(
                    failure,
                    CheckoutFailure::Lines(vec![
                        (sku("tee"), LineFailure::HoldLapsed),
                        (sku("cap"), LineFailure::CurrencyChanged),
                    ])
                );
            }
            other => panic!("expected compensation, got {other:?}"),
        }
    }

    #[test]
    fn a_checkout_whose_total_overflows_names_every_line_and_gives_them_back() {
        let cart = cart_with(&["mug", "tee"]);
        let commits = vec![
            (
                sku("mug"),
                cart.line_id(&sku("mug")),
                committed(1, u64::MAX, Some(eur())),
            ),
            (sku("tee"), cart.line_id(&sku("tee")), committed(1, 1, Some(eur()))),
        ];
        match cart.end_checkout(OrderId::generate(), commits, 20, 60_000) {
            CheckoutEnd::Compensate { give_back, failure } => {
                assert_eq!(give_back.len(), 2);
                assert_eq!(
                    failure,
                    CheckoutFailure::Lines(vec![
                        (sku("mug"), LineFailure::TotalTooLarge),
                        (sku("tee"), LineFailure::TotalTooLarge),
                    ])
                );
            }
            other => panic!("expected compensation, got {other:?}"),
        }
    }

    #[test]
    fn a_checkout_with_nothing_held_is_empty_and_reopens_with_fresh_line_ids() {
        let mut cart = cart_with(&["mug"]);
        let before = cart.line_id(&sku("mug"));
        let commits = vec![(sku("mug"), before, LineCommit::NoHold)];
        assert_eq!(
            cart.end_checkout(OrderId::generate(), commits, 20, 60_000),
            CheckoutEnd::Compensate {
                give_back: Vec::new(),
                failure: CheckoutFailure::Empty,
            }
        );
        cart.begin_checkout(OrderId::generate(), OrderDetails::default());
        cart.reopen();
        assert_eq!(cart.status, CartStatus::Open);
        assert!(cart.skus.is_empty() && cart.currency.is_none());
        assert_ne!(
            cart.line_id(&sku("mug")),
            before,
            "the next attempt holds under new ids"
        );
    }

    #[test]
    fn only_an_open_cart_past_its_hold_time_is_due() {
        let mut cart = cart_with(&["mug"]);
        assert!(!cart.is_due(999));
        assert!(cart.is_due(1_000));
        cart.status = CartStatus::Expired;
        assert!(!cart.is_due(1_000), "expiring twice does nothing");
    }
}
