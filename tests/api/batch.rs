//! Bulk stock sync: `POST /v1/stock/batch` applies every item or none, compares before it
//! sets, applies a keyed replay once, and never loses a checkout that runs beside it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::crash::{check_ledger, crash_run, put_sku, read_skus, ServerProcess};
use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

async fn batch(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.call_json(ADMIN_TOKEN, Method::POST, "/v1/stock/batch", &body).await
}

/// `[on_hand, reserved, committed, available]` of a SKU (all locations).
async fn totals(app: &TestApp, sku: &str) -> [u64; 4] {
    let body = app.sku(sku).await;
    ["on_hand", "reserved", "committed", "available"].map(|name| body[name].as_u64().unwrap())
}

async fn ledger_length(app: &TestApp, sku: &str) -> usize {
    app.read_json(ADMIN_TOKEN, &format!("/v1/skus/{sku}/movements?limit=1000"))
        .await["items"]
        .as_array()
        .unwrap()
        .len()
}

#[actix_web::test]
async fn one_item_that_fails_its_compare_means_nothing_is_applied() {
    let app = TestApp::spawn().await;
    for sku in ["a", "b", "c"] {
        app.create_sku(sku, 10).await;
    }
    app.reserve("c", 4, 600).await;
    let before: Vec<usize> = futures::future::join_all(["a", "b", "c"].map(|sku| ledger_length(&app, sku))).await;
    let items = |expected_c: u64| {
        json!({"items": [
            {"sku": "a", "location": "default", "op": "set", "qty": 25, "expected_on_hand": 10},
            {"sku": "b", "op": "adjust", "qty": -3},
            {"sku": "c", "location": "default", "op": "set", "qty": 7, "expected_on_hand": expected_c},
        ], "reason": "ERP sync 42"})
    };
    let (status, body) = batch(&app, items(9)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "expectation_failed"),
        "{body}"
    );
    assert_eq!(
        body["error"]["items"],
        json!([{"index": 2, "sku": "c", "location": "default", "expected_on_hand": 9, "on_hand": 10}]),
        "only the item that differs is listed"
    );
    assert_eq!(totals(&app, "a").await, [10, 0, 0, 10], "a was not set");
    assert_eq!(totals(&app, "b").await, [10, 0, 0, 10], "b was not adjusted");
    let after: Vec<usize> = futures::future::join_all(["a", "b", "c"].map(|sku| ledger_length(&app, sku))).await;
    assert_eq!(after, before, "no movement was written");

    let (status, body) = batch(&app, items(10)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["applied"], 3);
    assert_eq!(
        body["items"][2],
        json!({"index": 2, "sku": "c", "location": "default", "on_hand": 7, "reserved": 4, "committed": 0, "available": 3})
    );
    assert_eq!(totals(&app, "a").await, [25, 0, 0, 25]);
    assert_eq!(totals(&app, "b").await, [7, 0, 0, 7]);
    assert_eq!(totals(&app, "c").await, [7, 4, 0, 3]);
    let movements = app
        .read_json(ADMIN_TOKEN, "/v1/skus/a/movements?order=desc&limit=1")
        .await;
    assert_eq!(
        (
            &movements["items"][0]["kind"],
            &movements["items"][0]["reason"],
            &movements["items"][0]["on_hand_delta"]
        ),
        (&json!("count"), &json!("ERP sync 42"), &json!(15))
    );
    let client = reqwest::Client::new();
    check_ledger(
        &client,
        app.url("").trim_end_matches('/'),
        0,
        &["a".into(), "b".into(), "c".into()],
    )
    .await;
}

#[actix_web::test]
async fn items_that_cannot_be_applied_are_listed_and_nothing_is() {
    let app = TestApp::spawn().await;
    app.create_sku("held", 10).await;
    app.create_sku("plain", 10).await;
    app.reserve("held", 6, 600).await;
    let (status, body) = batch(
        &app,
        json!({"items": [
            {"sku": "plain", "op": "adjust", "qty": 5},
            {"sku": "held", "op": "set", "qty": 5},
            {"sku": "ghost", "op": "set", "qty": 1},
        ]}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_items"),
        "{body}"
    );
    let listed: Vec<(u64, &str)> = body["error"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["index"].as_u64().unwrap(), item["code"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(1, "insufficient_stock"), (2, "not_found")], "{body}");
    assert_eq!(totals(&app, "plain").await, [10, 0, 0, 10]);
    assert_eq!(totals(&app, "held").await, [10, 6, 0, 4]);

    // Malformed batches are refused before anything is looked at.
    for (bad, code) in [
        (json!({"items": []}), "invalid_items"),
        (
            json!({"items": [{"sku": "plain", "op": "swap", "qty": 1}]}),
            "invalid_op",
        ),
        (
            json!({"items": [{"sku": "plain", "op": "adjust", "qty": 0}]}),
            "invalid_quantity",
        ),
        (
            json!({"items": [{"sku": "plain", "op": "set", "qty": -1}]}),
            "invalid_quantity",
        ),
        (
            json!({"items": [{"sku": "plain", "op": "set", "qty": 1}, {"sku": "plain", "location": "default", "op": "set", "qty": 2}]}),
            "duplicate_item",
        ),
        (
            json!({"items": [{"sku": "plain", "location": "mars", "op": "set", "qty": 1}]}),
            "unknown_location",
        ),
        (
            json!({"items": [{"sku": "bad id!", "op": "set", "qty": 1}]}),
            "invalid_sku",
        ),
    ] {
        let (status, body) = batch(&app, bad.clone()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, code),
            "{bad}: {body}"
        );
    }
    assert_eq!(totals(&app, "plain").await, [10, 0, 0, 10]);
}

