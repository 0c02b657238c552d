//! Catalog and stock routes: `/v1/skus...`.

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::command::{ask_durable, execute_sku_command, read_durable, Keyed};
use super::error::ApiError;
use super::request::JsonBody;
use super::views::{render_sku, render_upsert, to_json, SkuBody};
use super::{path_param, AppState};
use crate::access::Caller;
use crate::actors::sku::GetSku;
use crate::config::CatalogSettings;
use crate::domain::location::LocationId;
use crate::domain::sku::{Product, SkuCommand, SkuView, ON_HAND_MAX};
use crate::domain::values::parse_price_minor;
use crate::domain::{Currency, Name, Quantity, SkuId, StockDelta};
use crate::idempotency::IdempotencyKey;
use crate::persistence::keys;
use crate::persistence::rows::SkuRow;

/// Body of `PUT /v1/skus/{sku}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertSkuRequest {
    name: String,
    price_minor: i64,
    currency: String,
    #[serde(default)]
    on_hand: Option<i64>,
    /// At or below this many available units a location is low: `stockroom.stock.low` is
    /// published when one crosses it (0: never).
    #[serde(default)]
    low_stock_threshold: Option<i64>,
    /// Holds and sales may take `available` down to minus this (0: none); absent keeps it.
    #[serde(default)]
    backorder_limit: Option<i64>,
    /// When a preorder becomes available (RFC 3339), or `null` to clear it; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    available_from: Option<serde_json::Value>,
}

/// A field that is present, `null` included (absent is `None`, through `default`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// `PUT /v1/skus/{sku}`: creates a SKU (201) or updates its name and price (200).
#[utoipa::path(put, path = "/v1/skus/{sku}", tag = "skus", operation_id = "skus_upsert", params(("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = UpsertSkuRequest,
    responses((status = 201, description = "Created", body = crate::http::views::SkuBody), (status = 200, description = "Updated", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn upsert(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<UpsertSkuRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let fields = &body.value;
    let product = Product {
        name: Name::parse(&fields.name, "name", "invalid_name")?,
        price_minor: parse_price_minor(fields.price_minor)?,
        currency: Currency::parse(&fields.currency)?,
    };
    let on_hand = fields
        .on_hand
        .map(|raw| {
            u64::try_from(raw)
                .ok()
                .filter(|on_hand| *on_hand <= ON_HAND_MAX)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_on_hand",
                        format!("on_hand must be an integer from 0 to {ON_HAND_MAX}"),
                    )
                })
        })
        .transpose()?;
    let low_stock_threshold = fields
        .low_stock_threshold
        .map(|raw| {
            u64::try_from(raw)
                .ok()
                .filter(|threshold| *threshold <= ON_HAND_MAX)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_low_stock_threshold",
                        format!("low_stock_threshold must be an integer from 0 to {ON_HAND_MAX}"),
                    )
                })
        })
        .transpose()?;
    let backorder_limit = fields
        .backorder_limit
        .map(|raw| {
            u64::try_from(raw)
                .ok()
                .filter(|limit| *limit <= ON_HAND_MAX)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_backorder_limit",
                        format!("backorder_limit must be an integer from 0 to {ON_HAND_MAX}"),
                    )
                })
        })
        .transpose()?;
    let available_from_ms = match &fields.available_from {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(raw)) => {
            let at = humantime::parse_rfc3339(raw).map_err(|_| {
                ApiError::bad_request(
                    "invalid_available_from",
                    "available_from must be an RFC 3339 time or null",
                )
            })?;
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
            Some(Some(ms))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_available_from",
                "available_from must be an RFC 3339 time or null",
            ))
        }
    };
    let mailbox = engine.registry.sku_or_start(&sku);
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(
        engine,
        &sku,
        &mailbox,
        SkuCommand::Upsert {
            product,
            on_hand,
            low_stock_threshold,
            backorder_limit,
            available_from_ms,
        },
        keyed,
        caller.by(),
        render_upsert,
    )
    .await
}

