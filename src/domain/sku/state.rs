//! A live SKU: its counters, its holds indexed by expiry, its invariants, and [`apply`], which
//! changes it by one event.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::event::SkuEvent;
use super::expiry::ExpiryIndex;
use super::holds::Holds;
use super::model::{
    Backorder, Hold, Movement, MovementKind, Product, Reference, Reservation, ReservationState, SkuView, Transfer,
    ON_HAND_MAX,
};
use super::stock::{merge_parts, shrink_parts, Part, Parts, Stock};
use crate::domain::ids::{ReservationId, SkuId, TransferId};
use crate::domain::location::LocationId;

/// What a SKU is apart from its holds: how it is stored, and how it is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSnapshot {
    /// Name and price.
    pub product: Product,
    /// The counters per location, by id.
    pub stock: Vec<(LocationId, Stock)>,
    /// Transfers in transit.
    pub in_transit: Vec<Transfer>,
    /// Below this many available units a location is low (0: never).
    pub low_stock_threshold: u64,
    /// The last movement written to the SKU's ledger (0: none yet).
    pub movement_seq: u64,
    /// The counters the ledger starts from, per location: what a data directory from before
    /// the ledger held, plus the movements retention folded in. The movements of a location
    /// sum to its counters minus this.
    pub opening: Vec<(LocationId, Stock)>,
    /// The first movement still kept (earlier ones were folded into `opening`).
    pub ledger_start: u64,
    /// Most units that may be held or sold beyond the shelves (0: none).
    pub backorder_limit: u64,
    /// When a preorder SKU becomes available (none: it is not a preorder).
    pub available_from_ms: Option<u64>,
    /// Units held or sold beyond the shelves, oldest first.
    pub backorders: Vec<Backorder>,
}

/// A SKU row as the releases before backorders stored it (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSnapshotV2 {
    /// As in [`SkuSnapshot`].
    pub product: Product,
    /// As in [`SkuSnapshot`].
    pub stock: Vec<(LocationId, Stock)>,
    /// As in [`SkuSnapshot`].
    pub in_transit: Vec<Transfer>,
    /// As in [`SkuSnapshot`].
    pub low_stock_threshold: u64,
    /// As in [`SkuSnapshot`].
    pub movement_seq: u64,
    /// As in [`SkuSnapshot`].
    pub opening: Vec<(LocationId, Stock)>,
    /// As in [`SkuSnapshot`].
    pub ledger_start: u64,
}

impl From<SkuSnapshotV2> for SkuSnapshot {
    fn from(previous: SkuSnapshotV2) -> Self {
        SkuSnapshot {
            product: previous.product,
            stock: previous.stock,
            in_transit: previous.in_transit,
            low_stock_threshold: previous.low_stock_threshold,
            movement_seq: previous.movement_seq,
            opening: previous.opening,
            ledger_start: previous.ledger_start,
            backorder_limit: 0,
            available_from_ms: None,
            backorders: Vec::new(),
        }
    }
}

/// Serializes a [`SkuState`] as a [`SkuSnapshot`] (field for field, the same order).
struct SnapshotRef<'a>(&'a SkuState);

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let state = self.0;
        let mut out = serializer.serialize_struct("SkuSnapshot", 10)?;
        out.serialize_field("product", &state.product)?;
        out.serialize_field("stock", &Seq(|| state.stock.iter()))?;
        out.serialize_field("in_transit", &Seq(|| state.in_transit.values()))?;
        out.serialize_field("low_stock_threshold", &state.low_stock_threshold)?;
        out.serialize_field("movement_seq", &state.movement_seq)?;
        out.serialize_field("opening", &state.opening)?;
        out.serialize_field("ledger_start", &state.ledger_start)?;
        out.serialize_field("backorder_limit", &state.backorder_limit)?;
        out.serialize_field("available_from_ms", &state.available_from_ms)?;
        out.serialize_field("backorders", &state.backorders)?;
        out.end()
    }
}

/// A sequence serialized from an iterator (of known length).
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: ExactSizeIterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

