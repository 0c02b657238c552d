//! The buying path: carts, checkout and orders, through the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, error_code, TestApp, TestCart, ADMIN_TOKEN};

/// `(sku, qty)` of a cart's or order's lines.
fn lines(body: &Value) -> Vec<(String, u64)> {
    body["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {body}"))
        .iter()
        .map(|line| (line["sku"].as_str().unwrap().to_owned(), line["qty"].as_u64().unwrap()))
        .collect()
}

#[actix_web::test]
async fn a_shopper_fills_a_cart_checks_out_pays_and_the_order_is_delivered() {
    let app = TestApp::spawn().await;
    for sku in ["mug", "tee", "cap"] {
        app.create_sku(sku, 10).await;
    }
    let cart = app.create_cart().await;
    for (sku, qty) in [("mug", 2), ("tee", 3), ("cap", 1)] {
        assert_eq!(app.set_line(&cart, sku, qty).await.status(), StatusCode::OK);
    }
    assert_eq!(counters(&app.sku("mug").await), (10, 2, 8), "a line holds its stock");
    let changed: Value = app.set_line(&cart, "mug", 4).await.json().await.unwrap();
    assert_eq!(
        counters(&app.sku("mug").await),
        (10, 4, 6),
        "changing a quantity holds the difference"
    );
    assert_eq!(changed["total_minor"], 8 * 1299);
    let removed = app
        .as_cart(&cart, Method::DELETE, &format!("/v1/carts/{}/items/cap", cart.id))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    assert_eq!(
        counters(&app.sku("cap").await),
        (10, 0, 10),
        "a removed line releases its stock"
    );
    let read: Value = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(lines(&read), [("mug".to_owned(), 4), ("tee".to_owned(), 3)]);
    assert_eq!(
        (read["status"].as_str(), read["currency"].as_str()),
        (Some("open"), Some("EUR"))
    );

    let checkout = app.checkout(&cart).await;
    assert_eq!(checkout.status(), StatusCode::CREATED);
    let order: Value = checkout.json().await.unwrap();
    assert_eq!(lines(&order), [("mug".to_owned(), 4), ("tee".to_owned(), 3)]);
    assert_eq!(
        (order["status"].as_str(), order["total_minor"].as_u64()),
        (Some("placed"), Some(7 * 1299))
    );
    assert_eq!(
        counters(&app.sku("mug").await),
        (10, 0, 6),
        "checked-out units stay on the shelf, committed, until they ship"
    );
    assert_eq!(app.sku("mug").await["committed"], 4);
    assert_eq!(counters(&app.sku("tee").await), (10, 0, 7));
    let order_id = order["order_id"].as_str().unwrap();
    let again = app.checkout(&cart).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "checking out again names the same order"
    );
    assert_eq!(again.json::<Value>().await.unwrap()["order_id"], order_id);
    let closed = app.set_line(&cart, "mug", 1).await;
    assert_eq!(closed.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&closed.json().await.unwrap()), "cart_closed");

    pay_and_deliver(&app, order_id).await;
    let delivered: Value = app.get_as(&cart, &format!("/v1/orders/{order_id}")).await;
    let history: Vec<(u64, &str)> = delivered["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["seq"].as_u64().unwrap(), entry["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            (1, "placed"),
            (2, "paid"),
            (3, "packed"),
            (4, "shipped"),
            (5, "delivered")
        ]
    );
    assert_eq!(delivered["payment_ref"], "psp-123");
    assert_eq!(
        counters(&app.sku("mug").await),
        (6, 0, 6),
        "delivery does not touch stock"
    );
}

