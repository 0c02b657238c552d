//! The group-commit writer: two threads that make changes durable in batches, pipelined.
//!
//! Actors hand in [`Change`]s through a [`WriterPermit`]; each gets a [`Ticket`], its place
//! in the one global order of changes. The **append thread** takes everything queued (up to
//! `max_batch_items`), encodes it once into log records, appends them, and applies the row
//! ops to the memtable, where readers see them. The **sync thread** then makes the records
//! durable (sled flush plus fsync) and only then marks the batch's last ticket durable,
//! waking every waiter up to it. While one batch syncs, the next is gathered and appended;
//! the one after that gathers in the queue, so under load batches grow and a sync's cost is
//! shared.
//!
//! Invariants:
//! - tickets, event sequence numbers and log positions are handed out in one order: tickets
//!   and events under the queue lock, positions by the one append thread in queue order;
//! - `durable` only grows, and a ticket is durable only after a sync that started after its
//!   records were appended;
//! - at most one appended batch waits for the sync thread: the append thread waits for it to
//!   be taken before appending the next;
//! - the queue holds at most `queue_capacity_items` changes, counting reserved permits and
//!   changes not yet durable: when full, [`Writer::try_reserve`] refuses at once and the
//!   caller answers `503 overloaded`;
//! - a failed append or sync is fatal: the outcome of the batch is unknown (a sync may have
//!   failed after the data reached the disk), so every waiter is failed, nothing more is
//!   acknowledged, and `on_fatal` stops the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::log::{change_bytes, encode_record, PositionedRecord, RECORD_BYTES_TARGET};
use super::memtable::Memtable;
use super::{Op, Storage, StoreError};
use crate::domain::{DomainEvent, EventRecord};
use crate::metrics as names;

/// A change's place in the global commit order. Ticket 0 is "nothing": always durable.
pub type Ticket = u64;

/// Sizes of the writer's queue and batches; from configuration.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most changes applied in one batch with one flush.
    pub max_batch_items: usize,
    /// Most changes queued or reserved at once.
    pub queue_capacity_items: usize,
}

/// Called once, when the store fails (from the thread that saw the failure).
pub type FatalHandler = Arc<dyn Fn(&StoreError) + Send + Sync>;

/// State rows and the events that explain them: one atomic unit.
#[derive(Debug, Default)]
pub struct Change {
    /// Puts and deletes of state rows.
    pub ops: Vec<Op>,
    /// Events to append to the event log, in order.
    pub events: Vec<DomainEvent>,
    /// When the change was decided (the events' time).
    pub time_ms: u64,
    /// Who made it (recorded with its events).
    pub by: crate::access::By,
}

/// The writer failed; nothing waiting on it will ever become durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store failed; the change was not made durable")]
pub struct WriterFailed;

/// Tracks which tickets are durable and wakes those waiting for them.
#[derive(Debug)]
pub struct Durability {
    /// The highest durable ticket.
    durable: AtomicU64,
    /// Waiters by ticket, and whether the writer failed.
    waiters: Mutex<Waiters>,
    /// The sequence number after the last durable event: every event below it is durable.
    events_end: tokio::sync::watch::Sender<u64>,
    /// Every log record up to this position is durable.
    log_position: AtomicU64,
}

impl Default for Durability {
    fn default() -> Self {
        Self::new(1)
    }
}

