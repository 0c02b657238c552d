//! A live SKU: its counters, its holds indexed by expiry, its invariants, and [`apply`], which
//! changes it by one event.

use std::collections::{BTreeSet, HashMap};

use super::event::SkuEvent;
use super::model::{Hold, Product, Reservation, ReservationState, SkuView, ON_HAND_MAX};
use crate::domain::ids::{ReservationId, SkuId};

/// A live SKU: product, counters and held reservations indexed by expiry.
#[derive(Debug, Clone)]
pub struct SkuState {
    /// The SKU id.
    pub(super) sku: SkuId,
    /// Name and price.
    pub(super) product: Product,
    /// Units physically in stock, held ones included.
    pub(super) on_hand: u64,
    /// Units held: always the sum of `holds`.
    pub(super) reserved: u64,
    /// Held reservations by id.
    pub(super) holds: HashMap<ReservationId, Hold>,
    /// The same holds ordered by expiry, so expiring is a walk from the front.
    pub(super) expiry: BTreeSet<(u64, ReservationId)>,
}

impl SkuState {
    /// Creates a SKU from its creation event.
    pub fn created(sku: SkuId, product: Product, on_hand: u64) -> Self {
        Self {
            sku,
            product,
            on_hand,
            reserved: 0,
            holds: HashMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// Rebuilds a SKU from stored rows, checking every invariant; `Err` names the broken one.
    pub fn restore(
        sku: SkuId,
        product: Product,
        on_hand: u64,
        reserved: u64,
        holds: Vec<Hold>,
    ) -> Result<Self, String> {
        let mut state = Self::created(sku, product, on_hand);
        state.reserved = reserved;
        for hold in holds {
            state.expiry.insert((hold.expires_ms, hold.id));
            if state.holds.insert(hold.id, hold).is_some() {
                return Err(format!("{}: a reservation is stored twice", state.sku));
            }
        }
        state.check_invariants_fully()?;
        Ok(state)
    }

    /// The SKU id.
    pub fn sku(&self) -> &SkuId {
        &self.sku
    }

    /// Units physically in stock.
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    /// Units held by reservations.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Units a new reservation can take.
    pub fn available(&self) -> u64 {
        self.on_hand - self.reserved
    }

    /// Name and price.
    pub fn product(&self) -> &Product {
        &self.product
    }

    /// A held reservation, if `id` is held here.
    pub fn hold(&self, id: &ReservationId) -> Option<&Hold> {
        self.holds.get(id)
    }

    /// Every held reservation, in no particular order.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// Number of held reservations.
    pub fn hold_count(&self) -> usize {
        self.holds.len()
    }

    /// The earliest expiry among held reservations.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|(expires_ms, _)| *expires_ms)
    }

    /// The counters as clients see them.
    pub fn view(&self) -> SkuView {
        SkuView {
            sku: self.sku.clone(),
            product: self.product.clone(),
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available(),
        }
    }

    /// A held reservation as clients see it.
    pub fn held_reservation(&self, hold: &Hold) -> Reservation {
        Reservation {
            id: hold.id,
            sku: self.sku.clone(),
            qty: hold.qty,
            state: ReservationState::Held,
            created_ms: hold.created_ms,
            expires_ms: hold.expires_ms,
            settled_ms: None,
        }
    }

    /// Checks the invariants whose cost does not grow with the number of holds.
    fn check_invariants_cheaply(&self) {
        assert!(
            self.reserved <= self.on_hand,
            "{}: reserved {} exceeds on_hand {}",
            self.sku,
            self.reserved,
            self.on_hand
        );
        assert!(self.on_hand <= ON_HAND_MAX, "{}: on_hand over the maximum", self.sku);
        assert_eq!(
            self.holds.len(),
            self.expiry.len(),
            "{}: expiry index out of step",
            self.sku
        );
    }

    /// Checks every invariant, including the sum over all holds.
    pub fn check_invariants_fully(&self) -> Result<(), String> {
        let held: u64 = self.holds.values().map(|hold| hold.qty).sum();
        if held != self.reserved {
            return Err(format!(
                "{}: reserved {} but holds sum to {held}",
                self.sku, self.reserved
            ));
        }
        if self.reserved > self.on_hand {
            return Err(format!(
                "{}: reserved {} exceeds on_hand {}",
                self.sku, self.reserved, self.on_hand
            ));
        }
        if self.on_hand > ON_HAND_MAX {
            return Err(format!("{}: on_hand {} over the maximum", self.sku, self.on_hand));
        }
        let indexed = self
            .expiry
            .iter()
            .all(|(expires_ms, id)| self.holds.get(id).is_some_and(|hold| hold.expires_ms == *expires_ms));
        if !indexed || self.expiry.len() != self.holds.len() {
            return Err(format!("{}: expiry index does not match the holds", self.sku));
        }
        Ok(())
    }
}

///
/// Panics if the event does not fit the state: events come from [`decide`](super::decide()) on the same
/// state, so a misfit is a bug, and the actor is restarted from storage.
pub fn apply(state: &mut SkuState, event: &SkuEvent) {
    match event {
        SkuEvent::SkuCreated { .. } => panic!("{}: SkuCreated applied to an existing SKU", state.sku),
        SkuEvent::SkuUpdated { product } => state.product = product.clone(),
        SkuEvent::StockRestocked { qty } => state.on_hand += qty,
        SkuEvent::StockAdjusted { delta, .. } => {
            state.on_hand = state
                .on_hand
                .checked_add_signed(*delta)
                .expect("an adjustment never takes on_hand below zero");
        }
        SkuEvent::StockReserved { hold } => {
            state.reserved += hold.qty;
            state.expiry.insert((hold.expires_ms, hold.id));
            let previous = state.holds.insert(hold.id, hold.clone());
            assert!(previous.is_none(), "reservation id reused");
        }
        SkuEvent::ReservationChanged { id, qty, expires_ms } => {
            let hold = state
                .holds
                .get_mut(id)
                .expect("changing a reservation that is not held");
            assert!(
                state.expiry.remove(&(hold.expires_ms, hold.id)),
                "expiry index out of step"
            );
            state.reserved = state.reserved - hold.qty + qty;
            hold.qty = *qty;
            hold.expires_ms = *expires_ms;
            state.expiry.insert((*expires_ms, *id));
        }
        SkuEvent::ReservationReturned { qty, .. } => state.on_hand += qty,
        SkuEvent::ReservationReleased { id, .. }
        | SkuEvent::ReservationExpired { id, .. }
        | SkuEvent::ReservationCommitted { id, .. } => {
            let hold = state.holds.remove(id).expect("settling a reservation that is not held");
            assert!(
                state.expiry.remove(&(hold.expires_ms, hold.id)),
                "expiry index out of step"
            );
            state.reserved -= hold.qty;
            if matches!(event, SkuEvent::ReservationCommitted { .. }) {
                state.on_hand -= hold.qty;
            }
        }
    }
    state.check_invariants_cheaply();
    debug_assert_eq!(state.check_invariants_fully(), Ok(()));
}

/// Applies a batch of events from [`decide`](super::decide()), creating the state on `SkuCreated`.
pub fn apply_all(sku: &SkuId, state: &mut Option<SkuState>, events: &[SkuEvent]) {
    for event in events {
        match event {
            SkuEvent::SkuCreated { product, on_hand } => {
                assert!(state.is_none(), "SkuCreated applied to an existing SKU");
                *state = Some(SkuState::created(sku.clone(), product.clone(), *on_hand));
            }
            other => apply(
                state
                    .as_mut()
                    .expect("events other than SkuCreated need an existing SKU"),
                other,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{Currency, Name};

    fn product() -> Product {
        Product {
            name: Name::parse("Mug", "name", "invalid_name").unwrap(),
            price_minor: 1299,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    #[test]
    fn restore_refuses_rows_that_break_the_invariants() {
        let sku = SkuId::parse("mug").unwrap();
        let hold = Hold {
            id: ReservationId::generate(),
            qty: 2,
            created_ms: 0,
            expires_ms: 10,
        };
        assert!(SkuState::restore(sku.clone(), product(), 5, 2, vec![hold.clone()]).is_ok());
        assert!(SkuState::restore(sku.clone(), product(), 5, 3, vec![hold.clone()]).is_err());
        assert!(SkuState::restore(sku, product(), 1, 2, vec![hold]).is_err());
    }
}
