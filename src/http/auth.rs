//! Who is calling, and whether the route lets them.
//!
//! Every route declares one [`Rule`] in [`ROUTES`]; [`Admit`] checks it before the handler. The
//! caller is read from `Authorization: Bearer` (on a WebSocket upgrade also from `?ticket=` or
//! `?token=`): the admin token (compared in constant time), a named credential (`sr_...`,
//! looked up by the hash of the token), or a cart token (`<cart id>.<secret>`, whose hash
//! the cart and its orders check). Unknown tokens get `401`, valid ones without the right
//! `403`; another cart's token finds nothing (`404`, from the cart or order).

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::EitherBody;
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{Either, LocalBoxFuture, MapOk, TryFutureExt};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::access::{constant_time_eq, Access, Caller, Refusal, Role, Rule};
use crate::actors::cart::{CartFailure, GetCart};
use crate::domain::CartId;
use crate::engine::Engine;

use Role::{Fulfilment, Inventory, Payments, Read};

/// One route and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct RouteRule {
    /// The HTTP method.
    pub method: &'static str,
    /// The path pattern, exactly as registered.
    pub path: &'static str,
    /// Who may call it.
    pub rule: Rule,
}

const fn route(method: &'static str, path: &'static str, rule: Rule) -> RouteRule {
    RouteRule { method, path, rule }
}

/// Every route of the API and its rule: the one place access is declared. A route missing
/// here answers `405` to every caller, and the access matrix test fails.
pub const ROUTES: &[RouteRule] = &[
    route("GET", "/", Rule::Public),
    route("GET", "/admin", Rule::Public),
    route("GET", "/orders/{id}", Rule::Public),
    route("GET", "/ui/{file}", Rule::Public),
    route("GET", "/health", Rule::Public),
    route("GET", "/ready", Rule::Public),
    route("GET", "/metrics", Rule::Public),
    route("GET", "/openapi.json", Rule::Public),
    route("GET", "/v1/skus", Rule::Public),
    route("GET", "/v1/skus/{sku}", Rule::Public),
    route("PUT", "/v1/skus/{sku}", Rule::Roles(&[Inventory])),
    route("POST", "/v1/skus/{sku}/restock", Rule::Roles(&[Inventory])),
    route("POST", "/v1/skus/{sku}/adjust", Rule::Roles(&[Inventory])),
    route("POST", "/v1/skus/{sku}/reservations", Rule::Roles(&[Inventory])),
    route("GET", "/v1/reservations/{id}", Rule::Roles(&[Inventory, Read])),
    route("DELETE", "/v1/reservations/{id}", Rule::Roles(&[Inventory])),
    route("POST", "/v1/reservations/{id}/commit", Rule::Roles(&[Inventory])),
    route("POST", "/v1/carts", Rule::Public),
    route("GET", "/v1/carts/{id}", Rule::Owner(&[Read])),
    route("PUT", "/v1/carts/{id}/items/{sku}", Rule::Owner(&[])),
    route("DELETE", "/v1/carts/{id}/items/{sku}", Rule::Owner(&[])),
    route("POST", "/v1/carts/{id}/checkout", Rule::Owner(&[])),
    route("GET", "/v1/orders", Rule::Roles(&[Fulfilment, Read])),
    route("GET", "/v1/orders/{id}", Rule::Owner(&[Read, Fulfilment, Payments])),
    route("POST", "/v1/orders/{id}/pay", Rule::Roles(&[Payments])),
    route("POST", "/v1/orders/{id}/cancel", Rule::Owner(&[Fulfilment])),
    route("POST", "/v1/orders/{id}/status", Rule::Roles(&[Fulfilment])),
    route("POST", "/v1/orders/{id}/fulfilments", Rule::Roles(&[Fulfilment])),
    route("POST", "/v1/orders/{id}/returns", Rule::Roles(&[Fulfilment])),
    route("GET", "/v1/ws/orders/{id}", Rule::Owner(&[Read, Fulfilment])),
    route("GET", "/v1/ws/stock", Rule::Public),
    route("POST", "/v1/ws/tickets", Rule::Owner(&[Read, Fulfilment])),
    route("POST", "/v1/credentials", Rule::Admin),
    route("GET", "/v1/credentials", Rule::Admin),
    route("DELETE", "/v1/credentials/{name}", Rule::Admin),
    route("GET", "/v1/locations", Rule::Roles(&[Inventory, Read, Fulfilment])),
    route("PUT", "/v1/locations/{loc}", Rule::Roles(&[Inventory])),
    route(
        "POST",
        "/v1/skus/{sku}/locations/{loc}/restock",
        Rule::Roles(&[Inventory]),
    ),
    route(
        "POST",
        "/v1/skus/{sku}/locations/{loc}/adjust",
        Rule::Roles(&[Inventory]),
    ),
    route(
        "POST",
        "/v1/skus/{sku}/locations/{loc}/count",
        Rule::Roles(&[Inventory]),
    ),
    route("GET", "/v1/skus/{sku}/movements", Rule::Roles(&[Inventory, Read])),
    route("POST", "/v1/transfers", Rule::Roles(&[Inventory])),
    route("POST", "/v1/stock/batch", Rule::Roles(&[Inventory])),
    route("GET", "/v1/transfers/{id}", Rule::Roles(&[Inventory, Read])),
    route("POST", "/v1/transfers/{id}/receive", Rule::Roles(&[Inventory])),
    // Only with `ui.demo_payments` (otherwise 404 for everyone).
    route("POST", "/v1/demo/orders/{id}/pay", Rule::Owner(&[])),
];

