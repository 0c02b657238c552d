//! The write path's defects found in review, each shown against the real server: reads that
//! reported before durability, an in-flight mark that died with its handler, a failed sync
//! answered as retryable, retention deleting a newer record, and the log and checkpoint
//! seams.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::domain::sku::ReservationState;
use stockroom::persistence::rows::SkuRow;
use stockroom::persistence::writer::Change;
use stockroom::persistence::{codec, keys, Op, StoreFaults};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, error_code, faulty, TestApp, ADMIN_TOKEN};

/// Polls `condition` until it holds (no fixed sleeps: this machine may be slow).
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Units reserved for `sku` as readers of the server's state see it (logged, maybe not yet
/// durable).
fn reserved_seen(app: &TestApp, sku: &str) -> u64 {
    let engine = app.state.engine().unwrap();
    let key = keys::sku(&stockroom::domain::SkuId::parse(sku).unwrap());
    engine
        .store
        .get(&key)
        .unwrap()
        .map(|bytes| {
            let row = codec::decode_versioned::<SkuRow>(&key, &bytes).unwrap();
            row.stock.iter().map(|(_, stock)| stock.reserved).sum()
        })
        .unwrap_or(0)
}

#[actix_web::test]
async fn a_read_waits_for_every_change_it_could_have_seen() {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    let engine = Arc::clone(app.state.engine().unwrap());
    faults.slow_flush_ms.store(300, Ordering::SeqCst);
    // A change is logged between the start of the read and the read itself: what the read
    // then reports must be durable before it is answered.
    let mut ticket = 0;
    let seen = stockroom::http::command::read_durable(&engine, || {
        ticket = engine.writer.try_reserve().unwrap().submit(Change {
            ops: vec![Op::Put(b"zz-probe".to_vec(), b"v".to_vec())],
            events: Vec::new(),
            time_ms: 0,
            by: stockroom::access::by_system(),
        });
        // The append thread logs it in a moment; the read sees it from then on.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = engine.store.get(b"zz-probe").unwrap() {
                return Ok(Some(value));
            }
            assert!(Instant::now() < deadline, "the change was never logged");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .await
    .unwrap();
    assert_eq!(seen, Some(b"v".to_vec()), "readers see a logged change at once");
    assert!(
        engine.writer.durability().durable() >= ticket,
        "the read answered only once what it saw was durable"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_client_that_goes_away_while_its_change_is_queued_does_not_let_a_retry_run_it_again() {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    app.create_sku("gone", 100).await;
    faults.slow_flush_ms.store(1500, Ordering::SeqCst);
    // Two batches fill the pipeline: one syncing, one appended and waiting for the sync.
    let mut fillers = Vec::new();
    for logged in 1..=2 {
        let request = app
            .admin(Method::POST, "/v1/skus/gone/reservations")
            .json(&json!({"qty": 1}));
        fillers.push(actix_web::rt::spawn(request.send()));
        until("the filler is logged", || reserved_seen(&app, "gone") == logged).await;
    }

    // The keyed change queues behind them; its client gives up and closes the connection.
    let keyed = |client: &reqwest::Client| {
        client
            .post(app.url("/v1/skus/gone/reservations"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", "leave-early")
            .json(&json!({"qty": 5}))
    };
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let first = keyed(&impatient).send().await;
    assert!(first.unwrap_err().is_timeout(), "the client left before the answer");
    assert_eq!(reserved_seen(&app, "gone"), 2, "the keyed change is still queued");

    // Its retry, while the change is not yet durable, must not run it a second time.
    let retry = keyed(&app.client).send().await.unwrap();
    let status = retry.status();
    let body: Value = retry.json().await.unwrap();
    match status {
        StatusCode::CONFLICT => assert_eq!(error_code(&body), "idempotency_key_in_flight"),
        StatusCode::CREATED => {}
        other => panic!("unexpected {other}: {body}"),
    }
    for filler in fillers {
        assert_eq!(filler.await.unwrap().unwrap().status(), StatusCode::CREATED);
    }
    // Once the change is durable, the key replays it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let replayed = loop {
        let answer = keyed(&app.client).send().await.unwrap();
        if answer.status() != StatusCode::CONFLICT {
            break answer;
        }
        assert!(Instant::now() < deadline, "the key stayed in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        counters(&app.sku("gone").await),
        (100, 7, 93),
        "the keyed reservation was made once"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_sync_that_fails_after_the_flush_is_answered_as_unknown_never_as_retryable() {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    app.create_sku("unsure", 10).await;
    faults.fail_sync_after_flush.store(true, Ordering::SeqCst);
    let keyed = |app: &TestApp| {
        app.admin(Method::POST, "/v1/skus/unsure/reservations")
            .header("Idempotency-Key", "unsure-1")
            .json(&json!({"qty": 2}))
    };
    match keyed(&app).send().await {
        Ok(answer) => {
            assert_eq!(
                answer.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "the change may be on disk: not a refusal to retry"
            );
            assert!(
                answer.headers().get("retry-after").is_none(),
                "no Retry-After invites a blind retry"
            );
            assert_eq!(error_code(&answer.json().await.unwrap()), "outcome_unknown");
        }
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    let dir = app.dir.clone();
    let reason = app
        .stopped()
        .await
        .expect_err("the server stops with an error")
        .to_string();
    assert!(reason.contains("store failure"), "{reason}");

    // The data reached the disk before the sync failed: the change stands after a restart,
    // and a retry with the key finds it instead of applying it twice.
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    let retried = keyed(&app).send().await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(counters(&app.sku("unsure").await), (10, 2, 8), "made once");
    app.stop().await;
}

#[actix_web::test]
async fn retention_never_deletes_a_newer_record_written_under_the_same_key() {
    let app = TestApp::spawn().await;
    app.create_sku("kept", 10).await;
    let reservation: Value = app.reserve("kept", 1, 600).await.json().await.unwrap();
    let id = reservation["reservation_id"].as_str().unwrap().to_owned();
    let released = app
        .admin(Method::DELETE, &format!("/v1/reservations/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    let engine = Arc::clone(app.state.engine().unwrap());
    // Retention reads the released record (its time is up)...
    let planned = engine.retention_ops(u64::MAX / 2).unwrap();
    let key = keys::reservation(&stockroom::domain::ReservationId::parse(&id).unwrap());
    assert!(
        planned
            .iter()
            .any(|op| matches!(op, Op::DeleteIf(target, _) if *target == key)),
        "the released record is due: {planned:?}"
    );
    // ...then its owner writes a newer record under the same id before the delete lands.
    let mut newer: stockroom::domain::sku::Reservation =
        codec::decode_versioned(&key, &engine.store.get(&key).unwrap().unwrap()).unwrap();
    newer.state = ReservationState::Committed;
    let write = |ops: Vec<Op>| {
        engine.writer.try_reserve().unwrap().submit(Change {
            ops,
            events: Vec::new(),
            time_ms: 0,
            by: stockroom::access::by_system(),
        })
    };
    write(vec![Op::Put(key.clone(), codec::encode_versioned(&newer))]);
    let ticket = write(planned);
    engine.writer.durability().wait(ticket).await.unwrap();
    let stored = engine.store.get(&key).unwrap().expect("the newer record stays");
    let stored: stockroom::domain::sku::Reservation = codec::decode_versioned(&key, &stored).unwrap();
    assert_eq!(stored.state, ReservationState::Committed);
    app.stop().await;
}

/// `stockroom_checkpoint_failures_total` as this server reports it.
async fn checkpoint_failures(app: &TestApp) -> f64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("stockroom_checkpoint_failures_total "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[actix_web::test]
async fn a_failing_checkpoint_keeps_the_server_serving_and_loses_nothing() {
    let faults = Arc::new(StoreFaults::default());
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), faulty(&faults), |_| {}).await;
    app.create_sku("ledger", 100).await;
    let engine = Arc::clone(app.state.engine().unwrap());
    let failures_before = checkpoint_failures(&app).await;
    faults.fail_checkpoint.store(true, Ordering::SeqCst);
    assert_eq!(app.reserve("ledger", 3, 600).await.status(), StatusCode::CREATED);
    assert!(engine.checkpoint().is_err(), "the checkpoint fails");
    assert!(
        checkpoint_failures(&app).await > failures_before,
        "and the failure is reported"
    );
    // Serving goes on: the log holds every change while checkpoints fail.
    assert_eq!(app.reserve("ledger", 4, 600).await.status(), StatusCode::CREATED);
    assert_eq!(counters(&app.sku("ledger").await), (100, 7, 93));
    drop(engine);
    // A restart now (its last checkpoint fails too, so only the log has the changes) loses
    // nothing acknowledged...
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, faulty(&faults), |_| {}).await;
    assert_eq!(counters(&app.sku("ledger").await), (100, 7, 93));
    // ...and once the disk recovers, the retry succeeds.
    faults.fail_checkpoint.store(false, Ordering::SeqCst);
    let engine = Arc::clone(app.state.engine().unwrap());
    let outcome = engine.checkpoint().expect("the retry succeeds");
    assert!(outcome.rows > 0, "the rows waiting in memory are written: {outcome:?}");
    drop(engine);
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(counters(&app.sku("ledger").await), (100, 7, 93));
    app.stop().await;
}
