//! The memtable: state rows changed since the last checkpoint, and the read view over it and
//! the checkpointed rows.
//!
//! The writer applies each batch's row ops here right after appending them to the log, so
//! every reader sees a change as soon as it is logged (not yet durable: callers that report
//! what they read wait for durability after reading). The checkpoint thread freezes the
//! active table, writes it to the state tree, and drops it once that write is durable.
//!
//! Invariants:
//! - `active` holds exactly the row ops of log records `frozen_through + 1 ..= applied_through`,
//!   the newest value of each row; `frozen` holds those up to `frozen_through`, not yet
//!   durable in the state tree;
//! - a reader looks in `active`, then `frozen`, then the state tree: the first answer wins, and
//!   a tombstone (`None`) answers "absent".

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{Entry, Op, Storage, StoreError};

/// Rows by key: `None` is a delete not yet checkpointed.
pub type Table = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A row's key and newest value (`None`: deleted).
type RowChange = (Vec<u8>, Option<Vec<u8>>);

/// What a checkpoint takes: the rows to write and the log position they cover.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// The rows.
    pub rows: Arc<Table>,
    /// Every log record up to this position is in `rows` (or in an earlier checkpoint).
    pub through: u64,
    /// The event sequence number after the last event of those records.
    pub events_end: u64,
}

#[derive(Debug, Default)]
struct Tables {
    active: Table,
    frozen: Option<Frozen>,
    /// The last log position applied to `active`.
    applied_through: u64,
    /// The event sequence number after the events of the records applied.
    events_end: u64,
}

/// State rows not yet checkpointed.
#[derive(Debug, Default)]
pub struct Memtable {
    tables: Mutex<Tables>,
}

fn lock(mutex: &Mutex<Tables>) -> MutexGuard<'_, Tables> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Memtable {
    /// An empty memtable after log position `through` (the checkpoint's), with events
    /// continuing at `events_end`.
    pub fn new(through: u64, events_end: u64) -> Self {
        Self {
            tables: Mutex::new(Tables {
                applied_through: through,
                events_end,
                ..Tables::default()
            }),
        }
    }

    /// A memtable that holds `rows`, the newest value of every row changed by the log
    /// records after the checkpoint up to `through`, with events continuing at `events_end`
    /// (what replaying the log rebuilt).
    pub fn recovered(rows: Table, through: u64, events_end: u64) -> Self {
        Self {
            tables: Mutex::new(Tables {
                active: rows,
                frozen: None,
                applied_through: through,
                events_end,
            }),
        }
    }

    /// Applies the row ops of the log records up to `through`. Conditional deletes must
    /// have been resolved.
    pub fn apply(&self, ops: impl IntoIterator<Item = Op>, through: u64, events_end: u64) {
        let mut tables = lock(&self.tables);
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    tables.active.insert(key, Some(value));
                }
                Op::Delete(key) => {
                    tables.active.insert(key, None);
                }
                Op::DeleteIf(..) => unreachable!("the writer resolves conditional deletes"),
            }
        }
        tables.applied_through = through;
        tables.events_end = tables.events_end.max(events_end);
    }

    /// The newest value of `key` here: `Some(None)` for a delete, `None` when the memtable
    /// does not know the key.
    pub fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let tables = lock(&self.tables);
        if let Some(value) = tables.active.get(key) {
            return Some(value.clone());
        }
        tables.frozen.as_ref().and_then(|frozen| frozen.rows.get(key).cloned())
    }

    /// Rows not yet checkpointed, active and frozen.
    pub fn len(&self) -> usize {
        let tables = lock(&self.tables);
        tables.active.len() + tables.frozen.as_ref().map_or(0, |frozen| frozen.rows.len())
    }

    /// Whether nothing waits for a checkpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Freezes the active rows for a checkpoint, or returns the frozen ones a failed
    /// checkpoint left. `None` when nothing changed since the last checkpoint.
    pub fn freeze(&self) -> Option<Frozen> {
        let mut tables = lock(&self.tables);
        if let Some(frozen) = &tables.frozen {
            return Some(frozen.clone());
        }
        if tables.active.is_empty() {
            return None;
        }
        let frozen = Frozen {
            rows: Arc::new(std::mem::take(&mut tables.active)),
            through: tables.applied_through,
            events_end: tables.events_end,
        };
        tables.frozen = Some(frozen.clone());
        Some(frozen)
    }

    /// Drops the frozen rows: the state tree has them durably now. The table is freed after
    /// the lock is released, so the writer does not wait for it.
    pub fn checkpointed(&self) {
        let frozen = lock(&self.tables).frozen.take();
        drop(frozen);
    }

    /// Up to `max` entries of the memtable under `prefix`, after `after` when given, in key
    /// order, the newest value per key (active over frozen), deletes included; and whether
    /// more follow.
    fn range(&self, prefix: &[u8], after: Option<&[u8]>, max: usize) -> (Vec<RowChange>, bool) {
        let tables = lock(&self.tables);
        let lower = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let in_prefix = |entry: &(&Vec<u8>, &Option<Vec<u8>>)| entry.0.starts_with(prefix);
        let mut active = tables
            .active
            .range((lower.clone(), Bound::Unbounded))
            .take_while(in_prefix)
            .peekable();
        let empty = Table::new();
        let frozen_table = tables.frozen.as_ref().map_or(&empty, |frozen| frozen.rows.as_ref());
        let mut frozen = frozen_table
            .range((lower, Bound::Unbounded))
            .take_while(in_prefix)
            .peekable();
        let mut out = Vec::new();
        while out.len() < max {
            let next = match (active.peek(), frozen.peek()) {
                (None, None) => return (out, false),
                (Some(_), None) => active.next(),
                (None, Some(_)) => frozen.next(),
                (Some((active_key, _)), Some((frozen_key, _))) => {
                    if frozen_key < active_key {
                        frozen.next()
                    } else {
                        if frozen_key == active_key {
                            // The active value is newer.
                            frozen.next();
                        }
                        active.next()
                    }
                }
            };
            if let Some((key, value)) = next {
                out.push((key.clone(), value.clone()));
            }
        }
        let more = active.peek().is_some() || frozen.peek().is_some();
        (out, more)
    }
}

