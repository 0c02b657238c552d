//! Metric names, their meaning, and the Prometheus recorder behind `/metrics`.
//!
//! Names end in their unit. Every metric is described here so that `/metrics` carries help
//! text and `docs/` can point at one list.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests by `route` (the matched pattern), `method` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "stockroom_http_requests_total";
/// HTTP request latency by `route`, `method` and `status`, from first byte to response.
pub const HTTP_REQUEST_SECONDS: &str = "stockroom_http_request_duration_seconds";
/// Reservation attempts and settlements by `outcome`.
pub const RESERVATIONS_TOTAL: &str = "stockroom_reservations_total";
/// Reservations held right now, over all SKUs.
pub const RESERVATIONS_HELD: &str = "stockroom_reservations_held";
/// Actors running, by `kind`.
pub const ACTORS_ALIVE: &str = "stockroom_actors_alive";
/// Actors restarted from storage after a panic, by `kind`.
pub const ACTOR_RESTARTS_TOTAL: &str = "stockroom_actor_restarts_total";
/// Requests refused because a mailbox or the writer queue was full, by `queue`.
pub const OVERLOAD_REFUSALS_TOTAL: &str = "stockroom_overload_refusals_total";
/// Time a write waited for its SKU's turn (only writes that had to wait).
pub const SKU_TURN_WAIT_SECONDS: &str = "stockroom_sku_turn_wait_seconds";
/// Changes per group-commit batch.
pub const WRITER_BATCH_CHANGES: &str = "stockroom_writer_batch_changes";
/// Time of one flush (sled flush plus fsync of its data file).
pub const WRITER_FLUSH_SECONDS: &str = "stockroom_writer_flush_duration_seconds";
/// Time to apply and flush one batch.
pub const WRITER_BATCH_SECONDS: &str = "stockroom_writer_batch_duration_seconds";
/// Changes made durable.
pub const WRITER_CHANGES_TOTAL: &str = "stockroom_writer_changes_total";
/// Store failures (each one stops the server).
pub const WRITER_FAILURES_TOTAL: &str = "stockroom_writer_failures_total";
/// Checkpoint duration (state rows written and synced).
pub const CHECKPOINT_SECONDS: &str = "stockroom_checkpoint_duration_seconds";
/// State rows written by checkpoints.
pub const CHECKPOINT_ROWS_TOTAL: &str = "stockroom_checkpoint_rows_total";
/// Checkpoints that failed (and were retried).
pub const CHECKPOINT_FAILURES_TOTAL: &str = "stockroom_checkpoint_failures_total";
/// Log records removed after their checkpoint.
pub const LOG_RECORDS_REMOVED_TOTAL: &str = "stockroom_log_records_removed_total";
/// Rows changed since the last checkpoint, held in memory.
pub const MEMTABLE_ROWS: &str = "stockroom_memtable_rows";
/// Events appended to the event log.
pub const EVENTS_WRITTEN_TOTAL: &str = "stockroom_events_written_total";
/// Events the broker acknowledged, by `topic`.
pub const KAFKA_PUBLISHED_TOTAL: &str = "stockroom_kafka_events_published_total";
/// Event deliveries that failed (and will be sent again), by `topic`.
pub const KAFKA_FAILED_TOTAL: &str = "stockroom_kafka_events_failed_total";
/// Topic checks the Kafka bridge made because deliveries stalled.
pub const KAFKA_STALL_CHECKS_TOTAL: &str = "stockroom_kafka_stall_checks_total";
/// 1 while the Kafka backlog is over `kafka.max_backlog_events`.
pub const KAFKA_BACKLOG_ALERT: &str = "stockroom_kafka_backlog_alert";
/// Events the Kafka bridge could not publish and named in the dead-letter topic.
pub const KAFKA_DEAD_LETTERED_TOTAL: &str = "stockroom_kafka_dead_lettered_total";
/// Durable events not yet acknowledged by Kafka.
pub const KAFKA_BACKLOG_EVENTS: &str = "stockroom_kafka_backlog_events";
/// Time from an event's commit to the broker's acknowledgement.
pub const KAFKA_DELIVERY_SECONDS: &str = "stockroom_kafka_delivery_latency_seconds";
/// The Kafka bridge's stored position: every event below it was acknowledged.
pub const KAFKA_POSITION: &str = "stockroom_kafka_position";
/// How far the operating system's wall clock is ahead of the server's steady clock.
pub const CLOCK_SKEW_SECONDS: &str = "stockroom_clock_skew_seconds";
/// Requests cut off because the client was too slow, by `reason` (`body_timeout`).
pub const SLOW_CLIENTS_TOTAL: &str = "stockroom_http_slow_clients_total";
/// HTTP connections open now.
pub const HTTP_CONNECTIONS_OPEN: &str = "stockroom_http_connections_open";
/// Requests refused (503) because their connection was beyond `http.max_connections`.
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "stockroom_http_connections_refused_total";
/// Requests refused by a per-client limit, by `limit` (`cart_lines`, `cart_line_qty`,
/// `holds_per_sku`).
pub const LIMIT_REFUSALS_TOTAL: &str = "stockroom_limit_refusals_total";
/// Rows removed by retention (idempotency records, settled reservations, old events).
pub const RETENTION_DELETED_TOTAL: &str = "stockroom_retention_deleted_total";
/// Time the last recovery took, until ready.
pub const RECOVERY_SECONDS: &str = "stockroom_recovery_duration_seconds";
/// Carts open right now.
pub const CARTS_OPEN: &str = "stockroom_carts_open";
/// Carts created.
pub const CARTS_CREATED_TOTAL: &str = "stockroom_carts_created_total";
/// Carts whose hold time passed (their stock was released).
pub const CARTS_EXPIRED_TOTAL: &str = "stockroom_carts_expired_total";
/// Checkouts by `outcome`: placed or failed.
pub const CHECKOUTS_TOTAL: &str = "stockroom_checkouts_total";
/// Orders by `status`, counted as they enter it (a gauge per status, up and down).
pub const ORDERS: &str = "stockroom_orders";
/// Lines given back by failed checkouts (saga compensations).
pub const SAGA_COMPENSATIONS_TOTAL: &str = "stockroom_saga_compensations_total";
/// WebSocket connections open, by `kind` (orders, stock).
pub const WS_CONNECTIONS: &str = "stockroom_ws_connections";
/// WebSocket messages sent, by `kind`.
pub const WS_MESSAGES_SENT_TOTAL: &str = "stockroom_ws_messages_sent_total";
/// WebSocket connections closed by the server, by `reason` (slow_consumer, idle, frame_too_large).
pub const WS_CLOSES_TOTAL: &str = "stockroom_ws_server_closes_total";
/// Time from a change being decided to its message being handed to the connection.
pub const WS_FANOUT_SECONDS: &str = "stockroom_ws_fanout_duration_seconds";
/// Requests answered from a stored idempotency record.
pub const IDEMPOTENT_REPLAYS_TOTAL: &str = "stockroom_idempotent_replays_total";

