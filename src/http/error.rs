//! `ApiError`: every error the HTTP API answers, with its status and stable code.
//!
//! Bodies are `{"error": {"code", "message", ...details}}`. A 5xx body never carries
//! internals: the cause goes to the log, the client gets a generic sentence.
//!
//! Every code with its status is listed in the README (section "API", the error table), the
//! one table of them; `tests/api/bad_input.rs` checks the codes clients meet most.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::actors::cart::CartFailure;
use crate::actors::order::OrderFailure;
use crate::actors::{AskError, SkuFailure};
use crate::domain::cart::CartRejection;
use crate::domain::order::OrderRejection;
use crate::domain::sku::SkuRejection;
use crate::domain::InvalidValue;

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; `code` says which part.
    #[error("{message}")]
    BadRequest {
        /// Stable reason code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 401: missing, malformed or unknown credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// 403: valid credentials without the right to this route.
    #[error("these credentials may not use this route")]
    Forbidden,
    /// 404: no such resource (or not visible to these credentials).
    #[error("not found")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Stable reason code.
        code: &'static str,
        /// What conflicted.
        message: String,
        /// Extra fields merged into the error object (such as `available`).
        details: Map<String, Value>,
    },
    /// 408: the body did not arrive within the configured time (a client trickling it).
    #[error("the request body did not arrive within {seconds} s")]
    RequestTimeout {
        /// The limit.
        seconds: u64,
    },
    /// 413: the body exceeds the configured limit.
    #[error("request body exceeds {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// 413: a batch lists more items than configured.
    #[error("a batch may list at most {max_items} items")]
    TooManyItems {
        /// The limit.
        max_items: usize,
    },
    /// 422: the request is well-formed, but some of what it names cannot be done.
    #[error("{message}")]
    Unprocessable {
        /// Stable reason code.
        code: &'static str,
        /// What was wrong.
        message: String,
        /// Extra fields merged into the error object.
        details: Map<String, Value>,
    },
    /// 415: the body is not JSON.
    #[error("request bodies must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 422: an idempotency key was reused for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    /// 429: the resource has the maximum of live connections.
    #[error("too many live connections to this resource; retry later")]
    TooManyConnections,
    /// 429: this client asked too often; `Retry-After` says when it may again.
    #[error("too many requests from this client; retry after {retry_after_seconds} s")]
    TooManyRequests {
        /// Seconds until the next request is taken.
        retry_after_seconds: u64,
    },
    /// 503: a bounded queue is full; retry later.
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    /// 503: recovery has not finished.
    #[error("the server is starting; retry shortly")]
    NotReady,
    /// 503: storage failed and the server is stopping; nothing was acknowledged.
    #[error("the server is unavailable; the request was not applied")]
    Unavailable,
    /// 500: making the change durable failed midway (a sync may fail after the data reached
    /// the disk), so whether it was made is unknown. Never retryable as such: the server is
    /// stopping, and only a retry with the same `Idempotency-Key` is safe after its restart.
    #[error("the store failed while making this change durable, so it may or may not have been made; the server is stopping. After it restarts, retry only with the same Idempotency-Key, or read the state first")]
    OutcomeUnknown,
    /// 500: a bug; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 with a reason code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 409 without details.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::TooManyItems { .. } => "too_many_items",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::TooManyConnections => "too_many_connections",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Overloaded => "overloaded",
            ApiError::NotReady => "not_ready",
            ApiError::Unavailable => "unavailable",
            ApiError::OutcomeUnknown => "outcome_unknown",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON body of the error.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".to_owned(), json!(self.code()));
        error.insert("message".to_owned(), json!(self.to_string()));
        if let ApiError::Conflict { details, .. } | ApiError::Unprocessable { details, .. } = self {
            error.extend(details.clone());
        }
        if let ApiError::TooManyItems { max_items } = self {
            error.insert("max_items".to_owned(), json!(max_items));
        }
        if let ApiError::PayloadTooLarge { limit_bytes } = self {
            error.insert("limit_bytes".to_owned(), json!(limit_bytes));
        }
        json!({ "error": error })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } | ApiError::TooManyItems { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyConnections | ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::NotReady | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OutcomeUnknown | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RequestTimeout { .. } | ApiError::OutcomeUnknown = self {
            // The rest of a trickled body is not worth reading; a stopping server takes no
            // more requests on this connection.
            response.force_close();
        }
        match self {
            ApiError::Overloaded | ApiError::NotReady | ApiError::Unavailable | ApiError::TooManyConnections => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::TooManyRequests { retry_after_seconds } => {
                response.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        response.json(self.body())
    }
}

impl From<InvalidValue> for ApiError {
    fn from(invalid: InvalidValue) -> Self {
        ApiError::BadRequest {
            code: invalid.code,
            message: invalid.message,
        }
    }
}

impl From<AskError> for ApiError {
    fn from(error: AskError) -> Self {
        match error {
            AskError::Overloaded => ApiError::Overloaded,
            AskError::NoAnswer => {
                ApiError::Internal(anyhow::anyhow!("an actor did not answer (it panicked or stopped)"))
            }
        }
    }
}

impl From<SkuRejection> for ApiError {
    fn from(rejection: SkuRejection) -> Self {
        let message = rejection.to_string();
        let (code, details) = match rejection {
            SkuRejection::SkuNotFound | SkuRejection::ReservationNotFound | SkuRejection::TransferNotFound => {
                return ApiError::NotFound
            }
            SkuRejection::LocationUnavailable { location } => {
                ("location_inactive", json!({ "location": location.as_str() }))
            }
            SkuRejection::InsufficientStock { available } => ("insufficient_stock", json!({ "available": available })),
            SkuRejection::OnHandNotUpdatable { on_hand } => ("on_hand_not_updatable", json!({ "on_hand": on_hand })),
            SkuRejection::StockLimitExceeded => ("stock_limit_exceeded", json!({})),
            SkuRejection::HoldLimitReached { holds_max } => {
                metrics::counter!(crate::metrics::LIMIT_REFUSALS_TOTAL, "limit" => "holds_per_sku").increment(1);
                ("hold_limit_reached", json!({ "holds_max": holds_max }))
            }
            SkuRejection::ReservationCommitted => ("reservation_committed", json!({})),
            SkuRejection::ReservationReleased => ("reservation_released", json!({})),
            SkuRejection::ReservationExpired => ("reservation_expired", json!({})),
            SkuRejection::ReservationNotCommitted => ("reservation_not_committed", json!({})),
            SkuRejection::Backordered { location, waiting } => (
                "backordered",
                json!({ "location": location.as_str(), "waiting": waiting }),
            ),
            SkuRejection::NotCommittedHere { location, committed } => (
                "not_committed_here",
                json!({ "location": location.as_str(), "committed": committed }),
            ),
        };
        let details = match details {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        ApiError::Conflict { code, message, details }
    }
}

impl From<CartFailure> for ApiError {
    fn from(failure: CartFailure) -> Self {
        match failure {
            CartFailure::NotFound => ApiError::NotFound,
            CartFailure::Stock(rejection) => rejection.into(),
            CartFailure::Overloaded => ApiError::Overloaded,
            CartFailure::CheckoutFailed(failed) => {
                let lines: Vec<serde_json::Value> = failed
                    .iter()
                    .map(|(sku, reason)| json!({ "sku": sku.as_str(), "reason": reason.as_str() }))
                    .collect();
                let mut details = Map::new();
                details.insert("lines".to_owned(), json!(lines));
                ApiError::Conflict {
                    code: "insufficient_stock",
                    message: "some lines could not be committed; nothing was ordered (the cart lists them)".to_owned(),
                    details,
                }
            }
            CartFailure::Rejected(rejection) => {
                let code = match rejection {
                    CartRejection::LineNotFound => return ApiError::NotFound,
                    CartRejection::Closed(_) => "cart_closed",
                    CartRejection::Empty => "cart_empty",
                    CartRejection::TooManyLines(_) => {
                        metrics::counter!(crate::metrics::LIMIT_REFUSALS_TOTAL, "limit" => "cart_lines").increment(1);
                        "too_many_lines"
                    }
                    CartRejection::CurrencyMismatch { .. } => "currency_mismatch",
                    CartRejection::TotalTooLarge => "total_too_large",
                };
                ApiError::conflict(code, rejection.to_string())
            }
        }
    }
}

impl From<OrderFailure> for ApiError {
    fn from(failure: OrderFailure) -> Self {
        match failure {
            OrderFailure::NotFound => ApiError::NotFound,
            OrderFailure::Overloaded => ApiError::Overloaded,
            OrderFailure::Forbidden => ApiError::Forbidden,
            OrderFailure::Rejected(rejection) => match rejection {
                OrderRejection::InvalidTransition { from, to } => {
                    let mut details = Map::new();
                    details.insert("from".to_owned(), json!(from.as_str()));
                    details.insert("to".to_owned(), json!(to.as_str()));
                    ApiError::Conflict {
                        code: "invalid_transition",
                        message: rejection.to_string(),
                        details,
                    }
                }
                OrderRejection::TotalTooLarge => ApiError::conflict("total_too_large", rejection.to_string()),
                OrderRejection::NoSuchLine { ref sku } => {
                    conflict_with("not_in_order", &rejection, json!({ "sku": sku.as_str() }))
                }
                OrderRejection::ExceedsOrdered { ref sku, remaining } => conflict_with(
                    "exceeds_ordered",
                    &rejection,
                    json!({ "sku": sku.as_str(), "remaining": remaining }),
                ),
                OrderRejection::NotCommittedHere {
                    ref sku,
                    ref location,
                    committed,
                } => conflict_with(
                    "not_committed_here",
                    &rejection,
                    json!({ "sku": sku.as_str(), "location": location.as_str(), "committed": committed }),
                ),
                OrderRejection::Backordered {
                    ref sku,
                    ref location,
                    waiting,
                } => conflict_with(
                    "backordered",
                    &rejection,
                    json!({ "sku": sku.as_str(), "location": location.as_str(), "waiting": waiting }),
                ),
                OrderRejection::ExceedsShipped { ref sku, returnable } => conflict_with(
                    "exceeds_shipped",
                    &rejection,
                    json!({ "sku": sku.as_str(), "returnable": returnable }),
                ),
            },
        }
    }
}

/// A `409` with `code`, the rejection's sentence, and `details` (a JSON object).
fn conflict_with(code: &'static str, rejection: &OrderRejection, details: Value) -> ApiError {
    ApiError::Conflict {
        code,
        message: rejection.to_string(),
        details: match details {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    }
}

/// A store that cannot be read stops the server (the store view reports every failed read
/// to the writer's fatal path); the request changed nothing, so it may be retried elsewhere
/// or later.
impl From<crate::persistence::StoreError> for ApiError {
    fn from(error: crate::persistence::StoreError) -> Self {
        tracing::error!(error = %error, "a request could not read the store");
        ApiError::Unavailable
    }
}

impl From<SkuFailure> for ApiError {
    fn from(failure: SkuFailure) -> Self {
        match failure {
            SkuFailure::Overloaded => ApiError::Overloaded,
            // Nothing was changed, and the server is stopping (a failed read is fatal).
            SkuFailure::Store(_) => ApiError::Unavailable,
        }
    }
}

/// Answers a path that exists with a method it does not support.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
