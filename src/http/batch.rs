//! `POST /v1/stock/batch`: bulk stock sync from an ERP or a warehouse system. Every item is
//! applied, or none is; see [`crate::actors::batch`].

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::command::{idempotent, Keyed};
use super::error::ApiError;
use super::ledger::known_location;
use super::request::JsonBody;
use super::{error_parts, AppState};
use crate::access::Caller;
use crate::actors::batch::{BatchItem, BatchOp, BatchOutcome, Failures, ItemFailure};
use crate::domain::sku::ON_HAND_MAX;
use crate::domain::values::QUANTITY_MAX;
use crate::domain::{Name, SkuId};
use crate::idempotency::IdempotencyKey;

/// One item of `POST /v1/stock/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemRequest {
    /// The SKU.
    sku: String,
    /// Where (`default` when absent).
    location: Option<String>,
    /// `set` (a count: `on_hand` becomes `qty`) or `adjust` (`on_hand` changes by `qty`).
    op: String,
    /// The count (`set`, 0 or more) or the signed change (`adjust`, not 0).
    qty: i64,
    /// Apply only if `on_hand` at the location is this now (compare-and-set).
    expected_on_hand: Option<i64>,
}

/// Body of `POST /v1/stock/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// What to change.
    items: Vec<BatchItemRequest>,
    /// Why, in the ledger (`batch sync` when absent).
    reason: Option<String>,
}

/// Parses and checks the items: each names a SKU and a known location once, with a valid
/// op and quantity.
fn parse_items(
    state: &AppState,
    engine: &crate::engine::Engine,
    items: &[BatchItemRequest],
) -> Result<Vec<BatchItem>, ApiError> {
    let max_items = state.settings.batch.max_items;
    if items.len() > max_items {
        return Err(ApiError::TooManyItems { max_items });
    }
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_items",
            "items must list at least one item",
        ));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = |error: ApiError| match error {
            ApiError::BadRequest { code, message } => ApiError::BadRequest {
                code,
                message: format!("items[{index}]: {message}"),
            },
            ApiError::NotFound => {
                ApiError::bad_request("unknown_location", format!("items[{index}]: no such location"))
            }
            other => other,
        };
        let sku = SkuId::parse(&item.sku).map_err(|invalid| at(invalid.into()))?;
        let location = match &item.location {
            Some(raw) => known_location(engine, raw).map_err(at)?,
            None => crate::domain::location::LocationId::default_location(),
        };
        let op = match item.op.as_str() {
            "set" if (0..=ON_HAND_MAX as i64).contains(&item.qty) => BatchOp::Set(item.qty as u64),
            "adjust" if item.qty != 0 && item.qty.unsigned_abs() <= QUANTITY_MAX => BatchOp::Adjust(item.qty),
            "set" | "adjust" => {
                return Err(at(ApiError::bad_request(
                    "invalid_quantity",
                    format!("qty must be 0 to {ON_HAND_MAX} for set, and non-zero, at most {QUANTITY_MAX} either way, for adjust"),
                )))
            }
            _ => return Err(at(ApiError::bad_request("invalid_op", "op must be set or adjust"))),
        };
        let expected_on_hand = match item.expected_on_hand {
            None => None,
            Some(expected) if (0..=ON_HAND_MAX as i64).contains(&expected) => Some(expected as u64),
            Some(_) => {
                return Err(at(ApiError::bad_request(
                    "invalid_expected_on_hand",
                    format!("expected_on_hand must be 0 to {ON_HAND_MAX}"),
                )))
            }
        };
        if !seen.insert((sku.clone(), location.clone())) {
            return Err(at(ApiError::bad_request(
                "duplicate_item",
                format!("{sku} at {location} is listed twice; give each SKU and location once"),
            )));
        }
        parsed.push(BatchItem {
            index,
            sku,
            location,
            op,
            expected_on_hand,
        });
    }
    Ok(parsed)
}

