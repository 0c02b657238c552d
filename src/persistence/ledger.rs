//! Ledger retention: movements older than `[ledger] retention_days` are folded into their
//! SKU's opening balance and deleted, a bounded batch per SKU per pass.
//!
//! The pass only reads: it sums a SKU's oldest movements and hands the sums to the SKU's
//! actor ([`SkuCommand::TrimLedger`]), which folds them and deletes their rows in one change,
//! and only if the first of them is still the first movement kept. Movements are never
//! rewritten, so what was read is what is folded, and nothing is folded twice.

use std::collections::BTreeMap;

use super::rows::{MovementRow, SkuRow};
use super::{keys, StateView, StoreError};
use crate::domain::location::LocationId;
use crate::domain::sku::SkuCommand;
use crate::domain::SkuId;

/// Most movements one SKU folds per pass, so that one change stays small.
pub const TRIM_ROWS_MAX: usize = 1000;

/// Most SKU rows one pass reads.
const SKU_PAGE: usize = 1000;

/// The trims of one page of SKUs, and the last SKU of the page when there are more.
pub type TrimPage = (Vec<(SkuId, SkuCommand)>, Option<SkuId>);

/// The trims due at `cutoff_ms` (movements made before it), one command per SKU, for the
/// SKUs after `after` (a page of at most [`SKU_PAGE`]); and the last SKU read, to go on from.
pub fn due_trims(store: &StateView, cutoff_ms: u64, after: Option<&SkuId>) -> Result<TrimPage, StoreError> {
    let start = after.map(keys::sku);
    let page = store.scan(&[keys::SKU], start.as_deref(), SKU_PAGE)?;
    let last = page.last().and_then(|(key, _)| keys::sku_of(key));
    let mut trims = Vec::new();
    for (key, bytes) in &page {
        let Some(sku) = keys::sku_of(key) else { continue };
        let row: SkuRow = store.decode_versioned(key, bytes)?;
        if row.ledger_start > row.movement_seq {
            continue;
        }
        let from = (row.ledger_start > 1).then(|| keys::movement(&sku, row.ledger_start - 1));
        let movements = store.scan(&keys::movements_of(&sku), from.as_deref(), TRIM_ROWS_MAX)?;
        let mut folded: BTreeMap<LocationId, [i64; 3]> = BTreeMap::new();
        let mut upto = None;
        for (key, bytes) in &movements {
            let row: MovementRow = store.decode(key, bytes)?;
            if row.at_ms >= cutoff_ms {
                break;
            }
            let sum = folded.entry(row.movement.location.clone()).or_default();
            sum[0] += row.movement.on_hand_delta;
            sum[1] += row.movement.reserved_delta;
            sum[2] += row.movement.committed_delta;
            upto = Some(row.movement.seq);
        }
        if let Some(upto_seq) = upto {
            trims.push((
                sku,
                SkuCommand::TrimLedger {
                    from_seq: row.ledger_start,
                    upto_seq,
                    folded: folded.into_iter().collect(),
                },
            ));
        }
    }
    let more = page.len() == SKU_PAGE;
    Ok((trims, if more { last } else { None }))
}
