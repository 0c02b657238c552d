//! Checkpoints: the memtable's rows written into the state tree in the background, and the
//! log records they make unneeded removed.
//!
//! A checkpoint freezes the memtable's active rows (the newest value of each row changed
//! since the last checkpoint: many changes to one row are one write, and a run of one SKU's
//! ledger movements is one page, see [`ledger`]), writes them into the state tree with the
//! [`CheckpointMark`] (the log position they cover), syncs, and only then drops them from
//! memory and removes log records up to that position that no consumer still needs (the
//! Kafka bridge, and the configured event retention).
//!
//! The rows go in order, in chunks of [`CHUNK_ROWS`], with the mark written last. No atomic
//! batch is needed (sled's would take a process-wide lock and stall log appends): sled keeps
//! a prefix of its writes, so once the mark is durable every row before it is; and until
//! then recovery replays the log from the previous mark, which rewrites every row a partial
//! checkpoint wrote (rows are whole values, not deltas).
//!
//! A failed checkpoint keeps its frozen rows, counts the failure in a metric and is retried;
//! the log still holds every change, so serving goes on and recovery stays correct.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ledger;
use super::log::decode_record;
use super::memtable::StateView;
use super::writer::Durability;
use super::{codec, keys, Op, Storage, StoreError};
use crate::metrics as names;

/// Rows written per call to the store. Smaller under test, so that the model test's
/// checkpoints span many calls and its injected failures land midway (sled does the same
/// with its split thresholds).
pub const CHUNK_ROWS: usize = if cfg!(test) { 16 } else { 1024 };

/// Log records removed per pass, at most.
const REMOVE_RECORDS_MAX: usize = 10_000;

/// What the state tree covers: stored under [`keys::checkpoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMark {
    /// Every log record up to this position is in the state rows.
    pub through: u64,
    /// The sequence number after the last event of those records.
    pub events_end: u64,
}

/// Reads the mark; the default (nothing covered) in a store that never checkpointed.
pub fn read_mark(storage: &dyn Storage) -> Result<Option<CheckpointMark>, StoreError> {
    let key = keys::checkpoint();
    storage.get(&key)?.map(|bytes| codec::decode(&key, &bytes)).transpose()
}

/// How long log records are kept after their checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct LogRetention {
    /// The most events kept for a consumer that starts late (Kafka switched on later).
    pub max_events: u64,
    /// Kafka is on: keep every event it has not acknowledged.
    pub kafka: bool,
}

/// What one checkpoint did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointOutcome {
    /// Rows written to the state tree.
    pub rows: usize,
    /// Log records removed.
    pub records_removed: usize,
    /// Rows are frozen but wait for the log to be durable through them.
    pub waiting: bool,
}

/// Writes the memtable's rows into the state tree and removes log records no longer needed.
/// Rows are written only once the log is durable through the records they come from
/// (`log_durable_through`), so that a checkpointed change always has its events in the log;
/// until then the frozen rows wait for the next round (`waiting`).
pub fn checkpoint_once(
    view: &StateView,
    retention: LogRetention,
    events_end: u64,
    log_durable_through: u64,
) -> Result<CheckpointOutcome, StoreError> {
    let storage = view.storage.as_ref();
    let mut outcome = CheckpointOutcome::default();
    let mark = match view.memtable.freeze() {
        Some(frozen) if frozen.through > log_durable_through => {
            outcome.waiting = true;
            read_mark(storage)?
        }
        Some(frozen) => {
            let started = Instant::now();
            let rows = ledger::checkpoint_ops(&frozen.rows);
            outcome.rows = rows.len();
            let mark = CheckpointMark {
                through: frozen.through,
                events_end: frozen.events_end,
            };
            let mut chunks = rows.chunks(CHUNK_ROWS).peekable();
            if chunks.peek().is_none() {
                storage.apply(vec![Op::Put(keys::checkpoint(), codec::encode(&mark))])?;
            }
            while let Some(chunk) = chunks.next() {
                let mut ops = chunk.to_vec();
                if chunks.peek().is_none() {
                    ops.push(Op::Put(keys::checkpoint(), codec::encode(&mark)));
                }
                storage.apply(ops)?;
            }
            storage.flush()?;
            view.memtable.checkpointed();
            metrics::histogram!(names::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::counter!(names::CHECKPOINT_ROWS_TOTAL).increment(outcome.rows as u64);
            Some(mark)
        }
        None => read_mark(storage)?,
    };
    if let Some(mark) = mark {
        outcome.records_removed = remove_unneeded(view, mark, retention, events_end)?;
    }
    Ok(outcome)
}

/// Removes log records that the checkpoint covers and whose events no consumer needs.
fn remove_unneeded(
    view: &StateView,
    mark: CheckpointMark,
    retention: LogRetention,
    events_end: u64,
) -> Result<usize, StoreError> {
    let mut keep_from_seq = events_end.saturating_sub(retention.max_events);
    if retention.kafka {
        let key = keys::kafka_position();
        let delivered: u64 = match view.get(&key)? {
            Some(bytes) => codec::decode(&key, &bytes)?,
            None => 0,
        };
        keep_from_seq = keep_from_seq.min(delivered);
    }
    let mut remove = Vec::new();
    let mut from = 0;
    // A few records at a time: usually the first one must stay, and reading on is waste.
    'records: while remove.len() < REMOVE_RECORDS_MAX {
        let page = view.storage.read(from, 16)?;
        let Some(&(last, _)) = page.last() else { break };
        for (position, bytes) in page {
            if position > mark.through {
                break 'records;
            }
            // A damaged record the checkpoint covers is not needed for state; its events are
            // reported by the reader that needs them.
            if let Ok(record) = decode_record(position, &bytes) {
                if record.events.last().is_some_and(|event| event.seq >= keep_from_seq) {
                    break 'records;
                }
            }
            remove.push(position);
        }
        from = last + 1;
    }
    let removed = remove.len();
    if removed > 0 {
        view.storage.remove(remove)?;
        metrics::counter!(names::LOG_RECORDS_REMOVED_TOTAL).increment(removed as u64);
    }
    Ok(removed)
}

