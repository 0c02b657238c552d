//! `SkuActor`: the single writer of one SKU's stock.
//!
//! Messages to one SKU are handled one at a time, so reserving needs no lock and cannot
//! oversell. A command is handled in one synchronous step: reserve a place in the writer's
//! queue, expire due holds, decide, apply to memory, submit the rows and events as one
//! [`Change`], and answer with the change's [`Ticket`]. The HTTP handler waits for that
//! ticket to be durable before it responds; the actor never waits, so the next command is
//! decided against the new state while the previous one is still being flushed. Reads answer
//! with the ticket of the actor's last change, so nothing is reported before it is durable.
//!
//! A panic while handling a message (a broken invariant is asserted, never ignored) stops the
//! actor; its supervisor restarts it, and the restarted actor reloads its state from storage
//! once every change it submitted is durable. The panicking request gets no answer (500).

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;

use super::batch::{BatchItem, BatchOp, Failures, ItemFailure, PrepareBatch, Prepared};
use super::mailbox::{Acked, MailboxSlot, Reply};
use crate::access::{by_system, By};
pub use crate::domain::sku::SkuOutcome;
use crate::domain::sku::{
    execute, Executed, Movement, Reservation, SkuCommand, SkuEvent, SkuLimits, SkuRejection, SkuState, SkuView,
    TransferRecord,
};
use crate::domain::DomainEvent;
use crate::domain::{Name, ReservationId, SkuId};
use crate::metrics as names;
use crate::persistence::rows::{restore_sku, sku_change_ops, SkuChange, SkuRow};
use crate::persistence::writer::Change;
use crate::persistence::{keys, StoreError, Ticket};

/// The domain's answer to a command: what it did, or why the SKU refused (an expected answer,
/// such as insufficient stock). Either stands, and is what an idempotency key stores.
pub type SkuAnswer = Result<SkuOutcome, SkuRejection>;

/// Why a SKU could not answer at all. Nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SkuFailure {
    /// The writer's queue was full; retry.
    #[error("the writer's queue is full")]
    Overloaded,
    /// Reading storage failed; the server is stopping (see [`crate::persistence::Writer::fail`]).
    #[error("reading the store failed")]
    Store(#[source] Arc<StoreError>),
}

/// What a SKU replies: the domain's answer, inside the failures that prevent one.
pub type SkuReply = Result<SkuAnswer, SkuFailure>;

/// The idempotency draft of a SKU command.
pub type IdempotencyDraft = crate::idempotency::IdempotencyDraft<SkuAnswer>;

/// Renders a SKU answer for HTTP (and for idempotent replay).
pub type Render = crate::idempotency::Render<SkuAnswer>;

