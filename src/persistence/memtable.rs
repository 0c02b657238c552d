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
use std::sync::{Arc, Mutex, MutexGuard};

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

    /// The last log position applied.
    pub fn applied_through(&self) -> u64 {
        lock(&self.tables).applied_through
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

    /// Drops the frozen rows: the state tree has them durably now.
    pub fn checkpointed(&self) {
        lock(&self.tables).frozen = None;
    }

    /// The entries of the memtable under `prefix` after `start` (exclusive when
    /// `after` is set), newest value per key, at most `live_limit` puts (deletes are not
    /// counted), and the last key looked at when the limit cut the list short.
    fn range(&self, prefix: &[u8], after: Option<&[u8]>, live_limit: usize) -> (Vec<RowChange>, bool) {
        let tables = lock(&self.tables);
        let lower = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut merged: BTreeMap<&Vec<u8>, &Option<Vec<u8>>> = BTreeMap::new();
        let frozen = tables.frozen.as_ref().map(|frozen| &frozen.rows);
        for table in frozen.into_iter().map(|rows| rows.as_ref()).chain([&tables.active]) {
            for (key, value) in table.range((lower.clone(), Bound::Unbounded)) {
                if !key.starts_with(prefix) {
                    break;
                }
                // Active is visited last, so its value wins.
                merged.insert(key, value);
            }
        }
        let mut out = Vec::new();
        let mut live = 0;
        for (key, value) in merged {
            if value.is_some() {
                if live == live_limit {
                    return (out, true);
                }
                live += 1;
            }
            out.push((key.clone(), value.clone()));
        }
        (out, false)
    }
}

/// The state as readers see it: the memtable over the checkpointed rows.
#[derive(Clone)]
pub struct StateView {
    /// Rows changed since the last checkpoint.
    pub memtable: Arc<Memtable>,
    /// The checkpointed rows (and the log).
    pub storage: Arc<dyn Storage>,
}

impl StateView {
    /// A view over `storage` with `memtable` on top.
    pub fn new(storage: Arc<dyn Storage>, memtable: Arc<Memtable>) -> Self {
        Self { memtable, storage }
    }

    /// The newest value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.memtable.get(key) {
            Some(value) => Ok(value),
            None => self.storage.get(key),
        }
    }

    /// Up to `limit` entries under `prefix` in key order, after `after` when given: the
    /// memtable's newest values merged over the checkpointed rows.
    pub fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let (memory, cut) = self.memtable.range(prefix, after, limit);
        // With the memtable's list cut short, nothing past its last key can be answered yet.
        let ceiling = if cut {
            memory.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        let mut memory = memory.into_iter().peekable();
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut cursor = after.map(<[u8]>::to_vec);
        'pages: loop {
            let page = self.storage.scan(prefix, cursor.as_deref(), limit.max(1))?;
            let exhausted = page.len() < limit.max(1);
            for (key, value) in page {
                cursor = Some(key.clone());
                if ceiling.as_ref().is_some_and(|ceiling| key > *ceiling) {
                    break 'pages;
                }
                let mut shadowed = false;
                while let Some((memory_key, _)) = memory.peek() {
                    if *memory_key > key {
                        break;
                    }
                    let (memory_key, memory_value) = memory.next().expect("peeked");
                    shadowed = memory_key == key;
                    if let Some(value) = memory_value {
                        out.push((memory_key, value));
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
                if !shadowed {
                    out.push((key, value));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        for (key, value) in memory {
            if let Some(value) = value {
                out.push((key, value));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
