//! The `Idempotency-Key` gate.
//!
//! A key is scoped to the credential that sent it. The answer to a keyed request is stored
//! by the actor in the same atomic batch as the change it made (see
//! [`IdempotencyDraft`](crate::actors::sku::IdempotencyDraft)), so after a crash a retry finds
//! a stored answer exactly when the change exists. While a keyed request is being worked on,
//! an in-memory entry answers repeats with `409 idempotency_key_in_flight`; a repeat with
//! another body gets `422 idempotency_key_reused`; a finished one is replayed.

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::error::ApiError;
use crate::persistence::rows::IdempotencyRecord;
use crate::persistence::{codec, keys, StateView};

/// What to do with a keyed request.
pub enum Admission {
    /// First time: do the work; the guard marks the key in flight until dropped.
    Proceed(InFlightGuard),
    /// Already answered: replay this.
    Replay(IdempotencyRecord),
}

/// Tracks keys in flight and finds stored answers.
pub struct IdempotencyGate {
    /// Keys being worked on, with their request fingerprint.
    in_flight: Arc<DashMap<Vec<u8>, [u8; 32]>>,
    /// Where answers are stored.
    store: StateView,
}

/// Marks a key in flight; dropping it (answered, failed or abandoned) clears the mark.
pub struct InFlightGuard {
    in_flight: Arc<DashMap<Vec<u8>, [u8; 32]>>,
    /// The record's store key.
    pub key: Vec<u8>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.remove(&self.key);
    }
}

impl IdempotencyGate {
    /// A gate over `store`.
    pub fn new(store: StateView) -> Self {
        Self {
            in_flight: Arc::new(DashMap::new()),
            store,
        }
    }

    /// Admits a request with `key` (scoped to `scope`) and `fingerprint`.
    pub fn admit(&self, scope: &str, key: &str, fingerprint: [u8; 32]) -> Result<Admission, ApiError> {
        let store_key = keys::idempotency(scope, key);
        match self.in_flight.entry(store_key.clone()) {
            Entry::Occupied(entry) if *entry.get() == fingerprint => {
                return Err(ApiError::conflict(
                    "idempotency_key_in_flight",
                    "a request with this Idempotency-Key is still being processed",
                ));
            }
            Entry::Occupied(_) => return Err(ApiError::IdempotencyKeyReused),
            Entry::Vacant(entry) => {
                entry.insert(fingerprint);
            }
        }
        let guard = InFlightGuard {
            in_flight: Arc::clone(&self.in_flight),
            key: store_key,
        };
        let stored = self
            .store
            .get(&guard.key)
            .and_then(|value| {
                value
                    .map(|bytes| codec::decode::<IdempotencyRecord>(&guard.key, &bytes))
                    .transpose()
            })
            .map_err(|error| ApiError::Internal(error.into()))?;
        match stored {
            Some(record) if record.fingerprint == fingerprint => Ok(Admission::Replay(record)),
            Some(_) => Err(ApiError::IdempotencyKeyReused),
            None => Ok(Admission::Proceed(guard)),
        }
    }
}