/// Changes the SKU: create or update, restock, adjust, reserve, release, commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExecuteSkuCommand {
    /// What to do.
    pub command: SkuCommand,
    /// Store the answer under this idempotency key, if any.
    pub idempotency: Option<IdempotencyDraft>,
    /// Who asked (recorded with the events).
    pub by: By,
    /// Where to answer.
    pub reply: Reply<SkuReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Reads the SKU's counters; `None` if it does not exist.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetSku {
    /// Where to answer.
    pub reply: Reply<Option<SkuView>>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Reads one reservation of this SKU, held or settled; `Ok(None)` if unknown here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetReservation {
    /// Which reservation.
    pub id: ReservationId,
    /// Where to answer.
    pub reply: Reply<Result<Option<Reservation>, SkuFailure>>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Reads the SKU and how many units one reservation holds (0 when not held); `None` if the
/// SKU does not exist. Carts read their lines with it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetLine {
    /// The line's hold.
    pub id: ReservationId,
    /// Where to answer.
    pub reply: Reply<Option<(u64, SkuView)>>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Units of a reservation (held, or sold to an order) not on a shelf yet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetBackordered {
    /// The reservation.
    pub id: ReservationId,
    /// Where to answer.
    pub reply: Reply<u64>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// What every SKU actor shares: storage, time and limits.
pub struct SkuDeps {
    /// Writer, store (settled reservations, reloading after a restart) and clock.
    pub services: super::Services,
    /// Bounds on one SKU's state, and the allocation settings (its `sites` are replaced by
    /// the current ones of `locations` for every command).
    pub limits: SkuLimits,
    /// The locations, for allocation.
    pub locations: Arc<crate::locations::Locations>,
    /// Whether each ledger movement is also an event (`stockroom.stock.movement`).
    pub publish_movements: bool,
    /// How long settled reservations stay readable.
    pub settled_retention_ms: u64,
    /// Which SKU holds each held reservation whose id does not name it ([`needs_index`]:
    /// cart lines, and holds from releases before ids carried their SKU's tag), so
    /// reservation routes find their actor. The SKU id is shared, not copied, per hold.
    pub hold_index: Arc<DashMap<ReservationId, Arc<SkuId>>>,
    /// Live stock watchers.
    pub feed: Arc<super::feed::StockFeed>,
}

/// Whether a hold of the SKU with `tag` goes into the hold index: only when its id does not
/// carry the tag ([`ReservationId::generate_for`]). Holds from an earlier release and cart
/// lines (whose ids are derived from the cart) are indexed; a SKU's own reservations are
/// found by their tag.
pub fn needs_index(tag: u32, id: &ReservationId) -> bool {
    id.sku_tag() != tag
}

/// The holds of `state` that go into the hold index ([`needs_index`]).
pub fn indexed_holds(state: &SkuState) -> impl Iterator<Item = &crate::domain::sku::Hold> {
    let tag = state.sku().tag();
    state.holds().filter(move |hold| needs_index(tag, &hold.id))
}

/// How soon to retry expiring holds when the writer's queue was full.
const EXPIRY_RETRY: Duration = Duration::from_millis(100);

/// The actor that owns one SKU's stock.
pub struct SkuActor {
    /// The SKU this actor owns, for its whole life.
    sku: SkuId,
    /// The same id, shared by this SKU's entries in the hold index.
    shared_sku: Arc<SkuId>,
    /// The SKU's tag: holds whose ids carry it are found by it, not by the hold index.
    tag: u32,
    /// The SKU's state; `None` until it is created (or while reloading after a restart).
    state: Option<SkuState>,
    /// Shared storage, clock and limits.
    deps: Arc<SkuDeps>,
    /// The ticket of the last change this actor submitted: reads wait for it.
    last_ticket: Ticket,
    /// Reservations settled by changes that may not be durable yet, so that this actor
    /// answers about them correctly before storage has them. Pruned once durable.
    recently_settled: HashMap<ReservationId, Reservation>,
    /// The same, in ticket order, for pruning.
    recently_settled_order: VecDeque<(Ticket, ReservationId)>,
    /// The pending expiry timer: when it fires and its handle.
    expiry_timer: Option<(u64, SpawnHandle)>,
    /// Set after a panic: the restarted actor reloads from storage before handling messages.
    reload_pending: bool,
    /// The latest `available` not yet published to the stock feed, with its change's ticket.
    feed_pending: Option<(Figures, Ticket)>,
    /// Whether a feed publication is scheduled (at most one per coalescing window).
    feed_armed: bool,
}

impl SkuActor {
    /// An actor for `sku` with the given state (`None` for a SKU about to be created).
    pub fn new(sku: SkuId, state: Option<SkuState>, deps: Arc<SkuDeps>) -> Self {
        Self {
            shared_sku: Arc::new(sku.clone()),
            tag: sku.tag(),
            sku,
            state,
            deps,
            last_ticket: 0,
            recently_settled: HashMap::new(),
            recently_settled_order: VecDeque::new(),
            expiry_timer: None,
            reload_pending: false,
            feed_pending: None,
            feed_armed: false,
        }
    }

    /// Runs one command and submits its change; returns the answer and the ticket to wait on.
    fn execute(&mut self, command: &SkuCommand, idempotency: Option<IdempotencyDraft>, by: By) -> (SkuReply, Ticket) {
        self.prune_recently_settled();
        let now_ms = self.deps.services.clock.now_ms();
        // A local handle: the permit borrows the writer while `self` is mutated.
        let deps = Arc::clone(&self.deps);
        let Some(permit) = deps.services.writer.try_reserve() else {
            metrics::counter!(names::OVERLOAD_REFUSALS_TOTAL, "queue" => "writer").increment(1);
            return (Err(SkuFailure::Overloaded), self.last_ticket);
        };
        let mut state = self.state.take();
        let limits = SkuLimits {
            holds_max: deps.limits.holds_max,
            allocation: crate::domain::sku::Allocation {
                sites: deps.locations.sites(),
                ..deps.limits.allocation.clone()
            },
        };
        let executed = execute(&self.sku, &mut state, command, now_ms, &limits, |id| {
            self.settled_reservation(id)
        });
        self.state = state;
        let Executed {
            answer,
            events,
            settled,
            movements,
        } = match executed {
            Ok(executed) => executed,
            Err(failure) => return (Err(failure), self.last_ticket),
        };
        if matches!(command, SkuCommand::Reserve { .. })
            && matches!(answer, Err(SkuRejection::InsufficientStock { .. }))
        {
            metrics::counter!(names::RESERVATIONS_TOTAL, "outcome" => "insufficient_stock").increment(1);
        }

        let transfers: Vec<TransferRecord> = match &answer {
            Ok(SkuOutcome::Transfer(Some(record))) => vec![record.clone()],
            _ => Vec::new(),
        };
        let mut ops = match &self.state {
            Some(state) if !events.is_empty() => sku_change_ops(&SkuChange {
                after: state,
                events: &events,
                settled: &settled,
                movements: &movements,
                transfers: &transfers,
                now_ms,
                by: &by,
                settled_retention_ms: deps.settled_retention_ms,
            }),
            _ => Vec::new(),
        };
        let mut in_flight = None;
        if let Some(draft) = idempotency {
            let (answer_ops, mark) = draft.stage(&answer, now_ms);
            ops.extend(answer_ops);
            in_flight = Some(mark);
        }
        if ops.is_empty() {
            return (Ok(answer), self.last_ticket);
        }
        for event in &events {
            match event {
                SkuEvent::Held { hold } if needs_index(self.tag, &hold.id) => {
                    deps.hold_index.insert(hold.id, Arc::clone(&self.shared_sku));
                }
                other => {
                    if let Some((id, _)) = other.settles().filter(|(id, _)| needs_index(self.tag, id)) {
                        deps.hold_index.remove(&id);
                    }
                }
            }
        }
        record_event_metrics(&events);
        let domain_events = domain_events(&self.sku, events, movements, deps.publish_movements);
        let ticket = permit.submit(Change {
            ops,
            events: domain_events,
            time_ms: now_ms,
            by,
        });
        self.last_ticket = ticket;
        if let Some(mark) = in_flight {
            mark.release_when_durable(deps.services.writer.durability(), ticket);
        }
        if deps.feed.is_watched(&self.sku) {
            if let Some(state) = &self.state {
                self.feed_pending = Some((figures(state), ticket));
            }
        }
        for record in settled {
            self.recently_settled_order.push_back((ticket, record.id));
            self.recently_settled.insert(record.id, record);
        }
        (Ok(answer), ticket)
    }

    /// A reservation this SKU no longer holds: from recent memory, else from storage.
    fn settled_reservation(&self, id: &ReservationId) -> Result<Option<Reservation>, SkuFailure> {
        if let Some(record) = self.recently_settled.get(id) {
            return Ok(Some(record.clone()));
        }
        let key = keys::reservation(id);
        // A failed read (or a row that does not decode) is reported by the store view, which
        // takes the fatal path; this command only answers that it could not run.
        let stored = self
            .deps
            .services
            .store
            .get_versioned::<Reservation>(&key)
            .map_err(|error| SkuFailure::Store(Arc::new(error)))?;
        Ok(stored.filter(|record| record.sku == self.sku))
    }

    /// Forgets settled records whose change is durable: storage answers for them now.
    fn prune_recently_settled(&mut self) {
        let durable = self.deps.services.writer.durability().durable();
        while let Some((ticket, id)) = self.recently_settled_order.front() {
            if *ticket > durable {
                break;
            }
            self.recently_settled.remove(id);
            self.recently_settled_order.pop_front();
        }
    }

    /// Publishes the latest `available` to the stock feed once its change is durable, at most
    /// once per coalescing window.
    fn schedule_feed(&mut self, ctx: &mut Context<Self>) {
        if self.feed_armed || self.feed_pending.is_none() {
            return;
        }
        self.feed_armed = true;
        ctx.run_later(super::feed::COALESCE, |actor, ctx| {
            let Some(((available, locations), ticket)) = actor.feed_pending.take() else {
                actor.feed_armed = false;
                return;
            };
            let durability = Arc::clone(actor.deps.services.writer.durability());
            let feed = Arc::clone(&actor.deps.feed);
            let sku = actor.sku.clone();
            ctx.spawn(
                async move {
                    if durability.wait(ticket).await.is_ok() {
                        feed.publish(super::feed::StockUpdate {
                            sku,
                            available,
                            locations,
                            version: ticket,
                        });
                    }
                }
                .into_actor(actor)
                .map(|(), actor, ctx| {
                    // The window is over: a change made meanwhile is published in the next.
                    actor.feed_armed = false;
                    actor.schedule_feed(ctx);
                }),
            );
        });
    }

    /// Arms the expiry timer for the earliest held reservation, if it changed.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        let next = self.state.as_ref().and_then(SkuState::next_expiry_ms);
        if next == self.expiry_timer.as_ref().map(|(at, _)| *at) {
            return;
        }
        if let Some((_, handle)) = self.expiry_timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at_ms) = next {
            let delay = Duration::from_millis(at_ms.saturating_sub(self.deps.services.clock.now_ms()));
            self.arm_expiry_timer(ctx, at_ms, delay);
        }
    }

    fn arm_expiry_timer(&mut self, ctx: &mut Context<Self>, at_ms: u64, delay: Duration) {
        let handle = ctx.run_later(delay, |actor, ctx| {
            actor.expiry_timer = None;
            match actor.guarded(ctx, |actor| actor.execute(&SkuCommand::ExpireDue, None, by_system())) {
                Some((Err(SkuFailure::Overloaded), _)) => {
                    let retry_at = actor.deps.services.clock.now_ms() + EXPIRY_RETRY.as_millis() as u64;
                    actor.arm_expiry_timer(ctx, retry_at, EXPIRY_RETRY);
                }
                Some(_) => {
                    actor.schedule_expiry(ctx);
                    actor.schedule_feed(ctx);
                }
                None => {}
            }
        });
        self.expiry_timer = Some((at_ms, handle));
    }

    /// Runs `work`; a panic inside it restarts the actor from storage instead of killing it,
    /// and the message that caused it gets no answer.
    fn guarded<R>(&mut self, ctx: &mut Context<Self>, work: impl FnOnce(&mut Self) -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(result) => Some(result),
            Err(_) => {
                self.crash(ctx);
                None
            }
        }
    }

    /// Gives up the in-memory state after a panic and stops, so the supervisor restarts the
    /// actor and it reloads from storage.
    fn crash(&mut self, ctx: &mut Context<Self>) {
        tracing::error!(sku = %self.sku, "SKU actor panicked; restarting it from storage");
        metrics::counter!(names::ACTOR_RESTARTS_TOTAL, "kind" => "sku").increment(1);
        self.state = None;
        self.reload_pending = true;
        ctx.stop();
    }

    /// Reads the SKU and its holds from storage.
    fn load(&self) -> Result<Option<SkuState>, StoreError> {
        let store = &self.deps.services.store;
        let key = keys::sku(&self.sku);
        let Some(bytes) = store.get(&key)? else {
            return Ok(None);
        };
        let row: SkuRow = store.decode_versioned(&key, &bytes)?;
        let prefix = keys::holds_of(&self.sku);
        let mut holds = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan(&prefix, after.as_deref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, value) in page {
                holds.push(store.decode_versioned(&key, &value)?);
            }
        }
        let state = restore_sku(self.sku.clone(), row, holds).map_err(|reason| StoreError::Corrupt {
            key: self.sku.to_string(),
            reason,
        })?;
        Ok(Some(state))
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        match self.load() {
            Ok(state) => {
                if let Some(state) = &state {
                    for hold in indexed_holds(state) {
                        self.deps.hold_index.insert(hold.id, Arc::clone(&self.shared_sku));
                    }
                }
                self.state = state;
                self.reload_pending = false;
                tracing::info!(sku = %self.sku, "SKU actor reloaded from storage");
                self.schedule_expiry(ctx);
                // Watchers get the reloaded figure: a publication may have been lost with the
                // old context.
                if let Some(state) = self.state.as_ref().filter(|_| self.deps.feed.is_watched(&self.sku)) {
                    self.feed_pending = Some((figures(state), self.last_ticket));
                    self.schedule_feed(ctx);
                }
            }
            Err(error) => {
                // Storage that cannot be read is as fatal here as at startup: the one fatal
                // path stops the server in order. This actor answers nothing meanwhile
                // (without its state it would answer wrongly).
                tracing::error!(sku = %self.sku, error = %error, "cannot reload SKU from storage; stopping");
                self.deps.services.writer.fail(&error, "reloading a SKU");
                ctx.wait(actix::fut::wrap_future(std::future::pending::<()>()));
            }
        }
    }
}