/// The items of a refused batch, as listed in its error.
fn failures_json(failures: &Failures) -> Vec<Value> {
    failures
        .iter()
        .map(|(item, failure)| {
            let mut entry = json!({
                "index": item.index,
                "sku": item.sku.as_str(),
                "location": item.location.as_str(),
            });
            let fields = entry.as_object_mut().expect("an object");
            match failure {
                ItemFailure::Expectation { expected, on_hand } => {
                    fields.insert("expected_on_hand".to_owned(), json!(expected));
                    fields.insert("on_hand".to_owned(), json!(on_hand));
                }
                ItemFailure::UnknownSku => {
                    fields.insert("code".to_owned(), json!("not_found"));
                    fields.insert("message".to_owned(), json!("no such SKU"));
                }
                ItemFailure::Refused(rejection) => {
                    let error = ApiError::from(rejection.clone());
                    let body = error.body();
                    if let Some(object) = body["error"].as_object() {
                        fields.extend(object.clone());
                    }
                }
            }
            entry
        })
        .collect()
}

/// The answer to a batch: `200` with every item's counters after it, `409
/// expectation_failed` or `422 invalid_items` listing the items, nothing applied.
pub fn render_batch(outcome: &BatchOutcome) -> (u16, Vec<u8>) {
    let refused = |code: &'static str, message: &str, failures: &Failures| {
        let mut details = Map::new();
        details.insert("items".to_owned(), Value::Array(failures_json(failures)));
        (code, message.to_owned(), details)
    };
    match outcome {
        BatchOutcome::Applied(items) => {
            let items: Vec<Value> = items
                .iter()
                .map(|(item, [on_hand, reserved, committed, available])| {
                    json!({
                        "index": item.index,
                        "sku": item.sku.as_str(),
                        "location": item.location.as_str(),
                        "on_hand": on_hand,
                        "reserved": reserved,
                        "committed": committed,
                        "available": available,
                    })
                })
                .collect();
            let body = json!({ "applied": items.len(), "items": items });
            (200, serde_json::to_vec(&body).unwrap_or_default())
        }
        BatchOutcome::ExpectationFailed(failures) => {
            let (code, message, details) = refused(
                "expectation_failed",
                "on_hand differs from expected_on_hand for the items listed; nothing was applied",
                failures,
            );
            error_parts(&ApiError::Conflict { code, message, details })
        }
        BatchOutcome::Rejected(failures) => {
            let (code, message, details) = refused(
                "invalid_items",
                "the items listed cannot be applied; nothing was applied",
                failures,
            );
            error_parts(&ApiError::Unprocessable { code, message, details })
        }
        BatchOutcome::Overloaded => error_parts(&ApiError::Overloaded),
    }
}

/// `POST /v1/stock/batch` (admin, inventory): sets or adjusts stock of many SKUs and
/// locations at once, all or nothing, each item optionally compared first.
#[utoipa::path(post, path = "/v1/stock/batch", tag = "locations", operation_id = "stock_batch", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = BatchRequest,
    responses((status = 200, description = "Every item applied; the counters at each item's location after it"), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::Conflict, (status = 413, description = "Too many items, or too large a body", body = crate::http::openapi::ErrorBody), (status = 422, description = "Items that cannot be applied (unknown SKU, a count below what is held); nothing applied", body = crate::http::openapi::ErrorBody), crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn apply(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let items = parse_items(&state, engine, &body.value.items)?;
    let reason = Name::parse(
        body.value.reason.as_deref().unwrap_or("batch sync"),
        "reason",
        "invalid_reason",
    )?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    let by = caller.by();
    let runner = std::sync::Arc::clone(&engine.batch);
    let now_ms = engine.clock.now_ms();
    idempotent(engine, keyed, render_batch, |draft| async move {
        // Its own task: a client that goes away does not leave the SKUs waiting.
        let task = actix_web::rt::spawn(crate::actors::batch::run(runner, items, reason, by, now_ms, draft));
        let (outcome, ticket) = task.await.map_err(|_| ApiError::Unavailable)?;
        let answer = match outcome {
            BatchOutcome::Overloaded => Err(ApiError::Overloaded),
            outcome => Ok(outcome),
        };
        Ok((answer, ticket))
    })
    .await
}
