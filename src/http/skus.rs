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
    let mailbox = engine.registry.sku_or_start(&sku);
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(
        engine,
        &sku,
        &mailbox,
        SkuCommand::Upsert { product, on_hand },
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
}

/// Most ids one `?ids=` list may name.
const LIST_IDS_MAX: usize = 100;
/// Default and largest page size of `?after=&limit=`.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;

/// `GET /v1/skus?ids=a,b,c` or `?after=<sku>&limit=<n>`: several SKUs at once, as durably
/// stored. Unknown ids are left out of `items`.
#[utoipa::path(get, path = "/v1/skus", tag = "skus", operation_id = "skus_list",
    params(("ids" = Option<String>, Query, description = "Comma-separated SKU ids (at most 100)"), ("after" = Option<String>, Query, description = "Page after this SKU id"), ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000")),
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
    let read = |key: &[u8], bytes: &[u8]| -> Result<Option<SkuView>, ApiError> {
        let Some(sku) = keys::sku_of(key) else { return Ok(None) };
        let row: SkuRow = engine.store.decode(key, bytes)?;
        Ok(Some(SkuView {
            sku,
            available: row.on_hand.saturating_sub(row.reserved),
            product: row.product,
            on_hand: row.on_hand,
            reserved: row.reserved,
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
            let limit = match query.limit {
                None => LIST_LIMIT_DEFAULT,
                Some(limit) => usize::try_from(limit)
                    .ok()
                    .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
                    .ok_or_else(|| {
                        ApiError::bad_request("invalid_query", format!("limit must be 1 to {LIST_LIMIT_MAX}"))
                    })?,
            };
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

/// Body of `POST /v1/skus/{sku}/restock`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    qty: i64,
}

/// `POST /v1/skus/{sku}/restock`: adds received units.
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
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let qty = Quantity::parse(body.value.qty, engine.limits.qty_max)?;
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(
        engine,
        &sku,
        &mailbox,
        SkuCommand::Restock { qty },
        keyed,
        caller.by(),
        render_sku,
    )
    .await
}

/// Body of `POST /v1/skus/{sku}/adjust`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    delta: i64,
    reason: String,
}

/// `POST /v1/skus/{sku}/adjust`: corrects `on_hand`; may not take `available` below zero.
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
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let delta = StockDelta::parse(body.value.delta)?;
    let reason = Name::parse(&body.value.reason, "reason", "invalid_reason")?;
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(
        engine,
        &sku,
        &mailbox,
        SkuCommand::Adjust { delta, reason },
        keyed,
        caller.by(),
        render_sku,
    )
    .await
}
