//! Fulfilment and returns: sold units stay on the shelf, `committed`, until shipped; orders
//! ship in parts from where their units are, the rest can be cancelled, and delivered units
//! come back restocked or written off. Stock is conserved at every step, as the ledger says,
//! through kill -9 too.

use std::time::Duration;

use rand::{Rng, RngCore};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::crash::{check_ledger, crash_run, movements, put_sku, read_skus, ServerProcess};
use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

/// `[on_hand, reserved, committed, available]` of `sku` at `location`.
async fn at(app: &TestApp, sku: &str, location: &str) -> [u64; 4] {
    let body = app.sku(sku).await;
    body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["location"] == location)
        .map(|entry| ["on_hand", "reserved", "committed", "available"].map(|name| entry[name].as_u64().unwrap()))
        .unwrap_or([0; 4])
}

/// Sends `body` to `path` with `token` and returns status and JSON.
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    app.call_json(token, Method::POST, path, &body).await
}

/// A paid order of `qty` units of `sku`; returns its id.
async fn paid_order(app: &TestApp, sku: &str, qty: u64) -> String {
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, sku, qty).await.status(), StatusCode::OK);
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        app,
        ADMIN_TOKEN,
        &format!("/v1/orders/{id}/pay"),
        json!({"payment_ref": "p"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    id
}

#[actix_web::test]
async fn sell_ship_in_part_cancel_the_rest_deliver_and_take_back_conserve_stock_at_every_step() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let skus = vec!["mug".to_owned()];
    let client = reqwest::Client::new();
    app.create_sku("mug", 10).await;
    let (status, _) = post(
        &app,
        ADMIN_TOKEN,
        "/v1/skus/mug/locations/north/restock",
        json!({"qty": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "north does not exist yet");
    let north = app
        .admin(Method::PUT, "/v1/locations/north")
        .json(&json!({"name": "North", "kind": "warehouse", "priority": 9, "active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(north.status(), StatusCode::CREATED);
    let (status, _) = post(
        &app,
        ADMIN_TOKEN,
        "/v1/skus/mug/locations/north/restock",
        json!({"qty": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Sold: the units are committed at `default` (the higher priority), still on the shelf.
    let cart = app.create_cart().await;
    app.set_line(&cart, "mug", 4).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert_eq!(order["lines"][0]["name"], "Product mug", "an order line shows its name");
    assert_eq!(order["lines"][0]["parts"], json!([{"location": "default", "qty": 4}]));
    assert_eq!(at(&app, "mug", "default").await, [10, 0, 4, 6]);
    assert_eq!(at(&app, "mug", "north").await, [5, 0, 0, 5]);
    check_ledger(&client, base, 0, &skus).await;

    let warehouse = app.credential("warehouse", &["fulfilment"]).await;
    let fulfil = |lines: Value, location: &str| json!({"location": location, "lines": lines});
    let path = format!("/v1/orders/{id}/fulfilments");
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 1}]), "default"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "an unpaid order does not ship: {body}");
    assert_eq!(error_code(&body), "invalid_transition");
    let (status, _) = post(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/orders/{id}/pay"),
        json!({"payment_ref": "p"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Refusals change nothing.
    let (status, body) = post(
        &app,
        &cart.token,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 1}]), "default"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a shopper does not ship: {body}");
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 5}]), "default"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "exceeds_ordered"));
    assert_eq!(body["error"]["remaining"], 4);
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 1}]), "north"),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "not_committed_here")
    );
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "tea", "qty": 1}]), "default"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_in_order"));
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 1}]), "nowhere"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 1}, {"sku": "mug", "qty": 1}]), "default"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "duplicate_sku"));
    assert_eq!(at(&app, "mug", "default").await, [10, 0, 4, 6]);

    // Ship two: they leave the shelf.
    let (status, shipped) = post(
        &app,
        &warehouse,
        &path,
        fulfil(json!([{"sku": "mug", "qty": 2}]), "default"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{shipped}");
    assert_eq!(shipped["order_status"], "partially_shipped");
    assert_eq!(shipped["lines"], json!([{"sku": "mug", "qty": 2}]));
    assert_eq!(at(&app, "mug", "default").await, [8, 0, 2, 6]);
    check_ledger(&client, base, 1, &skus).await;

    // Cancel the rest: the two not shipped are available again; the order is shipped.
    let (status, body) = post(&app, &cart.token, &format!("/v1/orders/{id}/cancel"), json!({})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a shopper cannot cancel a paid order: {body}"
    );
    let (status, order) = post(&app, &warehouse, &format!("/v1/orders/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "shipped");
    assert_eq!(
        (&order["lines"][0]["shipped"], &order["lines"][0]["cancelled"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(at(&app, "mug", "default").await, [8, 0, 0, 8]);
    check_ledger(&client, base, 2, &skus).await;

    // Returns come after delivery only, and never more than shipped.
    let returns = format!("/v1/orders/{id}/returns");
    let back = |qty: u64, location: &str, restock: bool| json!({"lines": [{"sku": "mug", "qty": qty}], "location": location, "restock": restock});
    let (status, body) = post(&app, &warehouse, &returns, back(1, "north", true)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    let (status, _) = post(
        &app,
        &warehouse,
        &format!("/v1/orders/{id}/status"),
        json!({"status": "delivered"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(&app, &warehouse, &returns, back(3, "north", true)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "exceeds_shipped"));
    assert_eq!(body["error"]["returnable"], 2);

    // One comes back to north's shelf, one is written off at default.
    let (status, taken) = post(&app, &warehouse, &returns, back(1, "north", true)).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(
        (&taken["order_status"], &taken["refund_minor"], &taken["currency"]),
        (&json!("partially_returned"), &json!(1299), &json!("EUR"))
    );
    assert_eq!(at(&app, "mug", "north").await, [6, 0, 0, 6]);
    let (status, taken) = post(&app, &warehouse, &returns, back(1, "default", false)).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(taken["order_status"], "returned");
    assert_eq!(
        at(&app, "mug", "default").await,
        [8, 0, 0, 8],
        "written off: not back on the shelf"
    );
    check_ledger(&client, base, 3, &skus).await;

    let order = app.read_json(&warehouse, &format!("/v1/orders/{id}")).await;
    let statuses: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "placed",
            "paid",
            "partially_shipped",
            "shipped",
            "delivered",
            "partially_returned",
            "returned"
        ]
    );
    assert_eq!(order["fulfilments"].as_array().unwrap().len(), 1);
    assert_eq!(order["returns"].as_array().unwrap().len(), 2);
    assert_eq!(order["lines"][0]["returned"], 2);

    // The ledger tells the story, kind by kind.
    let (items, _) = movements(&client, base, "mug").await;
    let kinds: Vec<(&str, &str, i64, i64)> = items
        .iter()
        .filter(|movement| movement["reference"].is_string() && movement["kind"] != "reservation")
        .map(|movement| {
            (
                movement["kind"].as_str().unwrap(),
                movement["location"].as_str().unwrap(),
                movement["on_hand_delta"].as_i64().unwrap(),
                movement["committed_delta"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("sale", "default", 0, 4),
            ("shipment", "default", -2, -2),
            ("release", "default", 0, -2),
            ("return", "north", 1, 0),
            ("return", "default", 1, 0),
            ("adjustment", "default", -1, 0),
        ]
    );
}

#[actix_web::test]
async fn moving_an_order_to_shipped_ships_whatever_is_left_from_where_it_is() {
    let app = TestApp::spawn().await;
    app.create_sku("cap", 6).await;
    let id = paid_order(&app, "cap", 3).await;
    assert_eq!(at(&app, "cap", "default").await, [6, 0, 3, 3]);
    for status in ["packed", "shipped"] {
        let (answer, body) = post(
            &app,
            ADMIN_TOKEN,
            &format!("/v1/orders/{id}/status"),
            json!({ "status": status }),
        )
        .await;
        assert_eq!(answer, StatusCode::OK, "{body}");
    }
    assert_eq!(at(&app, "cap", "default").await, [3, 0, 0, 3]);
    let order = app.read_json(ADMIN_TOKEN, &format!("/v1/orders/{id}")).await;
    assert_eq!(order["fulfilments"][0]["lines"], json!([{"sku": "cap", "qty": 3}]));
    assert_eq!(order["lines"][0]["shipped"], 3);
    // Fulfilment moves are the server's: they cannot be asked for by name.
    let (answer, body) = post(
        &app,
        ADMIN_TOKEN,
        &format!("/v1/orders/{id}/status"),
        json!({"status": "partially_returned"}),
    )
    .await;
    assert_eq!(
        (answer, error_code(&body)),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    // A cancelled order gives its committed units back: nothing left committed.
    let other = paid_order(&app, "cap", 2).await;
    assert_eq!(at(&app, "cap", "default").await, [3, 0, 2, 1]);
    let (answer, body) = post(&app, ADMIN_TOKEN, &format!("/v1/orders/{other}/cancel"), json!({})).await;
    assert_eq!((answer, &body["status"]), (StatusCode::OK, &json!("cancelled")));
    assert_eq!(at(&app, "cap", "default").await, [3, 0, 0, 3]);
}

/// Sends one keyed request until it has an answer, restarting the server when it is gone.
async fn settle(
    client: &reqwest::Client,
    server: &mut Option<ServerProcess>,
    dir: &std::path::Path,
    request: &(Method, String, String, Value, String),
) -> (StatusCode, Value) {
    let (method, path, token, body, key) = request;
    loop {
        let base = server.as_ref().expect("running").base.clone();
        let sent = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() != StatusCode::SERVICE_UNAVAILABLE => {
                let status = response.status();
                return (status, response.json().await.unwrap_or(Value::Null));
            }
            _ => {
                if let Some(gone) = server.take() {
                    gone.kill();
                }
                *server = Some(ServerProcess::start(dir, client).await);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_fulfilments_and_returns_neither_loses_nor_doubles_stock() {
    let (cycles, mut rng, dir, client) = crash_run("fulfilment crash", 6);
    let mut server = Some(ServerProcess::start(dir.path(), &client).await);
    let skus = vec!["kit".to_owned()];
    put_sku(&client, &server.as_ref().unwrap().base, "kit", 1_000).await;
    let mut kills = 0;
    for cycle in 0..cycles {
        let key = |rng: &mut rand::rngs::StdRng| {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
        };
        let base = server.as_ref().unwrap().base.clone();
        let created: Value = client
            .post(format!("{base}/v1/carts"))
            .header("Idempotency-Key", key(&mut rng))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cart = created["cart_id"].as_str().unwrap().to_owned();
        let token = created["cart_token"].as_str().unwrap().to_owned();
        let admin = ADMIN_TOKEN.to_owned();
        let set = (
            Method::PUT,
            format!("/v1/carts/{cart}/items/kit"),
            token.clone(),
            json!({"qty": 4}),
            key(&mut rng),
        );
        assert_eq!(settle(&client, &mut server, dir.path(), &set).await.0, StatusCode::OK);
        let checkout = (
            Method::POST,
            format!("/v1/carts/{cart}/checkout"),
            token.clone(),
            json!({}),
            key(&mut rng),
        );
        let (status, order) = settle(&client, &mut server, dir.path(), &checkout).await;
        assert!(status.is_success(), "cycle {cycle}: {order}");
        let id = order["order_id"].as_str().unwrap().to_owned();
        let steps = [
            ("pay", json!({"payment_ref": "p"})),
            (
                "fulfilments",
                json!({"location": "default", "lines": [{"sku": "kit", "qty": 2}]}),
            ),
            ("cancel", json!({})),
            ("status", json!({"status": "delivered"})),
            (
                "returns",
                json!({"location": "default", "restock": true, "lines": [{"sku": "kit", "qty": 1}]}),
            ),
            (
                "returns",
                json!({"location": "default", "restock": false, "lines": [{"sku": "kit", "qty": 1}]}),
            ),
        ];
        for (step, body) in steps {
            let request = (
                Method::POST,
                format!("/v1/orders/{id}/{step}"),
                admin.clone(),
                body,
                key(&mut rng),
            );
            if rng.random_bool(0.4) {
                // Kill while the request is on its way or being worked on.
                let base = server.as_ref().unwrap().base.clone();
                let (method, path, token, body, key) = request.clone();
                let in_flight = client
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send();
                let delay = Duration::from_micros(rng.random_range(0..20_000));
                let _ = tokio::time::timeout(delay, in_flight).await;
                server.take().unwrap().kill();
                kills += 1;
                server = Some(ServerProcess::start(dir.path(), &client).await);
                // The order finishes the stock steps it owed when it starts, before it answers
                // anything: read it first, so the ledger is not read halfway through them.
                let base = server.as_ref().unwrap().base.clone();
                let read = client
                    .get(format!("{base}/v1/orders/{id}"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(read.status(), StatusCode::OK);
                check_ledger(&client, &base, cycle, &skus).await;
            }
            let (status, answer) = settle(&client, &mut server, dir.path(), &request).await;
            assert!(status.is_success(), "cycle {cycle}, {step}: {status} {answer}");
        }
        let base = server.as_ref().unwrap().base.clone();
        let read = read_skus(&client, &base, &skus).await;
        let kit = &read["kit"];
        // Each cycle ships 2 and takes 1 back onto the shelf.
        let expected = 1_000 - (cycle as u64 + 1);
        assert_eq!(
            ["on_hand", "reserved", "committed", "available"].map(|name| kit[name].as_u64().unwrap()),
            [expected, 0, 0, expected],
            "cycle {cycle}"
        );
        check_ledger(&client, &base, cycle, &skus).await;
        let order: Value = client
            .get(format!("{base}/v1/orders/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], "returned", "cycle {cycle}");
        assert_eq!(
            (
                &order["lines"][0]["shipped"],
                &order["lines"][0]["cancelled"],
                &order["lines"][0]["returned"]
            ),
            (&json!(2), &json!(2), &json!(2)),
            "cycle {cycle}"
        );
    }
    println!("fulfilment crash: {kills} kills over {cycles} orders");
    server.take().unwrap().kill();
}