#[actix_web::test]
async fn two_hundred_carts_racing_for_the_last_ten_units_make_exactly_ten_orders() {
    let app = TestApp::spawn().await;
    app.create_sku("last", 10).await;
    let carts: Vec<TestCart> = join_all((0..200).map(|_| app.create_cart())).await;
    let attempts = join_all(carts.iter().map(|cart| async {
        let added = app.set_line(cart, "last", 1).await;
        if added.status() != StatusCode::OK {
            assert_eq!(added.status(), StatusCode::CONFLICT);
            assert_eq!(error_code(&added.json().await.unwrap()), "insufficient_stock");
            return false;
        }
        let placed = app.checkout(cart).await;
        match placed.status() {
            StatusCode::CREATED => true,
            StatusCode::CONFLICT => false,
            other => panic!("checkout answered {other}"),
        }
    }))
    .await;
    let orders = attempts.iter().filter(|placed| **placed).count();
    assert_eq!(orders, 10, "exactly the stock was sold");
    assert_eq!(counters(&app.sku("last").await), (10, 0, 0));
    assert_eq!(app.sku("last").await["committed"], 10);
}

#[actix_web::test]
async fn an_abandoned_cart_expires_and_releases_its_stock() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.cart.ttl_seconds = 1;
    })
    .await;
    app.create_sku("hat", 5).await;
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, "hat", 3).await.status(), StatusCode::OK);
    assert_eq!(counters(&app.sku("hat").await), (5, 3, 2));
    let started = Instant::now();
    while counters(&app.sku("hat").await) != (5, 0, 5) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cart's stock was not released"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let read: Value = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(read["status"], "expired");
    let late = app.set_line(&cart, "hat", 1).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&late.json().await.unwrap()), "cart_closed");
}

#[actix_web::test]
async fn an_unpaid_order_expires_and_its_stock_comes_back() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.order.payment_timeout_seconds = 1;
    })
    .await;
    app.create_sku("lamp", 5).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "lamp", 2).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    assert_eq!(counters(&app.sku("lamp").await), (5, 0, 3));
    let order_id = order["order_id"].as_str().unwrap();
    app.wait_for_status(&cart, &format!("/v1/orders/{order_id}"), "expired")
        .await;
    assert_eq!(counters(&app.sku("lamp").await), (5, 0, 5), "its stock came back");
    let pay_late = app
        .admin(Method::POST, &format!("/v1/orders/{order_id}/pay"))
        .json(&json!({"payment_ref": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pay_late.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&pay_late.json().await.unwrap()), "invalid_transition");
}

