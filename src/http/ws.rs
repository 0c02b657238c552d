//! WebSockets: live order tracking (`/v1/ws/orders/{id}`) and live stock (`/v1/ws/stock`).
//!
//! Credentials are checked before the upgrade (401 / 404 as over HTTP). On connect the
//! session sends the order as a `snapshot` (or, with `after=<seq>`, every change after that
//! `seq`), then one `status` message per change, in order, each only once durable: the
//! order actor adopts a change only after it is durable, and registers the connection in the
//! same step that takes the snapshot, so nothing is missed and nothing is early.
//!
//! Every connection has a bounded buffer: a client that falls behind is closed with 1008
//! instead of slowing the order or other clients. The server pings; a silent client is closed
//! with 1001; a frame over the limit closes with 1009.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::views::{to_json, OrderBody};
use super::{path_param, AppState};
use crate::access::Caller;
use crate::actors::feed::StockUpdate;
use crate::actors::order::{TrackFailure, TrackOrder};
use crate::actors::sku::GetSku;
use crate::config::PublicStock;
use crate::domain::clock::rfc3339;
use crate::domain::location::LocationId;
use crate::domain::order::HistoryEntry;
use crate::domain::{OrderId, SkuId};
use crate::metrics as names;
use crate::persistence::Ticket;

/// Query of `/v1/ws/orders/{id}` (the credentials in it, `ticket` or `token`, are read by
/// the access check).
#[derive(Debug, Deserialize)]
pub struct TrackQuery {
    after: Option<u64>,
}

