//! WebSocket fan-out, over the real HTTP server in process: the latency from an order change
//! to its tracking client with 1,000 clients connected, and durable reservation throughput
//! with those clients connected compared with none, in the same run.
//!
//! Run: `cargo bench --bench tracking`. Under `cargo test` it runs scaled down, to show it
//! still works. Results: docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};
use stockroom::actors::sku::ExecuteSkuCommand;
use stockroom::config::Settings;
use stockroom::domain::sku::SkuCommand;
use stockroom::domain::{Quantity, ReservationId, SkuId};
use stockroom::engine::Engine;
use stockroom::startup::Application;
use tokio_tungstenite::tungstenite::Message;

// Allocates as the real binary does (`src/main.rs`): glibc's malloc took a fifth to a quarter of
// this benchmark's CPU, which the server never pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-admin-token-0123456789";
const IN_FLIGHT: usize = 64;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Durable reservations per second with IN_FLIGHT in flight, in process.
async fn reservations_per_second(engine: &Engine, sku: &SkuId, duration: Duration) -> f64 {
    let started = Instant::now();
    let counts = join_all((0..IN_FLIGHT).map(|_| async {
        let mut done = 0u64;
        let mailbox = engine.registry.sku(sku).expect("sku");
        while started.elapsed() < duration {
            let command = SkuCommand::Reserve {
                id: ReservationId::generate(),
                qty: Quantity::parse(1, 1).unwrap(),
                ttl_ms: 3_600_000,
                placement: stockroom::domain::sku::Placement::Any,
            };
            let acked = mailbox
                .ask(|reply, slot| ExecuteSkuCommand {
                    command,
                    idempotency: None,
                    by: stockroom::access::by_system(),
                    reply,
                    slot,
                })
                .unwrap()
                .await
                .unwrap();
            engine.writer.durability().wait(acked.ticket).await.unwrap();
            done += 1;
        }
        done
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (clients, duration) = if benchmarking {
        (1000, Duration::from_secs(10))
    } else {
        (50, Duration::from_millis(300))
    };
    let dir = tempfile::tempdir().unwrap();
    actix_web::rt::System::new().block_on(async move {
        let mut settings = Settings::default();
        settings.http.bind = "127.0.0.1:0".to_owned();
        settings.store.data_dir = dir.path().to_owned();
        settings.auth.admin_token = Some(TOKEN.to_owned());
        settings.reservation.max_holds_per_sku = 50_000_000;
        settings.websocket.max_connections_per_order = 4;
        let app = Application::build(settings).await.expect("server builds");
        let base = format!("http://{}", app.address());
        let state = app.state();
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        let http = reqwest::Client::new();
        while !http
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|response| response.status().as_u16() == 200)
        {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        for sku in ["tracked", "hot"] {
            http.put(format!("{base}/v1/skus/{sku}"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": sku, "price_minor": 100, "currency": "EUR", "on_hand": 1_000_000_000u64}))
                .send()
                .await
                .unwrap();
        }
        // One placed order per client.
        let mut orders: Vec<(String, String)> = Vec::new();
        for chunk in (0..clients).collect::<Vec<_>>().chunks(IN_FLIGHT) {
            let placed = join_all(chunk.iter().map(|_| async {
                let cart: Value = http
                    .post(format!("{base}/v1/carts"))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let (id, token) = (
                    cart["cart_id"].as_str().unwrap().to_owned(),
                    cart["cart_token"].as_str().unwrap().to_owned(),
                );
                http.put(format!("{base}/v1/carts/{id}/items/tracked"))
                    .bearer_auth(&token)
                    .json(&json!({"qty": 1}))
                    .send()
                    .await
                    .unwrap();
                let order: Value = http
                    .post(format!("{base}/v1/carts/{id}/checkout"))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (order["order_id"].as_str().unwrap().to_owned(), token)
            }))
            .await;
            orders.extend(placed);
        }
        let engine = Arc::clone(state.engine.get().expect("ready"));
        let hot = SkuId::parse("hot").unwrap();
        let without = reservations_per_second(&engine, &hot, duration).await;

        let ws_base = base.replacen("http://", "ws://", 1);
        let mut sockets = join_all(orders.iter().map(|(order, token)| {
            let url = format!("{ws_base}/v1/ws/orders/{order}?token={token}");
            async move {
                let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
                let _snapshot = socket.next().await;
                socket
            }
        }))
        .await;
        let with = reservations_per_second(&engine, &hot, duration).await;

        // Pay every order (as the payment service, here the admin token: a cart token may not);
        // each client measures from the change's time to its arrival.
        let readers = sockets.iter_mut().map(|socket| async move {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let message: Value = serde_json::from_str(text.as_str()).unwrap();
                        let at = humantime::parse_rfc3339(message["at"].as_str().unwrap()).unwrap();
                        let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
                        return now_ms().saturating_sub(at_ms);
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("tracking connection ended: {other:?}"),
                }
            }
        });
        let payers = async {
            for chunk in orders.chunks(IN_FLIGHT) {
                let paid = join_all(chunk.iter().map(|(order, _)| {
                    http.post(format!("{base}/v1/orders/{order}/pay"))
                        .bearer_auth(TOKEN)
                        .json(&json!({"payment_ref": "bench"}))
                        .send()
                }))
                .await;
                // A payment refused would leave its reader waiting for ever: fail at once.
                for response in paid {
                    assert_eq!(response.expect("pay answers").status().as_u16(), 200, "paying an order");
                }
            }
        };
        let (mut latencies, ()) = futures_util::join!(join_all(readers), payers);
        latencies.sort();
        println!("| measure ({clients} tracking clients) | value |");
        println!("| --- | ---: |");
        println!(
            "| fan-out latency p50, change to client | {} ms |",
            percentile(&latencies, 0.50)
        );
        println!(
            "| fan-out latency p99, change to client | {} ms |",
            percentile(&latencies, 0.99)
        );
        println!("| durable reservations/s, no clients | {without:.0} |");
        println!("| durable reservations/s, {clients} clients connected | {with:.0} |");
        println!("| ratio (target at least 0.9) | {:.2} |", with / without);
        drop(sockets);
        handle.stop(true).await;
    });
}
