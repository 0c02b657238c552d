//! Faults injected at the store seam: a failing disk acknowledges nothing and stops the
//! server; a restart recovers the last durable state, and an idempotent retry is safe.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::persistence::StoreFaults;
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, error_code, faulty, TestApp};

/// Makes a disk fault happen during a keyed reservation, then restarts on the same data.
async fn fault_during_a_reservation(switch: impl Fn(&StoreFaults)) {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    app.create_sku("disk", 10).await;
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let body: Value = app.reserve("disk", 1, 600).await.json().await.unwrap();
        acknowledged.push(body["reservation_id"].as_str().unwrap().to_owned());
    }

    switch(&faults);
    let keyed = |app: &TestApp| {
        app.admin(Method::POST, "/v1/skus/disk/reservations")
            .header("Idempotency-Key", "retry-me")
            .json(&json!({"qty": 2, "ttl_seconds": 600}))
    };
    // The server stops at once: the request gets 500 outcome_unknown (never a retryable
    // 503: a failed sync may have reached the disk), or its connection closes before an
    // answer is written. Either way nothing is acknowledged.
    match keyed(&app).send().await {
        Ok(failed) => {
            assert_eq!(
                failed.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "a failed write is not acknowledged"
            );
            assert!(failed.headers().get("retry-after").is_none());
            assert_eq!(error_code(&failed.json().await.unwrap()), "outcome_unknown");
        }
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    let dir = app.dir.clone();
    let stopped = app.stopped().await;
    let reason = stopped
        .expect_err("a store failure stops the server with an error")
        .to_string();
    assert!(reason.contains("store failure"), "{reason}");

    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    for id in &acknowledged {
        assert_eq!(
            app.reservation(id).await["state"],
            "held",
            "acknowledged before the fault, so durable"
        );
    }
    let (on_hand, reserved, _) = counters(&app.sku("disk").await);
    assert_eq!(on_hand, 10);
    assert!(
        reserved == 3 || reserved == 5,
        "the failed batch is wholly there or wholly absent, reserved = {reserved}"
    );
    // The client retries with its key: it gets one reservation, never two.
    let retried = keyed(&app).send().await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(counters(&app.sku("disk").await), (10, 5, 5));
}

#[actix_web::test]
async fn a_failed_flush_acknowledges_nothing_and_stops_the_server() {
    fault_during_a_reservation(|faults| faults.fail_flush.store(true, Ordering::SeqCst)).await;
}

#[actix_web::test]
async fn a_failed_write_acknowledges_nothing_and_stops_the_server() {
    fault_during_a_reservation(|faults| faults.fail_apply.store(true, Ordering::SeqCst)).await;
}

#[actix_web::test]
async fn a_full_disk_acknowledges_nothing_and_stops_the_server() {
    fault_during_a_reservation(|faults| faults.disk_full.store(true, Ordering::SeqCst)).await;
}

#[actix_web::test]
async fn a_failed_read_stops_the_server_like_a_failed_write_and_changes_nothing() {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    app.create_sku("shelf", 10).await;
    let held: Value = app.reserve("shelf", 2, 600).await.json().await.unwrap();
    let id = held["reservation_id"].as_str().unwrap().to_owned();
    let commit = |app: &TestApp| app.admin(Method::POST, &format!("/v1/reservations/{id}/commit"));
    assert_eq!(commit(&app).send().await.unwrap().status(), StatusCode::OK);
    // The settled record leaves memory for the checkpointed rows: a repeat must read it.
    let engine = Arc::clone(app.state.engine().unwrap());
    engine.checkpoint().unwrap();

    faults.fail_reads.store(true, Ordering::SeqCst);
    match commit(&app).send().await {
        Ok(refused) => {
            assert_eq!(
                refused.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "nothing was changed, so the refusal may be retried"
            );
            assert_eq!(error_code(&refused.json().await.unwrap()), "unavailable");
        }
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    assert!(
        engine.writer.try_reserve().is_none(),
        "the writer accepts nothing more, so nothing more is acknowledged"
    );
    let dir = app.dir.clone();
    drop(engine);
    let reason = app
        .stopped()
        .await
        .expect_err("a failed read stops the server with an error")
        .to_string();
    assert!(reason.contains("read failed"), "{reason}");

    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(app.reservation(&id).await["state"], "committed");
    assert_eq!(counters(&app.sku("shelf").await), (8, 0, 8));
}