#[actix_web::test]
async fn every_move_the_api_does_not_allow_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.create_sku("pen", 1_000).await;
    let statuses = ["placed", "paid", "packed", "shipped", "delivered", "cancelled"];
    let path_to = |target: &str| -> Vec<&'static str> {
        match target {
            "placed" => vec![],
            "paid" => vec!["paid"],
            "packed" => vec!["paid", "packed"],
            "shipped" => vec!["paid", "packed", "shipped"],
            "delivered" => vec!["paid", "packed", "shipped", "delivered"],
            "cancelled" => vec!["cancelled"],
            _ => unreachable!(),
        }
    };
    let legal = [
        ("placed", "paid"),
        ("paid", "packed"),
        ("packed", "shipped"),
        // Shipping a paid order by status ships all of it (a fulfilment of everything).
        ("paid", "shipped"),
        ("shipped", "delivered"),
        ("placed", "cancelled"),
        ("paid", "cancelled"),
    ];
    let actions = [
        "pay",
        "cancel",
        "placed",
        "paid",
        "packed",
        "shipped",
        "delivered",
        "cancelled",
        "expired",
        // Fulfilments and returns make these moves; they are never asked for by name.
        "partially_shipped",
        "partially_returned",
        "returned",
    ];
    let mut failures = Vec::new();
    for from in statuses {
        for action in actions {
            let target = match action {
                "pay" => "paid",
                "cancel" => "cancelled",
                other => other,
            };
            if legal.contains(&(from, target)) {
                continue;
            }
            // A fresh order in `from`.
            let cart = app.create_cart().await;
            app.set_line(&cart, "pen", 1).await;
            let order: Value = app.checkout(&cart).await.json().await.unwrap();
            let id = order["order_id"].as_str().unwrap().to_owned();
            for step in path_to(from) {
                let moved = app
                    .admin(Method::POST, &format!("/v1/orders/{id}/status"))
                    .json(&json!({ "status": step }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(moved.status(), StatusCode::OK, "setting up {from}");
            }
            let before = app.sku("pen").await;
            let before_order: Value = app
                .admin(Method::GET, &format!("/v1/orders/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let response = match action {
                "pay" => {
                    app.admin(Method::POST, &format!("/v1/orders/{id}/pay"))
                        .json(&json!({"payment_ref": "p"}))
                        .send()
                        .await
                }
                "cancel" => {
                    app.as_cart(&cart, Method::POST, &format!("/v1/orders/{id}/cancel"))
                        .json(&json!({}))
                        .send()
                        .await
                }
                status => {
                    app.admin(Method::POST, &format!("/v1/orders/{id}/status"))
                        .json(&json!({ "status": status }))
                        .send()
                        .await
                }
            }
            .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            let after_order: Value = app
                .admin(Method::GET, &format!("/v1/orders/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status != StatusCode::CONFLICT || error_code(&body) != "invalid_transition" {
                failures.push(format!("{from} + {action}: {status} {body}"));
            } else if after_order != before_order || app.sku("pen").await != before {
                failures.push(format!("{from} + {action}: a refused move changed something"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[actix_web::test]
async fn cancelling_a_paid_order_returns_its_stock_once() {
    let app = TestApp::spawn().await;
    app.create_sku("vase", 4).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "vase", 3).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap();
    app.admin(Method::POST, &format!("/v1/orders/{id}/pay"))
        .json(&json!({"payment_ref": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(counters(&app.sku("vase").await), (4, 0, 1));
    // The shop cancels it (a shopper may cancel only an unpaid order).
    let cancel = || {
        app.admin(Method::POST, &format!("/v1/orders/{id}/cancel"))
            .header("Idempotency-Key", "cancel-1")
            .json(&json!({}))
            .send()
    };
    let cancelled = cancel().await.unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(cancelled.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(counters(&app.sku("vase").await), (4, 0, 4), "the stock came back");
    let repeated = cancel().await.unwrap();
    assert_eq!(repeated.status(), StatusCode::OK, "the same key replays");
    assert_eq!(counters(&app.sku("vase").await), (4, 0, 4), "and returns nothing twice");
}

#[actix_web::test]
async fn a_refused_checkout_commits_nothing_and_the_cart_keeps_every_line_with_the_reason() {
    let app = TestApp::spawn().await;
    app.create_sku("a", 5).await;
    app.create_sku("b", 5).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "a", 2).await;
    app.set_line(&cart, "b", 2).await;
    // b is repriced into another currency after it was added: checkout cannot take it, and
    // takes nothing.
    let repriced = app
        .admin(Method::PUT, "/v1/skus/b")
        .json(&json!({"name": "Product b", "price_minor": 999, "currency": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(repriced.status(), StatusCode::OK);
    let failed = app.checkout(&cart).await;
    assert_eq!(failed.status(), StatusCode::CONFLICT);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(error_code(&body), "insufficient_stock");
    assert_eq!(
        body["error"]["lines"],
        json!([{"sku": "b", "reason": "currency_changed"}])
    );
    assert_eq!(counters(&app.sku("a").await), (5, 2, 3), "a is still held for the cart");
    assert_eq!(counters(&app.sku("b").await), (5, 2, 3), "and so is b");
    let kept: Value = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(kept["status"], "open");
    assert_eq!(
        lines(&kept),
        [("a".to_owned(), 2), ("b".to_owned(), 2)],
        "every line kept"
    );
    assert_eq!(
        kept["checkout_failures"],
        json!([{"sku": "b", "qty": 2, "reason": "currency_changed"}])
    );
    // The shopper removes b and checks out what is left.
    let removed = app
        .as_cart(&cart, Method::DELETE, &format!("/v1/carts/{}/items/b", cart.id))
        .send()
        .await
        .unwrap();
    let removed: Value = removed.json().await.unwrap();
    assert_eq!(
        removed["checkout_failures"],
        Value::Null,
        "the failure went with its line"
    );
    assert_eq!(app.checkout(&cart).await.status(), StatusCode::CREATED);
    assert_eq!(counters(&app.sku("a").await), (5, 0, 3));
    assert_eq!(counters(&app.sku("b").await), (5, 0, 5));
}

#[actix_web::test]
async fn a_cart_that_expires_while_the_server_is_down_is_released_at_restart() {
    use stockroom::domain::clock::ManualClock;
    use stockroom::domain::{Clock, SystemClock};
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let with_clock = |clock: &Arc<ManualClock>| Options {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..Options::default()
    };
    let adjust = |settings: &mut stockroom::config::Settings| settings.cart.ttl_seconds = 60;
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), with_clock(&clock), adjust).await;
    app.create_sku("rug", 5).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "rug", 4).await;
    let dir = app.stop().await;
    clock.advance(61_000);

    let app = TestApp::spawn_with(dir, with_clock(&clock), adjust).await;
    assert_eq!(
        counters(&app.sku("rug").await),
        (5, 0, 5),
        "the lapsed hold is released at restart"
    );
    app.wait_for_status(&cart, &format!("/v1/carts/{}", cart.id), "expired")
        .await;
}

#[actix_web::test]
async fn one_checkout_key_sent_five_times_at_once_makes_one_order() {
    let app = TestApp::spawn().await;
    let placed_before = app.metric("stockroom_checkouts_total{outcome=\"placed\"}").await;
    let carts_before = app.metric("stockroom_carts_created_total").await;
    app.create_sku("jar", 10).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "jar", 2).await;
    let send = || {
        app.as_cart(&cart, Method::POST, &format!("/v1/carts/{}/checkout", cart.id))
            .header("Idempotency-Key", "pay-now-1")
            .json(&json!({}))
            .send()
    };
    let answers = join_all((0..5).map(|_| send())).await;
    let mut order_ids = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        match status {
            StatusCode::CREATED => order_ids.push(body["order_id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(error_code(&body), "idempotency_key_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    order_ids.dedup();
    assert_eq!(order_ids.len(), 1, "one order");
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.json::<Value>().await.unwrap()["order_id"], order_ids[0].as_str());
    assert_eq!(counters(&app.sku("jar").await), (10, 0, 8), "its units were taken once");
    for (series, before) in [
        ("stockroom_checkouts_total{outcome=\"placed\"}", placed_before),
        ("stockroom_carts_created_total", carts_before),
    ] {
        let after = app.metric(series).await;
        assert!(
            after >= before + 1.0,
            "{series} counts this test's checkout: {before} -> {after}"
        );
    }
}

#[actix_web::test]
async fn a_settled_order_leaves_memory_when_idle_and_comes_back_when_asked_for() {
    // Idleness is measured on a clock the test moves: the order cannot be idle before the
    // test says so, however slow the machine.
    let (clock, options) = with_manual_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.order.idle_stop_seconds = 1;
    })
    .await;
    app.create_sku("bowl", 5).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "bowl", 1).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap().to_owned();
    let cancelled = app
        .as_cart(&cart, Method::POST, &format!("/v1/orders/{id}/cancel"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let order_id = stockroom::domain::OrderId::parse(&id).unwrap();
    let registry = || std::sync::Arc::clone(&app.state.engine.get().unwrap().registry);
    assert!(registry().orders.is_running(&order_id));
    clock.advance(2_000);
    let started = Instant::now();
    while registry().orders.is_running(&order_id) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the settled order did not leave memory"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let read = app
        .as_cart(&cart, Method::GET, &format!("/v1/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "it is loaded from the store when asked for"
    );
    let body: Value = read.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["history"].as_array().map(Vec::len)),
        (Some("cancelled"), Some(2))
    );
    assert!(registry().orders.is_running(&order_id));
    assert_eq!(counters(&app.sku("bowl").await), (5, 0, 5));
}

#[actix_web::test]
async fn one_cart_cannot_hoard_a_sku_or_open_lines_without_end() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.cart.max_lines = 2;
        settings.cart.max_qty_per_line = 5;
    })
    .await;
    for sku in ["hoard-a", "hoard-b", "hoard-c"] {
        app.create_sku(sku, 100).await;
    }
    let cart = app.create_cart().await;
    let line_qty_refusals = app
        .metric("stockroom_limit_refusals_total{limit=\"cart_line_qty\"}")
        .await;
    let lines_refusals = app.metric("stockroom_limit_refusals_total{limit=\"cart_lines\"}").await;
    let greedy = app.set_line(&cart, "hoard-a", 6).await;
    assert_eq!(greedy.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&greedy.json().await.unwrap()), "invalid_quantity");
    assert_eq!(
        counters(&app.sku("hoard-a").await),
        (100, 0, 100),
        "nothing held for it"
    );
    assert_eq!(app.set_line(&cart, "hoard-a", 5).await.status(), StatusCode::OK);
    assert_eq!(app.set_line(&cart, "hoard-b", 5).await.status(), StatusCode::OK);
    let third = app.set_line(&cart, "hoard-c", 1).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&third.json().await.unwrap()), "too_many_lines");
    assert_eq!(counters(&app.sku("hoard-c").await), (100, 0, 100));
    for (limit, before) in [("cart_line_qty", line_qty_refusals), ("cart_lines", lines_refusals)] {
        let after = app
            .metric(&format!("stockroom_limit_refusals_total{{limit=\"{limit}\"}}"))
            .await;
        assert!(after >= before + 1.0, "{limit} is counted: {before} -> {after}");
    }
}

#[actix_web::test]
async fn a_cart_total_that_would_not_fit_is_refused_before_any_stock_moves_never_saturated() {
    const PRICE: u64 = 1_000_000_000_000;
    const QTY: u64 = 1_000_000;
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.cart.max_qty_per_line = QTY;
    })
    .await;
    // 18 lines of 10^18 fit in 64 bits (1.8 * 10^19); a 19th does not.
    let skus: Vec<String> = (0..19).map(|index| format!("gold-{index}")).collect();
    for sku in &skus {
        let created = app
            .admin(Method::PUT, &format!("/v1/skus/{sku}"))
            .json(&json!({"name": "Gold bar", "price_minor": PRICE, "currency": "EUR", "on_hand": QTY}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let cart = app.create_cart().await;
    for sku in &skus[..18] {
        assert_eq!(app.set_line(&cart, sku, QTY).await.status(), StatusCode::OK, "{sku}");
    }
    let refused = app.set_line(&cart, &skus[18], QTY).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&refused.json().await.unwrap()), "total_too_large");
    assert_eq!(
        counters(&app.sku(&skus[18]).await),
        (QTY, 0, QTY),
        "the refused line holds nothing"
    );
    let shown = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(
        shown["total_minor"],
        18 * PRICE * QTY,
        "the exact total, not a saturated one"
    );
    assert_eq!(shown["lines"].as_array().unwrap().len(), 18);
}

#[actix_web::test]
async fn a_cart_whose_sku_cannot_extend_its_hold_reports_it_instead_of_moving_its_expiry() {
    use stockroom::domain::clock::ManualClock;
    use stockroom::domain::{Clock, SystemClock};
    use stockroom::persistence::StoreFaults;

    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let faults = Arc::new(StoreFaults::default());
    let options = || Options {
        clock: clock.clone(),
        ..crate::helpers::faulty(&faults)
    };
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options(), |_| {}).await;
    app.create_sku("mug", 10).await;
    app.create_sku("tee", 10).await;
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, "mug", 1).await.status(), StatusCode::OK);
    assert_eq!(app.set_line(&cart, "tee", 1).await.status(), StatusCode::OK);
    let path = format!("/v1/carts/{}", cart.id);
    let before = app.get_as(&cart, &path).await["expires_at"].clone();
    // Again on the same data, with one change in the writer at a time: while one syncs, the
    // next is refused.
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, options(), |settings| {
        settings.writer.queue_capacity_items = 1;
    })
    .await;

    clock.advance(60_000);
    // The mug's new hold is syncing (slowly) when the tee's extension asks for the writer.
    faults.slow_flush_ms.store(2_000, std::sync::atomic::Ordering::SeqCst);
    let refused = app.set_line(&cart, "mug", 2).await;
    faults.slow_flush_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(&refused.json().await.unwrap()), "overloaded");
    let after = app.get_as(&cart, &path).await;
    assert_eq!(
        after["expires_at"], before,
        "the cart's expiry did not move past a hold that did not move"
    );
}

