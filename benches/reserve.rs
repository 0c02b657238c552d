//! Durable reservations through the SKU actors and the group-commit writer, in process (no
//! HTTP): what the engine itself sustains. Each reservation is acknowledged only once its
//! batch is flushed and fsynced, exactly as the server does.
//!
//! Run: `cargo bench --bench reserve` (results in target/criterion; figures in
//! docs/BENCHMARKS.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use stockroom::actors::sku::ExecuteSkuCommand;
use stockroom::config::Settings;
use stockroom::domain::sku::{Product, SkuCommand};
use stockroom::domain::{Currency, Name, Quantity, ReservationId, SkuId, SystemClock};
use stockroom::engine::Engine;

// Allocates as the real binary does (`src/main.rs`): glibc's malloc took a fifth to a quarter of
// this benchmark's CPU, which the server never pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reservations in flight at once, like 64 HTTP connections (and, in the `_1024` workloads,
/// like a flash sale's many shoppers).
const IN_FLIGHT: u64 = 64;

async fn start_engine(dir: &std::path::Path, skus: usize) -> (Arc<Engine>, Vec<SkuId>) {
    let mut settings = Settings::default();
    settings.store.data_dir = dir.to_owned();
    settings.reservation.max_holds_per_sku = 50_000_000;
    let engine = Engine::start(
        &settings,
        Arc::new(SystemClock),
        None,
        Arc::new(|error| panic!("store failed: {error}")),
    )
    .await
    .expect("engine starts");
    let ids: Vec<SkuId> = (0..skus)
        .map(|n| SkuId::parse(&format!("bench-{n}")).unwrap())
        .collect();
    let chunk = ids.len().div_ceil(IN_FLIGHT as usize);
    join_all(ids.chunks(chunk).map(|chunk| {
        let engine = &engine;
        async move {
            for id in chunk {
                let product = Product {
                    name: Name::parse("Bench item", "name", "invalid_name").unwrap(),
                    price_minor: 100,
                    currency: Currency::parse("EUR").unwrap(),
                };
                reserve_or(
                    engine,
                    id,
                    SkuCommand::Upsert {
                        product,
                        on_hand: Some(1_000_000_000_000),
                        low_stock_threshold: None,
                        backorder_limit: None,
                        available_from_ms: None,
                    },
                )
                .await;
            }
        }
    }))
    .await;
    (engine, ids)
}

async fn reserve_or(engine: &Engine, sku: &SkuId, command: SkuCommand) {
    let mailbox = engine.registry.sku_or_start(sku);
    let acked = mailbox
        .ask(|reply, slot| ExecuteSkuCommand {
            command,
            idempotency: None,
            by: stockroom::access::by_system(),
            reply,
            slot,
        })
        .expect("mailbox has room")
        .await
        .expect("actor answers");
    engine.writer.durability().wait(acked.ticket).await.expect("durable");
    assert!(acked.value.is_ok(), "{:?}", acked.value);
}

/// Runs `total` durable reservations with `in_flight` at a time, spread over `skus`.
async fn run(engine: &Engine, skus: &[SkuId], total: u64, in_flight: u64) -> Duration {
    let started = Instant::now();
    let per_client = total.div_ceil(in_flight);
    join_all((0..in_flight).map(|client| async move {
        for n in 0..per_client {
            let sku = &skus[((client * per_client + n) as usize) % skus.len()];
            let command = SkuCommand::Reserve {
                id: ReservationId::generate(),
                qty: Quantity::parse(1, 1).unwrap(),
                ttl_ms: 3_600_000,
                placement: stockroom::domain::sku::Placement::Any,
            };
            reserve_or(engine, sku, command).await;
        }
    }))
    .await;
    started.elapsed()
}

fn reservations(c: &mut Criterion) {
    let system = actix::System::new();
    let mut group = c.benchmark_group("durable_reservations");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, sku_count, in_flight) in [
        ("one_hot_sku", 1usize, IN_FLIGHT),
        ("10k_skus", 10_000, IN_FLIGHT),
        ("one_hot_sku_1024", 1, 1024),
        ("10k_skus_1024", 10_000, 1024),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (engine, skus) = system.block_on(start_engine(dir.path(), sku_count));
        group.bench_function(name, |bench| {
            bench.iter_custom(|iterations| system.block_on(run(&engine, &skus, iterations, in_flight)));
        });
        system.block_on(engine.shutdown());
    }
    group.finish();
}

criterion_group!(benches, reservations);
criterion_main!(benches);
