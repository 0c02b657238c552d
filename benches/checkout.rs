//! Checkouts per second (cart of 3 lines, from create to placed) beside durable reservations
//! per second, in one run, in process (actors, group-commit writer, sled with fsync; no HTTP).
//!
//! Run: `cargo bench --bench checkout` (10 s per workload). Under `cargo test` it runs for a
//! moment only, to show it still works. Results: docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use stockroom::actors::cart::{CartOutcome, CheckoutCart, SetCartLine};
use stockroom::actors::sku::ExecuteSkuCommand;
use stockroom::actors::{persist, Access};
use stockroom::config::Settings;
use stockroom::domain::cart::Cart;
use stockroom::domain::sku::{Product, SkuCommand};
use stockroom::domain::{CartId, Currency, Name, Quantity, ReservationId, SkuId, SystemClock};
use stockroom::engine::Engine;
use stockroom::persistence::{codec, keys, Op};

// Allocates as the real binary does (`src/main.rs`): glibc's malloc took a fifth to a quarter of
// this benchmark's CPU, which the server never pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flows in flight at once, like 64 connections.
const IN_FLIGHT: usize = 64;
const SKUS: usize = 100;

async fn durable(engine: &Engine, ticket: u64) {
    engine.writer.durability().wait(ticket).await.expect("durable");
}

async fn reserve(engine: &Engine, sku: &SkuId) {
    let mailbox = engine.registry.sku(sku).expect("sku");
    let command = SkuCommand::Reserve {
        id: ReservationId::generate(),
        qty: Quantity::parse(1, 1).unwrap(),
        ttl_ms: 3_600_000,
        placement: stockroom::domain::sku::Placement::Any,
    };
    let acked = mailbox
        .ask(|reply, slot| ExecuteSkuCommand {
            command,
            idempotency: None,
            by: stockroom::access::by_system(),
            reply,
            slot,
        })
        .expect("room")
        .await
        .expect("answer");
    assert!(acked.value.is_ok());
    durable(engine, acked.ticket).await;
}

/// Create a cart, set three lines, check out; durable at every answer, as over HTTP.
async fn checkout_flow(engine: &Engine, skus: &[SkuId], start: usize) {
    let id = CartId::generate();
    let now_ms = engine.clock.now_ms();
    let cart = Cart::new(id, [7; 32], now_ms, engine.registry.carts.limits().ttl_ms);
    let ticket = persist(
        &engine.writer,
        vec![Op::Put(keys::cart(&id), codec::encode(&cart))],
        Vec::new(),
        now_ms,
        &stockroom::access::by_system(),
    )
    .expect("room");
    durable(engine, ticket).await;
    let mailbox = engine.registry.carts.start(cart);
    for line in 0..3 {
        let sku = skus[(start + line * 37) % skus.len()].clone();
        let acked = mailbox
            .ask(|reply, slot| SetCartLine {
                access: Access::Staff,
                sku,
                qty: 1,
                placement: stockroom::domain::sku::Placement::Any,
                idempotency: None,
                by: stockroom::access::by_system(),
                reply,
                slot,
            })
            .expect("room")
            .await
            .expect("answer");
        assert!(acked.value.is_ok(), "{:?}", acked.value);
        durable(engine, acked.ticket).await;
    }
    let acked = mailbox
        .ask(|reply, slot| CheckoutCart {
            access: Access::Staff,
            details: Default::default(),
            idempotency: None,
            by: stockroom::access::by_system(),
            reply,
            slot,
        })
        .expect("room")
        .await
        .expect("answer");
    assert!(matches!(acked.value, Ok(CartOutcome::Order(_))), "{:?}", acked.value);
    durable(engine, acked.ticket).await;
}

/// Runs `flow` with IN_FLIGHT workers for `duration`; returns each completed flow's latency.
async fn measure<F, Fut>(duration: Duration, flow: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Clone,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let per_worker = join_all((0..IN_FLIGHT).map(|worker| {
        let flow = flow.clone();
        async move {
            let mut latencies = Vec::new();
            let mut n = worker;
            while started.elapsed() < duration {
                let begun = Instant::now();
                flow(n).await;
                latencies.push(begun.elapsed());
                n += IN_FLIGHT;
            }
            latencies
        }
    }))
    .await;
    (started.elapsed(), per_worker.into_iter().flatten().collect())
}

fn report(name: &str, elapsed: Duration, mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "| {name} | {} | {rate:.0} | {:.2} | {:.2} |",
        latencies.len(),
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
    rate
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let duration = if benchmarking {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(300)
    };
    let system = actix::System::new();
    let dir = tempfile::tempdir().unwrap();
    system.block_on(async {
        let mut settings = Settings::default();
        settings.store.data_dir = dir.path().to_owned();
        settings.reservation.max_holds_per_sku = 50_000_000;
        let engine = Engine::start(
            &settings,
            Arc::new(SystemClock),
            None,
            Arc::new(|error| panic!("store failed: {error}")),
        )
        .await
        .expect("engine starts");
        let skus: Vec<SkuId> = (0..SKUS).map(|n| SkuId::parse(&format!("item-{n}")).unwrap()).collect();
        for sku in &skus {
            let product = Product {
                name: Name::parse("Bench item", "name", "invalid_name").unwrap(),
                price_minor: 500,
                currency: Currency::parse("EUR").unwrap(),
            };
            let mailbox = engine.registry.sku_or_start(sku);
            let command = SkuCommand::Upsert {
                product,
                on_hand: Some(1_000_000_000),
                low_stock_threshold: None,
                backorder_limit: None,
                available_from_ms: None,
            };
            let acked = mailbox
                .ask(|reply, slot| ExecuteSkuCommand {
                    command,
                    idempotency: None,
                    by: stockroom::access::by_system(),
                    reply,
                    slot,
                })
                .unwrap()
                .await
                .unwrap();
            durable(&engine, acked.ticket).await;
        }
        println!(
            "| workload ({IN_FLIGHT} in flight, {} s) | completed | per second | p50 ms | p99 ms |",
            duration.as_secs_f64()
        );
        println!("| --- | ---: | ---: | ---: | ---: |");
        let (elapsed, latencies) = measure(duration, |n| {
            let (engine, sku) = (Arc::clone(&engine), skus[n % SKUS].clone());
            async move { reserve(&engine, &sku).await }
        })
        .await;
        let reservations = report("durable reservation, 100 SKUs", elapsed, latencies);
        let (elapsed, latencies) = measure(duration, |n| {
            let (engine, skus) = (Arc::clone(&engine), skus.clone());
            async move { checkout_flow(&engine, &skus, n).await }
        })
        .await;
        let checkouts = report("checkout: create cart, 3 lines, check out", elapsed, latencies);
        println!(
            "\ncheckouts per second / reservations per second: {:.3}",
            checkouts / reservations
        );
        engine.shutdown().await;
    });
}
