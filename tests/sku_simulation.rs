//! Seeded random simulation of the SKU domain against a plain model.
//!
//! Each run picks an allocation strategy and whether holds may split, then draws commands
//! (reserve anywhere, at one location or by preference; release, commit, ship, return, take
//! back after shipping; restock,
//! adjust and count at any of four locations, one of them inactive; transfers and their
//! receipt; cart-line holds resized; expiry), moves the clock (forwards, sometimes far,
//! sometimes backwards) and restarts (rebuilding the SKU from the rows it wrote to a real
//! sled store, as recovery does). Rows go into a memtable, and at random steps a checkpoint
//! writes them to sled (runs of ledger movements as pages), so reads see both and restarts
//! find both. Some runs start from a SKU row of the release before
//! locations. After every step the SKU must agree with the model at every location, hold the
//! same parts, answer as the model predicts, keep its invariants, and its stored ledger
//! (opening balance plus movements) must sum to its counters. A failing run
//! prints its seed; `STOCKROOM_SIM_SEED=<seed>` repeats exactly that run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use stockroom::domain::ids::TransferId;
use stockroom::domain::location::LocationId;
use stockroom::domain::sku::{
    execute, Allocation, Placement, Product, Reservation, ReservationState, Site, Sites, SkuCommand, SkuLimits,
    SkuOutcome, SkuRejection, SkuState, Strategy, ON_HAND_MAX,
};
use stockroom::domain::values::{Currency, Name, Quantity, StockDelta, QUANTITY_MAX};
use stockroom::domain::{ReservationId, SkuId};
use stockroom::persistence::checkpoint::{checkpoint_once, LogRetention};
use stockroom::persistence::ledger::read_movements;
use stockroom::persistence::recovery::recover;
use stockroom::persistence::rows::{sku_change_ops, LegacySkuRow, SkuChange};
use stockroom::persistence::{codec, keys, Op, SledStore, StateView, Storage};

const HOLDS_MAX: usize = 8;

/// The locations of every run: `default`, two more, and one that takes no holds.
const LOCATIONS: [(&str, i64, bool); 4] = [
    ("default", 5, true),
    ("north", 1, true),
    ("south", 2, true),
    ("closed", 0, false),
];

fn location(name: &str) -> LocationId {
    LocationId::parse(name).expect("valid")
}

fn limits(strategy: Strategy, allow_split: bool) -> SkuLimits {
    let sites = LOCATIONS
        .iter()
        .map(|(name, priority, active)| {
            (
                location(name),
                Site {
                    priority: *priority,
                    active: *active,
                },
            )
        })
        .collect();
    SkuLimits {
        holds_max: HOLDS_MAX,
        allocation: Allocation {
            strategy,
            allow_split,
            sites: Arc::new(Sites::new(sites)),
        },
    }
}

type Parts = Vec<(String, u64)>;

/// What the SKU should look like: plain maps, no cleverness.
#[derive(Default)]
struct Model {
    strategy: Strategy,
    allow_split: bool,
    /// Per location: (on_hand, reserved, committed).
    stock: BTreeMap<String, (u64, u64, u64)>,
    /// Held reservations: id -> (parts, expires_ms).
    holds: BTreeMap<ReservationId, (Parts, u64)>,
    /// Settled reservations: how they settled and their parts.
    settled: HashMap<ReservationId, (ReservationState, Parts)>,
    /// Transfers in transit: id -> (to, qty).
    in_transit: BTreeMap<TransferId, (String, u64)>,
}

fn total(parts: &Parts) -> u64 {
    parts.iter().map(|(_, qty)| qty).sum()
}

impl Model {
    fn on_hand(&self) -> u64 {
        self.stock.values().map(|(on_hand, ..)| on_hand).sum()
    }

    fn committed(&self) -> u64 {
        self.stock.values().map(|(.., committed)| committed).sum()
    }

    fn reserved(&self) -> u64 {
        self.holds.values().map(|(parts, _)| total(parts)).sum()
    }

    fn available_at(&self, at: &str) -> u64 {
        self.stock
            .get(at)
            .map_or(0, |(on_hand, reserved, committed)| on_hand - reserved - committed)
    }

