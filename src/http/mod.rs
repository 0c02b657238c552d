//! The HTTP JSON API (actix-web): routes per resource, one error type, request metrics.
//!
//! Every handler parses its input into domain values, sends one message to the owning actor,
//! waits until the change it reports is durable, and only then answers: the steps are in
//! [`command`].

pub mod admission;
pub mod auth;
pub mod batch;
pub mod carts;
pub mod command;
pub mod cors;
pub mod credentials;
pub mod error;
pub mod health;
pub mod ledger;
pub mod locations;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod rate;
pub mod request;
pub mod reservations;
pub mod skus;
pub mod tickets;
pub mod views;
pub mod ws;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Settings;
use crate::engine::Engine;
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
    // The router tries resources in this order, and every pattern with a `{segment}` is a
    // regex run: fixed paths first (a string compare each), then the patterns by how often
    // they are asked for, so the hottest request (a reservation) runs one regex, not four.
    config
        .app_data(query_errors)
        .service(resource("/health").route(web::get().to(health::health)))
        .service(resource("/").route(web::get().to(pages::storefront)))
        .service(resource("/admin").route(web::get().to(pages::admin)))
        .service(resource("/ready").route(web::get().to(health::ready)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/openapi.json").route(web::get().to(openapi::spec)))
        .service(resource("/v1/skus").route(web::get().to(skus::list)))
        .service(resource("/v1/carts").route(web::post().to(carts::create)))
        .service(resource("/v1/ws/stock").route(web::get().to(ws::stock)))
        .service(resource("/v1/ws/tickets").route(web::post().to(tickets::create)))
        .service(
            resource("/v1/credentials")
                .route(web::post().to(credentials::create))
                .route(web::get().to(credentials::list)),
        )
        .service(resource("/v1/locations").route(web::get().to(locations::list)))
        .service(resource("/v1/transfers").route(web::post().to(ledger::create)))
        .service(resource("/v1/stock/batch").route(web::post().to(batch::apply)))
        .service(resource("/v1/orders").route(web::get().to(orders::list)))
        .service(resource("/v1/skus/{sku}/reservations").route(web::post().to(reservations::create)))
        .service(
            resource("/v1/carts/{id}/items/{sku}")
                .route(web::put().to(carts::set_line))
                .route(web::delete().to(carts::remove_line)),
        )
        .service(
            resource("/v1/skus/{sku}")
                .route(web::get().to(skus::get))
                .route(web::put().to(skus::upsert)),
        )
        .service(
            resource("/v1/reservations/{id}")
                .route(web::get().to(reservations::get))
                .route(web::delete().to(reservations::release)),
        )
        .service(resource("/v1/reservations/{id}/commit").route(web::post().to(reservations::commit)))
        .service(resource("/v1/carts/{id}/checkout").route(web::post().to(carts::checkout)))
        .service(resource("/v1/carts/{id}").route(web::get().to(carts::get)))
        .service(resource("/v1/orders/{id}").route(web::get().to(orders::get)))
        .service(resource("/v1/orders/{id}/pay").route(web::post().to(orders::pay)))
        .service(resource("/v1/orders/{id}/cancel").route(web::post().to(orders::cancel)))
        .service(resource("/v1/orders/{id}/status").route(web::post().to(orders::set_status)))
        .service(resource("/v1/orders/{id}/fulfilments").route(web::post().to(orders::fulfil)))
        .service(resource("/v1/orders/{id}/returns").route(web::post().to(orders::take_back)))
        .service(resource("/v1/ws/orders/{id}").route(web::get().to(ws::track_order)))
        .service(resource("/v1/skus/{sku}/restock").route(web::post().to(skus::restock)))
        .service(resource("/v1/skus/{sku}/adjust").route(web::post().to(skus::adjust)))
        .service(resource("/v1/credentials/{name}").route(web::delete().to(credentials::revoke)))
        .service(resource("/v1/locations/{loc}").route(web::put().to(locations::put)))
        .service(resource("/v1/skus/{sku}/locations/{loc}/restock").route(web::post().to(skus::restock_at)))
        .service(resource("/v1/skus/{sku}/locations/{loc}/adjust").route(web::post().to(skus::adjust_at)))
        .service(resource("/v1/skus/{sku}/locations/{loc}/count").route(web::post().to(skus::count_at)))
        .service(resource("/v1/skus/{sku}/movements").route(web::get().to(ledger::movements)))
        .service(resource("/v1/transfers/{id}").route(web::get().to(ledger::get)))
        .service(resource("/v1/transfers/{id}/receive").route(web::post().to(ledger::receive)))
        .service(resource("/v1/demo/orders/{id}/pay").route(web::post().to(orders::demo_pay)))
        .service(resource("/orders/{id}").route(web::get().to(pages::order)))
        .service(resource("/ui/{file}").route(web::get().to(pages::asset)))
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
    // The metric handles of this route by method and status, looked up in the registry once
    // instead of on every request (a lookup hashes the labels and allocates them).
    let handles: Arc<RequestMetrics> = Arc::default();
    web::resource(route)
        .default_service(web::to(error::method_not_allowed))
        // Who may call it (`auth::ROUTES`), checked before the handler; refusals are counted.
        .wrap(auth::Admit::new(route))
        .wrap_fn(move |request, service| {
            let started = Instant::now();
            let method = request.method().clone();
            let call = service.call(request);
            let handles = Arc::clone(&handles);
            async move {
                let response = call.await?;
                let status = response.status();
                let key = (method, status.as_u16());
                let (latency, count) = match handles.get(&key) {
                    Some(found) => found.clone(),
                    None => handles
                        .entry(key.clone())
                        .or_insert_with(|| request_metrics(route, &key.0, status))
                        .clone(),
                };
                latency.record(started.elapsed().as_secs_f64());
                count.increment(1);
                Ok(response)
            }
        })
}

/// Request metric handles of one route, by method and status.
type RequestMetrics = dashmap::DashMap<(actix_web::http::Method, u16), (metrics::Histogram, metrics::Counter)>;

/// The latency histogram and request counter of one route, method and status.
fn request_metrics(
    route: &'static str,
    method: &actix_web::http::Method,
    status: StatusCode,
) -> (metrics::Histogram, metrics::Counter) {
    let method = method.as_str().to_owned();
    let status = status.as_str().to_owned();
    (
        metrics::histogram!(names::HTTP_REQUEST_SECONDS, "route" => route, "method" => method.clone(), "status" => status.clone()),
        metrics::counter!(names::HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status),
    )
}

/// Answers (and counts) a request no route matched.
async fn unmatched(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    record_request("unmatched", request.method(), StatusCode::NOT_FOUND, Instant::now());
    Err(ApiError::NotFound)
}

/// Counts one request and its latency.
fn record_request(route: &'static str, method: &actix_web::http::Method, status: StatusCode, started: Instant) {
    let (latency, count) = request_metrics(route, method, status);
    latency.record(started.elapsed().as_secs_f64());
    count.increment(1);
}

/// A JSON response with a status.
pub fn json_response(status: u16, body: Vec<u8>) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body)
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
