//! Data directories written by earlier releases open with this one.
//!
//! `tests/fixtures/store-2026-12-01-c6d60c4/` was written by the release build of c6d60c4
//! (the last before `by`, whose log records are format 1), killed with SIGKILL right after its
//! last answer with checkpoints held off, so that every change is still in its log:
//! - SKU `mug`, 10 on hand; 2 reserved and committed, 1 reserved and released: 8 on hand;
//! - SKU `tee`, 5 on hand; a cart checked out with 2, its order paid: 3 on hand (sold before
//!   fulfilment: the units left the shelf at checkout). It still ships and takes returns.

use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;
use stockroom::domain::clock::{Clock, ManualClock};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, TestApp, ADMIN_TOKEN};

/// When the fixture was written (its order id's UUIDv7 time), so that nothing in it lapses
/// whenever the test runs.
const WRITTEN_AT_MS: u64 = 1_796_157_752_092;
const ORDER: &str = "01a23358-431c-7779-937f-1e92f9706024";
const COMMITTED: &str = "01a23358-430f-76c2-8c7c-49a771f721c3";
const RELEASED: &str = "01a23358-4317-75e1-8a7f-262d228260ca";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[actix_web::test]
async fn a_data_directory_from_the_release_before_by_opens_with_everything_in_it() {
    let dir = Arc::new(TempDir::new().unwrap());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-2026-12-01-c6d60c4");
    copy_dir(&fixture, &dir.path().join("store"));
    let clock = Arc::new(ManualClock::new(WRITTEN_AT_MS + 60_000));
    let options = Options {
        clock: clock as Arc<dyn Clock>,
        ..Options::default()
    };
    let app = TestApp::spawn_with(dir, options, |_| {}).await;

    assert_eq!(counters(&app.sku("mug").await), (8, 0, 8));
    assert_eq!(counters(&app.sku("tee").await), (3, 0, 3));
    let order = app.read_json(ADMIN_TOKEN, &format!("/v1/orders/{ORDER}")).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["lines"][0]["sku"], "tee");
    let state = |id: &'static str| {
        let app = &app;
        async move { app.read_json(ADMIN_TOKEN, &format!("/v1/reservations/{id}")).await["state"].clone() }
    };
    assert_eq!(state(COMMITTED).await, "committed");
    assert_eq!(state(RELEASED).await, "released");

    // Before locations: all of its stock opens at `default`, and so does its ledger.
    let mug = app.sku("mug").await;
    assert_eq!(
        mug["locations"],
        serde_json::json!([{"location": "default", "on_hand": 8, "reserved": 0, "committed": 0, "available": 8}])
    );
    let committed = app
        .read_json(ADMIN_TOKEN, &format!("/v1/reservations/{COMMITTED}"))
        .await;
    assert_eq!(
        committed["parts"],
        serde_json::json!([{"location": "default", "qty": 2}])
    );
    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/mug/movements").await;
    assert_eq!(
        ledger,
        serde_json::json!({"items": [], "next": null,
            "opening": [{"location": "default", "on_hand": 8, "reserved": 0, "committed": 0}]})
    );

    // Its format-1 log records read, without `by`; what this build writes has it.
    let restocked = app
        .admin(reqwest::Method::POST, "/v1/skus/mug/restock")
        .json(&serde_json::json!({"qty": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    let engine = Arc::clone(app.state.engine().unwrap());
    engine.barrier().await.unwrap();
    let log = crate::kafka_support::event_log(engine.store.storage.as_ref());
    let by_of = |kind: &str| -> Vec<String> {
        log.iter()
            .filter(|record| record.event.type_name() == kind)
            .map(|record| record.by.to_string())
            .collect()
    };
    assert_eq!(
        by_of("stockroom.sku.created"),
        ["", ""],
        "written before by was recorded"
    );
    assert_eq!(by_of("stockroom.stock.restocked"), ["admin"]);
    // The ledger goes on from its opening balance.
    let client = reqwest::Client::new();
    crate::crash::check_ledger(&client, &app.url(""), 0, &["mug".to_owned(), "tee".to_owned()]).await;
    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/mug/movements").await;
    assert_eq!(ledger["items"][0]["kind"], "receipt");
    assert_eq!(ledger["items"][0]["seq"], 1);
    let seqs: Vec<u64> = log.iter().map(|record| record.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "one sequence: {seqs:?}"
    );

    // Its paid order (a row from before fulfilment, its units sold off the shelf) ships,
    // without taking them off the shelf a second time, and takes a return.
    let post = |path: String, body: serde_json::Value| {
        let request = app.admin(reqwest::Method::POST, &path).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, shipped) = post(
        format!("/v1/orders/{ORDER}/fulfilments"),
        serde_json::json!({"location": "default", "lines": [{"sku": "tee", "qty": 2}]}),
    )
    .await;
    assert_eq!(
        (status, &shipped["order_status"]),
        (StatusCode::CREATED, &serde_json::json!("shipped"))
    );
    assert_eq!(
        counters(&app.sku("tee").await),
        (3, 0, 3),
        "its units had left the shelf"
    );
    let (status, _) = post(
        format!("/v1/orders/{ORDER}/status"),
        serde_json::json!({"status": "delivered"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, taken) = post(
        format!("/v1/orders/{ORDER}/returns"),
        serde_json::json!({"location": "default", "restock": true, "lines": [{"sku": "tee", "qty": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(counters(&app.sku("tee").await), (4, 0, 4));
    crate::crash::check_ledger(&client, &app.url(""), 1, &["tee".to_owned()]).await;
}
