//! Seeded random simulation of carts, orders (paid, shipped whole or in parts, cancelled,
//! delivered, returned to the shelf or written off) and reservations against a plain model,
//! through the real server (restarts included). Every answer must be the one the model
//! predicts, and after every step, for every SKU:
//! `on_hand == initial + restocked + restocked returns - shipped - reservations sold outright`,
//! `committed == units of live orders neither shipped nor cancelled` and
//! `reserved == units in open carts + held reservations`. One SKU takes backorders (down to
//! `-BACKORDER_LIMIT`): the model keeps its queue of backordered units, oldest first, and
//! predicts each hold it allows or refuses, each fill by a restock or a release, and each
//! fulfilment refused because its units are not on the shelf yet.
//! A failing run prints its seed; `STOCKROOM_SIM_SEED=<seed>` repeats it.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;

use crate::helpers::{error_code, TestApp, TestCart};

const SKUS: [&str; 3] = ["red", "green", "blue"];
const INITIAL: u64 = 30;
/// `blue` starts low and takes backorders.
const BLUE_INITIAL: u64 = 6;
const BACKORDER_LIMIT: u64 = 6;

/// What became of an order line: ordered, shipped, cancelled, returned.
#[derive(Debug, Clone, Copy, Default)]
struct Line {
    qty: u64,
    shipped: u64,
    cancelled: u64,
    returned: u64,
}

impl Line {
    fn left(&self) -> u64 {
        self.qty - self.shipped - self.cancelled
    }
}

#[derive(Clone)]
struct OrderModel {
    id: String,
    /// The cart token that reads it.
    token: String,
    lines: BTreeMap<&'static str, Line>,
    status: &'static str,
}

