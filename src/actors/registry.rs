//! Where each actor lives, and the narrow handles actors get to one another.
//!
//! Actors are spread over a fixed set of arbiters (one thread per core) by a hash of their
//! id ([`Placement`]), so one aggregate always lives on one thread. Each kind has a directory
//! of its running actors (`dashmap`s: lookups from every HTTP worker, no guard held across an
//! `.await`):
//!
//! - [`SkuDirectory`]: every SKU's actor; runs commands and reads lines at a SKU.
//! - [`OrderDirectory`]: running order actors; loads a settled order from the store when asked
//!   for. Order actors get an [`OrderContext`]: the shared [`Services`], the SKUs (to give
//!   stock back) and their limits.
//! - [`CartDirectory`]: running cart actors, loaded likewise. Cart actors get a
//!   [`CartContext`]: the services, the SKUs, the orders (checkout places one) and their
//!   limits.
//!
//! Nothing hands out the whole registry: an actor reaches only what its context names, and
//! forgets itself through a weak handle to its own directory (no cycle). [`Registry`] bundles
//! the three directories for the HTTP layer and the engine.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use actix::{Actor, Addr, ArbiterHandle, Supervisor};
use dashmap::DashMap;
use smallvec::SmallVec;

use super::cart::CartActor;
use super::mailbox::{AskError, Mailbox};
use super::order::OrderActor;
use super::services::Services;
use super::sku::{ExecuteSkuCommand, GetLine, SkuActor, SkuDeps, SkuReply};
use crate::access::By;
use crate::domain::cart::Cart;
use crate::domain::order::Order;
use crate::domain::sku::{SkuCommand, SkuRejection, SkuState, SkuView};
use crate::domain::{CartId, OrderId, ReservationId, SkuId};
use crate::metrics as names;
use crate::persistence::{keys, StoreError, Ticket};

/// Settings of carts, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct CartLimits {
    /// How long a cart holds its stock after its last write.
    pub ttl_ms: u64,
    /// Most lines per cart.
    pub lines_max: usize,
    /// How long a settled cart's actor stays up without being asked for.
    pub idle_stop_ms: u64,
    /// Most carts open at once.
    pub max_open: usize,
    /// How long a checked-out or expired cart's row is kept.
    pub settled_retention_ms: u64,
}

/// Settings of orders, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct OrderLimits {
    /// How long an order may stay unpaid.
    pub payment_timeout_ms: u64,
    /// How long a settled order's actor stays up without being asked for.
    pub idle_stop_ms: u64,
    /// When set, paid orders move on by themselves after a delay in this range (ms).
    pub simulator_step_delay_ms: Option<(u64, u64)>,
    /// How long a settled order's row is kept.
    pub settled_retention_ms: u64,
    /// How long the record of a stock step an order made is kept (the idempotency
    /// retention): a step repeated within it is made once.
    pub step_retention_ms: u64,
}

/// The arbiters actors run on, and which one an id lives on.
#[derive(Clone)]
pub struct Placement(Arc<[ArbiterHandle]>);

impl Placement {
    /// Actors placed over `arbiters` (at least one).
    pub fn new(arbiters: Vec<ArbiterHandle>) -> Self {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Self(arbiters.into())
    }

    /// The arbiter an id lives on: stable for the process's life.
    fn arbiter_for(&self, id: &impl Hash) -> &ArbiterHandle {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        // The remainder is below the arbiter count, a usize, so the cast is lossless.
        &self.0[(hasher.finish() % self.0.len() as u64) as usize]
    }
}

/// Where a reservation may be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The hold index names the SKU holding it.
    Indexed(SkuId),
    /// Not in the index: held, if at all, at one of these SKUs, those whose tag the id
    /// carries (almost always one; none for an id that names no SKU). A settled
    /// reservation is in storage instead.
    Tagged(SmallVec<[SkuId; 1]>),
}

/// Every SKU's actor.
pub struct SkuDirectory {
    skus: DashMap<SkuId, Mailbox<SkuActor>>,
    /// Every SKU by its tag ([`SkuId::tag`]): the SKUs that may hold a reservation whose
    /// id carries the tag. Almost always one; two SKUs' tags may collide.
    by_tag: DashMap<u32, SmallVec<[SkuId; 1]>>,
    placement: Placement,
    /// What every SKU actor shares.
    deps: Arc<SkuDeps>,
    mailbox_capacity: usize,
}

