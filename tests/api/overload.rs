//! Bounded queues: when full, refuse fast with 503 and Retry-After; never lose or double-count.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, error_code, TestApp, ADMIN_TOKEN};

#[actix_web::test]
async fn a_full_mailbox_refuses_with_503_overloaded_and_loses_nothing() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(dir, Options::default(), |settings| {
        settings.actors.mailbox_capacity_messages = 2;
    })
    .await;
    app.create_sku("rush", 1_000).await;
    let clients: Vec<reqwest::Client> = (0..8).map(|_| reqwest::Client::new()).collect();
    let answers = join_all((0..400).map(|n| {
        let request = clients[n % clients.len()]
            .post(app.url("/v1/skus/rush/reservations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"qty": 1, "ttl_seconds": 600}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;
    let created = answers
        .iter()
        .filter(|(status, ..)| *status == StatusCode::CREATED)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(created + refused.len(), answers.len(), "only 201 or 503: {answers:?}");
    assert!(!refused.is_empty(), "400 concurrent requests overflow a mailbox of 2");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(error_code(body), "overloaded");
    }
    assert_eq!(
        counters(&app.sku("rush").await),
        (1_000, created as u64, 1_000 - created as u64),
        "every 201 and only those hold stock"
    );
}

#[actix_web::test]
async fn a_full_writer_queue_refuses_with_503_overloaded() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(dir, Options::default(), |settings| {
        settings.writer.queue_capacity_items = 1;
    })
    .await;
    for n in 0..20 {
        app.create_sku(&format!("s{n}"), 1_000).await;
    }
    let client = reqwest::Client::new();
    let answers = join_all((0..400).map(|n| {
        client
            .post(app.url(&format!("/v1/skus/s{}/reservations", n % 20)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"qty": 1}))
            .send()
    }))
    .await;
    let mut created = 0;
    let mut refused = 0;
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry_after = answer.headers().get("retry-after").cloned();
                let text = answer.text().await.unwrap();
                assert_eq!(
                    retry_after.as_ref().map(|value| value.to_str().unwrap()),
                    Some("1"),
                    "{text}"
                );
                let answer: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(error_code(&answer), "overloaded");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "a writer queue of one change overflows");
    let mut reserved = 0;
    for n in 0..20 {
        reserved += counters(&app.sku(&format!("s{n}")).await).1;
    }
    assert_eq!(reserved, created, "every 201 and only those hold stock");
}