#[derive(Default)]
struct Waiters {
    /// Set once the writer has failed: every wait fails from then on.
    failed: bool,
    /// Senders to complete when their ticket becomes durable.
    pending: BTreeMap<Ticket, Vec<oneshot::Sender<()>>>,
    /// Values to drop when their ticket is durable (or the writer failed), before any waiter
    /// of that ticket is woken: idempotency in-flight marks.
    held: BTreeMap<Ticket, Vec<Box<dyn Send>>>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Waiters")
            .field("failed", &self.failed)
            .field("pending", &self.pending.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl Durability {
    /// Nothing durable yet; the event log continues at `next_event_seq`.
    pub fn new(next_event_seq: u64) -> Self {
        Self {
            durable: AtomicU64::new(0),
            waiters: Mutex::default(),
            events_end: tokio::sync::watch::Sender::new(next_event_seq),
            log_position: AtomicU64::new(0),
        }
    }

    /// Every log record up to this position is durable: a checkpoint may cover it.
    pub fn log_position(&self) -> u64 {
        self.log_position.load(Ordering::Acquire)
    }

    /// The sequence number after the last durable event.
    pub fn events_end(&self) -> u64 {
        *self.events_end.borrow()
    }

    /// Watches the durable end of the event log: events with a lower sequence number are
    /// durable and may be published.
    pub fn watch_events_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_end.subscribe()
    }

    /// The highest durable ticket.
    pub fn durable(&self) -> Ticket {
        self.durable.load(Ordering::Acquire)
    }

    /// Keeps `value` until `ticket` is durable or the writer failed, then drops it before any
    /// waiter of the ticket is woken (so whoever learns of the durability sees it dropped).
    /// Drops it at once if the ticket is durable already.
    pub fn hold_until_durable(&self, ticket: Ticket, value: Box<dyn Send>) {
        let mut waiters = lock(&self.waiters);
        if waiters.failed || self.durable() >= ticket {
            drop(waiters);
            drop(value);
            return;
        }
        waiters.held.entry(ticket).or_default().push(value);
    }

    /// Waits until `ticket` is durable; fails if the writer failed first.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), WriterFailed> {
        if self.durable() >= ticket {
            return Ok(());
        }
        let receiver = {
            let mut waiters = lock(&self.waiters);
            if waiters.failed {
                return Err(WriterFailed);
            }
            // Checked again under the lock: `complete` stores `durable` under it too.
            if self.durable() >= ticket {
                return Ok(());
            }
            let (sender, receiver) = oneshot::channel();
            waiters.pending.entry(ticket).or_default().push(sender);
            receiver
        };
        receiver.await.map_err(|_| WriterFailed)
    }

    fn complete(&self, ticket: Ticket, events_end: Option<u64>) {
        if lock(&self.waiters).failed {
            // A failed writer acknowledges nothing more, not even a sync that finished.
            return;
        }
        if let Some(end) = events_end {
            self.events_end.send_if_modified(|current| {
                let advanced = end > *current;
                if advanced {
                    *current = end;
                }
                advanced
            });
        }
        let (done, released) = {
            let mut waiters = lock(&self.waiters);
            self.durable.store(ticket, Ordering::Release);
            let later = waiters.pending.split_off(&(ticket + 1));
            let later_held = waiters.held.split_off(&(ticket + 1));
            (
                std::mem::replace(&mut waiters.pending, later),
                std::mem::replace(&mut waiters.held, later_held),
            )
        };
        // Released first: a waiter woken below must find them gone.
        drop(released);
        for sender in done.into_values().flatten() {
            // A waiter that gave up (client went away) is fine to ignore.
            let _ = sender.send(());
        }
    }

    fn fail(&self) {
        let (pending, held) = {
            let mut waiters = lock(&self.waiters);
            waiters.failed = true;
            (std::mem::take(&mut waiters.pending), std::mem::take(&mut waiters.held))
        };
        // The outcome is settled (the server stops): release, then fail every waiter.
        drop(held);
        drop(pending);
    }
}

struct Pending {
    ticket: Ticket,
    /// When it was queued, for the queueing delay.
    queued: Instant,
    ops: Vec<Op>,
    events: Vec<EventRecord>,
}