impl SkuDirectory {
    /// No SKUs yet.
    pub fn new(placement: Placement, deps: Arc<SkuDeps>, mailbox_capacity: usize) -> Self {
        Self {
            skus: DashMap::new(),
            by_tag: DashMap::new(),
            placement,
            deps,
            mailbox_capacity,
        }
    }

    /// What every SKU actor shares.
    pub fn deps(&self) -> &Arc<SkuDeps> {
        &self.deps
    }

    /// The actor of an existing SKU.
    pub fn get(&self, sku: &SkuId) -> Option<Mailbox<SkuActor>> {
        self.skus.get(sku).map(|entry| entry.value().clone())
    }

    /// The actor of a SKU, started empty if there is none yet (to create the SKU).
    pub fn get_or_start(&self, sku: &SkuId) -> Mailbox<SkuActor> {
        if let Some(existing) = self.get(sku) {
            return existing;
        }
        self.skus
            .entry(sku.clone())
            .or_insert_with(|| {
                self.tag(sku);
                self.start(sku.clone(), None)
            })
            .value()
            .clone()
    }

    /// Files `sku` under its tag, once, before its actor takes a reservation.
    fn tag(&self, sku: &SkuId) {
        self.by_tag.entry(sku.tag()).or_default().push(sku.clone());
    }

    /// Starts the actors of the recovered SKUs. Their holds are indexed first, on two
    /// threads (a million holds took 0.4 s on one, most of what a restart spent after
    /// reading the store).
    pub fn start_recovered(&self, states: Vec<SkuState>) {
        const INDEX_THREADS: usize = 2;
        let index = &self.deps.hold_index;
        let shared: Vec<Arc<SkuId>> = states.iter().map(|state| Arc::new(state.sku().clone())).collect();
        std::thread::scope(|scope| {
            for part in 0..INDEX_THREADS {
                let (states, shared) = (&states, &shared);
                scope.spawn(move || {
                    for (state, sku) in states.iter().zip(shared) {
                        for hold in super::sku::indexed_holds(state).skip(part).step_by(INDEX_THREADS) {
                            index.insert(hold.id, Arc::clone(sku));
                        }
                    }
                });
            }
        });
        for state in states {
            metrics::gauge!(names::RESERVATIONS_HELD).increment(state.hold_count() as f64);
            let sku = state.sku().clone();
            self.tag(&sku);
            let mailbox = self.start(sku.clone(), Some(state));
            self.skus.insert(sku, mailbox);
        }
    }

    /// Where reservation `id` is held, if it is: the SKU the hold index names, or else the
    /// SKUs whose tag the id carries (a SKU's own reservations are not indexed).
    pub fn holder_of(&self, id: &ReservationId) -> Holder {
        if let Some(entry) = self.deps.hold_index.get(id) {
            return Holder::Indexed(SkuId::clone(entry.value()));
        }
        let tagged = self.by_tag.get(&id.sku_tag()).map(|entry| entry.value().clone());
        Holder::Tagged(tagged.unwrap_or_default())
    }

    /// Number of SKU actors.
    pub fn len(&self) -> usize {
        self.skus.len()
    }

    /// Whether there are no SKUs.
    pub fn is_empty(&self) -> bool {
        self.skus.is_empty()
    }

    /// Runs a command at a SKU and returns its answer with the ticket of its change
    /// (used by sagas, which wait for their own later write instead). `Err` when the SKU's
    /// actor is full or gone; an unknown SKU answers `SkuNotFound`.
    pub async fn command(&self, sku: &SkuId, command: SkuCommand, by: &By) -> Result<(SkuReply, Ticket), AskError> {
        self.command_keyed(sku, command, by, None).await
    }

    /// [`command`](Self::command), storing the answer under an idempotency key.
    pub async fn command_keyed(
        &self,
        sku: &SkuId,
        command: SkuCommand,
        by: &By,
        idempotency: Option<super::sku::IdempotencyDraft>,
    ) -> Result<(SkuReply, Ticket), AskError> {
        let Some(mailbox) = self.get(sku) else {
            return Ok((Ok(Err(SkuRejection::SkuNotFound)), 0));
        };
        let acked = mailbox
            .ask(|reply, slot| ExecuteSkuCommand {
                command,
                idempotency,
                by: Arc::clone(by),
                reply,
                slot,
            })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok((acked.value, acked.ticket))
    }

