//! `CartActor`: the single writer of one cart, and the coordinator of its checkout saga.
//!
//! A cart's line quantities live at the SKUs, as holds with ids derived from (cart, SKU,
//! attempt), so the cart and the stock never disagree. Every step the cart asks of a SKU is
//! idempotent (set a hold to a quantity, extend it, commit it, return it), which makes the
//! saga safe to run again after a crash.
//!
//! Work that needs other actors runs inside `ctx.wait` on a copy of the cart: the mailbox is
//! held until the flow ends, then the copy becomes the cart. The answer carries the ticket of
//! the flow's last write; since tickets are one global order, waiting for it covers the SKU
//! changes made before it.
//!
//! Checkout: record `checking_out(order)`, commit each line's hold, then either write the
//! order and `checked_out` in one batch, or return what was committed and reopen the cart
//! with a new attempt. A cart found `checking_out` at start (a crash mid-saga) runs the saga
//! again before anything else.

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use super::mailbox::{Acked, Reply};
use super::mailbox::{AskError, MailboxSlot};
use super::registry::{CartContext, CartDirectory};
use super::sku::{SkuFailure, SkuOutcome};
use super::timer::DueTimer;
use super::{persist, Access};
use crate::access::{by_system, By};
use crate::domain::cart::{
    price_lines, Cart, CartRejection, CartStatus, CheckoutEnd, CheckoutFailure, CheckoutStart, LineAtSku, LineChange,
    LineCommit, OrderDetails,
};
pub use crate::domain::cart::{LineFailure, PricedLine};
use crate::domain::order::Order;
use crate::domain::sku::{Placement, SkuView};
use crate::domain::sku::{Reservation, ReservationState, SkuCommand, SkuRejection};
use crate::domain::{CartEvent, DomainEvent, OrderEvent};
use crate::domain::{OrderId, ReservationId, SkuId};
use crate::idempotency::IdempotencyDraft;
use crate::metrics as names;
use crate::persistence::{codec, keys, Op, Ticket};

/// A cart with its lines read from the SKUs, priced now.
#[derive(Debug, Clone)]
pub struct CartView {
    /// The cart.
    pub cart: Cart,
    /// Lines holding stock.
    pub lines: Vec<PricedLine>,
    /// Sum of the line totals.
    pub total_minor: u64,
    /// The SKUs' display names, by SKU, as read with the lines.
    pub names: Vec<(SkuId, crate::domain::Name)>,
}

/// What a cart request produced.
#[derive(Debug, Clone)]
pub enum CartOutcome {
    /// The cart after the request.
    Cart(CartView),
    /// The order checkout placed.
    Order(Order),
    /// The order this cart was checked out into earlier (checkout is idempotent per cart:
    /// a repeat, or a retry after a crash, learns its order).
    CheckedOutBefore(Order),
}

/// Why a cart request produced no outcome.
#[derive(Debug, Clone)]
pub enum CartFailure {
    /// No such cart for these credentials (another cart's token sees nothing).
    NotFound,
    /// The cart refused (closed, empty, too many lines, another currency, no such line).
    Rejected(CartRejection),
    /// The SKU refused (not enough stock, no such SKU).
    Stock(SkuRejection),
    /// Checkout could not commit these lines (with why); what was committed went back.
    CheckoutFailed(Vec<(SkuId, LineFailure)>),
    /// A queue was full; retry.
    Overloaded,
}

/// The answer to a cart request.
pub type CartReply = Result<CartOutcome, CartFailure>;

/// Reads the cart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetCart {
    /// The caller's credentials.
    pub access: Access,
    /// Where to answer.
    pub reply: Reply<CartReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Sets a line's quantity (0 removes it), holding or releasing the difference at the SKU.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCartLine {
    /// The caller's credentials.
    pub access: Access,
    /// The SKU.
    pub sku: SkuId,
    /// Units wanted; 0 removes the line.
    pub qty: u64,
    /// Where units the line adds may be held.
    pub placement: Placement,
    /// Store the answer under this idempotency key.
    pub idempotency: Option<IdempotencyDraft<CartReply>>,
    /// Who asked (recorded with the events).
    pub by: By,
    /// Where to answer.
    pub reply: Reply<CartReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// Checks the cart out into an order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckoutCart {
    /// The caller's credentials.
    pub access: Access,
    /// Who orders, and the shop's metadata, for the order.
    pub details: OrderDetails,
    /// Store the answer under this idempotency key.
    pub idempotency: Option<IdempotencyDraft<CartReply>>,
    /// Who asked (recorded with the events).
    pub by: By,
    /// Where to answer.
    pub reply: Reply<CartReply>,
    /// This message's place in the bounded mailbox.
    pub slot: MailboxSlot,
}

