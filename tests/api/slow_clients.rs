//! Clients that send slowly cannot hold the server: a trickled body gets 408 and the
//! connection closes; so does a request head that never ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockroom::startup::Options;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, ADMIN_TOKEN};

async fn slow_server() -> TestApp {
    TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.http.request_body_timeout_seconds = 2;
        settings.http.request_head_timeout_seconds = 1;
    })
    .await
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

#[actix_web::test]
async fn a_body_trickled_a_byte_at_a_time_is_cut_off_with_408() {
    let app = slow_server().await;
    app.create_sku("slow", 10).await;
    let timeouts_before = app
        .metric("stockroom_http_slow_clients_total{reason=\"body_timeout\"}")
        .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let body = br#"{"qty": 1, "ttl_seconds": 600}"#;
    let head = format!(
        "POST /v1/skus/slow/reservations HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 300 ms: the whole body would take 9 s.
    let trickle = {
        let (_, mut writer) = stream.split();
        async move {
            for byte in body {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(4), trickle).await.ok();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "cut off before the body was complete"
    );

    // Nothing was reserved, and everyone else is served as usual.
    let sku = app.sku("slow").await;
    assert_eq!(sku["reserved"], 0, "{sku}");
    let timeouts = app
        .metric("stockroom_http_slow_clients_total{reason=\"body_timeout\"}")
        .await;
    assert!(
        timeouts >= timeouts_before + 1.0,
        "counted: {timeouts_before} -> {timeouts}"
    );
}

#[actix_web::test]
async fn a_request_head_that_never_ends_is_closed() {
    let app = slow_server().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: ").await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(health.status().is_success());
}

/// Sends `GET /health` on a new connection and returns the answer's head and body.
async fn health_on_new_connection(address: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    (stream, String::from_utf8_lossy(&buffer[..read]).into_owned())
}

#[actix_web::test]
async fn connections_beyond_the_cap_get_503_with_retry_after_and_are_closed() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.http.max_connections = 4;
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let refusals_before = app.metric("stockroom_http_connections_refused_total").await;
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let (stream, answer) = health_on_new_connection(&address).await;
        if answer.starts_with("HTTP/1.1 503") {
            refused = Some((stream, answer));
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        open.push(stream);
    }
    let (mut stream, answer) = refused.expect("a connection beyond the cap was refused");
    assert!(open.len() <= 4, "at most the cap served: {}", open.len());
    assert!(answer.contains("\"overloaded\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let rest = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "nothing more, then closed: {rest}");

    // Closed connections free their places.
    drop(open);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, answer) = health_on_new_connection(&address).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refusals = app.metric("stockroom_http_connections_refused_total").await;
    assert!(
        refusals >= refusals_before + 1.0,
        "counted: {refusals_before} -> {refusals}"
    );
}