    /// Runs a command at a SKU and reads line `id` there right after it, and with
    /// `backordered` its units not on a shelf yet: every message is sent before any answer
    /// is awaited, so the reads see the command's effect (one actor handles its mailbox in
    /// order) for one round trip instead of two or three. The reads are `None` and 0 for an
    /// unknown SKU.
    pub async fn command_then_read(
        &self,
        sku: &SkuId,
        command: SkuCommand,
        by: &By,
        id: ReservationId,
        backordered: bool,
    ) -> Result<(SkuReply, Ticket, Option<(u64, SkuView)>, u64), AskError> {
        let Some(mailbox) = self.get(sku) else {
            return Ok((Ok(Err(SkuRejection::SkuNotFound)), 0, None, 0));
        };
        let done = mailbox.ask(|reply, slot| ExecuteSkuCommand {
            command,
            idempotency: None,
            by: Arc::clone(by),
            reply,
            slot,
        })?;
        let line = mailbox.ask(|reply, slot| GetLine { id, reply, slot })?;
        let units = if backordered {
            Some(mailbox.ask(|reply, slot| super::sku::GetBackordered { id, reply, slot })?)
        } else {
            None
        };
        let done = done.await.map_err(|_| AskError::NoAnswer)?;
        let line = line.await.map_err(|_| AskError::NoAnswer)?;
        let units = match units {
            Some(units) => units.await.map_err(|_| AskError::NoAnswer)?.value,
            None => 0,
        };
        Ok((done.value, done.ticket.max(line.ticket), line.value, units))
    }

    /// Units of reservation `id` not on a shelf yet (0 for an unknown SKU).
    pub async fn backordered(&self, sku: &SkuId, id: ReservationId) -> Result<u64, AskError> {
        let Some(mailbox) = self.get(sku) else {
            return Ok(0);
        };
        let acked = mailbox
            .ask(|reply, slot| super::sku::GetBackordered { id, reply, slot })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok(acked.value)
    }

    /// A SKU's counters and the units one hold has (0 when not held); `None` for an
    /// unknown SKU.
    pub async fn line(&self, sku: &SkuId, id: ReservationId) -> Result<(Option<(u64, SkuView)>, Ticket), AskError> {
        let Some(mailbox) = self.get(sku) else {
            return Ok((None, 0));
        };
        let acked = mailbox
            .ask(|reply, slot| GetLine { id, reply, slot })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok((acked.value, acked.ticket))
    }

    fn start(&self, sku: SkuId, state: Option<SkuState>) -> Mailbox<SkuActor> {
        let deps = Arc::clone(&self.deps);
        let actor_sku = sku.clone();
        let addr = Supervisor::start_in_arbiter(self.placement.arbiter_for(&sku), move |_| {
            SkuActor::new(actor_sku, state, deps)
        });
        metrics::gauge!(names::ACTORS_ALIVE, "kind" => "sku").increment(1.0);
        Mailbox::new(addr, self.mailbox_capacity, "sku_mailbox")
    }
}

/// What an order actor may reach.
pub struct OrderContext {
    /// Writer, store, clock.
    pub services: Services,
    /// The SKUs, to give a cancelled order's stock back.
    pub skus: Arc<SkuDirectory>,
    /// Timeouts and the simulator.
    pub limits: OrderLimits,
    /// Makes each stock step of an order once (fulfilments, returns).
    pub steps: Arc<crate::idempotency::IdempotencyGate>,
}

/// Running order actors.
pub struct OrderDirectory {
    orders: DashMap<OrderId, Mailbox<OrderActor>>,
    placement: Placement,
    context: Arc<OrderContext>,
    mailbox_capacity: usize,
    me: Weak<OrderDirectory>,
}

