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
use super::values::Currency;

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
}