/// The actor that owns one cart.
pub struct CartActor {
    /// The cart, as last written.
    cart: Cart,
    /// What the cart reaches: services, SKUs, orders, limits.
    context: Arc<CartContext>,
    /// Its own directory, to leave it when stopping.
    directory: Weak<CartDirectory>,
    /// The timer that expires the cart (or retries its saga).
    expiry_timer: DueTimer,
    /// The ticket of the last change this actor wrote: reads wait for it.
    last_ticket: Ticket,
    /// When the cart was last asked for, to stop it once settled and idle.
    last_used_ms: u64,
}

impl CartActor {
    /// An actor for `cart`.
    pub fn new(cart: Cart, context: Arc<CartContext>, directory: Weak<CartDirectory>) -> Self {
        Self {
            cart,
            context,
            directory,
            expiry_timer: DueTimer::default(),
            last_ticket: 0,
            last_used_ms: 0,
        }
    }

    /// Runs `flow` on a copy of the cart while holding the mailbox, then adopts the copy and
    /// answers. `reply` may be absent (timers, recovery).
    fn run<R, F, Fut>(&mut self, ctx: &mut Context<Self>, reply: Option<Reply<R>>, flow: F)
    where
        R: 'static,
        F: FnOnce(Arc<CartContext>, Cart) -> Fut,
        Fut: std::future::Future<Output = (Cart, R, Ticket)> + 'static,
    {
        self.last_used_ms = self.context.services.clock.now_ms();
        let future = flow(Arc::clone(&self.context), self.cart.clone());
        ctx.wait(future.into_actor(self).map(move |(cart, value, ticket), actor, ctx| {
            actor.cart = cart;
            actor.last_ticket = actor.last_ticket.max(ticket);
            if let Some(reply) = reply {
                let _ = reply.send(Acked {
                    value,
                    ticket: actor.last_ticket,
                });
            }
            actor.after_change(ctx);
        }));
    }

    /// Arms the expiry timer, or the retry of an interrupted checkout.
    fn after_change(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.context.services.clock.now_ms();
        let due_ms = match self.cart.status {
            CartStatus::Open => self.cart.expires_ms,
            // Retried soon; an armed retry stands.
            CartStatus::CheckingOut(_) => now_ms,
            CartStatus::CheckedOut(_) | CartStatus::Expired => return self.expiry_timer.cancel(ctx),
        };
        self.expiry_timer.arm(
            ctx,
            now_ms,
            due_ms,
            |actor| &mut actor.expiry_timer,
            |actor, ctx| match actor.cart.status {
                CartStatus::Open => actor.run(ctx, None, expire),
                CartStatus::CheckingOut(order) => actor.run(ctx, None, move |context, cart| {
                    saga(context, cart, order, None, by_system())
                }),
                _ => {}
            },
        );
    }

    /// Runs `flow` for a caller allowed to use this cart; others see no cart at all (404).
    fn serve<F, Fut>(&mut self, ctx: &mut Context<Self>, access: Access, reply: Reply<CartReply>, flow: F)
    where
        F: FnOnce(Arc<CartContext>, Cart) -> Fut,
        Fut: std::future::Future<Output = (Cart, CartReply, Ticket)> + 'static,
    {
        if access.allows(&self.cart.token_hash) {
            self.run(ctx, Some(reply), flow);
        } else {
            let _ = reply.send(Acked {
                value: Err(CartFailure::NotFound),
                ticket: 0,
            });
        }
    }
}