impl OrderDirectory {
    /// No orders running yet.
    pub fn new(placement: Placement, context: OrderContext, mailbox_capacity: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            orders: DashMap::new(),
            placement,
            context: Arc::new(context),
            mailbox_capacity,
            me: me.clone(),
        })
    }

    /// The actor of an order: running, or loaded from the store; `None` if there is none.
    pub fn get(&self, id: &OrderId) -> Result<Option<Mailbox<OrderActor>>, StoreError> {
        if let Some(running) = self.orders.get(id) {
            return Ok(Some(running.value().clone()));
        }
        let Some(order) = self.context.services.store.get_versioned::<Order>(&keys::order(id))? else {
            return Ok(None);
        };
        Ok(Some(self.start(order)))
    }

    /// An order as it stands, with the ticket to wait on before reporting it.
    pub async fn snapshot(&self, id: &OrderId) -> Result<Option<(Order, Ticket)>, AskError> {
        let Ok(Some(mailbox)) = self.get(id) else {
            return Ok(None);
        };
        let acked = mailbox
            .ask(|reply, slot| super::order::GetOrder {
                access: super::Access::Staff,
                reply,
                slot,
            })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok(acked.value.ok().map(|order| (order, acked.ticket)))
    }

    /// Starts the actor of an order unless one runs already.
    pub fn start(&self, order: Order) -> Mailbox<OrderActor> {
        let id = order.id;
        self.orders
            .entry(id)
            .or_insert_with(|| {
                let context = Arc::clone(&self.context);
                let directory = self.me.clone();
                let addr = OrderActor::start_in_arbiter(self.placement.arbiter_for(&id), move |_| {
                    OrderActor::new(order, context, directory)
                });
                metrics::gauge!(names::ACTORS_ALIVE, "kind" => "order").increment(1.0);
                Mailbox::new(addr, self.mailbox_capacity, "order_mailbox")
            })
            .value()
            .clone()
    }

    /// Order settings.
    pub fn limits(&self) -> OrderLimits {
        self.context.limits
    }

    /// Whether an order's actor is running (settled orders stop when idle).
    pub fn is_running(&self, id: &OrderId) -> bool {
        self.orders.contains_key(id)
    }

    /// Forgets an order's actor that stopped (idle after settling, or did not answer). Only
    /// that actor's entry goes: a newer actor for the same order, started meanwhile, must stay
    /// the only one (a second would be a second writer).
    pub fn forget(&self, id: &OrderId, addr: &Addr<OrderActor>) {
        if self.orders.remove_if(id, |_, mailbox| mailbox.leads_to(addr)).is_some() {
            metrics::gauge!(names::ACTORS_ALIVE, "kind" => "order").decrement(1.0);
        }
    }
}

/// What a cart actor may reach.
pub struct CartContext {
    /// Writer, store, clock.
    pub services: Services,
    /// The SKUs its lines hold stock at.
    pub skus: Arc<SkuDirectory>,
    /// The orders, for the one its checkout places.
    pub orders: Arc<OrderDirectory>,
    /// Hold time, line count.
    pub limits: CartLimits,
    /// Carts open now (created or recovered open, not yet checked out or expired).
    open: AtomicUsize,
}

impl CartContext {
    /// A cart left the open carts (checked out or expired).
    pub fn closed(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| Some(open.saturating_sub(1)));
        metrics::gauge!(names::CARTS_OPEN).decrement(1.0);
    }
}

/// Running cart actors.
pub struct CartDirectory {
    carts: DashMap<CartId, Mailbox<CartActor>>,
    placement: Placement,
    context: Arc<CartContext>,
    mailbox_capacity: usize,
    me: Weak<CartDirectory>,
}

