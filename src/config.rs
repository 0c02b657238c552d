//! Configuration: a typed struct read from a TOML file with environment overrides.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `STOCKROOM_<SECTION>__<KEY>`
//! environment variables, and for the admin token `STOCKROOM_ADMIN_TOKEN`. Unknown keys are
//! refused, so a typo fails at start instead of being ignored. Every key and its default is
//! documented in the repository's `config.toml`; names end in their unit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything the server can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP listener and request limits.
    pub http: HttpSettings,
    /// Where and how data is stored.
    pub store: StoreSettings,
    /// The group-commit writer.
    pub writer: WriterSettings,
    /// Actor placement and mailboxes.
    pub actors: ActorSettings,
    /// The catalog as the public sees it.
    pub catalog: CatalogSettings,
    /// Reservation limits.
    pub reservation: ReservationSettings,
    /// Where holds take their units from.
    pub allocation: AllocationSettings,
    /// The stock ledger.
    pub ledger: LedgerSettings,
    /// Bulk stock sync.
    pub batch: BatchSettings,
    /// Carts.
    pub cart: CartSettings,
    /// Orders.
    pub order: OrderSettings,
    /// WebSocket tracking.
    pub websocket: WebSocketSettings,
    /// The order lifecycle simulator (demo stores, load tests).
    pub simulator: SimulatorSettings,
    /// The web pages: storefront, order tracking, back office.
    pub ui: UiSettings,
    /// Idempotency records.
    pub idempotency: IdempotencySettings,
    /// Event-log retention.
    pub events: EventSettings,
    /// The Kafka bridge (off by default).
    pub kafka: KafkaSettings,
    /// Credentials.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
}

/// HTTP listener and request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest request body accepted, in bytes (413 beyond it).
    pub max_body_bytes: usize,
    /// Time given to in-flight requests on shutdown.
    pub shutdown_timeout_seconds: u64,
    /// Most open connections per worker.
    pub max_connections_per_worker: usize,
    /// Open connections in all; requests on connections beyond it get `503 overloaded` and
    /// the connection is closed.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub request_head_timeout_seconds: u64,
    /// Time a client has to send a request's whole body; beyond it 408 and the connection
    /// closes (a body trickled byte by byte cannot hold a worker).
    pub request_body_timeout_seconds: u64,
    /// Keep-alive time of an idle connection.
    pub keep_alive_seconds: u64,
    /// Kernel send buffer of each connection; 0 leaves the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`'s maximum, often 4 MiB). Bounding it bounds what a client that
    /// stops reading can pin, and lets a stalled WebSocket client be detected sooner.
    pub socket_send_buffer_bytes: usize,
    /// When set, the address the server listens on (`127.0.0.1:43121`) is written to this
    /// file once it is bound (replaced atomically): how a script or test that starts the
    /// server on port 0 learns its port.
    pub address_file: Option<PathBuf>,
    /// CORS for browser clients on other origins.
    pub cors: CorsSettings,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client,
    /// for per-client limits; none by default (the peer address is the client).
    pub trusted_proxies: Vec<String>,
}

/// CORS (`[http.cors]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins (`https://shop.example`) whose browser pages may call the API; none by default.
    pub allowed_origins: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_seconds: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_seconds: 600,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".to_owned(),
            workers: 0,
            max_body_bytes: 16 * 1024,
            shutdown_timeout_seconds: 30,
            max_connections_per_worker: 25_000,
            request_head_timeout_seconds: 5,
            request_body_timeout_seconds: 10,
            max_connections: 20_000,
            keep_alive_seconds: 30,
            socket_send_buffer_bytes: 0,
            address_file: None,
            cors: CorsSettings::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Where and how data is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// The data directory: the database and the generated admin token live here.
    pub data_dir: PathBuf,
    /// sled's page cache.
    pub cache_capacity_bytes: u64,
    /// Time between checkpoints of the state rows: the log written since the last one is
    /// what recovery replays, and what the memtable holds in memory.
    pub checkpoint_interval_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            cache_capacity_bytes: 256 * 1024 * 1024,
            checkpoint_interval_ms: 1000,
        }
    }
}

