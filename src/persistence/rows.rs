//! The stored rows, and how a SKU change turns into puts and deletes.
//!
//! Rows are fine-grained current state (one per SKU, one per hold, one per settled
//! reservation), so recovery reads state instead of replaying events.

use serde::{Deserialize, Serialize};

use super::{codec, keys, Op};
use crate::domain::sku::{Hold, Product, Reservation, SkuEvent, SkuState};
use crate::domain::SkuId;

/// A SKU's product and counters; its holds are rows of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuRow {
    /// Name and price.
    pub product: Product,
    /// Units in stock.
    pub on_hand: u64,
    /// Units held: equals the sum of the SKU's hold rows.
    pub reserved: u64,
}

/// The puts and deletes that store a SKU after `events` applied, given the records they
/// settled. Settled records are kept until `now_ms + settled_retention_ms`.
pub fn sku_change_ops(
    after: &SkuState,
    events: &[SkuEvent],
    settled: &[Reservation],
    now_ms: u64,
    settled_retention_ms: u64,
) -> Vec<Op> {
    let sku = after.sku();
    let mut ops = Vec::with_capacity(1 + 3 * events.len());
    ops.push(Op::Put(keys::sku(sku), codec::encode(&sku_row(after))));
    // Settled holds first: a hold settled early in the call (expired) may be held again later
    // in it under the same id, and the later put must win.
    let due_ms = now_ms.saturating_add(settled_retention_ms);
    for record in settled {
        let key = keys::reservation(&record.id);
        ops.push(Op::Delete(keys::hold(sku, &record.id)));
        ops.push(Op::Put(keys::expiring(due_ms, &key), Vec::new()));
        ops.push(Op::Put(key, codec::encode(record)));
    }
    for event in events {
        let changed = match event {
            SkuEvent::StockReserved { hold } => Some(hold.id),
            SkuEvent::ReservationChanged { id, .. } => Some(*id),
            _ => None,
        };
        // The hold as it stands after every event (a later event may have settled it).
        if let Some(hold) = changed.and_then(|id| after.hold(&id)) {
            ops.push(Op::Put(keys::hold(sku, &hold.id), codec::encode(hold)));
        }
    }
    ops
}

/// The stored counters of a SKU.
pub fn sku_row(state: &SkuState) -> SkuRow {
    SkuRow {
        product: state.product().clone(),
        on_hand: state.on_hand(),
        reserved: state.reserved(),
    }
}

/// Rebuilds a SKU from its row and hold rows, checking its invariants.
pub fn restore_sku(sku: SkuId, row: SkuRow, holds: Vec<Hold>) -> Result<SkuState, String> {
    SkuState::restore(sku, row.product, row.on_hand, row.reserved, holds)
}
