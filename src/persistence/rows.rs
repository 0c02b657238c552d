//! The stored rows, and how a SKU change turns into puts and deletes.
//!
//! Rows are fine-grained current state (one per SKU, one per hold, one per settled
//! reservation, one per transfer, one per ledger movement until a checkpoint writes a run of
//! them as one page: [`super::ledger`]), so recovery reads state instead of replaying events.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::codec::{self, Versioned};
use super::{keys, Op};
use crate::domain::location::LocationId;
use crate::domain::sku::{
    Hold, LegacyHold, LegacyReservation, Movement, Product, Reservation, ReservationState, SkuEvent, SkuSnapshot,
    SkuState, Stock, TransferRecord,
};
use crate::domain::SkuId;

/// A SKU's product, counters per location, transfers in transit and ledger position; its
/// holds are rows of their own.
pub type SkuRow = SkuSnapshot;

/// A SKU row as the releases before locations stored it: one set of counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacySkuRow {
    /// Name and price.
    pub product: Product,
    /// Units in stock.
    pub on_hand: u64,
    /// Units held: equals the sum of the SKU's hold rows.
    pub reserved: u64,
}

/// A SKU from before locations opens with all its stock at `default`, and its ledger opens
/// with those counters.
impl From<LegacySkuRow> for SkuSnapshot {
    fn from(legacy: LegacySkuRow) -> Self {
        let stock = vec![(
            LocationId::default_location(),
            Stock {
                on_hand: legacy.on_hand,
                reserved: legacy.reserved,
                committed: 0,
            },
        )];
        SkuSnapshot {
            product: legacy.product,
            opening: stock.clone(),
            stock,
            in_transit: Vec::new(),
            low_stock_threshold: 0,
            movement_seq: 0,
            ledger_start: 1,
            backorder_limit: 0,
            available_from_ms: None,
            backorders: Vec::new(),
        }
    }
}

impl Versioned for SkuSnapshot {
    type Legacy = LegacySkuRow;
    type Previous = crate::domain::sku::SkuSnapshotV2;
}

impl Versioned for Hold {
    type Legacy = LegacyHold;
    type Previous = Hold;
}

impl Versioned for Reservation {
    type Legacy = LegacyReservation;
    type Previous = Reservation;
}

/// A movement of the stock ledger as stored: when, and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementRow {
    /// The movement.
    pub movement: Movement,
    /// When it was made.
    pub at_ms: u64,
    /// Who made it (a credential's name, `admin`, `cart`, `system`).
    pub by: Arc<str>,
}

/// The puts and deletes that store a SKU after `events` applied, given the records they
/// settled and the ledger movements they made. Settled records are kept until `now_ms +
/// settled_retention_ms`.
pub struct SkuChange<'a> {
    /// The SKU after the events.
    pub after: &'a SkuState,
    /// The events.
    pub events: &'a [SkuEvent],
    /// Reservations they settled.
    pub settled: &'a [Reservation],
    /// Movements they made.
    pub movements: &'a [Movement],
    /// Transfers they sent or received, as they are to be stored.
    pub transfers: &'a [TransferRecord],
    /// When.
    pub now_ms: u64,
    /// Who.
    pub by: &'a Arc<str>,
    /// How long settled reservations are kept.
    pub settled_retention_ms: u64,
}

