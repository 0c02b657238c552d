//! Held reservations lapse at `expires_at` and their stock comes back, also across restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use stockroom::domain::clock::ManualClock;
use stockroom::domain::{Clock, SteadyClock, SystemClock};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, TestApp};

#[actix_web::test]
async fn a_one_second_hold_expires_and_its_stock_comes_back_within_two_seconds() {
    let app = TestApp::spawn().await;
    app.create_sku("flash", 5).await;
    let reserved_at = Instant::now();
    let response = app.reserve("flash", 2, 1).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(counters(&app.sku("flash").await), (5, 2, 3));

    // The API promises release within one second of expires_at; allow the full two seconds.
    let mut state = String::new();
    while reserved_at.elapsed() < Duration::from_secs(2) {
        state = app.reservation(&id).await["state"].as_str().unwrap().to_owned();
        if state == "expired" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "expired", "still {state} two seconds after a one-second hold");
    assert_eq!(counters(&app.sku("flash").await), (5, 0, 5));
    let commit_late = app
        .admin(reqwest::Method::POST, &format!("/v1/reservations/{id}/commit"))
        .send()
        .await
        .unwrap();
    assert_eq!(commit_late.status(), StatusCode::CONFLICT);
    assert_eq!(
        crate::helpers::error_code(&commit_late.json().await.unwrap()),
        "reservation_expired"
    );
}

#[actix_web::test]
async fn a_hold_that_expires_while_the_server_is_down_is_released_at_restart() {
    // Time is controlled, not slept: the server is down while the clock passes the expiry.
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let with_clock = |clock: &Arc<ManualClock>| Options {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), with_clock(&clock), |_| {}).await;
    app.create_sku("down", 4).await;
    let short: Value = app.reserve("down", 3, 60).await.json().await.unwrap();
    let long: Value = app.reserve("down", 1, 600).await.json().await.unwrap();
    let dir = app.stop().await;
    clock.advance(61_000);

    let app = TestApp::spawn_with(dir, with_clock(&clock), |_| {}).await;
    // The first read after ready already sees the lapsed hold released.
    assert_eq!(counters(&app.sku("down").await), (4, 1, 3));
    assert_eq!(
        app.reservation(short["reservation_id"].as_str().unwrap()).await["state"],
        "expired"
    );
    assert_eq!(
        app.reservation(long["reservation_id"].as_str().unwrap()).await["state"],
        "held"
    );
}

/// Waits until the reservation reaches `state`; returns how long that took.
async fn time_until_state(app: &TestApp, id: &str, state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.reservation(id).await["state"] == state {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{id} never became {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_wall_clock_stepped_by_an_hour_neither_keeps_nor_drops_holds() {
    // The server's clock is the steady clock over a wall clock the test steps.
    let start = SystemClock.now_ms();
    let wall = Arc::new(ManualClock::new(start));
    let options = Options {
        clock: Arc::new(SteadyClock::new(Arc::clone(&wall) as Arc<dyn Clock>)),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |_| {}).await;
    app.create_sku("steady", 10).await;

    // Back by an hour: the hold still lapses after its 2 s, not an hour later. Measured from
    // before the request, so a slow machine cannot make a correct server look early.
    let reserved_at = Instant::now();
    let back: Value = app.reserve("steady", 2, 2).await.json().await.unwrap();
    wall.set(start - 3_600_000);
    time_until_state(
        &app,
        back["reservation_id"].as_str().unwrap(),
        "expired",
        Duration::from_secs(30),
    )
    .await;
    let lapsed = reserved_at.elapsed();
    assert!(lapsed >= Duration::from_secs(2), "not before its time: {lapsed:?}");

    // Forward by an hour: the hold is not released at once, and lapses after its 10 s.
    let forward: Value = app.reserve("steady", 3, 10).await.json().await.unwrap();
    let id = forward["reservation_id"].as_str().unwrap();
    wall.set(start + 3_600_000);
    // A write runs the SKU's expiry pass at the server's now: a clock that followed the wall
    // would release the hold here. No sleep: the write is the trigger.
    let probe = app.reserve("steady", 1, 600).await;
    assert_eq!(probe.status(), StatusCode::CREATED);
    assert_eq!(
        app.reservation(id).await["state"],
        "held",
        "a step forward releases nothing early"
    );
    assert_eq!(counters(&app.sku("steady").await), (10, 4, 6));
    time_until_state(&app, id, "expired", Duration::from_secs(60)).await;
    assert_eq!(counters(&app.sku("steady").await), (10, 1, 9));
    app.stop().await;
}
