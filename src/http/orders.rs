//! Order routes: `/v1/orders...` (the token of the cart the order came from, the admin, or a
//! credential with a role the route names; see `auth::ROUTES`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::command::{durable, idempotent, Keyed};
use super::error::ApiError;
use super::ledger::known_location;
use super::request::{JsonBody, NoFields};
use super::views::{render_fulfilment, render_order, render_return};
use super::{json_response, path_param, AppState};
use crate::access::Caller;
use crate::actors::order::{ChangeOrder, GetOrder, OrderAction, OrderActor, OrderFailure, OrderReply};
use crate::actors::Mailbox;
use crate::domain::order::{OrderStatus, UnitsOf};
use crate::domain::{Name, OrderId, Quantity, SkuId};
use crate::engine::Engine;
use crate::idempotency::IdempotencyKey;

fn order_mailbox(engine: &Engine, request: &HttpRequest) -> Result<(OrderId, Mailbox<OrderActor>), ApiError> {
    let id = OrderId::parse(path_param(request, "id")).map_err(|_| ApiError::NotFound)?;
    let mailbox = engine.registry.order(&id)?.ok_or(ApiError::NotFound)?;
    Ok((id, mailbox))
}

/// An order's answer, or the overload that kept it from answering.
fn standing(reply: OrderReply) -> Result<OrderReply, ApiError> {
    match reply {
        Err(OrderFailure::Overloaded) => Err(ApiError::Overloaded),
        reply => Ok(reply),
    }
}

