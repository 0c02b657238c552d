//! The HTTP JSON API (actix-web): routes per resource, one error type, request metrics.
//!
//! Every handler parses its input into domain values, sends one message to the owning actor,
//! waits until the change it reports is durable, and only then answers.

pub mod carts;
pub mod error;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod request;
pub mod reservations;
pub mod skus;
pub mod views;
pub mod ws;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::sku::{ExecuteSkuCommand, Render};
use crate::actors::turns::Turn;
use crate::actors::{Mailbox, SkuActor, SkuFailure};
use crate::config::Settings;
use crate::domain::sku::SkuCommand;
use crate::domain::SkuId;
use crate::engine::Engine;
use crate::idempotency::{Admission, IdempotencyDraft, IdempotencyKey, Render as RenderAnswer};
use crate::metrics as names;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    /// The engine, set once recovery has finished; `/ready` answers 200 from then on.
    pub engine: OnceLock<Arc<Engine>>,
    /// The configuration.
    pub settings: Arc<Settings>,
    /// The admin bearer token.
    pub admin_token: String,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// WebSocket connections open now (bounded by `websocket.max_connections`).
    pub ws_open: Arc<std::sync::atomic::AtomicUsize>,
}

impl AppState {
    /// The engine, or `503 not_ready` while recovering.
    pub fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        self.engine.get().ok_or(ApiError::NotReady)
    }
}

/// Registers every route.
pub fn routes(config: &mut web::ServiceConfig) {
    let query_errors = web::QueryConfig::default()
        .error_handler(|error, _| ApiError::bad_request("invalid_query", error.to_string()).into());
    config
        .app_data(query_errors)
        .service(resource("/health").route(web::get().to(health::health)))
        .service(resource("/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/openapi.json").route(web::get().to(openapi::spec)))
        .service(resource("/v1/skus").route(web::get().to(skus::list)))
        .service(
            resource("/v1/skus/{sku}")
                .route(web::get().to(skus::get))
                .route(web::put().to(skus::upsert)),
        )
        .service(resource("/v1/skus/{sku}/restock").route(web::post().to(skus::restock)))
        .service(resource("/v1/skus/{sku}/adjust").route(web::post().to(skus::adjust)))
        .service(resource("/v1/skus/{sku}/reservations").route(web::post().to(reservations::create)))
        .service(
            resource("/v1/reservations/{id}")
                .route(web::get().to(reservations::get))
                .route(web::delete().to(reservations::release)),
        )
        .service(resource("/v1/reservations/{id}/commit").route(web::post().to(reservations::commit)))
        .service(resource("/v1/carts").route(web::post().to(carts::create)))
        .service(resource("/v1/carts/{id}").route(web::get().to(carts::get)))
        .service(
            resource("/v1/carts/{id}/items/{sku}")
                .route(web::put().to(carts::set_line))
                .route(web::delete().to(carts::remove_line)),
        )
        .service(resource("/v1/carts/{id}/checkout").route(web::post().to(carts::checkout)))
        .service(resource("/v1/orders/{id}").route(web::get().to(orders::get)))
        .service(resource("/v1/orders/{id}/pay").route(web::post().to(orders::pay)))
        .service(resource("/v1/orders/{id}/cancel").route(web::post().to(orders::cancel)))
        .service(resource("/v1/orders/{id}/status").route(web::post().to(orders::set_status)))
        .service(resource("/v1/ws/orders/{id}").route(web::get().to(ws::track_order)))
        .service(resource("/v1/ws/stock").route(web::get().to(ws::stock)))
        .default_service(web::to(unmatched));
}

/// A resource whose requests are counted under its own path pattern: the label is known
/// here, so the router's regex match is not repeated per request to find it.
fn resource(
    route: &'static str,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(route)
        .default_service(web::to(error::method_not_allowed))
        .wrap_fn(move |request, service| {
            let started = Instant::now();
            let method = request.method().clone();
            let call = service.call(request);
            async move {
                let response = call.await?;
                record_request(route, &method, response.status(), started);
                Ok(response)
            }
        })
}

/// Answers (and counts) a request no route matched.
async fn unmatched(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    record_request("unmatched", request.method(), StatusCode::NOT_FOUND, Instant::now());
    Err(ApiError::NotFound)
}

/// Counts one request and its latency.
fn record_request(route: &'static str, method: &actix_web::http::Method, status: StatusCode, started: Instant) {
    let method = method.as_str().to_owned();
    let status = status.as_str().to_owned();
    metrics::histogram!(names::HTTP_REQUEST_SECONDS, "route" => route, "method" => method.clone(), "status" => status.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status)
        .increment(1);
}

/// A JSON response with a status.
pub fn json_response(status: u16, body: Vec<u8>) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body)
}

/// A keyed request as the idempotency gate needs it.
pub struct Keyed<'a> {
    /// The key, if the client sent one.
    pub key: &'a IdempotencyKey,
    /// Who sent it: keys are scoped to credentials.
    pub scope: &'a str,
    /// Fingerprint of method, path and canonical body.
    pub fingerprint: [u8; 32],
}

impl<'a> Keyed<'a> {
    /// A request with `key`, sent with credentials whose idempotency scope is `scope`.
    pub fn new(key: &'a IdempotencyKey, scope: &'a str, request: &HttpRequest, canonical_body: &[u8]) -> Self {
        Keyed {
            key,
            scope,
            fingerprint: crate::idempotency::fingerprint(request, canonical_body),
        }
    }

    /// A request sent with the admin token.
    pub fn admin(key: &'a IdempotencyKey, request: &HttpRequest, canonical_body: &[u8]) -> Self {
        Self::new(key, skus::ADMIN_SCOPE, request, canonical_body)
    }
}