#[actix_web::test]
async fn a_replay_with_the_same_key_applies_once_and_too_many_items_is_413() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Default::default(), |settings| {
        settings.batch.max_items = 3;
    })
    .await;
    app.create_sku("bolt", 100).await;
    let send = |body: Value| {
        app.admin(Method::POST, "/v1/stock/batch")
            .header("Idempotency-Key", "erp-run-7")
            .json(&body)
            .send()
    };
    let body = json!({"items": [{"sku": "bolt", "op": "adjust", "qty": 25}]});
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    for _ in 0..3 {
        let again = send(body.clone()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first, "the stored answer");
    }
    assert_eq!(totals(&app, "bolt").await, [125, 0, 0, 125], "applied once");
    let reused = send(json!({"items": [{"sku": "bolt", "op": "adjust", "qty": 1}]}))
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let four: Vec<Value> = (0..4)
        .map(|n| json!({"sku": format!("s{n}"), "op": "set", "qty": 1}))
        .collect();
    let (status, body) = batch(&app, json!({ "items": four })).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_items")
    );
    assert_eq!(body["error"]["max_items"], 3);
}

#[actix_web::test]
async fn checkouts_running_beside_a_batch_set_are_never_lost() {
    let app = TestApp::spawn().await;
    app.create_sku("flash", 40).await;
    let mut carts = Vec::new();
    for _ in 0..20 {
        let cart = app.create_cart().await;
        assert_eq!(app.set_line(&cart, "flash", 2).await.status(), StatusCode::OK);
        carts.push(cart);
    }
    assert_eq!(totals(&app, "flash").await, [40, 40, 0, 0]);
    // The warehouse counts 50 on the shelf while every cart checks out.
    let checkouts = futures::future::join_all(carts.iter().map(|cart| app.checkout(cart)));
    let count = batch(&app, json!({"items": [{"sku": "flash", "op": "set", "qty": 50}]}));
    let (placed, (status, body)) = futures::join!(checkouts, count);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(placed.iter().all(|response| response.status() == StatusCode::CREATED));
    // The count set the shelf; every sale is still committed on it.
    assert_eq!(totals(&app, "flash").await, [50, 0, 40, 10]);
    let client = reqwest::Client::new();
    check_ledger(&client, app.url("").trim_end_matches('/'), 0, &["flash".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_batch_leaves_all_of_it_or_none() {
    let (cycles, mut rng, dir, client) = crash_run("batch crash", 8);
    let mut server = ServerProcess::start(dir.path(), &client).await;
    let skus: Vec<String> = (0..200).map(|n| format!("part-{n}")).collect();
    for sku in &skus {
        put_sku(&client, &server.base, sku, 0).await;
    }
    // What every SKU has: the sum of the batches that were applied.
    let mut total = 0;
    let mut kept = 0;
    for cycle in 0..cycles {
        let qty = cycle as i64 + 1;
        let items: Vec<Value> = skus
            .iter()
            .map(|sku| json!({"sku": sku, "op": "adjust", "qty": qty}))
            .collect();
        let sent = client
            .post(format!("{}/v1/stock/batch", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "items": items }))
            .send();
        let delay = Duration::from_micros(rng.random_range(0..40_000));
        let answered = tokio::time::timeout(delay, sent).await;
        server.kill();
        server = ServerProcess::start(dir.path(), &client).await;
        let read = read_skus(&client, &server.base, &skus).await;
        let on_hand: Vec<i64> = skus.iter().map(|sku| read[sku]["on_hand"].as_i64().unwrap()).collect();
        assert!(
            on_hand.iter().all(|units| *units == on_hand[0]),
            "cycle {cycle}: every SKU took the batch, or none did: {on_hand:?}"
        );
        assert!(
            on_hand[0] == total || on_hand[0] == total + qty,
            "cycle {cycle}: {} is neither before ({total}) nor after the batch",
            on_hand[0]
        );
        if matches!(&answered, Ok(Ok(response)) if response.status() == StatusCode::OK) {
            assert_eq!(on_hand[0], total + qty, "cycle {cycle}: an acknowledged batch survives");
        }
        if on_hand[0] == total + qty {
            kept += 1;
        }
        total = on_hand[0];
        check_ledger(&client, &server.base, cycle, &skus[..5]).await;
    }
    println!("batch crash: {kept} of {cycles} batches were durable when killed");
    server.kill();
}
