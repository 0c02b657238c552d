//! The registry: which actor owns which SKU, and where reservations live.
//!
//! SKU actors are spread over a fixed set of arbiters (one thread per core) by a hash of the
//! SKU id, so one SKU always lives on one thread. The maps are `dashmap`s: lookups from every
//! HTTP worker, no guard held across an `.await`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use actix::{ArbiterHandle, Supervisor};
use dashmap::DashMap;

use super::mailbox::Mailbox;
use super::sku::{SkuActor, SkuDeps};
use crate::domain::sku::SkuState;
use crate::domain::{ReservationId, SkuId};
use crate::metrics as names;

/// Maps SKU ids to their actors and reservation ids to their SKU.
pub struct Registry {
    /// Every SKU's actor.
    skus: DashMap<SkuId, Mailbox<SkuActor>>,
    /// The arbiters actors run on.
    arbiters: Vec<ArbiterHandle>,
    /// What every SKU actor shares.
    deps: Arc<SkuDeps>,
    /// Mailbox bound of each actor.
    mailbox_capacity: usize,
}

impl Registry {
    /// An empty registry placing actors on `arbiters`.
    pub fn new(arbiters: Vec<ArbiterHandle>, deps: Arc<SkuDeps>, mailbox_capacity: usize) -> Self {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        Self {
            skus: DashMap::new(),
            arbiters,
            deps,
            mailbox_capacity,
        }
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
            .or_insert_with(|| self.start(sku.clone(), None))
            .value()
            .clone()
    }

    /// Starts the actor of a recovered SKU.
    pub fn start_recovered(&self, state: SkuState) {
        let sku = state.sku().clone();
        for hold in state.holds() {
            self.deps.hold_index.insert(hold.id, sku.clone());
        }
        metrics::gauge!(names::RESERVATIONS_HELD).increment(state.hold_count() as f64);
        let mailbox = self.start(sku.clone(), Some(state));
        self.skus.insert(sku, mailbox);
    }

    /// The SKU holding a reservation, if it is held.
    pub fn holder_of(&self, id: &ReservationId) -> Option<SkuId> {
        self.deps.hold_index.get(id).map(|entry| entry.value().clone())
    }

    /// Number of SKU actors.
    pub fn sku_count(&self) -> usize {
        self.skus.len()
    }

    fn start(&self, sku: SkuId, state: Option<SkuState>) -> Mailbox<SkuActor> {
        let arbiter = &self.arbiters[arbiter_index(&sku, self.arbiters.len())];
        let deps = Arc::clone(&self.deps);
        let actor_sku = sku.clone();
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| SkuActor::new(actor_sku, state, deps));
        metrics::gauge!(names::ACTORS_ALIVE, "kind" => "sku").increment(1.0);
        Mailbox::new(addr, self.mailbox_capacity, "sku_mailbox")
    }
}

/// Which arbiter a SKU lives on: stable for the process's life.
fn arbiter_index(sku: &SkuId, arbiters: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    sku.hash(&mut hasher);
    // The remainder is below `arbiters`, a usize, so the cast is lossless.
    (hasher.finish() % arbiters as u64) as usize
}