/// The rules of the routes under one path, by method.
pub fn rules_of(path: &str) -> Vec<(Method, Rule)> {
    ROUTES
        .iter()
        .filter(|entry| entry.path == path)
        .map(|entry| {
            // expect: the table above names only standard methods.
            let method = Method::from_bytes(entry.method.as_bytes()).expect("a standard method");
            (method, entry.rule)
        })
        .collect()
}

/// What the access check decides, without waiting, about one request.
enum Verdict {
    /// Let it through, as this caller.
    Admit(Caller),
    /// Refuse it with this error.
    Refuse(ApiError),
    /// A cart token on a route it may not use: `403` if the token opens its cart, else `401`
    /// (which needs asking the cart).
    AskCart {
        /// The cart the token names.
        cart: CartId,
        /// The hash of its secret.
        hash: [u8; 32],
    },
}

/// Whether `request`'s caller may call a route with `rule`.
fn verdict(request: &HttpRequest, rule: Rule) -> Verdict {
    let caller = match caller_of(request) {
        Ok(caller) => caller,
        Err(error) => return Verdict::Refuse(error),
    };
    match rule.admits(&caller) {
        Ok(()) => Verdict::Admit(caller),
        Err(Refusal::Unauthenticated) => Verdict::Refuse(ApiError::Unauthorized),
        Err(Refusal::Forbidden) => match caller {
            Caller::Cart { cart, hash } => Verdict::AskCart { cart, hash },
            _ => Verdict::Refuse(ApiError::Forbidden),
        },
    }
}

/// The caller of a request the route admitted ([`Admit`] keeps it in the request; an
/// anonymous caller is not stored, so a request without one is anonymous).
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(Ok(request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)))
    }
}

fn app_state(request: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    request
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))
}

/// Who sent `request`: the `Authorization` header; on a WebSocket upgrade without one, the
/// `ticket` or `token` query parameter (browsers cannot set headers on a WebSocket).
fn caller_of(request: &HttpRequest) -> Result<Caller, ApiError> {
    let state = app_state(request)?;
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| ApiError::Unauthorized)?;
        return resolve(state, bearer(text)?);
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let query = web::Query::<QueryCredential>::from_query(request.query_string())
            .map_err(|error| ApiError::bad_request("invalid_query", error.to_string()))?;
        if let Some(ticket) = &query.ticket {
            let engine = state.engine()?;
            return engine
                .ws_tickets
                .redeem(ticket, super::path_param(request, "id"), engine.clock.now_ms())
                .ok_or(ApiError::Unauthorized);
        }
        if let Some(token) = &query.token {
            return resolve(state, token);
        }
    }
    Ok(Caller::Anonymous)
}

/// Credentials a WebSocket upgrade may carry in its query.
#[derive(Debug, serde::Deserialize)]
struct QueryCredential {
    ticket: Option<String>,
    token: Option<String>,
}

/// The token of an `Authorization: Bearer <token>` value; 401 when malformed.
fn bearer(value: &str) -> Result<&str, ApiError> {
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(token)
}

/// The caller a token stands for: the admin token, a named credential, or a well-formed cart
/// token; `401` for anything else (a revoked credential included).
fn resolve(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        return Ok(Caller::Admin);
    }
    if token.starts_with(crate::credentials::TOKEN_PREFIX) {
        return state.engine()?.credentials.resolve(token).ok_or(ApiError::Unauthorized);
    }
    parse_cart_token(token).ok_or(ApiError::Unauthorized)
}

/// Length of a cart token's secret, in bytes (hex-encoded in the token).
pub const CART_SECRET_BYTES: usize = 32;