/// What the stock feed shows of a SKU: `available`, in total and per location.
type Figures = (u64, Arc<[(crate::domain::location::LocationId, u64)]>);

fn figures(state: &SkuState) -> Figures {
    let locations: Arc<[_]> = state
        .stock()
        .iter()
        .map(|(location, stock)| (location.clone(), stock.available()))
        .collect();
    (state.available(), locations)
}

fn record_event_metrics(events: &[SkuEvent]) {
    for event in events {
        let outcome = match event {
            SkuEvent::Held { .. } => {
                metrics::gauge!(names::RESERVATIONS_HELD).increment(1.0);
                "reserved"
            }
            SkuEvent::ReservationReleased { .. } => "released",
            SkuEvent::ReservationCommitted { .. } | SkuEvent::Committed { .. } => "committed",
            SkuEvent::ReservationExpired { .. } => "expired",
            SkuEvent::Returned { .. } | SkuEvent::Uncommitted { .. } => {
                metrics::counter!(names::RESERVATIONS_TOTAL, "outcome" => "returned").increment(1);
                continue;
            }
            _ => continue,
        };
        if outcome != "reserved" {
            metrics::gauge!(names::RESERVATIONS_HELD).decrement(1.0);
        }
        metrics::counter!(names::RESERVATIONS_TOTAL, "outcome" => outcome).increment(1);
    }
}