#[actix_web::test]
async fn a_cart_whose_sku_cannot_release_a_line_at_expiry_expires_only_once_it_has() {
    let (clock, options) = with_manual_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |_| {}).await;
    app.create_sku("mug", 10).await;
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, "mug", 2).await.status(), StatusCode::OK);
    let path = format!("/v1/carts/{}", cart.id);
    let engine = Arc::clone(app.state.engine().unwrap());
    // The cart's hold time passes. Its expiry pass releases the line at the SKU, which meets
    // a full queue (once); the cart's own write after it would not.
    clock.advance(31 * 60 * 1000);
    engine.writer.refuse_next_permits(1);
    // A late write finds the cart closed, and wakes its overdue expiry pass.
    let late = app.set_line(&cart, "mug", 3).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&late.json().await.unwrap()), "cart_closed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = app.get_as(&cart, &path).await;
        if read["status"] == "expired" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cart expires once the SKU takes the release: {read}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let movements: Value = app.read_json(ADMIN_TOKEN, "/v1/skus/mug/movements").await;
    let kinds: Vec<&str> = movements["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| movement["kind"].as_str().unwrap())
        .collect();
    // The hold time had passed at the SKU too, so the release there is an `expiry`.
    assert_eq!(
        kinds,
        ["receipt", "reservation", "expiry"],
        "the cart let go of its line before it called itself expired"
    );
    assert_eq!(counters(&app.sku("mug").await), (10, 0, 10));
}

