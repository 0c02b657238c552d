//! Who is calling: the admin token or a cart token, read from `Authorization: Bearer` (or a
//! WebSocket's `token` query parameter), compared in constant time, and refused with 401 or
//! 403. Cart tokens are minted here too; only the hash of their secret is stored.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::access::{constant_time_eq, Access};
use crate::actors::cart::{CartFailure, GetCart};
use crate::domain::CartId;
use crate::engine::Engine;

/// Idempotency keys sent with the admin token share this scope.
pub const ADMIN_SCOPE: &str = "admin";

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
                        Some(engine) => token_is_valid(engine, cart, hash).await,
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
            Credential::Admin => ADMIN_SCOPE.to_owned(),
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

/// Whether a cart token is valid (for telling 403 from 401 on admin routes).
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
