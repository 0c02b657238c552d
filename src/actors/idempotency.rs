//! Idempotency records written by actors in the same atomic batch as the change they answer.
//!
//! The HTTP layer admits a keyed request and hands the actor an [`IdempotencyDraft`]; the
//! actor renders its answer with the draft's function and stores it with its own rows, so
//! after a crash a retry finds a stored answer exactly when the change exists.

use crate::persistence::rows::IdempotencyRecord;
use crate::persistence::{codec, keys, Op};

/// Renders an answer as the HTTP status and body that an idempotency record replays.
pub type Render<R> = fn(&R) -> (u16, Vec<u8>);

/// Asks an actor to store its answer under an idempotency key.
pub struct IdempotencyDraft<R> {
    /// The record's store key (scope and client key).
    pub key: Vec<u8>,
    /// Fingerprint of the request, to tell a replay from a reuse with another body.
    pub fingerprint: [u8; 32],
    /// Turns the answer into what HTTP replays.
    pub render: Render<R>,
    /// How long the record is kept.
    pub retention_ms: u64,
}

impl<R> IdempotencyDraft<R> {
    /// The rows that store `reply` under the key (and its retention entry).
    pub fn ops(self, reply: &R, now_ms: u64) -> Vec<Op> {
        let (status, body) = (self.render)(reply);
        let record = IdempotencyRecord {
            fingerprint: self.fingerprint,
            status,
            body,
            created_ms: now_ms,
        };
        let due_ms = now_ms.saturating_add(self.retention_ms);
        vec![
            Op::Put(keys::expiring(due_ms, &self.key), Vec::new()),
            Op::Put(self.key, codec::encode(&record)),
        ]
    }
}
