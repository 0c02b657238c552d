//! The engine: the running store, writer, arbiters and actors behind the HTTP API.
//!
//! [`Engine::start`] opens the store, recovers every SKU from its state rows, checks the
//! invariants, starts the group-commit writer and one arbiter per core, and starts an actor
//! for each SKU. Only then is the engine handed to the HTTP layer, which answers `503
//! not_ready` until that moment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use anyhow::Context;
use dashmap::DashMap;

use crate::actors::feed::StockFeed;
use crate::actors::kafka::{KafkaBridge, KafkaStatus, StopBridge};
use crate::actors::registry::{CartLimits, OrderLimits};
use crate::actors::turns::Turns;
use crate::actors::{Registry, Services, SkuDeps};
use crate::config::Settings;
use crate::credentials::Credentials;
use crate::domain::sku::{SkuCommand, SkuLimits};
use crate::domain::{Clock, SkuId};
use crate::idempotency::IdempotencyGate;
use crate::locations::Locations;
use crate::metrics as names;
use crate::persistence::checkpoint::{CheckpointConfig, Checkpointer, LogRetention};
use crate::persistence::recovery::{recover, replay_log, Recovered, Replayed};
use crate::persistence::retention;
use crate::persistence::writer::FatalHandler;
use crate::persistence::{Memtable, Op, SledStore, StateView, Storage, Writer, WriterConfig};

/// Wraps the opened store, so tests can inject faults at the seam.
pub type StoreWrapper = Box<dyn FnOnce(Arc<dyn Storage>) -> Arc<dyn Storage> + Send>;

/// Limits the HTTP layer applies to requests, resolved from configuration.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most units per request.
    pub qty_max: u64,
    /// Hold time when none is given.
    pub default_ttl_seconds: u64,
    /// Longest hold.
    pub max_ttl_seconds: u64,
    /// How long idempotency records are kept.
    pub idempotency_retention_ms: u64,
}

/// The running core of the server.
pub struct Engine {
    /// The named API credentials.
    pub credentials: Credentials,
    /// The locations that hold stock.
    pub locations: Arc<Locations>,
    /// Unused WebSocket tickets.
    pub ws_tickets: crate::http::tickets::WsTickets,
    /// Anonymous cart creation, per client address.
    pub cart_creation: crate::http::rate::RateLimiter,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::http::rate::TrustedProxies,
    /// Actors by SKU, cart and order; holds by reservation.
    pub registry: Arc<Registry>,
    /// The group-commit writer.
    pub writer: Arc<Writer>,
    /// The state as readers see it (writes go through the writer).
    pub store: StateView,
    /// Writes the state rows into the store in the background.
    checkpointer: Checkpointer,
    /// Idempotency-Key admission.
    pub idempotency: Arc<IdempotencyGate>,
    /// Bulk stock sync, one batch at a time.
    pub batch: Arc<crate::actors::batch::BatchRunner>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Request limits.
    pub limits: RequestLimits,
    /// How long ledger movements are kept (0: as long as their SKU).
    pub ledger_retention_ms: u64,
    /// Live stock watchers.
    pub feed: Arc<StockFeed>,
    /// Each SKU's share of the writer.
    pub turns: Turns,
    /// Most units per cart line.
    pub cart_line_qty_max: u64,
    /// The arbiters the actors run on, stopped and joined at shutdown.
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    /// The Kafka bridge, when enabled: retention keeps every event it has not delivered.
    /// What the Kafka bridge shows of itself (with Kafka on).
    pub kafka_status: Option<Arc<KafkaStatus>>,
    kafka: Option<Addr<KafkaBridge>>,
}

/// The directory of the sled database inside the data directory.
pub fn store_dir(settings: &Settings) -> PathBuf {
    settings.store.data_dir.join("store")
}

/// How often the sweeper runs ledger retention.
const LEDGER_PASS_EVERY: Duration = Duration::from_secs(600);

/// How many more batches one page of SKUs gets in one ledger pass when a SKU has more old
/// movements than one batch (up to 100,000 movements per SKU per pass).
const LEDGER_PAGE_REPEATS_MAX: usize = 99;

/// What opening the store and recovering gave.
struct Opened {
    storage: Arc<dyn Storage>,
    memtable: Arc<Memtable>,
    replayed: Replayed,
    recovered: Recovered,
    credentials: Credentials,
    locations: Arc<Locations>,
    /// How long sled took to open the two databases (its own recovery).
    open_elapsed: Duration,
}

