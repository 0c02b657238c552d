//! Crash during checkout: the real binary with many shoppers filling carts, checking out,
//! paying and cancelling, killed with SIGKILL at random moments, at least 20 times.
//!
//! Every request carries an `Idempotency-Key`; after each restart the requests that were in
//! flight are sent again, so every outcome is known. Then, for every SKU:
//! `on_hand == initial`, `committed == units in orders not cancelled or expired`,
//! `reserved == units held by open carts`, and every order is either placed with all the
//! lines its cart had, or absent with its cart's stock released.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::crash::{crash_run, ServerProcess};
use crate::helpers::ADMIN_TOKEN;

const SKUS: [&str; 3] = ["north", "south", "east"];
const INITIAL_ON_HAND: i64 = 1_000_000;

/// A shopper's cart as acknowledged.
#[derive(Debug, Clone, Default)]
struct CartModel {
    token: String,
    /// Lines as the last acknowledged answer showed them.
    lines: BTreeMap<String, i64>,
    /// The order it became, once checkout was acknowledged.
    order: Option<String>,
}

/// An order as acknowledged.
#[derive(Debug, Clone)]
struct OrderModel {
    token: String,
    lines: BTreeMap<String, i64>,
    status: String,
}

#[derive(Debug, Clone)]
enum Op {
    CreateCart,
    SetLine { cart: String, sku: String, qty: i64 },
    Checkout { cart: String },
    Pay { order: String },
    Cancel { order: String },
}

#[derive(Default)]
struct Model {
    carts: HashMap<String, CartModel>,
    orders: HashMap<String, OrderModel>,
}

