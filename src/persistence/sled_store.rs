//! The [`Store`] and the [`Log`] on sled 0.34: two databases, the state rows in the store
//! directory and the log in its `log/` subdirectory.
//!
//! Two databases, because a sled flush writes everything buffered in its database: with the
//! log and the rows in one, every log sync after a checkpoint also wrote the whole
//! checkpoint, and answers waited for it (p99 140 ms at half the maximum rate, measured).
//! The log is keyed by position (u64 big-endian). Every write is a plain insert, in order:
//! sled's `apply_batch` takes a lock that stops every write in the process, and a checkpoint
//! holding it (at low CPU priority) stalled log appends behind it.
//!
//! What sled does not make durable, this does:
//! - sled's `flush()` on Linux writes with `sync_file_range`, which neither persists file
//!   metadata nor empties the disk's write cache (sled issue #1452). So every flush is
//!   followed by `sync_data()` on sled's data file, opened once.
//! - sled never fsyncs its `conf` file, its blob files (values over about a quarter of a
//!   segment), its snapshot files or any directory. After a power cut a restart found an
//!   empty `conf`. So opening fsyncs `conf`, the data file and every directory on the way to
//!   the store (a new data directory's own entry included), and every sync fsyncs each file
//!   that appeared in the store directory or in `blobs/` since the last one, and those
//!   directories. It lists them only when inotify reports an entry created or moved into
//!   one of them since the last look ([`EntryWatch`]), or always where inotify is not
//!   available: listing them on every sync cost about a third of the sync thread's CPU.
//!
//! Any of these failing is a store error.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::log::PositionedRecord;
use super::{Entry, Log, Op, Store, StoreError};

/// Longest wait for another instance to release the store's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Pause between attempts to take the lock.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// The state rows and the log, each a sled database of its own.
pub struct SledStore {
    /// The state rows (checkpoints).
    rows: Database,
    /// The log (in `log/` inside the state database's directory).
    log: Database,
}

/// One sled database and what makes it durable.
struct Database {
    /// Background flushing is off: only a sync makes data durable.
    db: sled::Db,
    /// sled's data file, kept open so each flush can `sync_data` it.
    data_file: File,
    /// Its directory.
    path: PathBuf,
    /// Files already fsynced in its directory and in `blobs/`, so that each sync fsyncs only
    /// the new ones (and their directory).
    synced_entries: Mutex<HashSet<PathBuf>>,
    /// Tells whether entries appeared in those directories since the last sync.
    watch: EntryWatch,
}

/// Subdirectory of the store directory that holds the log's database.
pub const LOG_DIR: &str = "log";

impl SledStore {
    /// Opens (or creates) the state database in `path` and the log's in `path/log`, with
    /// `cache_capacity_bytes` of page cache between them. If another process (or an instance
    /// still shutting down) holds a lock, waits up to [`LOCK_WAIT`] for it. Makes the files
    /// sled wrote and every directory entry on the way to them durable before returning.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self, StoreError> {
        // The log is written once and read back rarely (recovery, the Kafka bridge).
        let log_cache_bytes = (cache_capacity_bytes / 8).clamp(1 << 20, 64 << 20);
        let rows = Database::open(path, cache_capacity_bytes.saturating_sub(log_cache_bytes).max(1 << 20))?;
        let log = Database::open(&path.join(LOG_DIR), log_cache_bytes)?;
        // The directory entries that lead to the store (the data directory may have just
        // been created, with its parents): a power cut must not lose them. The store's own
        // directory, the data directory and the one holding it must sync; higher ones are
        // synced where the operating system lets us.
        let absolute = std::path::absolute(path.join(LOG_DIR))?;
        for (level, dir) in absolute.ancestors().enumerate() {
            match sync_dir(dir) {
                Err(error) if level < 4 => return Err(error),
                _ => {}
            }
        }
        Ok(Self { rows, log })
    }
}

impl Database {
    fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Self, StoreError> {
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
        let database = Self {
            db,
            data_file,
            path: path.to_owned(),
            synced_entries: Mutex::default(),
            // Watching before the first listing below: whatever appears after it is reported.
            watch: EntryWatch::new(path),
        };
        // Everything sled wrote while opening (conf, the first segment) first.
        database.db.flush()?;
        database.data_file.sync_all()?;
        database.sync_listed_entries()?;
        Ok(database)
    }