impl Actor for CartActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0);
        // A cart found mid-checkout resumes its saga; an open one arms (or runs) its expiry.
        if let CartStatus::CheckingOut(order) = self.cart.status {
            self.run(ctx, None, move |context, cart| {
                saga(context, cart, order, None, by_system())
            });
        } else {
            self.after_change(ctx);
        }
        // A checked-out or expired cart that nobody asks for leaves memory; it is loaded from
        // the store again when asked for.
        self.last_used_ms = self.context.services.clock.now_ms();
        let idle_ms = self.context.limits.idle_stop_ms;
        ctx.run_interval(Duration::from_millis((idle_ms / 2).max(100)), move |actor, ctx| {
            let now_ms = actor.context.services.clock.now_ms();
            let settled = matches!(actor.cart.status, CartStatus::CheckedOut(_) | CartStatus::Expired);
            if settled && now_ms.saturating_sub(actor.last_used_ms) >= idle_ms {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Some(directory) = self.directory.upgrade() {
            directory.forget(&self.cart.id, &ctx.address());
        }
    }
}

impl Handler<GetCart> for CartActor {
    type Result = ();

    fn handle(&mut self, message: GetCart, ctx: &mut Self::Context) {
        let GetCart {
            access,
            reply,
            slot: _slot,
        } = message;
        self.serve(ctx, access, reply, |context, cart| async move {
            match view(&context, &cart).await {
                Ok((view, ticket)) => (cart, Ok(CartOutcome::Cart(view)), ticket),
                Err(failure) => (cart, Err(failure), 0),
            }
        });
    }
}

impl Handler<SetCartLine> for CartActor {
    type Result = ();

    fn handle(&mut self, message: SetCartLine, ctx: &mut Self::Context) {
        let SetCartLine {
            access,
            sku,
            qty,
            placement,
            idempotency,
            by,
            reply,
            slot: _slot,
        } = message;
        self.serve(ctx, access, reply, move |context, cart| {
            set_line(context, cart, sku, qty, placement, idempotency, by)
        });
    }
}

impl Handler<CheckoutCart> for CartActor {
    type Result = ();

    fn handle(&mut self, message: CheckoutCart, ctx: &mut Self::Context) {
        let CheckoutCart {
            access,
            details,
            idempotency,
            by,
            reply,
            slot: _slot,
        } = message;
        self.serve(ctx, access, reply, move |context, cart| {
            checkout(context, cart, details, idempotency, by)
        });
    }
}

impl From<AskError> for CartFailure {
    fn from(_: AskError) -> Self {
        CartFailure::Overloaded
    }
}

impl From<SkuFailure> for CartFailure {
    fn from(failure: SkuFailure) -> Self {
        match failure {
            SkuFailure::Overloaded | SkuFailure::Store(_) => CartFailure::Overloaded,
        }
    }
}

/// Writes the cart (and `extra` rows), its events, and the answer under its idempotency key.
fn write(
    context: &CartContext,
    cart: &Cart,
    extra: Vec<Op>,
    events: Vec<DomainEvent>,
    reply: &CartReply,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: &By,
) -> Result<Ticket, CartFailure> {
    let deps = &context.services;
    let now_ms = deps.clock.now_ms();
    let mut ops = vec![Op::Put(keys::cart(&cart.id), codec::encode_versioned(cart))];
    ops.extend(extra);
    let mut in_flight = None;
    if let Some(draft) = idempotency.filter(|_| !matches!(reply, Err(CartFailure::Overloaded))) {
        let (answer_ops, mark) = draft.stage(reply, now_ms);
        ops.extend(answer_ops);
        in_flight = Some(mark);
    }
    let ticket = persist(&deps.writer, ops, events, now_ms, by).ok_or(CartFailure::Overloaded)?;
    if let Some(mark) = in_flight {
        mark.release_when_durable(deps.writer.durability(), ticket);
    }
    Ok(ticket)
}

/// The retention of a cart that settled (checked out or expired): its row goes once
/// `cart.settled_retention_hours` have passed.
fn settled_cart_ops(context: &CartContext, cart: &Cart) -> Vec<Op> {
    let due_ms = context
        .services
        .clock
        .now_ms()
        .saturating_add(context.limits.settled_retention_ms);
    vec![Op::Put(keys::expiring(due_ms, &keys::cart(&cart.id)), Vec::new())]
}

fn cart_event(cart: &Cart, event: CartEvent) -> DomainEvent {
    DomainEvent::Cart { cart: cart.id, event }
}

/// What one SKU said of a cart's line: units held and the SKU's view (`None`: no such SKU).
type LineRead = Option<(u64, SkuView)>;

/// The cart's lines, read from the SKUs and priced, with the newest ticket among the reads.
async fn view(context: &CartContext, cart: &Cart) -> Result<(CartView, Ticket), CartFailure> {
    let (reads, ticket) = read_lines(context, cart.skus.iter(), cart).await?;
    let view = priced_view(cart, &reads)?;
    Ok((view, ticket))
}

/// Reads line by line at `skus`, all in flight at once (the SKUs answer in parallel), with
/// the newest ticket among the reads.
async fn read_lines<'a>(
    context: &CartContext,
    skus: impl Iterator<Item = &'a SkuId>,
    cart: &Cart,
) -> Result<(Vec<(SkuId, LineRead)>, Ticket), CartFailure> {
    let skus: Vec<&SkuId> = skus.collect();
    let reads = join_all(skus.iter().map(|sku| context.skus.line(sku, cart.line_id(sku)))).await;
    let mut lines = Vec::with_capacity(skus.len());
    let mut ticket = 0;
    for (sku, read) in skus.into_iter().zip(reads) {
        let (line, read) = read?;
        ticket = ticket.max(read);
        lines.push((sku.clone(), line));
    }
    Ok((lines, ticket))
}