/// `GET /v1/orders/{id}`: the order with its history.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", operation_id = "orders_get", params(("id" = String, Path, description = "Order id (UUID)")),
    responses(crate::http::openapi::InvalidId, (status = 200, description = "The order", body = crate::http::views::OrderBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn get(state: web::Data<AppState>, caller: Caller, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let (id, mailbox) = order_mailbox(engine, &request)?;
    let access = caller.access();
    let answer = mailbox
        .ask(|reply, slot| GetOrder { access, reply, slot })?
        .await
        .map_err(|_| {
            engine.registry.orders.forget(&id, mailbox.addr());
            ApiError::Unavailable
        })?;
    durable(engine, answer.ticket).await?;
    let (status, body) = render_order(&standing(answer.value)?);
    Ok(json_response(status, body))
}

async fn change(
    engine: &Engine,
    caller: Caller,
    request: &HttpRequest,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    action: OrderAction,
) -> Result<HttpResponse, ApiError> {
    change_rendered(engine, caller, request, key, canonical_body, action, render_order).await
}

async fn change_rendered(
    engine: &Engine,
    caller: Caller,
    request: &HttpRequest,
    key: &IdempotencyKey,
    canonical_body: &[u8],
    action: OrderAction,
    render: crate::idempotency::Render<OrderReply>,
) -> Result<HttpResponse, ApiError> {
    let (id, mailbox) = order_mailbox(engine, request)?;
    let keyed = Keyed::new(key, &caller, request, canonical_body);
    let access = caller.access();
    idempotent(engine, keyed, render, |idempotency| async move {
        let answer = mailbox
            .ask(|reply, slot| ChangeOrder {
                access,
                action,
                idempotency,
                by: caller.by(),
                reply,
                slot,
            })?
            .await
            .map_err(|_| {
                engine.registry.orders.forget(&id, mailbox.addr());
                ApiError::Unavailable
            })?;
        Ok((standing(answer.value), answer.ticket))
    })
    .await
}

/// Body of `POST /v1/orders/{id}/pay`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    payment_ref: String,
}

/// `POST /v1/orders/{id}/pay` (admin, payments; never the cart token): `placed -> paid`.
#[utoipa::path(post, path = "/v1/orders/{id}/pay", tag = "orders", operation_id = "orders_pay", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = PayRequest,
    responses((status = 200, description = "Paid", body = crate::http::views::OrderBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn pay(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let payment_ref = Name::parse(&body.value.payment_ref, "payment_ref", "invalid_payment_ref")?;
    let action = OrderAction::Pay {
        payment_ref: payment_ref.as_str().to_owned(),
    };
    change(engine, caller, &request, &key, &body.canonical, action).await
}

/// `POST /v1/demo/orders/{id}/pay` (the order's cart token, or the admin), only with
/// `ui.demo_payments`: `placed -> paid` with payment reference `demo`, so the storefront page
/// can finish a purchase without a payment service. Otherwise `404`, as for a route that is
/// not there.
#[utoipa::path(post, path = "/v1/demo/orders/{id}/pay", tag = "orders", operation_id = "orders_demo_pay", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body(content = crate::http::request::NoFields, description = "Empty or {}"),
    responses((status = 200, description = "Paid (demo stores only: `ui.demo_payments`)", body = crate::http::views::OrderBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = [])))]
pub async fn demo_pay(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.ui.demo_payments {
        return Err(ApiError::NotFound);
    }
    let engine = state.engine()?;
    change(engine, caller, &request, &key, &body.canonical, OrderAction::DemoPay).await
}

/// `POST /v1/orders/{id}/cancel`: `placed | paid -> cancelled`; the stock goes back.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", operation_id = "orders_cancel", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body(content = crate::http::request::NoFields, description = "Empty or {}"),
    responses((status = 200, description = "Cancelled; the stock goes back", body = crate::http::views::OrderBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    change(engine, caller, &request, &key, &body.canonical, OrderAction::Cancel).await
}

/// Body of `POST /v1/orders/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    status: String,
}

/// `POST /v1/orders/{id}/status` (admin, fulfilment): moves the order along its legal moves.
#[utoipa::path(post, path = "/v1/orders/{id}/status", tag = "orders", operation_id = "orders_set_status", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = StatusRequest,
    responses((status = 200, description = "Moved", body = crate::http::views::OrderBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn set_status(
    caller: Caller,
    state: web::Data<AppState>,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let status = parse_status(&body.value.status)?;
    let action = match status {
        OrderStatus::Cancelled => OrderAction::Cancel,
        other => OrderAction::SetStatus(other),
    };
    change(engine, caller, &request, &key, &body.canonical, action).await
}

/// Units of one SKU in a fulfilment or return request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitsRequest {
    sku: String,
    qty: i64,
}

/// Most lines in one fulfilment or return.
const UNITS_LINES_MAX: usize = 1000;

/// The lines of a fulfilment or return: 1 to 1000, each SKU once, each quantity in range.
fn units_of(engine: &Engine, lines: &[UnitsRequest]) -> Result<Vec<UnitsOf>, ApiError> {
    if lines.is_empty() || lines.len() > UNITS_LINES_MAX {
        return Err(ApiError::bad_request(
            "invalid_lines",
            format!("lines must list 1 to {UNITS_LINES_MAX} SKUs"),
        ));
    }
    let mut units: Vec<UnitsOf> = Vec::with_capacity(lines.len());
    for line in lines {
        let sku = SkuId::parse(&line.sku)?;
        if units.iter().any(|seen| seen.sku == sku) {
            return Err(ApiError::bad_request(
                "duplicate_sku",
                format!("{sku} is listed twice; give each SKU once"),
            ));
        }
        let qty = Quantity::parse(line.qty, engine.limits.qty_max)?;
        units.push(UnitsOf { sku, qty: qty.get() });
    }
    Ok(units)
}

/// Body of `POST /v1/orders/{id}/fulfilments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FulfilmentRequest {
    /// Where the units ship from.
    location: String,
    /// What ships.
    lines: Vec<UnitsRequest>,
}

/// `POST /v1/orders/{id}/fulfilments` (admin, fulfilment): ships units of a paid order
/// from a location where they are committed; they leave `on_hand` there. Partial shipments
/// move the order to `partially_shipped`, the last one to `shipped`.
#[utoipa::path(post, path = "/v1/orders/{id}/fulfilments", tag = "orders", operation_id = "orders_fulfil", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = FulfilmentRequest,
    responses((status = 201, description = "Shipped", body = crate::http::views::FulfilmentBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn fulfil(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<FulfilmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let lines = units_of(engine, &body.value.lines)?;
    let location = known_location(engine, &body.value.location)?;
    let action = OrderAction::Fulfil { location, lines };
    change_rendered(
        engine,
        caller,
        &request,
        &key,
        &body.canonical,
        action,
        render_fulfilment,
    )
    .await
}

/// Body of `POST /v1/orders/{id}/returns`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    /// What came back.
    lines: Vec<UnitsRequest>,
    /// Where it came back.
    location: String,
    /// Back on the shelf (`true`), or written off as damaged (`false`).
    restock: bool,
}

/// `POST /v1/orders/{id}/returns` (admin, fulfilment): shipped units of a delivered order
/// come back to a location, restocked or written off; the refund is computed (no payment
/// is made). The order moves to `partially_returned`, then `returned`.
#[utoipa::path(post, path = "/v1/orders/{id}/returns", tag = "orders", operation_id = "orders_return", params(("id" = String, Path, description = "Order id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = ReturnRequest,
    responses((status = 201, description = "Taken back", body = crate::http::views::ReturnBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn take_back(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<ReturnRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let lines = units_of(engine, &body.value.lines)?;
    let location = known_location(engine, &body.value.location)?;
    let action = OrderAction::TakeBack {
        location,
        restock: body.value.restock,
        lines,
    };
    change_rendered(engine, caller, &request, &key, &body.canonical, action, render_return).await
}

/// An order status by its API name; anything else is `400 invalid_status`.
fn parse_status(raw: &str) -> Result<OrderStatus, ApiError> {
    OrderStatus::ALL
        .into_iter()
        .find(|status| status.as_str() == raw)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status must be one of placed, paid, packed, partially_shipped, shipped, delivered, \
                 partially_returned, returned, cancelled, expired",
            )
        })
}

/// Query of `GET /v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    created_after: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// Default page size of the order list.
const LIST_LIMIT_DEFAULT: usize = 100;
/// Largest page size of the order list.
const LIST_LIMIT_MAX: usize = 1000;
/// Most order rows one page reads while filtering, so one page stays cheap; `next` goes on
/// from where it stopped.
const LIST_SCAN_MAX: usize = 10_000;

/// A page of orders.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrderPage<'a> {
    /// Orders, oldest first.
    pub items: Vec<crate::http::views::OrderBody<'a>>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<String>,
}