/// How long one message may take to hand to a client before it counts as not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// One place among the server's WebSocket connections; dropping it frees the place.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// Takes a place, or `None` when `max` connections are open.
    pub fn acquire(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < max).then_some(count + 1)
        })
        .ok()?;
        Some(Self(Arc::clone(open)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /v1/ws/orders/{id}?ticket=<ticket>&after=<seq>`: live tracking of one order. The
/// credentials come from the `Authorization` header, a single-use `ticket` from
/// `POST /v1/ws/tickets`, or (less safe: the URL may be logged) the `token` itself.
#[utoipa::path(get, path = "/v1/ws/orders/{id}", tag = "websocket", operation_id = "ws_track_order",
    params(("id" = String, Path, description = "Order id (UUID)"), ("ticket" = Option<String>, Query, description = "A single-use ticket from POST /v1/ws/tickets"), ("token" = Option<String>, Query, description = "The cart token or a credential (less safe than a ticket: URLs end up in logs)"), ("after" = Option<u64>, Query, description = "Resume after this history seq")),
    responses((status = 101, description = "Upgraded: a snapshot, then one status message per change"), (status = 400, description = "Not a WebSocket upgrade, or an invalid query", body = crate::http::openapi::ErrorBody), (status = 401, description = "No or wrong credentials, or a used, lapsed or misdirected ticket", body = crate::http::openapi::ErrorBody), (status = 403, description = "A credential without a role that may track orders", body = crate::http::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::http::openapi::ErrorBody), (status = 429, description = "Too many connections to this order", body = crate::http::openapi::ErrorBody), (status = 503, description = "Too many connections in all, or starting", body = crate::http::openapi::ErrorBody)))]
pub async fn track_order(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    query: web::Query<TrackQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let limits = &state.settings.websocket;
    let id = OrderId::parse(path_param(&request, "id")).map_err(|_| ApiError::NotFound)?;
    let mailbox = engine.registry.order(&id)?.ok_or(ApiError::NotFound)?;
    let slot = ConnectionSlot::acquire(&state.ws_open, limits.max_connections).ok_or(ApiError::Overloaded)?;
    let (sender, receiver) = mpsc::channel(limits.send_buffer_messages);
    let kicked = Arc::new(AtomicBool::new(false));
    let answer = mailbox
        .ask(|reply, mailbox_slot| TrackOrder {
            access: caller.access(),
            sender,
            kicked: Arc::clone(&kicked),
            per_order_max: limits.max_connections_per_order,
            reply,
            slot: mailbox_slot,
        })?
        .await
        .map_err(|_| ApiError::Unavailable)?;
    super::command::durable(engine, answer.ticket).await?;
    let order = match answer.value {
        Ok(order) => order,
        Err(TrackFailure::NotFound) => return Err(ApiError::NotFound),
        Err(TrackFailure::TooMany) => return Err(ApiError::TooManyConnections),
    };
    let first: Vec<String> = match query.after {
        Some(after) => order
            .history
            .iter()
            .filter(|entry| entry.seq > after)
            .map(status_message)
            .collect(),
        None => vec![to_json_string(&serde_json::json!({
            "type": "snapshot",
            "seq": order.seq(),
            "order": OrderBody::from(&order),
        }))],
    };
    let (response, session, stream) = actix_ws::handle(&request, body)
        .map_err(|error| ApiError::bad_request("not_a_websocket", format!("expected a WebSocket upgrade: {error}")))?;
    let stream = stream.max_frame_size(limits.max_frame_bytes);
    let timing = Timing {
        ping_every: Duration::from_secs(limits.ping_interval_seconds),
        idle_after: Duration::from_secs(limits.idle_timeout_seconds),
    };
    let render = |entry: HistoryEntry| Some(status_message(&entry));
    actix_web::rt::spawn(run_session(
        session, stream, receiver, render, kicked, first, timing, slot, "orders",
    ));
    Ok(response)
}

/// Query of `/v1/ws/stock`.
#[derive(Debug, Deserialize)]
pub struct StockQuery {
    skus: Option<String>,
}

/// Most SKUs one stock connection may watch.
const WATCHED_SKUS_MAX: usize = 100;

/// `GET /v1/ws/stock?skus=a,b,c`: `available` of each SKU on connect and whenever it changes
/// (at most one message per SKU per 100 ms, each only once durable). Public, like stock reads,
/// and showing what they show: with `catalog.public_stock = "level"` the public gets
/// `stock_level` instead, and a message only when the level changes (so the rate of sales does
/// not show either); staff (the admin and named credentials) always get `available`.
#[utoipa::path(get, path = "/v1/ws/stock", tag = "websocket", operation_id = "ws_stock",
    params(("skus" = String, Query, description = "Comma-separated SKU ids (1 to 100)")),
    responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 101, description = "Upgraded: the availability of each SKU, then changes"), (status = 400, description = "Not a WebSocket upgrade, or an invalid query", body = crate::http::openapi::ErrorBody), (status = 404, description = "Unknown SKU", body = crate::http::openapi::ErrorBody), (status = 503, description = "Too many connections in all, or starting", body = crate::http::openapi::ErrorBody)))]
pub async fn stock(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    query: web::Query<StockQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let limits = &state.settings.websocket;
    let raw = query.skus.as_deref().unwrap_or_default();
    let mut skus: Vec<SkuId> = Vec::new();
    for id in raw.split(',').filter(|id| !id.is_empty()) {
        let sku = SkuId::parse(id)?;
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    if skus.is_empty() || skus.len() > WATCHED_SKUS_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("skus must name 1 to {WATCHED_SKUS_MAX} SKUs"),
        ));
    }
    let slot = ConnectionSlot::acquire(&state.ws_open, limits.max_connections).ok_or(ApiError::Overloaded)?;
    let (sender, receiver) = mpsc::channel(limits.send_buffer_messages.max(skus.len()));
    let kicked = Arc::new(AtomicBool::new(false));
    // Watch first, then read: a change in between is published after the read and ordered by
    // its version, so nothing is missed and nothing older follows something newer.
    let mut mailboxes = Vec::with_capacity(skus.len());
    for sku in &skus {
        mailboxes.push(engine.registry.sku(sku).ok_or(ApiError::NotFound)?);
    }
    for sku in &skus {
        engine.feed.watch(sku.clone(), sender.clone(), Arc::clone(&kicked));
    }
    drop(sender);
    let mut versions: HashMap<SkuId, Ticket> = HashMap::new();
    let catalog = &state.settings.catalog;
    let staff = caller.is_staff();
    let mut shown = StockShown {
        level: (!staff && catalog.public_stock == PublicStock::Level).then_some(catalog.low_stock_level),
        last: HashMap::new(),
    };
    let mut first = Vec::with_capacity(skus.len());
    for mailbox in &mailboxes {
        let acked = mailbox
            .ask(|reply, slot| GetSku { reply, slot })?
            .await
            .map_err(|_| ApiError::from(crate::actors::AskError::NoAnswer))?;
        super::command::durable(engine, acked.ticket).await?;
        let view = acked.value.ok_or(ApiError::NotFound)?;
        // The read reflects exactly this SKU's changes up to its last ticket.
        let locations: Vec<(LocationId, u64)> = view
            .locations
            .iter()
            .map(|(location, stock)| (location.clone(), stock.available()))
            .collect();
        first.extend(shown.message(&view.sku, view.available, &locations));
        versions.insert(view.sku.clone(), acked.ticket);
    }
    let (response, session, stream) = actix_ws::handle(&request, body)
        .map_err(|error| ApiError::bad_request("not_a_websocket", format!("expected a WebSocket upgrade: {error}")))?;
    let stream = stream.max_frame_size(limits.max_frame_bytes);
    let timing = Timing {
        ping_every: Duration::from_secs(limits.ping_interval_seconds),
        idle_after: Duration::from_secs(limits.idle_timeout_seconds),
    };
    let render = move |update: StockUpdate| {
        let seen = versions.entry(update.sku.clone()).or_default();
        if update.version <= *seen {
            return None;
        }
        *seen = update.version;
        shown.message(&update.sku, update.available, &update.locations)
    };
    actix_web::rt::spawn(run_session(
        session, stream, receiver, render, kicked, first, timing, slot, "stock",
    ));
    Ok(response)
}

/// What one stock connection shows: `available`, or only the level and only when it changes.
struct StockShown {
    /// `Some(low_stock_level)` when this connection sees levels.
    level: Option<u64>,
    /// The levels last sent (the SKU's, then each location's), per SKU.
    last: HashMap<SkuId, Vec<&'static str>>,
}

impl StockShown {
    /// The message for a SKU's new `available` (in total and per location), if there is one
    /// to send.
    fn message(&mut self, sku: &SkuId, available: u64, locations: &[(LocationId, u64)]) -> Option<String> {
        let Some(low) = self.level else {
            let per_location: Vec<serde_json::Value> = locations
                .iter()
                .map(|(location, available)| serde_json::json!({ "location": location.as_str(), "available": available }))
                .collect();
            let message = serde_json::json!({
                "type": "stock",
                "sku": sku.as_str(),
                "available": available,
                "locations": per_location,
            });
            return Some(to_json_string(&message));
        };
        let level = super::views::stock_level(available, low);
        let levels: Vec<&'static str> = std::iter::once(level)
            .chain(
                locations
                    .iter()
                    .map(|(_, available)| super::views::stock_level(*available, low)),
            )
            .collect();
        if self.last.get(sku) == Some(&levels) {
            return None;
        }
        let per_location: Vec<serde_json::Value> = locations
            .iter()
            .zip(&levels[1..])
            .map(|((location, _), level)| serde_json::json!({ "location": location.as_str(), "stock_level": level }))
            .collect();
        self.last.insert(sku.clone(), levels);
        let message = serde_json::json!({
            "type": "stock",
            "sku": sku.as_str(),
            "stock_level": level,
            "locations": per_location,
        });
        Some(to_json_string(&message))
    }
}

fn to_json_string(value: &serde_json::Value) -> String {
    String::from_utf8(to_json(value)).unwrap_or_default()
}

/// A `status` message for one change.
fn status_message(entry: &HistoryEntry) -> String {
    to_json_string(&serde_json::json!({
        "type": "status",
        "seq": entry.seq,
        "status": entry.status,
        "at": rfc3339(entry.at_ms),
    }))
}

/// Keepalive settings of a session.
struct Timing {
    ping_every: Duration,
    idle_after: Duration,
}

/// Hands `text` to the client, or fails if it is gone or not reading.
async fn send(session: &mut Session, text: String, kind: &'static str) -> Result<(), ()> {
    match actix_web::rt::time::timeout(SEND_TIMEOUT, session.text(text)).await {
        Ok(Ok(())) => {
            metrics::counter!(names::WS_MESSAGES_SENT_TOTAL, "kind" => kind).increment(1);
            Ok(())
        }
        _ => Err(()),
    }
}

fn close_reason(code: CloseCode, description: &str, metric: &'static str) -> Option<CloseReason> {
    metrics::counter!(names::WS_CLOSES_TOTAL, "reason" => metric).increment(1);
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}

/// Serves one connection: `first`, then each update rendered (an update rendered as `None` is
/// skipped), with keepalive, until either side ends it.
#[allow(clippy::too_many_arguments)]
async fn run_session<T>(
    mut session: Session,
    mut stream: MessageStream,
    mut changes: mpsc::Receiver<T>,
    mut render: impl FnMut(T) -> Option<String>,
    kicked: Arc<AtomicBool>,
    first: Vec<String>,
    timing: Timing,
    _slot: ConnectionSlot,
    kind: &'static str,
) {
    metrics::gauge!(names::WS_CONNECTIONS, "kind" => kind).increment(1.0);
    let mut reason = None;
    let mut open = true;
    for text in first {
        if send(&mut session, text, kind).await.is_err() {
            open = false;
            break;
        }
    }
    let mut ping = actix_web::rt::time::interval(timing.ping_every);
    ping.tick().await;
    let mut last_heard = Instant::now();
    if open {
        loop {
            tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Ping(bytes))) => {
                        last_heard = Instant::now();
                        if session.pong(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) => {
                        reason = Some(CloseReason { code: CloseCode::Normal, description: None });
                        break;
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(ProtocolError::Overflow)) => {
                        reason = close_reason(CloseCode::Size, "frame too large", "frame_too_large");
                        break;
                    }
                    Some(Err(_)) | None => break,
                },
                change = changes.recv() => match change {
                    Some(update) => {
                        let Some(text) = render(update) else { continue };
                        if send(&mut session, text, kind).await.is_err() {
                            metrics::counter!(names::WS_CLOSES_TOTAL, "reason" => "slow_consumer").increment(1);
                            break;
                        }
                    }
                    None if kicked.load(Ordering::SeqCst) => {
                        reason = close_reason(CloseCode::Policy, "slow consumer: too far behind", "slow_consumer");
                        break;
                    }
                    // The order went away (the server is stopping).
                    None => {
                        reason = Some(CloseReason { code: CloseCode::Away, description: Some("the server is stopping".to_owned()) });
                        break;
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > timing.idle_after {
                        reason = close_reason(CloseCode::Away, "idle: no pong", "idle");
                        break;
                    }
                    if session.ping(b"").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    if reason.is_some() {
        let _ = actix_web::rt::time::timeout(SEND_TIMEOUT, session.close(reason)).await;
    }
    metrics::gauge!(names::WS_CONNECTIONS, "kind" => kind).decrement(1.0);
}
