//! Durable storage: the write-ahead log, the checkpointed state rows, the group-commit
//! writer, recovery and the read view over all of them.
//!
//! # How a change becomes durable
//!
//! 1. An actor decides a change and submits its row ops and events to the [`Writer`].
//! 2. The writer's append thread takes everything queued as one batch, encodes it once into
//!    log records ([`log`]), appends them, and applies the row ops to the in-memory
//!    [`Memtable`], where every reader sees them at once.
//! 3. The writer's sync thread makes the appended records durable (sled `flush` plus
//!    `fsync`); only then are the batch's tickets durable and its answers sent. The next
//!    batch is appended while this one syncs.
//! 4. In the background, the [`checkpoint`] thread writes the memtable's rows into sled's
//!    state tree, many changes to one row as one write, together with the log position they
//!    cover; then the log records that are checkpointed (and, with Kafka on, delivered) go.
//!
//! Recovery loads the checkpointed rows, replays the log after the checkpoint into the
//! memtable, and checks every invariant before the server reports ready.
//!
//! # Durability contract of the row [`Store`]
//!
//! 1. **Ordered.** [`Store::apply`] writes its puts and deletes in order; a crash keeps a
//!    prefix of everything applied (sled's log is sequential). Nothing relies on a batch
//!    being atomic: a checkpoint writes its mark last, so once the mark is durable every row
//!    before it is, and until then recovery replays the log over whatever rows got in.
//! 2. **Durable after flush.** What was applied is durable once a later [`Store::flush`]
//!    returns `Ok`.
//! 3. **Errors are reported, not hidden.** A failed checkpoint is retried; the log still holds
//!    every change, so nothing is lost.
//!
//! The [`Log`] has its own contract, in [`log`]. Only the writer appends to the log, and only
//! the checkpoint thread applies rows; reads may come from any thread, through [`StateView`].

pub mod checkpoint;
pub mod codec;
pub mod fault;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod memtable;
#[cfg(test)]
mod model_test;
pub mod recovery;
pub mod retention;
pub mod rows;
pub mod sled_store;
pub mod writer;

pub use fault::{FaultyStore, StoreFaults};
pub use log::Log;
pub use memtable::{Memtable, StateView};
pub use sled_store::SledStore;
pub use writer::{Durability, Ticket, Writer, WriterConfig, WriterPermit};

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Removes `key` (a no-op when absent).
    Delete(Vec<u8>),
    /// Removes `key` only if its value is still the given one when the writer applies it
    /// (retention, which read the row earlier). The writer resolves it into a `Delete` or
    /// nothing before the change is logged, so the log never holds this variant.
    DeleteIf(Vec<u8>, Vec<u8>),
}

/// A key and its value, as returned by scans.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A failure of the storage engine or of the disk under it. Always fatal for writes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine (sled) failed.
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    /// An operating-system IO call failed.
    #[error("storage IO error: {0}")]
    Io(#[from] std::io::Error),
    /// A fault injected by a test.
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// A stored value could not be decoded.
    #[error("corrupt stored value under key {key:?}: {reason}")]
    Corrupt {
        /// The key whose value is bad (printable bytes shown as text).
        key: String,
        /// What the decoder said.
        reason: String,
    },
}

/// The checkpointed state rows: see the durability contract at the top of this module.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` in order (not yet durable, not atomic). `DeleteIf` is not accepted here.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;

    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order, starting after
    /// `after` (a full key) when given.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError>;
}

/// The log and the rows together, as one database holds them.
pub trait Storage: Store + Log {}

impl<T: Store + Log> Storage for T {}
