//! Recovery: replays the log after the checkpoint into the memtable ([`replay_log`]), then
//! rebuilds every SKU from the state rows seen through it ([`recover`]) and checks its
//! invariants before the server reports ready.
//!
//! SKU rows and hold rows are both ordered by SKU id, so rebuilding is one merge of two
//! sequential scans, read in bounded pages: its cost grows linearly with the live data, and
//! replay's with the log written since the last checkpoint.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::checkpoint::read_mark;
use super::log::decode_record;
use super::memtable::{Memtable, StateView};
use super::rows::{restore_sku, SkuRow};
use super::writer::LogStart;
use super::{codec, keys, Storage};
use crate::domain::cart::{Cart, CartStatus};
use crate::domain::order::Order;
use crate::domain::sku::{Hold, SkuState};
use crate::domain::SkuId;

/// Rows read per scan call.
const PAGE_ROWS: usize = 10_000;

/// What recovery rebuilt.
pub struct Recovered {
    /// Every SKU with its held reservations.
    pub skus: Vec<SkuState>,
    /// Carts that are open or checking out (others load when asked for).
    pub carts: Vec<Cart>,
    /// Orders that can still change or owe stock back (others load when asked for).
    pub orders: Vec<Order>,
    /// Held reservations restored, over all SKUs.
    pub holds: usize,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// What replaying the log found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Where the log continues.
    pub start: LogStart,
    /// Log records replayed (after the checkpoint).
    pub records: u64,
    /// Row changes replayed.
    pub ops: u64,
    /// A torn last record was found and removed.
    pub torn_record: bool,
    /// How long the replay took.
    pub elapsed: Duration,
}

/// Replays the log records after the checkpoint into a new memtable. A last record that
/// fails its checksum (torn by a crash mid-write) ends the log and is removed; a damaged
/// record anywhere else is corruption and fails recovery.
pub fn replay_log(storage: &dyn Storage) -> anyhow::Result<(Memtable, Replayed)> {
    let started = Instant::now();
    let mark = read_mark(storage).context("reading the checkpoint mark")?;
    let (through, mut events_end) = match mark {
        Some(mark) => (mark.through, mark.events_end),
        None => (0, legacy_events_end(storage)?),
    };
    let memtable = Memtable::new(through, events_end);
    let mut last_position = through;
    let mut records = 0;
    let mut ops = 0;
    let mut torn_record = false;
    let mut from = 0;
    loop {
        let page = storage.read(from, 1024).context("reading the log")?;
        let Some(&(page_last, _)) = page.last() else { break };
        let page_len = page.len();
        for (index, (position, bytes)) in page.into_iter().enumerate() {
            last_position = last_position.max(position);
            if position <= through {
                // Covered by the checkpoint; kept only for its events.
                continue;
            }
            let record = match decode_record(position, &bytes) {
                Ok(record) => record,
                Err(error) => {
                    let is_last = index + 1 == page_len && storage.read(position + 1, 1)?.is_empty();
                    if !is_last {
                        return Err(anyhow::Error::new(error).context("a damaged record in the middle of the log"));
                    }
                    tracing::warn!(position, error = %error, "the last log record is torn; the log ends before it");
                    storage.remove(vec![position]).context("removing the torn record")?;
                    last_position = position - 1;
                    torn_record = true;
                    break;
                }
            };
            if let Some(event) = record.events.last() {
                events_end = events_end.max(event.seq + 1);
            }
            records += 1;
            ops += record.ops.len() as u64;
            memtable.apply(record.ops, position, events_end);
        }
        from = page_last + 1;
    }
    let replayed = Replayed {
        start: LogStart {
            next_position: last_position + 1,
            next_event_seq: events_end.max(1),
        },
        records,
        ops,
        torn_record,
        elapsed: started.elapsed(),
    };
    Ok((memtable, replayed))
}

/// In a store of the first release (event rows, no checkpoint): the sequence number after
/// its last event row, so that event ids never repeat.
fn legacy_events_end(storage: &dyn Storage) -> anyhow::Result<u64> {
    let mut end = 1;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = storage.scan(&[keys::EVENT], after.as_deref(), PAGE_ROWS)?;
        let Some((last, _)) = page.last() else { break };
        if let Some(seq) = keys::event_seq(last) {
            end = end.max(seq + 1);
        }
        after = Some(last.clone());
    }
    Ok(end)
}

