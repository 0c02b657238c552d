//! Durable storage: the store interface, its sled implementation, the group-commit writer and
//! recovery.
//!
//! # Durability contract
//!
//! A [`Store`] keeps ordered byte keys and values. Every implementation promises:
//!
//! 1. **Atomic batches.** [`Store::apply`] applies a batch of puts and deletes as a unit:
//!    after any crash, recovery sees either all of a batch or none of it.
//! 2. **Durable after flush.** A batch is durable only once a later [`Store::flush`] has
//!    returned `Ok`. Whatever was applied but not flushed may be lost by a crash.
//! 3. **Ordered.** Batches become durable in the order they were applied: after a crash, the
//!    store holds a prefix of the applied batches.
//! 4. **Errors are final.** After `apply` or `flush` returns `Err`, nothing written since the
//!    last successful flush may be assumed durable, and the caller must stop: the writer
//!    treats any store error as fatal, acknowledges nothing of the failed batch, and stops the
//!    process; recovery on restart restores the last durable state.
//!
//! Reads see everything applied, flushed or not. Callers that report what they read wait for
//! durability first (see [`writer::Durability`]).
//!
//! Only the writer thread calls `apply` and `flush`; reads may come from any thread.

pub mod codec;
pub mod fault;
pub mod keys;
pub mod recovery;
pub mod rows;
pub mod sled_store;
pub mod writer;

pub use fault::{FaultyStore, StoreFaults};
pub use sled_store::SledStore;
pub use writer::{Durability, Ticket, Writer, WriterConfig, WriterPermit};

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Removes `key` (a no-op when absent).
    Delete(Vec<u8>),
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

/// The storage interface: see the durability contract at the top of this module.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` atomically (not yet durable).
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;

    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order, starting after
    /// `after` (a full key) when given.
    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// The greatest key that starts with `prefix`.
    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}