/// The puts and deletes of one [`SkuChange`].
pub fn sku_change_ops(change: &SkuChange<'_>) -> Vec<Op> {
    let after = change.after;
    let sku = after.sku();
    let mut ops = Vec::with_capacity(1 + 3 * change.events.len() + change.movements.len());
    ops.push(Op::Put(keys::sku(sku), codec::encode_current(&after.snapshot_ref())));
    // Settled holds first: a hold settled early in the call (expired) may be held again later
    // in it under the same id, and the later put must win.
    let due_ms = change.now_ms.saturating_add(change.settled_retention_ms);
    for record in change.settled {
        let key = keys::reservation(&record.id);
        ops.push(Op::Delete(keys::hold(sku, &record.id)));
        // A sale with units still to ship is kept until they ship or go back: its order
        // needs it, however long that takes.
        let open_sale = record.state == ReservationState::Committed && !record.parts.is_empty();
        if !open_sale {
            ops.push(Op::Put(keys::expiring(due_ms, &key), Vec::new()));
        }
        ops.push(Op::Put(key, codec::encode_versioned(record)));
    }
    for event in change.events {
        let changed = match event {
            SkuEvent::Held { hold } => Some(hold.id),
            SkuEvent::StockReserved { hold } => Some(hold.id),
            SkuEvent::ReservationChanged { id, .. } | SkuEvent::HoldChanged { id, .. } => Some(*id),
            _ => None,
        };
        // The hold as it stands after every event (a later event may have settled it).
        if let Some(hold) = changed.and_then(|id| after.hold(&id)) {
            ops.push(Op::Put(keys::hold(sku, &hold.id), codec::encode_versioned(hold)));
        }
    }
    for event in change.events {
        if let SkuEvent::LedgerTrimmed { from_seq, upto_seq, .. } = event {
            for seq in *from_seq..=*upto_seq {
                ops.push(Op::Delete(keys::movement(sku, seq)));
            }
        }
    }
    for record in change.transfers {
        ops.push(Op::Put(keys::transfer(&record.transfer.id), codec::encode(record)));
    }
    for movement in change.movements {
        let row = MovementRow {
            movement: movement.clone(),
            at_ms: change.now_ms,
            by: Arc::clone(change.by),
        };
        ops.push(Op::Put(keys::movement(sku, movement.seq), codec::encode(&row)));
    }
    ops
}

/// Rebuilds a SKU from its row and hold rows, checking its invariants.
pub fn restore_sku(sku: SkuId, row: SkuRow, holds: Vec<Hold>) -> Result<SkuState, String> {
    SkuState::restore(sku, row, holds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::TransferId;
    use crate::domain::sku::{SkuState, Transfer};
    use crate::domain::values::{Currency, Name};

    #[test]
    fn a_sku_row_encodes_the_same_from_the_state_as_from_its_snapshot() {
        let location = |raw: &str| LocationId::parse(raw).unwrap();
        let product = Product {
            name: Name::parse("Mug", "name", "invalid_name").unwrap(),
            price_minor: 1299,
            currency: Currency::parse("EUR").unwrap(),
        };
        let stock = |on_hand| Stock {
            on_hand,
            reserved: 0,
            committed: 0,
        };
        let snapshot = SkuSnapshot {
            product,
            stock: vec![(location("default"), stock(5)), (location("north"), stock(7))],
            in_transit: vec![Transfer {
                id: TransferId::generate(),
                from: location("north"),
                to: location("default"),
                qty: 2,
                created_ms: 9,
            }],
            low_stock_threshold: 3,
            movement_seq: 12,
            opening: vec![(location("default"), stock(1))],
            ledger_start: 4,
            backorder_limit: 4,
            available_from_ms: Some(1_800_000_000_000),
            backorders: vec![crate::domain::sku::Backorder {
                id: crate::domain::ReservationId::generate(),
                location: location("north"),
                qty: 2,
            }],
        };
        let state = SkuState::restore(SkuId::parse("mug").unwrap(), snapshot.clone(), Vec::new()).unwrap();
        let bytes = codec::encode_current(&state.snapshot_ref());
        assert_eq!(bytes, codec::encode_versioned(&snapshot));
        assert_eq!(codec::decode_versioned::<SkuRow>(b"s", &bytes).unwrap(), snapshot);

        // A row written before backorders (format 2) reads with none.
        let previous = crate::domain::sku::SkuSnapshotV2 {
            product: snapshot.product.clone(),
            stock: snapshot.stock.clone(),
            in_transit: snapshot.in_transit.clone(),
            low_stock_threshold: snapshot.low_stock_threshold,
            movement_seq: snapshot.movement_seq,
            opening: snapshot.opening.clone(),
            ledger_start: snapshot.ledger_start,
        };
        let mut old = codec::encode_current(&previous);
        old[0] = codec::FORMAT_VERSION_LOCATIONS;
        let read = codec::decode_versioned::<SkuRow>(b"s", &old).unwrap();
        assert_eq!(
            (
                read.backorder_limit,
                read.available_from_ms,
                read.backorders.len(),
                read.stock
            ),
            (0, None, 0, snapshot.stock.clone())
        );
    }
}