impl Actor for SkuActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The real bound is the Mailbox's; actix's own would park shared senders.
        ctx.set_mailbox_capacity(0);
        if self.reload_pending {
            let durability = Arc::clone(self.deps.services.writer.durability());
            let ticket = self.last_ticket;
            // Handle nothing until every change this actor submitted is durable and reloaded.
            ctx.wait(async move { durability.wait(ticket).await }.into_actor(self).map(
                |result, actor, ctx| match result {
                    Ok(()) => actor.reload(ctx),
                    Err(_) => tracing::error!(sku = %actor.sku, "writer failed during reload"),
                },
            ));
            return;
        }
        // Holds that lapsed while the server was down are released now, in this step, so that
        // no request is answered before (a timer, even of zero delay, would run after some).
        let now_ms = self.deps.services.clock.now_ms();
        let due = self
            .state
            .as_ref()
            .and_then(SkuState::next_expiry_ms)
            .is_some_and(|at| at <= now_ms);
        if due {
            let expired = self.guarded(ctx, |actor| actor.execute(&SkuCommand::ExpireDue, None, by_system()));
            if let Some((Err(SkuFailure::Overloaded), _)) = expired {
                self.arm_expiry_timer(ctx, now_ms + EXPIRY_RETRY.as_millis() as u64, EXPIRY_RETRY);
                return;
            }
        }
        self.schedule_expiry(ctx);
    }
}

