//! Backorders and preorders: holds may take `available` below zero, down to minus the SKU's
//! `backorder_limit` and never further however many race; restocks fill backorders oldest
//! first; a backordered order line does not ship until it is filled.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::crash::check_ledger;
use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

async fn put_settings(app: &TestApp, sku: &str, settings: Value) -> (StatusCode, Value) {
    let mut body = json!({"name": format!("Product {sku}"), "price_minor": 1299, "currency": "EUR"});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    app.call_json(ADMIN_TOKEN, Method::PUT, &format!("/v1/skus/{sku}"), &body)
        .await
}

/// `[on_hand, reserved, committed]`, `available` (signed) and `backordered` of a SKU.
async fn figures(app: &TestApp, sku: &str) -> ([u64; 3], i64, u64) {
    let body = app.sku(sku).await;
    (
        ["on_hand", "reserved", "committed"].map(|name| body[name].as_u64().unwrap()),
        body["available"].as_i64().unwrap(),
        body["backordered"].as_u64().unwrap(),
    )
}

async fn ledger_ok(app: &TestApp, sku: &str) {
    let client = reqwest::Client::new();
    check_ledger(&client, app.url("").trim_end_matches('/'), 0, &[sku.to_owned()]).await;
}

#[actix_web::test]
async fn racing_holds_never_take_available_past_minus_the_backorder_limit() {
    let app = TestApp::spawn().await;
    app.create_sku("drop", 5).await;
    let (status, body) = put_settings(&app, "drop", json!({"backorder_limit": 10})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["backorder_limit"], &body["backordered"]),
        (&json!(10), &json!(0))
    );
    let client = reqwest::Client::new();
    let attempts = futures::future::join_all((0..40).map(|_| {
        client
            .post(app.url("/v1/skus/drop/reservations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"qty": 1, "ttl_seconds": 600}))
            .send()
    }))
    .await;
    let held = attempts
        .iter()
        .filter(|response| response.as_ref().unwrap().status() == StatusCode::CREATED)
        .count();
    assert_eq!(held, 15, "5 on the shelf and 10 backordered, not one more");
    assert_eq!(figures(&app, "drop").await, ([5, 15, 0], -10, 10));
    let refused = app.reserve("drop", 1, 600).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    ledger_ok(&app, "drop").await;
}

#[actix_web::test]
async fn a_restock_fills_backorders_oldest_first() {
    let app = TestApp::spawn().await;
    app.create_sku("vinyl", 0).await;
    put_settings(&app, "vinyl", json!({"backorder_limit": 10})).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let held: Value = app.reserve("vinyl", 2, 600).await.json().await.unwrap();
        ids.push(held["reservation_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(figures(&app, "vinyl").await, ([0, 8, 0], -8, 8));
    // Five arrive: the first two holds are filled, the third gets one of its two.
    let restocked = app
        .admin(Method::POST, "/v1/skus/vinyl/restock")
        .json(&json!({"qty": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    let answered: Value = restocked.json().await.unwrap();
    assert_eq!(
        (&answered["available"], &answered["backordered"]),
        (&json!(-3), &json!(3)),
        "the restock's answer shows what it filled"
    );
    assert_eq!(figures(&app, "vinyl").await, ([5, 8, 0], -3, 3));
    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/vinyl/movements?limit=100").await;
    let filled: Vec<(String, String)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|movement| movement["kind"] == "backorder_filled")
        .map(|movement| {
            (
                movement["reference"].as_str().unwrap().to_owned(),
                movement["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        filled,
        [
            (ids[0].clone(), "2 units on the shelf".to_owned()),
            (ids[1].clone(), "2 units on the shelf".to_owned()),
            (ids[2].clone(), "1 units on the shelf".to_owned()),
        ]
    );
    // Releasing a backordered hold gives up its place; the next one moves up.
    let released = app
        .admin(Method::DELETE, &format!("/v1/reservations/{}", ids[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    assert_eq!(figures(&app, "vinyl").await, ([5, 6, 0], -1, 1));
    ledger_ok(&app, "vinyl").await;
}

#[actix_web::test]
async fn a_backordered_line_ships_once_a_restock_fills_it() {
    let app = TestApp::spawn().await;
    app.create_sku("kettle", 1).await;
    let (status, body) = put_settings(
        &app,
        "kettle",
        json!({"backorder_limit": 5, "available_from": "2030-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["available_from"], "2030-01-01T00:00:00.000Z");
    let public = app.read_public("/v1/skus/kettle").await;
    assert_eq!(
        public["available_from"], "2030-01-01T00:00:00.000Z",
        "a preorder is public"
    );
    assert_eq!(public["backorder_limit"], Value::Null, "limits are the shop's");
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, "kettle", 3).await.status(), StatusCode::OK);
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    assert_eq!(order["lines"][0]["backordered"], true, "{order}");
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert_eq!(figures(&app, "kettle").await, ([1, 0, 3], -2, 2));
    let pay = app
        .admin(Method::POST, &format!("/v1/orders/{id}/pay"))
        .json(&json!({"payment_ref": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), StatusCode::OK);
    let fulfil = |qty: u64| {
        app.admin(Method::POST, &format!("/v1/orders/{id}/fulfilments"))
            .json(&json!({"location": "default", "lines": [{"sku": "kettle", "qty": qty}]}))
            .send()
    };
    let early = fulfil(3).await.unwrap();
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let early: Value = early.json().await.unwrap();
    assert_eq!(
        (error_code(&early), &early["error"]["waiting"]),
        ("backordered", &json!(2))
    );
    let shipped_by_status = app
        .admin(Method::POST, &format!("/v1/orders/{id}/status"))
        .json(&json!({"status": "shipped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(shipped_by_status.status(), StatusCode::CONFLICT, "nor by status");
    assert_eq!(figures(&app, "kettle").await, ([1, 0, 3], -2, 2), "nothing shipped");
    // The one on the shelf ships now; the rest after the restock.
    assert_eq!(fulfil(1).await.unwrap().status(), StatusCode::CREATED);
    let restocked = app
        .admin(Method::POST, "/v1/skus/kettle/restock")
        .json(&json!({"qty": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    assert_eq!(figures(&app, "kettle").await, ([4, 0, 2], 2, 0));
    let rest = fulfil(2).await.unwrap();
    assert_eq!(rest.status(), StatusCode::CREATED);
    assert_eq!(rest.json::<Value>().await.unwrap()["order_status"], "shipped");
    assert_eq!(figures(&app, "kettle").await, ([2, 0, 0], 2, 0));
    ledger_ok(&app, "kettle").await;
}

#[actix_web::test]
async fn backorder_settings_are_checked_and_survive_a_restart() {
    let app = TestApp::spawn().await;
    app.create_sku("lamp", 0).await;
    for (bad, code) in [
        (json!({"backorder_limit": -1}), "invalid_backorder_limit"),
        (json!({"available_from": "soon"}), "invalid_available_from"),
        (json!({"available_from": 5}), "invalid_available_from"),
    ] {
        let (status, body) = put_settings(&app, "lamp", bad.clone()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, code), "{bad}");
    }
    put_settings(
        &app,
        "lamp",
        json!({"backorder_limit": 3, "available_from": "2031-05-01T09:00:00Z"}),
    )
    .await;
    app.reserve("lamp", 2, 600).await;
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Default::default(), |_| {}).await;
    let lamp = app.sku("lamp").await;
    assert_eq!(
        (
            &lamp["backorder_limit"],
            &lamp["backordered"],
            &lamp["available"],
            &lamp["available_from"]
        ),
        (&json!(3), &json!(2), &json!(-2), &json!("2031-05-01T09:00:00.000Z"))
    );
    // Clearing the date and keeping the limit.
    let (status, body) = put_settings(&app, "lamp", json!({"available_from": null})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["available_from"], &body["backorder_limit"]),
        (&Value::Null, &json!(3))
    );
}