/// The group-commit writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSettings {
    /// Most changes applied and flushed as one batch.
    pub max_batch_items: usize,
    /// Most changes waiting for the writer; beyond it requests get 503.
    pub queue_capacity_items: usize,
    /// Writes are refused with `503 overloaded` while the oldest queued change of the latest
    /// batch waited longer than this: an overload is shed instead of queued.
    pub max_queue_delay_ms: u64,
    /// Most writes of one SKU between their turn and their flush while other SKUs write too;
    /// the rest wait in that SKU's queue, so a flash sale queues behind itself. 0 = no limit.
    pub sku_share: usize,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            max_batch_items: 4096,
            queue_capacity_items: 65_536,
            max_queue_delay_ms: 200,
            sku_share: 4,
        }
    }
}

/// Actor placement and mailboxes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorSettings {
    /// Arbiter threads that run the actors; 0 means one per core.
    pub arbiters: usize,
    /// Most messages waiting for one actor; beyond it requests get 503.
    pub mailbox_capacity_messages: usize,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            arbiters: 0,
            mailbox_capacity_messages: 8192,
        }
    }
}

/// The catalog as the public sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    /// `Cache-Control` of SKU reads. The default, `no-cache`, lets a client or a CDN keep a
    /// SKU and ask with its `ETag` whether it changed (`304` when not).
    pub cache_control: String,
    /// How much stock a public read shows: `exact` (every counter), `available` (only what
    /// can be bought) or `level` (`in_stock` / `low` / `out`). Staff (the admin token
    /// and every named credential) always see every counter.
    pub public_stock: PublicStock,
    /// At or below this many available units, `level` shows `low` (above 0) instead of
    /// `in_stock`.
    pub low_stock_level: u64,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            cache_control: "no-cache".to_owned(),
            public_stock: PublicStock::Available,
            low_stock_level: 5,
        }
    }
}

/// Where holds take their units from, when a hold names no location.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationSettings {
    /// `priority` (the active location with the lowest `priority` that has all the units)
    /// or `most_available` (the active location with the most available units).
    pub strategy: crate::domain::sku::Strategy,
    /// Whether a quantity that no single location has is split across several.
    pub allow_split: bool,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self {
            strategy: crate::domain::sku::Strategy::Priority,
            allow_split: true,
        }
    }
}

/// The stock ledger (`GET /v1/skus/{sku}/movements`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Most movements one page returns (`limit` above it is refused).
    pub page_max: usize,
    /// Whether every movement is also published as a `stockroom.stock.movement` event (when
    /// Kafka is on; without it nothing reads the events, and the rows are the ledger).
    pub publish_movements: bool,
    /// Movements older than this many days are folded into the SKU's opening balance and
    /// deleted (0: kept as long as the SKU).
    pub retention_days: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            page_max: 1000,
            publish_movements: true,
            retention_days: 0,
        }
    }
}

/// Bulk stock sync (`POST /v1/stock/batch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Most items in one batch (more: `413 too_many_items`).
    pub max_items: usize,
    /// Largest batch body; it replaces `http.max_body_bytes` on this route only.
    pub max_body_bytes: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_items: 10_000,
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

/// How much stock a public SKU read shows (`catalog.public_stock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicStock {
    /// `on_hand`, `reserved` and `available`.
    Exact,
    /// `available` only.
    Available,
    /// `stock_level`: `in_stock`, `low` or `out`.
    Level,
}

/// Reservation limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationSettings {
    /// Hold time when a request gives no `ttl_seconds`.
    pub default_ttl_seconds: u64,
    /// Longest hold a request may ask for.
    pub max_ttl_seconds: u64,
    /// Most units one request may reserve (at most 1,000,000).
    pub max_qty: u64,
    /// Most reservations one SKU may hold at once.
    pub max_holds_per_sku: usize,
    /// How long settled (committed, released, expired) reservations stay readable.
    pub settled_retention_hours: u64,
}

impl Default for ReservationSettings {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 900,
            max_ttl_seconds: 86_400,
            max_qty: 1_000_000,
            max_holds_per_sku: 1_000_000,
            settled_retention_hours: 168,
        }
    }
}

