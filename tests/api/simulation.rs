//! Seeded random simulation of carts, orders and reservations against a plain model, through
//! the real server (restarts included). Every answer must be the one the model predicts, and
//! after every step, for every SKU:
//! `on_hand == initial + restocked - units in orders not cancelled - committed reservations`
//! and `reserved == units in open carts + held reservations`.
//! A failing run prints its seed; `STOCKROOM_SIM_SEED=<seed>` repeats it.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;

use crate::helpers::{counters, error_code, TestApp, TestCart};

const SKUS: [&str; 3] = ["red", "green", "blue"];
const INITIAL: u64 = 30;

#[derive(Default)]
struct Model {
    on_hand: HashMap<&'static str, u64>,
    /// Open carts and their lines.
    carts: Vec<(TestCart, BTreeMap<&'static str, u64>)>,
    /// Orders: id, the cart token that reads them, lines, status.
    orders: Vec<(String, String, BTreeMap<&'static str, u64>, &'static str)>,
    /// Held direct reservations: id, SKU, qty.
    held: Vec<(String, &'static str, u64)>,
}

impl Model {
    fn reserved(&self, sku: &str) -> u64 {
        let in_carts: u64 = self.carts.iter().filter_map(|(_, lines)| lines.get(sku)).sum();
        let held: u64 = self
            .held
            .iter()
            .filter(|(_, owner, _)| *owner == sku)
            .map(|(_, _, qty)| qty)
            .sum();
        in_carts + held
    }

    fn available(&self, sku: &str) -> u64 {
        self.on_hand[sku] - self.reserved(sku)
    }
}

struct SeedReporter(u64);

impl Drop for SeedReporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "commerce simulation failed with seed {0}; repeat with STOCKROOM_SIM_SEED={0}",
                self.0
            );
        }
    }
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn random_carts_orders_and_restarts_match_the_model() {
    let seed: u64 = std::env::var("STOCKROOM_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    let _reporter = SeedReporter(seed);
    let steps: usize = std::env::var("STOCKROOM_SIM_STEPS")
        .ok()
        .and_then(|steps| steps.parse().ok())
        .unwrap_or(300);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut app = TestApp::spawn().await;
    let mut model = Model::default();
    for sku in SKUS {
        app.create_sku(sku, INITIAL).await;
        model.on_hand.insert(sku, INITIAL);
    }
    for step in 0..steps {
        let sku = SKUS[rng.random_range(0..SKUS.len())];
        match rng.random_range(0..100) {
            0..10 => {
                let cart = app.create_cart().await;
                model.carts.push((cart, BTreeMap::new()));
            }
            10..40 if !model.carts.is_empty() => {
                let index = rng.random_range(0..model.carts.len());
                let qty = rng.random_range(1..=6);
                let current = model.carts[index].1.get(sku).copied().unwrap_or(0);
                let expected_ok = qty <= current + model.available(sku);
                let (status, body) = answer(app.set_line(&model.carts[index].0, sku, qty).await).await;
                if expected_ok {
                    assert_eq!(status, StatusCode::OK, "step {step}: set {sku} to {qty}: {body}");
                    model.carts[index].1.insert(sku, qty);
                } else {
                    assert_eq!(
                        (status, error_code(&body)),
                        (StatusCode::CONFLICT, "insufficient_stock"),
                        "step {step}: {body}"
                    );
                    assert_eq!(
                        body["error"]["available"],
                        current + model.available(sku),
                        "step {step}"
                    );
                }
            }
            40..48 if !model.carts.is_empty() => {
                let index = rng.random_range(0..model.carts.len());
                let (cart, lines) = &model.carts[index];
                let response = app
                    .as_cart(cart, Method::DELETE, &format!("/v1/carts/{}/items/{sku}", cart.id))
                    .send()
                    .await
                    .unwrap();
                let expected = if lines.contains_key(sku) {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_eq!(response.status(), expected, "step {step}: remove {sku}");
                model.carts[index].1.remove(sku);
            }
            48..60 if !model.carts.is_empty() => {
                let index = rng.random_range(0..model.carts.len());
                let (status, body) = answer(app.checkout(&model.carts[index].0).await).await;
                if model.carts[index].1.is_empty() {
                    assert_eq!(
                        (status, error_code(&body)),
                        (StatusCode::CONFLICT, "cart_empty"),
                        "step {step}"
                    );
                } else {
                    assert_eq!(status, StatusCode::CREATED, "step {step}: checkout: {body}");
                    let (cart, lines) = model.carts.swap_remove(index);
                    let ordered: BTreeMap<&str, u64> = body["lines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|line| {
                            (
                                SKUS.into_iter().find(|sku| line["sku"] == *sku).unwrap(),
                                line["qty"].as_u64().unwrap(),
                            )
                        })
                        .collect();
                    assert_eq!(ordered, lines, "step {step}: the order has the cart's lines");
                    for (sku, qty) in &lines {
                        *model.on_hand.get_mut(sku).unwrap() -= qty;
                    }
                    model.orders.push((
                        body["order_id"].as_str().unwrap().to_owned(),
                        cart.token,
                        lines,
                        "placed",
                    ));
                }
            }
            60..72 if !model.orders.is_empty() => {
                let index = rng.random_range(0..model.orders.len());
                let (id, token, lines, status) = model.orders[index].clone();
                let action = ["pay", "cancel", "packed", "shipped", "delivered"][rng.random_range(0..5)];
                let target = match action {
                    "pay" => "paid",
                    "cancel" => "cancelled",
                    other => other,
                };
                let legal = matches!(
                    (status, target),
                    ("placed", "paid")
                        | ("paid", "packed")
                        | ("packed", "shipped")
                        | ("shipped", "delivered")
                        | ("placed" | "paid", "cancelled")
                );
                let request = match action {
                    // The payment service pays; the shopper's token may not.
                    "pay" => app
                        .admin(Method::POST, &format!("/v1/orders/{id}/pay"))
                        .json(&json!({"payment_ref": "p"})),
                    "cancel" => app
                        .client
                        .post(app.url(&format!("/v1/orders/{id}/cancel")))
                        .bearer_auth(&token)
                        .json(&json!({})),
                    status => app
                        .admin(Method::POST, &format!("/v1/orders/{id}/status"))
                        .json(&json!({ "status": status })),
                };
                let (answered, body) = answer(request.send().await.unwrap()).await;
                if (status, action) == ("paid", "cancel") {
                    // Legal for the shop, not for the shopper's cart token.
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::FORBIDDEN, "forbidden"),
                        "step {step}: a shopper cancels a paid order"
                    );
                } else if legal {
                    assert_eq!(answered, StatusCode::OK, "step {step}: {status} -> {target}: {body}");
                    model.orders[index].3 = target;
                    if target == "cancelled" {
                        for (sku, qty) in &lines {
                            *model.on_hand.get_mut(sku).unwrap() += qty;
                        }
                    }
                } else {
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::CONFLICT, "invalid_transition"),
                        "step {step}"
                    );
                }
            }
            72..80 => {
                let qty = rng.random_range(1..=4);
                let (status, body) = answer(app.reserve(sku, qty, 3600).await).await;
                if qty <= model.available(sku) {
                    assert_eq!(status, StatusCode::CREATED, "step {step}: reserve: {body}");
                    model
                        .held
                        .push((body["reservation_id"].as_str().unwrap().to_owned(), sku, qty));
                } else {
                    assert_eq!(status, StatusCode::CONFLICT, "step {step}");
                }
            }
            80..88 if !model.held.is_empty() => {
                let (id, sku, qty) = model.held.swap_remove(rng.random_range(0..model.held.len()));
                let commit = rng.random_bool(0.5);
                let response = if commit {
                    app.admin(Method::POST, &format!("/v1/reservations/{id}/commit"))
                        .send()
                        .await
                        .unwrap()
                } else {
                    app.admin(Method::DELETE, &format!("/v1/reservations/{id}"))
                        .send()
                        .await
                        .unwrap()
                };
                assert_eq!(response.status(), StatusCode::OK, "step {step}");
                if commit {
                    *model.on_hand.get_mut(sku).unwrap() -= qty;
                }
            }
            88..94 => {
                let qty = rng.random_range(1..=5);
                let response = app
                    .admin(Method::POST, &format!("/v1/skus/{sku}/restock"))
                    .json(&json!({ "qty": qty }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                *model.on_hand.get_mut(sku).unwrap() += qty;
            }
            94..97 => {
                let dir = app.stop().await;
                app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
            }
            _ => continue,
        }
        for sku in SKUS {
            let expected = (model.on_hand[sku], model.reserved(sku), model.available(sku));
            assert_eq!(counters(&app.sku(sku).await), expected, "step {step}: {sku}");
        }
    }
}
