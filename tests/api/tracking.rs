//! Live order tracking over a real WebSocket client.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::helpers::{TestApp, TestCart};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A placed order and the cart whose token reads it.
async fn placed_order(app: &TestApp, sku: &str) -> (TestCart, String) {
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, sku, 1).await.status(), StatusCode::OK);
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    (cart, order["order_id"].as_str().unwrap().to_owned())
}

async fn connect(app: &TestApp, order: &str, token: &str, after: Option<u64>) -> Result<Socket, WsError> {
    let base = app.base.replacen("http://", "ws://", 1);
    let after = after.map(|seq| format!("&after={seq}")).unwrap_or_default();
    let url = format!("{base}/v1/ws/orders/{order}?token={token}{after}");
    tokio_tungstenite::connect_async(url).await.map(|(socket, _)| socket)
}

/// The next JSON text message (pings are answered by the client library).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("a valid frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn move_order(app: &TestApp, order: &str, step: &str) {
    let response = match step {
        "paid" => {
            app.admin(Method::POST, &format!("/v1/orders/{order}/pay"))
                .json(&json!({"payment_ref": "p"}))
                .send()
                .await
        }
        status => {
            app.admin(Method::POST, &format!("/v1/orders/{order}/status"))
                .json(&json!({ "status": status }))
                .send()
                .await
        }
    };
    assert_eq!(response.unwrap().status(), StatusCode::OK, "moving to {step}");
}

#[actix_web::test]
async fn tracking_sees_the_snapshot_then_every_change_in_order_and_a_resume_gets_what_it_missed() {
    let app = TestApp::spawn().await;
    app.create_sku("kite", 5).await;
    let (cart, order) = placed_order(&app, "kite").await;
    let mut socket = connect(&app, &order, &cart.token, None).await.unwrap();
    let snapshot = next_json(&mut socket).await;
    assert_eq!(
        (snapshot["type"].as_str(), snapshot["seq"].as_u64()),
        (Some("snapshot"), Some(1))
    );
    assert_eq!(
        (
            snapshot["order"]["order_id"].as_str(),
            snapshot["order"]["status"].as_str()
        ),
        (Some(order.as_str()), Some("placed"))
    );

    move_order(&app, &order, "paid").await;
    let paid = next_json(&mut socket).await;
    assert_eq!(
        (paid["type"].as_str(), paid["seq"].as_u64(), paid["status"].as_str()),
        (Some("status"), Some(2), Some("paid"))
    );
    // The client drops off; the order moves on without it.
    drop(socket);
    move_order(&app, &order, "packed").await;
    move_order(&app, &order, "shipped").await;

    let mut resumed = connect(&app, &order, &cart.token, Some(2)).await.unwrap();
    let missed: Vec<(u64, String)> = {
        let mut missed = Vec::new();
        for _ in 0..2 {
            let message = next_json(&mut resumed).await;
            missed.push((
                message["seq"].as_u64().unwrap(),
                message["status"].as_str().unwrap().to_owned(),
            ));
        }
        missed
    };
    assert_eq!(
        missed,
        [(3, "packed".to_owned()), (4, "shipped".to_owned())],
        "exactly the changes it missed, in order"
    );
    move_order(&app, &order, "delivered").await;
    let live = next_json(&mut resumed).await;
    assert_eq!(
        (live["seq"].as_u64(), live["status"].as_str()),
        (Some(5), Some("delivered"))
    );
}

#[actix_web::test]
async fn a_wrong_token_is_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    app.create_sku("yo-yo", 5).await;
    let (_, order) = placed_order(&app, "yo-yo").await;
    let stranger = app.create_cart().await;
    let refused_with = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    };
    assert_eq!(
        refused_with(connect(&app, &order, &stranger.token, None).await),
        404,
        "another cart's token"
    );
    assert_eq!(
        refused_with(connect(&app, &order, "not-a-token", None).await),
        401,
        "a malformed token"
    );
}