/// A new cart token for `cart`: the token to hand out and the hash to store.
pub fn new_cart_token(cart: CartId) -> (String, [u8; 32]) {
    use rand::RngCore;
    let mut secret = [0u8; CART_SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    (format!("{cart}.{}", hex::encode(secret)), Sha256::digest(secret).into())
}

fn parse_cart_token(token: &str) -> Option<Caller> {
    let (cart, secret) = token.split_once('.')?;
    let cart = CartId::parse(cart).ok()?;
    let secret = hex::decode(secret)
        .ok()
        .filter(|secret| secret.len() == CART_SECRET_BYTES)?;
    Some(Caller::Cart {
        cart,
        hash: Sha256::digest(&secret).into(),
    })
}

/// Whether a cart token is valid (for telling 403 from 401 on routes that need a role).
pub async fn token_is_valid(engine: &Engine, cart: CartId, hash: [u8; 32]) -> bool {
    let Ok(Some(mailbox)) = engine.registry.cart(&cart) else {
        return false;
    };
    let Ok(answer) = mailbox.ask(|reply, slot| GetCart {
        access: Access::Token(hash),
        reply,
        slot,
    }) else {
        return false;
    };
    answer
        .await
        .is_ok_and(|acked| !matches!(acked.value, Err(CartFailure::NotFound)))
}

/// The access check of one resource: each request is admitted by the rule its method
/// declares in [`ROUTES`] before it reaches the handler; a method without a rule gets `405`.
pub struct Admit {
    rules: Rc<[(Method, Rule)]>,
}

impl Admit {
    /// The check of the routes under `path`.
    pub fn new(path: &str) -> Self {
        Self {
            rules: rules_of(path).into(),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Admit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = AdmitService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AdmitService {
            service: Rc::new(service),
            rules: Rc::clone(&self.rules),
        }))
    }
}

/// [`Admit`] around one resource.
pub struct AdmitService<S> {
    service: Rc<S>,
    rules: Rc<[(Method, Rule)]>,
}

/// The future of a request through [`Admit`]: the handler's, an immediate refusal, or a
/// refusal that first asks a cart whether its token is valid.
type AdmitFuture<S, B> = Either<
    MapOk<<S as Service<ServiceRequest>>::Future, fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>>,
    Either<
        Ready<Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>,
        LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>,
    >,
>;

impl<S, B> Service<ServiceRequest> for AdmitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = AdmitFuture<S, B>;

    forward_ready!(service);

    /// Decides at once in all but one case, so an admitted request costs no extra allocation
    /// beyond its caller (an anonymous one is not even stored).
    fn call(&self, request: ServiceRequest) -> Self::Future {
        use actix_web::ResponseError;
        let rule = self
            .rules
            .iter()
            .find(|(method, _)| method == request.method())
            .map(|(_, rule)| *rule);
        let verdict = match rule {
            Some(rule) => verdict(request.request(), rule),
            None => Verdict::Refuse(ApiError::MethodNotAllowed),
        };
        match verdict {
            Verdict::Admit(caller) => {
                if caller != Caller::Anonymous {
                    request.extensions_mut().insert(caller);
                }
                let into_left: fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> =
                    ServiceResponse::map_into_left_body;
                Either::Left(self.service.call(request).map_ok(into_left))
            }
            Verdict::Refuse(error) => {
                let response = request.into_response(error.error_response()).map_into_right_body();
                Either::Right(Either::Left(ready(Ok(response))))
            }
            Verdict::AskCart { cart, hash } => {
                let engine = app_state(request.request())
                    .ok()
                    .and_then(|state| state.engine.get().cloned());
                let (http_request, _) = request.into_parts();
                Either::Right(Either::Right(Box::pin(async move {
                    // A cart token that does not open its cart is no credential at all.
                    let valid = match engine {
                        Some(engine) => token_is_valid(&engine, cart, hash).await,
                        None => false,
                    };
                    let error = if valid {
                        ApiError::Forbidden
                    } else {
                        ApiError::Unauthorized
                    };
                    Ok(ServiceResponse::new(http_request, error.error_response()).map_into_right_body())
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_declared_once() {
        let mut seen = std::collections::HashSet::new();
        for entry in ROUTES {
            assert!(
                seen.insert((entry.method, entry.path)),
                "{} {} twice",
                entry.method,
                entry.path
            );
            assert!(!rules_of(entry.path).is_empty());
        }
    }

    #[test]
    fn bearer_values_need_the_scheme_and_a_token() {
        assert_eq!(bearer("Bearer abc").ok(), Some("abc"));
        assert_eq!(bearer("bearer  abc ").ok(), Some("abc"));
        assert!(bearer("Basic abc").is_err());
        assert!(bearer("Bearer ").is_err());
        assert!(bearer("abc").is_err());
    }
}