#[derive(Default)]
struct Model {
    on_hand: HashMap<&'static str, u64>,
    /// Open carts and their lines.
    carts: Vec<(TestCart, BTreeMap<&'static str, u64>)>,
    orders: Vec<OrderModel>,
    /// Held direct reservations: id, SKU, qty.
    held: Vec<(String, &'static str, u64)>,
    /// Backorder limit per SKU (absent: none).
    limit: HashMap<&'static str, u64>,
    /// Backordered units per SKU, oldest first, by owner: `cart:<id>`, `held:<id>` or
    /// `order:<id>` (a cart line becomes its order's at checkout).
    queue: HashMap<&'static str, Vec<(String, u64)>>,
}

impl Model {
    /// Units sold to orders and not shipped: still on the shelf.
    fn committed(&self, sku: &str) -> u64 {
        self.orders
            .iter()
            .filter(|order| !matches!(order.status, "cancelled" | "expired"))
            .filter_map(|order| order.lines.get(sku))
            .map(Line::left)
            .sum()
    }

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

    /// `on_hand - reserved - committed`: below zero by what is backordered.
    fn available(&self, sku: &str) -> i64 {
        self.on_hand[sku] as i64 - self.reserved(sku) as i64 - self.committed(sku) as i64
    }

    fn limit(&self, sku: &str) -> u64 {
        self.limit.get(sku).copied().unwrap_or(0)
    }

    /// Whether `extra` more units may be held: from the shelf, or within the backorder limit.
    fn fits(&self, sku: &str, extra: u64) -> bool {
        extra as i64 <= self.available(sku) + self.limit(sku) as i64
    }

    /// The `available` a refused hold reports: what it has, what the shelf has, and the
    /// backorder room.
    fn refused_available(&self, sku: &str, current: u64) -> u64 {
        let available = self.available(sku);
        current + available.max(0) as u64 + (self.limit(sku) as i64 - (-available).max(0)) as u64
    }

    fn backordered(&self, sku: &str) -> u64 {
        self.queue
            .get(sku)
            .map_or(0, |queue| queue.iter().map(|(_, units)| units).sum())
    }

    fn own(&self, sku: &str, owner: &str) -> u64 {
        self.queue
            .get(sku)
            .and_then(|queue| queue.iter().find(|(key, _)| key == owner))
            .map_or(0, |(_, units)| *units)
    }

    /// After `owner`'s units of `sku` grew: what is beyond the shelf now is its backorder.
    fn grow(&mut self, sku: &'static str, owner: &str) {
        let excess = ((-self.available(sku)).max(0) as u64).saturating_sub(self.backordered(sku));
        if excess > 0 {
            let queue = self.queue.entry(sku).or_default();
            match queue.iter_mut().find(|(key, _)| key == owner) {
                Some((_, units)) => *units += excess,
                None => queue.push((owner.to_owned(), excess)),
            }
        }
    }

    /// `owner` gave up `units` of `sku` (all: `u64::MAX`): its backorder shrinks first.
    fn give_up(&mut self, sku: &'static str, owner: &str, units: u64) {
        if let Some(queue) = self.queue.get_mut(sku) {
            for (key, waiting) in queue.iter_mut().filter(|(key, _)| key == owner) {
                let _ = key;
                *waiting -= (*waiting).min(units);
            }
            queue.retain(|(_, waiting)| *waiting > 0);
        }
    }

    fn rename(&mut self, sku: &'static str, from: &str, to: &str) {
        if let Some(queue) = self.queue.get_mut(sku) {
            for (key, _) in queue.iter_mut().filter(|(key, _)| key == from) {
                *key = to.to_owned();
            }
        }
    }

    /// Units on the shelf again fill backorders, oldest first.
    fn fill(&mut self) {
        for sku in SKUS {
            let mut slack = self.backordered(sku) - ((-self.available(sku)).max(0) as u64);
            if let Some(queue) = self.queue.get_mut(sku) {
                for (_, waiting) in queue.iter_mut() {
                    let filled = (*waiting).min(slack);
                    *waiting -= filled;
                    slack -= filled;
                }
                queue.retain(|(_, waiting)| *waiting > 0);
            }
        }
    }

    /// Ships `qty` of `sku` from order `index` and moves it on as the server does.
    fn ship(&mut self, index: usize, sku: &'static str, qty: u64) {
        let order = &mut self.orders[index];
        order.lines.get_mut(sku).expect("a line").shipped += qty;
        *self.on_hand.get_mut(sku).unwrap() -= qty;
        order.status = if order.lines.values().all(|line| line.left() == 0) {
            "shipped"
        } else {
            "partially_shipped"
        };
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
        .unwrap_or(500);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut app = TestApp::spawn().await;
    let mut model = Model::default();
    for sku in SKUS {
        let initial = if sku == "blue" { BLUE_INITIAL } else { INITIAL };
        app.create_sku(sku, initial).await;
        model.on_hand.insert(sku, initial);
    }
    let backorders = app
        .admin(Method::PUT, "/v1/skus/blue")
        .json(&json!({"name": "Product blue", "price_minor": 1299, "currency": "EUR", "backorder_limit": BACKORDER_LIMIT}))
        .send()
        .await
        .unwrap();
    assert_eq!(backorders.status(), StatusCode::OK);
    model.limit.insert("blue", BACKORDER_LIMIT);
    for step in 0..steps {
        let sku = SKUS[rng.random_range(0..SKUS.len())];
        match rng.random_range(0..112) {
            0..10 => {
                let cart = app.create_cart().await;
                model.carts.push((cart, BTreeMap::new()));
            }
            10..40 if !model.carts.is_empty() => {
                let index = rng.random_range(0..model.carts.len());
                let qty = rng.random_range(1..=6);
                let current = model.carts[index].1.get(sku).copied().unwrap_or(0);
                let expected_ok = qty <= current || model.fits(sku, qty - current);
                let (status, body) = answer(app.set_line(&model.carts[index].0, sku, qty).await).await;
                let owner = format!("cart:{}", model.carts[index].0.id);
                if expected_ok {
                    assert_eq!(status, StatusCode::OK, "step {step}: set {sku} to {qty}: {body}");
                    model.carts[index].1.insert(sku, qty);
                    if qty > current {
                        model.grow(sku, &owner);
                    } else {
                        model.give_up(sku, &owner, current - qty);
                    }
                } else {
                    assert_eq!(
                        (status, error_code(&body)),
                        (StatusCode::CONFLICT, "insufficient_stock"),
                        "step {step}: {body}"
                    );
                    assert_eq!(
                        body["error"]["available"],
                        model.refused_available(sku, current),
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
                let owner = format!("cart:{}", model.carts[index].0.id);
                model.give_up(sku, &owner, u64::MAX);
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
                    let order_id = body["order_id"].as_str().unwrap().to_owned();
                    for sku in lines.keys() {
                        model.rename(sku, &format!("cart:{}", cart.id), &format!("order:{order_id}"));
                        let line = body["lines"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|line| line["sku"] == *sku)
                            .unwrap();
                        let waiting = model.own(sku, &format!("order:{order_id}"));
                        assert_eq!(
                            line["backordered"].as_bool().unwrap_or(false),
                            waiting > 0,
                            "step {step}: {sku} backordered at checkout"
                        );
                    }
                    model.orders.push(OrderModel {
                        id: order_id.clone(),
                        token: cart.token,
                        lines: lines
                            .iter()
                            .map(|(sku, qty)| {
                                (
                                    *sku,
                                    Line {
                                        qty: *qty,
                                        ..Line::default()
                                    },
                                )
                            })
                            .collect(),
                        status: "placed",
                    });
                }
            }
            60..72 if !model.orders.is_empty() => {
                let index = rng.random_range(0..model.orders.len());
                let order = model.orders[index].clone();
                let (id, status) = (order.id.as_str(), order.status);
                // Half the time the order's next step on the way to delivery, so that orders
                // get that far; otherwise any move, legal or not.
                let next = match status {
                    "placed" => Some("pay"),
                    "paid" => Some("packed"),
                    "packed" | "partially_shipped" => Some("shipped"),
                    "shipped" => Some("delivered"),
                    _ => None,
                };
                let action = match next {
                    Some(next) if rng.random_bool(0.5) => next,
                    _ => ["pay", "cancel", "staff_cancel", "packed", "shipped", "delivered"][rng.random_range(0..6)],
                };
                let target = match action {
                    "pay" => "paid",
                    "cancel" | "staff_cancel" => "cancelled",
                    other => other,
                };
                let legal = matches!(
                    (status, target),
                    ("placed", "paid")
                        | ("paid", "packed")
                        | ("paid" | "packed" | "partially_shipped", "shipped")
                        | ("shipped", "delivered")
                        | ("placed" | "paid", "cancelled")
                ) || (status, action) == ("partially_shipped", "staff_cancel");
                let owner = format!("order:{id}");
                let waiting = order.lines.keys().any(|sku| model.own(sku, &owner) > 0);
                let request = match action {
                    // The payment service pays; the shopper's token may not.
                    "pay" => app
                        .admin(Method::POST, &format!("/v1/orders/{id}/pay"))
                        .json(&json!({"payment_ref": "p"})),
                    "cancel" => app
                        .client
                        .post(app.url(&format!("/v1/orders/{id}/cancel")))
                        .bearer_auth(&order.token)
                        .json(&json!({})),
                    "staff_cancel" => app
                        .admin(Method::POST, &format!("/v1/orders/{id}/cancel"))
                        .json(&json!({})),
                    status => app
                        .admin(Method::POST, &format!("/v1/orders/{id}/status"))
                        .json(&json!({ "status": status })),
                };
                let (answered, body) = answer(request.send().await.unwrap()).await;
                let shoppers_refusal = action == "cancel" && matches!(status, "paid" | "partially_shipped");
                if shoppers_refusal {
                    // Legal for the shop, not for the shopper's cart token.
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::FORBIDDEN, "forbidden"),
                        "step {step}: a shopper cancels a {status} order"
                    );
                } else if legal && target == "shipped" && waiting {
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::CONFLICT, "backordered"),
                        "step {step}: shipping what is not on the shelf"
                    );
                } else if legal {
                    assert_eq!(answered, StatusCode::OK, "step {step}: {status} -> {action}: {body}");
                    match (status, target) {
                        // The lines not shipped are cancelled; what shipped stays shipped.
                        ("partially_shipped", "cancelled") => {
                            for line in model.orders[index].lines.values_mut() {
                                line.cancelled += line.left();
                            }
                            model.orders[index].status = "shipped";
                            for sku in order.lines.keys() {
                                model.give_up(sku, &owner, u64::MAX);
                            }
                        }
                        (_, "cancelled") => {
                            model.orders[index].status = "cancelled";
                            for sku in order.lines.keys() {
                                model.give_up(sku, &owner, u64::MAX);
                            }
                        }
                        // Shipping by status ships whatever is left.
                        (_, "shipped") => {
                            for (sku, line) in order.lines {
                                if line.left() > 0 {
                                    model.ship(index, sku, line.left());
                                }
                            }
                        }
                        _ => model.orders[index].status = target,
                    }
                    assert_eq!(body["status"], model.orders[index].status, "step {step}");
                } else {
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::CONFLICT, "invalid_transition"),
                        "step {step}: {status} -> {action}: {body}"
                    );
                }
            }
            // A fulfilment of part of a line (or too much, or of a SKU not ordered).
            100..106 if !model.orders.is_empty() => {
                let index = rng.random_range(0..model.orders.len());
                let order = model.orders[index].clone();
                // Mostly one of the order's own SKUs.
                let ordered: Vec<&'static str> = order.lines.keys().copied().collect();
                let sku = if rng.random_bool(0.8) {
                    ordered[rng.random_range(0..ordered.len())]
                } else {
                    sku
                };
                let line = order.lines.get(sku).copied();
                let qty = rng.random_range(1..=4);
                let body = json!({"location": "default", "lines": [{"sku": sku, "qty": qty}]});
                let (answered, body) = answer(
                    app.admin(Method::POST, &format!("/v1/orders/{}/fulfilments", order.id))
                        .json(&body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                let code = error_code(&body);
                if !matches!(order.status, "paid" | "packed" | "partially_shipped") {
                    assert_eq!(
                        (answered, code),
                        (StatusCode::CONFLICT, "invalid_transition"),
                        "step {step}"
                    );
                } else if line.is_none() {
                    assert_eq!((answered, code), (StatusCode::CONFLICT, "not_in_order"), "step {step}");
                } else if qty > line.unwrap().left() {
                    assert_eq!(
                        (answered, code),
                        (StatusCode::CONFLICT, "exceeds_ordered"),
                        "step {step}"
                    );
                    assert_eq!(body["error"]["remaining"], line.unwrap().left(), "step {step}");
                } else if qty > line.unwrap().left() - model.own(sku, &format!("order:{}", order.id)) {
                    assert_eq!(
                        (answered, code),
                        (StatusCode::CONFLICT, "backordered"),
                        "step {step}: {body}"
                    );
                    assert_eq!(
                        body["error"]["waiting"],
                        model.own(sku, &format!("order:{}", order.id)),
                        "step {step}"
                    );
                } else {
                    assert_eq!(answered, StatusCode::CREATED, "step {step}: fulfil: {body}");
                    model.ship(index, sku, qty);
                    assert_eq!(body["order_status"], model.orders[index].status, "step {step}");
                }
            }
            // A return after delivery, to the shelf or written off.
            106.. if !model.orders.is_empty() => {
                let index = rng.random_range(0..model.orders.len());
                let order = model.orders[index].clone();
                // Mostly one of the order's own SKUs.
                let ordered: Vec<&'static str> = order.lines.keys().copied().collect();
                let sku = if rng.random_bool(0.8) {
                    ordered[rng.random_range(0..ordered.len())]
                } else {
                    sku
                };
                let line = order.lines.get(sku).copied();
                let qty = rng.random_range(1..=3);
                let restock = rng.random_bool(0.6);
                let body = json!({"location": "default", "restock": restock, "lines": [{"sku": sku, "qty": qty}]});
                let (answered, body) = answer(
                    app.admin(Method::POST, &format!("/v1/orders/{}/returns", order.id))
                        .json(&body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                let code = error_code(&body);
                if !matches!(order.status, "delivered" | "partially_returned") {
                    assert_eq!(
                        (answered, code),
                        (StatusCode::CONFLICT, "invalid_transition"),
                        "step {step}"
                    );
                } else if line.is_none() {
                    assert_eq!((answered, code), (StatusCode::CONFLICT, "not_in_order"), "step {step}");
                } else if qty > line.unwrap().shipped - line.unwrap().returned {
                    assert_eq!(
                        (answered, code),
                        (StatusCode::CONFLICT, "exceeds_shipped"),
                        "step {step}"
                    );
                } else {
                    assert_eq!(answered, StatusCode::CREATED, "step {step}: return: {body}");
                    let order = &mut model.orders[index];
                    order.lines.get_mut(sku).unwrap().returned += qty;
                    order.status = if order.lines.values().all(|line| line.returned == line.shipped) {
                        "returned"
                    } else {
                        "partially_returned"
                    };
                    if restock {
                        *model.on_hand.get_mut(sku).unwrap() += qty;
                    }
                    assert_eq!(body["order_status"], order.status, "step {step}");
                    let price = 1299;
                    assert_eq!(body["refund_minor"], qty * price, "step {step}");
                }
            }
            72..80 => {
                let qty = rng.random_range(1..=4);
                let (status, body) = answer(app.reserve(sku, qty, 3600).await).await;
                if model.fits(sku, qty) {
                    assert_eq!(status, StatusCode::CREATED, "step {step}: reserve: {body}");
                    let id = body["reservation_id"].as_str().unwrap().to_owned();
                    model.held.push((id.clone(), sku, qty));
                    model.grow(sku, &format!("held:{id}"));
                } else {
                    assert_eq!(status, StatusCode::CONFLICT, "step {step}");
                }
            }
            80..88 if !model.held.is_empty() => {
                let (id, sku, qty) = model.held.swap_remove(rng.random_range(0..model.held.len()));
                let commit = rng.random_bool(0.5);
                let owner = format!("held:{id}");
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
                if commit && model.own(sku, &owner) > 0 {
                    // Sold outright, the units leave the shelf now: they must be on it.
                    let (answered, body) = answer(response).await;
                    assert_eq!(
                        (answered, error_code(&body)),
                        (StatusCode::CONFLICT, "backordered"),
                        "step {step}"
                    );
                    model.held.push((id, sku, qty));
                } else {
                    assert_eq!(response.status(), StatusCode::OK, "step {step}");
                    if commit {
                        // Sold outright: nothing here ships a reservation, so it leaves the shelf.
                        *model.on_hand.get_mut(sku).unwrap() -= qty;
                    } else {
                        model.give_up(sku, &owner, u64::MAX);
                    }
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
        model.fill();
        for sku in SKUS {
            let read = app.sku(sku).await;
            let figures = ["on_hand", "reserved", "committed"].map(|name| read[name].as_u64().unwrap());
            assert_eq!(
                (
                    figures,
                    read["available"].as_i64().unwrap(),
                    read["backordered"].as_u64().unwrap()
                ),
                (
                    [model.on_hand[sku], model.reserved(sku), model.committed(sku)],
                    model.available(sku),
                    model.backordered(sku)
                ),
                "step {step}: {sku}"
            );
        }
    }
}
