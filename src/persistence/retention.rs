//! Retention: rows kept for a while (settled reservations, idempotency answers) are deleted
//! once due. Each such row has an `expiring` index row naming its due time; a pass walks the
//! index from the front and deletes what is due, through the writer like any change.

use super::writer::Change;
use super::{codec, keys, Op, StateView, StoreError, Writer};
use crate::domain::cart::{Cart, CartStatus};
use crate::domain::order::Order;
use crate::domain::sku::{Reservation, ReservationState};
use crate::metrics as names;

/// Most index rows one pass reads, so a pass stays short; the next pass goes on.
pub const SWEEP_ROWS_MAX: usize = 10_000;

/// One pass at `now_ms`: submits the deletes of every row due (at most [`SWEEP_ROWS_MAX`])
/// and returns how many ops it submitted; none when the writer's queue is full (the next pass
/// retries).
pub fn sweep(store: &StateView, writer: &Writer, now_ms: u64) -> Result<usize, StoreError> {
    let ops = due_deletes(store, now_ms)?;
    if ops.is_empty() {
        return Ok(0);
    }
    let deleted = ops.len();
    let Some(permit) = writer.try_reserve() else {
        return Ok(0);
    };
    permit.submit(Change {
        ops,
        events: Vec::new(),
        time_ms: now_ms,
        by: crate::access::by_system(),
    });
    metrics::counter!(names::RETENTION_DELETED_TOTAL).increment(deleted as u64);
    Ok(deleted)
}

/// The deletes of rows whose retention ran out by `now_ms`. Rows are read here and deleted
/// later, by the writer, so each delete is conditional on the row still holding the value
/// read: a newer record written meanwhile under the same key stays.
pub fn due_deletes(store: &StateView, now_ms: u64) -> Result<Vec<Op>, StoreError> {
    let mut ops = Vec::new();
    for (key, _) in store.scan(&[keys::EXPIRING], None, SWEEP_ROWS_MAX)? {
        let Some((due_ms, target)) = keys::expiring_parts(&key) else {
            continue;
        };
        if due_ms > now_ms {
            break;
        }
        if let Some(value) = may_delete(store, target)? {
            ops.push(Op::DeleteIf(target.to_vec(), value));
        }
        ops.push(Op::Delete(key));
    }
    Ok(ops)
}

/// Whether retention may delete `target`, and the value it may delete: only while the row
/// still holds that value. Committed and returned reservations are records of sales and are
/// kept; a released id may have been held again (cart lines reuse their id), and the
/// conditional delete keeps the newer record. Carts and orders go only once settled.
fn may_delete(store: &StateView, target: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(bytes) = store.get(target)? else {
        return Ok(None);
    };
    let settled = match target.first() {
        Some(&keys::RESERVATION) => {
            let record: Reservation = codec::decode_versioned(target, &bytes)?;
            matches!(record.state, ReservationState::Released | ReservationState::Expired)
        }
        Some(&keys::CART) => {
            let cart: Cart = codec::decode_versioned(target, &bytes)?;
            matches!(cart.status, CartStatus::CheckedOut(_) | CartStatus::Expired)
        }
        Some(&keys::ORDER) => {
            let order: Order = codec::decode_versioned(target, &bytes)?;
            order.status().is_settled() && !order.owes_stock()
        }
        _ => true,
    };
    Ok(settled.then_some(bytes))
}