/// A live SKU: product, counters per location, held reservations indexed by expiry, and
/// transfers in transit.
#[derive(Debug, Clone)]
pub struct SkuState {
    /// The SKU id.
    pub(super) sku: SkuId,
    /// Name and price.
    pub(super) product: Product,
    /// Counters per location; `reserved` at each is the sum of the hold parts there.
    pub(super) stock: BTreeMap<LocationId, Stock>,
    /// Below this many available units a location is low (0: never).
    pub(super) low_stock_threshold: u64,
    /// Held reservations by id.
    pub(super) holds: Holds,
    /// The same holds ordered by expiry, so expiring is a walk from the front.
    pub(super) expiry: ExpiryIndex,
    /// Transfers in transit, by id.
    pub(super) in_transit: BTreeMap<TransferId, Transfer>,
    /// The last movement written to the ledger.
    pub(super) movement_seq: u64,
    /// The counters the ledger starts from (see [`SkuSnapshot::opening`]).
    pub(super) opening: Vec<(LocationId, Stock)>,
    /// The first movement still kept.
    pub(super) ledger_start: u64,
    /// Most units that may be held or sold beyond the shelves, in all (0: none).
    pub(super) backorder_limit: u64,
    /// When a preorder SKU becomes available.
    pub(super) available_from_ms: Option<u64>,
    /// Units held or sold beyond the shelves, per reservation and location, oldest first:
    /// restocks fill them in this order. At each location they cover exactly what `reserved +
    /// committed` exceeds `on_hand` by.
    pub(super) backorders: Vec<Backorder>,
}

impl SkuState {
    /// Creates a SKU from its creation event: `on_hand` units at `default`.
    pub fn created(sku: SkuId, product: Product, on_hand: u64) -> Self {
        let mut stock = BTreeMap::new();
        stock.insert(
            LocationId::default_location(),
            Stock {
                on_hand,
                ..Stock::default()
            },
        );
        Self {
            sku,
            product,
            stock,
            low_stock_threshold: 0,
            holds: Holds::default(),
            expiry: ExpiryIndex::default(),
            in_transit: BTreeMap::new(),
            movement_seq: 0,
            opening: Vec::new(),
            ledger_start: 1,
            backorder_limit: 0,
            available_from_ms: None,
            backorders: Vec::new(),
        }
    }

    /// Rebuilds a SKU from stored rows, checking every invariant; `Err` names the broken one.
    pub fn restore(sku: SkuId, snapshot: SkuSnapshot, holds: Vec<Hold>) -> Result<Self, String> {
        let mut state = Self {
            sku,
            product: snapshot.product,
            stock: snapshot.stock.into_iter().collect(),
            low_stock_threshold: snapshot.low_stock_threshold,
            holds: Holds::with_capacity(holds.len()),
            expiry: ExpiryIndex::default(),
            in_transit: snapshot
                .in_transit
                .into_iter()
                .map(|transfer| (transfer.id, transfer))
                .collect(),
            movement_seq: snapshot.movement_seq,
            opening: snapshot.opening,
            ledger_start: snapshot.ledger_start,
            backorder_limit: snapshot.backorder_limit,
            available_from_ms: snapshot.available_from_ms,
            backorders: snapshot.backorders,
        };
        for hold in holds {
            state.expiry.insert((hold.expires_ms, hold.id));
            if state.holds.insert(hold).is_err() {
                return Err(format!("{}: a reservation is stored twice", state.sku));
            }
        }
        state.check_invariants_fully()?;
        Ok(state)
    }

    /// What is stored of the SKU besides its holds.
    pub fn snapshot(&self) -> SkuSnapshot {
        SkuSnapshot {
            product: self.product.clone(),
            stock: self.stock.iter().map(|(id, stock)| (id.clone(), *stock)).collect(),
            in_transit: self.in_transit.values().cloned().collect(),
            low_stock_threshold: self.low_stock_threshold,
            movement_seq: self.movement_seq,
            opening: self.opening.clone(),
            ledger_start: self.ledger_start,
            backorder_limit: self.backorder_limit,
            available_from_ms: self.available_from_ms,
            backorders: self.backorders.clone(),
        }
    }

