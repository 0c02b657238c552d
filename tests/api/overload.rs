//! Bounded queues: when full, refuse fast with 503 and Retry-After; never lose or double-count.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{counters, error_code, faulty, TestApp, ADMIN_TOKEN};

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

#[actix_web::test]
async fn a_writer_falling_behind_sheds_writes_with_503_and_loses_nothing() {
    use std::sync::atomic::Ordering;
    use stockroom::persistence::StoreFaults;

    let faults = Arc::new(StoreFaults::default());
    let options = faulty(&faults);
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.writer.max_queue_delay_ms = 20;
    })
    .await;
    app.create_sku("slowdisk", 100_000).await;
    // A disk that takes 150 ms per flush: changes queue behind it.
    faults.slow_flush_ms.store(150, Ordering::SeqCst);
    // Sixteen clients write without pause for two seconds, while a reader reads.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let writers = join_all((0..16).map(|_| {
        let (client, url) = (reqwest::Client::new(), app.url("/v1/skus/slowdisk/reservations"));
        async move {
            let mut statuses = Vec::new();
            while std::time::Instant::now() < deadline {
                let response = client
                    .post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"qty": 1, "ttl_seconds": 600}))
                    .send()
                    .await
                    .unwrap();
                let (status, retry_after) = (response.status(), response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(retry_after, "a refusal says when to retry");
                    assert_eq!(error_code(&body), "overloaded");
                } else {
                    assert_eq!(status, StatusCode::CREATED, "{body}");
                }
                statuses.push(status);
            }
            statuses
        }
    }));
    let reader = async {
        let mut reads = 0;
        while std::time::Instant::now() < deadline {
            // Reads are never refused (they report durable figures, so they wait for the disk).
            assert_eq!(app.sku("slowdisk").await["on_hand"], 100_000);
            reads += 1;
        }
        reads
    };
    let (statuses, reads) = futures::join!(writers, reader);
    let statuses: Vec<StatusCode> = statuses.into_iter().flatten().collect();
    assert!(reads > 0, "reads were served throughout");
    let created = statuses.iter().filter(|status| **status == StatusCode::CREATED).count() as u64;
    let refused = statuses.len() as u64 - created;
    assert!(refused > 0, "the slow disk made the server shed writes");
    assert!(created > 0, "and it kept taking some");
    faults.slow_flush_ms.store(0, Ordering::SeqCst);
    let (_, reserved, _) = counters(&app.sku("slowdisk").await);
    assert_eq!(reserved, created, "every 201 is held, no refusal is");
    // Once the disk is fast again, writes are taken again.
    let mut taken = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if app.reserve("slowdisk", 1, 600).await.status() == StatusCode::CREATED {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(taken, "writes are accepted again after the disk recovers");
}

#[actix_web::test]
async fn a_flash_sale_on_one_sku_queues_behind_itself_while_other_skus_go_ahead() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use stockroom::persistence::StoreFaults;

    let faults = Arc::new(StoreFaults::default());
    let options = faulty(&faults);
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.writer.sku_share = 2;
    })
    .await;
    for sku in ["hot", "cold", "steady"] {
        app.create_sku(sku, 1_000).await;
    }
    let waited_before = app.metric("stockroom_sku_turn_wait_seconds_count").await;
    // Every flush takes at least 40 ms, so each group commit is one visible step.
    faults.slow_flush_ms.store(40, Ordering::SeqCst);
    // The shop's ordinary traffic: four clients writing to another SKU without pause.
    let stop = AtomicBool::new(false);
    let steady_done = AtomicUsize::new(0);
    let steady = join_all((0..4).map(|_| async {
        let mut created = 0;
        while !stop.load(Ordering::SeqCst) {
            assert_eq!(app.reserve("steady", 1, 600).await.status(), StatusCode::CREATED);
            steady_done.fetch_add(1, Ordering::SeqCst);
            created += 1;
        }
        created
    }));
    // Conditions, not sleeps: a loaded machine only makes each step take longer.
    let sale = async {
        until("the steady traffic runs", || steady_done.load(Ordering::SeqCst) > 0).await;
        // The flash sale: 40 reservations of one SKU at once, at most 2 of them per flush.
        let hot_done = AtomicUsize::new(0);
        let rush = join_all((0..40).map(|_| async {
            let status = app.reserve("hot", 1, 600).await.status();
            hot_done.fetch_add(1, Ordering::SeqCst);
            status
        }));
        let cold = async {
            // The rush is under way: its first turns are done, the rest queue behind them.
            until("the rush starts", || hot_done.load(Ordering::SeqCst) >= 2).await;
            let status = app.reserve("cold", 1, 600).await.status();
            (status, hot_done.load(Ordering::SeqCst))
        };
        let (rush, cold) = futures::join!(rush, cold);
        stop.store(true, Ordering::SeqCst);
        (rush, cold)
    };
    let (steady, (rush, (cold_status, hot_before_cold))) = futures::join!(steady, sale);
    faults.slow_flush_ms.store(0, Ordering::SeqCst);

    assert_eq!(cold_status, StatusCode::CREATED);
    // Without turns the whole rush shares the next flush or two and is done before the
    // cold write; with them the rush takes 20 flushes and the cold write one or two.
    assert!(
        hot_before_cold < 30,
        "the cold write waited for {hot_before_cold} of the 40 hot ones"
    );
    assert!(rush.iter().all(|status| *status == StatusCode::CREATED), "{rush:?}");
    assert_eq!(
        counters(&app.sku("hot").await).1,
        40,
        "every reservation of the rush holds"
    );
    assert_eq!(counters(&app.sku("steady").await).1, steady.iter().sum::<u64>());
    let waited = app.metric("stockroom_sku_turn_wait_seconds_count").await - waited_before;
    assert!(waited >= 20.0, "the rush waited its turns: {waited}");
}

/// Waits until `condition` holds, polling; fails with `what` after 60 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
