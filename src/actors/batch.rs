//! Bulk stock sync (`POST /v1/stock/batch`): many SKUs' stock set or adjusted all together,
//! or not at all.
//!
//! Every SKU is its own single writer, so a change across SKUs is made in two phases:
//! 1. **Prepare.** Each SKU actor named by the batch works out its part on a copy of its
//!    state: compares `expected_on_hand`, runs the counts and adjustments, and answers with
//!    the rows and events they make, or with why an item cannot be applied. An actor that
//!    prepared stops taking messages until it hears the outcome, so nothing changes its stock
//!    in between: a checkout that arrives meanwhile waits, and is decided on the new stock.
//! 2. **Commit.** When every SKU prepared, all of their rows and events go to the writer as
//!    one change, so the batch is durable all at once or not at all, and each actor installs
//!    its new state. When any item failed (or the writer is full), each actor keeps its state.
//!
//! Batches run one at a time (a lock), so two of them never wait for each other's SKUs. The
//! coordinator runs on its own task: a client that goes away cannot leave actors waiting,
//! and an actor whose coordinator is gone resumes with its state unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::mailbox::MailboxSlot;
use super::registry::SkuDirectory;
use crate::access::By;
use crate::domain::location::LocationId;
use crate::domain::sku::SkuRejection;
use crate::domain::values::Name;
use crate::domain::{DomainEvent, SkuId};
use crate::idempotency::{IdempotencyDraft, InFlight};
use crate::persistence::writer::{Change, Writer};
use crate::persistence::{Op, Ticket};

/// What one item does to a SKU's stock at a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `on_hand` to this figure (a count).
    Set(u64),
    /// Changes `on_hand` by this much; may not take `available` below zero.
    Adjust(i64),
}

/// One item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// Its place in the request (answers name items by it).
    pub index: usize,
    /// The SKU.
    pub sku: SkuId,
    /// Where.
    pub location: LocationId,
    /// What.
    pub op: BatchOp,
    /// Apply only if `on_hand` at the location is this figure now (compare-and-set).
    pub expected_on_hand: Option<u64>,
}

/// Why an item cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemFailure {
    /// `on_hand` at the location is not what the item expected.
    Expectation {
        /// What the item expected.
        expected: u64,
        /// What it is.
        on_hand: u64,
    },
    /// The SKU does not exist.
    UnknownSku,
    /// The SKU refused the change (a count below what is held, shrinkage below available).
    Refused(SkuRejection),
}

/// The outcome of one item that failed, by its place in the request.
pub type Failures = Vec<(BatchItem, ItemFailure)>;

/// A SKU's part of a batch, prepared and waiting for the outcome.
pub struct Prepared {
    /// Its rows.
    pub ops: Vec<Op>,
    /// Its events.
    pub events: Vec<DomainEvent>,
    /// `on_hand`, `reserved`, `committed` and `available` at each item's location after it.
    pub after: Vec<(usize, [u64; 4])>,
}

/// Asks a SKU to prepare its items; see the module. After answering `Ok`, the actor waits
/// for `outcome`: the ticket of the change that holds its part (install the new state), or
/// `None` / a dropped sender (keep the old one).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct PrepareBatch {
    /// This SKU's items, in request order.
    pub items: Vec<BatchItem>,
    /// Why, in the ledger.
    pub reason: Name,
    /// Who asked.
    pub by: By,
    /// Where to answer.
    pub reply: oneshot::Sender<Result<Prepared, Failures>>,
    /// The outcome, once every SKU answered.
    pub outcome: oneshot::Receiver<Option<Ticket>>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every item applied: counters after each item, in request order, and the change's ticket.
    Applied(Vec<(BatchItem, [u64; 4])>),
    /// Nothing applied: the items whose expectation failed.
    ExpectationFailed(Failures),
    /// Nothing applied: items that cannot be applied for another reason.
    Rejected(Failures),
    /// Nothing applied: a queue was full.
    Overloaded,
}

/// What a batch needs: the SKUs, the writer, the lock that runs batches one at a time.
pub struct BatchRunner {
    /// The SKUs.
    pub skus: Arc<SkuDirectory>,
    /// The writer.
    pub writer: Arc<Writer>,
    /// One batch at a time.
    pub lock: tokio::sync::Mutex<()>,
}