/// Reads all state rows and rebuilds the SKUs; fails on a corrupt row or a broken invariant.
pub fn recover(store: &StateView) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let mut holds = HoldCursor::new(store);
    let mut skus = Vec::new();
    let mut hold_count = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(&[keys::SKU], after.as_deref(), PAGE_ROWS)
            .context("reading SKU rows")?;
        let Some((last_key, _)) = page.last() else { break };
        after = Some(last_key.clone());
        for (key, value) in page {
            let sku = keys::sku_of(&key).with_context(|| format!("bad SKU key {}", keys::display(&key)))?;
            let row: SkuRow = codec::decode_versioned(&key, &value)?;
            let sku_holds = holds.take_for(&sku)?;
            hold_count += sku_holds.len();
            let state = restore_sku(sku, row, sku_holds)
                .map_err(|broken| anyhow::anyhow!("invariant broken in storage: {broken}"))?;
            skus.push(state);
        }
    }
    if let Some(orphan) = holds.next_sku()? {
        bail!("hold rows exist for SKU {orphan}, which has no SKU row");
    }
    // Only live carts and orders are kept: settled ones (most of them) are read a page at a
    // time and dropped, so recovery's memory follows what is live, not what was ever written.
    let mut carts = Vec::new();
    for_each_row(store, keys::CART, |key, value| {
        let cart: Cart = codec::decode_versioned(key, value)?;
        if matches!(cart.status, CartStatus::Open | CartStatus::CheckingOut(_)) {
            carts.push(cart);
        }
        Ok(())
    })?;
    let mut orders = Vec::new();
    for_each_row(store, keys::ORDER, |key, value| {
        let order: Order = codec::decode_versioned(key, value)?;
        if !order.status().is_settled() || order.owes_stock() {
            orders.push(order);
        }
        Ok(())
    })?;
    Ok(Recovered {
        skus,
        carts,
        orders,
        holds: hold_count,
        elapsed: started.elapsed(),
    })
}

/// Hands every row under one prefix to `visit`, reading bounded pages: one page in memory at
/// a time.
pub fn for_each_row(
    store: &StateView,
    prefix: u8,
    mut visit: impl FnMut(&[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(&[prefix], after.as_deref(), PAGE_ROWS)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, value) in &page {
            visit(key, value)?;
        }
    }
    Ok(())
}

/// Walks the hold rows in key order (grouped by SKU), one page at a time.
struct HoldCursor<'a> {
    store: &'a StateView,
    page: std::collections::VecDeque<(SkuId, Hold)>,
    after: Option<Vec<u8>>,
    exhausted: bool,
}

impl<'a> HoldCursor<'a> {
    fn new(store: &'a StateView) -> Self {
        Self {
            store,
            page: Default::default(),
            after: None,
            exhausted: false,
        }
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        if !self.page.is_empty() || self.exhausted {
            return Ok(());
        }
        let rows = self
            .store
            .scan(&[keys::HOLD], self.after.as_deref(), PAGE_ROWS)
            .context("reading hold rows")?;
        self.exhausted = rows.len() < PAGE_ROWS;
        if let Some((last, _)) = rows.last() {
            self.after = Some(last.clone());
        }
        for (key, value) in rows {
            let sku = hold_sku(&key).with_context(|| format!("bad hold key {}", keys::display(&key)))?;
            let hold: Hold = codec::decode_versioned(&key, &value)?;
            self.page.push_back((sku, hold));
        }
        Ok(())
    }

    fn next_sku(&mut self) -> anyhow::Result<Option<SkuId>> {
        self.fill()?;
        Ok(self.page.front().map(|(sku, _)| sku.clone()))
    }

    /// Takes the holds of `sku`. SKUs are visited in key order, so its holds are next, if any.
    fn take_for(&mut self, sku: &SkuId) -> anyhow::Result<Vec<Hold>> {
        let mut out = Vec::new();
        loop {
            self.fill()?;
            match self.page.front() {
                Some((owner, _)) if owner == sku => {
                    if let Some((_, hold)) = self.page.pop_front() {
                        out.push(hold);
                    }
                }
                Some((owner, _)) if owner < sku => bail!("hold rows exist for SKU {owner}, which has no SKU row"),
                _ => return Ok(out),
            }
        }
    }
}

/// The SKU id inside a hold key: between the prefix and the `0x00` separator.
fn hold_sku(key: &[u8]) -> Option<SkuId> {
    let rest = key.strip_prefix(&[keys::HOLD])?;
    let end = rest.iter().position(|byte| *byte == 0)?;
    SkuId::parse(std::str::from_utf8(&rest[..end]).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::log::encode_record;
    use crate::persistence::{Log, Op, SledStore};

    fn put(key: &str) -> Vec<Op> {
        vec![Op::Put(key.as_bytes().to_vec(), b"v".to_vec())]
    }

    #[test]
    fn a_torn_last_record_ends_the_log_and_a_damaged_one_before_it_fails_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let torn = {
            let mut bytes = encode_record(&put("c"), &[]);
            bytes.truncate(bytes.len() - 3);
            bytes
        };
        store
            .append(vec![
                (1, encode_record(&put("a"), &[])),
                (2, encode_record(&put("b"), &[])),
                (3, torn.clone()),
            ])
            .unwrap();
        let (memtable, replayed) = replay_log(&store).unwrap();
        assert!(replayed.torn_record);
        assert_eq!(replayed.records, 2, "recovery stops at the last whole record");
        assert_eq!(
            replayed.start.next_position, 3,
            "the torn record's place is written again"
        );
        assert_eq!(memtable.get(b"b"), Some(Some(b"v".to_vec())));
        assert_eq!(memtable.get(b"c"), None);
        assert!(store.read(3, 1).unwrap().is_empty(), "the torn record is removed");

        // Damage in the middle of the log is corruption, not a torn end.
        store
            .append(vec![(3, torn), (4, encode_record(&put("d"), &[]))])
            .unwrap();
        assert!(replay_log(&store).is_err());
    }
}