/// The cart's lines priced from what the SKUs said, in the cart's order.
fn priced_view(cart: &Cart, reads: &[(SkuId, LineRead)]) -> Result<CartView, CartFailure> {
    let mut held = Vec::new();
    let mut names = Vec::new();
    for sku in &cart.skus {
        let line = reads
            .iter()
            .find(|(read, _)| read == sku)
            .and_then(|(_, line)| line.as_ref());
        if let Some((qty, sku_view)) = line {
            held.push((sku.clone(), *qty, sku_view.product.price_minor));
            names.push((sku.clone(), sku_view.product.name.clone()));
        }
    }
    let (lines, total) = price_lines(held).map_err(CartFailure::Rejected)?;
    Ok(CartView {
        cart: cart.clone(),
        lines,
        total_minor: total.minor(),
        names,
    })
}

async fn set_line(
    context: Arc<CartContext>,
    mut cart: Cart,
    sku: SkuId,
    qty: u64,
    placement: Placement,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: By,
) -> (Cart, CartReply, Ticket) {
    let (reply, ticket) = set_line_steps(&context, &mut cart, &sku, qty, placement, idempotency, &by).await;
    (cart, reply, ticket)
}

async fn set_line_steps(
    context: &CartContext,
    cart: &mut Cart,
    sku: &SkuId,
    qty: u64,
    placement: Placement,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: &By,
) -> (CartReply, Ticket) {
    let limits = context.limits;
    let now_ms = context.services.clock.now_ms();
    if let Err(rejection) = cart.check_open(now_ms) {
        return (Err(CartFailure::Rejected(rejection)), 0);
    }
    let line_id = cart.line_id(sku);
    // One round of reads: this SKU's line and the cart's others, all at once.
    let others = cart.skus.iter().filter(|other| *other != sku);
    let (reads, mut ticket) = match read_lines(context, std::iter::once(sku).chain(others), cart).await {
        Ok(read) => read,
        Err(failure) => return (Err(failure), 0),
    };
    let Some((_, Some((held, sku_view)))) = reads.first() else {
        return (Err(CartFailure::Stock(SkuRejection::SkuNotFound)), ticket);
    };
    let (held, product) = (*held, &sku_view.product);
    let at_sku = LineAtSku {
        held,
        price_minor: product.price_minor,
        currency: product.currency,
    };
    let change = cart.decide_line(sku, qty, at_sku, limits.lines_max, now_ms);
    if let Ok(LineChange::Hold { .. }) = change {
        // The cart's total with the new line must fit too: checked before any stock moves.
        let others = reads[1..].iter().filter_map(|(other, line)| {
            line.as_ref()
                .map(|(held, view)| (other.clone(), *held, view.product.price_minor))
        });
        let with_line = others.chain([(sku.clone(), qty, product.price_minor)]);
        if let Err(rejection) = price_lines(with_line) {
            return (Err(CartFailure::Rejected(rejection)), ticket);
        }
    }
    match change {
        Err(rejection) => return (Err(CartFailure::Rejected(rejection)), ticket),
        Ok(LineChange::Hold { joins: true }) => {
            // Membership first: after a crash the cart still knows every SKU that may hold.
            let before = cart.clone();
            cart.join(sku, product.currency);
            let joined = Ok(CartOutcome::Cart(empty_view(cart)));
            match write(context, cart, Vec::new(), Vec::new(), &joined, None, by) {
                Ok(written) => ticket = written,
                Err(failure) => {
                    // Not written, so not joined: the SKU and the currency it set go again.
                    *cart = before;
                    return (Err(failure), ticket);
                }
            }
        }
        Ok(LineChange::Hold { joins: false } | LineChange::Release) => {}
    }
    let expires_ms = now_ms.saturating_add(limits.ttl_ms);
    let set = SkuCommand::SetHold {
        placement,
        id: line_id,
        qty,
        expires_ms,
    };
    // Each change is read back with the same round trip (the read follows it in the SKU's
    // mailbox): the answer shows the lines as the changes left them.
    let mut after: Vec<(SkuId, LineRead)> = Vec::with_capacity(cart.skus.len());
    match context.skus.command_then_read(sku, set, by, line_id, false).await {
        Ok((Ok(Ok(_)), set, line, _)) => {
            ticket = ticket.max(set);
            after.push((sku.clone(), line));
        }
        Ok((Ok(Err(rejection)), set, _, _)) => return (Err(CartFailure::Stock(rejection)), ticket.max(set)),
        Ok((Err(failure), set, _, _)) => return (Err(failure.into()), ticket.max(set)),
        Err(error) => return (Err(error.into()), ticket),
    }
    // Every write extends the whole cart's hold, at every other SKU at once.
    let others: Vec<&SkuId> = cart.skus.iter().filter(|other| *other != sku).collect();
    let extends = join_all(others.iter().map(|other| {
        let id = cart.line_id(other);
        let extend = SkuCommand::ExtendHold { id, expires_ms };
        context.skus.command_then_read(other, extend, by, id, false)
    }))
    .await;
    for (other, extended) in others.into_iter().zip(extends) {
        // A SKU that could not extend (a full queue) fails the request: the cart's expiry
        // moves only when every line's hold moved with it.
        match extended {
            Ok((Ok(_), extended, line, _)) => {
                ticket = ticket.max(extended);
                after.push((other.clone(), line));
            }
            Ok((Err(failure), _, _, _)) => return (Err(failure.into()), ticket),
            Err(error) => return (Err(error.into()), ticket),
        }
    }
    // The cart in memory stays what storage has until the write below succeeds.
    let stored = cart.clone();
    cart.line_set(sku, qty, expires_ms);
    let reply = match priced_view(cart, &after) {
        Ok(view) => Ok(CartOutcome::Cart(view)),
        Err(failure) => {
            *cart = stored;
            return (Err(failure), ticket);
        }
    };
    let events = vec![cart_event(cart, CartEvent::LineSet { sku: sku.clone(), qty })];
    match write(context, cart, Vec::new(), events, &reply, idempotency, by) {
        Ok(written) => (reply, written),
        Err(failure) => {
            *cart = stored;
            (Err(failure), ticket)
        }
    }
}

