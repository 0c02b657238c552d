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
use super::log::decode_record_ops;
use super::memtable::{Memtable, StateView, Table};
use super::rows::{restore_sku, SkuRow};
use super::writer::LogStart;
use super::{codec, keys, Op, Storage};
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
///
/// Two threads share the work: a reader reads and decodes the records, and hands them over
/// in chunks sorted by key with only the newest change of each row; this thread merges the
/// chunks into the memtable's table (sorted inserts, one per row a chunk changed).
pub fn replay_log(storage: &dyn Storage) -> anyhow::Result<(Memtable, Replayed)> {
    let started = Instant::now();
    let mark = read_mark(storage).context("reading the checkpoint mark")?;
    let (through, events_end) = match mark {
        Some(mark) => (mark.through, mark.events_end),
        None => (0, legacy_events_end(storage)?),
    };
    let (sender, chunks) = std::sync::mpsc::sync_channel::<ReplayChunk>(REPLAY_CHUNKS_AHEAD);
    let mut rows = Table::new();
    let mut events_end = events_end;
    let mut records = 0;
    let mut ops = 0;
    let end = std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_records(storage, through, sender));
        for chunk in chunks {
            records += chunk.records;
            ops += chunk.ops;
            events_end = events_end.max(chunk.events_end);
            rows.extend(chunk.rows);
        }
        reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let memtable = Memtable::recovered(rows, end.last_position, events_end);
    let replayed = Replayed {
        start: LogStart {
            next_position: end.last_position + 1,
            next_event_seq: events_end.max(1),
        },
        records,
        ops,
        torn_record: end.torn_record,
        elapsed: started.elapsed(),
    };
    Ok((memtable, replayed))
}

/// Chunks the reader may run ahead of the table by.
const REPLAY_CHUNKS_AHEAD: usize = 4;

/// Row changes per chunk (before coalescing), about 100 records' worth; a few under test, so
/// that the model test replays across many chunks.
const REPLAY_CHUNK_OPS: usize = if cfg!(test) { 5 } else { 8192 };

/// Consecutive log records as replay needs them: the newest change of each row they touch,
/// sorted by key, and where their events end.
#[derive(Default)]
struct ReplayChunk {
    rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    records: u64,
    ops: u64,
    events_end: u64,
}

impl ReplayChunk {
    fn add(&mut self, ops: Vec<Op>, events_end: Option<u64>) {
        self.records += 1;
        self.ops += ops.len() as u64;
        self.events_end = self.events_end.max(events_end.unwrap_or(0));
        self.rows.extend(ops.into_iter().map(|op| match op {
            Op::Put(key, value) => (key, Some(value)),
            Op::Delete(key) => (key, None),
            Op::DeleteIf(..) => unreachable!("the writer resolves conditional deletes"),
        }));
    }

    /// Sorts the rows by key, keeping only the last change of each (a stable sort keeps
    /// changes to one row in log order).
    fn coalesced(mut self) -> Self {
        self.rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(self.rows.len());
        for row in self.rows {
            match rows.last_mut() {
                Some(last) if last.0 == row.0 => *last = row,
                _ => rows.push(row),
            }
        }
        self.rows = rows;
        self
    }
}

/// Where the log ended.
struct LogEnd {
    last_position: u64,
    torn_record: bool,
}

/// The reader of [`replay_log`]: sends every record after `through`, decoded, in chunks of
/// consecutive records, in order.
fn read_records(
    storage: &dyn Storage,
    through: u64,
    sender: std::sync::mpsc::SyncSender<ReplayChunk>,
) -> anyhow::Result<LogEnd> {
    let send = |chunk: ReplayChunk| -> anyhow::Result<()> {
        if chunk.records > 0 && sender.send(chunk.coalesced()).is_err() {
            bail!("replay stopped reading the log");
        }
        Ok(())
    };
    let mut chunk = ReplayChunk::default();
    let mut last_position = through;
    // Records up to `through` are covered by the checkpoint (kept only for their events, and
    // whole: the mark is written once the log is durable through them): not read.
    let mut from = through + 1;
    loop {
        let page = storage.read(from, 1024).context("reading the log")?;
        let Some(&(page_last, _)) = page.last() else { break };
        let page_len = page.len();
        for (index, (position, bytes)) in page.into_iter().enumerate() {
            last_position = last_position.max(position);
            let (ops, events_end) = match decode_record_ops(position, &bytes) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let is_last = index + 1 == page_len && storage.read(position + 1, 1)?.is_empty();
                    if !is_last {
                        return Err(anyhow::Error::new(error).context("a damaged record in the middle of the log"));
                    }
                    tracing::warn!(position, error = %error, "the last log record is torn; the log ends before it");
                    storage.remove(vec![position]).context("removing the torn record")?;
                    send(chunk)?;
                    return Ok(LogEnd {
                        last_position: position - 1,
                        torn_record: true,
                    });
                }
            };
            chunk.add(ops, events_end);
            if chunk.rows.len() >= REPLAY_CHUNK_OPS {
                send(std::mem::take(&mut chunk))?;
            }
        }
        from = page_last + 1;
    }
    send(chunk)?;
    Ok(LogEnd {
        last_position,
        torn_record: false,
    })
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
///
/// A second thread reads and decodes the hold rows (most of the rows, and most of the work)
/// while this one reads the SKU rows and rebuilds each SKU with its holds.
pub fn recover(store: &StateView) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let (sender, pages) = std::sync::mpsc::sync_channel(HOLD_PAGES_AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || read_holds(store, &sender));
        let mut holds = HoldCursor::new(pages);
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
        // Only live carts and orders are kept: settled ones (most of them) are read a page at
        // a time and dropped, so recovery's memory follows what is live, not what was ever
        // written.
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

