//! The registry: which actor owns which SKU, cart and order, and where reservations live.
//!
//! Actors are spread over a fixed set of arbiters (one thread per core) by a hash of their
//! id, so one aggregate always lives on one thread. The maps are `dashmap`s: lookups from every
//! HTTP worker, no guard held across an `.await`. Carts and orders that are settled are not
//! kept running: they are loaded from the store when asked for, and an order actor that sits
//! idle after settling stops and leaves the map.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use actix::{Actor, Addr, ArbiterHandle, Supervisor};
use dashmap::DashMap;

use super::cart::CartActor;
use super::mailbox::{AskError, Mailbox};
use super::order::OrderActor;
use super::sku::{ExecuteSkuCommand, GetLine, SkuActor, SkuDeps, SkuReply};
use crate::domain::cart::Cart;
use crate::domain::order::Order;
use crate::domain::sku::{SkuCommand, SkuState, SkuView};
use crate::domain::{CartId, OrderId, ReservationId, SkuId};
use crate::metrics as names;
use crate::persistence::{keys, Ticket};

/// Settings of carts and orders, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct CommerceLimits {
    /// How long a cart holds its stock after its last write.
    pub cart_ttl_ms: u64,
    /// Most lines per cart.
    pub cart_lines_max: usize,
    /// How long an order may stay unpaid.
    pub payment_timeout_ms: u64,
    /// How long a settled order's actor stays up without being asked for.
    pub order_idle_stop_ms: u64,
    /// When set, paid orders move on by themselves after a delay in this range (ms).
    pub simulator_step_delay_ms: Option<(u64, u64)>,
}

/// Maps ids to their actors.
pub struct Registry {
    /// Every SKU's actor.
    skus: DashMap<SkuId, Mailbox<SkuActor>>,
    /// Running cart actors.
    carts: DashMap<CartId, Mailbox<CartActor>>,
    /// Running order actors.
    orders: DashMap<OrderId, Mailbox<OrderActor>>,
    /// The arbiters actors run on.
    arbiters: Vec<ArbiterHandle>,
    /// What every actor shares: writer, store, clock.
    deps: Arc<SkuDeps>,
    /// Cart and order settings.
    commerce: CommerceLimits,
    /// Mailbox bound of each actor.
    mailbox_capacity: usize,
    /// This registry, handed to the cart and order actors that call other actors.
    me: Weak<Registry>,
}