#[actix_web::test]
async fn a_frame_over_the_limit_closes_the_connection() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.websocket.max_frame_bytes = 128;
    })
    .await;
    app.create_sku("drum", 5).await;
    let (cart, order) = placed_order(&app, "drum").await;
    let mut socket = connect(&app, &order, &cart.token, None).await.unwrap();
    next_json(&mut socket).await;
    socket.send(Message::text("x".repeat(1024))).await.unwrap();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|frame| frame.code), Some(CloseCode::Size));
}

/// Raises this process's open-file limit to `needed` (the soft limit, up to the hard one);
/// fails with the reason when the hard limit is lower.
fn raise_open_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0,
        "getrlimit"
    );
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files, and the hard limit is {} (raise it with `ulimit -Hn {needed}` as root)",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
}

#[actix_web::test]
async fn a_thousand_tracking_connections_each_receive_their_update() {
    // Both ends of 1,000 connections live in this process, beside the other tests' files.
    raise_open_file_limit(8192);
    let app = TestApp::spawn().await;
    app.create_sku("pin", 10_000).await;
    let orders: Vec<(TestCart, String)> = join_all((0..1000).map(|_| placed_order(&app, "pin"))).await;
    let app = &app;
    let mut sockets: Vec<Socket> = join_all(orders.iter().map(|(cart, order)| async move {
        let mut socket = connect(app, order, &cart.token, None).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "snapshot");
        socket
    }))
    .await;
    join_all(orders.iter().map(|(_, order)| move_order(app, order, "paid"))).await;
    let updates = join_all(sockets.iter_mut().map(next_json)).await;
    assert!(
        updates
            .iter()
            .all(|update| update["status"] == "paid" && update["seq"] == 2),
        "every connection saw its order paid"
    );
}

async fn connect_stock(app: &TestApp, skus: &str) -> Socket {
    let base = app.base.replacen("http://", "ws://", 1);
    tokio_tungstenite::connect_async(format!("{base}/v1/ws/stock?skus={skus}"))
        .await
        .unwrap()
        .0
}

/// Reads stock messages until `sku` shows `available`.
async fn until_available(socket: &mut Socket, sku: &str, available: u64) {
    loop {
        let message = next_json(socket).await;
        assert_eq!(message["type"], "stock");
        if message["sku"] == sku && message["available"] == available {
            return;
        }
    }
}

#[actix_web::test]
async fn the_stock_feed_follows_reservations_releases_and_restocks() {
    let app = TestApp::spawn().await;
    app.create_sku("lamp", 10).await;
    app.create_sku("vase", 3).await;
    let mut socket = connect_stock(&app, "lamp,vase").await;
    let mut first = vec![next_json(&mut socket).await, next_json(&mut socket).await];
    first.sort_by_key(|message| message["sku"].as_str().unwrap().to_owned());
    assert_eq!(
        first,
        [
            json!({"type": "stock", "sku": "lamp", "available": 10, "locations": [{"location": "default", "available": 10}]}),
            json!({"type": "stock", "sku": "vase", "available": 3, "locations": [{"location": "default", "available": 3}]})
        ]
    );
    let held: Value = app.reserve("lamp", 4, 600).await.json().await.unwrap();
    until_available(&mut socket, "lamp", 6).await;
    let id = held["reservation_id"].as_str().unwrap();
    app.admin(Method::DELETE, &format!("/v1/reservations/{id}"))
        .send()
        .await
        .unwrap();
    until_available(&mut socket, "lamp", 10).await;
    app.admin(Method::POST, "/v1/skus/vase/restock")
        .json(&json!({"qty": 5}))
        .send()
        .await
        .unwrap();
    until_available(&mut socket, "vase", 8).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "vase", 2).await;
    until_available(&mut socket, "vase", 6).await;
}