/// `GET /v1/skus/{sku}`: the SKU's counters.
#[utoipa::path(get, path = "/v1/skus/{sku}", tag = "skus", operation_id = "skus_get", params(("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'")),
    responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 200, description = "The SKU, with its ETag", body = crate::http::views::SkuBody), (status = 304, description = "Unchanged since the ETag in If-None-Match"), (status = 400, description = "Invalid SKU id", body = crate::http::openapi::ErrorBody), crate::http::openapi::NotFound, crate::http::openapi::Unavailable))]
pub async fn get(state: web::Data<AppState>, caller: Caller, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let view = ask_durable(engine, &mailbox, |reply, slot| GetSku { reply, slot })
        .await?
        .ok_or(ApiError::NotFound)?;
    let catalog = &state.settings.catalog;
    Ok(cacheable(
        &request,
        &catalog.cache_control,
        super::views::to_json(&shown(&caller, catalog, &view)),
    ))
}

/// The SKU as `caller` may see it: every counter for staff (the admin and every named
/// credential, so `inventory` and `read` among them), what `catalog.public_stock` allows for
/// anyone else.
fn shown<'a>(caller: &Caller, catalog: &CatalogSettings, view: &'a SkuView) -> SkuBody<'a> {
    if caller.is_staff() {
        SkuBody::from(view)
    } else {
        SkuBody::public(view, catalog.public_stock, catalog.low_stock_level)
    }
}

/// A `200` JSON answer with an `ETag` (a digest of the body) and `Cache-Control`; `304` with
/// no body when the request's `If-None-Match` names that `ETag`, so a client or a CDN keeps
/// what it has until the SKU changes.
fn cacheable(request: &HttpRequest, cache_control: &str, body: Vec<u8>) -> HttpResponse {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    let unchanged = request
        .headers()
        .get(actix_web::http::header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((actix_web::http::header::ETAG, etag))
        .insert_header((actix_web::http::header::CACHE_CONTROL, cache_control.to_owned()))
        // Staff see more counters than the public: a cache keeps the two apart.
        .insert_header((actix_web::http::header::VARY, "Authorization"));
    if unchanged {
        response.finish()
    } else {
        response.content_type("application/json").body(body)
    }
}

/// Query of `GET /v1/skus`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    ids: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
    locations: Option<String>,
}

/// Most ids one `?ids=` list may name.
const LIST_IDS_MAX: usize = 100;
/// Default and largest page size of `?after=&limit=`.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;