impl Registry {
    /// An empty registry placing actors on `arbiters`.
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        deps: Arc<SkuDeps>,
        commerce: CommerceLimits,
        mailbox_capacity: usize,
    ) -> Arc<Self> {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Arc::new_cyclic(|me| Self {
            skus: DashMap::new(),
            carts: DashMap::new(),
            orders: DashMap::new(),
            arbiters,
            deps,
            commerce,
            mailbox_capacity,
            me: me.clone(),
        })
    }

    /// What every actor shares.
    pub fn deps(&self) -> &Arc<SkuDeps> {
        &self.deps
    }

    /// Cart and order settings.
    pub fn commerce(&self) -> CommerceLimits {
        self.commerce
    }

    /// The actor of an existing SKU.
    pub fn sku(&self, sku: &SkuId) -> Option<Mailbox<SkuActor>> {
        self.skus.get(sku).map(|entry| entry.value().clone())
    }

    /// The actor of a SKU, started empty if there is none yet (to create the SKU).
    pub fn sku_or_start(&self, sku: &SkuId) -> Mailbox<SkuActor> {
        if let Some(existing) = self.sku(sku) {
            return existing;
        }
        self.skus
            .entry(sku.clone())
            .or_insert_with(|| self.start_sku(sku.clone(), None))
            .value()
            .clone()
    }

    /// Starts the actor of a recovered SKU.
    pub fn start_recovered(&self, state: SkuState) {
        let sku = state.sku().clone();
        let shared = Arc::new(sku.clone());
        for hold in state.holds() {
            self.deps.hold_index.insert(hold.id, Arc::clone(&shared));
        }
        metrics::gauge!(names::RESERVATIONS_HELD).increment(state.hold_count() as f64);
        let mailbox = self.start_sku(sku.clone(), Some(state));
        self.skus.insert(sku, mailbox);
    }

    /// The SKU holding a reservation, if it is held.
    pub fn holder_of(&self, id: &ReservationId) -> Option<SkuId> {
        self.deps.hold_index.get(id).map(|entry| SkuId::clone(entry.value()))
    }

    /// Number of SKU actors.
    pub fn sku_count(&self) -> usize {
        self.skus.len()
    }

    /// Runs a command at a SKU and returns its answer with the ticket of its change
    /// (used by sagas, which wait for their own later write instead). `Err` when the SKU's
    /// actor is full or gone; an unknown SKU answers `SkuNotFound`.
    pub async fn sku_command(&self, sku: &SkuId, command: SkuCommand) -> Result<(SkuReply, Ticket), AskError> {
        let Some(mailbox) = self.sku(sku) else {
            return Ok((Ok(Err(crate::domain::sku::SkuRejection::SkuNotFound)), 0));
        };
        let acked = mailbox
            .ask(|reply, slot| ExecuteSkuCommand {
                command,
                idempotency: None,
                reply,
                slot,
            })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok((acked.value, acked.ticket))
    }

    /// A SKU's counters and the units one hold has (0 when not held); `None` for an
    /// unknown SKU.
    pub async fn sku_line(&self, sku: &SkuId, id: ReservationId) -> Result<(Option<(u64, SkuView)>, Ticket), AskError> {
        let Some(mailbox) = self.sku(sku) else {
            return Ok((None, 0));
        };
        let acked = mailbox
            .ask(|reply, slot| GetLine { id, reply, slot })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok((acked.value, acked.ticket))
    }

    /// The actor of a cart: running, or loaded from the store; `None` if there is no such cart.
    pub fn cart(&self, id: &CartId) -> Result<Option<Mailbox<CartActor>>, crate::persistence::StoreError> {
        if let Some(running) = self.carts.get(id) {
            return Ok(Some(running.value().clone()));
        }
        let key = keys::cart(id);
        let Some(bytes) = self.deps.store.get(&key)? else {
            return Ok(None);
        };
        let cart: Cart = self.deps.store.decode(&key, &bytes)?;
        Ok(Some(self.start_cart(cart)))
    }

    /// Starts the actor of a cart (new, recovered or loaded) unless one runs already.
    pub fn start_cart(&self, cart: Cart) -> Mailbox<CartActor> {
        let id = cart.id;
        self.carts
            .entry(id)
            .or_insert_with(|| {
                let registry = self.me.upgrade().expect("the registry outlives its actors");
                // Not supervised: a restarted copy the registry had already forgotten would be a
                // second writer. A stopped cart is forgotten and loaded again when asked for.
                let addr = CartActor::start_in_arbiter(self.arbiter_for(&id), move |_| CartActor::new(cart, registry));
                metrics::gauge!(names::ACTORS_ALIVE, "kind" => "cart").increment(1.0);
                Mailbox::new(addr, self.mailbox_capacity, "cart_mailbox")
            })
            .value()
            .clone()
    }

    /// Forgets a cart's actor that stopped (or did not answer); the next request loads the
    /// cart from the store again. Only that actor's entry goes: a newer actor for the same
    /// cart, started meanwhile, must stay the only one (a second would be a second writer).
    pub fn forget_cart(&self, id: &CartId, addr: &Addr<CartActor>) {
        if self.carts.remove_if(id, |_, mailbox| mailbox.leads_to(addr)).is_some() {
            metrics::gauge!(names::ACTORS_ALIVE, "kind" => "cart").decrement(1.0);
        }
    }

    /// The actor of an order: running, or loaded from the store; `None` if there is none.
    pub fn order(&self, id: &OrderId) -> Result<Option<Mailbox<OrderActor>>, crate::persistence::StoreError> {
        if let Some(running) = self.orders.get(id) {
            return Ok(Some(running.value().clone()));
        }
        let key = keys::order(id);
        let Some(bytes) = self.deps.store.get(&key)? else {
            return Ok(None);
        };
        let order: Order = self.deps.store.decode(&key, &bytes)?;
        Ok(Some(self.start_order(order)))
    }

    /// An order as it stands, with the ticket to wait on before reporting it.
    pub async fn order_snapshot(&self, id: &OrderId) -> Result<Option<(Order, Ticket)>, AskError> {
        let Ok(Some(mailbox)) = self.order(id) else {
            return Ok(None);
        };
        let acked = mailbox
            .ask(|reply, slot| super::order::GetOrder {
                access: super::Access::Admin,
                reply,
                slot,
            })?
            .await
            .map_err(|_| AskError::NoAnswer)?;
        Ok(acked.value.ok().map(|order| (order, acked.ticket)))
    }

    /// Starts the actor of an order unless one runs already.
    pub fn start_order(&self, order: Order) -> Mailbox<OrderActor> {
        let id = order.id;
        self.orders
            .entry(id)
            .or_insert_with(|| {
                let registry = self.me.upgrade().expect("the registry outlives its actors");
                let addr =
                    OrderActor::start_in_arbiter(self.arbiter_for(&id), move |_| OrderActor::new(order, registry));
                metrics::gauge!(names::ACTORS_ALIVE, "kind" => "order").increment(1.0);
                Mailbox::new(addr, self.mailbox_capacity, "order_mailbox")
            })
            .value()
            .clone()
    }

    /// Whether an order's actor is running (settled orders stop when idle).
    pub fn order_is_running(&self, id: &OrderId) -> bool {
        self.orders.contains_key(id)
    }

    /// Forgets an order's actor that stopped (idle after settling, or did not answer); only
    /// that actor's entry goes, as for carts.
    pub fn forget_order(&self, id: &OrderId, addr: &Addr<OrderActor>) {
        if self.orders.remove_if(id, |_, mailbox| mailbox.leads_to(addr)).is_some() {
            metrics::gauge!(names::ACTORS_ALIVE, "kind" => "order").decrement(1.0);
        }
    }

    fn start_sku(&self, sku: SkuId, state: Option<SkuState>) -> Mailbox<SkuActor> {
        let deps = Arc::clone(&self.deps);
        let actor_sku = sku.clone();
        let addr = Supervisor::start_in_arbiter(self.arbiter_for(&sku), move |_| SkuActor::new(actor_sku, state, deps));
        metrics::gauge!(names::ACTORS_ALIVE, "kind" => "sku").increment(1.0);
        Mailbox::new(addr, self.mailbox_capacity, "sku_mailbox")
    }

    /// The arbiter an id lives on: stable for the process's life.
    fn arbiter_for(&self, id: &impl Hash) -> &ArbiterHandle {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        // The remainder is below the arbiter count, a usize, so the cast is lossless.
        &self.arbiters[(hasher.finish() % self.arbiters.len() as u64) as usize]
    }
}
