//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations and
//! the request and response types, served at `GET /openapi.json`.
//!
//! CI checks the running server against it with schemathesis (`scripts/api-fuzz`): no 5xx,
//! and every answer matches this description.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// An error answer: `{"error": {"code", "message", ...details}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The error object; conflicts add fields such as `available` or `lines`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable reason code, e.g. `insufficient_stock`, `invalid_quantity`, `not_found`.
    code: String,
    /// A sentence for people.
    message: String,
}

// The error answers the handlers share, described once. The variants are never built: they
// only carry the descriptions.

/// Errors of a request with a JSON body.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors {
    /// Invalid input, with a reason code.
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// Body too large.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Body is not JSON.
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// Idempotency-Key reused for another request.
    #[response(status = 422)]
    KeyReused(ErrorBody),
}

/// Errors of credentials.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    /// No or wrong credentials.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Valid credentials without the right to this route (a cart token or a credential
    /// without the route's role).
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// An id in the path that is not an id.
#[derive(IntoResponses)]
#[response(status = 400, description = "Invalid id")]
#[allow(dead_code)]
pub struct InvalidId(ErrorBody);

/// Not found.
#[derive(IntoResponses)]
#[response(status = 404, description = "Not found")]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// Conflict, with a reason code.
#[derive(IntoResponses)]
#[response(status = 409, description = "Conflict, with a reason code")]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// Overloaded, starting or unavailable; retry after `Retry-After`.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Overloaded, starting or unavailable; retry after Retry-After"
)]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

/// This client asked too often; retry after `Retry-After`.
#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "Too many requests from this client; retry after Retry-After"
)]
#[allow(dead_code)]
pub struct TooManyRequests(ErrorBody);

/// A page of SKUs.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SkuList {
    /// The SKUs.
    items: Vec<crate::http::views::SkuBody<'static>>,
    /// The cursor of the next page, or null.
    next: Option<String>,
}

/// Every named credential.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CredentialList {
    /// The credentials, by name (never their tokens).
    items: Vec<crate::http::credentials::CredentialBody>,
}

/// A new cart.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreatedCart {
    /// The cart id.
    cart_id: String,
    /// The cart's bearer token, shown only once.
    cart_token: String,
    /// When the cart's holds lapse unless it is written to (RFC 3339 UTC).
    expires_at: String,
}

/// `{"status": ...}` of `/health` and `/ready`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Status {
    /// `ok`, `ready` or `recovering`.
    status: String,
    /// `/health` with Kafka on: the bridge's backlog, its alert, and dead-lettered events.
    kafka: Option<KafkaHealth>,
}

/// The Kafka bridge as `/health` shows it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KafkaHealth {
    /// Durable events not yet acknowledged by Kafka.
    backlog_events: u64,
    /// Whether the backlog is over `kafka.max_backlog_events`.
    backlog_alert: bool,
    /// Events that went to the dead-letter topic since start.
    dead_lettered_events: u64,
}

/// The bearer schemes: the admin token, named credentials (`sr_...`, with roles), and cart
/// tokens (`<cart id>.<secret>`).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("cart", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("credential", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "stockroom", description = "Real-time stock, reservations, carts, checkout and orders."),
    paths(
        crate::http::health::health,
        crate::http::health::ready,
        crate::http::health::metrics,
        crate::http::skus::list,
        crate::http::skus::get,
        crate::http::skus::upsert,
        crate::http::skus::restock,
        crate::http::skus::adjust,
        crate::http::reservations::create,
        crate::http::reservations::get,
        crate::http::reservations::release,
        crate::http::reservations::commit,
        crate::http::carts::create,
        crate::http::carts::get,
        crate::http::carts::set_line,
        crate::http::carts::remove_line,
        crate::http::carts::checkout,
        crate::http::orders::get,
        crate::http::orders::list,
        crate::http::orders::pay,
        crate::http::orders::demo_pay,
        crate::http::orders::cancel,
        crate::http::orders::set_status,
        crate::http::orders::fulfil,
        crate::http::orders::take_back,
        crate::http::ws::track_order,
        crate::http::ws::stock,
        crate::http::tickets::create,
        crate::http::credentials::create,
        crate::http::credentials::list,
        crate::http::credentials::revoke,
        crate::http::locations::list,
        crate::http::locations::put,
        crate::http::skus::restock_at,
        crate::http::skus::adjust_at,
        crate::http::skus::count_at,
        crate::http::ledger::movements,
        crate::http::ledger::create,
        crate::http::ledger::get,
        crate::http::ledger::receive,
        crate::http::batch::apply,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