/// Sends `command` to a SKU actor, waits until its change is durable, and answers with
/// `render`. With an idempotency key, a repeat replays the stored answer.
pub async fn execute_sku_command(
    engine: &Engine,
    sku: &SkuId,
    mailbox: &Mailbox<SkuActor>,
    command: SkuCommand,
    keyed: Keyed<'_>,
    render: Render,
) -> Result<HttpResponse, ApiError> {
    let _turn = sku_turn(engine, sku).await?;
    idempotent(
        engine,
        keyed,
        render,
        |reply| match reply {
            // Overloads and failed reads are not answers that stand (nor are they stored).
            Err(failure @ (SkuFailure::Overloaded | SkuFailure::Store(_))) => Some(failure.clone().into()),
            _ => None,
        },
        |draft| async move {
            let acked = mailbox
                .ask(|reply, slot| ExecuteSkuCommand {
                    command,
                    idempotency: draft,
                    reply,
                    slot,
                })?
                .await
                .map_err(|_| ApiError::from(crate::actors::AskError::NoAnswer))?;
            Ok((acked.value, acked.ticket))
        },
    )
    .await
}

/// Runs a change with idempotency: a repeated key replays its stored answer; otherwise
/// `send` runs it (given the draft the actor stores its answer with), the answer waits until
/// its ticket is durable, and goes out rendered. `transient` picks the answers that are not
/// to stand (overloads): they go out as errors with their headers.
pub async fn idempotent<R, Send, Fut>(
    engine: &Engine,
    keyed: Keyed<'_>,
    render: RenderAnswer<R>,
    transient: impl FnOnce(&R) -> Option<ApiError>,
    send: Send,
) -> Result<HttpResponse, ApiError>
where
    Send: FnOnce(Option<IdempotencyDraft<R>>) -> Fut,
    Fut: std::future::Future<Output = Result<(R, crate::persistence::Ticket), ApiError>>,
{
    let mut draft = None;
    if let Some(key) = &keyed.key.0 {
        match engine.idempotency.admit(keyed.scope, key, keyed.fingerprint)? {
            Admission::Replay(record) => {
                // The record may have been applied but not yet flushed by a request whose
                // client went away; report it only once durable.
                engine.barrier().await.map_err(|_| ApiError::Unavailable)?;
                metrics::counter!(names::IDEMPOTENT_REPLAYS_TOTAL).increment(1);
                let mut response = json_response(record.status, record.body);
                response.headers_mut().insert(
                    header::HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                );
                return Ok(response);
            }
            Admission::Proceed(in_flight) => {
                // The mark goes with the draft to the actor, which keeps it until the change
                // is durable: it must outlive this handler if the client goes away.
                draft = Some(IdempotencyDraft::new(
                    in_flight,
                    keyed.fingerprint,
                    render,
                    engine.limits.idempotency_retention_ms,
                ));
            }
        }
    }
    let (reply, ticket) = send(draft).await?;
    durable(engine, ticket).await?;
    if let Some(error) = transient(&reply) {
        return Err(error);
    }
    let (status, body) = render(&reply);
    Ok(json_response(status, body))
}

/// Sends the message built by `make` to a SKU actor and returns its answer once everything
/// the answer reports is durable.
pub async fn ask_durable<M, T>(
    engine: &Engine,
    mailbox: &Mailbox<SkuActor>,
    make: impl FnOnce(crate::actors::sku::Reply<T>, crate::actors::MailboxSlot) -> M,
) -> Result<T, ApiError>
where
    M: actix::Message<Result = ()> + Send + 'static,
    SkuActor: actix::Handler<M>,
{
    let acked = mailbox
        .ask(make)?
        .await
        .map_err(|_| ApiError::from(crate::actors::AskError::NoAnswer))?;
    durable(engine, acked.ticket).await?;
    Ok(acked.value)
}

/// Waits for a turn of `sku` for a write on it (see [`crate::actors::turns`]); the caller
/// keeps it until its answer is durable. A queue that waited too long answers 503
/// `overloaded`.
pub async fn sku_turn(engine: &Engine, sku: &SkuId) -> Result<Turn, ApiError> {
    engine.turns.take(sku).await.map_err(|_| ApiError::Overloaded)
}

/// Waits until `ticket` is durable: what a handler reports must have been synced. A failed
/// writer answers 500 `outcome_unknown`, never a retryable refusal: the failed sync may have
/// reached the disk, so the change may stand, and a blind retry could apply it twice.
pub async fn durable(engine: &Engine, ticket: crate::persistence::Ticket) -> Result<(), ApiError> {
    engine
        .writer
        .durability()
        .wait(ticket)
        .await
        .map_err(|_| ApiError::OutcomeUnknown)
}

/// Reads stored state with `read`, then waits until every change it could have seen is
/// durable. Reading first matters: readers see changes as soon as they are logged, so a
/// barrier taken before the read would not cover a change logged between the two. A failed
/// writer answers 503 `unavailable`: nothing was changed by the read, so it may be retried.
pub async fn read_durable<T>(engine: &Engine, read: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    let value = read()?;
    engine.barrier().await.map_err(|_| ApiError::Unavailable)?;
    Ok(value)
}

/// The status and body of an error, as stored for idempotent replay.
pub fn error_parts(error: &ApiError) -> (u16, Vec<u8>) {
    use actix_web::ResponseError;
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    (error.status_code().as_u16(), body)
}

/// The path parameter named `name`, for handlers that take the raw request.
pub fn path_param<'a>(request: &'a HttpRequest, name: &str) -> &'a str {
    request.match_info().get(name).unwrap_or_default()
}