#[actix_web::test]
async fn a_line_whose_cart_write_is_refused_leaves_no_trace_in_the_cart() {
    use stockroom::persistence::StoreFaults;

    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(
        Arc::new(TempDir::new().unwrap()),
        crate::helpers::faulty(&faults),
        |settings| {
            settings.writer.queue_capacity_items = 1;
        },
    )
    .await;
    app.create_sku("mug", 10).await;
    app.create_sku("cap", 10).await;
    let cart = app.create_cart().await;

    // Another change holds the writer's only place while it syncs, slowly.
    faults.slow_flush_ms.store(2_000, std::sync::atomic::Ordering::SeqCst);
    let engine = Arc::clone(app.state.engine().unwrap());
    let busy = {
        let request = app
            .admin(Method::POST, "/v1/skus/cap/reservations")
            .json(&json!({"qty": 1, "ttl_seconds": 600}));
        actix_web::rt::spawn(async move { request.send().await.unwrap().status() })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.writer.occupancy() == 0 {
        assert!(Instant::now() < deadline, "the reservation reaches the writer");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = app.set_line(&cart, "mug", 1).await;
    faults.slow_flush_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.await.unwrap(), StatusCode::CREATED);

    let shown = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(shown["lines"], json!([]));
    assert_eq!(
        shown["currency"],
        Value::Null,
        "the refused line did not fix the cart's currency"
    );
}

#[actix_web::test]
async fn anonymous_carts_are_bounded_per_client_and_in_all() {
    let (clock, options) = with_manual_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.cart.create_per_minute_per_client = 3;
        settings.cart.max_open = 4;
    })
    .await;
    let create = || app.client.post(app.url("/v1/carts")).json(&json!({})).send();
    let rate_refusals = "stockroom_limit_refusals_total{limit=\"cart_creation_rate\"}";
    let cap_refusals = "stockroom_limit_refusals_total{limit=\"open_carts\"}";
    let (rate_before, cap_before) = (app.metric(rate_refusals).await, app.metric(cap_refusals).await);

    // One client: a burst of three, then one every 20 s.
    let mut carts = Vec::new();
    for _ in 0..3 {
        let created = create().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        carts.push(created.json::<Value>().await.unwrap());
    }
    let limited = create().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers().get("retry-after").unwrap(), "20");
    assert_eq!(error_code(&limited.json().await.unwrap()), "too_many_requests");
    assert!(app.metric(rate_refusals).await >= rate_before + 1.0);
    clock.advance(20_000);
    assert_eq!(
        create().await.unwrap().status(),
        StatusCode::CREATED,
        "one more after 20 s"
    );

    // In all: four open carts at most; a checked-out cart frees its place.
    clock.advance(60_000);
    let full = create().await.unwrap();
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(error_code(&full.json().await.unwrap()), "overloaded");
    assert!(app.metric(cap_refusals).await >= cap_before + 1.0);
    app.create_sku("plate", 5).await;
    let first = crate::helpers::TestCart {
        id: carts[0]["cart_id"].as_str().unwrap().to_owned(),
        token: carts[0]["cart_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(app.set_line(&first, "plate", 1).await.status(), StatusCode::OK);
    assert_eq!(app.checkout(&first).await.status(), StatusCode::CREATED);
    assert_eq!(
        create().await.unwrap().status(),
        StatusCode::CREATED,
        "its place was freed"
    );
}

#[actix_web::test]
async fn settled_carts_and_orders_leave_the_store_after_their_retention_and_live_ones_stay() {
    use stockroom::domain::{CartId, OrderId};
    use stockroom::persistence::keys;

    let (clock, options) = with_manual_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.cart.settled_retention_hours = 24;
        settings.order.settled_retention_hours = 48;
        settings.order.payment_timeout_seconds = 7 * 24 * 3600;
    })
    .await;
    app.create_sku("tray", 10).await;
    let (delivered_cart, delivered) = order_of_one(&app, "tray").await;
    pay_and_deliver(&app, &delivered).await;
    let (_, waiting) = order_of_one(&app, "tray").await;
    let open = app.create_cart().await;

    let engine = Arc::clone(app.state.engine().unwrap());
    let stored = |key: Vec<u8>| engine.store.get(&key).unwrap().is_some();
    let cart_key = |cart: &TestCart| keys::cart(&CartId::parse(&cart.id).unwrap());
    let order_key = |id: &str| keys::order(&OrderId::parse(id).unwrap());
    let sweep = || {
        engine.sweep().unwrap();
        engine.barrier()
    };

    clock.advance(25 * 3_600_000);
    sweep().await.unwrap();
    assert!(!stored(cart_key(&delivered_cart)), "a checked-out cart goes after 24 h");
    assert!(stored(order_key(&delivered)), "its order is kept 48 h");
    assert!(stored(cart_key(&open)), "an open cart stays");
    assert!(stored(order_key(&waiting)), "an order not yet paid stays");

    clock.advance(24 * 3_600_000);
    sweep().await.unwrap();
    assert!(!stored(order_key(&delivered)), "a delivered order goes after 48 h");
    assert!(
        stored(order_key(&waiting)),
        "an order not yet settled stays, however old"
    );
}

