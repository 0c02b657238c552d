//! The crash loop at scale: 100,000 SKUs, live carts and orders, 50 SIGKILL-and-restart cycles
//! under keyed load, every invariant checked after each restart. Prints the recovery times
//! (process start to `/ready`); `STOCKROOM_SCALE_SKUS` and `STOCKROOM_CRASH_CYCLES` resize it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::crash::{check, crash_cycle, crash_run, put_sku, read_skus, Model, ServerProcess};

const INITIAL_ON_HAND: i64 = 1_000_000;
const CART_SKUS: usize = 50;
const CART_SKU_ON_HAND: i64 = 10_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A cart or order the test made: its lines and what it should read as.
struct Live {
    id: String,
    token: String,
    lines: Vec<(String, i64)>,
    status: &'static str,
}

/// POSTs `body` with `token` (none when empty).
async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// Carts with lines on their own SKUs: some left open, some checked out, some of those paid.
async fn live_carts_and_orders(client: &reqwest::Client, base: &str, rng: &mut StdRng) -> (Vec<Live>, Vec<Live>) {
    let (mut carts, mut orders) = (Vec::new(), Vec::new());
    for n in 0..60 {
        let created = post(client, format!("{base}/v1/carts"), "", json!({})).await;
        let id = created["cart_id"].as_str().unwrap().to_owned();
        let token = created["cart_token"].as_str().unwrap().to_owned();
        let mut lines = Vec::new();
        let first = rng.random_range(0..CART_SKUS);
        for sku in [first, (first + 1) % CART_SKUS] {
            let sku = format!("cart-sku-{sku}");
            let qty = rng.random_range(1..=3);
            let set = client
                .put(format!("{base}/v1/carts/{id}/items/{sku}"))
                .bearer_auth(&token)
                .json(&json!({"qty": qty}))
                .send()
                .await
                .unwrap();
            assert_eq!(set.status(), StatusCode::OK);
            lines.push((sku, qty));
        }
        lines.sort();
        if n % 2 == 0 {
            carts.push(Live {
                id,
                token,
                lines,
                status: "open",
            });
            continue;
        }
        let order = post(client, format!("{base}/v1/carts/{id}/checkout"), &token, json!({})).await;
        let order_id = order["order_id"].as_str().unwrap().to_owned();
        let mut status = "placed";
        if n % 4 == 1 {
            post(
                client,
                format!("{base}/v1/orders/{order_id}/pay"),
                crate::helpers::ADMIN_TOKEN,
                json!({"payment_ref": format!("p{n}")}),
            )
            .await;
            status = "paid";
        }
        orders.push(Live {
            id: order_id,
            token,
            lines,
            status,
        });
    }
    (carts, orders)
}

fn lines_of(body: &Value) -> Vec<(String, i64)> {
    let mut lines: Vec<(String, i64)> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| (line["sku"].as_str().unwrap().to_owned(), line["qty"].as_i64().unwrap()))
        .collect();
    lines.sort();
    lines
}

async fn check_carts_and_orders(client: &reqwest::Client, base: &str, carts: &[Live], orders: &[Live], cycle: usize) {
    for (live, kind) in carts
        .iter()
        .map(|cart| (cart, "carts"))
        .chain(orders.iter().map(|order| (order, "orders")))
    {
        let body: Value = client
            .get(format!("{base}/v1/{kind}/{}", live.id))
            .bearer_auth(&live.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], live.status, "cycle {cycle}: {kind} {}", live.id);
        assert_eq!(
            lines_of(&body),
            live.lines,
            "cycle {cycle}: lines of {kind} {}",
            live.id
        );
    }
    // The carts' SKUs: open carts hold their lines, orders committed theirs.
    let mut held: HashMap<String, i64> = HashMap::new();
    let mut sold: HashMap<String, i64> = HashMap::new();
    for cart in carts {
        for (sku, qty) in &cart.lines {
            *held.entry(sku.clone()).or_default() += qty;
        }
    }
    for order in orders {
        for (sku, qty) in &order.lines {
            *sold.entry(sku.clone()).or_default() += qty;
        }
    }
    let skus: Vec<String> = (0..CART_SKUS).map(|n| format!("cart-sku-{n}")).collect();
    let read = read_skus(client, base, &skus).await;
    for sku in &skus {
        let body = &read[sku];
        // Sold units stay on the shelf, committed, until shipped (nothing ships here).
        assert_eq!(
            (body["on_hand"].as_i64(), body["committed"].as_i64()),
            (Some(CART_SKU_ON_HAND), Some(sold.get(sku).copied().unwrap_or(0))),
            "cycle {cycle}: {sku}"
        );
        assert_eq!(
            body["reserved"].as_i64(),
            Some(held.get(sku).copied().unwrap_or(0)),
            "cycle {cycle}: {sku}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sigkills_with_a_hundred_thousand_skus_and_live_carts_lose_nothing() {
    let sku_count = env_or("STOCKROOM_SCALE_SKUS", 100_000);
    let (cycles, mut rng, dir, client) = crash_run("crash scale test", 50);
    println!("{sku_count} SKUs, {cycles} cycles");
    let mut server = ServerProcess::start(dir.path(), &client).await;
    let started = Instant::now();
    let skus: Vec<String> = (0..sku_count).map(|n| format!("s{n}")).collect();
    stream::iter(skus.iter())
        .for_each_concurrent(64, |sku| {
            let (client, base) = (&client, &server.base);
            async move { put_sku(client, base, sku, INITIAL_ON_HAND).await }
        })
        .await;
    for n in 0..CART_SKUS {
        put_sku(&client, &server.base, &format!("cart-sku-{n}"), CART_SKU_ON_HAND).await;
    }
    println!("created {sku_count} SKUs in {:?}", started.elapsed());
    let (carts, orders) = live_carts_and_orders(&client, &server.base, &mut rng).await;

    let model = Arc::new(Mutex::new(Model::new(skus.clone())));
    let mut recoveries = Vec::new();
    let mut acknowledged_total = 0;
    for cycle in 0..cycles {
        let (restarted, acknowledged, recovery) =
            crash_cycle(server, dir.path(), &client, &model, &mut rng, cycle, &[], &|| {}).await;
        server = restarted;
        acknowledged_total += acknowledged;
        recoveries.push(recovery);
        let snapshot = std::mem::take(&mut *model.lock().unwrap());
        // Every SKU the load changed, and a sample of the others, which must be untouched.
        let mut to_check = snapshot.touched();
        to_check.extend((0..200).map(|_| skus[rng.random_range(0..skus.len())].clone()));
        to_check.sort();
        to_check.dedup();
        check(
            &client,
            &server.base,
            &snapshot,
            &mut rng,
            cycle,
            &to_check,
            INITIAL_ON_HAND,
        )
        .await;
        *model.lock().unwrap() = snapshot;
        check_carts_and_orders(&client, &server.base, &carts, &orders, cycle).await;
    }
    let all = read_skus(&client, &server.base, &skus[..skus.len().min(1000)]).await;
    assert_eq!(all.len(), skus.len().min(1000), "the catalog survived");
    assert!(
        acknowledged_total > cycles * 10,
        "the load did real work: {acknowledged_total}"
    );
    recoveries.sort();
    println!(
        "{cycles} cycles, {acknowledged_total} acknowledged requests; recovery to /ready: p50 {:?}, max {:?}",
        recoveries[recoveries.len() / 2],
        recoveries[recoveries.len() - 1]
    );
}