impl CartDirectory {
    /// No carts running yet.
    pub fn new(placement: Placement, context: CartContext, mailbox_capacity: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            carts: DashMap::new(),
            placement,
            context: Arc::new(context),
            mailbox_capacity,
            me: me.clone(),
        })
    }

    /// Cart settings.
    pub fn limits(&self) -> CartLimits {
        self.context.limits
    }

    /// Counts a new open cart unless `max_open` are open already (then `false`).
    pub fn try_open(&self) -> bool {
        let max_open = self.context.limits.max_open;
        let opened = self
            .context
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max_open).then_some(open + 1)
            })
            .is_ok();
        if opened {
            metrics::gauge!(names::CARTS_OPEN).increment(1.0);
        }
        opened
    }

    /// Counts an open cart found at recovery (over the cap if need be: it exists already).
    pub fn recovered_open(&self) {
        self.context.open.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(names::CARTS_OPEN).increment(1.0);
    }

    /// Gives back a place taken by [`Self::try_open`] for a cart that was not made.
    pub fn not_opened(&self) {
        self.context.closed();
    }

    /// The actor of a cart: running, or loaded from the store; `None` if there is no such cart.
    pub fn get(&self, id: &CartId) -> Result<Option<Mailbox<CartActor>>, StoreError> {
        if let Some(running) = self.carts.get(id) {
            return Ok(Some(running.value().clone()));
        }
        let Some(cart) = self.context.services.store.get_versioned::<Cart>(&keys::cart(id))? else {
            return Ok(None);
        };
        Ok(Some(self.start(cart)))
    }

    /// Starts the actor of a cart (new, recovered or loaded) unless one runs already.
    pub fn start(&self, cart: Cart) -> Mailbox<CartActor> {
        let id = cart.id;
        self.carts
            .entry(id)
            .or_insert_with(|| {
                let context = Arc::clone(&self.context);
                let directory = self.me.clone();
                // Not supervised: a restarted copy the directory had already forgotten would
                // be a second writer. A stopped cart is forgotten and loaded again when asked.
                let addr = CartActor::start_in_arbiter(self.placement.arbiter_for(&id), move |_| {
                    CartActor::new(cart, context, directory)
                });
                metrics::gauge!(names::ACTORS_ALIVE, "kind" => "cart").increment(1.0);
                Mailbox::new(addr, self.mailbox_capacity, "cart_mailbox")
            })
            .value()
            .clone()
    }

    /// Forgets a cart's actor that stopped (or did not answer); the next request loads the
    /// cart from the store again. Only that actor's entry goes, as for orders.
    pub fn forget(&self, id: &CartId, addr: &Addr<CartActor>) {
        if self.carts.remove_if(id, |_, mailbox| mailbox.leads_to(addr)).is_some() {
            metrics::gauge!(names::ACTORS_ALIVE, "kind" => "cart").decrement(1.0);
        }
    }
}

/// The three directories, for the HTTP layer and the engine.
pub struct Registry {
    /// Every SKU's actor.
    pub skus: Arc<SkuDirectory>,
    /// Running order actors.
    pub orders: Arc<OrderDirectory>,
    /// Running cart actors.
    pub carts: Arc<CartDirectory>,
}

impl Registry {
    /// Directories placing actors on `arbiters`, each actor's mailbox bounded to
    /// `mailbox_capacity` messages.
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        deps: Arc<SkuDeps>,
        cart_limits: CartLimits,
        order_limits: OrderLimits,
        steps: Arc<crate::idempotency::IdempotencyGate>,
        mailbox_capacity: usize,
    ) -> Self {
        let placement = Placement::new(arbiters);
        let services = deps.services.clone();
        let skus = Arc::new(SkuDirectory::new(placement.clone(), deps, mailbox_capacity));
        let orders = OrderDirectory::new(
            placement.clone(),
            OrderContext {
                services: services.clone(),
                skus: Arc::clone(&skus),
                limits: order_limits,
                steps,
            },
            mailbox_capacity,
        );
        let carts = CartDirectory::new(
            placement,
            CartContext {
                services,
                skus: Arc::clone(&skus),
                orders: Arc::clone(&orders),
                limits: cart_limits,
                open: AtomicUsize::new(0),
            },
            mailbox_capacity,
        );
        Self { skus, orders, carts }
    }

    /// The actor of an existing SKU.
    pub fn sku(&self, sku: &SkuId) -> Option<Mailbox<SkuActor>> {
        self.skus.get(sku)
    }

    /// The actor of a SKU, started empty if there is none yet (to create the SKU).
    pub fn sku_or_start(&self, sku: &SkuId) -> Mailbox<SkuActor> {
        self.skus.get_or_start(sku)
    }

    /// Where reservation `id` is held, if it is ([`SkuDirectory::holder_of`]).
    pub fn holder_of(&self, id: &ReservationId) -> Holder {
        self.skus.holder_of(id)
    }

    /// The actor of a cart, running or loaded; `None` if there is no such cart.
    pub fn cart(&self, id: &CartId) -> Result<Option<Mailbox<CartActor>>, StoreError> {
        self.carts.get(id)
    }

    /// The actor of an order, running or loaded; `None` if there is no such order.
    pub fn order(&self, id: &OrderId) -> Result<Option<Mailbox<OrderActor>>, StoreError> {
        self.orders.get(id)
    }
}
