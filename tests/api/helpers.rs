//! `TestApp`: a running server plus a client that knows the admin token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use stockroom::config::Settings;
use stockroom::startup::{Application, Options};
use tempfile::TempDir;

/// The admin token every test server is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A server running in this process.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client with a connection pool of its own.
    pub client: reqwest::Client,
    /// The data directory, shared with later restarts.
    pub dir: Arc<TempDir>,
    handle: ServerHandle,
    run: Option<actix_web::rt::task::JoinHandle<anyhow::Result<()>>>,
    /// What the handlers share, for looking inside (which actors run).
    pub state: actix_web::web::Data<stockroom::http::AppState>,
}

/// Settings for a test server in `dir`: port 0, a known admin token, quiet sweeps.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.http.bind = "127.0.0.1:0".to_owned();
    settings.http.workers = 2;
    settings.store.data_dir = dir.path().to_owned();
    settings.store.cache_capacity_bytes = 16 * 1024 * 1024;
    settings.auth.admin_token = Some(ADMIN_TOKEN.to_owned());
    settings.actors.arbiters = 2;
    // Tests share a busy machine and a debug build: a write waiting 200 ms is no overload
    // here. The shedding test sets its own limit.
    settings.writer.max_queue_delay_ms = 60_000;
    // Every test client comes from 127.0.0.1; the rate-limit test sets its own.
    settings.cart.create_per_minute_per_client = 0;
    settings
}