    fn site(at: &str) -> (i64, bool) {
        LOCATIONS
            .iter()
            .find(|(name, ..)| *name == at)
            .map_or((i64::MAX, false), |(_, priority, active)| (*priority, *active))
    }

    fn add(&mut self, at: &str, on_hand: i64, reserved: i64) {
        self.add3(at, on_hand, reserved, 0);
    }

    fn add3(&mut self, at: &str, on_hand: i64, reserved: i64, committed: i64) {
        let entry = self.stock.entry(at.to_owned()).or_default();
        entry.0 = entry.0.checked_add_signed(on_hand).expect("model on_hand");
        entry.1 = entry.1.checked_add_signed(reserved).expect("model reserved");
        entry.2 = entry.2.checked_add_signed(committed).expect("model committed");
    }

    /// Moves the units of `parts`: `sign` times their quantity off `reserved`, and onto
    /// `committed` when `sold`.
    fn hold_parts(&mut self, parts: &Parts, sign: i64, sold: bool) {
        for (at, qty) in parts {
            let qty = i64::try_from(*qty).expect("fits") * sign;
            self.add3(at, 0, qty, if sold { -qty } else { 0 });
        }
    }

    /// Where `qty` units come from, the plain way.
    fn place(&self, qty: u64, placement: &Placement) -> Result<Parts, SkuRejection> {
        let candidates: Vec<String> = match placement {
            Placement::At(at) => {
                if !Self::site(at.as_str()).1 {
                    return Err(SkuRejection::LocationUnavailable { location: at.clone() });
                }
                vec![at.to_string()]
            }
            Placement::Prefer(list) => list
                .iter()
                .filter(|at| Self::site(at.as_str()).1)
                .map(ToString::to_string)
                .collect(),
            Placement::Any => {
                let mut names: Vec<String> = match self.strategy {
                    Strategy::Priority => LOCATIONS
                        .iter()
                        .filter(|(_, _, active)| *active)
                        .map(|(name, ..)| (*name).to_owned())
                        .collect(),
                    Strategy::MostAvailable => self.stock.keys().filter(|at| Self::site(at).1).cloned().collect(),
                };
                match self.strategy {
                    Strategy::Priority => names.sort_by_key(|at| (Self::site(at).0, at.clone())),
                    Strategy::MostAvailable => {
                        names.sort_by_key(|at| (std::cmp::Reverse(self.available_at(at)), Self::site(at).0, at.clone()))
                    }
                }
                names
            }
        };
        if let Some(at) = candidates.iter().find(|at| self.available_at(at) >= qty) {
            return Ok(vec![(at.clone(), qty)]);
        }
        let sum: u64 = candidates.iter().map(|at| self.available_at(at)).sum();
        if !self.allow_split || sum < qty {
            let available = if self.allow_split {
                sum
            } else {
                candidates.iter().map(|at| self.available_at(at)).max().unwrap_or(0)
            };
            return Err(SkuRejection::InsufficientStock { available });
        }
        let mut left = qty;
        let mut parts = Vec::new();
        for at in candidates {
            let take = self.available_at(&at).min(left);
            if take > 0 {
                parts.push((at, take));
                left -= take;
            }
        }
        Ok(parts)
    }

    fn expire_due(&mut self, now_ms: u64) {
        let due: Vec<ReservationId> = self
            .holds
            .iter()
            .filter(|(_, (_, expires))| *expires <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((parts, _)) = self.holds.remove(&id) {
                self.hold_parts(&parts, -1, false);
                self.settled.insert(id, (ReservationState::Expired, parts));
            }
        }
    }

