//! Request bodies: bounded JSON parsed into typed values. Credentials are read in
//! [`super::auth`], the `Idempotency-Key` header in [`crate::idempotency`].
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

use super::error::ApiError;
use super::AppState;
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
        // Bulk stock sync is the one route whose bodies are large by design.
        let bulk = request.path() == "/v1/stock/batch";
        let (limit_bytes, body_timeout_seconds) =
            request
                .app_data::<web::Data<AppState>>()
                .map_or((16 * 1024, 10), |state| {
                    (
                        if bulk {
                            state.settings.batch.max_body_bytes
                        } else {
                            state.settings.http.max_body_bytes
                        },
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

/// A list's `limit`: `default` when absent, else 1 to `max`; anything else is
/// `400 invalid_query`.
pub fn page_limit(raw: Option<i64>, default: usize, max: usize) -> Result<usize, super::error::ApiError> {
    match raw {
        None => Ok(default.min(max)),
        Some(raw) => usize::try_from(raw)
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| super::error::ApiError::bad_request("invalid_query", format!("limit must be 1 to {max}"))),
    }
}
