//! The group-commit writer: one thread that makes changes durable in batches.
//!
//! Actors hand in [`Change`]s through a [`WriterPermit`]; each gets a [`Ticket`], its place
//! in the one global order of changes. The writer thread takes everything queued (up to
//! `max_batch_items`), applies it as one atomic store batch together with the event-log rows,
//! flushes once, and only then marks the batch's last ticket durable, waking every waiter up to
//! it. Changes that arrive during a flush form the next batch, so under load batches grow and
//! the cost of a flush is shared.
//!
//! Invariants:
//! - tickets and event sequence numbers are handed out under the queue lock, so ticket order,
//!   event order and store order are the same order;
//! - `durable` only grows, and a ticket is durable only after the flush that covers it;
//! - the queue holds at most `queue_capacity_items` changes, counting reserved permits: when
//!   full, [`Writer::try_reserve`] refuses at once and the caller answers `503 overloaded`;
//! - a store error is fatal: every waiter is failed (nothing of the batch is acknowledged), the
//!   writer stops taking changes, and `on_fatal` is called to stop the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::rows::{DomainEvent, EventRecord};
use super::{codec, keys, Op, Store, StoreError};
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

/// Called once, from the writer thread, when the store fails.
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
}

impl Default for Durability {
    fn default() -> Self {
        Self::new(1)
    }
}

#[derive(Debug, Default)]
struct Waiters {
    /// Set once the writer has failed: every wait fails from then on.
    failed: bool,
    /// Senders to complete when their ticket becomes durable.
    pending: BTreeMap<Ticket, Vec<oneshot::Sender<()>>>,
}

impl Durability {
    /// Nothing durable yet; the event log continues at `next_event_seq`.
    pub fn new(next_event_seq: u64) -> Self {
        Self {
            durable: AtomicU64::new(0),
            waiters: Mutex::default(),
            events_end: tokio::sync::watch::Sender::new(next_event_seq),
        }
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
        if let Some(end) = events_end {
            self.events_end.send_if_modified(|current| {
                let advanced = end > *current;
                if advanced {
                    *current = end;
                }
                advanced
            });
        }
        let done = {
            let mut waiters = lock(&self.waiters);
            self.durable.store(ticket, Ordering::Release);
            let later = waiters.pending.split_off(&(ticket + 1));
            std::mem::replace(&mut waiters.pending, later)
        };
        for sender in done.into_values().flatten() {
            // A waiter that gave up (client went away) is fine to ignore.
            let _ = sender.send(());
        }
    }