    /// The model's answer: `Ok` for success, `Err` for the expected rejection.
    fn run(&mut self, command: &SkuCommand, now_ms: u64) -> Result<(), SkuRejection> {
        use ReservationState::{Committed, Expired, Released, Returned, Sold};
        self.expire_due(now_ms);
        match command {
            SkuCommand::Reserve {
                id,
                qty,
                ttl_ms,
                placement,
            } => {
                if self.holds.len() >= HOLDS_MAX {
                    return Err(SkuRejection::HoldLimitReached { holds_max: HOLDS_MAX });
                }
                let parts = self.place(qty.get(), placement)?;
                self.hold_parts(&parts, 1, false);
                self.holds.insert(*id, (parts, now_ms + ttl_ms));
                Ok(())
            }
            SkuCommand::Release { id } => {
                if let Some((parts, _)) = self.holds.remove(id) {
                    self.hold_parts(&parts, -1, false);
                    self.settled.insert(*id, (Released, parts));
                    return Ok(());
                }
                match self.settled.get(id) {
                    Some((Released | Expired, _)) => Ok(()),
                    Some((Committed | Sold | Returned, _)) => Err(SkuRejection::ReservationCommitted),
                    _ => Err(SkuRejection::ReservationNotFound),
                }
            }
            SkuCommand::Commit { id, until_shipped } => {
                if let Some((parts, _)) = self.holds.remove(id) {
                    if *until_shipped {
                        self.hold_parts(&parts, -1, true);
                        self.settled.insert(*id, (Committed, parts));
                    } else {
                        // Sold outright: off the shelf at once.
                        for (at, qty) in &parts {
                            let qty = i64::try_from(*qty).expect("fits");
                            self.add3(at, -qty, -qty, 0);
                        }
                        self.settled.insert(*id, (Sold, parts));
                    }
                    return Ok(());
                }
                match self.settled.get(id) {
                    Some((Committed | Sold, _)) => Ok(()),
                    Some((Returned, _)) => Err(SkuRejection::ReservationCommitted),
                    Some((Released, _)) => Err(SkuRejection::ReservationReleased),
                    Some((Expired, _)) => Err(SkuRejection::ReservationExpired),
                    _ => Err(SkuRejection::ReservationNotFound),
                }
            }
            SkuCommand::Return { id } => {
                if self.holds.contains_key(id) {
                    return Err(SkuRejection::ReservationNotCommitted);
                }
                match self.settled.get(id).cloned() {
                    Some((Committed, parts)) => {
                        // Sold, not shipped: the units are still on the shelf.
                        for (at, qty) in &parts {
                            self.add3(at, 0, 0, -i64::try_from(*qty).expect("fits"));
                        }
                        self.settled.insert(*id, (Returned, parts));
                        Ok(())
                    }
                    Some((Sold, parts)) => {
                        if self.on_hand() + total(&parts) > ON_HAND_MAX {
                            return Err(SkuRejection::StockLimitExceeded);
                        }
                        for (at, qty) in &parts {
                            self.add(at, i64::try_from(*qty).expect("fits"), 0);
                        }
                        self.settled.insert(*id, (Returned, parts));
                        Ok(())
                    }
                    Some((Returned, _)) => Ok(()),
                    Some(_) => Err(SkuRejection::ReservationNotCommitted),
                    None => Err(SkuRejection::ReservationNotFound),
                }
            }
            SkuCommand::SetHold {
                id,
                qty,
                expires_ms,
                placement,
            } => match self.holds.get(id).cloned() {
                Some((parts, _)) if *qty == 0 => {
                    self.holds.remove(id);
                    self.hold_parts(&parts, -1, false);
                    self.settled.insert(*id, (Released, parts));
                    Ok(())
                }
                Some((parts, expires)) if *qty == total(&parts) && *expires_ms == expires => Ok(()),
                Some((parts, _)) => {
                    let held = total(&parts);
                    let mut new_parts = parts.clone();
                    if *qty > held {
                        let extra = self.place(qty - held, placement).map_err(|refused| match refused {
                            SkuRejection::InsufficientStock { available } => SkuRejection::InsufficientStock {
                                available: available + held,
                            },
                            other => other,
                        })?;
                        for (at, units) in extra {
                            match new_parts.iter_mut().find(|(existing, _)| *existing == at) {
                                Some(part) => part.1 += units,
                                None => new_parts.push((at, units)),
                            }
                        }
                    } else {
                        let mut cut = held - qty;
                        while cut > 0 {
                            let last = new_parts.last_mut().expect("parts");
                            let take = last.1.min(cut);
                            last.1 -= take;
                            cut -= take;
                            if last.1 == 0 {
                                new_parts.pop();
                            }
                        }
                    }
                    self.hold_parts(&parts, -1, false);
                    self.hold_parts(&new_parts, 1, false);
                    self.holds.insert(*id, (new_parts, *expires_ms));
                    Ok(())
                }
                None if *qty == 0 => Ok(()),
                None => {
                    if matches!(self.settled.get(id), Some((Committed | Sold | Returned, _))) {
                        return Err(SkuRejection::ReservationCommitted);
                    }
                    if self.holds.len() >= HOLDS_MAX {
                        return Err(SkuRejection::HoldLimitReached { holds_max: HOLDS_MAX });
                    }
                    let parts = self.place(*qty, placement)?;
                    self.hold_parts(&parts, 1, false);
                    self.holds.insert(*id, (parts, *expires_ms));
                    Ok(())
                }
            },
            SkuCommand::ExtendHold { id, expires_ms } => {
                if let Some(hold) = self.holds.get_mut(id) {
                    hold.1 = *expires_ms;
                }
                Ok(())
            }
            SkuCommand::Restock { location, qty, .. } => {
                if self.on_hand() + qty.get() > ON_HAND_MAX {
                    return Err(SkuRejection::StockLimitExceeded);
                }
                self.add(location.as_str(), i64::try_from(qty.get()).expect("fits"), 0);
                Ok(())
            }
            SkuCommand::Adjust { location, delta, .. } => {
                let magnitude = delta.get().unsigned_abs();
                let available = self.available_at(location.as_str());
                if delta.get() < 0 && magnitude > available {
                    return Err(SkuRejection::InsufficientStock { available });
                }
                if delta.get() > 0 && self.on_hand() + magnitude > ON_HAND_MAX {
                    return Err(SkuRejection::StockLimitExceeded);
                }
                self.add(location.as_str(), delta.get(), 0);
                Ok(())
            }
            SkuCommand::Count { location, on_hand, .. } => {
                let (shelf, reserved, committed) = self.stock.get(location.as_str()).copied().unwrap_or_default();
                if *on_hand < reserved + committed {
                    return Err(SkuRejection::InsufficientStock {
                        available: shelf - reserved - committed,
                    });
                }
                let delta = i64::try_from(*on_hand).expect("fits") - i64::try_from(shelf).expect("fits");
                self.add(location.as_str(), delta, 0);
                Ok(())
            }
            SkuCommand::Transfer { id, from, to, qty } => {
                let available = self.available_at(from.as_str());
                if qty.get() > available {
                    return Err(SkuRejection::InsufficientStock { available });
                }
                self.add(from.as_str(), -i64::try_from(qty.get()).expect("fits"), 0);
                self.in_transit.insert(*id, (to.to_string(), qty.get()));
                Ok(())
            }
            SkuCommand::ReceiveTransfer { id } => {
                if let Some((to, qty)) = self.in_transit.remove(id) {
                    self.add(&to, i64::try_from(qty).expect("fits"), 0);
                }
                Ok(())
            }
            SkuCommand::Ship { id, location, qty } => {
                if self.holds.contains_key(id) {
                    return Err(SkuRejection::ReservationNotCommitted);
                }
                match self.settled.get(id).cloned() {
                    Some((state @ (Committed | Sold), mut parts)) => {
                        let here = parts
                            .iter()
                            .filter(|(at, _)| at == location.as_str())
                            .map(|(_, units)| units)
                            .sum::<u64>();
                        if here < *qty {
                            return Err(SkuRejection::NotCommittedHere {
                                location: location.clone(),
                                committed: here,
                            });
                        }
                        if state == Committed {
                            let units = i64::try_from(*qty).expect("fits");
                            self.add3(location.as_str(), -units, 0, -units);
                        }
                        let mut left = *qty;
                        for (at, units) in parts.iter_mut().filter(|(at, _)| at == location.as_str()) {
                            let _ = at;
                            let take = (*units).min(left);
                            *units -= take;
                            left -= take;
                        }
                        parts.retain(|(_, units)| *units > 0);
                        self.settled.insert(*id, (state, parts));
                        Ok(())
                    }
                    Some(_) => Err(SkuRejection::ReservationNotCommitted),
                    None => Err(SkuRejection::ReservationNotFound),
                }
            }
            SkuCommand::TakeBack {
                location, qty, restock, ..
            } => {
                if *restock {
                    if self.on_hand() + qty > ON_HAND_MAX {
                        return Err(SkuRejection::StockLimitExceeded);
                    }
                    self.add(location.as_str(), i64::try_from(*qty).expect("fits"), 0);
                }
                Ok(())
            }
            SkuCommand::ExpireDue | SkuCommand::Upsert { .. } | SkuCommand::TrimLedger { .. } => Ok(()),
        }
    }
}