impl Engine {
    /// Opens the store and recovers (blocking work, run off the async threads), then starts
    /// the writer, arbiters and actors. Must run inside the actix system.
    pub async fn start(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        wrap_store: Option<StoreWrapper>,
        on_fatal: FatalHandler,
    ) -> anyhow::Result<Arc<Self>> {
        let started = Instant::now();
        let dir = store_dir(settings);
        let cache_capacity_bytes = settings.store.cache_capacity_bytes;
        let Opened {
            open_elapsed,
            storage,
            memtable,
            replayed,
            recovered,
            credentials,
            locations,
        } = actix_web::rt::task::spawn_blocking(move || -> anyhow::Result<Opened> {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let opening = Instant::now();
            let sled = SledStore::open(&dir, cache_capacity_bytes)
                .with_context(|| format!("opening the store in {}", dir.display()))?;
            let open_elapsed = opening.elapsed();
            let mut storage: Arc<dyn Storage> = Arc::new(sled);
            if let Some(wrap) = wrap_store {
                storage = wrap(storage);
            }
            let (memtable, replayed) = replay_log(storage.as_ref()).context("replaying the log")?;
            let memtable = Arc::new(memtable);
            let view = StateView::new(Arc::clone(&storage), Arc::clone(&memtable));
            let recovered = recover(&view).context("recovering state from the store")?;
            let credentials = Credentials::load(&view).context("loading the credentials")?;
            let locations = Arc::new(Locations::load(&view).context("loading the locations")?);
            Ok(Opened {
                open_elapsed,
                storage,
                memtable,
                replayed,
                recovered,
                credentials,
                locations,
            })
        })
        .await
        .context("the recovery thread panicked")??;
        let store = StateView::new(Arc::clone(&storage), Arc::clone(&memtable));

        let writer = Writer::start(
            Arc::clone(&storage),
            Arc::clone(&memtable),
            WriterConfig {
                max_batch_items: settings.writer.max_batch_items,
                queue_capacity_items: settings.writer.queue_capacity_items,
            },
            replayed.start,
            on_fatal,
        )
        .context("starting the writer threads")?;
        // A read that fails stops the server as a failed write does (a weak handle: the
        // writer holds no view, but the view outlives nothing it should keep alive).
        let failing = Arc::downgrade(&writer);
        store.on_read_failure(Box::new(move |error| {
            if let Some(writer) = failing.upgrade() {
                writer.fail(error, "reading the store");
            }
        }));
        let checkpointer = Checkpointer::start(
            store.clone(),
            CheckpointConfig {
                interval: Duration::from_millis(settings.store.checkpoint_interval_ms),
                retention: LogRetention {
                    max_events: settings.events.retention_max_events,
                    kafka: settings.kafka.enabled,
                },
            },
            Arc::clone(writer.durability()),
        )
        .context("starting the checkpoint thread")?;

        let arbiter_count = match settings.actors.arbiters {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let mut arbiters: Vec<Arbiter> = (0..arbiter_count).map(|_| Arbiter::new()).collect();
        let feed: Arc<StockFeed> = Arc::default();
        let deps = Arc::new(SkuDeps {
            services: Services {
                writer: Arc::clone(&writer),
                store: store.clone(),
                clock: Arc::clone(&clock),
            },
            limits: SkuLimits {
                holds_max: settings.reservation.max_holds_per_sku,
                allocation: crate::domain::sku::Allocation {
                    strategy: settings.allocation.strategy,
                    allow_split: settings.allocation.allow_split,
                    sites: locations.sites(),
                },
            },
            locations: Arc::clone(&locations),
            // Movement events are for the Kafka bridge; without it the rows are the ledger.
            publish_movements: settings.ledger.publish_movements && settings.kafka.enabled,
            settled_retention_ms: settings.reservation.settled_retention_hours.saturating_mul(3_600_000),
            // Sized for the recovered holds it takes (those whose ids do not carry their SKU's
            // tag): no rehashing while a million are indexed.
            hold_index: Arc::new(DashMap::with_capacity(
                recovered
                    .skus
                    .iter()
                    .map(|state| crate::actors::sku::indexed_holds(state).count())
                    .sum(),
            )),
            feed: Arc::clone(&feed),
        });
        let idle_stop_ms = settings.order.idle_stop_seconds.saturating_mul(1000);
        let cart_limits = CartLimits {
            ttl_ms: settings.cart.ttl_seconds.saturating_mul(1000),
            lines_max: settings.cart.max_lines,
            idle_stop_ms,
            max_open: settings.cart.max_open,
            settled_retention_ms: settings.cart.settled_retention_hours.saturating_mul(3_600_000),
        };
        let order_limits = OrderLimits {
            payment_timeout_ms: settings.order.payment_timeout_seconds.saturating_mul(1000),
            idle_stop_ms,
            simulator_step_delay_ms: settings.simulator.enabled.then_some((
                settings.simulator.min_step_delay_ms,
                settings.simulator.max_step_delay_ms,
            )),
            settled_retention_ms: settings.order.settled_retention_hours.saturating_mul(3_600_000),
            step_retention_ms: settings.idempotency.retention_hours.saturating_mul(3_600_000),
        };
        let idempotency = Arc::new(IdempotencyGate::new(store.clone()));
        let registry = Arc::new(Registry::new(
            arbiters.iter().map(Arbiter::handle).collect(),
            deps,
            cart_limits,
            order_limits,
            Arc::clone(&idempotency),
            settings.actors.mailbox_capacity_messages,
        ));
        let sku_count = recovered.skus.len();
        // SKUs first: recovered carts and orders resume sagas that talk to them.
        registry.skus.start_recovered(recovered.skus);
        let (cart_count, order_count) = (recovered.carts.len(), recovered.orders.len());
        for cart in recovered.carts {
            // Open until checked out or expired: one mid-checkout still counts.
            if matches!(
                cart.status,
                crate::domain::cart::CartStatus::Open | crate::domain::cart::CartStatus::CheckingOut(_)
            ) {
                registry.carts.recovered_open();
            }
            registry.carts.start(cart);
        }
        for order in recovered.orders {
            metrics::gauge!(names::ORDERS, "status" => order.status().as_str()).increment(1.0);
            registry.orders.start(order);
        }
        let kafka_status = settings
            .kafka
            .enabled
            .then(|| Arc::new(KafkaStatus::new(settings.kafka.max_backlog_events)));
        let kafka = if let Some(status) = &kafka_status {
            let bridge = KafkaBridge::new(
                settings.kafka.clone(),
                store.clone(),
                Arc::clone(&writer),
                Arc::clone(&clock),
                Arc::clone(status),
            )?;
            // An arbiter of its own: it reads the store and encodes JSON, off the actors' threads.
            let arbiter = Arbiter::new();
            let addr = KafkaBridge::start_in_arbiter(&arbiter.handle(), move |_| bridge);
            arbiters.push(arbiter);
            Some(addr)
        } else {
            None
        };
        // Everything from opening the store to the last actor started: what a restart waits.
        let elapsed = started.elapsed();
        metrics::gauge!(names::RECOVERY_SECONDS).set(elapsed.as_secs_f64());
        tracing::info!(
            skus = sku_count,
            holds = recovered.holds,
            carts = cart_count,
            orders = order_count,
            next_event_seq = replayed.start.next_event_seq,
            log_records_replayed = replayed.records,
            row_changes_replayed = replayed.ops,
            open_ms = open_elapsed.as_millis() as u64,
            replay_ms = replayed.elapsed.as_millis() as u64,
            rebuild_ms = recovered.elapsed.as_millis() as u64,
            elapsed_ms = elapsed.as_millis() as u64,
            "recovered"
        );
        let batch = Arc::new(crate::actors::batch::BatchRunner {
            skus: Arc::clone(&registry.skus),
            writer: Arc::clone(&writer),
            lock: tokio::sync::Mutex::new(()),
        });
        Ok(Arc::new(Self {
            credentials,
            locations,
            ledger_retention_ms: settings.ledger.retention_days.saturating_mul(86_400_000),
            ws_tickets: crate::http::tickets::WsTickets::default(),
            registry,
            idempotency,
            batch,
            writer,
            store,
            checkpointer,
            clock,
            limits: RequestLimits {
                qty_max: settings.reservation.max_qty,
                default_ttl_seconds: settings.reservation.default_ttl_seconds,
                max_ttl_seconds: settings.reservation.max_ttl_seconds,
                idempotency_retention_ms: settings.idempotency.retention_hours.saturating_mul(3_600_000),
            },
            cart_creation: crate::http::rate::RateLimiter::new(settings.cart.create_per_minute_per_client),
            trusted_proxies: crate::http::rate::TrustedProxies::parse(&settings.http.trusted_proxies)
                .map_err(|entry| anyhow::anyhow!("http.trusted_proxies: bad entry {entry:?}"))?,
            turns: Turns::new(
                settings.writer.sku_share,
                Duration::from_millis(settings.writer.max_queue_delay_ms),
            ),
            feed,
            cart_line_qty_max: settings.cart.max_qty_per_line,
            arbiters: std::sync::Mutex::new(arbiters),
            kafka,
            kafka_status,
        }))
    }

    /// Checkpoints the state rows now and removes the log records no longer needed
    /// (blocking; the background thread does the same every `store.checkpoint_interval_ms`).
    pub fn checkpoint(
        &self,
    ) -> Result<crate::persistence::checkpoint::CheckpointOutcome, crate::persistence::StoreError> {
        self.checkpointer.run_now()
    }

    /// Waits until every change submitted so far is durable (a read barrier).
    pub async fn barrier(&self) -> Result<(), crate::persistence::writer::WriterFailed> {
        self.writer.durability().wait(self.writer.last_submitted()).await
    }

    /// One retention pass (see [`retention`]); returns the rows deleted.
    pub fn sweep(&self) -> anyhow::Result<usize> {
        let now_ms = self.clock.now_ms();
        metrics::gauge!(names::CLOCK_SKEW_SECONDS).set(self.clock.wall_skew_ms() as f64 / 1000.0);
        metrics::gauge!(names::MEMTABLE_ROWS).set(self.store.memtable.len() as f64);
        Ok(retention::sweep(&self.store, &self.writer, now_ms)?)
    }

    /// The deletes one retention pass at `now_ms` would submit (see [`retention`]).
    pub fn retention_ops(&self, now_ms: u64) -> anyhow::Result<Vec<Op>> {
        Ok(retention::due_deletes(&self.store, now_ms)?)
    }

    /// One ledger retention pass: folds the movements older than `[ledger] retention_days`
    /// into their SKUs' opening balances (see [`crate::persistence::ledger`]); returns the
    /// SKUs trimmed. Nothing when retention is off.
    pub async fn trim_ledgers(self: &Arc<Self>) -> anyhow::Result<usize> {
        if self.ledger_retention_ms == 0 {
            return Ok(0);
        }
        let cutoff_ms = self.clock.now_ms().saturating_sub(self.ledger_retention_ms);
        let mut after: Option<SkuId> = None;
        let mut trimmed = 0;
        let mut repeats = 0;
        loop {
            let engine = Arc::clone(self);
            let from = after.clone();
            let (trims, next) = actix_web::rt::task::spawn_blocking(move || {
                crate::persistence::ledger::due_trims(&engine.store, cutoff_ms, from.as_ref())
            })
            .await
            .context("the ledger pass panicked")??;
            let mut full = false;
            for (sku, command) in trims {
                if let SkuCommand::TrimLedger { from_seq, upto_seq, .. } = &command {
                    full |= upto_seq + 1 - from_seq >= crate::persistence::ledger::TRIM_ROWS_MAX as u64;
                }
                let (reply, ticket) = self
                    .registry
                    .skus
                    .command(&sku, command, &crate::access::by_system())
                    .await?;
                // The next read of this SKU's rows must see the fold.
                self.writer.durability().wait(ticket).await?;
                if matches!(reply, Ok(Ok(_))) {
                    trimmed += 1;
                }
            }
            // A SKU with more old movements than one batch goes again, within bounds.
            if full && repeats < LEDGER_PAGE_REPEATS_MAX {
                repeats += 1;
                continue;
            }
            repeats = 0;
            match next {
                Some(last) => after = Some(last),
                None => return Ok(trimmed),
            }
        }
    }

    /// Runs retention every `interval` until the engine is dropped elsewhere.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        let engine = Arc::downgrade(self);
        actix_web::rt::spawn(async move {
            let mut ticker = actix_web::rt::time::interval(interval);
            ticker.tick().await;
            let mut last_ledger_pass = None;
            loop {
                ticker.tick().await;
                let Some(engine) = engine.upgrade() else { return };
                let sweeping = Arc::clone(&engine);
                let swept = actix_web::rt::task::spawn_blocking(move || sweeping.sweep()).await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(rows)) => tracing::debug!(rows, "retention removed rows"),
                    Ok(Err(error)) => tracing::warn!(error = %error, "retention pass failed"),
                    Err(_) => tracing::warn!("retention pass panicked"),
                }
                // Ledger retention is counted in days and reads every SKU: a pass every ten
                // minutes is plenty.
                if last_ledger_pass.is_none_or(|at: std::time::Instant| at.elapsed() >= LEDGER_PASS_EVERY) {
                    last_ledger_pass = Some(std::time::Instant::now());
                    match engine.trim_ledgers().await {
                        Ok(0) => {}
                        Ok(skus) => tracing::debug!(skus, "ledger retention folded old movements"),
                        Err(error) => tracing::warn!(error = %error, "ledger retention pass failed"),
                    }
                }
            }
        });
    }

    /// Makes everything queued durable, stops the writer, then stops and joins the arbiters
    /// (dropping the actors and their handles on the store).
    pub async fn shutdown(self: &Arc<Self>) {
        if let Some(bridge) = &self.kafka {
            // Its last position goes through the writer, so before the writer closes.
            if bridge.send(StopBridge).await.is_err() {
                tracing::warn!("the Kafka bridge was gone at shutdown");
            }
        }
        let engine = Arc::clone(self);
        let arbiters = std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let stopped = actix_web::rt::task::spawn_blocking(move || {
            engine.writer.close();
            // A last checkpoint: the next start replays little.
            engine.checkpointer.close();
            for arbiter in &arbiters {
                arbiter.stop();
            }
            for arbiter in arbiters {
                if arbiter.join().is_err() {
                    tracing::error!("an arbiter thread panicked");
                }
            }
        })
        .await;
        if stopped.is_err() {
            tracing::error!("shutting down the engine panicked");
        }
    }
}