fn lines_of(body: &Value) -> BTreeMap<String, i64> {
    body["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| (line["sku"].as_str().unwrap().to_owned(), line["qty"].as_i64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

impl Model {
    /// Applies an acknowledged answer. Returns the id of a cart created.
    fn apply(&mut self, op: &Op, status: StatusCode, body: &Value) -> Option<String> {
        let code = body["error"]["code"].as_str().unwrap_or("");
        match (op, status.as_u16()) {
            (Op::CreateCart, 201) => {
                let id = body["cart_id"].as_str().unwrap().to_owned();
                let token = body["cart_token"].as_str().unwrap().to_owned();
                self.carts.insert(
                    id.clone(),
                    CartModel {
                        token,
                        ..CartModel::default()
                    },
                );
                return Some(id);
            }
            (Op::SetLine { cart, .. }, 200) => self.carts.get_mut(cart).unwrap().lines = lines_of(body),
            (Op::SetLine { .. }, 409) if code == "insufficient_stock" => {}
            // 200: checked out before (a retry after the crash, the saga having finished at
            // restart): the same order.
            (Op::Checkout { cart }, 201 | 200) => {
                let order = body["order_id"].as_str().unwrap().to_owned();
                let model = self.carts.get_mut(cart).unwrap();
                assert_eq!(lines_of(body), model.lines, "the order has exactly the cart's lines");
                model.order = Some(order.clone());
                let lines = std::mem::take(&mut model.lines);
                self.orders.insert(
                    order,
                    OrderModel {
                        token: model.token.clone(),
                        lines,
                        status: "placed".to_owned(),
                    },
                );
            }
            (Op::Checkout { cart }, 409) if code == "cart_empty" || code == "insufficient_stock" => {
                self.carts.get_mut(cart).unwrap().lines.clear();
            }
            (Op::Pay { order }, 200) => self.orders.get_mut(order).unwrap().status = "paid".to_owned(),
            (Op::Cancel { order }, 200) => self.orders.get_mut(order).unwrap().status = "cancelled".to_owned(),
            (Op::Pay { .. } | Op::Cancel { .. }, 409) if code == "invalid_transition" => {}
            // The shopper may cancel only an unpaid order.
            (Op::Cancel { order }, 403) if code == "forbidden" && self.orders[order].status == "paid" => {}
            (op, status) => panic!("unexpected answer {status} {body} to {op:?}"),
        }
        None
    }
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    op: &Op,
    model: &Mutex<Model>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let token = |cart: &str| model.lock().unwrap().carts[cart].token.clone();
    let order_token = |order: &str| model.lock().unwrap().orders[order].token.clone();
    let (method, path, body, bearer) = match op {
        Op::CreateCart => (Method::POST, "/v1/carts".to_owned(), json!({}), None),
        Op::SetLine { cart, sku, qty } => (
            Method::PUT,
            format!("/v1/carts/{cart}/items/{sku}"),
            json!({"qty": qty}),
            Some(token(cart)),
        ),
        Op::Checkout { cart } => (
            Method::POST,
            format!("/v1/carts/{cart}/checkout"),
            json!({}),
            Some(token(cart)),
        ),
        Op::Pay { order } => (
            Method::POST,
            format!("/v1/orders/{order}/pay"),
            json!({"payment_ref": key}),
            // The payment service pays (here the admin); a shopper's token may not.
            Some(ADMIN_TOKEN.to_owned()),
        ),
        Op::Cancel { order } => (
            Method::POST,
            format!("/v1/orders/{order}/cancel"),
            json!({}),
            Some(order_token(order)),
        ),
    };
    loop {
        let mut request = client
            .request(method.clone(), format!("{base}{path}"))
            .header("Idempotency-Key", key)
            .json(&body);
        if let Some(bearer) = &bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        let in_flight = status == StatusCode::CONFLICT && body["error"]["code"] == "idempotency_key_in_flight";
        if status == StatusCode::SERVICE_UNAVAILABLE || in_flight {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        return Ok((status, body));
    }
}

/// One shopper: a cart, a few lines, checkout, sometimes pay or cancel. Returns `false` when
/// the server went away (its pending request stays recorded).
async fn shop(
    client: &reqwest::Client,
    base: &str,
    model: &Mutex<Model>,
    pending: &Mutex<HashMap<String, Op>>,
    rng: &mut StdRng,
    prefix: &str,
) -> bool {
    let mut n = 0;
    let mut step = |op: Op| {
        n += 1;
        // Unguessable, as keys sent without credentials (creating a cart) must be.
        (format!("{prefix}-{n}-{}", uuid::Uuid::now_v7().simple()), op)
    };
    let run = |key: String, op: Op| async move {
        pending.lock().unwrap().insert(key.clone(), op.clone());
        let answer = send(client, base, &key, &op, model).await;
        match answer {
            Ok((status, body)) => {
                pending.lock().unwrap().remove(&key);
                Some(model.lock().unwrap().apply(&op, status, &body))
            }
            Err(_) => None,
        }
    };
    let (key, op) = step(Op::CreateCart);
    let Some(Some(cart)) = run(key, op).await else {
        return false;
    };
    for _ in 0..rng.random_range(1..=3) {
        let sku = SKUS[rng.random_range(0..SKUS.len())].to_owned();
        let (key, op) = step(Op::SetLine {
            cart: cart.clone(),
            sku,
            qty: rng.random_range(1..=3),
        });
        if run(key, op).await.is_none() {
            return false;
        }
    }
    let (key, op) = step(Op::Checkout { cart: cart.clone() });
    if run(key, op).await.is_none() {
        return false;
    }
    let order = model.lock().unwrap().carts[&cart].order.clone();
    if let Some(order) = order {
        let roll = rng.random_range(0..10);
        let next = if roll < 5 {
            Some(Op::Pay { order })
        } else if roll < 7 {
            Some(Op::Cancel { order })
        } else {
            None
        };
        if let Some(op) = next {
            let (key, op) = step(op);
            if run(key, op).await.is_none() {
                return false;
            }
        }
    }
    true
}

async fn check(client: &reqwest::Client, base: &str, model: &Model, cycle: usize) {
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for (id, order) in &model.orders {
        let body: Value = client
            .get(format!("{base}/v1/orders/{id}"))
            .bearer_auth(&order.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], order.status.as_str(), "cycle {cycle}: order {id}");
        assert_eq!(
            lines_of(&body),
            order.lines,
            "cycle {cycle}: order {id} has all its lines"
        );
        if order.status != "cancelled" && order.status != "expired" {
            for (sku, qty) in &order.lines {
                *sold.entry(sku.as_str()).or_default() += qty;
            }
        }
    }
    let mut held: HashMap<String, i64> = HashMap::new();
    for (id, cart) in model.carts.iter().filter(|(_, cart)| cart.order.is_none()) {
        let body: Value = client
            .get(format!("{base}/v1/carts/{id}"))
            .bearer_auth(&cart.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            lines_of(&body),
            cart.lines,
            "cycle {cycle}: open cart {id} holds what was acknowledged"
        );
        for (sku, qty) in lines_of(&body) {
            *held.entry(sku).or_default() += qty;
        }
    }
    for sku in SKUS {
        let body: Value = client
            .get(format!("{base}/v1/skus/{sku}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let on_hand = body["on_hand"].as_i64().unwrap();
        let reserved = body["reserved"].as_i64().unwrap();
        // Sold units stay on the shelf, committed, until shipped (nothing ships here).
        assert_eq!(
            (on_hand, body["committed"].as_i64().unwrap()),
            (INITIAL_ON_HAND, sold.get(sku).copied().unwrap_or(0)),
            "cycle {cycle}: on_hand and committed of {sku}"
        );
        assert_eq!(
            reserved,
            held.get(sku).copied().unwrap_or(0),
            "cycle {cycle}: reserved of {sku} is what open carts hold"
        );
        assert!(body["available"].as_i64().unwrap() >= 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_checkouts_never_counts_stock_twice_or_loses_it_over_twenty_restarts() {
    let (cycles, mut rng, dir, client) = crash_run("checkout crash test", 20);
    let model = Arc::new(Mutex::new(Model::default()));
    let pending: Arc<Mutex<HashMap<String, Op>>> = Arc::default();
    let mut server = ServerProcess::start(dir.path(), &client).await;
    for sku in SKUS {
        let created = client
            .put(format!("{}/v1/skus/{sku}", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": sku, "price_minor": 250, "currency": "EUR", "on_hand": INITIAL_ON_HAND}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let shoppers: Vec<_> = (0..10)
            .map(|shopper| {
                let (client, base, model, pending, stop) = (
                    client.clone(),
                    server.base.clone(),
                    Arc::clone(&model),
                    Arc::clone(&pending),
                    Arc::clone(&stop),
                );
                let mut rng = StdRng::seed_from_u64(rng.random());
                tokio::spawn(async move {
                    let mut visits = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let prefix = format!("c{cycle}-s{shopper}-v{visits}");
                        visits += 1;
                        if !shop(&client, &base, &model, &pending, &mut rng, &prefix).await {
                            break;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for shopper in shoppers {
            shopper.await.expect("a shopper panicked");
        }
        server = ServerProcess::start(dir.path(), &client).await;
        // Requests in flight at the kill are sent again with their keys: each has one answer.
        // Creating a cart comes first (later requests of that shopper need it).
        let mut in_flight: Vec<(String, Op)> = pending.lock().unwrap().drain().collect();
        in_flight.sort_by_key(|(_, op)| !matches!(op, Op::CreateCart));
        for (key, op) in &in_flight {
            let (status, body) = send(&client, &server.base, key, op, &model)
                .await
                .expect("the restarted server answers");
            model.lock().unwrap().apply(op, status, &body);
        }
        let snapshot = std::mem::take(&mut *model.lock().unwrap());
        check(&client, &server.base, &snapshot, cycle).await;
        *model.lock().unwrap() = snapshot;
    }
    let model = model.lock().unwrap();
    assert!(
        model.orders.len() > cycles,
        "the load placed real orders: {}",
        model.orders.len()
    );
    println!(
        "{cycles} SIGKILL cycles, {} carts, {} orders, every one accounted for",
        model.carts.len(),
        model.orders.len()
    );
}
