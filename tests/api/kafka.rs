//! The Kafka bridge against a real Kafka-protocol broker (tansu): every event of the log
//! arrives on its topic as a CloudEvent, in order per aggregate, through broker outages and
//! server crashes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::persistence::SledStore;
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::crash::ServerProcess;
use crate::helpers::{TestApp, ADMIN_TOKEN};
use crate::kafka_support::{
    check_against_log, copies, event_log, metric_value, read_dead_letters, Broker, Reader, PARTITIONS,
};

const SOURCE: &str = "/stockroom-test";

/// Settings that switch the bridge on against `broker`, with topics under `prefix`.
fn kafka_env(broker: &Broker, prefix: &str) -> Vec<(String, String)> {
    [
        ("STOCKROOM_KAFKA__ENABLED", "true".to_owned()),
        ("STOCKROOM_KAFKA__BROKERS", broker.address()),
        ("STOCKROOM_KAFKA__TOPIC_PREFIX", prefix.to_owned()),
        ("STOCKROOM_KAFKA__SOURCE", SOURCE.to_owned()),
        ("STOCKROOM_KAFKA__PARTITIONS", PARTITIONS.to_string()),
        // The shipped defaults otherwise: no tuned timeouts or backoffs.
        ("STOCKROOM_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect()
}

/// Every event in the store's log, read after the server stopped.
fn stored_log(dir: &std::path::Path) -> Vec<stockroom::domain::EventRecord> {
    let store = SledStore::open(&dir.join("data").join("store"), 16 << 20).expect("the store opens");
    let log = event_log(&store);
    drop(store);
    log
}

#[actix_web::test]
async fn every_change_of_a_mixed_workload_arrives_on_its_topic_as_a_cloud_event() {
    let broker = Broker::start();
    let address = broker.address();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.kafka.enabled = true;
        settings.kafka.brokers = address.clone();
        settings.kafka.topic_prefix = "mixed".to_owned();
        settings.kafka.source = SOURCE.to_owned();
        settings.kafka.partitions = PARTITIONS;
    })
    .await;
    let reader = Reader::start(&broker.address(), "mixed");

    // Inventory: SKUs, restock, adjust, reservations committed, released and held.
    for sku in ["mug", "tee", "cap", "pin"] {
        app.create_sku(sku, 50).await;
    }
    let restocked = app
        .admin(Method::POST, "/v1/skus/mug/restock")
        .json(&json!({"qty": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    let adjusted = app
        .admin(Method::POST, "/v1/skus/tee/adjust")
        .json(&json!({"delta": -2, "reason": "damaged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(adjusted.status(), StatusCode::OK);
    let mut reservation_ids = Vec::new();
    for n in 0..12u64 {
        let sku = ["mug", "tee", "cap"][(n % 3) as usize];
        let held: Value = app.reserve(sku, 1 + n % 2, 600).await.json().await.unwrap();
        let id = held["reservation_id"].as_str().unwrap().to_owned();
        let settle = match n % 3 {
            0 => Some(app.admin(Method::POST, &format!("/v1/reservations/{id}/commit"))),
            1 => Some(app.admin(Method::DELETE, &format!("/v1/reservations/{id}"))),
            _ => None,
        };
        if let Some(request) = settle {
            assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
        }
        reservation_ids.push(id);
    }
    // Carts and orders: one paid, one cancelled after payment, one left placed; an open cart.
    let mut order_ids = Vec::new();
    let psp = app.credential("psp", &["payments"]).await;
    let warehouse = app.credential("warehouse", &["fulfilment"]).await;
    for n in 0..3 {
        let cart = app.create_cart().await;
        assert_eq!(app.set_line(&cart, "mug", 2).await.status(), StatusCode::OK);
        assert_eq!(app.set_line(&cart, "pin", 1).await.status(), StatusCode::OK);
        let order: Value = app.checkout(&cart).await.json().await.unwrap();
        let order_id = order["order_id"].as_str().unwrap().to_owned();
        if n < 2 {
            let paid = app
                .with_token(&psp, Method::POST, &format!("/v1/orders/{order_id}/pay"))
                .json(&json!({"payment_ref": format!("pay-{n}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(paid.status(), StatusCode::OK);
        }
        if n == 1 {
            let cancelled = app
                .with_token(&warehouse, Method::POST, &format!("/v1/orders/{order_id}/cancel"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(cancelled.status(), StatusCode::OK);
        }
        order_ids.push(order_id);
    }
    let short = app.create_cart().await;
    assert_eq!(app.set_line(&short, "cap", 3).await.status(), StatusCode::OK);
    let drained = app
        .admin(Method::POST, "/v1/skus/cap/adjust")
        .json(&json!({"delta": -1, "reason": "count"}))
        .send()
        .await
        .unwrap();
    assert_eq!(drained.status(), StatusCode::OK);

    let engine = Arc::clone(app.state.engine().unwrap());
    engine.barrier().await.unwrap();
    let log = event_log(engine.store.storage.as_ref());
    assert!(log.len() > 60, "the workload wrote {} events", log.len());
    let (first, last) = (log[0].seq, log[log.len() - 1].seq);
    assert_eq!(last - first + 1, log.len() as u64, "the log has no gaps");
    reader.wait_for(first..=last, Duration::from_secs(60)).await;
    let received = reader.finish();
    check_against_log(&received, &log, "mixed", SOURCE);

    // The data says what happened, in the API's words.
    let find = |kind: &str, subject: &str| -> Vec<Value> {
        received
            .iter()
            .filter(|record| record.event["type"] == kind && record.event["subject"] == subject)
            .map(|record| record.event["data"].clone())
            .collect()
    };
    let created = find("stockroom.sku.created", "mug");
    assert_eq!(created[0]["on_hand"], 50);
    assert_eq!(created[0]["price_minor"], 1299);
    assert_eq!(find("stockroom.stock.restocked", "mug")[0]["qty"], 5);
    assert_eq!(find("stockroom.stock.adjusted", "tee")[0]["delta"], -2);
    assert_eq!(find("stockroom.stock.adjusted", "tee")[0]["reason"], "damaged");
    let reserved = find("stockroom.stock.reserved", "mug");
    assert!(reserved
        .iter()
        .any(|data| data["reservation_id"] == reservation_ids[0].as_str()));
    let committed = find("stockroom.stock.committed", "mug");
    assert!(committed
        .iter()
        .any(|data| data["reservation_id"] == reservation_ids[0].as_str()));
    let placed = find("stockroom.order.placed", &order_ids[0]);
    assert_eq!(placed[0]["total_minor"], 2 * 1299 + 1299);
    assert_eq!(placed[0]["lines"].as_array().unwrap().len(), 2);
    assert_eq!(find("stockroom.order.paid", &order_ids[0])[0]["status"], "paid");
    assert_eq!(find("stockroom.order.cancelled", &order_ids[1]).len(), 1);
    assert_eq!(find("stockroom.order.stock_returned", &order_ids[1]).len(), 1);
    assert!(received
        .iter()
        .any(|record| record.event["type"] == "stockroom.cart.checked_out"));

    // Every event names who made its change: the credential, the admin token, or the cart.
    let by = |kind: &str, subject: &str| -> Vec<String> {
        received
            .iter()
            .filter(|record| record.event["type"] == kind && record.event["subject"] == subject)
            .map(|record| record.event["by"].as_str().expect("every event has by").to_owned())
            .collect()
    };
    assert_eq!(by("stockroom.sku.created", "mug"), ["admin"]);
    assert_eq!(by("stockroom.order.paid", &order_ids[0]), ["psp"]);
    assert_eq!(by("stockroom.order.cancelled", &order_ids[1]), ["warehouse"]);
    assert_eq!(by("stockroom.order.stock_returned", &order_ids[1]), ["warehouse"]);
    assert_eq!(by("stockroom.order.placed", &order_ids[2]), ["cart"]);
    assert!(received.iter().all(|record| record.event["by"].is_string()));
    app.stop().await;
}

/// Reserve-and-release traffic from a few clients until `stop` is set; returns requests done.
fn spawn_load(base: String, stop: Arc<AtomicBool>) -> actix_web::rt::task::JoinHandle<u64> {
    actix_web::rt::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut workers = Vec::new();
        for worker in 0..4 {
            let (client, base, stop) = (client.clone(), base.clone(), Arc::clone(&stop));
            workers.push(actix_web::rt::spawn(async move {
                let mut done = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sku = format!("k{}", (worker * 7 + n) % 8);
                    let held = client
                        .post(format!("{base}/v1/skus/{sku}/reservations"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&json!({"qty": 1, "ttl_seconds": 600}))
                        .send()
                        .await;
                    let Ok(held) = held else { continue };
                    let Ok(body) = held.json::<Value>().await else { continue };
                    if let Some(id) = body["reservation_id"].as_str() {
                        let _ = client
                            .delete(format!("{base}/v1/reservations/{id}"))
                            .bearer_auth(ADMIN_TOKEN)
                            .send()
                            .await;
                        done += 1;
                    }
                }
                done
            }));
        }
        let mut total = 0;
        for worker in workers {
            total += worker.await.unwrap_or(0);
        }
        total
    })
}

async fn create_skus(client: &reqwest::Client, base: &str) {
    for n in 0..8 {
        let created = client
            .put(format!("{base}/v1/skus/k{n}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": format!("K {n}"), "price_minor": 100, "currency": "EUR", "on_hand": 1_000_000}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
    }
}

async fn metrics_page(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the server reports a Kafka backlog of zero.
async fn wait_for_empty_backlog(client: &reqwest::Client, base: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let page = metrics_page(client, base).await;
        if metric_value(&page, "stockroom_kafka_backlog_events") == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Kafka backlog did not drain: {:?}",
            metric_value(&page, "stockroom_kafka_backlog_events")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The broker is killed under load and comes back empty after `outage`, with the shipped
/// Kafka defaults: every event arrives, once at least, with no gaps and in order per key.
async fn an_empty_broker_back_after(outage: Duration, prefix: &str) {
    let mut broker = Broker::start();
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let env = kafka_env(&broker, prefix);
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    create_skus(&client, &server.base).await;
    let before = Reader::start(&broker.address(), prefix);

    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(server.base.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // tansu keeps records in memory: a restarted broker is empty. So that the reader can
    // account for every event, the broker is stopped only once it has read everything the
    // broker acknowledged; the load pauses for that moment and resumes at once.
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(60)).await;
    let position = metric_value(&metrics_page(&client, &server.base).await, "stockroom_kafka_position").unwrap() as u64;
    before.wait_for(1..position, Duration::from_secs(60)).await;

    broker.stop();
    // Done before the broker returns: its consumer would otherwise read the new, empty one.
    let mut received = before.finish();
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(server.base.clone(), Arc::clone(&stop));
    tokio::time::sleep(outage).await;
    let page = metrics_page(&client, &server.base).await;
    let backlog = metric_value(&page, "stockroom_kafka_backlog_events").unwrap();
    assert!(backlog > 10.0, "the backlog grows while the broker is away: {backlog}");
    broker.restart();
    let returned = std::time::Instant::now();
    let after = Reader::start(&broker.address(), prefix);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let requests = load.await.unwrap();
    assert!(requests > 100, "the server served during the outage: {requests}");
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(120)).await;
    println!(
        "after an outage of {} s, the backlog drained {} ms after the broker came back empty",
        outage.as_secs(),
        returned.elapsed().as_millis()
    );
    assert!(server.terminate(), "a clean stop");

    let log = stored_log(dir.path());
    let end = log.last().unwrap().seq;
    after.wait_for(position..=end, Duration::from_secs(60)).await;
    received.extend(after.finish());
    check_against_log(&received, &log, prefix, SOURCE);
}

#[actix_web::test]
async fn a_short_outage_under_load_loses_nothing_and_the_backlog_drains() {
    an_empty_broker_back_after(Duration::from_secs(5), "short").await;
}

#[actix_web::test]
async fn an_outage_longer_than_any_producer_timeout_loses_nothing_and_the_backlog_drains() {
    // Messages never time out locally (message.timeout.ms = 0); 65 s outlasts every other
    // timeout the producer has on (socket.timeout.ms, the longest, is 60 s).
    an_empty_broker_back_after(Duration::from_secs(65), "long").await;
}

#[actix_web::test]
async fn a_broker_killed_under_load_and_back_with_its_data_gets_every_event_in_order() {
    let data = TempDir::new().unwrap();
    let mut broker = Broker::start_keeping_data(data.path());
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let env = kafka_env(&broker, "kept");
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    create_skus(&client, &server.base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(server.base.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGKILL: the broker keeps what it committed, and the producer state it had.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart();
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let requests = load.await.unwrap();
    assert!(requests > 100, "the server served throughout: {requests}");
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(120)).await;
    println!(
        "a broker back with its data: the backlog drained {} ms after its return",
        returned.elapsed().as_millis()
    );
    assert!(server.terminate(), "a clean stop");

    // Everything is in Kafka, read from the beginning: what was there before the kill and
    // what came after.
    let log = stored_log(dir.path());
    let (first, end) = (log[0].seq, log.last().unwrap().seq);
    let reader = Reader::start(&broker.address(), "kept");
    reader.wait_for(first..=end, Duration::from_secs(60)).await;
    check_against_log(&reader.finish(), &log, "kept", SOURCE);
}

#[actix_web::test]
async fn publishing_resumes_from_the_stored_position_after_a_kill() {
    let broker = Broker::start();
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let env = kafka_env(&broker, "killed");
    let mut reader = None;
    let mut positions = Vec::new();
    for cycle in 0..3 {
        let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
        if cycle == 0 {
            create_skus(&client, &server.base).await;
            reader = Some(Reader::start(&broker.address(), "killed"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = spawn_load(server.base.clone(), Arc::clone(&stop));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A position the bridge stored a while ago: durable long before the kill.
        let page = metrics_page(&client, &server.base).await;
        positions.push(metric_value(&page, "stockroom_kafka_position").unwrap_or(0.0) as u64);
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        let _ = load.await;
    }
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(60)).await;
    assert!(server.terminate());

    let log = stored_log(dir.path());
    let (first, end) = (log[0].seq, log.last().unwrap().seq);
    let reader = reader.expect("started in the first cycle");
    reader.wait_for(first..=end, Duration::from_secs(60)).await;
    let received = reader.finish();
    check_against_log(&received, &log, "killed", SOURCE);
    // Resumed from the stored position: what was stored as delivered is never sent again.
    let copies = copies(&received);
    let floor = positions[0];
    assert!(floor > 100, "the bridge delivered before the first kill: {floor}");
    let resent_below: Vec<u64> = copies
        .range(..floor)
        .filter(|(_, count)| **count > 1)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        resent_below.is_empty(),
        "events below the stored position {floor} were sent again: {resent_below:?}"
    );
    let duplicates: usize = copies.values().map(|count| count - 1).sum();
    println!(
        "kill test: {} events, {duplicates} duplicates, positions {positions:?}",
        log.len()
    );
}

#[actix_web::test]
async fn retention_keeps_every_event_kafka_has_not_acknowledged() {
    let mut broker = Broker::start();
    broker.stop();
    let address = broker.address();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.kafka.enabled = true;
        settings.kafka.brokers = address.clone();
        settings.kafka.topic_prefix = "kept".to_owned();
        settings.kafka.partitions = PARTITIONS;
        settings.kafka.retry_backoff_max_ms = 500;
        settings.events.retention_max_events = 10;
    })
    .await;
    app.create_sku("mug", 1000).await;
    for _ in 0..40 {
        assert_eq!(app.reserve("mug", 1, 600).await.status(), StatusCode::CREATED);
    }
    let engine = Arc::clone(app.state.engine().unwrap());
    let swept_log = |engine: &stockroom::engine::Engine| {
        engine.checkpoint().unwrap();
        event_log(engine.store.storage.as_ref())
    };
    engine.barrier().await.unwrap();
    let log = swept_log(&engine);
    engine.barrier().await.unwrap();
    assert_eq!(
        event_log(engine.store.storage.as_ref()).len(),
        log.len(),
        "nothing removed while the broker is away"
    );
    assert!(log.len() >= 41, "every event kept: {}", log.len());
    let end = log.last().unwrap().seq + 1;

    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stockroom::actors::kafka::stored_position(&engine.store).unwrap() < Some(end) {
        assert!(Instant::now() < deadline, "the bridge never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.barrier().await.unwrap();
    let trimmed = swept_log(&engine);
    // The log is trimmed by whole records, so the record holding the 10th-newest event
    // may keep a few older ones with it.
    assert!(
        trimmed.len() >= 10 && trimmed.len() < log.len(),
        "once delivered and checkpointed, the log is trimmed to the retention: {} events left",
        trimmed.len()
    );
    assert!(trimmed.last().unwrap().seq >= end - 1, "the newest events stay");
    app.stop().await;
}

#[actix_web::test]
async fn an_undecodable_log_record_goes_to_the_dead_letter_topic_and_the_events_after_it_are_published() {
    use stockroom::persistence::log::decode_record;
    use stockroom::persistence::Log;

    let mut broker = Broker::start();
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let env = kafka_env(&broker, "damaged");
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    create_skus(&client, &server.base).await;
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(60)).await;
    // With the broker away, six reservations wait in the log, one record each.
    broker.stop();
    for _ in 0..6 {
        reserve_one(&client, &server.base, "k0").await;
    }
    assert!(server.terminate(), "a clean stop checkpoints everything");

    // The third of those records rots on disk: checkpointed, so recovery never reads it, but
    // the bridge must.
    let store_dir = dir.path().join("data").join("store");
    let (damaged_position, damaged_seqs, after) = {
        let store = SledStore::open(&store_dir, 16 << 20).expect("the store opens");
        let log: &dyn Log = &store;
        let records: Vec<(u64, Vec<u64>)> = log
            .read(0, 100_000)
            .unwrap()
            .into_iter()
            .map(|(position, bytes)| {
                let record = decode_record(position, &bytes).unwrap();
                (
                    position,
                    record.events.iter().map(|event| event.seq).collect::<Vec<u64>>(),
                )
            })
            .filter(|(_, seqs)| !seqs.is_empty())
            .collect();
        let damaged = records.len() - 4;
        let (position, seqs) = records[damaged].clone();
        let after: Vec<u64> = records[damaged + 1..]
            .iter()
            .flat_map(|(_, seqs)| seqs.clone())
            .collect();
        log.append(vec![(position, b"rotten bytes, not a record".to_vec())])
            .unwrap();
        log.sync().unwrap();
        (position, seqs, after)
    };

    broker.restart();
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(60)).await;
    let health = get_json(&client, &format!("{}/health", server.base)).await;
    assert_eq!(
        health["kafka"]["dead_lettered_events"],
        damaged_seqs.len() as u64,
        "{health}"
    );
    assert!(server.terminate());

    let letters = read_dead_letters(&broker.address(), "damaged", 1, Duration::from_secs(60));
    let letter = &letters[0];
    assert_eq!(letter["log_position"], damaged_position, "{letter}");
    assert_eq!(letter["first_seq"], damaged_seqs[0], "{letter}");
    assert_eq!(letter["end_seq"], damaged_seqs.last().unwrap() + 1, "{letter}");
    assert!(
        letter["reason"].as_str().unwrap().contains("cannot be decoded"),
        "{letter}"
    );
    // Every event after the damaged record was published (the broker came back empty, so
    // only those are there).
    assert_eq!(
        after.len(),
        6,
        "three reservations after the damaged one, each with its ledger movement"
    );
    let reader = Reader::start(&broker.address(), "damaged");
    reader.wait_for(after.iter().copied(), Duration::from_secs(60)).await;
}

#[actix_web::test]
async fn an_event_the_producer_refuses_goes_to_the_dead_letter_topic_and_the_rest_are_published() {
    let broker = Broker::start();
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let mut env = kafka_env(&broker, "refused");
    // librdkafka's smallest message size: a SKU with a long name no longer fits.
    env.push((
        "STOCKROOM_KAFKA__OPTIONS__message.max.bytes".to_owned(),
        "1000".to_owned(),
    ));
    let server = ServerProcess::start_with(dir.path(), &client, &as_pairs(&env)).await;
    let put = |sku: &str, name: String| {
        client
            .put(format!("{}/v1/skus/{sku}", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "price_minor": 100, "currency": "EUR", "on_hand": 10}))
            .send()
    };
    assert_eq!(
        put("plain", "Plain".to_owned()).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put("huge", "😀".repeat(200)).await.unwrap().status(),
        StatusCode::CREATED
    );
    for _ in 0..2 {
        reserve_one(&client, &server.base, "plain").await;
    }
    wait_for_empty_backlog(&client, &server.base, Duration::from_secs(60)).await;
    let health = get_json(&client, &format!("{}/health", server.base)).await;
    assert_eq!(health["kafka"]["dead_lettered_events"], 1, "{health}");
    assert!(server.terminate());

    let log = stored_log(dir.path());
    let huge = log
        .iter()
        .find(|record| record.event.subject() == "huge")
        .expect("the huge SKU's event is in the log")
        .seq;
    let letters = read_dead_letters(&broker.address(), "refused", 1, Duration::from_secs(60));
    assert_eq!(letters[0]["first_seq"], huge, "{}", letters[0]);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("refused"),
        "{}",
        letters[0]
    );
    let rest: Vec<u64> = log.iter().map(|record| record.seq).filter(|seq| *seq != huge).collect();
    let reader = Reader::start(&broker.address(), "refused");
    reader.wait_for(rest.iter().copied(), Duration::from_secs(60)).await;
    assert!(
        !reader.seqs().contains(&huge),
        "the refused event is only in the dead-letter topic"
    );
}

/// Holds one unit of `sku` on the server at `base`.
async fn reserve_one(client: &reqwest::Client, base: &str, sku: &str) {
    let reserved = client
        .post(format!("{base}/v1/skus/{sku}/reservations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"qty": 1, "ttl_seconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.status(), StatusCode::CREATED);
}

/// `GET url` as JSON.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}