#[actix_web::test]
async fn the_stock_feed_refuses_bad_sku_lists_before_the_upgrade() {
    let app = TestApp::spawn().await;
    app.create_sku("known", 1).await;
    let base = app.base.replacen("http://", "ws://", 1);
    for (query, status) in [("skus=", 400), ("skus=bad%20id", 400), ("skus=known,unknown", 404)] {
        match tokio_tungstenite::connect_async(format!("{base}/v1/ws/stock?{query}")).await {
            Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), status, "{query}"),
            other => panic!("{query}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

#[actix_web::test]
async fn with_the_simulator_on_a_paid_order_moves_on_to_delivered_by_itself() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.simulator.enabled = true;
        settings.simulator.min_step_delay_ms = 10;
        settings.simulator.max_step_delay_ms = 50;
    })
    .await;
    app.create_sku("sled", 5).await;
    let (cart, order) = placed_order(&app, "sled").await;
    let mut socket = connect(&app, &order, &cart.token, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    move_order(&app, &order, "paid").await;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("delivered") {
        let message = next_json(&mut socket).await;
        seen.push(message["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["paid", "packed", "shipped", "delivered"]);
}

#[actix_web::test]
async fn a_client_that_never_reads_is_closed_and_others_keep_getting_updates() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.websocket.send_buffer_messages = 2;
        settings.http.socket_send_buffer_bytes = 4096;
    })
    .await;
    let skus: Vec<String> = (0..50).map(|n| format!("s{n}")).collect();
    for sku in &skus {
        app.create_sku(sku, 1_000_000).await;
    }
    // The slow client: a tiny receive buffer, and it never reads after the handshake.
    let address = app.base.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let url = format!("ws://{address}/v1/ws/stock?skus={}", skus.join(","));
    let (mut slow, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut fast = connect_stock(&app, "s0").await;
    assert_eq!(next_json(&mut fast).await["available"], 1_000_000);

    let slow_closes = "stockroom_ws_server_closes_total{reason=\"slow_consumer\"}";
    let closes_before = app.metric(slow_closes).await;
    let closes = || async { app.metric(slow_closes).await > closes_before };
    let started = std::time::Instant::now();
    let mut round = 0u64;
    while !closes().await {
        if started.elapsed() > Duration::from_secs(45) {
            let text = app.metrics().await;
            for line in text.lines().filter(|l| l.starts_with("stockroom_ws")) {
                eprintln!("{line}");
            }
            panic!("the slow client was never closed after {round} rounds");
        }
        round += 1;
        join_all(skus.iter().map(|sku| {
            app.admin(Method::POST, &format!("/v1/skus/{sku}/restock"))
                .json(&json!({"qty": 1}))
                .send()
        }))
        .await;
        // The fast client sees s0's new figure, whatever the slow one does: a feed blocked
        // behind the slow client would never deliver it. (10 s: a loaded machine is slow, not
        // blocked.)
        let expected = 1_000_000 + round;
        tokio::time::timeout(Duration::from_secs(10), until_available(&mut fast, "s0", expected))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the fast client's update was late"));
    }
    // The slow client finds its connection ended once it finally reads.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow client's connection is closed");
}

#[actix_web::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.websocket.ping_interval_seconds = 1;
        settings.websocket.idle_timeout_seconds = 2;
    })
    .await;
    app.create_sku("bell", 5).await;
    let idle_closes_before = app.metric("stockroom_ws_server_closes_total{reason=\"idle\"}").await;
    let (cart, order) = placed_order(&app, "bell").await;
    let mut socket = connect(&app, &order, &cart.token, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    // Not reading means not answering the server's pings: wait (polling, not sleeping a fixed
    // time) until the server reports an idle close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.metric("stockroom_ws_server_closes_total{reason=\"idle\"}").await <= idle_closes_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never closed the silent client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Reading now finds the close frame (1001), or, when the client's automatic pong to a
    // buffered ping hits the already closed socket first, a broken connection.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|frame| frame.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await
    .expect("the server ends a silent connection within seconds");
    assert!(matches!(ended, None | Some(CloseCode::Away)), "closed with {ended:?}");
    let idle_closes = app.metric("stockroom_ws_server_closes_total{reason=\"idle\"}").await;
    assert!(
        idle_closes >= idle_closes_before + 1.0,
        "the server closed it for silence: {idle_closes_before} -> {idle_closes}"
    );
}