/// Runs a batch (on its own task; see the module). The answer is stored under the
/// idempotency key, if any, in the same change (an overload is not an answer: not stored).
pub async fn run(
    runner: Arc<BatchRunner>,
    items: Vec<BatchItem>,
    reason: Name,
    by: By,
    now_ms: u64,
    idempotency: Option<IdempotencyDraft<BatchOutcome>>,
) -> (BatchOutcome, Ticket) {
    let BatchRunner { skus, writer, lock } = runner.as_ref();
    let stage = |outcome: &BatchOutcome| -> (Vec<Op>, Option<InFlight>) {
        match idempotency {
            Some(draft) => {
                let (ops, mark) = draft.stage(outcome, now_ms);
                (ops, Some(mark))
            }
            None => (Vec::new(), None),
        }
    };
    let _one_at_a_time = lock.lock().await;
    let mut by_sku: BTreeMap<SkuId, Vec<BatchItem>> = BTreeMap::new();
    for item in &items {
        by_sku.entry(item.sku.clone()).or_default().push(item.clone());
    }
    let mut failures: Failures = Vec::new();
    let mut asked = Vec::with_capacity(by_sku.len());
    for (sku, sku_items) in by_sku {
        let Some(mailbox) = skus.get(&sku) else {
            failures.extend(sku_items.into_iter().map(|item| (item, ItemFailure::UnknownSku)));
            continue;
        };
        let (outcome_sender, outcome) = oneshot::channel();
        let asking = mailbox.ask(|reply, slot| PrepareBatch {
            items: sku_items,
            reason: reason.clone(),
            by: Arc::clone(&by),
            reply,
            outcome,
            slot,
        });
        match asking {
            Ok(answer) => asked.push((answer, outcome_sender)),
            // Dropping the senders of those asked lets them go on unchanged.
            Err(_) => return (BatchOutcome::Overloaded, 0),
        }
    }
    let mut prepared = Vec::with_capacity(asked.len());
    let mut outcomes = Vec::with_capacity(asked.len());
    for (answer, outcome_sender) in asked {
        match answer.await {
            Ok(Ok(part)) => {
                prepared.push(part);
                outcomes.push(outcome_sender);
            }
            Ok(Err(refused)) => failures.extend(refused),
            // The actor stopped (it panicked): nothing of it is applied, nor of the batch.
            Err(_) => return (BatchOutcome::Overloaded, 0),
        }
    }
    if !failures.is_empty() {
        failures.sort_by_key(|(item, _)| item.index);
        let expectations: Failures = failures
            .iter()
            .filter(|(_, failure)| matches!(failure, ItemFailure::Expectation { .. }))
            .cloned()
            .collect();
        let outcome = if expectations.is_empty() {
            BatchOutcome::Rejected(failures)
        } else {
            BatchOutcome::ExpectationFailed(expectations)
        };
        let (ops, mark) = stage(&outcome);
        if ops.is_empty() {
            return (outcome, 0);
        }
        return match super::persist(writer, ops, Vec::new(), now_ms, &by) {
            Some(ticket) => {
                if let Some(mark) = mark {
                    mark.release_when_durable(writer.durability(), ticket);
                }
                (outcome, ticket)
            }
            None => (BatchOutcome::Overloaded, 0),
        };
    }
    let mut after: BTreeMap<usize, [u64; 4]> = BTreeMap::new();
    let mut ops = Vec::new();
    let mut events = Vec::new();
    for part in prepared {
        ops.extend(part.ops);
        events.extend(part.events);
        after.extend(part.after);
    }
    let applied = BatchOutcome::Applied(
        items
            .into_iter()
            .map(|item| {
                let counters = after.get(&item.index).copied().unwrap_or_default();
                (item, counters)
            })
            .collect(),
    );
    let Some(permit) = writer.try_reserve() else {
        return (BatchOutcome::Overloaded, 0);
    };
    let (answer_ops, mark) = stage(&applied);
    ops.extend(answer_ops);
    let ticket = permit.submit(Change {
        ops,
        events,
        time_ms: now_ms,
        by,
    });
    if let Some(mark) = mark {
        mark.release_when_durable(writer.durability(), ticket);
    }
    for outcome in outcomes {
        let _ = outcome.send(Some(ticket));
    }
    (applied, ticket)
}
