//! Reservation routes: `/v1/skus/{sku}/reservations` and `/v1/reservations/{id}...`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::command::{ask_durable, execute_sku_command, read_durable, Keyed};
use super::error::ApiError;
use super::request::{JsonBody, NoFields};
use super::views::{render_reservation, render_reserved, ReservationBody};
use super::{path_param, AppState};
use crate::access::Caller;
use crate::actors::registry::Holder;
use crate::actors::sku::GetReservation;
use crate::domain::location::LocationId;
use crate::domain::sku::{Placement, Reservation, SkuCommand};
use crate::domain::{Quantity, ReservationId, SkuId};
use crate::engine::Engine;
use crate::idempotency::IdempotencyKey;
use crate::persistence::keys;

/// Body of `POST /v1/skus/{sku}/reservations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    qty: i64,
    #[serde(default)]
    ttl_seconds: Option<i64>,
    /// Hold the units at exactly this location.
    #[serde(default)]
    location: Option<String>,
    /// Hold the units at these locations only, the first that has them preferred (split
    /// across them in this order when `[allocation] allow_split`).
    #[serde(default)]
    locations: Option<Vec<String>>,
}

/// Most locations a preference list may name.
pub const PREFERENCES_MAX: usize = 50;

/// Where a hold may take its units from: `location`, or `locations`, or (neither) the
/// configured strategy. Both is `400`; a location that does not exist is `404`.
pub fn placement_of(
    engine: &Engine,
    location: Option<&str>,
    locations: Option<&[String]>,
) -> Result<Placement, ApiError> {
    let known = |raw: &str| -> Result<LocationId, ApiError> {
        let id = LocationId::parse(raw)?;
        if engine.locations.get(&id).is_none() {
            return Err(ApiError::NotFound);
        }
        Ok(id)
    };
    match (location, locations) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_placement",
            "give either location or locations, not both",
        )),
        (Some(raw), None) => Ok(Placement::At(known(raw)?)),
        (None, Some(list)) => {
            if list.is_empty() || list.len() > PREFERENCES_MAX {
                return Err(ApiError::bad_request(
                    "invalid_placement",
                    format!("locations must name 1 to {PREFERENCES_MAX} locations"),
                ));
            }
            let mut ids: Vec<LocationId> = Vec::with_capacity(list.len());
            for raw in list {
                let id = known(raw)?;
                if ids.contains(&id) {
                    return Err(ApiError::bad_request(
                        "invalid_placement",
                        format!("locations names {id} twice"),
                    ));
                }
                ids.push(id);
            }
            Ok(Placement::Prefer(ids))
        }
        (None, None) => Ok(Placement::Any),
    }
}

/// `POST /v1/skus/{sku}/reservations`: holds units until `expires_at`.
#[utoipa::path(post, path = "/v1/skus/{sku}/reservations", tag = "reservations", operation_id = "reservations_create", params(("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = ReserveRequest,
    responses((status = 201, description = "Held", body = crate::http::views::ReservationBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<ReserveRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let qty = Quantity::parse(body.value.qty, engine.limits.qty_max)?;
    let max_ttl = engine.limits.max_ttl_seconds;
    let ttl_seconds = match body.value.ttl_seconds {
        None => engine.limits.default_ttl_seconds,
        Some(raw) => u64::try_from(raw)
            .ok()
            .filter(|ttl| (1..=max_ttl).contains(ttl))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_ttl",
                    format!("ttl_seconds must be an integer from 1 to {max_ttl}"),
                )
            })?,
    };
    let placement = placement_of(engine, body.value.location.as_deref(), body.value.locations.as_deref())?;
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let command = SkuCommand::Reserve {
        id: ReservationId::generate_for(&sku),
        qty,
        ttl_ms: ttl_seconds * 1000,
        placement,
    };
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(engine, &sku, &mailbox, command, keyed, caller.by(), render_reserved).await
}

