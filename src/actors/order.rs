//! `OrderActor`: the single writer of one order.
//!
//! Status changes follow the legal moves of [`OrderStatus`]. Cancelling (or expiring unpaid)
//! writes the new status first, then returns each line's committed reservation at its SKU,
//! then records `stock_returned`; an order found owing stock at start (a crash in between)
//! returns it again, which the SKUs make idempotent. An order that has settled and sits idle
//! stops, and is loaded from the store when asked for again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::mailbox::MailboxSlot;
use super::mailbox::{Acked, Reply};
use super::registry::{OrderContext, OrderDirectory};
use super::timer::DueTimer;
use super::{persist, Access};
use crate::access::{by_system, By};
use sha2::{Digest, Sha256};

use crate::domain::ids::{FulfilmentId, ReturnId};
use crate::domain::location::LocationId;
use crate::domain::order::{HistoryEntry, Order, OrderRejection, OrderStatus, StepKind, UnitsOf};
use crate::domain::sku::{Reservation, SkuCommand, SkuRejection};
use crate::domain::{DomainEvent, OrderEvent};
use crate::idempotency::{Admission, IdempotencyDraft};
use crate::metrics as names;
use crate::persistence::{codec, keys, Op, Ticket};

/// Why an order request produced no order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFailure {
    /// No such order for these credentials.
    NotFound,
    /// The move is not legal from the current status.
    Rejected(OrderRejection),
    /// A queue was full; retry.
    Overloaded,
    /// The move is legal, but not for these credentials (a shopper cancelling a paid order).
    Forbidden,
}

/// The answer to an order request.
pub type OrderReply = Result<Order, OrderFailure>;

/// What to do to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderAction {
    /// `placed -> paid`, recording the payment reference.
    Pay {
        /// The payment provider's reference.
        payment_ref: String,
    },
    /// `placed -> paid` asked for by the shopper, in a demo store (`ui.demo_payments`; the
    /// HTTP layer checks the setting): the payment reference is `demo`.
    DemoPay,
    /// `placed | paid -> cancelled`; the stock goes back.
    Cancel,
    /// A staff move to `status` (`expired`, `placed` and the moves of fulfilments and
    /// returns are the server's own; `shipped` ships whatever is left).
    SetStatus(OrderStatus),
    /// Ships units from a location.
    Fulfil {
        /// Where from.
        location: LocationId,
        /// What.
        lines: Vec<UnitsOf>,
    },
    /// Takes delivered units back at a location.
    TakeBack {
        /// Where.
        location: LocationId,
        /// Back on the shelf, or written off.
        restock: bool,
        /// What.
        lines: Vec<UnitsOf>,
    },
}

/// Reads the order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetOrder {
    /// The caller's credentials.
    pub access: Access,
    /// Where to answer.
    pub reply: Reply<OrderReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Subscribes a tracking connection: answers the order as it stands, then sends every later
/// change to `sender`, in order, once it is durable. A connection whose buffer is full is
/// dropped and `kicked` is set, so it can be closed as a slow consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackOrder {
    /// The caller's credentials.
    pub access: Access,
    /// Where changes go (bounded).
    pub sender: mpsc::Sender<HistoryEntry>,
    /// Set when the connection is dropped for falling behind.
    pub kicked: Arc<AtomicBool>,
    /// Most tracking connections on one order.
    pub per_order_max: usize,
    /// Where to answer.
    pub reply: Reply<Result<Order, TrackFailure>>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Why a tracking connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackFailure {
    /// No such order for these credentials.
    NotFound,
    /// The order has the configured maximum of tracking connections.
    TooMany,
}

/// A tracking connection of an order.
struct Subscriber {
    sender: mpsc::Sender<HistoryEntry>,
    kicked: Arc<AtomicBool>,
}

/// Changes the order's status.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangeOrder {
    /// The caller's credentials.
    pub access: Access,
    /// What to do.
    pub action: OrderAction,
    /// Store the answer under this idempotency key.
    pub idempotency: Option<IdempotencyDraft<OrderReply>>,
    /// Who asked (recorded with the events).
    pub by: By,
    /// Where to answer.
    pub reply: Reply<OrderReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// The actor that owns one order.
