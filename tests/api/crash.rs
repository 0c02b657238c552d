//! Crash safety: the real binary under concurrent load, killed with SIGKILL at a random
//! moment and restarted on the same data directory, many times.
//!
//! Every request carries an `Idempotency-Key`, so after a restart the requests that were in
//! flight at the kill are sent again with their keys: each then has exactly one known
//! outcome, and the model of what was acknowledged is exact. After every restart:
//! `on_hand == initial + restocked + adjusted - committed` and `reserved == sum of held`
//! for every SKU, `available >= 0`, and sampled reservations are in the acknowledged state.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::ADMIN_TOKEN;

/// The real `stockroom` binary, running on a data directory.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where the server wrote its address.
    _address_dir: tempfile::TempDir,
}

/// The address the server writes to `file` once it listens; panics if the process exits
/// first or nothing comes within 30 s.
pub async fn wait_for_address(file: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(address) = std::fs::read_to_string(file) {
            return address.trim().to_owned();
        }
        assert!(
            child.try_wait().expect("the child can be polled").is_none(),
            "the server exited before listening"
        );
        assert!(Instant::now() < deadline, "the server did not write its address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl ServerProcess {
    /// Starts the binary on `dir` with a free port and waits until it is ready.
    pub async fn start(dir: &Path, client: &reqwest::Client) -> Self {
        Self::start_with(dir, client, &[("STOCKROOM_ADMIN_TOKEN", ADMIN_TOKEN)]).await
    }

    /// Starts the binary on `dir` with extra environment variables. It learns its port from
    /// the address file the server writes once bound (`http.address_file`).
    pub async fn start_with(dir: &Path, client: &reqwest::Client, env: &[(&str, &str)]) -> Self {
        let address_dir = tempfile::tempdir().expect("a temporary directory");
        let address_file = address_dir.path().join("address");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockroom"))
            .current_dir(dir)
            .env_remove("STOCKROOM_ADMIN_TOKEN")
            .env("STOCKROOM_HTTP__BIND", "127.0.0.1:0")
            .env("STOCKROOM_HTTP__ADDRESS_FILE", &address_file)
            .env("STOCKROOM_HTTP__WORKERS", "2")
            // A busy test machine is not an overload: no shedding by queueing delay.
            .env("STOCKROOM_WRITER__MAX_QUEUE_DELAY_MS", "60000")
            // Every client of these tests is 127.0.0.1.
            .env("STOCKROOM_CART__CREATE_PER_MINUTE_PER_CLIENT", "0")
            .env("STOCKROOM_STORE__DATA_DIR", dir.join("data"))
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the stockroom binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // Drains the log so the child never blocks on a full pipe; with `TEST_SERVER_LOG=<file>`
        // the log is appended there (for looking into a failure).
        let mut copy = std::env::var_os("TEST_SERVER_LOG")
            .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(file) = copy.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        let address = wait_for_address(&address_file, &mut child).await;
        let server = Self {
            child,
            base: format!("http://{address}"),
            _address_dir: address_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(format!("{}/ready", server.base)).send().await;
            if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                return server;
            }
            assert!(Instant::now() < deadline, "the restarted server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the process to exit; returns whether it exited with 0.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success());
        self.child.wait().expect("reaped").success()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SKUS: [&str; 4] = ["red", "green", "blue", "gold"];
const INITIAL_ON_HAND: i64 = 100_000;

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        sku: String,
        qty: i64,
    },
    Commit {
        id: String,
        sku: String,
        qty: i64,
    },
    Release {
        id: String,
    },
    Restock {
        sku: String,
        qty: i64,
        location: Option<String>,
    },
    Adjust {
        sku: String,
        delta: i64,
    },
    Transfer {
        sku: String,
        from: String,
        to: String,
        qty: i64,
    },
    Receive {
        id: String,
        sku: String,
        qty: i64,
    },
}

/// What the clients know was acknowledged.
#[derive(Default)]
pub struct Model {
    /// The SKUs the load picks from.
    pub skus: Vec<String>,
    restocked: HashMap<String, i64>,
    adjusted: HashMap<String, i64>,
    committed: HashMap<String, i64>,
    /// Held reservations nobody is settling: id -> (sku, qty).
    held: HashMap<String, (String, i64)>,
    /// Held reservations a request is settling right now.
    claimed: HashMap<String, (String, i64)>,
    /// Settled reservations and the state they were acknowledged in.
    settled: HashMap<String, &'static str>,
    /// Requests sent without an answer yet, by idempotency key.
    pending: HashMap<String, Op>,
    /// Locations besides `default` that load restocks and transfers between (none: all
    /// stock stays at `default`).
    pub locations: Vec<String>,
    /// Units that left and reached shelves by transfers, per SKU (in transit: negative).
    transferred: HashMap<String, i64>,
    /// Transfers acknowledged, not yet received: id -> (sku, qty).
    in_transit: HashMap<String, (String, i64)>,
    /// Transfers a request is receiving right now.
    receiving: HashMap<String, (String, i64)>,
}

impl Model {
    /// A model of load over `skus`.
    pub fn new(skus: Vec<String>) -> Self {
        Self {
            skus,
            ..Self::default()
        }
    }

    /// The SKUs any acknowledged request changed.
    pub fn touched(&self) -> Vec<String> {
        let mut touched: Vec<String> = self
            .restocked
            .keys()
            .chain(self.adjusted.keys())
            .chain(self.committed.keys())
            .chain(self.transferred.keys())
            .chain(self.held.values().map(|(sku, _)| sku))
            .cloned()
            .collect();
        touched.sort();
        touched.dedup();
        touched
    }

    fn choose(&mut self, rng: &mut StdRng) -> Op {
        let sku = self.skus[rng.random_range(0..self.skus.len())].clone();
        match rng.random_range(0..100) {
            roll @ 40..80 if !self.held.is_empty() => {
                let index = rng.random_range(0..self.held.len());
                let id = self.held.keys().nth(index).cloned().unwrap_or_default();
                let (sku, qty) = self.held.remove(&id).unwrap_or_default();
                self.claimed.insert(id.clone(), (sku.clone(), qty));
                if roll < 60 {
                    Op::Commit { id, sku, qty }
                } else {
                    Op::Release { id }
                }
            }
            80..85 if !self.locations.is_empty() => {
                let mut sites = vec!["default".to_owned()];
                sites.extend(self.locations.iter().cloned());
                let from = rng.random_range(0..sites.len());
                let to = (from + rng.random_range(1..sites.len())) % sites.len();
                Op::Transfer {
                    sku,
                    from: sites[from].clone(),
                    to: sites[to].clone(),
                    qty: rng.random_range(1..=5),
                }
            }
            85..88 if !self.in_transit.is_empty() => {
                let id = self.in_transit.keys().next().cloned().unwrap_or_default();
                let (sku, qty) = self.in_transit.remove(&id).unwrap_or_default();
                self.receiving.insert(id.clone(), (sku.clone(), qty));
                Op::Receive { id, sku, qty }
            }
            80..90 => Op::Restock {
                sku,
                qty: rng.random_range(1..=10),
                location: (!self.locations.is_empty() && rng.random_bool(0.5))
                    .then(|| self.locations[rng.random_range(0..self.locations.len())].clone()),
            },
            90.. => {
                let magnitude = rng.random_range(1..=5);
                Op::Adjust {
                    sku,
                    delta: if rng.random_bool(0.5) { magnitude } else { -magnitude },
                }
            }
            _ => Op::Reserve {
                sku,
                qty: rng.random_range(1..=5),
            },
        }
    }

    fn apply(&mut self, op: &Op, status: StatusCode, body: &Value) {
        let code = body["error"]["code"].as_str().unwrap_or("");
        match (op, status.as_u16()) {
            (Op::Reserve { sku, qty }, 201) => {
                let id = body["reservation_id"].as_str().expect("reservation id").to_owned();
                self.held.insert(id, (sku.clone(), *qty));
            }
            (Op::Reserve { .. } | Op::Adjust { .. } | Op::Transfer { .. }, 409) if code == "insufficient_stock" => {}
            (Op::Transfer { sku, qty, .. }, 201) => {
                assert_eq!(body["status"], "in_transit");
                let id = body["transfer_id"].as_str().expect("transfer id").to_owned();
                *self.transferred.entry(sku.clone()).or_default() -= qty;
                self.in_transit.insert(id, (sku.clone(), *qty));
            }
            (Op::Receive { id, sku, qty }, 200) => {
                assert_eq!(body["status"], "received");
                self.receiving.remove(id);
                *self.transferred.entry(sku.clone()).or_default() += qty;
            }
            (Op::Commit { id, sku, qty }, 200) => {
                assert_eq!(body["state"], "committed");
                self.claimed.remove(id);
                *self.committed.entry(sku.clone()).or_default() += qty;
                self.settled.insert(id.clone(), "committed");
            }
            (Op::Release { id }, 200) => {
                assert_eq!(body["state"], "released");
                self.claimed.remove(id);
                self.settled.insert(id.clone(), "released");
            }
            (Op::Restock { sku, qty, .. }, 200) => *self.restocked.entry(sku.clone()).or_default() += qty,
            (Op::Adjust { sku, delta }, 200) => *self.adjusted.entry(sku.clone()).or_default() += delta,
            (op, status) => panic!("unexpected answer {status} {body} to {op:?}"),
        }
    }
}

/// Sends `op` with `key`; retries 503s. `Err` when the server is gone.
async fn send(client: &reqwest::Client, base: &str, key: &str, op: &Op) -> Result<(StatusCode, Value), reqwest::Error> {
    let (method, path, body) = match op {
        Op::Reserve { sku, qty } => (
            Method::POST,
            format!("/v1/skus/{sku}/reservations"),
            json!({"qty": qty, "ttl_seconds": 3600}),
        ),
        Op::Commit { id, .. } => (Method::POST, format!("/v1/reservations/{id}/commit"), json!({})),
        Op::Release { id } => (Method::DELETE, format!("/v1/reservations/{id}"), json!({})),
        Op::Restock {
            sku,
            qty,
            location: None,
        } => (Method::POST, format!("/v1/skus/{sku}/restock"), json!({"qty": qty})),
        Op::Restock {
            sku,
            qty,
            location: Some(location),
        } => (
            Method::POST,
            format!("/v1/skus/{sku}/locations/{location}/restock"),
            json!({"qty": qty, "reason": "crash test"}),
        ),
        Op::Transfer { sku, from, to, qty } => (
            Method::POST,
            "/v1/transfers".to_owned(),
            json!({"sku": sku, "from": from, "to": to, "qty": qty}),
        ),
        Op::Receive { id, .. } => (Method::POST, format!("/v1/transfers/{id}/receive"), json!({})),
        Op::Adjust { sku, delta } => (
            Method::POST,
            format!("/v1/skus/{sku}/adjust"),
            json!({"delta": delta, "reason": "crash test"}),
        ),
    };
    loop {
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::CONFLICT && body["error"]["code"] == "idempotency_key_in_flight"
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        return Ok((status, body));
    }
}

/// What every crash loop starts from: `STOCKROOM_CRASH_CYCLES` cycles (or `default_cycles`),
/// a generator seeded from `STOCKROOM_CRASH_SEED` or at random (printed, to repeat a run),
/// a data directory and a client.
pub fn crash_run(label: &str, default_cycles: usize) -> (usize, StdRng, tempfile::TempDir, reqwest::Client) {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cycles = from_env("STOCKROOM_CRASH_CYCLES").map_or(default_cycles, |n| n as usize);
    let seed = from_env("STOCKROOM_CRASH_SEED").unwrap_or_else(rand::random);
    println!("{label} seed {seed} (STOCKROOM_CRASH_SEED to repeat)");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    (
        cycles,
        StdRng::seed_from_u64(seed),
        tempfile::tempdir().unwrap(),
        client,
    )
}

/// Creates `sku` with `on_hand` units (admin); it must be new.
pub async fn put_sku(client: &reqwest::Client, base: &str, sku: &str, on_hand: i64) {
    let created = client
        .put(format!("{base}/v1/skus/{sku}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": sku, "price_minor": 100, "currency": "EUR", "on_hand": on_hand}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "{sku}");
}

/// Reads SKUs 100 at a time with `GET /v1/skus?ids=`.
pub async fn read_skus(client: &reqwest::Client, base: &str, skus: &[String]) -> HashMap<String, Value> {
    let mut read = HashMap::new();
    for batch in skus.chunks(100) {
        let body: Value = client
            .get(format!("{base}/v1/skus?ids={}", batch.join(",")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in body["items"].as_array().expect("items") {
            read.insert(item["sku"].as_str().unwrap().to_owned(), item.clone());
        }
    }
    read
}

/// Checks `skus` (and sampled reservations) against what was acknowledged.
pub async fn check(
    client: &reqwest::Client,
    base: &str,
    model: &Model,
    rng: &mut StdRng,
    cycle: usize,
    skus: &[String],
    initial_on_hand: i64,
) {
    assert!(
        model.claimed.is_empty() && model.pending.is_empty() && model.receiving.is_empty(),
        "every request was resolved"
    );
    let read = read_skus(client, base, skus).await;
    for sku in skus {
        let body = read.get(sku).unwrap_or_else(|| panic!("cycle {cycle}: {sku} is gone"));
        let get = |name: &str| body[name].as_i64().unwrap();
        let expected_on_hand = initial_on_hand
            + model.restocked.get(sku).copied().unwrap_or(0)
            + model.adjusted.get(sku).copied().unwrap_or(0)
            - model.committed.get(sku).copied().unwrap_or(0)
            + model.transferred.get(sku).copied().unwrap_or(0);
        let expected_reserved: i64 = model
            .held
            .values()
            .filter(|(owner, _)| owner == sku)
            .map(|(_, qty)| qty)
            .sum();
        assert_eq!(get("on_hand"), expected_on_hand, "cycle {cycle}: on_hand of {sku}");
        assert_eq!(get("reserved"), expected_reserved, "cycle {cycle}: reserved of {sku}");
        assert_eq!(
            get("available"),
            expected_on_hand - expected_reserved,
            "cycle {cycle}: available of {sku}"
        );
        assert!(get("available") >= 0);
    }
    let sample_held: Vec<&String> = model.held.keys().filter(|_| rng.random_bool(0.05)).take(10).collect();
    let sample_settled: Vec<(&String, &&str)> = model
        .settled
        .iter()
        .filter(|_| rng.random_bool(0.05))
        .take(10)
        .collect();
    for (id, expected) in sample_held.into_iter().map(|id| (id, &"held")).chain(sample_settled) {
        let body: Value = client
            .get(format!("{base}/v1/reservations/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["state"], *expected, "cycle {cycle}: reservation {id}");
    }
}

/// Every movement of a SKU's ledger, oldest first, read page by page.
pub async fn movements(client: &reqwest::Client, base: &str, sku: &str) -> (Vec<Value>, Value) {
    let mut items = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let query = after.map_or(String::new(), |after| format!("&after={after}"));
        let page: Value = client
            .get(format!("{base}/v1/skus/{sku}/movements?limit=1000{query}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => return (items, page["opening"].clone()),
        }
    }
}

/// For every SKU and location: the opening balance plus the sum of the ledger's movements
/// equals the counters, and the ledger runs on without a gap.
pub async fn check_ledger(client: &reqwest::Client, base: &str, cycle: usize, skus: &[String]) {
    let read = read_skus(client, base, skus).await;
    for sku in skus {
        let (items, opening) = movements(client, base, sku).await;
        let mut sums: HashMap<String, [i64; 3]> = HashMap::new();
        for entry in opening.as_array().expect("opening") {
            let sum = sums.entry(entry["location"].as_str().unwrap().to_owned()).or_default();
            sum[0] += entry["on_hand"].as_i64().unwrap();
            sum[1] += entry["reserved"].as_i64().unwrap();
            sum[2] += entry["committed"].as_i64().unwrap();
        }
        let first = items.first().map_or(1, |movement| movement["seq"].as_u64().unwrap());
        for (index, movement) in items.iter().enumerate() {
            assert_eq!(
                movement["seq"].as_u64(),
                Some(first + index as u64),
                "cycle {cycle}: {sku}'s ledger has no gap"
            );
            let sum = sums
                .entry(movement["location"].as_str().unwrap().to_owned())
                .or_default();
            sum[0] += movement["on_hand_delta"].as_i64().unwrap();
            sum[1] += movement["reserved_delta"].as_i64().unwrap();
            sum[2] += movement["committed_delta"].as_i64().unwrap();
        }
        for location in read[sku]["locations"].as_array().expect("locations") {
            let name = location["location"].as_str().unwrap();
            let counters = [
                location["on_hand"].as_i64().unwrap(),
                location["reserved"].as_i64().unwrap(),
                location["committed"].as_i64().unwrap(),
            ];
            assert_eq!(
                sums.remove(name).unwrap_or_default(),
                counters,
                "cycle {cycle}: the ledger of {sku} at {name} sums to its counters"
            );
        }
        assert!(
            sums.values().all(|sum| *sum == [0; 3]),
            "cycle {cycle}: {sku}: stray movements"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_over_twenty_restarts() {
    let (cycles, mut rng, dir, client) = crash_run("crash test", 20);

    let after_kill = || {};
    let (cycles, acknowledged_total) = crash_four_skus(dir.path(), &client, &mut rng, cycles, &after_kill).await;
    println!("{cycles} SIGKILL cycles, {acknowledged_total} acknowledged requests, every one accounted for");
}

/// Four SKUs on a new server in `dir` under keyed load, killed `cycles` times (with
/// `after_kill` between each kill and restart) and checked after every restart. Returns the
/// cycles and the requests acknowledged.
pub async fn crash_four_skus(
    dir: &Path,
    client: &reqwest::Client,
    rng: &mut StdRng,
    cycles: usize,
    after_kill: &(dyn Fn() + Sync),
) -> (usize, usize) {
    let skus: Vec<String> = SKUS.iter().map(|sku| (*sku).to_owned()).collect();
    let mut server = ServerProcess::start(dir, client).await;
    for sku in SKUS {
        put_sku(client, &server.base, sku, INITIAL_ON_HAND).await;
    }
    let created = client
        .put(format!("{}/v1/locations/north", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "North", "kind": "warehouse", "priority": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let model = Arc::new(Mutex::new(Model {
        locations: vec!["north".to_owned()],
        ..Model::new(skus.clone())
    }));
    let mut acknowledged_total = 0usize;
    for cycle in 0..cycles {
        let (restarted, acknowledged, _) = crash_cycle(server, dir, client, &model, rng, cycle, &[], after_kill).await;
        server = restarted;
        acknowledged_total += acknowledged;
        let snapshot = std::mem::take(&mut *model.lock().unwrap());
        check(client, &server.base, &snapshot, rng, cycle, &skus, INITIAL_ON_HAND).await;
        check_ledger(client, &server.base, cycle, &skus).await;
        *model.lock().unwrap() = snapshot;
    }
    drop(server);
    assert!(
        acknowledged_total > cycles * 10,
        "the load did real work: {acknowledged_total} acknowledged requests"
    );
    (cycles, acknowledged_total)
}

/// One cycle: keyed load from 12 clients, SIGKILL at a random moment, `after_kill` (a power
/// cut, or nothing), restart on the same data (with `env`), and the requests in flight at the
/// kill sent again with their keys. Returns the restarted server, the requests
/// acknowledged, and the time from start to ready.
#[allow(clippy::too_many_arguments)]
pub async fn crash_cycle(
    server: ServerProcess,
    dir: &Path,
    client: &reqwest::Client,
    model: &Arc<Mutex<Model>>,
    rng: &mut StdRng,
    cycle: usize,
    env: &[(&str, &str)],
    after_kill: &(dyn Fn() + Sync),
) -> (ServerProcess, usize, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..12)
        .map(|worker| {
            let (client, base, model, stop) = (
                client.clone(),
                server.base.clone(),
                Arc::clone(model),
                Arc::clone(&stop),
            );
            let mut rng = StdRng::seed_from_u64(rng.random());
            tokio::spawn(async move {
                let mut acknowledged = 0;
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("c{cycle}-w{worker}-{n}");
                    let op = {
                        let mut model = model.lock().unwrap();
                        let op = model.choose(&mut rng);
                        model.pending.insert(key.clone(), op.clone());
                        op
                    };
                    match send(&client, &base, &key, &op).await {
                        Ok((status, body)) => {
                            let mut model = model.lock().unwrap();
                            model.pending.remove(&key);
                            model.apply(&op, status, &body);
                            acknowledged += 1;
                        }
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
    server.kill();
    after_kill();
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged_total = 0;
    for worker in workers {
        acknowledged_total += worker.await.expect("a worker panicked");
    }
    let started = Instant::now();
    let mut full_env = vec![("STOCKROOM_ADMIN_TOKEN", ADMIN_TOKEN)];
    full_env.extend_from_slice(env);
    let server = ServerProcess::start_with(dir, client, &full_env).await;
    let recovery = started.elapsed();
    let pending: Vec<(String, Op)> = model.lock().unwrap().pending.drain().collect();
    for (key, op) in &pending {
        let (status, body) = send(client, &server.base, key, op)
            .await
            .expect("the restarted server answers");
        model.lock().unwrap().apply(op, status, &body);
    }
    (server, acknowledged_total, recovery)
}