impl Supervised for SkuActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // The old context's timers are gone: neither the expiry timer nor a publication of the
        // stock feed is armed any more.
        self.expiry_timer = None;
        self.feed_armed = false;
        self.feed_pending = None;
        self.reload_pending = true;
    }
}

impl Handler<ExecuteSkuCommand> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: ExecuteSkuCommand, ctx: &mut Self::Context) {
        let ExecuteSkuCommand {
            command,
            idempotency,
            by,
            reply,
            slot: _slot,
        } = message;
        if let Some((value, ticket)) = self.guarded(ctx, |actor| actor.execute(&command, idempotency, by)) {
            // The requester may have gone away; the change stands either way.
            let _ = reply.send(Acked { value, ticket });
            self.schedule_expiry(ctx);
            self.schedule_feed(ctx);
        }
    }
}

impl SkuActor {
    /// Works out this SKU's part of a batch on a copy of its state: the new state, and its
    /// part, or why items cannot be applied.
    fn prepare_batch(&self, items: &[BatchItem], reason: &Name, by: &By) -> Result<(Staged, Prepared), Failures> {
        let Some(state) = &self.state else {
            return Err(items
                .iter()
                .map(|item| (item.clone(), ItemFailure::UnknownSku))
                .collect());
        };
        let now_ms = self.deps.services.clock.now_ms();
        let limits = SkuLimits {
            holds_max: self.deps.limits.holds_max,
            allocation: crate::domain::sku::Allocation {
                sites: self.deps.locations.sites(),
                ..self.deps.limits.allocation.clone()
            },
        };
        let mut next = Some(state.clone());
        let mut failures = Vec::new();
        let (mut events, mut movements, mut settled) = (Vec::new(), Vec::new(), Vec::new());
        let mut after = Vec::with_capacity(items.len());
        for item in items {
            let here = next.as_ref().expect("the SKU exists").stock_at(&item.location);
            if let Some(expected) = item.expected_on_hand.filter(|expected| *expected != here.on_hand) {
                failures.push((
                    item.clone(),
                    ItemFailure::Expectation {
                        expected,
                        on_hand: here.on_hand,
                    },
                ));
                continue;
            }
            let command = match item.op {
                BatchOp::Set(on_hand) => SkuCommand::Count {
                    location: item.location.clone(),
                    on_hand,
                    reason: Some(reason.clone()),
                },
                BatchOp::Adjust(delta) => match crate::domain::StockDelta::parse(delta) {
                    Ok(delta) => SkuCommand::Adjust {
                        location: item.location.clone(),
                        delta,
                        reason: reason.clone(),
                    },
                    // A zero adjustment changes nothing.
                    Err(_) => {
                        after.push((item.index, counters_at(next.as_ref(), &item.location)));
                        continue;
                    }
                },
            };
            // Counts and adjustments need no settled record.
            let executed = execute(&self.sku, &mut next, &command, now_ms, &limits, |_| {
                Ok::<_, std::convert::Infallible>(None)
            });
            let Ok(executed) = executed;
            match executed.answer {
                Ok(_) => {
                    events.extend(executed.events);
                    movements.extend(executed.movements);
                    settled.extend(executed.settled);
                    after.push((item.index, counters_at(next.as_ref(), &item.location)));
                }
                Err(rejection) => failures.push((item.clone(), ItemFailure::Refused(rejection))),
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
        let next = next.expect("the SKU exists");
        let ops = if events.is_empty() {
            Vec::new()
        } else {
            sku_change_ops(&SkuChange {
                after: &next,
                events: &events,
                settled: &settled,
                movements: &movements,
                transfers: &[],
                now_ms,
                by,
                settled_retention_ms: self.deps.settled_retention_ms,
            })
        };
        let staged = Staged {
            next,
            settled,
            events: events.clone(),
        };
        let domain_events = domain_events(&self.sku, events, movements, self.deps.publish_movements);
        Ok((
            staged,
            Prepared {
                ops,
                events: domain_events,
                after,
            },
        ))
    }
}

/// The events of one change as the log keeps them: the SKU's, then (when published) one per
/// ledger movement.
fn domain_events(
    sku: &SkuId,
    events: Vec<SkuEvent>,
    movements: Vec<Movement>,
    publish_movements: bool,
) -> Vec<DomainEvent> {
    let movements = movements.into_iter().filter(|_| publish_movements);
    events
        .into_iter()
        .map(|event| DomainEvent::Sku {
            sku: sku.clone(),
            event,
        })
        .chain(movements.map(|movement| DomainEvent::Movement {
            sku: sku.clone(),
            movement,
        }))
        .collect()
}

/// A SKU's state after its part of a batch, installed once the batch is written.
struct Staged {
    /// The state.
    next: SkuState,
    /// Holds that fell due and were expired in the batch.
    settled: Vec<Reservation>,
    /// The events, for the metrics.
    events: Vec<SkuEvent>,
}

/// `on_hand`, `reserved`, `committed` and `available` of a SKU at a location.
fn counters_at(state: Option<&SkuState>, location: &crate::domain::location::LocationId) -> [u64; 4] {
    let stock = state.map(|state| state.stock_at(location)).unwrap_or_default();
    [stock.on_hand, stock.reserved, stock.committed, stock.available()]
}

impl Handler<PrepareBatch> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: PrepareBatch, ctx: &mut Self::Context) {
        let PrepareBatch {
            items,
            reason,
            by,
            reply,
            outcome,
            slot,
        } = message;
        let Some(prepared) = self.guarded(ctx, |actor| actor.prepare_batch(&items, &reason, &by)) else {
            return;
        };
        let (staged, part) = match prepared {
            Ok(prepared) => prepared,
            Err(failures) => {
                let _ = reply.send(Err(failures));
                return;
            }
        };
        if reply.send(Ok(part)).is_err() {
            return;
        }
        // Nothing else runs on this SKU until the batch's outcome is known: its part was
        // worked out on this state, and must be installed on it or dropped.
        ctx.wait(
            actix::fut::wrap_future::<_, Self>(outcome).map(move |outcome, actor, ctx| {
                drop(slot);
                if let Ok(Some(ticket)) = outcome {
                    let Staged { next, settled, events } = staged;
                    actor.state = Some(next);
                    actor.last_ticket = actor.last_ticket.max(ticket);
                    record_event_metrics(&events);
                    // Holds that fell due were expired by the batch's change.
                    for record in settled {
                        if needs_index(actor.tag, &record.id) {
                            actor.deps.hold_index.remove(&record.id);
                        }
                        actor.recently_settled_order.push_back((ticket, record.id));
                        actor.recently_settled.insert(record.id, record);
                    }
                    if actor.deps.feed.is_watched(&actor.sku) {
                        if let Some(state) = &actor.state {
                            actor.feed_pending = Some((figures(state), ticket));
                        }
                    }
                    actor.schedule_expiry(ctx);
                    actor.schedule_feed(ctx);
                }
            }),
        );
    }
}