/// Carts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartSettings {
    /// How long a cart holds its stock after its last write; then it expires.
    pub ttl_seconds: u64,
    /// Most lines one cart may have.
    pub max_lines: usize,
    /// Most units one line may hold.
    pub max_qty_per_line: u64,
    /// Most carts open at once; creating one more gets `503 overloaded` (anyone may create a
    /// cart, so this bounds the memory anonymous clients can take).
    pub max_open: usize,
    /// Carts one client address may create per minute (a burst of as many, then one every
    /// `60 / n` s); beyond it `429 too_many_requests` with `Retry-After`. 0: no limit. Behind a
    /// reverse proxy, list it in `http.trusted_proxies`.
    pub create_per_minute_per_client: u32,
    /// How long a checked-out or expired cart is kept (then its row is deleted).
    pub settled_retention_hours: u64,
}

impl Default for CartSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 1800,
            max_lines: 50,
            max_qty_per_line: 1000,
            max_open: 100_000,
            create_per_minute_per_client: 60,
            settled_retention_hours: 720,
        }
    }
}

/// Orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSettings {
    /// How long a placed order may stay unpaid before it expires and its stock returns.
    pub payment_timeout_seconds: u64,
    /// How long a settled order (or checked-out or expired cart) stays in memory without being asked for.
    pub idle_stop_seconds: u64,
    /// How long a delivered order, or a cancelled or expired one whose stock went back, is
    /// kept (then its row is deleted; its events went out long before).
    pub settled_retention_hours: u64,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            payment_timeout_seconds: 1800,
            idle_stop_seconds: 300,
            settled_retention_hours: 2160,
        }
    }
}

/// WebSocket tracking.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// Most WebSocket connections open at once; beyond it 503 before the upgrade.
    pub max_connections: usize,
    /// Most tracking connections on one order; beyond it 429 before the upgrade.
    pub max_connections_per_order: usize,
    /// Largest frame a client may send; a larger one closes the connection (1009).
    pub max_frame_bytes: usize,
    /// Messages buffered for one connection; a client that falls this far behind is closed
    /// (1008) instead of slowing anyone else.
    pub send_buffer_messages: usize,
    /// How often the server pings.
    pub ping_interval_seconds: u64,
    /// A client silent (no pong, no frame) this long is closed.
    pub idle_timeout_seconds: u64,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_order: 32,
            max_frame_bytes: 4096,
            send_buffer_messages: 64,
            ping_interval_seconds: 10,
            idle_timeout_seconds: 30,
        }
    }
}

/// The order lifecycle simulator: moves paid orders through packed, shipped and delivered by
/// itself, so a demo store or a load test sees living orders without manual steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Off by default: a real shop moves its orders through the admin API.
    pub enabled: bool,
    /// Shortest wait before each simulated step.
    pub min_step_delay_ms: u64,
    /// Longest wait before each simulated step.
    pub max_step_delay_ms: u64,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            min_step_delay_ms: 5_000,
            max_step_delay_ms: 30_000,
        }
    }
}

/// The web pages embedded in the binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// Serve `GET /` (storefront), `GET /orders/{id}` (tracking) and `GET /admin` (back
    /// office); when false they answer 404 and only the API is served.
    pub enabled: bool,
    /// Let a cart token pay its own order with `POST /v1/demo/orders/{id}/pay`, so the
    /// storefront page can finish a purchase in a demo. Never in a real shop.
    pub demo_payments: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            demo_payments: false,
        }
    }
}

/// Idempotency records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// How long a stored answer is replayed for a repeated key (at least 24).
    pub retention_hours: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self { retention_hours: 24 }
    }
}

/// Event-log retention and the background sweeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Most events kept in the log; older ones are removed by the sweeper.
    pub retention_max_events: u64,
    /// How often the retention sweeper runs.
    pub sweep_interval_seconds: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            retention_max_events: 1_000_000,
            sweep_interval_seconds: 10,
        }
    }
}