/// The background checkpoint thread.
pub struct Checkpointer {
    /// What the thread and [`Checkpointer::run_now`] share.
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    view: StateView,
    config: CheckpointConfig,
    /// Where the log is durable, and the event log's durable end.
    durability: Arc<Durability>,
    /// One checkpoint at a time.
    running: Mutex<()>,
    /// Set to stop; the condvar wakes the thread early.
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Inner {
    fn checkpoint(&self) -> Result<CheckpointOutcome, StoreError> {
        checkpoint_once(
            &self.view,
            self.config.retention,
            self.durability.events_end(),
            self.durability.log_position(),
        )
    }

    fn run(&self) -> Result<CheckpointOutcome, StoreError> {
        let _running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut outcome = self.checkpoint();
        // Rows frozen from a batch still syncing: the sync takes about a millisecond.
        for _ in 0..100 {
            if !matches!(outcome, Ok(CheckpointOutcome { waiting: true, .. })) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            outcome = self.checkpoint();
        }
        if let Err(error) = &outcome {
            metrics::counter!(names::CHECKPOINT_FAILURES_TOTAL).increment(1);
            tracing::warn!(error = %error, "checkpoint failed; the log keeps every change, retrying");
        }
        metrics::gauge!(names::MEMTABLE_ROWS).set(self.view.memtable.len() as f64);
        outcome
    }
}

/// Runs the calling thread at the lowest CPU priority (`nice` 19): a checkpoint is background
/// work, and on a busy machine it must take CPU only when requests leave some. Measured: at
/// full priority a checkpoint's CPU pushed reservation p99 from 7 ms to 70 ms at half the
/// maximum rate.
fn lower_priority() {
    // SAFETY: `gettid` has no preconditions; `setpriority` on our own thread id changes only
    // this thread's nice value and reports failure through its return value.
    let failed = unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, u32::try_from(thread).unwrap_or(0), 19) != 0
    };
    if failed {
        tracing::warn!("could not lower the checkpoint thread's priority; it competes with requests for CPU");
    }
}

/// When to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointConfig {
    /// Time between checkpoints.
    pub interval: Duration,
    /// Log retention after the checkpoint.
    pub retention: LogRetention,
}

impl Checkpointer {
    /// Starts the thread; `durability` tells how far the log is durable.
    pub fn start(view: StateView, config: CheckpointConfig, durability: Arc<Durability>) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            view,
            config,
            durability,
            running: Mutex::new(()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("stockroom-checkpoint".to_owned())
            .spawn(move || {
                lower_priority();
                loop {
                    let inner = &thread_inner;
                    let guard = inner.stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let (guard, _) = inner
                        .wake
                        .wait_timeout_while(guard, inner.config.interval, |stopped| !*stopped)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let stopping = *guard;
                    drop(guard);
                    // A failure is counted and logged by `run`; the next round retries.
                    let _ = inner.run();
                    if stopping {
                        return;
                    }
                }
            })?;
        Ok(Self {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Checkpoints now, on the caller's thread (blocking), one at a time with the thread's.
    pub fn run_now(&self) -> Result<CheckpointOutcome, StoreError> {
        self.inner.run()
    }

    /// Runs a last checkpoint and stops the thread. Blocks until it has finished.
    pub fn close(&self) {
        *self
            .inner
            .stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        self.inner.wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the checkpoint thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::{Memtable, SledStore, Storage};

    #[test]
    fn rows_wait_for_the_log_to_be_durable_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let memtable = Arc::new(Memtable::default());
        let view = StateView::new(Arc::clone(&storage), Arc::clone(&memtable));
        memtable.apply([Op::Put(b"row".to_vec(), b"v".to_vec())], 5, 0);
        let retention = LogRetention {
            max_events: 10,
            kafka: false,
        };
        let early = checkpoint_once(&view, retention, 0, 4).unwrap();
        assert!(early.waiting, "record 5 is not durable yet");
        assert_eq!(storage.get(b"row").unwrap(), None, "so its row is not checkpointed");
        assert_eq!(view.get(b"row").unwrap(), Some(b"v".to_vec()), "readers still see it");
        let done = checkpoint_once(&view, retention, 0, 5).unwrap();
        assert_eq!((done.waiting, done.rows), (false, 1));
        assert_eq!(storage.get(b"row").unwrap(), Some(b"v".to_vec()));
        assert_eq!(read_mark(storage.as_ref()).unwrap().map(|mark| mark.through), Some(5));
        assert!(memtable.is_empty());
    }
}