/// `GET /v1/orders?status=&created_after=&after=&limit=` (admin, fulfilment, read): orders
/// oldest first (ids are UUIDv7, so id order is creation order), paged by id. Settled orders
/// stay listed for `order.settled_retention_hours`.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", operation_id = "orders_list",
    params(("status" = Option<String>, Query, description = "Only orders in this status"), ("created_after" = Option<String>, Query, description = "Only orders created at or after this RFC 3339 time"), ("after" = Option<String>, Query, description = "Continue after this order id"), ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 100)")),
    responses((status = 200, description = "A page of orders", body = OrderPage), (status = 400, description = "Invalid query", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn list(state: web::Data<AppState>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    use crate::domain::order::Order;
    use crate::persistence::keys;
    let engine = state.engine()?;
    let query = query.into_inner();
    let status = query.status.as_deref().map(parse_status).transpose()?;
    let limit = super::request::page_limit(query.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    // Ids are UUIDv7: their first 48 bits are the creation time in ms, so a time is a key.
    // The scan starts a minute early (an id's time and the order's `created_at` come from two
    // readings of the clock) and `created_at` decides.
    let since_ms = query
        .created_after
        .as_deref()
        .map(|raw| {
            let at = humantime::parse_rfc3339(raw)
                .map_err(|_| ApiError::bad_request("invalid_query", "created_after must be an RFC 3339 time"))?;
            Ok::<_, ApiError>(
                at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            )
        })
        .transpose()?;
    let since = since_ms.map(|ms| {
        let mut key = vec![keys::ORDER];
        key.extend_from_slice(&ms.saturating_sub(60_000).min((1 << 48) - 1).to_be_bytes()[2..]);
        key.extend_from_slice(&[0; 10]);
        key
    });
    let cursor = query
        .after
        .as_deref()
        .map(|raw| OrderId::parse(raw).map(|id| keys::order(&id)))
        .transpose()?;
    let start = match (since, cursor) {
        (Some(since), Some(cursor)) => Some(since.max(cursor)),
        (since, cursor) => since.or(cursor),
    };
    let (orders, next) = super::command::read_durable(engine, || {
        let mut orders: Vec<Order> = Vec::new();
        let mut next = None;
        let mut scanned = 0;
        let mut from = start;
        'pages: loop {
            let page = engine.store.scan(&[keys::ORDER], from.as_deref(), limit.max(64))?;
            let Some((last, _)) = page.last() else { break };
            from = Some(last.clone());
            for (key, bytes) in &page {
                scanned += 1;
                let order: Order = engine.store.decode_versioned(key, bytes)?;
                let id = order.id;
                let created_ms = order.history.first().map_or(0, |entry| entry.at_ms);
                let wanted = status.is_none_or(|status| order.status() == status)
                    && since_ms.is_none_or(|since| created_ms >= since);
                if wanted {
                    if orders.len() == limit {
                        next = orders.last().map(|last| last.id.to_string());
                        break 'pages;
                    }
                    orders.push(order);
                }
                if scanned >= LIST_SCAN_MAX {
                    next = Some(id.to_string());
                    break 'pages;
                }
            }
        }
        Ok((orders, next))
    })
    .await?;
    let items = orders.iter().map(crate::http::views::OrderBody::from).collect();
    Ok(json_response(200, super::views::to_json(&OrderPage { items, next })))
}