fn empty_view(cart: &Cart) -> CartView {
    CartView {
        cart: cart.clone(),
        lines: Vec::new(),
        total_minor: 0,
        names: Vec::new(),
    }
}

async fn checkout(
    context: Arc<CartContext>,
    mut cart: Cart,
    details: OrderDetails,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: By,
) -> (Cart, CartReply, Ticket) {
    let now_ms = context.services.clock.now_ms();
    let order = match cart.start_checkout(OrderId::generate(), now_ms) {
        Err(rejection) => return (cart, Err(CartFailure::Rejected(rejection)), 0),
        // A checkout that was interrupted (a full queue) is finished by this request.
        Ok(CheckoutStart::Resume(order)) => return saga(context, cart, order, idempotency, by).await,
        Ok(CheckoutStart::Done(order)) => {
            return match context.orders.snapshot(&order).await {
                Ok(Some((order, ticket))) => (cart, Ok(CartOutcome::CheckedOutBefore(order)), ticket),
                Ok(None) => (
                    cart,
                    Err(CartFailure::Rejected(CartRejection::Closed(CartStatus::CheckedOut(
                        order,
                    )))),
                    0,
                ),
                Err(_) => (cart, Err(CartFailure::Overloaded), 0),
            };
        }
        Ok(CheckoutStart::Begin(order)) => order,
    };
    // Lines that cannot be committed are found before any is: then nothing is committed,
    // and the cart keeps every line, held as it was, with why the others failed.
    let failures = match preflight(&context, &cart).await {
        Ok(failures) => failures,
        Err(failure) => return (cart, Err(failure), 0),
    };
    if !failures.is_empty() {
        return refuse_checkout(&context, cart, failures, idempotency, &by);
    }
    let previous = cart.status;
    let previous_details = cart.details.clone();
    cart.begin_checkout(order, details);
    let started = vec![cart_event(&cart, CartEvent::CheckoutStarted { order })];
    if let Err(failure) = write(
        &context,
        &cart,
        Vec::new(),
        started,
        &Ok(CartOutcome::Cart(empty_view(&cart))),
        None,
        &by,
    ) {
        cart.status = previous;
        cart.details = previous_details;
        return (cart, Err(failure), 0);
    }
    saga(context, cart, order, idempotency, by).await
}