struct Queue {
    /// Changes waiting for the next batch, in ticket order.
    items: VecDeque<Pending>,
    /// The ticket the next change gets.
    next_ticket: Ticket,
    /// The sequence number the next event gets.
    next_event_seq: u64,
    /// The writer is waiting on the condvar: only then does a submitter need to wake it
    /// (under load the writer is flushing, and a wake-up would be a wasted syscall).
    writer_sleeping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a change is queued or the writer is closed.
    wake: Condvar,
    /// Changes queued, appended but not yet durable, or reserved by permits: the bounded
    /// quantity.
    occupancy: AtomicUsize,
    /// Changes appended and handed to the sync thread, not yet durable.
    handed: AtomicUsize,
    /// Set by `close` or a fatal error: no new permits.
    closed: AtomicBool,
    /// Permits still to refuse as if the queue were full (a test seam:
    /// [`Writer::refuse_next_permits`]).
    refuse_next: AtomicU64,
    /// Set once `on_fatal` has run, so it runs once.
    fatal_reported: AtomicBool,
    /// The event sequence number up to which events were counted in the metric.
    events_counted: AtomicU64,
    /// The ticket of the last change submitted, for read barriers.
    last_submitted: AtomicU64,
    /// How long the oldest change of the last batch waited in the queue, in microseconds;
    /// 0 once the queue ran empty.
    queue_delay_us: AtomicU64,
    /// Between the append and the sync thread.
    handoff: Mutex<Handoff>,
    /// Signalled when `handoff` changes.
    handoff_changed: Condvar,
    durability: Arc<Durability>,
    config: WriterConfig,
}

/// Appended changes waiting for the sync thread.
#[derive(Default)]
struct Handoff {
    /// What the next sync makes durable; `None` while nothing new was appended.
    pending: Option<Appended>,
    /// The append thread has finished (closed, or failed).
    append_done: bool,
    /// The writer failed: both threads stop.
    failed: bool,
}

/// One appended batch, as the sync thread completes it.
struct Appended {
    /// The batch's last ticket.
    ticket: Ticket,
    /// The event sequence number after its last event, if it had events.
    events_end: Option<u64>,
    /// How many changes it holds.
    changes: usize,
    /// The position of its last log record.
    position: u64,
    /// When the append thread took it from the queue.
    started: Instant,
}

/// Handle to the group-commit writer thread.
pub struct Writer {
    shared: Arc<Shared>,
    /// The append and sync threads, joined by `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Stops the server; run once, by the first failure.
    on_fatal: FatalHandler,
}

/// A reserved place in the writer's queue: submitting through it cannot be refused.
pub struct WriterPermit<'a> {
    shared: &'a Shared,
    submitted: bool,
}

impl WriterPermit<'_> {
    /// Queues `change` and returns its ticket. Waiting on the ticket tells when it is durable.
    pub fn submit(mut self, change: Change) -> Ticket {
        self.submitted = true;
        let shared = self.shared;
        let (ticket, wake) = {
            let mut queue = lock(&shared.queue);
            let ticket = queue.next_ticket;
            queue.next_ticket += 1;
            let mut events = Vec::with_capacity(change.events.len());
            for event in change.events {
                events.push(EventRecord {
                    seq: queue.next_event_seq,
                    time_ms: change.time_ms,
                    event,
                    by: std::sync::Arc::clone(&change.by),
                });
                queue.next_event_seq += 1;
            }
            queue.items.push_back(Pending {
                ticket,
                queued: Instant::now(),
                ops: change.ops,
                events,
            });
            shared.last_submitted.store(ticket, Ordering::Release);
            (ticket, queue.writer_sleeping)
        };
        if wake {
            shared.wake.notify_one();
        }
        ticket
    }
}

