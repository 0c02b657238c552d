//! Fault injection at the storage seam: a [`Storage`] wrapper whose log appends, syncs or
//! checkpoints fail on command, so tests can show that a failing disk acknowledges nothing
//! and that a failing checkpoint loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::log::PositionedRecord;
use super::{Entry, Log, Op, Storage, Store, StoreError};

/// Switches that make the next storage calls fail. Shared between a test and its store.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Every log sync fails (before anything is synced) while set.
    pub fail_flush: AtomicBool,
    /// Every log sync runs, then reports failure, while set: the data may be on disk, yet
    /// the caller cannot know it (an fsync that failed after sled's flush succeeded).
    pub fail_sync_after_flush: AtomicBool,
    /// Every log append fails while set.
    pub fail_apply: AtomicBool,
    /// Every log append fails as a full disk would (`ENOSPC`) while set.
    pub disk_full: AtomicBool,
    /// Every log sync takes this many milliseconds longer (a slow disk).
    pub slow_flush_ms: AtomicU64,
    /// Every checkpoint write of state rows fails while set.
    pub fail_checkpoint: AtomicBool,
    /// When not 0, the n-th checkpoint write from now fails (once): a crash midway through
    /// a checkpoint, after some of its chunks were written.
    pub fail_checkpoint_write_number: AtomicU64,
    /// Every removal of log records fails while set (a crash during log retention).
    pub fail_remove: AtomicBool,
    /// Reads of state rows (`get`, `scan`) fail.
    pub fail_reads: AtomicBool,
    /// Log syncs that finished, failed or not: tests wait on it instead of sleeping.
    pub syncs: AtomicU64,
    /// While closed, every log sync waits (a disk that has not answered yet): a test sees the
    /// state between append and sync for as long as it likes, however slow the machine.
    sync_gate: SyncGate,
}

/// See [`StoreFaults::close_sync_gate`].
#[derive(Debug, Default)]
struct SyncGate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl StoreFaults {
    /// Holds every log sync from now on until [`Self::open_sync_gate`].
    pub fn close_sync_gate(&self) {
        *self
            .sync_gate
            .closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }

    /// Lets held and later log syncs run.
    pub fn open_sync_gate(&self) {
        *self
            .sync_gate
            .closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        self.sync_gate.opened.notify_all();
    }

    fn wait_at_sync_gate(&self) {
        let mut closed = self
            .sync_gate
            .closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *closed {
            closed = self
                .sync_gate
                .opened
                .wait(closed)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A store that delegates to another unless a fault is switched on.
pub struct FaultyStore {
    /// The real store underneath.
    inner: Arc<dyn Storage>,
    /// The switches.
    faults: Arc<StoreFaults>,
}

impl FaultyStore {
    /// Wraps `inner`; `faults` decides when calls fail.
    pub fn new(inner: Arc<dyn Storage>, faults: Arc<StoreFaults>) -> Self {
        Self { inner, faults }
    }

    fn read_fault(&self) -> Result<(), StoreError> {
        if self.faults.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("read failed"));
        }
        Ok(())
    }

    fn checkpoint_fault(&self) -> Result<(), StoreError> {
        if self.faults.fail_checkpoint.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("checkpoint failed"));
        }
        Ok(())
    }

    fn counted_checkpoint_fault(&self) -> Result<(), StoreError> {
        let number =
            self.faults
                .fail_checkpoint_write_number
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1));
        if number == Ok(1) {
            return Err(StoreError::Injected("checkpoint failed midway"));
        }
        self.checkpoint_fault()
    }
}

impl Store for FaultyStore {
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.counted_checkpoint_fault()?;
        self.inner.apply(ops)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.checkpoint_fault()?;
        self.inner.flush()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_fault()?;
        self.inner.get(key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.read_fault()?;
        self.inner.scan(prefix, after, limit)
    }
}

impl Log for FaultyStore {
    fn append(&self, records: Vec<PositionedRecord>) -> Result<(), StoreError> {
        if self.faults.fail_apply.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("append failed"));
        }
        if self.faults.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.append(records)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let result = self.sync_inner();
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<PositionedRecord>, StoreError> {
        self.inner.read(from, limit)
    }

    fn remove(&self, positions: Vec<u64>) -> Result<(), StoreError> {
        if self.faults.fail_remove.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("removing log records failed"));
        }
        self.inner.remove(positions)
    }
}

impl FaultyStore {
    fn sync_inner(&self) -> Result<(), StoreError> {
        self.faults.wait_at_sync_gate();
        if self.faults.fail_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("flush failed"));
        }
        let slow_ms = self.faults.slow_flush_ms.load(Ordering::SeqCst);
        if slow_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow_ms));
        }
        self.inner.sync()?;
        if self.faults.fail_sync_after_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("fsync failed after the flush"));
        }
        Ok(())
    }
}