/// The Kafka bridge: every event of the log, published as a CloudEvent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Publish events to Kafka.
    pub enabled: bool,
    /// Bootstrap brokers, `host:port,...`.
    pub brokers: String,
    /// Topics are `<prefix>.inventory`, `<prefix>.carts` and `<prefix>.orders`.
    pub topic_prefix: String,
    /// The CloudEvents `source` attribute of every event.
    pub source: String,
    /// Partitions of each topic the bridge creates.
    pub partitions: i32,
    /// Replication factor of each topic the bridge creates.
    pub replication_factor: i32,
    /// Most events handed to the producer and not yet acknowledged.
    pub max_in_flight_events: usize,
    /// First wait before publishing again after a failure; doubles up to the maximum.
    pub retry_backoff_min_ms: u64,
    /// Longest wait between attempts while the broker is away.
    pub retry_backoff_max_ms: u64,
    /// How often the delivered position is written to the store.
    pub position_interval_ms: u64,
    /// Events not yet acknowledged by Kafka above which `stockroom_kafka_backlog_alert` is 1
    /// and `/health` says so: the log keeps them, and the disk fills while they wait.
    pub max_backlog_events: u64,
    /// librdkafka producer properties, passed through (`linger.ms`, `socket.keepalive.enable`,
    /// security settings). `enable.idempotence`, `acks` and `message.timeout.ms` are always
    /// `true`, `all` and `0`.
    /// Nested tables are read as dotted names, so `STOCKROOM_KAFKA__OPTIONS__LINGER.MS`
    /// (which figment's `Env` nests at the dot) and `"linger.ms"` in TOML mean the same.
    #[serde(deserialize_with = "dotted_options")]
    pub options: BTreeMap<String, KafkaOption>,
}

/// A librdkafka property value as written in TOML or the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KafkaOption {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A fractional number.
    Float(f64),
    /// Anything else.
    Text(String),
}

/// A `kafka.options` entry: a value, or a table whose keys continue the dotted name.
#[derive(Deserialize)]
#[serde(untagged)]
enum OptionTree {
    Value(KafkaOption),
    Table(BTreeMap<String, OptionTree>),
}

/// Reads `kafka.options`, flattening nested tables into dotted librdkafka names.
fn dotted_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, KafkaOption>, D::Error> {
    fn flatten(prefix: &str, tree: BTreeMap<String, OptionTree>, into: &mut BTreeMap<String, KafkaOption>) {
        for (key, value) in tree {
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                OptionTree::Value(value) => {
                    into.insert(name, value);
                }
                OptionTree::Table(table) => flatten(&name, table, into),
            }
        }
    }
    let mut options = BTreeMap::new();
    flatten("", BTreeMap::deserialize(deserializer)?, &mut options);
    Ok(options)
}

impl std::fmt::Display for KafkaOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaOption::Bool(value) => write!(f, "{value}"),
            KafkaOption::Int(value) => write!(f, "{value}"),
            KafkaOption::Float(value) => write!(f, "{value}"),
            KafkaOption::Text(value) => f.write_str(value),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            brokers: "127.0.0.1:9092".to_owned(),
            topic_prefix: "stockroom".to_owned(),
            source: "/stockroom".to_owned(),
            partitions: 3,
            replication_factor: 1,
            max_in_flight_events: 10_000,
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 5_000,
            position_interval_ms: 100,
            max_backlog_events: 1_000_000,
            options: BTreeMap::new(),
        }
    }
}

/// Credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The admin bearer token. If unset (and `STOCKROOM_ADMIN_TOKEN` is unset), one is
    /// generated on first start and stored in `<data_dir>/admin_token`.
    pub admin_token: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `stockroom=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// The environment variable that overrides `auth.admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "STOCKROOM_ADMIN_TOKEN";

