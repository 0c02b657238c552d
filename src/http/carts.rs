//! Cart routes: `/v1/carts...` (cart token, or admin).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::new_cart_token;
use super::command::{durable, idempotent, sku_turn, Keyed};
use super::error::ApiError;
use super::request::{JsonBody, NoFields};
use super::views::{render_cart, render_checkout, to_json};
use super::{path_param, AppState};
use crate::access::Caller;
use crate::actors::cart::{CartActor, CartFailure, CartReply, CheckoutCart, GetCart, SetCartLine};
use crate::actors::{persist, Mailbox};
use crate::domain::cart::Cart;
use crate::domain::cart::OrderDetails;
use crate::domain::clock::rfc3339;
use crate::domain::sku::Placement;
use crate::domain::{CartEvent, DomainEvent};
use crate::domain::{CartId, Quantity, SkuId};
use crate::engine::Engine;
use crate::idempotency::IdempotencyKey;
use crate::metrics as names;
use crate::persistence::{codec, keys, Op};

/// `POST /v1/carts`: a new cart and its token (shown once; only its hash is stored).
#[utoipa::path(post, path = "/v1/carts", tag = "carts", operation_id = "carts_create", params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body(content = crate::http::request::NoFields, description = "Empty or {}"),
    responses((status = 201, description = "Created; the token is shown only here", body = crate::http::openapi::CreatedCart), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::Conflict, crate::http::openapi::TooManyRequests, crate::http::openapi::Unavailable))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    if caller == Caller::Anonymous {
        key.require_strong()?;
    }
    let engine = state.engine()?;
    // Anyone may create a cart: each client address at a bounded rate, and all of them to a
    // bounded number of open carts.
    if let Some(peer) = request.peer_addr() {
        let forwarded_for = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok());
        let client = engine.trusted_proxies.client(peer.ip(), forwarded_for);
        if let Err(retry_after_seconds) = engine.cart_creation.take(client, engine.clock.now_ms()) {
            metrics::counter!(names::LIMIT_REFUSALS_TOTAL, "limit" => "cart_creation_rate").increment(1);
            return Err(ApiError::TooManyRequests { retry_after_seconds });
        }
    }
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    idempotent(engine, keyed, render_created, |draft| async move {
        if !engine.registry.carts.try_open() {
            metrics::counter!(names::LIMIT_REFUSALS_TOTAL, "limit" => "open_carts").increment(1);
            return Err(ApiError::Overloaded);
        }
        let id = CartId::generate();
        let (token, token_hash) = new_cart_token(id);
        let now_ms = engine.clock.now_ms();
        let cart = Cart::new(id, token_hash, now_ms, engine.registry.carts.limits().ttl_ms);
        let reply = Created {
            cart: cart.clone(),
            token,
        };
        let mut ops = vec![Op::Put(keys::cart(&id), codec::encode_versioned(&cart))];
        let mut in_flight = None;
        if let Some(draft) = draft {
            let (answer_ops, mark) = draft.stage(&reply, now_ms);
            ops.extend(answer_ops);
            in_flight = Some(mark);
        }
        let events = vec![DomainEvent::Cart {
            cart: id,
            event: CartEvent::Created,
        }];
        let Some(ticket) = persist(&engine.writer, ops, events, now_ms, &caller.by()) else {
            engine.registry.carts.not_opened();
            return Err(ApiError::Overloaded);
        };
        if let Some(mark) = in_flight {
            mark.release_when_durable(engine.writer.durability(), ticket);
        }
        engine.registry.carts.start(cart);
        metrics::counter!(names::CARTS_CREATED_TOTAL).increment(1);
        Ok((Ok::<_, ApiError>(reply), ticket))
    })
    .await
}

/// A new cart and the only copy of its token.
pub struct Created {
    cart: Cart,
    token: String,
}

fn render_created(created: &Created) -> (u16, Vec<u8>) {
    let body = serde_json::json!({
        "cart_id": created.cart.id.to_string(),
        "cart_token": created.token,
        "expires_at": rfc3339(created.cart.expires_ms),
    });
    (201, to_json(&body))
}

/// The cart named in the path, if these credentials may see it: another cart's token sees
/// nothing (404, never 403: an id's existence is not revealed).
fn cart_mailbox(
    engine: &Engine,
    caller: &Caller,
    request: &HttpRequest,
) -> Result<(CartId, Mailbox<CartActor>), ApiError> {
    let id = CartId::parse(path_param(request, "id")).map_err(|_| ApiError::NotFound)?;
    if matches!(caller, Caller::Cart { cart, .. } if *cart != id) {
        return Err(ApiError::NotFound);
    }
    let mailbox = engine.registry.cart(&id)?.ok_or(ApiError::NotFound)?;
    Ok((id, mailbox))
}