/// The lines of a cart that a checkout could not commit now, with their units: holds that
/// lapsed, and SKUs repriced into another currency.
async fn preflight(context: &CartContext, cart: &Cart) -> Result<Vec<(SkuId, u64, LineFailure)>, CartFailure> {
    let mut failures = Vec::new();
    let (reads, _) = read_lines(context, cart.skus.iter(), cart).await?;
    for (sku, line) in &reads {
        let id = cart.line_id(sku);
        let Some(&(held, ref view)) = line.as_ref() else {
            continue;
        };
        if held > 0 {
            if Some(view.product.currency) != cart.currency {
                failures.push((sku.clone(), held, LineFailure::CurrencyChanged));
            }
            continue;
        }
        // Not held: a line that lapsed, or one removed (released) or never held.
        let record = context
            .services
            .store
            .get_versioned::<Reservation>(&keys::reservation(&id))
            .map_err(|_| CartFailure::Overloaded)?;
        if let Some(record) = record.filter(|record| record.state == ReservationState::Expired) {
            failures.push((sku.clone(), record.qty, LineFailure::HoldLapsed));
        }
    }
    Ok(failures)
}

/// Answers a checkout that `preflight` refused: the cart stays open with its lines, and
/// keeps the failures to show.
fn refuse_checkout(
    context: &CartContext,
    mut cart: Cart,
    failures: Vec<(SkuId, u64, LineFailure)>,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: &By,
) -> (Cart, CartReply, Ticket) {
    let previous = cart.clone();
    let lines: Vec<(SkuId, LineFailure)> = failures.iter().map(|(sku, _, why)| (sku.clone(), *why)).collect();
    let skus = lines.iter().map(|(sku, _)| sku.clone()).collect();
    cart.checkout_failures = failures;
    let reply: CartReply = Err(CartFailure::CheckoutFailed(lines));
    let events = vec![cart_event(&cart, CartEvent::CheckoutFailed { skus })];
    match write(context, &cart, Vec::new(), events, &reply, idempotency, by) {
        Ok(written) => {
            metrics::counter!(names::CHECKOUTS_TOTAL, "outcome" => "failed").increment(1);
            (cart, reply, written)
        }
        Err(failure) => (previous, Err(failure), 0),
    }
}