/// Entries read per source and round of a merged scan (small under test, so that tests
/// cross many chunk boundaries).
const SCAN_CHUNK: usize = if cfg!(test) { 7 } else { 1024 };

/// The state as readers see it: the memtable over the checkpointed rows.
#[derive(Clone)]
pub struct StateView {
    /// Rows changed since the last checkpoint.
    pub memtable: Arc<Memtable>,
    /// The checkpointed rows (and the log).
    pub storage: Arc<dyn Storage>,
    /// Told of every failed read, once set (the engine sets the writer's fatal path): a store
    /// that cannot be read is as broken as one that cannot be written.
    on_read_failure: Arc<OnceLock<ReadFailureHandler>>,
}

/// Called with every read of storage that failed.
pub type ReadFailureHandler = Box<dyn Fn(&StoreError) + Send + Sync>;

impl StateView {
    /// A view over `storage` with `memtable` on top.
    pub fn new(storage: Arc<dyn Storage>, memtable: Arc<Memtable>) -> Self {
        Self {
            memtable,
            storage,
            on_read_failure: Arc::default(),
        }
    }

    /// Sets what a failed read calls, for this view and every clone of it (once; later
    /// calls change nothing).
    pub fn on_read_failure(&self, handler: ReadFailureHandler) {
        let _ = self.on_read_failure.set(handler);
    }

    /// Reports a failed read and hands the error back.
    fn read_failed(&self, error: StoreError) -> StoreError {
        if let Some(handler) = self.on_read_failure.get() {
            handler(&error);
        }
        error
    }

    /// A value read from this view under `key` is damaged: a failed read, reported as such.
    pub fn corrupt(&self, key: &[u8], reason: &str) -> StoreError {
        self.read_failed(StoreError::Corrupt {
            key: super::keys::display(key),
            reason: reason.to_owned(),
        })
    }