pub struct OrderActor {
    /// The order, as last written.
    order: Order,
    /// What the order reaches: services, SKUs, limits.
    context: Arc<OrderContext>,
    /// Its own directory, to leave it when stopping.
    directory: Weak<OrderDirectory>,
    /// The payment timeout, or the retry of returning stock.
    timer: DueTimer,
    /// When the order was last asked for, to stop it once settled and idle.
    last_used_ms: u64,
    /// The ticket of the last change this actor wrote: reads wait for it.
    last_ticket: Ticket,
    /// Tracking connections.
    subscribers: Vec<Subscriber>,
    /// The simulator's next step, when the simulator is on.
    simulated_step: Option<SpawnHandle>,
}

impl OrderActor {
    /// An actor for `order`.
    pub fn new(order: Order, context: Arc<OrderContext>, directory: Weak<OrderDirectory>) -> Self {
        Self {
            order,
            context,
            directory,
            timer: DueTimer::default(),
            last_used_ms: 0,
            last_ticket: 0,
            subscribers: Vec::new(),
            simulated_step: None,
        }
    }

    fn run<F, Fut>(&mut self, ctx: &mut Context<Self>, reply: Option<Reply<OrderReply>>, flow: F)
    where
        F: FnOnce(Arc<OrderContext>, Order) -> Fut,
        Fut: std::future::Future<Output = (Order, OrderReply, Ticket)> + 'static,
    {
        let flow = flow(Arc::clone(&self.context), self.order.clone());
        let durability = Arc::clone(self.context.services.writer.durability());
        // The mailbox waits until the change is durable: then its tracking messages can go.
        let future = async move {
            let (order, value, ticket) = flow.await;
            let durable = durability.wait(ticket).await.is_ok();
            (order, value, ticket, durable)
        };
        ctx.wait(
            future
                .into_actor(self)
                .map(move |(order, value, ticket, durable), actor, ctx| {
                    let seen = actor.order.seq();
                    actor.order = order;
                    if durable {
                        actor.notify_after(seen);
                    }
                    actor.last_ticket = actor.last_ticket.max(ticket);
                    if let Some(reply) = reply {
                        let _ = reply.send(Acked {
                            value,
                            ticket: actor.last_ticket,
                        });
                    }
                    actor.arm_timer(ctx);
                    actor.simulate(ctx);
                }),
        );
    }