/// `GET /v1/skus?ids=a,b,c` or `?after=<sku>&limit=<n>`: several SKUs at once, as durably
/// stored. Unknown ids are left out of `items`.
#[utoipa::path(get, path = "/v1/skus", tag = "skus", operation_id = "skus_list",
    params(("ids" = Option<String>, Query, description = "Comma-separated SKU ids (at most 100)"), ("after" = Option<String>, Query, description = "Page after this SKU id"), ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000"), ("locations" = Option<String>, Query, description = "Comma-separated location ids: each SKU shows only these locations, and its counters are their sums")),
    responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 200, description = "SKUs and the next page's cursor", body = crate::http::openapi::SkuList), (status = 400, description = "Invalid query", body = crate::http::openapi::ErrorBody), crate::http::openapi::Unavailable))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let query = query.into_inner();
    if query.ids.is_some() && (query.after.is_some() || query.limit.is_some()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "use either ids or after/limit, not both",
        ));
    }
    let at = query.locations.as_deref().map(parse_locations).transpose()?;
    let read = |key: &[u8], bytes: &[u8]| -> Result<Option<SkuView>, ApiError> {
        let Some(sku) = keys::sku_of(key) else { return Ok(None) };
        let row: SkuRow = engine.store.decode_versioned(key, bytes)?;
        let view = SkuView::from_snapshot(sku, row);
        Ok(Some(match &at {
            Some(ids) => view.at_locations(ids),
            None => view,
        }))
    };
    let (views, next) = read_durable(engine, || {
        let mut views = Vec::new();
        let mut next = None;
        if let Some(ids) = query.ids {
            let ids: Vec<&str> = ids.split(',').filter(|id| !id.is_empty()).collect();
            if ids.is_empty() || ids.len() > LIST_IDS_MAX {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("ids must name 1 to {LIST_IDS_MAX} SKUs"),
                ));
            }
            let mut seen = HashSet::new();
            for id in ids {
                let sku = SkuId::parse(id)?;
                if !seen.insert(sku.clone()) {
                    continue;
                }
                let key = keys::sku(&sku);
                let stored = engine.store.get(&key)?;
                if let Some(bytes) = stored {
                    views.extend(read(&key, &bytes)?);
                }
            }
        } else {
            let limit = super::request::page_limit(query.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
            let after = query
                .after
                .as_deref()
                .map(SkuId::parse)
                .transpose()?
                .map(|sku| keys::sku(&sku));
            let mut rows = engine.store.scan(&[keys::SKU], after.as_deref(), limit + 1)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            for (key, bytes) in &rows {
                views.extend(read(key, bytes)?);
            }
            if more {
                next = views.last().map(|view| view.sku.to_string());
            }
        }
        Ok((views, next))
    })
    .await?;
    let catalog = &state.settings.catalog;
    let items: Vec<SkuBody<'_>> = views.iter().map(|view| shown(&caller, catalog, view)).collect();
    let body = serde_json::json!({ "items": items, "next": next });
    Ok(HttpResponse::Ok().content_type("application/json").body(to_json(&body)))
}

/// Most locations one `?locations=` list may name.
const LIST_LOCATIONS_MAX: usize = 50;

/// The location ids of a `?locations=a,b` list: each valid, 1 to [`LIST_LOCATIONS_MAX`] of
/// them, repeats dropped.
fn parse_locations(raw: &str) -> Result<Vec<LocationId>, ApiError> {
    let mut ids: Vec<LocationId> = Vec::new();
    for id in raw.split(',').filter(|id| !id.is_empty()) {
        let id = LocationId::parse(id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() || ids.len() > LIST_LOCATIONS_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("locations must name 1 to {LIST_LOCATIONS_MAX} locations"),
        ));
    }
    Ok(ids)
}

/// The location a stock write names: `{loc}` in the path, else `default`. One that does not
/// exist is `404`.
fn location_of(engine: &crate::engine::Engine, request: &HttpRequest) -> Result<LocationId, ApiError> {
    match request.match_info().get("loc") {
        None => Ok(LocationId::default_location()),
        Some(raw) => {
            let id = LocationId::parse(raw)?;
            if engine.locations.get(&id).is_none() {
                return Err(ApiError::NotFound);
            }
            Ok(id)
        }
    }
}

/// An optional `reason`.
fn optional_reason(raw: Option<&str>) -> Result<Option<Name>, ApiError> {
    Ok(raw
        .map(|reason| Name::parse(reason, "reason", "invalid_reason"))
        .transpose()?)
}

/// Runs a stock write on an existing SKU and answers with the SKU body.
async fn stock_write(
    engine: &crate::engine::Engine,
    caller: &Caller,
    request: &HttpRequest,
    key: &IdempotencyKey,
    canonical: &[u8],
    command: SkuCommand,
) -> Result<HttpResponse, ApiError> {
    let sku = SkuId::parse(path_param(request, "sku"))?;
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let keyed = Keyed::new(key, caller, request, canonical);
    execute_sku_command(engine, &sku, &mailbox, command, keyed, caller.by(), render_sku).await
}

