//! WebSocket tickets: `POST /v1/ws/tickets` trades the credentials of a request for a
//! single-use ticket to one order's tracking socket, valid [`TICKET_TTL_MS`], passed as
//! `?ticket=`. A ticket in a URL that ends up in a proxy's log is worth nothing: it was used
//! at once, or it lapsed. (`?token=` still works, and leaks the token itself.)

use actix_web::{web, HttpResponse};
use dashmap::DashMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::request::JsonBody;
use super::views::to_json;
use super::AppState;
use crate::access::Caller;
use crate::actors::order::{GetOrder, OrderFailure};
use crate::domain::clock::rfc3339;
use crate::domain::OrderId;

/// How long a ticket is valid.
pub const TICKET_TTL_MS: u64 = 30_000;

/// Tickets outstanding at most (unused ones lapse after 30 s).
const TICKETS_MAX: usize = 100_000;

/// Every ticket starts with this.
const TICKET_PREFIX: &str = "wst_";

struct Issued {
    caller: Caller,
    order: OrderId,
    expires_ms: u64,
}

/// The tickets not yet used, by the hash of the ticket.
#[derive(Default)]
pub struct WsTickets {
    issued: DashMap<[u8; 32], Issued>,
}

impl WsTickets {
    /// A ticket that lets `caller` open `order`'s tracking socket once before
    /// `now_ms + TICKET_TTL_MS`; `None` when too many are outstanding.
    pub fn issue(&self, caller: Caller, order: OrderId, now_ms: u64) -> Option<(String, u64)> {
        if self.issued.len() >= TICKETS_MAX {
            self.issued.retain(|_, issued| issued.expires_ms > now_ms);
            if self.issued.len() >= TICKETS_MAX {
                return None;
            }
        }
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let ticket = format!("{TICKET_PREFIX}{}", hex::encode(secret));
        let expires_ms = now_ms.saturating_add(TICKET_TTL_MS);
        self.issued.insert(
            hash(&ticket),
            Issued {
                caller,
                order,
                expires_ms,
            },
        );
        Some((ticket, expires_ms))
    }

    /// Uses `ticket` for the socket of the order `order` (as written in the path): the
    /// caller it was issued to, once, before it lapses, and only for that order.
    pub fn redeem(&self, ticket: &str, order: &str, now_ms: u64) -> Option<Caller> {
        let (_, issued) = self.issued.remove(&hash(ticket))?;
        (issued.expires_ms > now_ms && issued.order.to_string() == order).then_some(issued.caller)
    }
}

fn hash(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

/// Body of `POST /v1/ws/tickets`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The order whose tracking socket the ticket opens.
    order_id: String,
}

/// A ticket.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TicketBody {
    /// Pass as `?ticket=`; single use.
    pub ticket: String,
    /// When it lapses (RFC 3339 UTC).
    pub expires_at: String,
}

/// `POST /v1/ws/tickets`: a single-use ticket to one order's tracking socket, for the
/// credentials that may track it (the cart token of its cart, or a role that may).
#[utoipa::path(post, path = "/v1/ws/tickets", tag = "websocket", operation_id = "ws_tickets_create", request_body = TicketRequest,
    responses((status = 201, description = "A ticket, valid 30 s, for one connection", body = TicketBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("cart" = []), ("admin" = []), ("credential" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<TicketRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = OrderId::parse(&body.value.order_id).map_err(|_| ApiError::NotFound)?;
    let mailbox = engine.registry.order(&id)?.ok_or(ApiError::NotFound)?;
    let access = caller.access();
    let answer = mailbox
        .ask(|reply, slot| GetOrder { access, reply, slot })?
        .await
        .map_err(|_| ApiError::Unavailable)?;
    match answer.value {
        Ok(_) => {}
        Err(OrderFailure::Overloaded) => return Err(ApiError::Overloaded),
        Err(_) => return Err(ApiError::NotFound),
    }
    let (ticket, expires_ms) = engine
        .ws_tickets
        .issue(caller, id, engine.clock.now_ms())
        .ok_or(ApiError::Overloaded)?;
    let body = TicketBody {
        ticket,
        expires_at: rfc3339(expires_ms),
    };
    Ok(HttpResponse::Created()
        .content_type("application/json")
        .body(to_json(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_its_order_once_before_it_lapses() {
        let tickets = WsTickets::default();
        let order = OrderId::generate();
        let (ticket, expires_ms) = tickets.issue(Caller::Admin, order, 1_000).unwrap();
        assert_eq!(expires_ms, 31_000);
        assert_eq!(tickets.redeem(&ticket, &order.to_string(), 30_999), Some(Caller::Admin));
        assert_eq!(tickets.redeem(&ticket, &order.to_string(), 30_999), None, "single use");

        let (late, _) = tickets.issue(Caller::Admin, order, 1_000).unwrap();
        assert_eq!(tickets.redeem(&late, &order.to_string(), 31_000), None, "lapsed");

        let (elsewhere, _) = tickets.issue(Caller::Admin, order, 1_000).unwrap();
        assert_eq!(
            tickets.redeem(&elsewhere, &OrderId::generate().to_string(), 2_000),
            None
        );
        assert_eq!(tickets.redeem("wst_unknown", &order.to_string(), 2_000), None);
    }
}