fn product() -> Product {
    Product {
        name: Name::parse("Simulated", "name", "invalid_name").expect("constant"),
        price_minor: 100,
        currency: Currency::parse("EUR").expect("constant"),
    }
}

fn quantity(rng: &mut StdRng, max: i64) -> Quantity {
    Quantity::parse(rng.random_range(1..=max), QUANTITY_MAX).expect("in range")
}

/// A reservation id to settle: usually a held one, sometimes settled or unknown.
fn some_id(rng: &mut StdRng, model: &Model) -> ReservationId {
    let roll = rng.random_range(0..10);
    if roll < 6 && !model.holds.is_empty() {
        *model
            .holds
            .keys()
            .nth(rng.random_range(0..model.holds.len()))
            .expect("in range")
    } else if roll < 9 && !model.settled.is_empty() {
        *model
            .settled
            .keys()
            .nth(rng.random_range(0..model.settled.len()))
            .expect("in range")
    } else {
        ReservationId::generate()
    }
}

/// Prints the seed if the run it guards panics.
struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "SKU simulation failed with seed {0}; repeat with STOCKROOM_SIM_SEED={0}",
                self.0
            );
        }
    }
}

/// A location for a stock write: any of them, `closed` included.
fn any_location(rng: &mut StdRng) -> LocationId {
    location(LOCATIONS[rng.random_range(0..LOCATIONS.len())].0)
}