impl Drop for WriterPermit<'_> {
    fn drop(&mut self) {
        if !self.submitted {
            self.shared.occupancy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Writer {
    /// Starts the writer thread over `store`. `next_event_seq` continues the event log.
    pub fn start(
        storage: Arc<dyn Storage>,
        memtable: Arc<Memtable>,
        config: WriterConfig,
        log_start: LogStart,
        on_fatal: FatalHandler,
    ) -> std::io::Result<Arc<Self>> {
        assert!(config.max_batch_items > 0 && config.queue_capacity_items > 0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                next_ticket: 1,
                next_event_seq: log_start.next_event_seq,
                writer_sleeping: false,
            }),
            wake: Condvar::new(),
            occupancy: AtomicUsize::new(0),
            refuse_next: AtomicU64::new(0),
            handed: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            fatal_reported: AtomicBool::new(false),
            last_submitted: AtomicU64::new(0),
            queue_delay_us: AtomicU64::new(0),
            events_counted: AtomicU64::new(log_start.next_event_seq),
            handoff: Mutex::default(),
            handoff_changed: Condvar::new(),
            durability: Arc::new({
                let durability = Durability::new(log_start.next_event_seq);
                // What recovery found is durable: the store was synced when it opened.
                durability
                    .log_position
                    .store(log_start.next_position.saturating_sub(1), Ordering::Release);
                durability
            }),
            config,
        });
        let append = {
            let shared = Arc::clone(&shared);
            let storage = Arc::clone(&storage);
            let on_fatal = Arc::clone(&on_fatal);
            std::thread::Builder::new()
                .name("stockroom-append".to_owned())
                .spawn(move || run_append(&shared, storage.as_ref(), &memtable, log_start, on_fatal.as_ref()))?
        };
        let sync = {
            let shared = Arc::clone(&shared);
            let on_fatal = Arc::clone(&on_fatal);
            std::thread::Builder::new()
                .name("stockroom-sync".to_owned())
                .spawn(move || run_sync(&shared, storage.as_ref(), on_fatal.as_ref()))?
        };
        Ok(Arc::new(Self {
            shared,
            threads: Mutex::new(vec![append, sync]),
            on_fatal,
        }))
    }

    /// The one fatal path, for a store failure seen outside the writer (a read that failed,
    /// a stored row that does not decode): as after a failed append or sync, nothing more is
    /// acknowledged, every waiter fails, and the fatal handler stops the server, which shuts
    /// down in order. `step` names what failed, for the log.
    pub fn fail(&self, error: &StoreError, step: &str) {
        fail(&self.shared, error, step, self.on_fatal.as_ref());
    }

    /// Reserves a place in the queue, or `None` when the queue is full or closed.
    pub fn try_reserve(&self) -> Option<WriterPermit<'_>> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return None;
        }
        if shared.refuse_next.load(Ordering::Relaxed) > 0
            && shared
                .refuse_next
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
                .is_ok()
        {
            return None;
        }
        shared
            .occupancy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |occupied| {
                (occupied < shared.config.queue_capacity_items).then_some(occupied + 1)
            })
            .ok()?;
        Some(WriterPermit {
            shared,
            submitted: false,
        })
    }

    /// Where durability is tracked.
    pub fn durability(&self) -> &Arc<Durability> {
        &self.shared.durability
    }

    /// The ticket of the last change submitted: waiting on it is a barrier for every change
    /// made so far.
    pub fn last_submitted(&self) -> Ticket {
        self.shared.last_submitted.load(Ordering::Acquire)
    }

    /// How long the oldest change of the latest batch waited before the writer took it (zero
    /// once the queue ran empty): above a few flush times, the writer is falling behind.
    pub fn queue_delay(&self) -> Duration {
        Duration::from_micros(self.shared.queue_delay_us.load(Ordering::Acquire))
    }

    /// Refuses the next `count` permits as if the queue were full, then admits as before: a
    /// test seam that makes exactly one step of a flow meet a full queue, where filling the
    /// real queue would refuse the steps around it too.
    pub fn refuse_next_permits(&self, count: u64) {
        self.shared.refuse_next.store(count, Ordering::Release);
    }

    /// Changes queued, in flight or reserved right now.
    pub fn occupancy(&self) -> usize {
        self.shared.occupancy.load(Ordering::Acquire)
    }

    /// Refuses new changes, makes everything queued durable, and stops the thread.
    /// Blocks until the writer thread has finished.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a writer thread panicked");
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data under these locks stays consistent because
/// every critical section is short and does not panic midway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long the idle writer sleeps before it looks at the closed flag again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Where the log continues: from recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStart {
    /// The position the next log record gets.
    pub next_position: u64,
    /// The sequence number the next event gets.
    pub next_event_seq: u64,
}

type OnFatal = dyn Fn(&StoreError) + Send + Sync;