impl TestApp {
    /// A server on a fresh data directory with default settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |_| {}).await
    }

    /// A server on `dir`, with test seams and adjusted settings; returns once it is ready.
    pub async fn spawn_with(dir: Arc<TempDir>, options: Options, adjust: impl FnOnce(&mut Settings)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            stockroom::telemetry::init(&Default::default());
        }
        let mut settings = test_settings(&dir);
        adjust(&mut settings);
        let app = Application::build_with(settings, options)
            .await
            .expect("the server builds");
        let base = format!("http://{}", app.address());
        let handle = app.handle();
        let state = app.state();
        let run = actix_web::rt::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let app = Self {
            base,
            client,
            dir,
            handle,
            run: Some(run),
            state,
        };
        app.wait_until_ready().await;
        app
    }

    /// Polls `/ready` until it answers 200 (a debug build replaying a long log takes a
    /// while on a busy machine).
    pub async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ready = self.client.get(self.url("/ready")).send().await;
            if ready.is_ok_and(|response| response.status() == StatusCode::OK) {
                return;
            }
            if self.run.as_ref().is_some_and(|run| run.is_finished()) {
                panic!("the server stopped before it was ready (see its log with TEST_LOG=1)");
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully (as SIGTERM does) and returns its data directory.
    pub async fn stop(mut self) -> Arc<TempDir> {
        self.handle.stop(true).await;
        let run = self.run.take().expect("running");
        run.await.expect("the server task").expect("a graceful stop returns Ok");
        self.dir.clone()
    }

    /// Waits for the server to stop by itself and returns how it ended.
    pub async fn stopped(mut self) -> anyhow::Result<()> {
        let run = self.run.take().expect("running");
        actix_web::rt::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the server stops within 10 s")
            .expect("the server task")
    }

    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    /// A request with any bearer token.
    pub fn with_token(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(token)
    }

    /// `method path` with a bearer token and a JSON body; the status and the JSON answer.
    pub async fn call_json(&self, token: &str, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.with_token(token, method, path).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// `GET path` with a bearer token, as JSON (whatever the status).
    pub async fn read_json(&self, token: &str, path: &str) -> Value {
        let response = self.with_token(token, Method::GET, path).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// Creates a named credential with `roles` and returns its token; panics unless 201.
    pub async fn credential(&self, name: &str, roles: &[&str]) -> String {
        let response = self
            .admin(Method::POST, "/v1/credentials")
            .json(&json!({ "name": name, "roles": roles }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "creating credential {name}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().expect("the token is shown once").to_owned()
    }

    /// Creates a SKU with `on_hand` units; panics unless 201.
    pub async fn create_sku(&self, sku: &str, on_hand: u64) -> Value {
        let response = self
            .admin(Method::PUT, &format!("/v1/skus/{sku}"))
            .json(&json!({ "name": format!("Product {sku}"), "price_minor": 1299, "currency": "EUR", "on_hand": on_hand }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "creating {sku}");
        response.json().await.unwrap()
    }

    /// Reserves `qty` of `sku` for `ttl_seconds`.
    pub async fn reserve(&self, sku: &str, qty: u64, ttl_seconds: u64) -> Response {
        self.admin(Method::POST, &format!("/v1/skus/{sku}/reservations"))
            .json(&json!({ "qty": qty, "ttl_seconds": ttl_seconds }))
            .send()
            .await
            .unwrap()
    }

    /// The SKU body with every counter (as staff read it); panics unless 200.
    pub async fn sku(&self, sku: &str) -> Value {
        let response = self
            .admin(Method::GET, &format!("/v1/skus/{sku}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "reading {sku}");
        response.json().await.unwrap()
    }

    /// The reservation body; panics unless 200.
    pub async fn reservation(&self, id: &str) -> Value {
        let response = self
            .admin(Method::GET, &format!("/v1/reservations/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "reading reservation {id}");
        response.json().await.unwrap()
    }
}

/// `(on_hand, reserved, available)` of a SKU body.
pub fn counters(sku: &Value) -> (u64, u64, u64) {
    let field = |name: &str| sku[name].as_u64().unwrap_or_else(|| panic!("{name} missing in {sku}"));
    (field("on_hand"), field("reserved"), field("available"))
}

/// The error code of an error body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A cart as its owner sees it: id and token.
pub struct TestCart {
    /// The cart id.
    pub id: String,
    /// The cart token.
    pub token: String,
}

impl TestApp {
    /// Creates a cart; panics unless 201.
    pub async fn create_cart(&self) -> TestCart {
        let response = self
            .client
            .post(self.url("/v1/carts"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        TestCart {
            id: body["cart_id"].as_str().unwrap().to_owned(),
            token: body["cart_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A request with a cart token.
    pub fn as_cart(&self, cart: &TestCart, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(&cart.token)
    }

    /// Sets a cart line and returns the answer.
    pub async fn set_line(&self, cart: &TestCart, sku: &str, qty: u64) -> Response {
        self.as_cart(cart, Method::PUT, &format!("/v1/carts/{}/items/{sku}", cart.id))
            .json(&json!({ "qty": qty }))
            .send()
            .await
            .unwrap()
    }

    /// Checks a cart out and returns the answer.
    pub async fn checkout(&self, cart: &TestCart) -> Response {
        self.as_cart(cart, Method::POST, &format!("/v1/carts/{}/checkout", cart.id))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
    }
}

impl TestApp {
    /// `GET path` with a cart's token, as JSON.
    pub async fn get_as(&self, cart: &TestCart, path: &str) -> Value {
        self.read_json(&cart.token, path).await
    }

    /// `GET path` without credentials, as JSON (whatever the status).
    pub async fn read_public(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `path` (with the cart's token) until its `status` is `status`; fails after 5 s.
    pub async fn wait_for_status(&self, cart: &TestCart, path: &str, status: &str) -> Value {
        let started = Instant::now();
        loop {
            let read = self.get_as(cart, path).await;
            if read["status"] == status {
                return read;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} did not become {status}: {read}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series (`name{labels}` exactly as exported), 0 when it is absent.
    /// The recorder is the process's, shared with every test running alongside: assert a
    /// change from a value read before, never a fixed figure or a series' mere presence.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Options whose store fails (or slows down) as `faults` says, through the store seam.
pub fn faulty(faults: &Arc<stockroom::persistence::StoreFaults>) -> Options {
    let faults = Arc::clone(faults);
    Options {
        wrap_store: Some(Box::new(
            move |store: Arc<dyn stockroom::persistence::Storage>| -> Arc<dyn stockroom::persistence::Storage> {
                Arc::new(stockroom::persistence::FaultyStore::new(store, faults))
            },
        )),
        ..Options::default()
    }
}
