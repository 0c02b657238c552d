//! Fault injection at the store seam: a [`Store`] wrapper whose writes, flushes or free space
//! fail on command, so tests can show that a failing disk acknowledges nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Entry, Op, Store, StoreError};

/// Switches that make the next store calls fail. Shared between a test and its store.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Every `flush` fails while set.
    pub fail_flush: AtomicBool,
    /// Every `apply` fails while set.
    pub fail_apply: AtomicBool,
    /// Every `apply` fails as a full disk would (`ENOSPC`) while set.
    pub disk_full: AtomicBool,
    /// Every `flush` takes this many milliseconds longer (a slow disk).
    pub slow_flush_ms: AtomicU64,
}

/// A store that delegates to another unless a fault is switched on.
pub struct FaultyStore {
    /// The real store underneath.
    inner: Arc<dyn Store>,
    /// The switches.
    faults: Arc<StoreFaults>,
}

impl FaultyStore {
    /// Wraps `inner`; `faults` decides when calls fail.
    pub fn new(inner: Arc<dyn Store>, faults: Arc<StoreFaults>) -> Self {
        Self { inner, faults }
    }
}

impl Store for FaultyStore {
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if self.faults.fail_apply.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("apply failed"));
        }
        if self.faults.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.apply(ops)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.faults.fail_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Injected("flush failed"));
        }
        let slow_ms = self.faults.slow_flush_ms.load(Ordering::SeqCst);
        if slow_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow_ms));
        }
        self.inner.flush()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(prefix, after, limit)
    }

    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.last_key(prefix)
    }
}
