//! Recovery from a long log: a crash that left 1,000,000 changes in the log and none in a
//! checkpoint. The server replays them all, checks every invariant, serves the right stock,
//! and reports how long recovery took.

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use stockroom::domain::sku::{LegacyHold, Product, SkuEvent};
use stockroom::domain::{Currency, Name, ReservationId, SkuId};
use stockroom::domain::{DomainEvent, EventRecord};
use stockroom::persistence::log::encode_record;
use stockroom::persistence::rows::LegacySkuRow;
use stockroom::persistence::{codec, keys, Log, Op, SledStore};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, TestApp};

const SKUS: u64 = 1_000;
const CHANGES: u64 = 1_000_000;
const ON_HAND: u64 = 5_000;
/// Changes per log record, about what a busy group commit writes.
const CHANGES_PER_RECORD: u64 = 40;

fn product() -> Product {
    Product {
        name: Name::parse("Replayed", "name", "invalid_name").unwrap(),
        price_minor: 100,
        currency: Currency::parse("EUR").unwrap(),
    }
}

/// Writes what a crashed server leaves behind: every SKU created, then `CHANGES - SKUS`
/// reservations, all in the log, nothing checkpointed. Returns the units held per SKU.
fn write_log(dir: &std::path::Path) -> Vec<u64> {
    let store = SledStore::open(&dir.join("store"), 64 << 20).unwrap();
    let now_ms = 1_700_000_000_000u64;
    let skus: Vec<SkuId> = (0..SKUS).map(|n| SkuId::parse(&format!("r{n}")).unwrap()).collect();
    let mut reserved = vec![0u64; skus.len()];
    let mut position = 0u64;
    let mut seq = 1u64;
    let mut change = 0u64;
    while change < CHANGES {
        let mut ops = Vec::new();
        let mut events = Vec::new();
        for _ in 0..CHANGES_PER_RECORD.min(CHANGES - change) {
            let index = usize::try_from(change % SKUS).unwrap();
            let sku = &skus[index];
            let event = if change < SKUS {
                SkuEvent::SkuCreated {
                    product: product(),
                    on_hand: ON_HAND,
                }
            } else {
                reserved[index] += 1;
                // The layout of the release before locations: this log is also a
                // migration test.
                let hold = LegacyHold {
                    id: ReservationId::generate(),
                    qty: 1,
                    created_ms: now_ms,
                    // Far ahead: nothing lapses while the test runs.
                    expires_ms: now_ms + 10 * 365 * 86_400_000,
                };
                ops.push(Op::Put(keys::hold(sku, &hold.id), codec::encode(&hold)));
                SkuEvent::StockReserved { hold }
            };
            let row = LegacySkuRow {
                product: product(),
                on_hand: ON_HAND,
                reserved: reserved[index],
            };
            ops.push(Op::Put(keys::sku(sku), codec::encode(&row)));
            events.push(EventRecord {
                seq,
                time_ms: now_ms,
                event: DomainEvent::Sku {
                    sku: sku.clone(),
                    event,
                },
                by: stockroom::access::by_system(),
            });
            seq += 1;
            change += 1;
        }
        position += 1;
        store.append(vec![(position, encode_record(&ops, &events))]).unwrap();
    }
    store.sync().unwrap();
    reserved
}

#[actix_web::test]
async fn a_crash_that_left_a_million_changes_in_the_log_recovers_them_all() {
    let dir = Arc::new(TempDir::new().unwrap());
    let writing = Instant::now();
    let reserved = write_log(dir.path());
    println!("wrote the log in {} ms", writing.elapsed().as_millis());
    let started = Instant::now();
    let app = TestApp::spawn_with(Arc::clone(&dir), Options::default(), |_| {}).await;
    let ready = started.elapsed();
    let metrics = app.metrics().await;
    let recovery_seconds = metrics
        .lines()
        .find_map(|line| line.strip_prefix("stockroom_recovery_duration_seconds "))
        .expect("the recovery time is reported");
    println!(
        "recovery of {CHANGES} unreplayed log changes: {recovery_seconds} s by the server's metric (store open to actors started), {} ms to ready ({} build; release figures are in docs/BENCHMARKS.md)",
        ready.as_millis(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    for index in [0usize, 1, 499, 998, 999] {
        let sku = app.sku(&format!("r{index}")).await;
        assert_eq!(
            counters(&sku),
            (ON_HAND, reserved[index], ON_HAND - reserved[index]),
            "SKU r{index} as the log left it"
        );
    }
    // The replayed state is live: it takes new changes, and survives a clean restart
    // (which checkpoints it).
    assert_eq!(app.reserve("r7", 1, 600).await.status(), StatusCode::CREATED);
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(
        counters(&app.sku("r7").await),
        (ON_HAND, reserved[7] + 1, ON_HAND - reserved[7] - 1)
    );
    app.stop().await;
}
