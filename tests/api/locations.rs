//! Locations: created, changed, listed, checked, kept across a restart, and announced as
//! events with who made them.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{TestApp, ADMIN_TOKEN};

async fn put(app: &TestApp, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .with_token(token, Method::PUT, &format!("/v1/locations/{id}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[actix_web::test]
async fn locations_are_created_changed_listed_and_kept_across_a_restart() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(Arc::clone(&dir), Options::default(), |_| {}).await;
    let default = json!({"location": "default", "name": "Default", "kind": "warehouse", "priority": 0, "active": true});
    assert_eq!(
        app.read_json(ADMIN_TOKEN, "/v1/locations").await,
        json!({ "items": [default] })
    );

    let erp = app.credential("erp", &["inventory"]).await;
    let berlin = json!({"name": "Berlin store", "kind": "store", "priority": 2});
    let (status, body) = put(&app, &erp, "berlin", berlin.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"location": "berlin", "name": "Berlin store", "kind": "store", "priority": 2, "active": true})
    );
    assert_eq!(
        put(&app, &erp, "berlin", berlin).await.0,
        StatusCode::OK,
        "the same again"
    );
    let closed = json!({"name": "Berlin store", "kind": "store", "priority": 2, "active": false});
    assert_eq!(put(&app, &erp, "berlin", closed).await.0, StatusCode::OK);
    // `default` exists from the start: configuring it is an update.
    let main = json!({"name": "Main warehouse", "kind": "warehouse", "priority": 1});
    assert_eq!(put(&app, ADMIN_TOKEN, "default", main).await.0, StatusCode::OK);

    let expected = json!({"items": [
        {"location": "berlin", "name": "Berlin store", "kind": "store", "priority": 2, "active": false},
        {"location": "default", "name": "Main warehouse", "kind": "warehouse", "priority": 1, "active": true},
    ]});
    assert_eq!(app.read_json(ADMIN_TOKEN, "/v1/locations").await, expected);

    let engine = Arc::clone(app.state.engine().unwrap());
    engine.barrier().await.unwrap();
    let log = crate::kafka_support::event_log(engine.store.storage.as_ref());
    let saved: Vec<(String, String, String)> = log
        .iter()
        .filter(|record| record.event.type_name().starts_with("stockroom.location."))
        .map(|record| {
            (
                record.event.type_name().to_owned(),
                record.event.subject(),
                record.by.to_string(),
            )
        })
        .collect();
    let event = |kind: &str, subject: &str, by: &str| (kind.to_owned(), subject.to_owned(), by.to_owned());
    assert_eq!(
        saved,
        [
            event("stockroom.location.created", "berlin", "erp"),
            event("stockroom.location.updated", "berlin", "erp"),
            event("stockroom.location.updated", "default", "admin"),
        ],
        "one event per change, none for saving the same settings"
    );
    drop(engine);

    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(app.read_json(ADMIN_TOKEN, "/v1/locations").await, expected);
}

#[actix_web::test]
async fn a_location_can_be_read_by_staff_and_changed_only_with_the_inventory_role() {
    let app = TestApp::spawn().await;
    let warehouse = app.credential("warehouse", &["fulfilment"]).await;
    let listed = app
        .with_token(&warehouse, Method::GET, "/v1/locations")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let body = json!({"name": "Shop", "kind": "store", "priority": 1});
    assert_eq!(
        put(&app, &warehouse, "shop", body.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let anonymous = app.client.get(app.url("/v1/locations")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let cart = app.create_cart().await;
    assert_eq!(put(&app, &cart.token, "shop", body).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.read_json(ADMIN_TOKEN, "/v1/locations").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was created"
    );
}