/// A new cart with one unit of `sku`, checked out: the cart and its order's id.
async fn order_of_one(app: &TestApp, sku: &str) -> (TestCart, String) {
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, sku, 1).await.status(), StatusCode::OK);
    let placed: Value = app.checkout(&cart).await.json().await.unwrap();
    (cart, placed["order_id"].as_str().unwrap().to_owned())
}

/// Server options with a clock the test moves, and that clock.
fn with_manual_clock() -> (Arc<stockroom::domain::clock::ManualClock>, Options) {
    use stockroom::domain::{Clock, SystemClock};
    let clock = Arc::new(stockroom::domain::clock::ManualClock::new(SystemClock.now_ms()));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    (clock, options)
}

/// Pays an order (as the payment service would, here with the admin token), then moves it to
/// packed, shipped and delivered.
async fn pay_and_deliver(app: &TestApp, order_id: &str) {
    let paid = app
        .admin(Method::POST, &format!("/v1/orders/{order_id}/pay"))
        .json(&json!({"payment_ref": "psp-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    for status in ["packed", "shipped", "delivered"] {
        let moved = app
            .admin(Method::POST, &format!("/v1/orders/{order_id}/status"))
            .json(&json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), StatusCode::OK, "to {status}");
    }
}

#[actix_web::test]
async fn an_anonymous_cart_key_must_be_unguessable_and_a_strong_one_replays() {
    let app = TestApp::spawn().await;
    let create = |key: &'static str| {
        app.client
            .post(app.url("/v1/carts"))
            .header("Idempotency-Key", key)
            .json(&json!({}))
            .send()
    };
    // A guessable key would replay another shopper's cart token.
    let weak = create("cart-1").await.unwrap();
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&weak.json().await.unwrap()), "weak_idempotency_key");
    let key = "4f0c9a51-5d6e-4b7a-9c3d-2e1f0a9b8c7d";
    let first: Value = create(key).await.unwrap().json().await.unwrap();
    let again = create(key).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (&again["cart_id"], &again["cart_token"]),
        (&first["cart_id"], &first["cart_token"])
    );
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_cart_limit() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.cart.create_per_minute_per_client = 1;
        settings.http.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let create = |forwarded_for: &str| {
        app.client
            .post(app.url("/v1/carts"))
            .header("X-Forwarded-For", forwarded_for)
            .json(&json!({}))
            .send()
    };
    assert_eq!(create("203.0.113.5").await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(
        create("203.0.113.5").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same shopper, behind the proxy"
    );
    assert_eq!(
        create("198.51.100.1, 203.0.113.6").await.unwrap().status(),
        StatusCode::CREATED,
        "another shopper: the rightmost address the proxy added"
    );
}