/// Where a hold may go: anywhere, one location, or a preference list.
fn some_placement(rng: &mut StdRng) -> Placement {
    match rng.random_range(0..4) {
        0 | 1 => Placement::Any,
        2 => Placement::At(any_location(rng)),
        _ => {
            let mut names: Vec<&str> = LOCATIONS.iter().map(|(name, ..)| *name).collect();
            let keep = rng.random_range(1..=names.len());
            // A shuffled prefix: a random preference order.
            for index in (1..names.len()).rev() {
                names.swap(index, rng.random_range(0..=index));
            }
            Placement::Prefer(names[..keep].iter().map(|name| location(name)).collect())
        }
    }
}

/// Stores what one call to `execute` did, as the SKU actor does: into the memtable, as the
/// writer applies a change once it is logged (`position` counts the log records).
fn store_change(
    store: &StateView,
    position: &mut u64,
    state: &Option<SkuState>,
    executed: &stockroom::domain::sku::Executed,
    now_ms: u64,
) {
    if executed.events.is_empty() {
        return;
    }
    let transfers: Vec<_> = match &executed.answer {
        Ok(SkuOutcome::Transfer(Some(record))) => vec![record.clone()],
        _ => Vec::new(),
    };
    let by: Arc<str> = Arc::from("simulation");
    *position += 1;
    store.memtable.apply(
        sku_change_ops(&SkuChange {
            after: state.as_ref().expect("the SKU exists"),
            events: &executed.events,
            settled: &executed.settled,
            movements: &executed.movements,
            transfers: &transfers,
            now_ms,
            by: &by,
            settled_retention_ms: u64::MAX / 2,
        }),
        *position,
        0,
    );
}

/// Writes the memtable's rows into sled as the checkpoint thread does.
fn checkpoint(store: &StateView) {
    let retention = LogRetention {
        max_events: 0,
        kafka: false,
    };
    let outcome = checkpoint_once(store, retention, 0, u64::MAX).expect("checkpoint");
    assert!(!outcome.waiting, "nothing waits for the log here");
    assert!(store.memtable.is_empty());
}

