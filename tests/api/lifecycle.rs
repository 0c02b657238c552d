//! The process lifecycle: readiness during recovery, SIGTERM, the generated admin token.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::persistence::Storage;
use stockroom::startup::{Application, Options};
use tempfile::TempDir;

use crate::crash::ServerProcess;
use crate::helpers::{counters, error_code, test_settings, ADMIN_TOKEN};

#[actix_web::test]
async fn ready_and_the_api_answer_503_until_recovery_has_finished() {
    let dir = TempDir::new().unwrap();
    // Recovery that lasts until the test lets it finish: the store is handed over only then,
    // so the answers below are checked during recovery however slow the machine is.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let slow_store = Options {
        wrap_store: Some(Box::new(move |store: Arc<dyn Storage>| {
            let _ = released.recv();
            store
        })),
        ..Options::default()
    };
    let app = Application::build_with(test_settings(&dir), slow_store).await.unwrap();
    let base = format!("http://{}", app.address());
    let handle = app.handle();
    let run = actix_web::rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process serves during recovery");
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let early = client.get(format!("{base}/v1/skus/any")).send().await.unwrap();
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(early.headers().get("retry-after").unwrap(), "1");
    assert_eq!(error_code(&early.json().await.unwrap()), "not_ready");

    release.send(()).unwrap();
    let mut became_ready = false;
    for _ in 0..600 {
        if client.get(format!("{base}/ready")).send().await.unwrap().status() == StatusCode::OK {
            became_ready = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(became_ready, "ready once recovery finished");
    handle.stop(true).await;
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_makes_it_durable_and_exits_zero() {
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let server = ServerProcess::start(dir.path(), &client).await;
    client
        .put(format!("{}/v1/skus/calm", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Calm", "price_minor": 1, "currency": "EUR", "on_hand": 50}))
        .send()
        .await
        .unwrap();
    let mut acknowledged = 0;
    for _ in 0..20 {
        let response = client
            .post(format!("{}/v1/skus/calm/reservations", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"qty": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        acknowledged += 1;
    }
    assert!(server.terminate(), "SIGTERM exits with status 0");

    let server = ServerProcess::start(dir.path(), &client).await;
    let body: Value = client
        .get(format!("{}/v1/skus/calm", server.base))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters(&body), (50, acknowledged, 50 - acknowledged));
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_one_is_generated_stored_privately_and_kept() {
    let dir = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let server = ServerProcess::start_with(dir.path(), &client, &[]).await;
    let path = dir.path().join("data").join("admin_token");
    let token = std::fs::read_to_string(&path).expect("the token is stored in the data directory");
    let token = token.trim().to_owned();
    assert!(token.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let create = |base: &str, token: &str| {
        client
            .request(Method::PUT, format!("{base}/v1/skus/t"))
            .bearer_auth(token)
            .json(&json!({"name": "T", "price_minor": 1, "currency": "EUR"}))
            .send()
    };
    assert_eq!(
        create(&server.base, &token).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create(&server.base, ADMIN_TOKEN).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(server.terminate());

    let server = ServerProcess::start_with(dir.path(), &client, &[]).await;
    assert_eq!(
        create(&server.base, &token).await.unwrap().status(),
        StatusCode::OK,
        "the same token after a restart"
    );
    assert!(server.terminate());
}

#[test]
fn a_missing_config_file_or_unknown_argument_exits_2_with_a_reason() {
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .args(["--config", "/nonexistent/stockroom.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("usage: stockroom"));
}