    /// Units held or sold beyond the shelves at `location`.
    pub fn backordered_at(&self, location: &LocationId) -> u64 {
        self.backorders
            .iter()
            .filter(|backorder| backorder.location == *location)
            .map(|backorder| backorder.qty)
            .sum()
    }

    /// Units held or sold beyond the shelves, in all.
    pub fn backordered(&self) -> u64 {
        self.backorders.iter().map(|backorder| backorder.qty).sum()
    }

    /// Units of reservation `id` not yet on a shelf, at `location` (or anywhere: `None`).
    pub fn backordered_of(&self, id: &ReservationId, location: Option<&LocationId>) -> u64 {
        self.backorders
            .iter()
            .filter(|backorder| backorder.id == *id && location.is_none_or(|at| backorder.location == *at))
            .map(|backorder| backorder.qty)
            .sum()
    }

    /// How many more units may go beyond the shelves.
    pub fn backorder_room(&self) -> u64 {
        self.backorder_limit.saturating_sub(self.backordered())
    }

    /// The SKU's backorder limit, and when a preorder becomes available.
    pub fn backorder_settings(&self) -> (u64, Option<u64>) {
        (self.backorder_limit, self.available_from_ms)
    }

    /// The backorders a restock (or anything else that freed units) can fill now, oldest
    /// first at each location: `(reservation, location, units)`.
    pub fn fillable(&self) -> Vec<(ReservationId, LocationId, u64)> {
        let mut fills = Vec::new();
        let mut slack: BTreeMap<&LocationId, u64> = BTreeMap::new();
        for location in self.backorders.iter().map(|backorder| &backorder.location) {
            if slack.contains_key(location) {
                continue;
            }
            let stock = self.stock_at(location);
            let over = (stock.reserved + stock.committed).saturating_sub(stock.on_hand);
            slack.insert(location, self.backordered_at(location).saturating_sub(over));
        }
        for backorder in &self.backorders {
            let free = slack
                .get_mut(&backorder.location)
                .expect("every location was looked at");
            let filled = backorder.qty.min(*free);
            if filled > 0 {
                *free -= filled;
                fills.push((backorder.id, backorder.location.clone(), filled));
            }
        }
        fills
    }

    /// After the reserved or committed units at `location` grew for `id`: what now exceeds the
    /// shelf there is backordered, under `id`.
    fn backorder_excess(&mut self, id: ReservationId, location: &LocationId) {
        let stock = self.stock_at(location);
        let over = (stock.reserved + stock.committed).saturating_sub(stock.on_hand);
        let excess = over.saturating_sub(self.backordered_at(location));
        if excess > 0 {
            match self
                .backorders
                .iter_mut()
                .find(|backorder| backorder.id == id && backorder.location == *location)
            {
                Some(backorder) => backorder.qty += excess,
                None => self.backorders.push(Backorder {
                    id,
                    location: location.clone(),
                    qty: excess,
                }),
            }
        }
    }

    /// Takes up to `qty` backordered units of `id` at `location` (or anywhere) off the list
    /// (released, filled, or given back).
    fn unbackorder(&mut self, id: ReservationId, location: Option<&LocationId>, mut qty: u64) {
        for backorder in self
            .backorders
            .iter_mut()
            .filter(|backorder| backorder.id == id && location.is_none_or(|at| backorder.location == *at))
        {
            let taken = backorder.qty.min(qty);
            backorder.qty -= taken;
            qty -= taken;
        }
        self.backorders.retain(|backorder| backorder.qty > 0);
    }