    /// The newest value of `key`, decoded. A value that does not decode is a failed read.
    pub fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(key)?.map(|bytes| self.decode(key, &bytes)).transpose()
    }

    /// The newest value of a [`Versioned`](super::codec::Versioned) row, decoded in either layout.
    pub fn get_versioned<T: super::codec::Versioned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(key)?
            .map(|bytes| super::codec::decode_versioned(key, &bytes).map_err(|error| self.read_failed(error)))
            .transpose()
    }

    /// Decodes a [`Versioned`](super::codec::Versioned) value read from this view.
    pub fn decode_versioned<T: super::codec::Versioned>(&self, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        super::codec::decode_versioned(key, bytes).map_err(|error| self.read_failed(error))
    }

    /// Decodes a value read from this view (by a scan); one that does not decode is a
    /// failed read.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        super::codec::decode(key, bytes).map_err(|error| self.read_failed(error))
    }

    /// The newest value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.memtable.get(key) {
            Some(value) => Ok(value),
            None => self.storage.get(key).map_err(|error| self.read_failed(error)),
        }
    }

    /// Up to `limit` entries under `prefix` in key order, after `after` when given: the
    /// memtable's newest values merged over the checkpointed rows. Fewer than `limit` only
    /// when no more exist. Reads both sources in bounded chunks, so a page costs what it
    /// returns (plus the deletes it skips), however many rows follow it.
    pub fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut out: Vec<Entry> = Vec::with_capacity(limit.min(SCAN_CHUNK));
        let mut cursor = after.map(<[u8]>::to_vec);
        while out.len() < limit {
            let (memory, memory_more) = self.memtable.range(prefix, cursor.as_deref(), SCAN_CHUNK);
            let disk = self
                .storage
                .scan(prefix, cursor.as_deref(), SCAN_CHUNK)
                .map_err(|error| self.read_failed(error))?;
            let disk_more = disk.len() == SCAN_CHUNK;
            // Past the last key read from a source with more to come, this round cannot
            // tell what that source holds: stop there, and read on from it next round.
            let bound = [
                memory_more.then(|| memory.last().map(|(key, _)| key.clone())).flatten(),
                disk_more.then(|| disk.last().map(|(key, _)| key.clone())).flatten(),
            ]
            .into_iter()
            .flatten()
            .min();
            let within = |key: &Vec<u8>| bound.as_ref().is_none_or(|bound| key <= bound);
            let mut memory = memory.into_iter().filter(|(key, _)| within(key)).peekable();
            let mut disk = disk.into_iter().filter(|(key, _)| within(key)).peekable();
            loop {
                let order = match (memory.peek(), disk.peek()) {
                    (None, None) => break,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some((memory_key, _)), Some((disk_key, _))) => memory_key.cmp(disk_key),
                };
                let live = |(key, value): RowChange| value.map(|value| (key, value));
                let entry = match order {
                    std::cmp::Ordering::Less => memory.next().and_then(live),
                    std::cmp::Ordering::Greater => disk.next(),
                    std::cmp::Ordering::Equal => {
                        // The memtable's value is newer than the checkpoint's.
                        disk.next();
                        memory.next().and_then(live)
                    }
                };
                if let Some(entry) = entry {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            match bound {
                Some(bound) => cursor = Some(bound),
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::persistence::SledStore;

    #[test]
    fn scans_merge_active_frozen_and_checkpointed_rows_as_a_map_would() {
        let seed: u64 = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let memtable = Arc::new(Memtable::default());
        let view = StateView::new(Arc::clone(&storage), Arc::clone(&memtable));
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut position = 0;
        let random_ops = |rng: &mut StdRng, model: &mut BTreeMap<Vec<u8>, Vec<u8>>| -> Vec<Op> {
            (0..rng.random_range(1..60))
                .map(|_| {
                    let key = vec![b"ab"[rng.random_range(0..2)], rng.random_range(0..40u8)];
                    if rng.random_bool(0.3) {
                        model.remove(&key);
                        Op::Delete(key)
                    } else {
                        let value = vec![rng.random()];
                        model.insert(key.clone(), value.clone());
                        Op::Put(key, value)
                    }
                })
                .collect()
        };
        // Three layers: checkpointed rows, a frozen table over them, an active one on top.
        storage.apply(random_ops(&mut rng, &mut model)).unwrap();
        for layer in 0..2 {
            position += 1;
            memtable.apply(random_ops(&mut rng, &mut model), position, 0);
            if layer == 0 {
                memtable.freeze().unwrap();
            }
        }
        for _ in 0..200 {
            let prefix = [b"ab"[rng.random_range(0..2)]];
            let after = rng.random_bool(0.5).then(|| vec![prefix[0], rng.random_range(0..40u8)]);
            let limit = rng.random_range(1..30);
            let expected: Vec<Entry> = model
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix) && after.as_ref().is_none_or(|after| *key > after))
                .take(limit)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            assert_eq!(
                view.scan(&prefix, after.as_deref(), limit).unwrap(),
                expected,
                "seed {seed}: prefix {prefix:?} after {after:?} limit {limit}"
            );
        }
    }
}
