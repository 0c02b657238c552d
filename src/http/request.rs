//! Request extraction: bounded JSON bodies and credentials. The `Idempotency-Key` header is
//! parsed in [`crate::idempotency`].
//!
//! Everything a client sends is parsed here into typed values or refused with a 4xx and a
//! reason; handlers never see raw input.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::actors::Access;
use crate::domain::CartId;
use crate::metrics as names;

/// A JSON body parsed into `T`, with the canonical form of what was sent (for idempotency
/// fingerprints). An empty body reads as `{}`.
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// The body re-serialised with sorted keys and no whitespace; empty unless the request
    /// carries an `Idempotency-Key` (only a fingerprint needs it).
    pub canonical: Vec<u8>,
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (limit_bytes, body_timeout_seconds) =
            request
                .app_data::<web::Data<AppState>>()
                .map_or((16 * 1024, 10), |state| {
                    (
                        state.settings.http.max_body_bytes,
                        state.settings.http.request_body_timeout_seconds,
                    )
                });
        let content_type_ok = match request.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json")),
        };
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<usize>().ok());
        // Only a keyed request needs the canonical form (for its fingerprint).
        let keyed = request.headers().contains_key("idempotency-key");
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_length.is_some_and(|length| length > limit_bytes) {
                return Err(ApiError::PayloadTooLarge { limit_bytes });
            }
            let read = async {
                let mut body = web::BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|error| {
                        ApiError::bad_request("invalid_body", format!("could not read the body: {error}"))
                    })?;
                    if body.len() + chunk.len() > limit_bytes {
                        return Err(ApiError::PayloadTooLarge { limit_bytes });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            let body = match actix_web::rt::time::timeout(Duration::from_secs(body_timeout_seconds), read).await {
                Ok(body) => body?,
                Err(_) => {
                    metrics::counter!(names::SLOW_CLIENTS_TOTAL, "reason" => "body_timeout").increment(1);
                    return Err(ApiError::RequestTimeout {
                        seconds: body_timeout_seconds,
                    });
                }
            };
            let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                &body
            };
            if !content_type_ok && !body.is_empty() {
                return Err(ApiError::UnsupportedMediaType);
            }
            let json: serde_json::Value = serde_json::from_slice(text).map_err(|error| {
                ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {error}"))
            })?;
            if !json.is_object() {
                return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object"));
            }
            // serde_json's map is ordered by key, so this is a canonical form.
            let canonical = if keyed {
                serde_json::to_vec(&json).map_err(|error| ApiError::Internal(error.into()))?
            } else {
                Vec::new()
            };
            let value =
                T::deserialize(json).map_err(|error| ApiError::bad_request("invalid_json", error.to_string()))?;
            Ok(JsonBody { value, canonical })
        })
    }
}

/// A body that must be empty or `{}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// The admin credential: `Authorization: Bearer <admin token>`. A valid cart token gets
/// `403 forbidden`; anything else `401 unauthorized`.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let credential = credential(request);
        let state = request.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            match credential? {
                Credential::Admin => Ok(Admin),
                Credential::Cart { cart, hash } => {
                    let valid = match state.as_ref().and_then(|state| state.engine.get()) {
                        Some(engine) => super::carts::token_is_valid(engine, cart, hash).await,
                        None => false,
                    };
                    Err(if valid {
                        ApiError::Forbidden
                    } else {
                        ApiError::Unauthorized
                    })
                }
            }
        })
    }
}

/// Who is calling: the admin, or the holder of a cart token (`<cart id>.<secret>`).
#[derive(Debug, Clone, Copy)]
pub enum Credential {
    /// The admin token.
    Admin,
    /// A cart token: the cart it names and the hash of its secret (checked by the cart).
    Cart {
        /// The cart the token names.
        cart: CartId,
        /// SHA-256 of the token's secret.
        hash: [u8; 32],
    },
}

impl Credential {
    /// What the actors check.
    pub fn access(&self) -> Access {
        match self {
            Credential::Admin => Access::Admin,
            Credential::Cart { hash, .. } => Access::Token(*hash),
        }
    }

    /// The scope of idempotency keys sent with this credential.
    pub fn scope(&self) -> String {
        match self {
            Credential::Admin => super::skus::ADMIN_SCOPE.to_owned(),
            Credential::Cart { cart, .. } => format!("cart:{cart}"),
        }
    }
}

impl FromRequest for Credential {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(credential(request))
    }
}

fn credential(request: &HttpRequest) -> Result<Credential, ApiError> {
    let state = request
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
    credential_from(state, bearer_token(request)?)
}

/// The credential a token stands for: the admin token, or a well-formed cart token.
pub fn credential_from(state: &AppState, token: &str) -> Result<Credential, ApiError> {
    if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        return Ok(Credential::Admin);
    }
    parse_cart_token(token).ok_or(ApiError::Unauthorized)
}

/// The credential of a request: the `token` query parameter if given (browsers cannot set
/// headers on a WebSocket), else the `Authorization` header.
pub fn credential_or_query(request: &HttpRequest, query_token: Option<&str>) -> Result<Credential, ApiError> {
    match query_token {
        Some(token) => {
            let state = request
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            credential_from(state, token)
        }
        None => credential(request),
    }
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

fn parse_cart_token(token: &str) -> Option<Credential> {
    let (cart, secret) = token.split_once('.')?;
    let cart = CartId::parse(cart).ok()?;
    let secret = hex::decode(secret)
        .ok()
        .filter(|secret| secret.len() == CART_SECRET_BYTES)?;
    Some(Credential::Cart {
        cart,
        hash: Sha256::digest(&secret).into(),
    })
}

/// The token of an `Authorization: Bearer` header; 401 when missing or malformed.
pub fn bearer_token(request: &HttpRequest) -> Result<&str, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?;
    let text = value.to_str().map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = text.split_once(' ').ok_or(ApiError::Unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(token)
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter().zip(right).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