    /// Arms the payment timeout, or a retry of returning stock.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.context.services.clock.now_ms();
        let due_ms = if self.order.owes_stock() {
            now_ms
        } else if self.order.status() == OrderStatus::Placed {
            self.order.payment_due_ms
        } else {
            return self.timer.cancel(ctx);
        };
        self.timer.arm(
            ctx,
            now_ms,
            due_ms,
            |actor| &mut actor.timer,
            |actor, ctx| {
                if actor.order.owes_stock() {
                    actor.run(ctx, None, |context, order| pay_stock_debts(context, order, by_system()));
                } else if actor.order.status() == OrderStatus::Placed {
                    actor.run(ctx, None, |context, order| change(context, order, Change::Expire, None));
                }
            },
        );
    }

    /// With the simulator on, moves a paid, packed or shipped order one step on after a
    /// random delay.
    fn simulate(&mut self, ctx: &mut Context<Self>) {
        let Some((min_ms, max_ms)) = self.context.limits.simulator_step_delay_ms else {
            return;
        };
        let next = match self.order.status() {
            OrderStatus::Paid => OrderStatus::Packed,
            OrderStatus::Packed => OrderStatus::Shipped,
            OrderStatus::Shipped => OrderStatus::Delivered,
            _ => return,
        };
        if self.simulated_step.is_some() {
            return;
        }
        let delay_ms = rand::Rng::random_range(&mut rand::rng(), min_ms..=max_ms);
        self.simulated_step = Some(ctx.run_later(Duration::from_millis(delay_ms), move |actor, ctx| {
            actor.simulated_step = None;
            if actor.order.status().can_move_to(next) {
                actor.run(ctx, None, move |context, order| {
                    let action = OrderAction::SetStatus(next);
                    let by = by_system();
                    change(
                        context,
                        order,
                        Change::Request {
                            action,
                            shopper: false,
                            by,
                        },
                        None,
                    )
                });
            }
        }));
    }

    /// Sends every change after `seen` to the tracking connections; drops those that fell
    /// behind (their buffer is full) or went away.
    fn notify_after(&mut self, seen: u64) {
        let fresh: Vec<HistoryEntry> = self
            .order
            .history
            .iter()
            .filter(|entry| entry.seq > seen)
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        let now_ms = self.context.services.clock.now_ms();
        self.subscribers.retain(|subscriber| {
            for entry in &fresh {
                match subscriber.sender.try_send(entry.clone()) {
                    Ok(()) => {
                        let latency_ms = now_ms.saturating_sub(entry.at_ms);
                        metrics::histogram!(names::WS_FANOUT_SECONDS, "kind" => "orders")
                            .record(latency_ms as f64 / 1000.0);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        subscriber.kicked.store(true, Ordering::SeqCst);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    fn touch(&mut self) {
        self.last_used_ms = self.context.services.clock.now_ms();
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0);
        self.touch();
        if self.order.owes_stock() {
            self.run(ctx, None, |context, order| pay_stock_debts(context, order, by_system()));
        } else {
            self.arm_timer(ctx);
        }
        self.simulate(ctx);
        let idle_ms = self.context.limits.idle_stop_ms;
        let every = Duration::from_millis((idle_ms / 2).max(100));
        ctx.run_interval(every, move |actor, ctx| {
            let now_ms = actor.context.services.clock.now_ms();
            actor.subscribers.retain(|subscriber| !subscriber.sender.is_closed());
            let watched = !actor.subscribers.is_empty();
            let settled = actor.order.status().is_settled() && !actor.order.owes_stock() && !watched;
            if settled && now_ms.saturating_sub(actor.last_used_ms) >= idle_ms {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Some(directory) = self.directory.upgrade() {
            directory.forget(&self.order.id, &ctx.address());
        }
    }
}

impl Handler<GetOrder> for OrderActor {
    type Result = ();

    fn handle(&mut self, message: GetOrder, _ctx: &mut Self::Context) {
        self.touch();
        let value = if message.access.allows(&self.order.token_hash) {
            Ok(self.order.clone())
        } else {
            Err(OrderFailure::NotFound)
        };
        let _ = message.reply.send(Acked {
            value,
            ticket: self.last_ticket,
        });
    }
}

impl Handler<TrackOrder> for OrderActor {
    type Result = ();

    fn handle(&mut self, message: TrackOrder, _ctx: &mut Self::Context) {
        self.touch();
        let value = if !message.access.allows(&self.order.token_hash) {
            Err(TrackFailure::NotFound)
        } else {
            self.subscribers.retain(|subscriber| !subscriber.sender.is_closed());
            if self.subscribers.len() >= message.per_order_max {
                Err(TrackFailure::TooMany)
            } else {
                self.subscribers.push(Subscriber {
                    sender: message.sender,
                    kicked: message.kicked,
                });
                Ok(self.order.clone())
            }
        };
        let _ = message.reply.send(Acked {
            value,
            ticket: self.last_ticket,
        });
    }
}

impl Handler<ChangeOrder> for OrderActor {
    type Result = ();

    fn handle(&mut self, message: ChangeOrder, ctx: &mut Self::Context) {
        self.touch();
        let ChangeOrder {
            access,
            action,
            idempotency,
            by,
            reply,
            slot: _slot,
        } = message;
        if !access.allows(&self.order.token_hash) {
            let _ = reply.send(Acked {
                value: Err(OrderFailure::NotFound),
                ticket: 0,
            });
            return;
        }
        let shopper = access.is_cart_token();
        self.run(ctx, Some(reply), move |context, order| {
            change(context, order, Change::Request { action, shopper, by }, idempotency)
        });
    }
}

/// A change asked for by a client (a shopper with a cart token, or staff), or the payment
/// timeout.
enum Change {
    Request { action: OrderAction, shopper: bool, by: By },
    Expire,
}

async fn change(
    context: Arc<OrderContext>,
    mut order: Order,
    change: Change,
    idempotency: Option<IdempotencyDraft<OrderReply>>,
) -> (Order, OrderReply, Ticket) {
    let deps = context.services.clone();
    let by = match &change {
        Change::Request { by, .. } => Arc::clone(by),
        Change::Expire => by_system(),
    };
    // Steps owed by an earlier change go first: this one may build on them.
    let mut ticket = 0;
    if !order.pending.is_empty() {
        let (settled, done, written) = settle_steps(&context, order, &by).await;
        order = settled;
        ticket = written;
        if !done {
            return (order, Err(OrderFailure::Overloaded), ticket);
        }
    }
    let ships = matches!(
        &change,
        Change::Request {
            action: OrderAction::Fulfil { .. } | OrderAction::SetStatus(OrderStatus::Shipped),
            ..
        }
    );
    if ships && !learn_parts(&context, &mut order) {
        return (order, Err(OrderFailure::Overloaded), ticket);
    }
    // Backordered units do not ship until a restock fills them.
    let mut waiting = Vec::new();
    if ships {
        for line in &order.lines {
            match context.skus.backordered(&line.sku, line.reservation).await {
                Ok(units) => waiting.push(units),
                Err(_) => return (order, Err(OrderFailure::Overloaded), ticket),
            }
        }
    }
    let now_ms = deps.clock.now_ms();
    let from = order.status();
    let seen = order.seq();
    let (fulfilments_before, returns_before) = (order.fulfilments.len(), order.returns.len());
    let previous = order.clone();
    let reply = decide(&mut order, &change, &waiting, now_ms);
    if reply.is_err() {
        order = previous.clone();
    }
    let mut ops = Vec::new();
    let mut events = Vec::new();
    if reply.is_ok() {
        ops.push(Op::Put(keys::order(&order.id), codec::encode_versioned(&order)));
        if order.status().is_settled() && !order.owes_stock() && !from.is_settled() {
            ops.push(settled_order_op(&context, &order, now_ms));
        }
        for fulfilment in &order.fulfilments[fulfilments_before..] {
            events.push(DomainEvent::Order {
                order: order.id,
                event: OrderEvent::Fulfilled {
                    fulfilment: fulfilment.clone(),
                },
            });
        }
        for taken in &order.returns[returns_before..] {
            events.push(DomainEvent::Order {
                order: order.id,
                event: OrderEvent::ReturnReceived { taken: taken.clone() },
            });
        }
        for entry in order.history.iter().filter(|entry| entry.seq > seen) {
            events.push(DomainEvent::Order {
                order: order.id,
                event: OrderEvent::StatusChanged {
                    seq: entry.seq,
                    status: entry.status,
                },
            });
        }
    }
    let mut in_flight = None;
    if let Some(draft) = idempotency {
        let (answer_ops, mark) = draft.stage(&reply, now_ms);
        ops.extend(answer_ops);
        in_flight = Some(mark);
    }
    if ops.is_empty() {
        return (order, reply, ticket);
    }
    let Some(written) = persist(&deps.writer, ops, events, now_ms, &by) else {
        return (previous, Err(OrderFailure::Overloaded), ticket);
    };
    ticket = ticket.max(written);
    if let Some(mark) = in_flight {
        mark.release_when_durable(deps.writer.durability(), ticket);
    }
    let to = order.status();
    if reply.is_ok() && to != from {
        metrics::gauge!(names::ORDERS, "status" => from.as_str()).decrement(1.0);
        metrics::gauge!(names::ORDERS, "status" => to.as_str()).increment(1.0);
    }
    if !order.owes_stock() {
        return (order, reply, ticket);
    }
    // The change stands (it is written); the stock follows now, or on a retry.
    let (order, _, owed) = pay_stock_debts(context, order, by).await;
    let reply = reply.map(|_| order.clone());
    (order, reply, ticket.max(owed))
}

/// Applies `change` to `order` (which it may leave half-changed when it refuses: the caller
/// keeps the order from before).
fn decide(order: &mut Order, change: &Change, waiting: &[u64], now_ms: u64) -> OrderReply {
    let from = order.status();
    let (action, shopper) = match change {
        Change::Expire if now_ms < order.payment_due_ms => {
            return Err(OrderFailure::Rejected(OrderRejection::InvalidTransition {
                from,
                to: OrderStatus::Expired,
            }))
        }
        Change::Expire => {
            order
                .move_to(OrderStatus::Expired, now_ms)
                .map_err(OrderFailure::Rejected)?;
            return Ok(order.clone());
        }
        Change::Request { action, shopper, .. } => (action, *shopper),
    };
    // Shipping, taking back and cancelling what is left are the shop's, never the shopper's.
    let staff_only = || if shopper { Err(OrderFailure::Forbidden) } else { Ok(()) };
    let rejected = OrderFailure::Rejected;
    match action {
        OrderAction::Fulfil { location, lines } => {
            staff_only()?;
            order
                .fulfil(
                    FulfilmentId::generate(),
                    location.clone(),
                    lines.clone(),
                    waiting,
                    now_ms,
                )
                .map_err(rejected)?;
        }
        OrderAction::TakeBack {
            location,
            restock,
            lines,
        } => {
            staff_only()?;
            order
                .take_back(ReturnId::generate(), location.clone(), *restock, lines.clone(), now_ms)
                .map_err(rejected)?;
        }
        OrderAction::Cancel if from == OrderStatus::PartiallyShipped => {
            staff_only()?;
            order.cancel_rest(now_ms).map_err(rejected)?;
        }
        // Shipping by status ships whatever is left, from where it is committed.
        OrderAction::SetStatus(OrderStatus::Shipped) if from.can_move_to(OrderStatus::Shipped) && !shopper => {
            for (location, lines) in order.rest_by_location() {
                order
                    .fulfil(FulfilmentId::generate(), location, lines, waiting, now_ms)
                    .map_err(rejected)?;
            }
            if order.status() != OrderStatus::Shipped {
                order.move_to(OrderStatus::Shipped, now_ms).map_err(rejected)?;
            }
        }
        OrderAction::Pay { .. } | OrderAction::DemoPay | OrderAction::Cancel | OrderAction::SetStatus(_) => {
            let to = match action {
                OrderAction::Pay { .. } | OrderAction::DemoPay => OrderStatus::Paid,
                OrderAction::SetStatus(status) => *status,
                _ => OrderStatus::Cancelled,
            };
            if !to.may_be_asked_for() {
                return Err(rejected(OrderRejection::InvalidTransition { from, to }));
            }
            let demo = matches!(action, OrderAction::DemoPay);
            if shopper && !demo && from.can_move_to(to) && !from.shopper_may_move_to(to) {
                return Err(OrderFailure::Forbidden);
            }
            order.move_to(to, now_ms).map_err(rejected)?;
            match action {
                OrderAction::Pay { payment_ref } => order.payment_ref = Some(payment_ref.clone()),
                OrderAction::DemoPay => order.payment_ref = Some("demo".to_owned()),
                _ => {}
            }
        }
    }
    Ok(order.clone())
}

/// Fills in where the units of lines from an order placed before fulfilment are committed,
/// from their reservations. `false` when the store could not be read.
fn learn_parts(context: &OrderContext, order: &mut Order) -> bool {
    for index in 0..order.lines.len() {
        if order.progress[index].parts.is_some() {
            continue;
        }
        let key = keys::reservation(&order.lines[index].reservation);
        let parts = match context.services.store.get_versioned::<Reservation>(&key) {
            Ok(Some(record)) if record.state.is_sold() => record.parts,
            // Gone (kept for a while only, by releases before fulfilment, whose units left
            // the shelf when sold) or given back: nothing left on a shelf for this line.
            Ok(_) => Vec::new(),
            Err(_) => return false,
        };
        let left = order.left_to_ship(index);
        // What the record has not shipped, from the order's point of view.
        order.progress[index].parts = Some(if parts.iter().map(|part| part.qty).sum::<u64>() == left {
            parts
        } else {
            crate::domain::sku::stock::at_default(left)
        });
    }
    true
}

/// Settles what the order owes its SKUs: the steps it wrote (shipments, returns), then the
/// units of cancelled lines, or a cancelled order's stock.
async fn pay_stock_debts(context: Arc<OrderContext>, order: Order, by: By) -> (Order, OrderReply, Ticket) {
    let (order, done, ticket) = settle_steps(&context, order, &by).await;
    if !done {
        return (order, Err(OrderFailure::Overloaded), ticket);
    }
    let cancelled = matches!(order.status(), OrderStatus::Cancelled | OrderStatus::Expired);
    if order.release_pending || (cancelled && !order.stock_returned) {
        let (order, reply, returned) = return_stock(context, order, by).await;
        return (order, reply, ticket.max(returned));
    }
    (order.clone(), Ok(order), ticket)
}

/// Makes every pending stock step once, each under an idempotency key of its own (so a step
/// repeated after a crash is not made twice), then writes the order without them. `false`
/// when a step could not be made now (a full queue); the order keeps them for a retry.
async fn settle_steps(context: &OrderContext, mut order: Order, by: &By) -> (Order, bool, Ticket) {
    if order.pending.is_empty() {
        return (order, true, 0);
    }
    let deps = &context.services;
    let mut ticket = 0;
    for step in &order.pending {
        let key = format!("{}/{}", order.id, step.key);
        // The key names the step (the order, its fulfilment or return, the line): nothing
        // else can be sent under it.
        let fingerprint: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let draft = match context.steps.admit("order-steps", &key, fingerprint) {
            Ok(Admission::Replay(_)) => continue,
            Ok(Admission::Proceed(mark)) => crate::idempotency::IdempotencyDraft::new(
                mark,
                fingerprint,
                step_render,
                context.limits.step_retention_ms,
            ),
            Err(_) => return (order, false, ticket),
        };
        let command = match step.kind {
            StepKind::Ship => SkuCommand::Ship {
                id: step.reservation,
                location: step.location.clone(),
                qty: step.qty,
            },
            StepKind::TakeBack { restock } => SkuCommand::TakeBack {
                id: step.reservation,
                location: step.location.clone(),
                qty: step.qty,
                restock,
            },
        };
        match context.skus.command_keyed(&step.sku, command, by, Some(draft)).await {
            Ok((Ok(Ok(_)), done)) => ticket = ticket.max(done),
            Ok((Ok(Err(rejection)), done)) => {
                // The SKU cannot make it (its record is gone, say): nothing more to do.
                ticket = ticket.max(done);
                tracing::warn!(order = %order.id, sku = %step.sku, ?rejection, "a stock step was refused");
            }
            Ok((Err(_), _)) | Err(_) => return (order, false, ticket),
        }
    }
    let now_ms = deps.clock.now_ms();
    let previous = order.clone();
    order.pending.clear();
    // (An order that settles with steps owed was already given its retention: only
    // delivered orders take returns.)
    let ops = vec![Op::Put(keys::order(&order.id), codec::encode_versioned(&order))];
    match persist(&deps.writer, ops, Vec::new(), now_ms, by) {
        Some(written) => (order, true, ticket.max(written)),
        None => (previous, false, ticket),
    }
}

/// What a stock step's idempotency record keeps: only that it was made.
fn step_render(_: &crate::actors::sku::SkuAnswer) -> (u16, Vec<u8>) {
    (200, Vec::new())
}

/// The retention of an order that settled (delivered, or its stock went back): its row goes
/// once `order.settled_retention_hours` have passed.
fn settled_order_op(context: &OrderContext, order: &Order, now_ms: u64) -> Op {
    let due_ms = now_ms.saturating_add(context.limits.settled_retention_ms);
    Op::Put(keys::expiring(due_ms, &keys::order(&order.id)), Vec::new())
}

/// Returns every line's committed units to its SKU, then records that the stock is back.
async fn return_stock(context: Arc<OrderContext>, mut order: Order, by: By) -> (Order, OrderReply, Ticket) {
    let deps = context.services.clone();
    let mut ticket = 0;
    for line in &order.lines {
        match context
            .skus
            .command(&line.sku, SkuCommand::Return { id: line.reservation }, &by)
            .await
        {
            Ok((Ok(Ok(_)), done)) => ticket = ticket.max(done),
            Ok((Ok(Err(rejection)), _)) => {
                // Returned already (a retry), or its record is gone: nothing more to give back.
                if rejection != SkuRejection::ReservationNotFound && rejection != SkuRejection::ReservationNotCommitted
                {
                    tracing::warn!(order = %order.id, sku = %line.sku, ?rejection, "a line's stock could not be returned");
                }
            }
            Ok((Err(_), _)) | Err(_) => return (order, Err(OrderFailure::Overloaded), ticket),
        }
    }
    let now_ms = deps.clock.now_ms();
    let cancelled = matches!(order.status(), OrderStatus::Cancelled | OrderStatus::Expired);
    let previous = order.clone();
    order.stock_returned = cancelled;
    order.release_pending = false;
    let mut ops = vec![Op::Put(keys::order(&order.id), codec::encode_versioned(&order))];
    if cancelled {
        ops.push(settled_order_op(&context, &order, now_ms));
    }
    let events = vec![DomainEvent::Order {
        order: order.id,
        event: OrderEvent::StockReturned,
    }];
    match persist(&deps.writer, ops, events, now_ms, &by) {
        Some(written) => (order.clone(), Ok(order), ticket.max(written)),
        None => (previous, Err(OrderFailure::Overloaded), ticket),
    }
}
