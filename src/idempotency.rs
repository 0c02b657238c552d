//! `Idempotency-Key`s, in one place: the key, the request fingerprint, the in-flight gate,
//! the stored answer and its retention.
//!
//! How a keyed request goes:
//! 1. The HTTP layer parses the header into an [`IdempotencyKey`] and fingerprints the
//!    request (method, path, canonical body).
//! 2. The [`IdempotencyGate`] admits it: a key already in flight answers `409
//!    idempotency_key_in_flight`; a stored answer with the same fingerprint is replayed; with
//!    another fingerprint, `422 idempotency_key_reused`. Otherwise the key is marked in flight
//!    and the request goes on with an [`IdempotencyDraft`], which carries the mark.
//! 3. The actor stores its answer as an [`IdempotencyRecord`] in the same change as the rows
//!    it changed ([`IdempotencyDraft::stage`]), so after a crash a retry finds a stored answer
//!    exactly when the change exists. The record is kept for the configured retention (an
//!    entry in the retention index deletes it, conditionally, when due).
//! 4. The in-flight mark lives until the change is durable or the writer failed
//!    ([`InFlight::release_when_durable`]), not as long as the HTTP handler: a client that
//!    resets its connection while its change is queued must not let a retry run it again.
//!
//! Keys are scoped to the credential that sent them (the scope is part of the store key).

use std::future::Ready;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::persistence::writer::Durability;
use crate::persistence::{codec, keys, Op, StateView, Ticket};

/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// The optional `Idempotency-Key` header: 1 to 255 printable ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let parsed = match request.headers().get("idempotency-key") {
            None => Ok(IdempotencyKey(None)),
            Some(value) => {
                let bytes = value.as_bytes();
                let valid = (1..=IDEMPOTENCY_KEY_LENGTH_MAX).contains(&bytes.len())
                    && bytes.iter().all(|byte| (0x20..=0x7e).contains(byte));
                match value.to_str() {
                    Ok(text) if valid => Ok(IdempotencyKey(Some(text.to_owned()))),
                    _ => Err(ApiError::bad_request(
                        "invalid_idempotency_key",
                        format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"),
                    )),
                }
            }
        };
        std::future::ready(parsed)
    }
}

impl IdempotencyKey {
    /// For a request without credentials, where keys share one scope: the key must be
    /// unguessable, at least 122 bits of randomness (a UUID, or 22 or more base64url
    /// characters), or a guessed key would replay another client's answer. `400
    /// weak_idempotency_key` otherwise; no key is fine.
    pub fn require_strong(&self) -> Result<(), ApiError> {
        match &self.0 {
            Some(key) if !is_strong_key(key) => Err(ApiError::bad_request(
                "weak_idempotency_key",
                "an Idempotency-Key sent without credentials must be a UUID or 22 or more base64url characters",
            )),
            _ => Ok(()),
        }
    }
}

/// A UUID (`8-4-4-4-12` hex digits), or 22 or more base64url characters.
fn is_strong_key(key: &str) -> bool {
    let uuid = key.len() == 36
        && key.char_indices().all(|(at, c)| match at {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    let base64url = key.len() >= 22 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    uuid || base64url
}

/// SHA-256 of a request's method, path and canonical body.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a request: method, path and canonical body.
pub fn fingerprint(request: &HttpRequest, canonical_body: &[u8]) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(request.method().as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(request.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_body);
    hasher.finalize().into()
}

/// A stored answer to a request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request's method, path and canonical body.
    pub fingerprint: Fingerprint,
    /// The HTTP status that was answered.
    pub status: u16,
    /// The JSON body that was answered.
    pub body: Vec<u8>,
    /// When the answer was stored.
    pub created_ms: u64,
}

/// What to do with a keyed request.
pub enum Admission {
    /// First time: do the work; the mark keeps the key in flight until released.
    Proceed(InFlight),
    /// Already answered: replay this.
    Replay(IdempotencyRecord),
}

/// Keys being worked on, by store key, with their request's fingerprint.
type InFlightKeys = Arc<DashMap<Vec<u8>, Fingerprint>>;

/// Tracks keys in flight and finds stored answers.
pub struct IdempotencyGate {
    /// Keys being worked on.
    in_flight: InFlightKeys,
    /// Where answers are stored.
    store: StateView,
}

/// Marks a key in flight; dropping it clears the mark. It travels with the request to the
/// actor, which keeps it until the change is durable.
pub struct InFlight {
    in_flight: InFlightKeys,
    /// The record's store key.
    key: Vec<u8>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.remove(&self.key);
    }
}