fn simulate(seed: u64, steps: usize) {
    let _reporter = SeedReporter(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage: Arc<dyn Storage> = Arc::new(SledStore::open(dir.path(), 4 << 20).expect("sled opens"));
    let store = StateView::new(Arc::clone(&storage), Arc::default());
    let mut position = 0;
    let sku = SkuId::parse("sim").expect("valid");
    let mut now_ms: u64 = 1_700_000_000_000;
    let strategy = if rng.random_bool(0.5) {
        Strategy::Priority
    } else {
        Strategy::MostAvailable
    };
    let allow_split = rng.random_bool(0.5);
    let limits = limits(strategy, allow_split);
    let mut model = Model {
        strategy,
        allow_split,
        ..Model::default()
    };
    let mut state: Option<SkuState> = None;
    // Cart-line ids: few and reused, so holds are re-held, resized, committed and returned.
    let line_ids: Vec<ReservationId> = (0..6).map(|_| ReservationId::generate()).collect();
    let mut transfer_ids: Vec<TransferId> = Vec::new();

    let initial = rng.random_range(0..=40);
    if rng.random_bool(0.3) {
        // A SKU written by the release before locations: it opens at `default`.
        let row = LegacySkuRow {
            product: product(),
            on_hand: initial,
            reserved: 0,
        };
        storage
            .apply(vec![Op::Put(keys::sku(&sku), codec::encode(&row))])
            .expect("store apply");
        state = recover(&store).expect("recovery succeeds").skus.into_iter().next();
    } else {
        let create = SkuCommand::Upsert {
            product: product(),
            on_hand: Some(initial),
            low_stock_threshold: Some(rng.random_range(0..=5)),
            backorder_limit: None,
            available_from_ms: None,
        };
        let created =
            execute(&sku, &mut state, &create, now_ms, &limits, |_| Ok::<_, ()>(None)).expect("no store errors");
        assert!(matches!(created.answer, Ok(SkuOutcome::Sku { created: true, .. })));
        store_change(&store, &mut position, &state, &created, now_ms);
    }
    model.stock.insert("default".to_owned(), (initial, 0, 0));

    for step in 0..steps {
        let command = match rng.random_range(0..100) {
            0..26 => SkuCommand::Reserve {
                id: ReservationId::generate(),
                qty: quantity(&mut rng, 12),
                ttl_ms: rng.random_range(1..=5_000),
                placement: some_placement(&mut rng),
            },
            26..38 => SkuCommand::Release {
                id: some_id(&mut rng, &model),
            },
            38..54 => SkuCommand::Commit {
                id: some_id(&mut rng, &model),
                until_shipped: rng.random_bool(0.6),
            },
            54..61 => SkuCommand::Restock {
                location: any_location(&mut rng),
                qty: quantity(&mut rng, 30),
                reason: None,
            },
            61..67 => SkuCommand::Adjust {
                location: any_location(&mut rng),
                delta: StockDelta::parse(if rng.random_bool(0.5) {
                    rng.random_range(1..=20)
                } else {
                    -rng.random_range(1..=20)
                })
                .expect("non-zero"),
                reason: Name::parse("simulation", "reason", "invalid_reason").expect("constant"),
            },
            67..70 => SkuCommand::Count {
                location: any_location(&mut rng),
                on_hand: rng.random_range(0..=40),
                reason: None,
            },
            70..75 => {
                let from = any_location(&mut rng);
                let mut to = any_location(&mut rng);
                while to == from {
                    to = any_location(&mut rng);
                }
                let id = TransferId::generate();
                transfer_ids.push(id);
                SkuCommand::Transfer {
                    id,
                    from,
                    to,
                    qty: quantity(&mut rng, 15),
                }
            }
            75..79 => SkuCommand::ReceiveTransfer {
                id: if transfer_ids.is_empty() {
                    TransferId::generate()
                } else {
                    transfer_ids[rng.random_range(0..transfer_ids.len())]
                },
            },
            79..80 => SkuCommand::ExpireDue,
            80..81 => {
                // Retention: fold the oldest few movements, as the ledger pass would (and
                // sometimes a stale trim, which must change nothing).
                let live = state.as_ref().expect("the SKU exists");
                let from_seq = live.ledger_start() + u64::from(rng.random_bool(0.2));
                let mut folded: BTreeMap<LocationId, [i64; 3]> = BTreeMap::new();
                let mut upto_seq = from_seq.saturating_sub(1);
                let take = rng.random_range(1..=10);
                for row in read_movements(&store, &sku, from_seq, from_seq + take, usize::MAX).expect("read") {
                    let sum = folded.entry(row.movement.location.clone()).or_default();
                    sum[0] += row.movement.on_hand_delta;
                    sum[1] += row.movement.reserved_delta;
                    sum[2] += row.movement.committed_delta;
                    upto_seq = row.movement.seq;
                }
                SkuCommand::TrimLedger {
                    from_seq,
                    upto_seq,
                    folded: folded.into_iter().collect(),
                }
            }
            81..87 => SkuCommand::SetHold {
                id: line_ids[rng.random_range(0..line_ids.len())],
                qty: rng.random_range(0..=12),
                expires_ms: now_ms + rng.random_range(1..=5_000),
                placement: some_placement(&mut rng),
            },
            87..89 => SkuCommand::ExtendHold {
                id: line_ids[rng.random_range(0..line_ids.len())],
                expires_ms: now_ms + rng.random_range(1..=5_000),
            },
            89..91 => SkuCommand::Return {
                id: some_id(&mut rng, &model),
            },
            91..93 => {
                // Ship part of a sale, usually from where it is committed.
                let sold: Vec<(&ReservationId, &Parts)> = model
                    .settled
                    .iter()
                    .filter(|(_, (state, parts))| state.is_sold() && !parts.is_empty())
                    .map(|(id, (_, parts))| (id, parts))
                    .collect();
                match sold.get(rng.random_range(0..sold.len().max(1))) {
                    Some((id, parts)) if rng.random_bool(0.9) => {
                        let (at, units) = &parts[rng.random_range(0..parts.len())];
                        SkuCommand::Ship {
                            id: **id,
                            location: location(at),
                            qty: rng.random_range(1..=*units + 1),
                        }
                    }
                    _ => SkuCommand::Ship {
                        id: some_id(&mut rng, &model),
                        location: any_location(&mut rng),
                        qty: rng.random_range(1..=5),
                    },
                }
            }
            93..94 => SkuCommand::TakeBack {
                id: some_id(&mut rng, &model),
                location: any_location(&mut rng),
                qty: rng.random_range(1..=5),
                restock: rng.random_bool(0.7),
            },
            94..96 => {
                now_ms = match rng.random_range(0..20) {
                    0 => now_ms + 3_600_000,
                    1 => now_ms - rng.random_range(0..=1_000),
                    _ => now_ms + rng.random_range(0..=2_000),
                };
                continue;
            }
            _ => {
                let recovered = recover(&store).expect("recovery succeeds");
                assert_eq!(recovered.skus.len(), 1, "step {step}: one SKU recovered");
                state = recovered.skus.into_iter().next();
                check(&state, &model, &store, step, "after restart");
                continue;
            }
        };
        let expected = model.run(&command, now_ms);
        let executed = execute(&sku, &mut state, &command, now_ms, &limits, |id| {
            let key = keys::reservation(id);
            let stored = store.get(&key).expect("store read");
            Ok::<_, ()>(stored.map(|bytes| codec::decode_versioned::<Reservation>(&key, &bytes).expect("decodes")))
        })
        .expect("no store errors");
        assert_eq!(
            executed.answer.as_ref().map(|_| ()).map_err(Clone::clone),
            expected,
            "step {step}: answer to {command:?}"
        );
        store_change(&store, &mut position, &state, &executed, now_ms);
        if rng.random_ratio(1, 8) {
            checkpoint(&store);
        }
        check(&state, &model, &store, step, "after a command");
    }
}

fn check(state: &Option<SkuState>, model: &Model, store: &StateView, step: usize, when: &str) {
    let state = state.as_ref().expect("the SKU exists");
    assert_eq!(state.check_invariants_fully(), Ok(()), "step {step} {when}");
    let view = state.view();
    assert_eq!(
        (view.on_hand, view.reserved, view.committed, view.available),
        (
            model.on_hand(),
            model.reserved(),
            model.committed(),
            model.on_hand() - model.reserved() - model.committed()
        ),
        "step {step} {when}: counters"
    );
    for (at, (on_hand, reserved, committed)) in &model.stock {
        let stock = state.stock_at(&location(at));
        assert_eq!(
            (stock.on_hand, stock.reserved, stock.committed),
            (*on_hand, *reserved, *committed),
            "step {step} {when}: counters at {at}"
        );
        assert!(
            stock.on_hand >= stock.reserved + stock.committed,
            "step {step} {when}: oversold at {at}"
        );
    }
    let mut held: Vec<(ReservationId, Vec<(String, u64)>)> = state
        .holds()
        .map(|hold| {
            let parts = hold
                .parts
                .iter()
                .map(|part| (part.location.to_string(), part.qty))
                .collect();
            (hold.id, parts)
        })
        .collect();
    held.sort();
    let expected: Vec<(ReservationId, Vec<(String, u64)>)> = model
        .holds
        .iter()
        .map(|(id, (parts, _))| (*id, parts.clone()))
        .collect();
    assert_eq!(held, expected, "step {step} {when}: held reservations and their parts");
    let in_transit: Vec<TransferId> = state.view().in_transit.iter().map(|transfer| transfer.id).collect();
    assert_eq!(
        in_transit,
        model.in_transit.keys().copied().collect::<Vec<_>>(),
        "step {step} {when}: transfers in transit"
    );
    // The ledger as stored: opening balance plus every movement equals the counters.
    let mut sums: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for (at, stock) in state.opening() {
        let entry = sums.entry(at.to_string()).or_default();
        entry.0 += i64::try_from(stock.on_hand).expect("fits");
        entry.1 += i64::try_from(stock.reserved).expect("fits");
        entry.2 += i64::try_from(stock.committed).expect("fits");
    }
    let mut seqs = Vec::new();
    let mut last_available: BTreeMap<String, u64> = BTreeMap::new();
    let sku = SkuId::parse("sim").expect("valid");
    for row in read_movements(store, &sku, state.ledger_start(), u64::MAX, usize::MAX).expect("read") {
        seqs.push(row.movement.seq);
        last_available.insert(row.movement.location.to_string(), row.movement.available_after);
        let entry = sums.entry(row.movement.location.to_string()).or_default();
        entry.0 += row.movement.on_hand_delta;
        entry.1 += row.movement.reserved_delta;
        entry.2 += row.movement.committed_delta;
    }
    assert!(
        seqs.iter().copied().eq(state.ledger_start()..=state.movement_seq()),
        "step {step} {when}: the ledger runs {}..={} without gaps",
        state.ledger_start(),
        state.movement_seq()
    );
    // Folded movements are deleted: a row may hold folded ones only beside a kept one (a
    // page keyed by its last movement, which is kept).
    for (key, _) in store.scan(&[keys::MOVEMENT], None, usize::MAX).expect("scan") {
        let (_, seq) = keys::movement_parts(&key).expect("a movement key");
        assert!(
            seq >= state.ledger_start(),
            "step {step} {when}: row {seq} is below the ledger's start {}",
            state.ledger_start()
        );
    }
    for (at, available) in &last_available {
        assert_eq!(
            *available,
            state.stock_at(&location(at)).available(),
            "step {step} {when}: the last movement at {at} says what is available there"
        );
    }
    for (at, stock) in state.stock() {
        let sum = sums.remove(at.as_str()).unwrap_or_default();
        assert_eq!(
            sum,
            (
                i64::try_from(stock.on_hand).expect("fits"),
                i64::try_from(stock.reserved).expect("fits"),
                i64::try_from(stock.committed).expect("fits")
            ),
            "step {step} {when}: the ledger of {at} sums to its counters"
        );
    }
    assert!(
        sums.values().all(|sum| *sum == (0, 0, 0)),
        "step {step} {when}: movements at locations without counters"
    );
}

#[test]
fn random_commands_time_jumps_and_restarts_keep_the_sku_equal_to_the_model() {
    if let Some(seed) = std::env::var("STOCKROOM_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        simulate(seed, 2_000);
        return;
    }
    let runs: u64 = std::env::var("STOCKROOM_SIM_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(48);
    let first_seed: u64 = rand::random();
    for run in 0..runs {
        simulate(first_seed.wrapping_add(run), 400);
    }
}