/// Pages of decoded holds the reader may run ahead by.
const HOLD_PAGES_AHEAD: usize = 4;

/// Held reservations of one SKU, in key order; one SKU's holds may span several groups.
type HoldGroup = (SkuId, Vec<Hold>);

/// A page of hold rows, decoded, or why it could not be read.
type HoldPage = anyhow::Result<Vec<HoldGroup>>;

/// The reader of [`recover`]: sends every hold row in key order, a page at a time, grouped
/// by SKU (one SKU id parsed per group, not per hold). Stops at the end, at an error (sent
/// on), or when nobody receives any more.
fn read_holds(store: &StateView, sender: &std::sync::mpsc::SyncSender<HoldPage>) {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = read_hold_page(store, &mut after);
        let last = !matches!(page, Ok((_, true)));
        if sender.send(page.map(|(groups, _)| groups)).is_err() || last {
            return;
        }
    }
}

/// One page of hold rows after `after` (moved past them), grouped by SKU; and whether more
/// may follow.
fn read_hold_page(store: &StateView, after: &mut Option<Vec<u8>>) -> anyhow::Result<(Vec<HoldGroup>, bool)> {
    let rows = store
        .scan(&[keys::HOLD], after.as_deref(), PAGE_ROWS)
        .context("reading hold rows")?;
    let more = rows.len() == PAGE_ROWS;
    if let Some((last, _)) = rows.last() {
        *after = Some(last.clone());
    }
    let mut groups: Vec<HoldGroup> = Vec::new();
    for (key, value) in rows {
        let sku = hold_sku(&key).with_context(|| format!("bad hold key {}", keys::display(&key)))?;
        let hold: Hold = codec::decode_versioned(&key, &value)?;
        match groups.last_mut() {
            Some((owner, holds)) if owner.as_str().as_bytes() == sku => holds.push(hold),
            _ => {
                let owner = std::str::from_utf8(sku)
                    .ok()
                    .and_then(|sku| SkuId::parse(sku).ok())
                    .with_context(|| format!("bad hold key {}", keys::display(&key)))?;
                groups.push((owner, vec![hold]));
            }
        }
    }
    Ok((groups, more))
}

/// Walks the hold rows in key order (grouped by SKU), as [`read_holds`] sends them.
struct HoldCursor {
    pages: std::sync::mpsc::Receiver<HoldPage>,
    groups: std::collections::VecDeque<HoldGroup>,
}

impl HoldCursor {
    fn new(pages: std::sync::mpsc::Receiver<HoldPage>) -> Self {
        Self {
            pages,
            groups: Default::default(),
        }
    }

    /// The next group, receiving a page when none is left; `None` at the end.
    fn front(&mut self) -> anyhow::Result<Option<&mut HoldGroup>> {
        while self.groups.is_empty() {
            match self.pages.recv() {
                Ok(page) => self.groups.extend(page?),
                Err(_) => return Ok(None),
            }
        }
        Ok(self.groups.front_mut())
    }

    fn next_sku(&mut self) -> anyhow::Result<Option<SkuId>> {
        Ok(self.front()?.map(|(sku, _)| sku.clone()))
    }

    /// Takes the holds of `sku`. SKUs are visited in key order, so its holds are next, if any.
    fn take_for(&mut self, sku: &SkuId) -> anyhow::Result<Vec<Hold>> {
        let mut out = Vec::new();
        loop {
            match self.front()? {
                Some((owner, holds)) if owner == sku => {
                    if out.is_empty() {
                        out = std::mem::take(holds);
                    } else {
                        out.append(holds);
                    }
                    self.groups.pop_front();
                }
                Some((owner, _)) if &*owner < sku => bail!("hold rows exist for SKU {owner}, which has no SKU row"),
                _ => return Ok(out),
            }
        }
    }
}

/// The SKU id inside a hold key: between the prefix and the `0x00` separator.
fn hold_sku(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(&[keys::HOLD])?;
    let end = rest.iter().position(|byte| *byte == 0)?;
    Some(&rest[..end])
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