    fn fail(&self) {
        let mut waiters = lock(&self.waiters);
        waiters.failed = true;
        // Dropping the senders fails every receiver.
        waiters.pending.clear();
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
    /// Changes queued, in flight or reserved by permits: the bounded quantity.
    occupancy: AtomicUsize,
    /// Set by `close` or a fatal error: no new permits.
    closed: AtomicBool,
    /// The ticket of the last change submitted, for read barriers.
    last_submitted: AtomicU64,
    /// How long the oldest change of the last batch waited in the queue, in microseconds;
    /// 0 once the queue ran empty.
    queue_delay_us: AtomicU64,
    durability: Arc<Durability>,
    config: WriterConfig,
}

/// Handle to the group-commit writer thread.
pub struct Writer {
    shared: Arc<Shared>,
    /// The writer thread, joined by `close`.
    thread: Mutex<Option<JoinHandle<()>>>,
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
        store: Arc<dyn Store>,
        config: WriterConfig,
        next_event_seq: u64,
        on_fatal: FatalHandler,
    ) -> std::io::Result<Arc<Self>> {
        assert!(config.max_batch_items > 0 && config.queue_capacity_items > 0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                next_ticket: 1,
                next_event_seq,
                writer_sleeping: false,
            }),
            wake: Condvar::new(),
            occupancy: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            last_submitted: AtomicU64::new(0),
            queue_delay_us: AtomicU64::new(0),
            durability: Arc::new(Durability::new(next_event_seq)),
            config,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stockroom-writer".to_owned())
            .spawn(move || run(&thread_shared, store.as_ref(), on_fatal.as_ref()))?;
        Ok(Arc::new(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Reserves a place in the queue, or `None` when the queue is full or closed.
    pub fn try_reserve(&self) -> Option<WriterPermit<'_>> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
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

    /// Changes queued, in flight or reserved right now.
    pub fn occupancy(&self) -> usize {
        self.shared.occupancy.load(Ordering::Acquire)
    }

    /// Refuses new changes, makes everything queued durable, and stops the thread.
    /// Blocks until the writer thread has finished.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the writer thread panicked");
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

fn run(shared: &Shared, store: &dyn Store, on_fatal: &(dyn Fn(&StoreError) + Send + Sync)) {
    loop {
        let mut batch = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(oldest) = queue.items.front() {
                    let waited = u64::try_from(oldest.queued.elapsed().as_micros()).unwrap_or(u64::MAX);
                    shared.queue_delay_us.store(waited, Ordering::Release);
                    let take = queue.items.len().min(shared.config.max_batch_items);
                    break queue.items.drain(..take).collect::<Vec<_>>();
                }
                shared.queue_delay_us.store(0, Ordering::Release);
                if shared.closed.load(Ordering::Acquire) && shared.occupancy.load(Ordering::Acquire) == 0 {
                    return;
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
        if let Err(error) = write_batch(store, &mut batch) {
            tracing::error!(error = %error, changes = batch.len(), "store failed; stopping without acknowledging the batch");
            metrics::counter!(names::WRITER_FAILURES_TOTAL).increment(1);
            shared.closed.store(true, Ordering::Release);
            // The handler runs first so that whoever sees a failed wait also sees the stop
            // under way; no waiter of this batch can be completed either way.
            on_fatal(&error);
            shared.durability.fail();
            return;
        }
        let last = batch.last().map_or(0, |pending| pending.ticket);
        let events_end = batch
            .iter()
            .rev()
            .find_map(|pending| pending.events.last())
            .map(|record| record.seq + 1);
        shared.occupancy.fetch_sub(batch.len(), Ordering::AcqRel);
        shared.durability.complete(last, events_end);
    }
}

fn write_batch(store: &dyn Store, batch: &mut [Pending]) -> Result<(), StoreError> {
    let started = Instant::now();
    let op_count: usize = batch
        .iter()
        .map(|pending| pending.ops.len() + pending.events.len())
        .sum();
    let mut ops = Vec::with_capacity(op_count);
    let mut events = 0u64;
    for pending in batch.iter_mut() {
        ops.append(&mut pending.ops);
        for record in &pending.events {
            ops.push(Op::Put(keys::event(record.seq), codec::encode(record)));
            events += 1;
        }
    }
    store.apply(ops)?;
    let flush_started = Instant::now();
    store.flush()?;
    let flushed = Instant::now();
    metrics::histogram!(names::WRITER_BATCH_CHANGES).record(batch.len() as f64);
    metrics::histogram!(names::WRITER_FLUSH_SECONDS).record((flushed - flush_started).as_secs_f64());
    metrics::histogram!(names::WRITER_BATCH_SECONDS).record((flushed - started).as_secs_f64());
    metrics::counter!(names::WRITER_CHANGES_TOTAL).increment(batch.len() as u64);
    metrics::counter!(names::EVENTS_WRITTEN_TOTAL).increment(events);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::{FaultyStore, SledStore, StoreFaults};

    fn put(key: &str) -> Change {
        Change {
            ops: vec![Op::Put(key.as_bytes().to_vec(), b"v".to_vec())],
            events: Vec::new(),
            time_ms: 0,
        }
    }

    fn no_fatal() -> FatalHandler {
        Arc::new(|_| {})
    }

    #[tokio::test]
    async fn a_ticket_becomes_durable_only_after_its_batch_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let config = WriterConfig {
            max_batch_items: 64,
            queue_capacity_items: 1024,
        };
        let writer = Writer::start(Arc::clone(&store), config, 1, no_fatal()).unwrap();
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
        assert_eq!(store.scan(b"k", None, 1000).unwrap().len(), 100);
        writer.close();
        assert_eq!(writer.occupancy(), 0);
        assert!(writer.try_reserve().is_none(), "a closed writer takes nothing");
    }

    #[tokio::test]
    async fn the_durable_end_of_the_event_log_moves_only_after_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let faults = Arc::new(StoreFaults::default());
        faults.slow_flush_ms.store(300, Ordering::SeqCst);
        let store: Arc<dyn Store> = Arc::new(FaultyStore::new(sled, Arc::clone(&faults)));
        let config = WriterConfig {
            max_batch_items: 64,
            queue_capacity_items: 1024,
        };
        let writer = Writer::start(Arc::clone(&store), config, 7, no_fatal()).unwrap();
        let events_end = writer.durability().watch_events_end();
        assert_eq!(*events_end.borrow(), 7);
        let event = |n: u64| DomainEvent::Cart {
            cart: crate::domain::CartId::generate(),
            event: super::super::rows::CartEvent::LineSet {
                sku: crate::domain::SkuId::parse("e").unwrap(),
                qty: n,
            },
        };
        let ticket = writer.try_reserve().unwrap().submit(Change {
            ops: Vec::new(),
            events: vec![event(1), event(2)],
            time_ms: 0,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store.get(&keys::event(8)).unwrap().is_some(),
            "the events are applied (readable) while the flush runs"
        );
        assert_eq!(*events_end.borrow(), 7, "but not yet published as durable");
        writer.durability().wait(ticket).await.unwrap();
        assert_eq!(*events_end.borrow(), 9, "events 7 and 8 are durable");
        writer.close();
    }

    #[tokio::test]
    async fn the_queue_bound_refuses_permits_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let config = WriterConfig {
            max_batch_items: 8,
            queue_capacity_items: 2,
        };
        let writer = Writer::start(store, config, 1, no_fatal()).unwrap();
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

    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters_and_calls_the_fatal_handler() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(StoreFaults::default());
        let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let store: Arc<dyn Store> = Arc::new(FaultyStore::new(sled, Arc::clone(&faults)));
        let fatal_calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&fatal_calls);
        let on_fatal: FatalHandler = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let config = WriterConfig {
            max_batch_items: 8,
            queue_capacity_items: 64,
        };
        let writer = Writer::start(store, config, 1, on_fatal).unwrap();
        let good = writer.try_reserve().unwrap().submit(put("good"));
        writer.durability().wait(good).await.unwrap();
        faults.fail_flush.store(true, Ordering::SeqCst);
        let bad = writer.try_reserve().unwrap().submit(put("bad"));
        assert!(
            writer.durability().wait(bad).await.is_err(),
            "nothing of a failed batch is acknowledged"
        );
        assert_eq!(writer.durability().durable(), good);
        assert_eq!(fatal_calls.load(Ordering::SeqCst), 1);
        assert!(writer.try_reserve().is_none(), "a failed writer takes nothing more");
        writer.close();
    }
}