impl Settings {
    /// Loads settings: `path` if given (it must exist), else `config.toml` in the working
    /// directory if present, then the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match path {
            Some(path) => {
                if !path.is_file() {
                    bail!("config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("config.toml")),
        }
        Self::from_figment(figment)
    }

    /// Settings from `figment` (defaults and a file), then the environment: every
    /// `STOCKROOM_SECTION__KEY` overrides `section.key` (figment's `Env`, split at `__`), and
    /// `STOCKROOM_ADMIN_TOKEN` sets `auth.admin_token`, taken as written.
    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let overrides = Env::prefixed("STOCKROOM_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let mut settings: Settings = figment.merge(overrides).extract().context("invalid configuration")?;
        if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV) {
            settings.auth.admin_token = Some(token);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The bind address, parsed.
    pub fn bind_address(&self) -> anyhow::Result<SocketAddr> {
        self.http
            .bind
            .parse()
            .with_context(|| format!("http.bind {:?} is not an address like 127.0.0.1:8080", self.http.bind))
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.bind_address()?;
        let checks = [
            (self.http.max_body_bytes > 0, "http.max_body_bytes must be positive"),
            (self.batch.max_items > 0, "batch.max_items must be positive"),
            (self.batch.max_body_bytes > 0, "batch.max_body_bytes must be positive"),
            (self.http.max_connections > 0, "http.max_connections must be positive"),
            (
                self.store.checkpoint_interval_ms > 0,
                "store.checkpoint_interval_ms must be positive",
            ),
            (
                self.http.request_body_timeout_seconds > 0,
                "http.request_body_timeout_seconds must be positive",
            ),
            (
                self.writer.max_batch_items > 0,
                "writer.max_batch_items must be positive",
            ),
            (
                self.writer.max_queue_delay_ms > 0,
                "writer.max_queue_delay_ms must be positive",
            ),
            (
                self.writer.queue_capacity_items > 0,
                "writer.queue_capacity_items must be positive",
            ),
            (
                self.actors.mailbox_capacity_messages > 0,
                "actors.mailbox_capacity_messages must be positive",
            ),
            (
                (1..=1_000_000).contains(&self.reservation.max_qty),
                "reservation.max_qty must be 1 to 1000000",
            ),
            (
                self.reservation.max_ttl_seconds > 0,
                "reservation.max_ttl_seconds must be positive",
            ),
            (
                (1..=self.reservation.max_ttl_seconds).contains(&self.reservation.default_ttl_seconds),
                "reservation.default_ttl_seconds must be 1 to reservation.max_ttl_seconds",
            ),
            (
                self.reservation.max_holds_per_sku > 0,
                "reservation.max_holds_per_sku must be positive",
            ),
            (
                self.idempotency.retention_hours >= 24,
                "idempotency.retention_hours must be at least 24",
            ),
            (
                self.cart.settled_retention_hours >= self.idempotency.retention_hours
                    && self.order.settled_retention_hours >= self.idempotency.retention_hours,
                "cart.settled_retention_hours and order.settled_retention_hours must be at least idempotency.retention_hours (a replayed answer names its cart or order)",
            ),
            (
                self.events.retention_max_events > 0,
                "events.retention_max_events must be positive",
            ),
            (
                self.events.sweep_interval_seconds > 0,
                "events.sweep_interval_seconds must be positive",
            ),
            (
                !self.kafka.enabled || !self.kafka.brokers.trim().is_empty(),
                "kafka.brokers must name at least one broker when kafka.enabled is true",
            ),
            (
                !self.kafka.topic_prefix.is_empty()
                    && self
                        .kafka
                        .topic_prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "kafka.topic_prefix must be letters, digits, '.', '_' or '-'",
            ),
            (
                self.kafka.partitions > 0 && self.kafka.replication_factor > 0,
                "kafka.partitions and kafka.replication_factor must be positive",
            ),
            (
                self.kafka.max_in_flight_events > 0,
                "kafka.max_in_flight_events must be positive",
            ),
            (
                self.kafka.retry_backoff_min_ms > 0
                    && self.kafka.retry_backoff_min_ms <= self.kafka.retry_backoff_max_ms,
                "kafka.retry_backoff_min_ms must be positive and at most kafka.retry_backoff_max_ms",
            ),
            (
                self.kafka.position_interval_ms > 0,
                "kafka.position_interval_ms must be positive",
            ),
            (
                self.auth
                    .admin_token
                    .as_ref()
                    .is_none_or(|token| token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic())),
                "auth.admin_token must be at least 16 printable characters without spaces",
            ),
        ];
        if let Err(entry) = crate::http::rate::TrustedProxies::parse(&self.http.trusted_proxies) {
            bail!("http.trusted_proxies: {entry:?} is not an address or a CIDR range");
        }
        for (ok, message) in checks {
            if !ok {
                bail!("{message}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings loaded as the server loads them, from `toml` as `./config.toml` and `env` as
    /// the process environment (inside a figment `Jail`, which restores both afterwards).
    // The closure's error type is figment's, as `Jail` requires.
    #[allow(clippy::result_large_err)]
    fn load(toml: &str, env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", toml)?;
            for (key, value) in env {
                jail.set_env(key, value);
            }
            loaded = Some(Settings::load(None));
            Ok(())
        });
        loaded.expect("the jail ran")
    }

    #[test]
    fn defaults_listen_on_8080_with_data_in_dot_data() {
        let settings = load("", &[]).unwrap();
        assert_eq!(settings.http.bind, "127.0.0.1:8080");
        assert_eq!(settings.store.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.auth.admin_token, None);
    }

    #[test]
    fn environment_overrides_the_file() {
        let toml = "[http]\nbind = \"127.0.0.1:7000\"\n[writer]\nmax_batch_items = 10\n";
        let settings = load(
            toml,
            &[
                ("STOCKROOM_HTTP__BIND", "127.0.0.1:9000"),
                ("STOCKROOM_STORE__DATA_DIR", "/var/lib/stockroom"),
                ("STOCKROOM_ADMIN_TOKEN", "0123456789abcdef0123"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(settings.http.bind, "127.0.0.1:9000");
        assert_eq!(settings.store.data_dir, PathBuf::from("/var/lib/stockroom"));
        assert_eq!(
            settings.writer.max_batch_items, 10,
            "file values stay when not overridden"
        );
        assert_eq!(settings.auth.admin_token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(load("[http]\nbnd = \"x\"\n", &[]).is_err());
        assert!(load("", &[("STOCKROOM_HTTP__BIND", "nowhere")]).is_err());
        assert!(load("", &[("STOCKROOM_WRITER__MAX_BATCH_ITEMS", "0")]).is_err());
        assert!(load("", &[("STOCKROOM_ADMIN_TOKEN", "short")]).is_err());
    }

    #[test]
    fn kafka_is_switched_on_and_tuned_from_the_environment() {
        let toml = "[kafka.options]\n\"linger.ms\" = 20\n\"compression.type\" = \"lz4\"\n";
        let settings = load(
            toml,
            &[
                ("STOCKROOM_KAFKA__ENABLED", "true"),
                ("STOCKROOM_KAFKA__BROKERS", "10.0.0.1:9092,10.0.0.2:9092"),
                ("STOCKROOM_KAFKA__OPTIONS__message.timeout.ms", "5000"),
            ],
        )
        .unwrap();
        assert!(settings.kafka.enabled);
        assert_eq!(settings.kafka.brokers, "10.0.0.1:9092,10.0.0.2:9092");
        assert_eq!(settings.kafka.topic_prefix, "stockroom");
        let options: Vec<(String, String)> = settings
            .kafka
            .options
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect();
        assert_eq!(
            options,
            [
                ("compression.type".to_owned(), "lz4".to_owned()),
                ("linger.ms".to_owned(), "20".to_owned()),
                ("message.timeout.ms".to_owned(), "5000".to_owned()),
            ]
        );
        assert!(
            load("", &[("STOCKROOM_KAFKA__TOPIC_PREFIX", "a b")]).is_err(),
            "a topic prefix with a space is refused"
        );
    }

    #[test]
    fn the_shipped_config_file_parses_to_the_defaults() {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let settings = load(&shipped, &[]).unwrap();
        let defaults = Settings::default();
        assert_eq!(
            serde_json::to_value(&settings).unwrap(),
            serde_json::to_value(&defaults).unwrap(),
            "config.toml documents the defaults"
        );
    }
}