/// Sends a message to a cart actor; a cart actor that stopped is forgotten so the next
/// request loads it again. The answer is the cart's, or the overload that kept it from
/// answering (`Err`, after waiting on the ticket like any answer).
async fn ask_cart<M>(
    engine: &Engine,
    id: CartId,
    mailbox: &Mailbox<CartActor>,
    make: impl FnOnce(crate::actors::Reply<CartReply>, crate::actors::MailboxSlot) -> M,
) -> Result<(Result<CartReply, ApiError>, crate::persistence::Ticket), ApiError>
where
    M: actix::Message<Result = ()> + Send + 'static,
    CartActor: actix::Handler<M>,
{
    let answer = mailbox.ask(make)?.await.map_err(|_| {
        engine.registry.carts.forget(&id, mailbox.addr());
        ApiError::Unavailable
    })?;
    let reply = match answer.value {
        Err(CartFailure::Overloaded) => Err(ApiError::Overloaded),
        reply => Ok(reply),
    };
    Ok((reply, answer.ticket))
}

/// `GET /v1/carts/{id}`: the cart with its lines, priced now.
#[utoipa::path(get, path = "/v1/carts/{id}", tag = "carts", operation_id = "carts_get", params(("id" = String, Path, description = "Cart id (UUID)")),
    responses(crate::http::openapi::InvalidId, (status = 200, description = "The cart", body = crate::http::views::CartBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn get(state: web::Data<AppState>, caller: Caller, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let (id, mailbox) = cart_mailbox(engine, &caller, &request)?;
    let access = caller.access();
    let (reply, ticket) = ask_cart(engine, id, &mailbox, |reply, slot| GetCart { access, reply, slot }).await?;
    durable(engine, ticket).await?;
    let (status, body) = render_cart(&reply?);
    Ok(super::json_response(status, body))
}

/// Body of `PUT /v1/carts/{id}/items/{sku}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLineRequest {
    qty: i64,
    /// Hold added units at exactly this location.
    #[serde(default)]
    location: Option<String>,
    /// Hold added units at these locations only, in this order of preference.
    #[serde(default)]
    locations: Option<Vec<String>>,
}

/// `PUT /v1/carts/{id}/items/{sku}`: sets the line's quantity; the stock is held for the cart.
#[utoipa::path(put, path = "/v1/carts/{id}/items/{sku}", tag = "carts", operation_id = "carts_set_line", params(("id" = String, Path, description = "Cart id (UUID)"), ("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body = SetLineRequest,
    responses((status = 200, description = "The cart; the line's stock is held", body = crate::http::views::CartBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn set_line(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<SetLineRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let (id, mailbox) = cart_mailbox(engine, &caller, &request)?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    if u64::try_from(body.value.qty).is_ok_and(|qty| qty > engine.cart_line_qty_max) {
        // One cart may not hoard a SKU.
        metrics::counter!(crate::metrics::LIMIT_REFUSALS_TOTAL, "limit" => "cart_line_qty").increment(1);
    }
    let qty = Quantity::parse(body.value.qty, engine.cart_line_qty_max)?.get();
    let placement =
        super::reservations::placement_of(engine, body.value.location.as_deref(), body.value.locations.as_deref())?;
    let line = (qty, placement);
    change_line(engine, caller, id, mailbox, &request, key, &body.canonical, sku, line).await
}

/// `DELETE /v1/carts/{id}/items/{sku}`: removes the line; its stock is released.
#[utoipa::path(delete, path = "/v1/carts/{id}/items/{sku}", tag = "carts", operation_id = "carts_remove_line", params(("id" = String, Path, description = "Cart id (UUID)"), ("sku" = String, Path, description = "SKU id: 1 to 64 of letters, digits, '-', '_', '.'"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")),
    responses((status = 200, description = "The cart; the stock is released", body = crate::http::views::CartBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn remove_line(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let (id, mailbox) = cart_mailbox(engine, &caller, &request)?;
    let sku = SkuId::parse(path_param(&request, "sku"))?;
    let line = (0, Placement::Any);
    change_line(engine, caller, id, mailbox, &request, key, &body.canonical, sku, line).await
}

#[allow(clippy::too_many_arguments)]
async fn change_line(
    engine: &Engine,
    caller: Caller,
    id: CartId,
    mailbox: Mailbox<CartActor>,
    request: &HttpRequest,
    key: IdempotencyKey,
    canonical_body: &[u8],
    sku: SkuId,
    (qty, placement): (u64, Placement),
) -> Result<HttpResponse, ApiError> {
    let keyed = Keyed::new(&key, &caller, request, canonical_body);
    let access = caller.access();
    let by = caller.by();
    // The line holds stock at the SKU: it takes its turn there like a reservation.
    let _turn = match engine.registry.sku(&sku) {
        Some(_) => Some(sku_turn(engine, &sku).await?),
        None => None,
    };
    idempotent(engine, keyed, render_cart, |idempotency| async move {
        ask_cart(engine, id, &mailbox, |reply, slot| SetCartLine {
            access,
            sku,
            qty,
            placement,
            idempotency,
            by,
            reply,
            slot,
        })
        .await
    })
    .await
}

/// Who orders (all optional): a free-form reference, an email, a shipping address.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    /// The shop's own reference for the customer (up to 128 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    /// An email address (up to 254 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// Address fields by name (`name`, `line1`, `city`, `postal_code`, `country`, ...):
    /// up to 16 fields, names up to 64 characters, values up to 256.
    #[serde(skip_serializing_if = "Option::is_none")]
    shipping_address: Option<std::collections::BTreeMap<String, String>>,
}

/// Body of `POST /v1/carts/{id}/checkout` (every field optional; `{}` is fine).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// Who orders; kept on the order.
    customer: Option<CustomerRequest>,
    /// The shop's own keys and values, kept on the order: up to 32 keys of up to 64
    /// characters, values up to 512.
    metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// Most fields of a shipping address, metadata keys, and their sizes.
const ADDRESS_FIELDS_MAX: usize = 16;
const METADATA_KEYS_MAX: usize = 32;
const FIELD_NAME_MAX: usize = 64;

/// Checks a checkout's customer block and metadata against their bounds.
fn order_details(body: &CheckoutRequest) -> Result<OrderDetails, ApiError> {
    let bad = |code: &'static str, message: String| ApiError::bad_request(code, message);
    let text = |value: &str, max: usize| value.chars().count() <= max && !value.chars().any(char::is_control);
    let name_ok = |name: &str| {
        (1..=FIELD_NAME_MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    };
    if let Some(customer) = &body.customer {
        if customer
            .reference
            .as_deref()
            .is_some_and(|reference| !text(reference, 128))
        {
            return Err(bad(
                "invalid_customer",
                "customer.reference: up to 128 characters".to_owned(),
            ));
        }
        if let Some(email) = &customer.email {
            let shaped = email.len() <= 254
                && email.split('@').count() == 2
                && email.split('@').all(|part| !part.is_empty())
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !shaped {
                return Err(bad(
                    "invalid_customer",
                    "customer.email must be an email address".to_owned(),
                ));
            }
        }
        if let Some(address) = &customer.shipping_address {
            if address.len() > ADDRESS_FIELDS_MAX
                || address.iter().any(|(name, value)| !name_ok(name) || !text(value, 256))
            {
                return Err(bad(
                    "invalid_customer",
                    format!(
                        "customer.shipping_address: up to {ADDRESS_FIELDS_MAX} fields, names of 1 to {FIELD_NAME_MAX} letters, digits, _ - . :, values up to 256 characters"
                    ),
                ));
            }
        }
    }
    let metadata = body.metadata.clone().unwrap_or_default();
    if metadata.len() > METADATA_KEYS_MAX || metadata.iter().any(|(key, value)| !name_ok(key) || !text(value, 512)) {
        return Err(bad(
            "invalid_metadata",
            format!(
                "metadata: up to {METADATA_KEYS_MAX} keys of 1 to {FIELD_NAME_MAX} letters, digits, _ - . :, values up to 512 characters"
            ),
        ));
    }
    let customer = body
        .customer
        .as_ref()
        .map(|customer| serde_json::to_string(customer).unwrap_or_default());
    Ok(OrderDetails { customer, metadata })
}

/// `POST /v1/carts/{id}/checkout`: commits every line and places the order (201), or fails
/// as a whole (409) with nothing ordered.
#[utoipa::path(post, path = "/v1/carts/{id}/checkout", tag = "carts", operation_id = "carts_checkout", params(("id" = String, Path, description = "Cart id (UUID)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first answer is replayed")), request_body(content = CheckoutRequest, description = "Empty, {}, or who orders and the shop's metadata"),
    responses((status = 201, description = "Order placed", body = crate::http::views::OrderBody), (status = 200, description = "Checked out before: its order", body = crate::http::views::OrderBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn checkout(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    key: IdempotencyKey,
    body: JsonBody<CheckoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let details = order_details(&body.value)?;
    let (id, mailbox) = cart_mailbox(engine, &caller, &request)?;
    let keyed = Keyed::new(&key, &caller, &request, &body.canonical);
    let access = caller.access();
    idempotent(engine, keyed, render_checkout, |idempotency| async move {
        ask_cart(engine, id, &mailbox, |reply, slot| CheckoutCart {
            access,
            details,
            idempotency,
            by: caller.by(),
            reply,
            slot,
        })
        .await
    })
    .await
}
