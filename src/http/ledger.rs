//! Transfers between locations (`/v1/transfers...`) and the stock ledger
//! (`GET /v1/skus/{sku}/movements`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::command::{execute_sku_command, read_durable, Keyed};
use super::error::ApiError;
use super::request::{JsonBody, NoFields};
use super::views::to_json;
use super::{error_parts, json_response, path_param, AppState};
use crate::access::Caller;
use crate::actors::{SkuAnswer, SkuOutcome};
use crate::domain::clock::rfc3339;
use crate::domain::ids::TransferId;
use crate::domain::location::LocationId;
use crate::domain::sku::{SkuCommand, TransferRecord};
use crate::domain::{Quantity, SkuId};
use crate::engine::Engine;
use crate::idempotency::IdempotencyKey;
use crate::persistence::rows::{MovementRow, SkuRow};
use crate::persistence::{keys, ledger};

/// Body of `POST /v1/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The SKU to move.
    sku: String,
    /// Where the units leave.
    from: String,
    /// Where they go.
    to: String,
    /// How many.
    qty: i64,
}

/// A transfer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferBody<'a> {
    /// The transfer id (UUID).
    pub transfer_id: String,
    /// The SKU moved.
    pub sku: &'a str,
    /// Where the units left.
    pub from: &'a str,
    /// Where they go.
    pub to: &'a str,
    /// How many.
    pub qty: u64,
    /// `in_transit` or `received`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// When the units left (RFC 3339 UTC).
    pub created_at: String,
    /// When they were received, once they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
}

impl<'a> TransferBody<'a> {
    fn new(record: &'a TransferRecord, received: bool) -> Self {
        TransferBody {
            transfer_id: record.transfer.id.to_string(),
            sku: record.sku.as_str(),
            from: record.transfer.from.as_str(),
            to: record.transfer.to.as_str(),
            qty: record.transfer.qty,
            status: if received { "received" } else { "in_transit" },
            created_at: rfc3339(record.transfer.created_ms),
            received_at: record.received_ms.map(rfc3339),
        }
    }
}

/// A location that exists, or `404`.
pub(crate) fn known_location(engine: &Engine, raw: &str) -> Result<LocationId, ApiError> {
    let id = LocationId::parse(raw)?;
    if engine.locations.get(&id).is_none() {
        return Err(ApiError::NotFound);
    }
    Ok(id)
}

fn render_sent(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Transfer(Some(record))) => (201, to_json(&TransferBody::new(record, false))),
        Ok(other) => error_parts(&ApiError::Internal(anyhow::anyhow!("unexpected answer {other:?}"))),
        Err(rejection) => error_parts(&ApiError::from(rejection.clone())),
    }
}

fn render_received(reply: &SkuAnswer) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Transfer(Some(record))) => (200, to_json(&TransferBody::new(record, true))),
        // Received by a request that raced this one: the record it stored answers.
        Ok(SkuOutcome::Transfer(None)) => error_parts(&ApiError::Conflict {
            code: "transfer_received",
            message: "the transfer was received by another request just now".to_owned(),
            details: serde_json::Map::new(),
        }),
        Ok(other) => error_parts(&ApiError::Internal(anyhow::anyhow!("unexpected answer {other:?}"))),
        Err(rejection) => error_parts(&ApiError::from(rejection.clone())),
    }
}