/// The checkout saga from `checking_out(order)`: commit every line, then place the order or
/// give back what was committed ([`Cart::end_checkout`] decides). Safe to run again from the
/// start at any point: every step at a SKU is idempotent.
async fn saga(
    context: Arc<CartContext>,
    mut cart: Cart,
    order_id: OrderId,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    by: By,
) -> (Cart, CartReply, Ticket) {
    // Every line's hold is committed at once: the SKUs work in parallel, and each step is
    // idempotent, so a run cut short by a full queue is simply run again.
    let lines: Vec<(SkuId, ReservationId)> = cart.skus.iter().map(|sku| (sku.clone(), cart.line_id(sku))).collect();
    let results = join_all(lines.iter().map(|(sku, id)| commit_line(&context, sku, *id, &by))).await;
    let mut ticket = 0;
    let mut overloaded = false;
    let mut commits = Vec::with_capacity(lines.len());
    for ((sku, id), result) in lines.into_iter().zip(results) {
        match result {
            Ok((commit, done)) => {
                ticket = ticket.max(done);
                commits.push((sku, id, commit));
            }
            Err(done) => {
                ticket = ticket.max(done);
                overloaded = true;
            }
        }
    }
    if overloaded {
        return (cart, Err(CartFailure::Overloaded), ticket);
    }
    let now_ms = context.services.clock.now_ms();
    let payment_timeout_ms = context.orders.limits().payment_timeout_ms;
    let (give_back, failure) = match cart.end_checkout(order_id, commits, now_ms, payment_timeout_ms) {
        CheckoutEnd::Place(order) => return place(&context, cart, *order, idempotency, ticket, &by),
        CheckoutEnd::Compensate { give_back, failure } => (give_back, failure),
    };
    for line in &give_back {
        match context
            .skus
            .command(&line.sku, SkuCommand::Return { id: line.reservation }, &by)
            .await
        {
            Ok((Ok(_), done)) => ticket = ticket.max(done),
            Ok((Err(_), _)) | Err(_) => return (cart, Err(CartFailure::Overloaded), ticket),
        }
    }
    if !give_back.is_empty() {
        metrics::counter!(names::SAGA_COMPENSATIONS_TOTAL).increment(give_back.len() as u64);
    }
    // The cart keeps every line, holding nothing now: the failed ones with why, the others
    // as not ordered. (A lapsed line's units are read from its expired hold.)
    let mut kept: Vec<(SkuId, u64, LineFailure)> = Vec::new();
    if let CheckoutFailure::Lines(failed) = &failure {
        for line in &give_back {
            let reason = failed
                .iter()
                .find(|(sku, _)| *sku == line.sku)
                .map_or(LineFailure::NotOrdered, |(_, why)| *why);
            kept.push((line.sku.clone(), line.qty, reason));
        }
        for (sku, why) in failed
            .iter()
            .filter(|(sku, _)| !give_back.iter().any(|line| line.sku == *sku))
        {
            let record = context
                .services
                .store
                .get_versioned::<Reservation>(&keys::reservation(&cart.line_id(sku)))
                .ok()
                .flatten();
            kept.push((sku.clone(), record.map_or(0, |record| record.qty), *why));
        }
    }
    let (reply, failed_skus): (CartReply, Vec<SkuId>) = match failure {
        CheckoutFailure::Empty => (Err(CartFailure::Rejected(CartRejection::Empty)), Vec::new()),
        CheckoutFailure::Lines(lines) => {
            let skus = lines.iter().map(|(sku, _)| sku.clone()).collect();
            (Err(CartFailure::CheckoutFailed(lines)), skus)
        }
    };
    let previous = cart.clone();
    cart.reopen_keeping(kept);
    let events = vec![cart_event(&cart, CartEvent::CheckoutFailed { skus: failed_skus })];
    match write(&context, &cart, Vec::new(), events, &reply, idempotency, &by) {
        Ok(written) => {
            metrics::counter!(names::CHECKOUTS_TOTAL, "outcome" => "failed").increment(1);
            (cart, reply, written)
        }
        Err(failure) => (previous, Err(failure), ticket),
    }
}