/// Stops both threads and fails every waiter; runs `on_fatal` once.
fn fail(shared: &Shared, error: &StoreError, what: &str, on_fatal: &OnFatal) {
    shared.closed.store(true, Ordering::Release);
    {
        let mut handoff = lock(&shared.handoff);
        handoff.failed = true;
        handoff.pending = None;
    }
    shared.handoff_changed.notify_all();
    shared.wake.notify_all();
    if !shared.fatal_reported.swap(true, Ordering::AcqRel) {
        tracing::error!(error = %error, step = what, "the store failed; stopping without acknowledging more (the outcome of a batch in flight is unknown)");
        metrics::counter!(names::WRITER_FAILURES_TOTAL).increment(1);
        // The handler runs first so that whoever sees a failed wait also sees the stop
        // under way; no waiter of the batch can be completed either way.
        on_fatal(error);
    }
    shared.durability.fail();
}

fn run_append(shared: &Shared, storage: &dyn Storage, memtable: &Memtable, start: LogStart, on_fatal: &OnFatal) {
    let mut next_position = start.next_position;
    loop {
        // At most one appended batch waits for the sync thread: until it takes that one, the
        // next batch gathers in the queue (so batches grow while a sync runs).
        {
            let mut handoff = lock(&shared.handoff);
            while handoff.pending.is_some() && !handoff.failed {
                handoff = shared
                    .handoff_changed
                    .wait(handoff)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        let batch = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(oldest) = queue.items.front() {
                    let waited = u64::try_from(oldest.queued.elapsed().as_micros()).unwrap_or(u64::MAX);
                    shared.queue_delay_us.store(waited, Ordering::Release);
                    let take = queue.items.len().min(shared.config.max_batch_items);
                    break Some(queue.items.drain(..take).collect::<Vec<_>>());
                }
                shared.queue_delay_us.store(0, Ordering::Release);
                let failed = lock(&shared.handoff).failed;
                let idle = shared.occupancy.load(Ordering::Acquire) == shared.handed.load(Ordering::Acquire);
                if failed || (shared.closed.load(Ordering::Acquire) && idle) {
                    break None;
                }
                queue.writer_sleeping = true;
                queue = shared
                    .wake
                    .wait_timeout(queue, IDLE_WAIT)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                queue.writer_sleeping = false;
            }
        };
        let Some(batch) = batch else {
            lock(&shared.handoff).append_done = true;
            shared.handoff_changed.notify_all();
            return;
        };
        let started = Instant::now();
        let changes = batch.len();
        let last_ticket = batch.last().map_or(0, |pending| pending.ticket);
        let events_end = batch
            .iter()
            .rev()
            .find_map(|pending| pending.events.last())
            .map(|record| record.seq + 1);
        let (records, ops) = match encode_batch(storage, memtable, batch, &mut next_position) {
            Ok(encoded) => encoded,
            Err(error) => return fail(shared, &error, "reading a row for a conditional delete", on_fatal),
        };
        if let Err(error) = storage.append(records) {
            return fail(shared, &error, "append", on_fatal);
        }
        memtable.apply(ops, next_position - 1, events_end.unwrap_or(0));
        shared.handed.fetch_add(changes, Ordering::AcqRel);
        let mut handoff = lock(&shared.handoff);
        if handoff.failed {
            return;
        }
        handoff.pending = Some(Appended {
            ticket: last_ticket,
            events_end,
            changes,
            position: next_position - 1,
            started,
        });
        drop(handoff);
        shared.handoff_changed.notify_all();
    }
}

/// Resolves conditional deletes, then encodes the batch into log records of about
/// [`RECORD_BYTES_TARGET`] each (a change is never split). Returns the records and the
/// batch's row ops in order, for the memtable.
fn encode_batch(
    storage: &dyn Storage,
    memtable: &Memtable,
    batch: Vec<Pending>,
    next_position: &mut u64,
) -> Result<(Vec<PositionedRecord>, Vec<Op>), StoreError> {
    let conditional = batch
        .iter()
        .any(|pending| pending.ops.iter().any(|op| matches!(op, Op::DeleteIf(..))));
    // Rows written earlier in this batch, for conditional deletes (the memtable has them
    // only once the batch is applied).
    let mut written: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    let mut records = Vec::new();
    let mut all_ops = Vec::new();
    let mut record_ops: Vec<Op> = Vec::new();
    let mut record_events: Vec<EventRecord> = Vec::new();
    let mut record_bytes = 0;
    let mut seal = |ops: &mut Vec<Op>, events: &mut Vec<EventRecord>, all_ops: &mut Vec<Op>| {
        records.push((*next_position, encode_record(ops, events)));
        *next_position += 1;
        all_ops.append(ops);
        events.clear();
    };
    for pending in batch {
        let mut ops = pending.ops;
        if conditional {
            ops = resolve_conditional(storage, memtable, &mut written, ops)?;
        }
        let bytes = change_bytes(&ops, &pending.events);
        if record_bytes > 0 && record_bytes + bytes > RECORD_BYTES_TARGET {
            seal(&mut record_ops, &mut record_events, &mut all_ops);
            record_bytes = 0;
        }
        record_ops.extend(ops);
        record_events.extend(pending.events);
        record_bytes += bytes;
    }
    seal(&mut record_ops, &mut record_events, &mut all_ops);
    Ok((records, all_ops))
}