/// `POST /v1/transfers`: units leave `from` now (`transfer_out` in the ledger) and are in
/// transit until received at `to`.
#[utoipa::path(post, path = "/v1/transfers", tag = "locations", operation_id = "transfers_create", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = TransferRequest,
    responses((status = 201, description = "In transit", body = TransferBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let fields = &body.value;
    let sku = SkuId::parse(&fields.sku)?;
    let qty = Quantity::parse(fields.qty, engine.limits.qty_max)?;
    let from = known_location(engine, &fields.from)?;
    let to = known_location(engine, &fields.to)?;
    if from == to {
        return Err(ApiError::bad_request(
            "invalid_transfer",
            "from and to must be different locations",
        ));
    }
    let mailbox = engine.registry.sku(&sku).ok_or(ApiError::NotFound)?;
    let command = SkuCommand::Transfer {
        id: TransferId::generate(),
        from,
        to,
        qty,
    };
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    execute_sku_command(engine, &sku, &mailbox, command, keyed, caller.by(), render_sent).await
}

/// The stored record of a transfer.
async fn stored_transfer(engine: &Engine, id: &TransferId) -> Result<Option<TransferRecord>, ApiError> {
    let key = keys::transfer(id);
    read_durable(engine, || Ok(engine.store.get_decoded::<TransferRecord>(&key)?)).await
}

/// `GET /v1/transfers/{id}`: a transfer.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "locations", operation_id = "transfers_get", params(("id" = String, Path, description = "Transfer id (UUID)")),
    responses(crate::http::openapi::InvalidId, (status = 200, description = "The transfer", body = TransferBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn get(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = TransferId::parse(path_param(&request, "id"))?;
    let record = stored_transfer(engine, &id).await?.ok_or(ApiError::NotFound)?;
    let received = record.received_ms.is_some();
    Ok(json_response(200, to_json(&TransferBody::new(&record, received))))
}

/// `POST /v1/transfers/{id}/receive`: the units reach the destination's shelf
/// (`transfer_in`). Receiving a received transfer answers it again.
#[utoipa::path(post, path = "/v1/transfers/{id}/receive", tag = "locations", operation_id = "transfers_receive", params(("id" = String, Path, description = "Transfer id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body(content = crate::http::request::NoFields, description = "Empty or {}"),
    responses((status = 200, description = "Received", body = TransferBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn receive(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = TransferId::parse(path_param(&request, "id"))?;
    let record = stored_transfer(engine, &id).await?.ok_or(ApiError::NotFound)?;
    if record.received_ms.is_some() {
        return Ok(json_response(200, to_json(&TransferBody::new(&record, true))));
    }
    let mailbox = engine.registry.sku(&record.sku).ok_or(ApiError::NotFound)?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    let command = SkuCommand::ReceiveTransfer { id };
    execute_sku_command(
        engine,
        &record.sku,
        &mailbox,
        command,
        keyed,
        caller.by(),
        render_received,
    )
    .await
}

/// Query of `GET /v1/skus/{sku}/movements`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovementQuery {
    location: Option<String>,
    after: Option<u64>,
    limit: Option<i64>,
    order: Option<String>,
}

/// A movement of the stock ledger.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MovementBody<'a> {
    /// Position in the SKU's ledger (1, 2, 3, ...).
    pub seq: u64,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// The SKU.
    pub sku: &'a str,
    /// The location.
    pub location: &'a str,
    /// `receipt`, `adjustment`, `count`, `reservation`, `release`, `expiry`, `sale`,
    /// `shipment`, `return`, `transfer_out`, `transfer_in` or `backorder_filled`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Change of `on_hand`.
    pub on_hand_delta: i64,
    /// Change of `reserved`.
    pub reserved_delta: i64,
    /// Change of `committed`.
    pub committed_delta: i64,
    /// Why, when given.
    pub reason: Option<&'a str>,
    /// The reservation or transfer it belongs to.
    pub reference: Option<String>,
    /// Who made it.
    pub by: &'a str,
}

/// The counters a SKU's ledger starts from at one location (a data directory from before
/// the ledger opens with its stock here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpeningBody<'a> {
    /// The location.
    pub location: &'a str,
    /// `on_hand` before the first movement.
    pub on_hand: u64,
    /// `reserved` before the first movement.
    pub reserved: u64,
    /// `committed` before the first movement.
    pub committed: u64,
}

/// A page of movements.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MovementPage<'a> {
    /// Movements in the order asked for.
    pub items: Vec<MovementBody<'a>>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<u64>,
    /// What each location held before its first movement: `opening + sum(deltas) = counters`.
    pub opening: Vec<OpeningBody<'a>>,
}

/// Default page size.
const MOVEMENTS_LIMIT_DEFAULT: usize = 100;
/// Most rows one request reads while filtering by location, so one page stays cheap; the
/// answer's `next` goes on from where it stopped.
const MOVEMENT_SCAN_MAX: usize = 10_000;

/// `GET /v1/skus/{sku}/movements`: the SKU's ledger, page by page, oldest first (`order=asc`,
/// the default) or newest first (`desc`), for one location (`location=`) or all.
#[utoipa::path(get, path = "/v1/skus/{sku}/movements", tag = "locations", operation_id = "skus_movements",
    params(("sku" = String, Path, description = "SKU id"), ("location" = Option<String>, Query, description = "Only this location's movements"), ("after" = Option<u64>, Query, description = "Continue after this seq (in the order asked for)"), ("limit" = Option<i64>, Query, description = "Page size, 1 to [ledger] page_max (1000)"), ("order" = Option<String>, Query, description = "asc (default) or desc")),
    responses((status = 200, description = "A page of movements", body = MovementPage), (status = 400, description = "Invalid query", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn movements(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<MovementQuery>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let query = query.into_inner();
    let page_max = state.settings.ledger.page_max;
    let limit = super::request::page_limit(query.limit, MOVEMENTS_LIMIT_DEFAULT, page_max)?;
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::bad_request("invalid_query", "order must be asc or desc")),
    };
    let location = query.location.as_deref().map(LocationId::parse).transpose()?;
    let (row, rows, next) = read_durable(engine, || {
        let row: SkuRow = engine
            .store
            .get_versioned(&keys::sku(&sku))?
            .ok_or(ApiError::NotFound)?;
        let wanted = |movement: &MovementRow| location.as_ref().is_none_or(|id| movement.movement.location == *id);
        // Movements before `ledger_start` were folded into `opening`: nothing to read there.
        let first = row.ledger_start.max(1);
        let mut rows: Vec<MovementRow> = Vec::new();
        let mut scanned = 0;
        let mut next = None;
        if descending {
            let mut below = query.after.unwrap_or(u64::MAX).min(row.movement_seq + 1);
            while below > first && rows.len() < limit {
                if scanned >= MOVEMENT_SCAN_MAX {
                    next = Some(below);
                    break;
                }
                let window = (limit - rows.len()).max(64) as u64;
                let from = below.saturating_sub(window).max(first);
                let page = ledger::read_movements(&engine.store, &sku, from, below, usize::MAX)?;
                scanned += page.len();
                for movement in page.into_iter().rev() {
                    if wanted(&movement) {
                        if rows.len() == limit {
                            next = rows.last().map(|last| last.movement.seq);
                            break;
                        }
                        rows.push(movement);
                    }
                }
                below = from;
                if rows.len() == limit && next.is_none() && below > first {
                    next = rows.last().map(|last| last.movement.seq);
                }
            }
        } else {
            let mut from = query.after.map_or(first, |after| after.saturating_add(1).max(first));
            'pages: loop {
                let page = ledger::read_movements(&engine.store, &sku, from, u64::MAX, limit.max(64))?;
                let Some(last) = page.last() else { break };
                from = last.movement.seq.saturating_add(1);
                for movement in page {
                    scanned += 1;
                    let seq = movement.movement.seq;
                    if wanted(&movement) {
                        if rows.len() == limit {
                            next = rows.last().map(|last| last.movement.seq);
                            break 'pages;
                        }
                        rows.push(movement);
                    }
                    if scanned >= MOVEMENT_SCAN_MAX {
                        next = Some(seq);
                        break 'pages;
                    }
                }
            }
        }
        Ok((row, rows, next))
    })
    .await?;
    let opening = row
        .opening
        .iter()
        .filter(|(id, _)| location.as_ref().is_none_or(|wanted| wanted == id))
        .map(|(id, stock)| OpeningBody {
            location: id.as_str(),
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            committed: stock.committed,
        })
        .collect();
    let items = rows
        .iter()
        .map(|row| MovementBody {
            seq: row.movement.seq,
            at: rfc3339(row.at_ms),
            sku: sku.as_str(),
            location: row.movement.location.as_str(),
            kind: row.movement.kind.as_str(),
            on_hand_delta: row.movement.on_hand_delta,
            reserved_delta: row.movement.reserved_delta,
            committed_delta: row.movement.committed_delta,
            reason: row.movement.reason.as_deref(),
            reference: row.movement.reference.map(|reference| reference.to_string()),
            by: &row.by,
        })
        .collect();
    Ok(json_response(200, to_json(&MovementPage { items, next, opening })))
}