impl Handler<GetSku> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: GetSku, ctx: &mut Self::Context) {
        if let Some(value) = self.guarded(ctx, |actor| actor.state.as_ref().map(SkuState::view)) {
            let _ = message.reply.send(Acked {
                value,
                ticket: self.last_ticket,
            });
        }
    }
}

impl Handler<GetBackordered> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: GetBackordered, ctx: &mut Self::Context) {
        let id = message.id;
        let value = self.guarded(ctx, |actor| {
            actor.state.as_ref().map_or(0, |state| state.backordered_of(&id, None))
        });
        if let Some(value) = value {
            let _ = message.reply.send(Acked {
                value,
                ticket: self.last_ticket,
            });
        }
    }
}

impl Handler<GetLine> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: GetLine, ctx: &mut Self::Context) {
        let id = message.id;
        let value = self.guarded(ctx, |actor| {
            actor
                .state
                .as_ref()
                .map(|state| (state.hold(&id).map_or(0, |hold| hold.qty), state.view()))
        });
        if let Some(value) = value {
            let _ = message.reply.send(Acked {
                value,
                ticket: self.last_ticket,
            });
        }
    }
}

impl Handler<GetReservation> for SkuActor {
    type Result = ();

    fn handle(&mut self, message: GetReservation, ctx: &mut Self::Context) {
        let id = message.id;
        let value = self.guarded(ctx, |actor| {
            actor.prune_recently_settled();
            let held = actor
                .state
                .as_ref()
                .and_then(|state| state.hold(&id).map(|hold| state.held_reservation(hold)));
            match held {
                Some(reservation) => Ok(Some(reservation)),
                None => actor.settled_reservation(&id),
            }
        });
        if let Some(value) = value {
            let _ = message.reply.send(Acked {
                value,
                ticket: self.last_ticket,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::registry::SkuDirectory;
    #[allow(unused_imports)]
    use crate::domain::location::LocationId;
    #[allow(unused_imports)]
    use crate::domain::sku::stock::{at_default, Placement};
    use crate::domain::sku::Product;
    use crate::domain::{Currency, Name, Quantity, SystemClock};
    use crate::persistence::writer::LogStart;
    use crate::persistence::{Memtable, SledStore, StateView, Storage, Writer, WriterConfig};

    /// Corrupts the in-memory state, then panics: what a bug in a handler would do.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct CorruptAndPanic {
        slot: MailboxSlot,
    }

    impl Handler<CorruptAndPanic> for SkuActor {
        type Result = ();

        fn handle(&mut self, message: CorruptAndPanic, ctx: &mut Self::Context) {
            let _slot = message.slot;
            self.guarded(ctx, |actor| {
                if let Some(state) = &actor.state {
                    actor.state = Some(SkuState::created(state.sku().clone(), state.product().clone(), 999_999));
                }
                panic!("injected panic (expected by this test)");
            });
        }
    }

    /// A SKU actor over `storage`, on an arbiter of its own, with a writer whose fatal
    /// handler is `on_fatal`.
    struct Fixture {
        writer: Arc<Writer>,
        arbiter: Arbiter,
        _skus: SkuDirectory,
        mailbox: super::super::Mailbox<SkuActor>,
    }

    impl Fixture {
        fn start(storage: Arc<dyn Storage>, on_fatal: crate::persistence::writer::FatalHandler) -> Self {
            let memtable = Arc::new(Memtable::default());
            let config = WriterConfig {
                max_batch_items: 64,
                queue_capacity_items: 64,
            };
            let start = LogStart {
                next_position: 1,
                next_event_seq: 1,
            };
            let writer = Writer::start(Arc::clone(&storage), Arc::clone(&memtable), config, start, on_fatal).unwrap();
            let deps = Arc::new(SkuDeps {
                services: crate::actors::Services {
                    writer: Arc::clone(&writer),
                    store: StateView::new(storage, memtable),
                    clock: Arc::new(SystemClock),
                },
                limits: SkuLimits {
                    holds_max: 10,
                    ..SkuLimits::default()
                },
                locations: Arc::new(crate::locations::Locations::only_default()),
                publish_movements: true,
                settled_retention_ms: 60_000,
                hold_index: Arc::new(DashMap::new()),
                feed: Arc::default(),
            });
            let arbiter = Arbiter::new();
            let placement = crate::actors::registry::Placement::new(vec![arbiter.handle()]);
            let skus = SkuDirectory::new(placement, deps, 16);
            let mailbox = skus.get_or_start(&SkuId::parse("fragile").unwrap());
            Self {
                writer,
                arbiter,
                _skus: skus,
                mailbox,
            }
        }

        /// Runs `command` and returns its answer once durable.
        async fn run(&self, command: SkuCommand) -> SkuAnswer {
            let acked = self
                .mailbox
                .ask(|reply, slot| ExecuteSkuCommand {
                    command,
                    idempotency: None,
                    by: crate::access::by_system(),
                    reply,
                    slot,
                })
                .unwrap()
                .await
                .unwrap();
            self.writer.durability().wait(acked.ticket).await.unwrap();
            acked.value.expect("the SKU answers")
        }

        /// Creates the SKU with 10 on hand and holds 3.
        async fn create_and_hold_three(&self) {
            let product = Product {
                name: Name::parse("Vase", "name", "invalid_name").unwrap(),
                price_minor: 5000,
                currency: Currency::parse("EUR").unwrap(),
            };
            self.run(SkuCommand::Upsert {
                product,
                on_hand: Some(10),
                low_stock_threshold: None,
                backorder_limit: None,
                available_from_ms: None,
            })
            .await
            .expect("created");
            self.run(SkuCommand::Reserve {
                placement: Placement::Any,
                id: ReservationId::generate(),
                qty: Quantity::parse(3, 100).unwrap(),
                ttl_ms: 600_000,
            })
            .await
            .expect("reserved");
        }

        fn panic_it(&self) {
            self.mailbox
                .ask(|_: tokio::sync::oneshot::Sender<()>, slot| CorruptAndPanic { slot })
                .unwrap();
        }

        fn stop(self) {
            self.arbiter.stop();
            self.writer.close();
        }
    }

    #[actix_rt::test]
    async fn a_panicking_actor_is_restarted_from_its_persisted_state_and_counted() {
        let metrics = crate::metrics::install();
        // The recorder is the process's, shared with tests running alongside: read the
        // counter before and after instead of expecting a fixed figure.
        let restarts = || {
            metrics
                .render()
                .lines()
                .find_map(|line| line.strip_prefix("stockroom_actor_restarts_total{kind=\"sku\"} "))
                .map_or(0, |value| value.trim().parse::<u64>().unwrap())
        };
        let restarts_before = restarts();
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let fixture = Fixture::start(storage, Arc::new(|_| {}));
        fixture.create_and_hold_three().await;
        fixture.panic_it();
        let view = fixture
            .mailbox
            .ask(|reply, slot| GetSku { reply, slot })
            .unwrap()
            .await
            .unwrap()
            .value
            .expect("the SKU is back");
        assert_eq!(
            (view.on_hand, view.reserved),
            (10, 3),
            "reloaded from storage, not the corrupted memory"
        );
        let after = fixture
            .run(SkuCommand::Reserve {
                placement: Placement::Any,
                id: ReservationId::generate(),
                qty: Quantity::parse(7, 100).unwrap(),
                ttl_ms: 600_000,
            })
            .await;
        assert!(
            matches!(after, Ok(SkuOutcome::Reservation(_))),
            "the restarted actor serves"
        );
        assert!(restarts() > restarts_before, "the restart is counted");
        fixture.stop();
    }

    #[actix_rt::test]
    async fn a_reload_that_cannot_read_the_store_takes_the_fatal_path_and_acknowledges_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(crate::persistence::StoreFaults::default());
        let storage: Arc<dyn Storage> = Arc::new(crate::persistence::FaultyStore::new(
            Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap()),
            Arc::clone(&faults),
        ));
        let (fatal_sender, mut fatal) = tokio::sync::mpsc::unbounded_channel();
        let fixture = Fixture::start(
            storage,
            Arc::new(move |error| {
                let _ = fatal_sender.send(error.to_string());
            }),
        );
        fixture.create_and_hold_three().await;
        faults.fail_reads.store(true, std::sync::atomic::Ordering::SeqCst);
        // Before the fix the reload called `process::exit`: this test process would end here.
        fixture.panic_it();
        let reason = fatal.recv().await.expect("the fatal handler runs");
        assert!(reason.contains("read failed"), "{reason}");
        assert!(
            fixture.writer.try_reserve().is_none(),
            "nothing more is accepted, so nothing more is acknowledged"
        );
        fixture.stop();
    }
    #[actix_rt::test]
    async fn the_stock_feed_keeps_publishing_after_the_actor_panics_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        let fixture = Fixture::start(storage, Arc::new(|_| {}));
        fixture.create_and_hold_three().await;
        let (sender, mut updates) = tokio::sync::mpsc::channel(16);
        let sku = SkuId::parse("fragile").unwrap();
        let feed = Arc::clone(&fixture._skus.deps().feed);
        feed.watch(sku, sender, Arc::default());
        let reserve = |units: i64| SkuCommand::Reserve {
            placement: Placement::Any,
            id: ReservationId::generate(),
            qty: Quantity::parse(units, 100).unwrap(),
            ttl_ms: 600_000,
        };
        // A publication is pending (its coalescing window has begun) when the actor panics.
        fixture.run(reserve(1)).await.expect("reserved");
        fixture.panic_it();
        fixture.run(reserve(2)).await.expect("the restarted actor serves");
        let deadline = std::time::Duration::from_secs(10);
        loop {
            let update = tokio::time::timeout(deadline, updates.recv())
                .await
                .expect("the feed publishes after the restart")
                .expect("the feed is open");
            if update.available == 4 {
                break;
            }
        }
        fixture.stop();
    }
}
