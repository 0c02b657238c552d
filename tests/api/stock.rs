//! Catalog, stock and reservations through the API.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;

use crate::helpers::{counters, error_code, TestApp};

#[actix_web::test]
async fn a_thousand_concurrent_reservations_for_a_hundred_units_never_oversell() {
    let app = TestApp::spawn().await;
    app.create_sku("hot", 100).await;
    // Ten clients, each with its own connection pool, 100 requests each, all at once.
    let clients: Vec<reqwest::Client> = (0..10).map(|_| reqwest::Client::new()).collect();
    let requests = (0..1000).map(|n| {
        let client = clients[n % clients.len()].clone();
        let url = app.url("/v1/skus/hot/reservations");
        async move {
            let response = client
                .post(url)
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .json(&json!({ "qty": 1, "ttl_seconds": 600 }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let answers = join_all(requests).await;
    let created = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CONFLICT)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(created, 100, "exactly the stock is reserved");
    assert_eq!(refused.len(), 900, "everyone else is refused");
    assert!(refused
        .iter()
        .all(|body| error_code(body) == "insufficient_stock" && body["error"]["available"] == 0));
    assert_eq!(counters(&app.sku("hot").await), (100, 100, 0));
}

#[actix_web::test]
async fn stock_moves_through_restock_adjust_reserve_commit_and_release() {
    let app = TestApp::spawn().await;
    let created = app.create_sku("mug", 10).await;
    assert_eq!(
        created,
        json!({"sku": "mug", "name": "Product mug", "price_minor": 1299, "currency": "EUR", "on_hand": 10, "reserved": 0, "committed": 0, "available": 10,
            "locations": [{"location": "default", "on_hand": 10, "reserved": 0, "committed": 0, "available": 10}],
            "in_transit": 0, "low_stock_threshold": 0, "backorder_limit": 0, "backordered": 0})
    );

    let restocked = app
        .admin(Method::POST, "/v1/skus/mug/restock")
        .json(&json!({"qty": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    assert_eq!(counters(&restocked.json().await.unwrap()), (15, 0, 15));

    let adjusted = app
        .admin(Method::POST, "/v1/skus/mug/adjust")
        .json(&json!({"delta": -3, "reason": "dropped on the floor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(adjusted.status(), StatusCode::OK);
    assert_eq!(counters(&adjusted.json().await.unwrap()), (12, 0, 12));

    let kept: Value = app.reserve("mug", 4, 600).await.json().await.unwrap();
    let returned: Value = app.reserve("mug", 3, 600).await.json().await.unwrap();
    assert_eq!(kept["state"], "held");
    assert_eq!(counters(&app.sku("mug").await), (12, 7, 5));

    let shrink_too_far = app
        .admin(Method::POST, "/v1/skus/mug/adjust")
        .json(&json!({"delta": -6, "reason": "stocktake"}))
        .send()
        .await
        .unwrap();
    assert_eq!(shrink_too_far.status(), StatusCode::CONFLICT);
    let body: Value = shrink_too_far.json().await.unwrap();
    assert_eq!(
        (error_code(&body), &body["error"]["available"]),
        ("insufficient_stock", &json!(5))
    );

    let kept_id = kept["reservation_id"].as_str().unwrap();
    let commit = app
        .admin(Method::POST, &format!("/v1/reservations/{kept_id}/commit"))
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), StatusCode::OK);
    assert_eq!(commit.json::<Value>().await.unwrap()["state"], "committed");
    assert_eq!(
        counters(&app.sku("mug").await),
        (8, 3, 5),
        "committed units leave on_hand"
    );

    let returned_id = returned["reservation_id"].as_str().unwrap();
    for _ in 0..2 {
        let release = app
            .admin(Method::DELETE, &format!("/v1/reservations/{returned_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(release.status(), StatusCode::OK, "releasing is idempotent");
        assert_eq!(release.json::<Value>().await.unwrap()["state"], "released");
    }
    assert_eq!(counters(&app.sku("mug").await), (8, 0, 8));

    let release_committed = app
        .admin(Method::DELETE, &format!("/v1/reservations/{kept_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(release_committed.status(), StatusCode::CONFLICT);
    assert_eq!(
        error_code(&release_committed.json().await.unwrap()),
        "reservation_committed"
    );
    let commit_released = app
        .admin(Method::POST, &format!("/v1/reservations/{returned_id}/commit"))
        .send()
        .await
        .unwrap();
    assert_eq!(commit_released.status(), StatusCode::CONFLICT);
    assert_eq!(
        error_code(&commit_released.json().await.unwrap()),
        "reservation_released"
    );
    assert_eq!(app.reservation(kept_id).await["state"], "committed");
    assert_eq!(app.reservation(returned_id).await["state"], "released");
}

#[actix_web::test]
async fn updating_a_sku_changes_name_and_price_but_not_stock() {
    let app = TestApp::spawn().await;
    app.create_sku("tee", 7).await;
    let update = |body: Value| app.admin(Method::PUT, "/v1/skus/tee").json(&body).send();
    let renamed = update(json!({"name": "Tee, blue", "price_minor": 2500, "currency": "USD"}))
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let body: Value = renamed.json().await.unwrap();
    assert_eq!(
        (
            body["name"].as_str(),
            body["price_minor"].as_u64(),
            body["currency"].as_str()
        ),
        (Some("Tee, blue"), Some(2500), Some("USD"))
    );
    assert_eq!(counters(&body), (7, 0, 7));
    let same_on_hand = update(json!({"name": "Tee, blue", "price_minor": 2500, "currency": "USD", "on_hand": 7}))
        .await
        .unwrap();
    assert_eq!(
        same_on_hand.status(),
        StatusCode::OK,
        "repeating the creating PUT is harmless"
    );
    let new_on_hand = update(json!({"name": "Tee", "price_minor": 2500, "currency": "USD", "on_hand": 9}))
        .await
        .unwrap();
    assert_eq!(new_on_hand.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&new_on_hand.json().await.unwrap()), "on_hand_not_updatable");
    assert_eq!(
        app.sku("tee").await["name"],
        "Tee, blue",
        "a refused update changes nothing"
    );
}

#[actix_web::test]
async fn skus_are_listed_by_ids_and_in_pages() {
    let app = TestApp::spawn().await;
    for sku in ["a", "b", "c", "d", "e"] {
        app.create_sku(sku, 1).await;
    }
    let list = |query: &'static str| {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/skus?{query}"));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let skus = |page: &Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["sku"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let by_ids = list("ids=c,a,zz").await;
    assert_eq!(skus(&by_ids), ["c", "a"], "in the order asked, unknown ids left out");
    let first = list("limit=2").await;
    assert_eq!(
        (skus(&first), first["next"].as_str()),
        (vec!["a".to_owned(), "b".to_owned()], Some("b"))
    );
    let last = list("after=d&limit=2").await;
    assert_eq!((skus(&last), &last["next"]), (vec!["e".to_owned()], &Value::Null));
}

#[actix_web::test]
async fn a_graceful_restart_keeps_every_acknowledged_change() {
    let app = TestApp::spawn().await;
    app.create_sku("keep", 10).await;
    let held: Value = app.reserve("keep", 3, 600).await.json().await.unwrap();
    let sold: Value = app.reserve("keep", 2, 600).await.json().await.unwrap();
    let sold_id = sold["reservation_id"].as_str().unwrap();
    app.admin(Method::POST, &format!("/v1/reservations/{sold_id}/commit"))
        .send()
        .await
        .unwrap();
    let dir = app.stop().await;

    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(counters(&app.sku("keep").await), (8, 3, 5));
    assert_eq!(
        app.reservation(held["reservation_id"].as_str().unwrap()).await["state"],
        "held"
    );
    assert_eq!(app.reservation(sold_id).await["state"], "committed");
    let more: Value = app.reserve("keep", 5, 600).await.json().await.unwrap();
    assert_eq!(more["state"], "held", "a recovered SKU takes new reservations");
    assert_eq!(counters(&app.sku("keep").await), (8, 8, 0));
}

#[actix_web::test]
async fn metrics_report_requests_reservations_and_writer_batches() {
    let app = TestApp::spawn().await;
    // Counters only, as changes: the recorder is shared by every test in this process.
    let series = [
        "stockroom_http_requests_total{route=\"/v1/skus/{sku}/reservations\",method=\"POST\",status=\"201\"}",
        "stockroom_http_requests_total{route=\"/v1/skus/{sku}/reservations\",method=\"POST\",status=\"409\"}",
        "stockroom_reservations_total{outcome=\"reserved\"}",
        "stockroom_reservations_total{outcome=\"insufficient_stock\"}",
        "stockroom_writer_batch_changes_count",
        "stockroom_writer_flush_duration_seconds_count",
    ];
    let mut before = Vec::new();
    for name in series {
        before.push(app.metric(name).await);
    }
    app.create_sku("metered", 1).await;
    assert_eq!(app.reserve("metered", 1, 60).await.status(), StatusCode::CREATED);
    assert_eq!(app.reserve("metered", 1, 60).await.status(), StatusCode::CONFLICT);
    for (name, before) in series.into_iter().zip(before) {
        let after = app.metric(name).await;
        assert!(
            after >= before + 1.0,
            "{name} counts this test's requests: {before} -> {after}"
        );
    }
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
}

#[actix_web::test]
async fn a_sku_read_carries_an_etag_and_an_unchanged_sku_answers_304() {
    let app = TestApp::spawn().await;
    app.create_sku("cached", 10).await;
    let read = |etag: Option<&str>| {
        let mut request = app.client.get(app.url("/v1/skus/cached"));
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        request.send()
    };
    let first = read(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let unchanged = read(Some(&etag)).await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers()["etag"], etag.as_str());
    assert!(unchanged.bytes().await.unwrap().is_empty());

    assert_eq!(app.reserve("cached", 1, 600).await.status(), StatusCode::CREATED);
    let changed = read(Some(&etag)).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK, "a change gives a new ETag");
    assert_ne!(changed.headers()["etag"], etag.as_str());
    assert_eq!(changed.json::<Value>().await.unwrap()["available"], 9);
}