#[actix_web::test]
async fn a_checkout_refused_after_committing_gives_everything_back_and_the_cart_still_lists_its_lines() {
    // 19 lines of a million units at 1 each; then every SKU is repriced to 10^12, so the
    // order's total (1.9 * 10^19) no longer fits: checkout commits every line, cannot place
    // the order, and gives every line back.
    const QTY: u64 = 1_000_000;
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.cart.max_qty_per_line = QTY;
    })
    .await;
    let skus: Vec<String> = (0..19).map(|index| format!("bar-{index}")).collect();
    let put = |sku: &str, price: u64, on_hand: Option<u64>| {
        let mut body = json!({"name": "Gold bar", "price_minor": price, "currency": "EUR"});
        if let Some(on_hand) = on_hand {
            body["on_hand"] = json!(on_hand);
        }
        app.admin(Method::PUT, &format!("/v1/skus/{sku}")).json(&body).send()
    };
    for sku in &skus {
        assert!(put(sku, 1, Some(QTY)).await.unwrap().status().is_success());
    }
    let cart = app.create_cart().await;
    for sku in &skus {
        assert_eq!(app.set_line(&cart, sku, QTY).await.status(), StatusCode::OK, "{sku}");
    }
    for sku in &skus {
        assert!(put(sku, 1_000_000_000_000, None).await.unwrap().status().is_success());
    }
    let refused = app.checkout(&cart).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    for sku in &skus {
        assert_eq!(counters(&app.sku(sku).await), (QTY, 0, QTY), "{sku} went back");
    }
    let kept: Value = app.get_as(&cart, &format!("/v1/carts/{}", cart.id)).await;
    assert_eq!(kept["status"], "open");
    let failures = kept["checkout_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 19, "every line is listed: {kept}");
    assert!(failures
        .iter()
        .all(|line| line["qty"] == QTY && line["reason"] == "total_too_large"));
}