    /// The SKU as [`SkuSnapshot`] stores it, serialized straight from the state (the same
    /// bytes as `snapshot()`, without copying it first: this runs on every change).
    pub fn snapshot_ref(&self) -> impl Serialize + '_ {
        SnapshotRef(self)
    }

    /// The first movement still kept in the ledger.
    pub fn ledger_start(&self) -> u64 {
        self.ledger_start
    }

    /// The counters the ledger starts from, per location.
    pub fn opening(&self) -> &[(LocationId, Stock)] {
        &self.opening
    }

    /// The SKU id.
    pub fn sku(&self) -> &SkuId {
        &self.sku
    }

    /// The counters summed over every location.
    pub fn totals(&self) -> Stock {
        let mut totals = Stock::default();
        for stock in self.stock.values() {
            totals.add(stock);
        }
        totals
    }

    /// The counters at each location.
    pub fn stock(&self) -> &BTreeMap<LocationId, Stock> {
        &self.stock
    }

    /// The counters at one location (zero where the SKU never was).
    pub fn stock_at(&self, location: &LocationId) -> Stock {
        self.stock.get(location).copied().unwrap_or_default()
    }

    /// Units physically in stock, over every location.
    pub fn on_hand(&self) -> u64 {
        self.totals().on_hand
    }

    /// Units held by reservations, over every location.
    pub fn reserved(&self) -> u64 {
        self.totals().reserved
    }

    /// Units available over every location.
    pub fn available(&self) -> u64 {
        self.totals().available()
    }

    /// The last movement of the ledger (0: none).
    pub fn movement_seq(&self) -> u64 {
        self.movement_seq
    }

    /// A transfer in transit.
    pub fn transfer(&self, id: &TransferId) -> Option<&Transfer> {
        self.in_transit.get(id)
    }

    /// Name and price.
    pub fn product(&self) -> &Product {
        &self.product
    }

    /// Below this many available units a location is low (0: never).
    pub fn low_stock_threshold(&self) -> u64 {
        self.low_stock_threshold
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
        let totals = self.totals();
        SkuView {
            sku: self.sku.clone(),
            product: self.product.clone(),
            on_hand: totals.on_hand,
            reserved: totals.reserved,
            committed: totals.committed,
            available: totals.available(),
            locations: self.stock.iter().map(|(id, stock)| (id.clone(), *stock)).collect(),
            in_transit: self.in_transit.values().cloned().collect(),
            low_stock_threshold: self.low_stock_threshold,
            backorder_limit: self.backorder_limit,
            backordered: self.backordered(),
            available_from_ms: self.available_from_ms,
        }
    }

    /// A held reservation as clients see it.
    pub fn held_reservation(&self, hold: &Hold) -> Reservation {
        Reservation {
            id: hold.id,
            sku: self.sku.clone(),
            qty: hold.qty,
            parts: hold.parts.to_vec(),
            state: ReservationState::Held,
            created_ms: hold.created_ms,
            expires_ms: hold.expires_ms,
            settled_ms: None,
        }
    }

    /// Checks the invariants whose cost does not grow with the number of holds.
    fn check_invariants_cheaply(&self) {
        let mut on_hand = 0u64;
        for (location, stock) in &self.stock {
            assert!(
                stock.reserved + stock.committed <= stock.on_hand + self.backordered_at(location),
                "{} at {location}: reserved {} and committed {} exceed on_hand {} and the backorders there",
                self.sku,
                stock.reserved,
                stock.committed,
                stock.on_hand
            );
            on_hand += stock.on_hand;
        }
        assert!(on_hand <= ON_HAND_MAX, "{}: on_hand over the maximum", self.sku);
        assert_eq!(
            self.holds.len(),
            self.expiry.len(),
            "{}: expiry index out of step",
            self.sku
        );
    }

    /// Checks every invariant, including the sums over all holds.
    pub fn check_invariants_fully(&self) -> Result<(), String> {
        let mut held: BTreeMap<&LocationId, u64> = BTreeMap::new();
        for hold in self.holds.values() {
            let parts: u64 = hold.parts.iter().map(|part| part.qty).sum();
            if parts != hold.qty || hold.parts.iter().any(|part| part.qty == 0) {
                return Err(format!("{}: hold {} has parts that do not add up", self.sku, hold.id));
            }
            for part in &hold.parts {
                *held.entry(&part.location).or_default() += part.qty;
            }
        }
        let mut on_hand = 0u64;
        for (location, stock) in &self.stock {
            let held_here = held.remove(location).unwrap_or(0);
            if held_here != stock.reserved {
                return Err(format!(
                    "{} at {location}: reserved {} but holds sum to {held_here}",
                    self.sku, stock.reserved
                ));
            }
            if stock.reserved + stock.committed > stock.on_hand + self.backordered_at(location) {
                return Err(format!(
                    "{} at {location}: reserved {} and committed {} exceed on_hand {} and the backorders there",
                    self.sku, stock.reserved, stock.committed, stock.on_hand
                ));
            }
            on_hand += stock.on_hand;
        }
        if let Some((location, _)) = held.into_iter().next() {
            return Err(format!("{}: holds at {location}, which has no counters", self.sku));
        }
        if on_hand > ON_HAND_MAX {
            return Err(format!("{}: on_hand {on_hand} over the maximum", self.sku));
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

    /// Changes `on_hand` and `reserved` at `location` and writes the movement that says so.
    #[allow(clippy::too_many_arguments)]
    fn moved(
        &mut self,
        ledger: &mut Vec<Movement>,
        location: &LocationId,
        kind: MovementKind,
        on_hand: i64,
        reserved: i64,
        reason: Option<String>,
        reference: Option<Reference>,
    ) {
        self.moved_by(ledger, location, kind, [on_hand, reserved, 0], reason, reference);
    }

    /// Changes the counters at `location` by `deltas` (`on_hand`, `reserved`, `committed`)
    /// and writes the movement that says so.
    fn moved_by(
        &mut self,
        ledger: &mut Vec<Movement>,
        location: &LocationId,
        kind: MovementKind,
        deltas: [i64; 3],
        reason: Option<String>,
        reference: Option<Reference>,
    ) {
        let [on_hand, reserved, committed] = deltas;
        let stock = self.stock.entry(location.clone()).or_default();
        stock.on_hand = stock
            .on_hand
            .checked_add_signed(on_hand)
            .expect("decide never takes on_hand below zero");
        stock.reserved = stock
            .reserved
            .checked_add_signed(reserved)
            .expect("decide never takes reserved below zero");
        stock.committed = stock
            .committed
            .checked_add_signed(committed)
            .expect("decide never takes committed below zero");
        let available_after = stock.on_hand.saturating_sub(stock.reserved + stock.committed);
        self.movement_seq += 1;
        ledger.push(Movement {
            seq: self.movement_seq,
            location: location.clone(),
            kind,
            on_hand_delta: on_hand,
            reserved_delta: reserved,
            committed_delta: committed,
            available_after,
            reason,
            reference,
        });
    }

    /// Moves the units of `parts` by `signs` (`on_hand`, `reserved`, `committed`), with one
    /// movement per part.
    fn moved_parts(
        &mut self,
        ledger: &mut Vec<Movement>,
        parts: &[Part],
        kind: MovementKind,
        signs: [i64; 3],
        reference: Reference,
    ) {
        for part in parts {
            let qty = i64::try_from(part.qty).expect("quantities fit i64");
            let deltas = signs.map(|sign| sign * qty);
            self.moved_by(ledger, &part.location, kind, deltas, None, Some(reference));
        }
    }

    /// Replaces a hold's parts, writing a `reservation` or `release` movement for each
    /// location whose share changed.
    fn reparted(&mut self, ledger: &mut Vec<Movement>, id: ReservationId, parts: &[Part]) {
        let before = self.holds[&id].parts.clone();
        let mut diffs: BTreeMap<LocationId, i64> = BTreeMap::new();
        for part in &before {
            *diffs.entry(part.location.clone()).or_default() -= i64::try_from(part.qty).expect("fits");
        }
        for part in parts {
            *diffs.entry(part.location.clone()).or_default() += i64::try_from(part.qty).expect("fits");
        }
        let reference = Reference::Reservation(id);
        for (location, diff) in diffs.into_iter().filter(|(_, diff)| *diff != 0) {
            let kind = if diff > 0 {
                MovementKind::Reservation
            } else {
                MovementKind::Release
            };
            self.moved(ledger, &location, kind, 0, diff, None, Some(reference));
        }
    }
}

/// Applies one event, appending the ledger movements it makes to `ledger`.
///
/// Panics if the event does not fit the state: events come from [`decide`](super::decide()) on the same
/// state, so a misfit is a bug, and the actor is restarted from storage.
pub fn apply(state: &mut SkuState, event: &SkuEvent, ledger: &mut Vec<Movement>) {
    // Only events from before locations name no location: they are about `default`.
    let default = LocationId::default_location;
    match event {
        SkuEvent::SkuCreated { .. } => panic!("{}: SkuCreated applied to an existing SKU", state.sku),
        SkuEvent::SkuUpdated { product } => state.product = product.clone(),
        SkuEvent::SettingsChanged { low_stock_threshold } => state.low_stock_threshold = *low_stock_threshold,
        SkuEvent::StockRestocked { qty } => {
            let qty = i64::try_from(*qty).expect("fits");
            state.moved(ledger, &default(), MovementKind::Receipt, qty, 0, None, None);
        }
        SkuEvent::Received { location, qty, reason } => {
            let qty = i64::try_from(*qty).expect("fits");
            let reason = reason.as_ref().map(|reason| reason.as_str().to_owned());
            state.moved(ledger, location, MovementKind::Receipt, qty, 0, reason, None);
        }
        SkuEvent::StockAdjusted { delta, reason } => {
            let reason = Some(reason.as_str().to_owned());
            state.moved(ledger, &default(), MovementKind::Adjustment, *delta, 0, reason, None);
        }
        SkuEvent::Adjusted {
            location,
            delta,
            reason,
        } => {
            let reason = Some(reason.as_str().to_owned());
            state.moved(ledger, location, MovementKind::Adjustment, *delta, 0, reason, None);
        }
        SkuEvent::Counted {
            location,
            on_hand,
            reason,
        } => {
            let before = state.stock_at(location).on_hand;
            let delta = i64::try_from(*on_hand).expect("fits") - i64::try_from(before).expect("fits");
            let reason = reason.as_ref().map(|reason| reason.as_str().to_owned());
            state.moved(ledger, location, MovementKind::Count, delta, 0, reason, None);
        }
        SkuEvent::StockReserved { hold } => hold_taken(state, Hold::from(hold.clone()), ledger),
        SkuEvent::Held { hold } => hold_taken(state, hold.clone(), ledger),
        SkuEvent::ReservationChanged { id, qty, expires_ms } => {
            let hold = state.holds.get(id).expect("changing a reservation that is not held");
            let parts = if *qty > hold.qty {
                merge_parts(
                    &hold.parts,
                    vec![Part {
                        location: default(),
                        qty: qty - hold.qty,
                    }],
                )
            } else {
                shrink_parts(&hold.parts, hold.qty - qty)
            };
            hold_changed(state, *id, *qty, &parts, *expires_ms, ledger);
        }
        SkuEvent::HoldChanged {
            id,
            qty,
            parts,
            expires_ms,
        } => hold_changed(state, *id, *qty, parts, *expires_ms, ledger),
        SkuEvent::ReservationReturned { id, qty } => {
            let qty = i64::try_from(*qty).expect("fits");
            state.moved(
                ledger,
                &default(),
                MovementKind::Return,
                qty,
                0,
                None,
                Some(Reference::Reservation(*id)),
            );
        }
        SkuEvent::Returned { id, parts } => {
            state.moved_parts(
                ledger,
                parts,
                MovementKind::Return,
                [1, 0, 0],
                Reference::Reservation(*id),
            );
        }
        SkuEvent::ReservationReleased { id, .. }
        | SkuEvent::ReservationExpired { id, .. }
        | SkuEvent::ReservationCommitted { id, .. }
        | SkuEvent::Committed { id, .. } => {
            let hold = state.holds.remove(id).expect("settling a reservation that is not held");
            assert!(
                state.expiry.remove(&(hold.expires_ms, hold.id)),
                "expiry index out of step"
            );
            let (kind, signs) = match event {
                SkuEvent::ReservationReleased { .. } => (MovementKind::Release, [0, -1, 0]),
                SkuEvent::ReservationExpired { .. } => (MovementKind::Expiry, [0, -1, 0]),
                // Sold by this build: committed, on the shelf until shipped.
                SkuEvent::Committed { .. } => (MovementKind::Sale, [0, -1, 1]),
                // Sold outright (or before fulfilment): the units left the shelf at once.
                _ => (MovementKind::Sale, [-1, -1, 0]),
            };
            state.moved_parts(ledger, &hold.parts, kind, signs, Reference::Reservation(*id));
            // Units given up are no longer waited for; a sale keeps waiting for its units.
            if matches!(
                event,
                SkuEvent::ReservationReleased { .. } | SkuEvent::ReservationExpired { .. }
            ) {
                state.unbackorder(*id, None, u64::MAX);
            }
        }
        SkuEvent::TransferSent { transfer } => {
            let qty = i64::try_from(transfer.qty).expect("fits");
            let reference = Some(Reference::Transfer(transfer.id));
            state.moved(
                ledger,
                &transfer.from,
                MovementKind::TransferOut,
                -qty,
                0,
                None,
                reference,
            );
            let previous = state.in_transit.insert(transfer.id, transfer.clone());
            assert!(previous.is_none(), "transfer id reused");
        }
        SkuEvent::TransferReceived { id, to, qty } => {
            let transfer = state
                .in_transit
                .remove(id)
                .expect("receiving a transfer not in transit");
            assert!(
                transfer.to == *to && transfer.qty == *qty,
                "a received transfer differs from the sent one"
            );
            let qty = i64::try_from(*qty).expect("fits");
            state.moved(
                ledger,
                to,
                MovementKind::TransferIn,
                qty,
                0,
                None,
                Some(Reference::Transfer(*id)),
            );
        }
        SkuEvent::Shipped {
            id,
            location,
            qty,
            on_shelf,
        } => {
            if *on_shelf {
                let qty = i64::try_from(*qty).expect("fits");
                let reference = Some(Reference::Reservation(*id));
                state.moved_by(
                    ledger,
                    location,
                    MovementKind::Shipment,
                    [-qty, 0, -qty],
                    None,
                    reference,
                );
            }
        }
        SkuEvent::Uncommitted { id, parts } => {
            state.moved_parts(
                ledger,
                parts,
                MovementKind::Release,
                [0, 0, -1],
                Reference::Reservation(*id),
            );
            for part in parts {
                state.unbackorder(*id, Some(&part.location), part.qty);
            }
        }
        SkuEvent::BackorderFilled { id, location, qty } => {
            state.unbackorder(*id, Some(location), *qty);
            state.moved(
                ledger,
                location,
                MovementKind::BackorderFilled,
                0,
                0,
                Some(format!("{qty} units on the shelf")),
                Some(Reference::Reservation(*id)),
            );
        }
        SkuEvent::BackorderSettingsChanged {
            backorder_limit,
            available_from_ms,
        } => {
            state.backorder_limit = *backorder_limit;
            state.available_from_ms = *available_from_ms;
        }
        SkuEvent::TakenBack {
            id,
            location,
            qty,
            restock,
        } => {
            // Damaged units come back and are written off at once: two movements, so the
            // ledger shows how many.
            let qty = i64::try_from(*qty).expect("fits");
            let reference = Some(Reference::Reservation(*id));
            let reason = (!*restock).then(|| "damaged".to_owned());
            state.moved(
                ledger,
                location,
                MovementKind::Return,
                qty,
                0,
                reason.clone(),
                reference,
            );
            if !*restock {
                state.moved(ledger, location, MovementKind::Adjustment, -qty, 0, reason, reference);
            }
        }
        SkuEvent::LevelCrossed { .. } => {}
        SkuEvent::LedgerTrimmed { upto_seq, folded, .. } => {
            for (location, delta) in folded {
                let index = match state.opening.iter().position(|(at, _)| at == location) {
                    Some(index) => index,
                    None => {
                        state.opening.push((location.clone(), Stock::default()));
                        state.opening.len() - 1
                    }
                };
                let opening = &mut state.opening[index].1;
                let add = |value: u64, delta: i64| value.checked_add_signed(delta).expect("prefix sums are counters");
                opening.on_hand = add(opening.on_hand, delta[0]);
                opening.reserved = add(opening.reserved, delta[1]);
                opening.committed = add(opening.committed, delta[2]);
            }
            state.opening.sort_by(|(a, _), (b, _)| a.cmp(b));
            state.ledger_start = upto_seq + 1;
        }
    }
    state.check_invariants_cheaply();
    debug_assert_eq!(state.check_invariants_fully(), Ok(()));
}

fn hold_taken(state: &mut SkuState, hold: Hold, ledger: &mut Vec<Movement>) {
    state.moved_parts(
        ledger,
        &hold.parts,
        MovementKind::Reservation,
        [0, 1, 0],
        Reference::Reservation(hold.id),
    );
    for part in &hold.parts {
        state.backorder_excess(hold.id, &part.location);
    }
    state.expiry.insert((hold.expires_ms, hold.id));
    assert!(state.holds.insert(hold).is_ok(), "reservation id reused");
}

fn hold_changed(
    state: &mut SkuState,
    id: ReservationId,
    qty: u64,
    parts: &[Part],
    expires_ms: u64,
    ledger: &mut Vec<Movement>,
) {
    let before = state.holds[&id].parts.clone();
    state.reparted(ledger, id, parts);
    let locations: BTreeSet<LocationId> = before.iter().chain(parts).map(|part| part.location.clone()).collect();
    for location in locations {
        let (was, is) = (
            super::stock::units_at(&before, &location),
            super::stock::units_at(parts, &location),
        );
        if is < was {
            state.unbackorder(id, Some(&location), was - is);
        } else if is > was {
            state.backorder_excess(id, &location);
        }
    }
    let hold = state
        .holds
        .get_mut(&id)
        .expect("changing a reservation that is not held");
    assert!(
        state.expiry.remove(&(hold.expires_ms, hold.id)),
        "expiry index out of step"
    );
    hold.qty = qty;
    hold.parts = Parts::from(parts);
    hold.expires_ms = expires_ms;
    state.expiry.insert((expires_ms, id));
}

/// Applies a batch of events from [`decide`](super::decide()), creating the state on
/// `SkuCreated`; returns the ledger movements they made, in order.
pub fn apply_all(sku: &SkuId, state: &mut Option<SkuState>, events: &[SkuEvent]) -> Vec<Movement> {
    let mut ledger = Vec::new();
    for event in events {
        match event {
            SkuEvent::SkuCreated { product, on_hand } => {
                assert!(state.is_none(), "SkuCreated applied to an existing SKU");
                let mut created = SkuState::created(sku.clone(), product.clone(), 0);
                let qty = i64::try_from(*on_hand).expect("fits");
                if qty > 0 {
                    let default = LocationId::default_location();
                    created.moved(&mut ledger, &default, MovementKind::Receipt, qty, 0, None, None);
                }
                *state = Some(created);
            }
            other => apply(
                state
                    .as_mut()
                    .expect("events other than SkuCreated need an existing SKU"),
                other,
                &mut ledger,
            ),
        }
    }
    ledger
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
            parts: super::super::stock::at_default(2).into(),
            created_ms: 0,
            expires_ms: 10,
        };
        let snapshot = |on_hand: u64, reserved: u64| SkuSnapshot {
            product: product(),
            stock: vec![(
                LocationId::default_location(),
                Stock {
                    on_hand,
                    reserved,
                    committed: 0,
                },
            )],
            in_transit: Vec::new(),
            low_stock_threshold: 0,
            movement_seq: 0,
            opening: Vec::new(),
            ledger_start: 1,
            backorder_limit: 0,
            available_from_ms: None,
            backorders: Vec::new(),
        };
        assert!(SkuState::restore(sku.clone(), snapshot(5, 2), vec![hold.clone()]).is_ok());
        assert!(SkuState::restore(sku.clone(), snapshot(5, 3), vec![hold.clone()]).is_err());
        assert!(SkuState::restore(sku.clone(), snapshot(1, 2), vec![hold.clone()]).is_err());
        let elsewhere = Hold {
            parts: smallvec::smallvec![Part {
                location: LocationId::parse("shop").unwrap(),
                qty: 2,
            }],
            ..hold
        };
        assert!(
            SkuState::restore(sku, snapshot(5, 2), vec![elsewhere]).is_err(),
            "a hold at a location other than the one whose counters hold it"
        );
    }
}