impl InFlight {
    /// Keeps the mark until `ticket` is durable (or the writer failed). It is released
    /// before anyone waiting for the ticket is woken, so a client that has its answer and
    /// repeats the request at once gets the stored answer, never `409 in_flight`.
    pub fn release_when_durable(self, durability: &Arc<Durability>, ticket: Ticket) {
        durability.hold_until_durable(ticket, Box::new(self));
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
    pub fn admit(&self, scope: &str, key: &str, fingerprint: Fingerprint) -> Result<Admission, ApiError> {
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
        let mark = InFlight {
            in_flight: Arc::clone(&self.in_flight),
            key: store_key,
        };
        let stored = self.store.get_decoded::<IdempotencyRecord>(&mark.key)?;
        match stored {
            Some(record) if record.fingerprint == fingerprint => Ok(Admission::Replay(record)),
            Some(_) => Err(ApiError::IdempotencyKeyReused),
            None => Ok(Admission::Proceed(mark)),
        }
    }
}

/// Renders an answer as the HTTP status and body that an idempotency record replays.
pub type Render<R> = fn(&R) -> (u16, Vec<u8>);

/// Asks an actor to store its answer under an idempotency key.
pub struct IdempotencyDraft<R> {
    /// The key's in-flight mark (it holds the record's store key).
    pub in_flight: InFlight,
    /// Fingerprint of the request, to tell a replay from a reuse with another body.
    pub fingerprint: Fingerprint,
    /// Turns the answer into what HTTP replays.
    pub render: Render<R>,
    /// How long the record is kept.
    pub retention_ms: u64,
}

impl<R> IdempotencyDraft<R> {
    /// A draft for an admitted request.
    pub fn new(in_flight: InFlight, fingerprint: Fingerprint, render: Render<R>, retention_ms: u64) -> Self {
        Self {
            in_flight,
            fingerprint,
            render,
            retention_ms,
        }
    }

    /// The rows that store `reply` under the key (and its retention entry), and the mark to
    /// release once they are durable.
    pub fn stage(self, reply: &R, now_ms: u64) -> (Vec<Op>, InFlight) {
        let (status, body) = (self.render)(reply);
        let record = IdempotencyRecord {
            fingerprint: self.fingerprint,
            status,
            body,
            created_ms: now_ms,
        };
        let due_ms = now_ms.saturating_add(self.retention_ms);
        let key = self.in_flight.key.clone();
        let ops = vec![
            Op::Put(keys::expiring(due_ms, &key), Vec::new()),
            Op::Put(key, codec::encode(&record)),
        ];
        (ops, self.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_keys_need_122_bits_of_randomness() {
        for strong in [
            "0192f1a2-7c3b-7d4e-8f5a-6b7c8d9e0f1a",
            "Zk9yZXZlci1hbmQtYWx3YXlz",
            "abcdefghijklmnopqrstuv",
        ] {
            assert!(is_strong_key(strong), "{strong}");
        }
        for weak in [
            "cart-1",
            "order-1001",
            "abcdefghijklmnopqrstu",
            "not a uuid at all, spaces here",
        ] {
            assert!(!is_strong_key(weak), "{weak}");
        }
    }
}