    /// Flushes sled and fsyncs what it leaves unsynced.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        self.sync_new_entries()
    }

    /// Fsyncs every file that appeared in the directory or in `blobs/` since the last sync,
    /// and the directory that holds it; lists the directories only when the watch saw an
    /// entry appear.
    fn sync_new_entries(&self) -> Result<(), StoreError> {
        // Under the lock: a sync that finds no event must not return while another one,
        // which took the events, is still fsyncing what they announced.
        let mut synced = self.synced();
        if self.watch.changed() {
            self.sync_listed(&mut synced)?;
        }
        Ok(())
    }

    fn synced(&self) -> MutexGuard<'_, HashSet<PathBuf>> {
        self.synced_entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Database::sync_listed`], taking the lock.
    fn sync_listed_entries(&self) -> Result<(), StoreError> {
        self.sync_listed(&mut self.synced())
    }

    /// Fsyncs every file in the directory and in `blobs/` not fsynced before, and the
    /// directory that holds it. Files sled rewrites in place (its data file) are synced by
    /// `sync_data`; `conf`, snapshots and blobs are written once and then only replaced.
    fn sync_listed(&self, synced: &mut HashSet<PathBuf>) -> Result<(), StoreError> {
        let mut listed = HashSet::with_capacity(synced.len());
        for dir in [self.path.clone(), self.path.join("blobs")] {
            // `blobs/` may have appeared since the last listing: watch it before listing it.
            self.watch.add(&dir);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error.into()),
            };
            let mut new_entry = false;
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                listed.insert(path.clone());
                if synced.contains(&path) {
                    continue;
                }
                if entry.file_type()?.is_file() {
                    match File::open(&path) {
                        Ok(file) => file.sync_all()?,
                        // sled removed it meanwhile (an old snapshot or blob): nothing to keep.
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(error.into()),
                    }
                }
                synced.insert(path);
                new_entry = true;
            }
            if new_entry {
                sync_dir(&dir)?;
            }
        }
        // Forget removed files, so the set stays as small as the directories.
        synced.retain(|path| listed.contains(path));
        Ok(())
    }

    /// How many times the directories were listed (tests).
    #[cfg(test)]
    fn listings(&self) -> usize {
        self.watch.listings.load(Ordering::Relaxed)
    }
}

/// Reports entries created in or moved into watched directories, through an inotify
/// instance of its own. Events are queued by the kernel in the call that makes the entry, so
/// an entry made before [`EntryWatch::changed`] is always reported by it. Without inotify (no
/// instance left, another operating system's rules) every call reports a change, and each
/// sync lists the directories as before.
struct EntryWatch {
    /// The inotify instance, non-blocking; `None` when it could not be made.
    fd: Option<OwnedFd>,
    /// A watch or a read failed: the events can no longer be trusted.
    broken: AtomicBool,
    /// Calls that reported a change (tests).
    #[cfg(test)]
    listings: std::sync::atomic::AtomicUsize,
}

impl EntryWatch {
    fn new(dir: &Path) -> Self {
        // SAFETY: `inotify_init1` takes flags only; a non-negative result is a new descriptor
        // that nothing else owns.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            tracing::info!(
                error = %std::io::Error::last_os_error(),
                "no inotify instance for the store directory; every sync lists it"
            );
        }
        let watch = Self {
            // SAFETY: see above.
            fd: (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) }),
            broken: AtomicBool::new(false),
            #[cfg(test)]
            listings: Default::default(),
        };
        watch.add(dir);
        watch
    }

    /// Watches `dir` too (again is harmless; a directory that does not exist is skipped, and
    /// one that cannot be watched turns the watch off, so that every sync lists).
    fn add(&self, dir: &Path) {
        let Some(fd) = &self.fd else { return };
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return self.broken();
        };
        // SAFETY: `fd` is our inotify descriptor and `path` a NUL-terminated string that
        // outlives the call.
        let added =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
        if added < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::NotFound {
            self.broken();
        }
    }

    /// Whether an entry appeared since the last call (true when it cannot tell: queue
    /// overflow, a failed read, no inotify). Drains the events.
    fn changed(&self) -> bool {
        let Some(fd) = self.fd.as_ref().filter(|_| !self.broken.load(Ordering::Acquire)) else {
            return self.listed();
        };
        let mut events = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reads into a buffer we own, at most its length.
            let read = unsafe { libc::read(fd.as_raw_fd(), events.as_mut_ptr().cast(), events.len()) };
            if read > 0 {
                any = true;
                continue;
            }
            let error = std::io::Error::last_os_error();
            if read < 0 && error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if read < 0 && error.kind() != std::io::ErrorKind::WouldBlock {
                self.broken();
                return self.listed();
            }
            break;
        }
        if any {
            return self.listed();
        }
        false
    }

    /// Counts a listing (tests) and says to list.
    fn listed(&self) -> bool {
        #[cfg(test)]
        self.listings.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The watch cannot be trusted: from now on, every call to [`EntryWatch::changed`] says
    /// yes.
    fn broken(&self) {
        self.broken.store(true, Ordering::Release);
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "the store directory's inotify watch failed; every sync lists it from now on"
        );
    }
}

/// Fsyncs a directory, making the entries in it durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Store for SledStore {
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // Plain inserts, in order (sled's log keeps a prefix of them after a crash): a
        // `Batch` would hold sled's process-wide write lock, stalling log appends.
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    self.rows.db.insert(key, value)?;
                }
                Op::Delete(key) => {
                    self.rows.db.remove(key)?;
                }
                Op::DeleteIf(..) => unreachable!("the writer resolves conditional deletes"),
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.rows.sync()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rows.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        let iter = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                self.rows.db.range(start..)
            }
            None => self.rows.db.range(prefix.to_vec()..),
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
}

impl Log for SledStore {
    fn append(&self, records: Vec<PositionedRecord>) -> Result<(), StoreError> {
        // Plain inserts, in order: a crash keeps a prefix of them (sled's log is ordered), and
        // each record holds whole changes, so a prefix is a consistent state. `apply_batch`
        // would take sled's process-wide write lock.
        for (position, bytes) in records {
            self.log.db.insert(position.to_be_bytes(), bytes)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.log.sync()
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<PositionedRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.log.db.range(from.to_be_bytes()..).take(limit) {
            let (key, value) = entry?;
            let position =
                <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: super::keys::display(&key),
                        reason: "a log key is not 8 bytes".to_owned(),
                    })?;
            records.push((position, value.to_vec()));
        }
        Ok(records)
    }

    fn remove(&self, positions: Vec<u64>) -> Result<(), StoreError> {
        for position in positions {
            self.log.db.remove(position.to_be_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(database: &Database) -> HashSet<PathBuf> {
        database.synced_entries.lock().unwrap().clone()
    }

    #[test]
    fn a_sync_fsyncs_the_entries_that_appeared_and_lists_the_directories_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let rows = &store.rows;
        assert!(
            synced(rows).contains(&dir.path().join("conf")),
            "what sled wrote at open"
        );
        // The log's directory appeared in the store's after the store's first listing.
        store.flush().unwrap();
        assert!(synced(rows).contains(&dir.path().join(LOG_DIR)));
        let before = rows.listings();
        for _ in 0..3 {
            store.apply(vec![Op::Put(b"k".to_vec(), b"v".to_vec())]).unwrap();
            store.flush().unwrap();
        }
        assert_eq!(rows.listings(), before, "no entry appeared: nothing listed");

        // A file appears, as a sled snapshot does, and one is renamed into place.
        std::fs::write(dir.path().join("snap.0001"), b"snapshot").unwrap();
        std::fs::write(dir.path().join("snap.0002.generating"), b"snapshot").unwrap();
        std::fs::rename(dir.path().join("snap.0002.generating"), dir.path().join("snap.0002")).unwrap();
        store.flush().unwrap();
        assert_eq!(rows.listings(), before + 1, "listed once");
        let entries = synced(rows);
        assert!(entries.contains(&dir.path().join("snap.0001")));
        assert!(entries.contains(&dir.path().join("snap.0002")));
        assert!(
            !entries.contains(&dir.path().join("snap.0002.generating")),
            "gone, so forgotten"
        );
        store.flush().unwrap();
        assert_eq!(rows.listings(), before + 1, "nothing new since");

        // In `blobs/`, and in the log's directory.
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        store.flush().unwrap();
        std::fs::write(dir.path().join("blobs").join("7"), b"blob").unwrap();
        store.flush().unwrap();
        assert!(synced(rows).contains(&dir.path().join("blobs").join("7")));
        let log_entry = dir.path().join(LOG_DIR).join("snap.0003");
        std::fs::write(&log_entry, b"snapshot").unwrap();
        store.sync().unwrap();
        assert!(synced(&store.log).contains(&log_entry));
    }

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
    }

    #[test]
    fn log_records_survive_a_reopen_after_sync_and_removed_ones_stay_gone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store
                .append((1..=5).map(|position| (position, vec![position as u8])).collect())
                .unwrap();
            store.remove(vec![1, 2]).unwrap();
            store.sync().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let positions: Vec<u64> = store.read(0, 10).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(positions, vec![3, 4, 5]);
        assert_eq!(store.read(4, 1).unwrap(), vec![(4, vec![4])]);
        assert!(
            std::fs::metadata(dir.path().join("conf")).unwrap().len() > 0,
            "sled's conf file is written (and fsynced on open)"
        );
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