/// Body of `POST /v1/skus/{sku}/restock`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    qty: i64,
    /// Why (a delivery note, a supplier): kept in the ledger.
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/skus/{sku}/restock`: adds received units at `default`.
#[utoipa::path(post, path = "/v1/skus/{sku}/restock", tag = "skus", operation_id = "skus_restock", params(("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = RestockRequest,
    responses((status = 200, description = "Restocked", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn restock(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<RestockRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let qty = Quantity::parse(body.value.qty, engine.limits.qty_max)?;
    let reason = optional_reason(body.value.reason.as_deref())?;
    let location = location_of(engine, &request)?;
    let command = SkuCommand::Restock { location, qty, reason };
    stock_write(engine, &caller, &request, &key, &body.canonical, command).await
}

/// `POST /v1/skus/{sku}/locations/{loc}/restock`: adds received units at a location.
#[utoipa::path(post, path = "/v1/skus/{sku}/locations/{loc}/restock", tag = "locations", operation_id = "skus_location_restock", params(("sku" = String, Path, description = "SKU id"), ("loc" = String, Path, description = "Location id"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = RestockRequest,
    responses((status = 200, description = "Restocked", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn restock_at(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<RestockRequest>,
) -> Result<HttpResponse, ApiError> {
    restock(caller, state, request, key, body).await
}

/// Body of `POST /v1/skus/{sku}/adjust`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    delta: i64,
    reason: String,
}

/// `POST /v1/skus/{sku}/adjust`: corrects `on_hand` at `default`; may not take `available`
/// there below zero.
#[utoipa::path(post, path = "/v1/skus/{sku}/adjust", tag = "skus", operation_id = "skus_adjust", params(("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = AdjustRequest,
    responses((status = 200, description = "Adjusted", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn adjust(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<AdjustRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let delta = StockDelta::parse(body.value.delta)?;
    let reason = Name::parse(&body.value.reason, "reason", "invalid_reason")?;
    let location = location_of(engine, &request)?;
    let command = SkuCommand::Adjust {
        location,
        delta,
        reason,
    };
    stock_write(engine, &caller, &request, &key, &body.canonical, command).await
}

/// `POST /v1/skus/{sku}/locations/{loc}/adjust`: corrects `on_hand` at a location.
#[utoipa::path(post, path = "/v1/skus/{sku}/locations/{loc}/adjust", tag = "locations", operation_id = "skus_location_adjust", params(("sku" = String, Path, description = "SKU id"), ("loc" = String, Path, description = "Location id"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = AdjustRequest,
    responses((status = 200, description = "Adjusted", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn adjust_at(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<AdjustRequest>,
) -> Result<HttpResponse, ApiError> {
    adjust(caller, state, request, key, body).await
}

/// Body of `POST /v1/skus/{sku}/locations/{loc}/count`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    /// Units counted on the shelf.
    on_hand: i64,
    /// Why (a stocktake's name).
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/skus/{sku}/locations/{loc}/count`: a physical count sets `on_hand` at a
/// location; a count below the units held or sold there is `409 insufficient_stock`.
#[utoipa::path(post, path = "/v1/skus/{sku}/locations/{loc}/count", tag = "locations", operation_id = "skus_location_count", params(("sku" = String, Path, description = "SKU id"), ("loc" = String, Path, description = "Location id"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = CountRequest,
    responses((status = 200, description = "Counted", body = crate::http::views::SkuBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn count_at(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<CountRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let on_hand = u64::try_from(body.value.on_hand)
        .ok()
        .filter(|on_hand| *on_hand <= ON_HAND_MAX)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_on_hand",
                format!("on_hand must be an integer from 0 to {ON_HAND_MAX}"),
            )
        })?;
    let reason = optional_reason(body.value.reason.as_deref())?;
    let location = location_of(engine, &request)?;
    let command = SkuCommand::Count {
        location,
        on_hand,
        reason,
    };
    stock_write(engine, &caller, &request, &key, &body.canonical, command).await
}