/// Commits one line's hold at its SKU and reads what the order needs of it (price, name,
/// units not on a shelf yet). `Err` with the newest ticket seen when a SKU's queue was full
/// or it did not answer: the saga runs again.
async fn commit_line(
    context: &CartContext,
    sku: &SkuId,
    id: ReservationId,
    by: &By,
) -> Result<(LineCommit, Ticket), Ticket> {
    let commit = SkuCommand::Commit {
        id,
        until_shipped: true,
    };
    match context.skus.command_then_read(sku, commit, by, id, true).await {
        Ok((Ok(Ok(SkuOutcome::Reservation(reservation))), done, line, backordered)) => {
            let (price_minor, currency, name) = match line {
                Some((_, view)) => (
                    view.product.price_minor,
                    Some(view.product.currency),
                    Some(view.product.name.as_str().to_owned()),
                ),
                None => (0, None, None),
            };
            let committed = LineCommit::Committed {
                qty: reservation.qty,
                price_minor,
                currency,
                name,
                parts: reservation.parts,
                backordered,
            };
            Ok((committed, done))
        }
        // No hold: the line was never set, or was emptied (released).
        Ok((
            Ok(Err(SkuRejection::ReservationNotFound | SkuRejection::SkuNotFound | SkuRejection::ReservationReleased)),
            ..,
        )) => Ok((LineCommit::NoHold, 0)),
        Ok((Ok(Err(_)), ..)) => Ok((LineCommit::Lapsed, 0)),
        // Not reached now (a full queue): the saga runs again.
        Ok((Ok(Ok(_)), ..)) | Ok((Err(_), ..)) | Err(_) => Err(0),
    }
}

/// Writes the placed order and the checked-out cart in one batch, and starts the order.
fn place(
    context: &CartContext,
    mut cart: Cart,
    order: Order,
    idempotency: Option<IdempotencyDraft<CartReply>>,
    ticket: Ticket,
    by: &By,
) -> (Cart, CartReply, Ticket) {
    let order_id = order.id;
    cart.status = CartStatus::CheckedOut(order_id);
    let reply: CartReply = Ok(CartOutcome::Order(order.clone()));
    let events = vec![
        cart_event(&cart, CartEvent::CheckedOut { order: order_id }),
        DomainEvent::Order {
            order: order_id,
            event: OrderEvent::Placed {
                total_minor: order.total_minor,
                currency: order.currency,
                lines: order.lines.clone(),
            },
        },
    ];
    let settled = settled_cart_ops(context, &cart);
    let order_row = vec![Op::Put(keys::order(&order_id), codec::encode_versioned(&order))];
    match write(
        context,
        &cart,
        [order_row, settled].concat(),
        events,
        &reply,
        idempotency,
        by,
    ) {
        Ok(written) => {
            context.orders.start(order);
            metrics::counter!(names::CHECKOUTS_TOTAL, "outcome" => "placed").increment(1);
            context.closed();
            metrics::gauge!(names::ORDERS, "status" => "placed").increment(1.0);
            (cart, reply, written)
        }
        Err(failure) => {
            cart.status = CartStatus::CheckingOut(order_id);
            (cart, Err(failure), ticket)
        }
    }
}

/// What an expiry pass did.
#[derive(Debug)]
pub enum Expiry {
    /// Not due (written to meanwhile) or no longer open: nothing to do.
    NotDue,
    /// Every line released; the cart is expired.
    Expired,
    /// Could not finish now (a full queue); the timer tries again.
    Failed(CartFailure),
}

/// Expires an open cart whose hold time passed: releases every line, then marks it expired.
async fn expire(context: Arc<CartContext>, mut cart: Cart) -> (Cart, Expiry, Ticket) {
    let by = by_system();
    let now_ms = context.services.clock.now_ms();
    if !cart.is_due(now_ms) {
        return (cart, Expiry::NotDue, 0);
    }
    for sku in cart.skus.clone() {
        let release = SkuCommand::SetHold {
            placement: Placement::Any,
            id: cart.line_id(&sku),
            qty: 0,
            expires_ms: now_ms,
        };
        match context.skus.command(&sku, release, &by).await {
            Ok((Ok(_), _)) => {}
            Ok((Err(failure), _)) => return (cart, Expiry::Failed(failure.into()), 0),
            Err(error) => return (cart, Expiry::Failed(error.into()), 0),
        }
    }
    cart.status = CartStatus::Expired;
    let events = vec![cart_event(&cart, CartEvent::Expired)];
    let reply: CartReply = Ok(CartOutcome::Cart(empty_view(&cart)));
    match write(
        &context,
        &cart,
        settled_cart_ops(&context, &cart),
        events,
        &reply,
        None,
        &by,
    ) {
        Ok(written) => {
            metrics::counter!(names::CARTS_EXPIRED_TOTAL).increment(1);
            context.closed();
            (cart, Expiry::Expired, written)
        }
        Err(failure) => {
            cart.status = CartStatus::Open;
            (cart, Expiry::Failed(failure), 0)
        }
    }
}
