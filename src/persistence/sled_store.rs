//! The [`Store`] on sled 0.34.
//!
//! sled's `flush()` on Linux writes with `sync_file_range`, which neither persists file
//! metadata nor empties the disk's write cache (sled issue #1452). So every flush is followed
//! by `sync_data()` on sled's data file, opened once; either failing is a store error.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Entry, Op, Store, StoreError};

/// Longest wait for another instance to release the store's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to take the lock.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// A sled database in a directory of its own.
pub struct SledStore {
    /// The database. Background flushing is off: only [`Store::flush`] makes data durable.
    db: sled::Db,
    /// sled's data file, kept open so each flush can `sync_data` it.
    data_file: File,
    /// Where the database lives, for logs.
    path: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the database in `path`, with `cache_capacity_bytes` of page cache.
    /// If another process (or an instance still shutting down) holds the directory's lock,
    /// waits up to [`LOCK_WAIT`] for it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        let started = Instant::now();
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(error))
                    if error.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
                {
                    if started.elapsed() < LOCK_RETRY {
                        tracing::warn!(path = %path.display(), "the store is locked by another instance; waiting for it");
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                opened => break opened?,
            }
        };
        let data_file = File::open(path.join("db"))?;
        Ok(Self {
            db,
            data_file,
            path: path.to_owned(),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for SledStore {
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(key, value) => batch.insert(key, value),
                Op::Delete(key) => batch.remove(key),
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        let iter = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                self.db.range(start..)
            }
            None => self.db.range(prefix.to_vec()..),
        };
        for entry in iter {
            let (key, value) = entry?;
            if !key.starts_with(prefix) || entries.len() >= limit {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.db.scan_prefix(prefix).next_back() {
            Some(entry) => Ok(Some(entry?.0.to_vec())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_batches_survive_a_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store
                .apply(vec![
                    Op::Put(b"a1".to_vec(), b"one".to_vec()),
                    Op::Put(b"a2".to_vec(), b"two".to_vec()),
                    Op::Put(b"b1".to_vec(), b"other".to_vec()),
                ])
                .unwrap();
            store.apply(vec![Op::Delete(b"a1".to_vec())]).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"a1").unwrap(), None);
        assert_eq!(
            store.scan(b"a", None, 10).unwrap(),
            vec![(b"a2".to_vec(), b"two".to_vec())]
        );
        assert_eq!(store.last_key(b"a").unwrap(), Some(b"a2".to_vec()));
    }

    #[test]
    fn scans_page_with_after_and_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let ops = (0..5u8)
            .map(|n| Op::Put(vec![b'p', n], vec![n]))
            .chain([Op::Put(b"q".to_vec(), vec![])]);
        store.apply(ops.collect()).unwrap();
        let first = store.scan(b"p", None, 2).unwrap();
        assert_eq!(first.len(), 2);
        let rest = store.scan(b"p", Some(&first[1].0), 10).unwrap();
        assert_eq!(rest.iter().map(|(key, _)| key[1]).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
