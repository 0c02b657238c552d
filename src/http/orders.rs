//! Order routes: `/v1/orders...` (the token of the cart the order came from, the admin, or a
//! credential with a role the route names; see `auth::ROUTES`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::command::{durable, idempotent, Keyed};
use super::error::ApiError;
use super::request::{JsonBody, NoFields};
use super::views::render_order;
use super::{json_response, path_param, AppState};
use crate::access::Caller;
use crate::actors::order::{ChangeOrder, GetOrder, OrderAction, OrderActor, OrderFailure, OrderReply};
use crate::actors::Mailbox;
use crate::domain::order::OrderStatus;
use crate::domain::{Name, OrderId};
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
    let (id, mailbox) = order_mailbox(engine, request)?;
    let keyed = Keyed::new(key, &caller, request, canonical_body);
    let access = caller.access();
    idempotent(engine, keyed, render_order, |idempotency| async move {
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
    let status = OrderStatus::ALL
        .into_iter()
        .find(|status| status.as_str() == body.value.status)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status must be one of placed, paid, packed, shipped, delivered, cancelled, expired",
            )
        })?;
    let action = match status {
        OrderStatus::Cancelled => OrderAction::Cancel,
        other => OrderAction::SetStatus(other),
    };
    change(engine, caller, &request, &key, &body.canonical, action).await
}