/// Latency buckets in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Batch size buckets, in changes.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Installs the Prometheus recorder once per process and returns its handle. Later calls
/// (several servers in one test process) share the first recorder.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS_SECONDS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full(WRITER_BATCH_CHANGES.to_owned()), BATCH_BUCKETS)
                })
                // expect: the bucket lists above are non-empty constants.
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        CLOCK_SKEW_SECONDS,
        Unit::Seconds,
        "Wall clock minus the server's steady clock; a step of the wall clock shows here until restart."
    );
    describe_counter!(
        SLOW_CLIENTS_TOTAL,
        "Requests cut off (408) because the client sent its body too slowly."
    );
    describe_gauge!(HTTP_CONNECTIONS_OPEN, "HTTP connections open now.");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Requests refused with 503 because their connection was beyond http.max_connections."
    );
    describe_counter!(
        LIMIT_REFUSALS_TOTAL,
        "Requests refused by a per-client limit: cart_lines, cart_line_qty, holds_per_sku."
    );
    describe_counter!(KAFKA_PUBLISHED_TOTAL, "Events acknowledged by Kafka, by topic.");
    describe_counter!(
        KAFKA_FAILED_TOTAL,
        "Event deliveries to Kafka that failed and will be sent again, by topic."
    );
    describe_gauge!(KAFKA_BACKLOG_EVENTS, "Durable events not yet acknowledged by Kafka.");
    describe_gauge!(
        KAFKA_BACKLOG_ALERT,
        "1 while the Kafka backlog is over kafka.max_backlog_events (the log, on disk, keeps it)."
    );
    describe_counter!(
        KAFKA_DEAD_LETTERED_TOTAL,
        "Events the Kafka bridge could not publish (undecodable or missing from the log), named in the dead-letter topic."
    );
    describe_counter!(
        KAFKA_STALL_CHECKS_TOTAL,
        "Topic checks the Kafka bridge made because deliveries stalled (a broker away or back empty)."
    );
    describe_histogram!(
        KAFKA_DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from an event's commit to Kafka's acknowledgement."
    );
    describe_gauge!(
        KAFKA_POSITION,
        "The Kafka bridge's stored position: every event below it was acknowledged."
    );
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests by route, method and status.");
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route, method and status."
    );
    describe_counter!(
        RESERVATIONS_TOTAL,
        "Reservation outcomes: reserved, insufficient_stock, committed, released, expired."
    );
    describe_gauge!(RESERVATIONS_HELD, "Reservations held right now.");
    describe_gauge!(ACTORS_ALIVE, "Actors running, by kind.");
    describe_counter!(ACTOR_RESTARTS_TOTAL, "Actors restarted from storage after a panic.");
    describe_counter!(
        OVERLOAD_REFUSALS_TOTAL,
        "Requests refused with 503 because a bounded queue was full or waited too long, by queue."
    );
    describe_histogram!(
        SKU_TURN_WAIT_SECONDS,
        Unit::Seconds,
        "Time a write waited for its SKU's turn while that SKU was over its share of the writer."
    );
    describe_histogram!(WRITER_BATCH_CHANGES, "Changes made durable per group-commit batch.");
    describe_histogram!(
        WRITER_FLUSH_SECONDS,
        Unit::Seconds,
        "Log sync (flush plus fsync) time per batch."
    );
    describe_histogram!(
        WRITER_BATCH_SECONDS,
        Unit::Seconds,
        "Time from taking a batch to its sync's end (encode, append, wait, sync)."
    );
    describe_counter!(WRITER_CHANGES_TOTAL, "Changes made durable.");
    describe_counter!(WRITER_FAILURES_TOTAL, "Store failures; each stops the server.");
    describe_counter!(EVENTS_WRITTEN_TOTAL, "Events appended to the event log.");
    describe_histogram!(
        CHECKPOINT_SECONDS,
        Unit::Seconds,
        "Time to write and sync one checkpoint of the state rows."
    );
    describe_counter!(CHECKPOINT_ROWS_TOTAL, "State rows written by checkpoints.");
    describe_counter!(
        CHECKPOINT_FAILURES_TOTAL,
        "Checkpoints that failed; each is retried, and the log keeps every change meanwhile."
    );
    describe_counter!(LOG_RECORDS_REMOVED_TOTAL, "Log records removed after their checkpoint.");
    describe_gauge!(
        MEMTABLE_ROWS,
        "State rows changed since the last checkpoint, held in memory."
    );
    describe_counter!(RETENTION_DELETED_TOTAL, "Rows removed by retention.");
    describe_gauge!(RECOVERY_SECONDS, Unit::Seconds, "Duration of the last recovery.");
    describe_counter!(
        IDEMPOTENT_REPLAYS_TOTAL,
        "Requests answered from a stored idempotency record."
    );
}
