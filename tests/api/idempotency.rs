//! `Idempotency-Key`: one key, one effect.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;

use crate::helpers::{counters, error_code, TestApp};

#[actix_web::test]
async fn one_key_sent_ten_times_at_once_makes_exactly_one_reservation() {
    let app = TestApp::spawn().await;
    app.create_sku("once", 100).await;
    let send = || {
        app.admin(Method::POST, "/v1/skus/once/reservations")
            .header("Idempotency-Key", "checkout-42")
            .json(&json!({"qty": 3, "ttl_seconds": 600}))
            .send()
    };
    let answers = join_all((0..10).map(|_| send())).await;
    let mut reservation_ids = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        match status {
            StatusCode::CREATED => reservation_ids.push(body["reservation_id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(error_code(&body), "idempotency_key_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!reservation_ids.is_empty());
    reservation_ids.dedup();
    assert_eq!(reservation_ids.len(), 1, "every success names the same reservation");
    assert_eq!(counters(&app.sku("once").await), (100, 3, 97), "units were held once");

    // A later repeat replays the stored answer, marked as such.
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        replay.json::<Value>().await.unwrap()["reservation_id"],
        reservation_ids[0].as_str()
    );
    assert_eq!(counters(&app.sku("once").await), (100, 3, 97));
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_refused_with_422() {
    let app = TestApp::spawn().await;
    app.create_sku("reuse", 10).await;
    let send = |qty: u64| {
        app.admin(Method::POST, "/v1/skus/reuse/reservations")
            .header("Idempotency-Key", "key-1")
            .json(&json!({"qty": qty, "ttl_seconds": 600}))
            .send()
    };
    assert_eq!(send(1).await.unwrap().status(), StatusCode::CREATED);
    let reused = send(2).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&reused.json().await.unwrap()), "idempotency_key_reused");
    assert_eq!(counters(&app.sku("reuse").await), (10, 1, 9));
}

#[actix_web::test]
async fn a_refusal_is_replayed_too_even_after_stock_arrives() {
    let app = TestApp::spawn().await;
    app.create_sku("scarce", 1).await;
    let send = || {
        app.admin(Method::POST, "/v1/skus/scarce/reservations")
            .header("Idempotency-Key", "too-many")
            .json(&json!({"qty": 2}))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::CONFLICT);
    app.admin(Method::POST, "/v1/skus/scarce/restock")
        .json(&json!({"qty": 5}))
        .send()
        .await
        .unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT, "the key's answer stands");
    assert_eq!(counters(&app.sku("scarce").await), (6, 0, 6));
}

#[actix_web::test]
async fn idempotency_records_survive_a_restart() {
    let app = TestApp::spawn().await;
    app.create_sku("durable", 10).await;
    let restock = |app: &TestApp| {
        app.admin(Method::POST, "/v1/skus/durable/restock")
            .header("Idempotency-Key", "delivery-7")
            .json(&json!({"qty": 4}))
            .send()
    };
    assert_eq!(restock(&app).await.unwrap().status(), StatusCode::OK);
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    let again = restock(&app).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(counters(&app.sku("durable").await), (14, 0, 14), "restocked once");
}