fn resolve_conditional(
    storage: &dyn Storage,
    memtable: &Memtable,
    written: &mut std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
    ops: Vec<Op>,
) -> Result<Vec<Op>, StoreError> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put(key, value) => {
                written.insert(key.clone(), Some(value.clone()));
                out.push(Op::Put(key, value));
            }
            Op::Delete(key) => {
                written.insert(key.clone(), None);
                out.push(Op::Delete(key));
            }
            Op::DeleteIf(key, expected) => {
                let current = match written.get(&key) {
                    Some(value) => value.clone(),
                    None => match memtable.get(&key) {
                        Some(value) => value,
                        None => storage.get(&key)?,
                    },
                };
                if current.as_deref() == Some(expected.as_slice()) {
                    written.insert(key.clone(), None);
                    out.push(Op::Delete(key));
                }
            }
        }
    }
    Ok(out)
}

fn run_sync(shared: &Shared, storage: &dyn Storage, on_fatal: &OnFatal) {
    loop {
        let appended = {
            let mut handoff = lock(&shared.handoff);
            loop {
                if handoff.failed {
                    return;
                }
                if let Some(appended) = handoff.pending.take() {
                    break appended;
                }
                if handoff.append_done {
                    return;
                }
                handoff = shared
                    .handoff_changed
                    .wait(handoff)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        // The append thread may gather and append the next batch now.
        shared.handoff_changed.notify_all();
        let sync_started = Instant::now();
        if let Err(error) = storage.sync() {
            return fail(shared, &error, "sync", on_fatal);
        }
        let synced = Instant::now();
        shared.occupancy.fetch_sub(appended.changes, Ordering::AcqRel);
        shared.handed.fetch_sub(appended.changes, Ordering::AcqRel);
        shared
            .durability
            .log_position
            .fetch_max(appended.position, Ordering::AcqRel);
        shared.durability.complete(appended.ticket, appended.events_end);
        metrics::histogram!(names::WRITER_BATCH_CHANGES).record(appended.changes as f64);
        metrics::histogram!(names::WRITER_FLUSH_SECONDS).record((synced - sync_started).as_secs_f64());
        metrics::histogram!(names::WRITER_BATCH_SECONDS).record((synced - appended.started).as_secs_f64());
        metrics::counter!(names::WRITER_CHANGES_TOTAL).increment(appended.changes as u64);
        if let Some(end) = appended.events_end {
            let last = shared.events_counted.swap(end, Ordering::AcqRel);
            metrics::counter!(names::EVENTS_WRITTEN_TOTAL).increment(end.saturating_sub(last));
        }
        // Wake the append thread if it waits to close.
        shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::log::read_events;
    use crate::persistence::{FaultyStore, Log, SledStore, StateView, StoreFaults};

    fn put(key: &str) -> Change {
        Change {
            ops: vec![Op::Put(key.as_bytes().to_vec(), b"v".to_vec())],
            events: Vec::new(),
            time_ms: 0,
            by: crate::access::by_system(),
        }
    }

    fn no_fatal() -> FatalHandler {
        Arc::new(|_| {})
    }

    const CONFIG: WriterConfig = WriterConfig {
        max_batch_items: 64,
        queue_capacity_items: 1024,
    };

    /// A writer over `storage` (fresh log), and the view readers use.
    fn start(storage: Arc<dyn Storage>, config: WriterConfig, on_fatal: FatalHandler) -> (Arc<Writer>, StateView) {
        let memtable = Arc::new(Memtable::default());
        let start = LogStart {
            next_position: 1,
            next_event_seq: 7,
        };
        let writer = Writer::start(Arc::clone(&storage), Arc::clone(&memtable), config, start, on_fatal).unwrap();
        (writer, StateView::new(storage, memtable))
    }

    fn faulty(dir: &tempfile::TempDir) -> (Arc<dyn Storage>, Arc<StoreFaults>) {
        let faults = Arc::new(StoreFaults::default());
        let sled: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        (Arc::new(FaultyStore::new(sled, Arc::clone(&faults))), faults)
    }

    /// Polls `condition` (no fixed sleeps: the machine may be slow).
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn event(n: u64) -> DomainEvent {
        DomainEvent::Cart {
            cart: crate::domain::CartId::generate(),
            event: crate::domain::CartEvent::LineSet {
                sku: crate::domain::SkuId::parse("e").unwrap(),
                qty: n,
            },
        }
    }

    #[tokio::test]
    async fn a_ticket_becomes_durable_only_after_its_batch_is_synced_and_readers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let (writer, view) = start(Arc::clone(&storage), CONFIG, no_fatal());
        let tickets: Vec<Ticket> = (0..100)
            .map(|n| writer.try_reserve().unwrap().submit(put(&format!("k{n:03}"))))
            .collect();
        assert_eq!(
            tickets,
            (1..=100).collect::<Vec<_>>(),
            "tickets follow submission order"
        );
        writer.durability().wait(100).await.unwrap();
        assert!(writer.durability().durable() >= 100);
        assert_eq!(view.scan(b"k", None, 1000).unwrap().len(), 100);
        let records = storage.read(0, 1000).unwrap();
        assert!(
            !records.is_empty() && records.len() < 100,
            "a batch is a few log records, not a row per change: {}",
            records.len()
        );
        writer.close();
        assert_eq!(writer.occupancy(), 0);
        assert!(writer.try_reserve().is_none(), "a closed writer takes nothing");
    }

    #[tokio::test]
    async fn the_durable_end_of_the_event_log_moves_only_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, faults) = faulty(&dir);
        faults.close_sync_gate();
        let (writer, _view) = start(Arc::clone(&storage), CONFIG, no_fatal());
        let events_end = writer.durability().watch_events_end();
        assert_eq!(*events_end.borrow(), 7);
        let ticket = writer.try_reserve().unwrap().submit(Change {
            ops: Vec::new(),
            events: vec![event(1), event(2)],
            time_ms: 0,
            by: crate::access::by_system(),
        });
        let log: &dyn Log = storage.as_ref();
        until("the events are in the log", || {
            read_events(log, 0, 0, 10).unwrap().0.len() == 2
        })
        .await;
        assert_eq!(*events_end.borrow(), 7, "appended, but not yet published as durable");
        faults.open_sync_gate();
        writer.durability().wait(ticket).await.unwrap();
        assert_eq!(*events_end.borrow(), 9, "events 7 and 8 are durable");
        writer.close();
    }

    #[tokio::test]
    async fn the_next_batch_is_appended_while_the_previous_one_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, faults) = faulty(&dir);
        faults.close_sync_gate();
        let (writer, view) = start(storage, CONFIG, no_fatal());
        let first = writer.try_reserve().unwrap().submit(put("first"));
        until("the first change is appended", || view.get(b"first").unwrap().is_some()).await;
        let second = writer.try_reserve().unwrap().submit(put("second"));
        until("the second change is appended", || {
            view.get(b"second").unwrap().is_some()
        })
        .await;
        assert!(
            writer.durability().durable() < first,
            "the second batch was appended while the first was still syncing"
        );
        faults.open_sync_gate();
        writer.durability().wait(second).await.unwrap();
        assert_eq!(faults.syncs.load(Ordering::SeqCst), 2, "one sync per batch");
        writer.close();
    }

    #[tokio::test]
    async fn the_queue_bound_refuses_permits_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let config = WriterConfig {
            max_batch_items: 8,
            queue_capacity_items: 2,
        };
        let (writer, _view) = start(storage, config, no_fatal());
        let first = writer.try_reserve().unwrap();
        let second = writer.try_reserve().unwrap();
        assert!(writer.try_reserve().is_none());
        drop(first);
        let third = writer.try_reserve().expect("a dropped permit frees its place");
        let ticket = third.submit(put("a"));
        drop(second);
        writer.durability().wait(ticket).await.unwrap();
        writer.close();
    }

    /// Runs a change through a writer whose storage fails as `switch` says; returns how often
    /// the fatal handler ran.
    async fn failing(switch: impl Fn(&StoreFaults)) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let (storage, faults) = faulty(&dir);
        let fatal_calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&fatal_calls);
        let on_fatal: FatalHandler = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let (writer, _view) = start(storage, CONFIG, on_fatal);
        let good = writer.try_reserve().unwrap().submit(put("good"));
        writer.durability().wait(good).await.unwrap();
        switch(&faults);
        let bad = writer.try_reserve().unwrap().submit(put("bad"));
        assert!(
            writer.durability().wait(bad).await.is_err(),
            "nothing of a failed batch is acknowledged"
        );
        assert_eq!(writer.durability().durable(), good);
        assert!(writer.try_reserve().is_none(), "a failed writer takes nothing more");
        writer.close();
        fatal_calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_waiters_and_calls_the_fatal_handler_once() {
        assert_eq!(
            failing(|faults| faults.fail_flush.store(true, Ordering::SeqCst)).await,
            1
        );
    }

    #[tokio::test]
    async fn a_sync_that_fails_after_the_flush_acknowledges_nothing_though_the_data_is_on_disk() {
        assert_eq!(
            failing(|faults| faults.fail_sync_after_flush.store(true, Ordering::SeqCst)).await,
            1
        );
    }

    #[tokio::test]
    async fn a_failed_append_fails_its_waiters_and_calls_the_fatal_handler_once() {
        assert_eq!(
            failing(|faults| faults.fail_apply.store(true, Ordering::SeqCst)).await,
            1
        );
    }

    #[tokio::test]
    async fn held_values_are_dropped_before_the_waiters_of_their_ticket_wake() {
        let durability = Arc::new(Durability::new(1));
        let mark = Arc::new(());
        durability.hold_until_durable(3, Box::new(Arc::clone(&mark)));
        let waiter = {
            let durability = Arc::clone(&durability);
            let mark = Arc::clone(&mark);
            tokio::spawn(async move {
                durability.wait(3).await.unwrap();
                // The test's handle and this one: the held copy is gone by now.
                Arc::strong_count(&mark)
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&mark), 3, "held while not durable");
        durability.complete(3, None);
        assert_eq!(waiter.await.unwrap(), 2, "released before the waiter woke");
    }

    #[tokio::test]
    async fn a_conditional_delete_removes_only_the_value_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let (writer, view) = start(storage, CONFIG, no_fatal());
        let write = |ops: Vec<Op>| {
            writer.try_reserve().unwrap().submit(Change {
                ops,
                events: Vec::new(),
                time_ms: 0,
                by: crate::access::by_system(),
            })
        };
        write(vec![
            Op::Put(b"old".to_vec(), b"v1".to_vec()),
            Op::Put(b"reused".to_vec(), b"v1".to_vec()),
        ]);
        // The reused row gets a newer value before retention's delete (read earlier) arrives.
        write(vec![Op::Put(b"reused".to_vec(), b"v2".to_vec())]);
        let ticket = write(vec![
            Op::DeleteIf(b"old".to_vec(), b"v1".to_vec()),
            Op::DeleteIf(b"reused".to_vec(), b"v1".to_vec()),
        ]);
        writer.durability().wait(ticket).await.unwrap();
        assert_eq!(view.get(b"old").unwrap(), None, "the value it read is deleted");
        assert_eq!(
            view.get(b"reused").unwrap(),
            Some(b"v2".to_vec()),
            "a newer value under the same key stays"
        );
        writer.close();
    }
}