/// `GET /v1/reservations/{id}`: a reservation, held or settled.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "reservations_get", params(("id" = String, Path, description = "Reservation id (UUID)")),
    responses(crate::http::openapi::InvalidId, (status = 200, description = "The reservation", body = crate::http::views::ReservationBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn get(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = ReservationId::parse(path_param(&request, "id"))?;
    let candidates = match engine.registry.holder_of(&id) {
        Holder::Indexed(sku) => smallvec::smallvec![sku],
        Holder::Tagged(skus) => skus,
    };
    for mailbox in candidates.iter().filter_map(|sku| engine.registry.sku(sku)) {
        let held = ask_durable(engine, &mailbox, |reply, slot| GetReservation { id, reply, slot }).await?;
        if let Some(reservation) = held? {
            return Ok(HttpResponse::Ok().json(ReservationBody::from(&reservation)));
        }
    }
    let settled = settled_reservation(engine, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(&settled)))
}

/// `DELETE /v1/reservations/{id}`: releases a held reservation (idempotent).
#[utoipa::path(delete, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "reservations_release", params(("id" = String, Path, description = "Reservation id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")),
    responses((status = 200, description = "Released", body = crate::http::views::ReservationBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn release(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    settle(caller, state, request, key, body, |id| SkuCommand::Release { id }).await
}

/// `POST /v1/reservations/{id}/commit`: the held units leave `on_hand`.
#[utoipa::path(post, path = "/v1/reservations/{id}/commit", tag = "reservations", operation_id = "reservations_commit", params(("id" = String, Path, description = "Reservation id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")),
    responses((status = 200, description = "Committed", body = crate::http::views::ReservationBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn commit(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    settle(caller, state, request, key, body, |id| SkuCommand::Commit {
        id,
        // Nothing here ships a reservation committed directly: its units leave the shelf now.
        until_shipped: false,
    })
    .await
}

async fn settle(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
    command: fn(ReservationId) -> SkuCommand,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = ReservationId::parse(path_param(&request, "id"))?;
    let sku = match engine.registry.holder_of(&id) {
        Holder::Indexed(sku) => sku,
        Holder::Tagged(candidates) => unindexed_holder(engine, &id, candidates).await?,
    };
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(
        engine,
        &sku,
        &mailbox,
        command(id),
        keyed,
        caller.by(),
        render_reservation,
    )
    .await
}

/// The SKU to settle an unindexed reservation at, among the SKUs whose tag its id carries.
/// A settled reservation's record names its SKU, and is looked at first: an id from an
/// earlier release may carry some other SKU's tag by chance. Otherwise a single candidate
/// is the one (its actor answers for an id it does not hold); of several (tags that collide),
/// the one holding it. An id no SKU holds and storage does not know is not found, once
/// that reading is durable.
async fn unindexed_holder(
    engine: &Engine,
    id: &ReservationId,
    candidates: smallvec::SmallVec<[SkuId; 1]>,
) -> Result<SkuId, ApiError> {
    // Only to route: the answer comes from the SKU's actor and waits for durability.
    if let Some(record) = engine.store.get_versioned::<Reservation>(&keys::reservation(id))? {
        return Ok(record.sku);
    }
    if let [only] = candidates.as_slice() {
        return Ok(only.clone());
    }
    for sku in &candidates {
        let Some(mailbox) = engine.registry.sku(sku) else {
            continue;
        };
        let id = *id;
        let held = ask_durable(engine, &mailbox, |reply, slot| GetReservation { id, reply, slot }).await?;
        if held?.is_some() {
            return Ok(sku.clone());
        }
    }
    Ok(settled_reservation(engine, id).await?.ok_or(ApiError::NotFound)?.sku)
}

/// A settled reservation from storage (which sees a reservation settled a moment ago), once
/// what was read is durable.
async fn settled_reservation(engine: &Engine, id: &ReservationId) -> Result<Option<Reservation>, ApiError> {
    let key = keys::reservation(id);
    read_durable(engine, || Ok(engine.store.get_versioned::<Reservation>(&key)?)).await
}
