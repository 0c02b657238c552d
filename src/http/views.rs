//! JSON bodies of the API, and the [`Render`](crate::actors::sku::Render) functions that turn
//! an actor's answer into a status and body (the same bytes are stored for idempotent replay).

use serde::Serialize;

use super::error::ApiError;
use super::error_parts;
use crate::actors::{SkuOutcome, SkuReply};
use crate::domain::clock::rfc3339;
use crate::domain::sku::{Reservation, ReservationState, SkuView};

/// The SKU body: `available = on_hand - reserved`.
#[derive(Debug, Serialize)]
pub struct SkuBody<'a> {
    /// The SKU id.
    pub sku: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Unit price in minor units.
    pub price_minor: u64,
    /// ISO-4217 code.
    pub currency: &'a str,
    /// Units in stock.
    pub on_hand: u64,
    /// Units held by reservations.
    pub reserved: u64,
    /// Units a reservation can take.
    pub available: u64,
}

impl<'a> From<&'a SkuView> for SkuBody<'a> {
    fn from(view: &'a SkuView) -> Self {
        SkuBody {
            sku: view.sku.as_str(),
            name: view.product.name.as_str(),
            price_minor: view.product.price_minor,
            currency: view.product.currency.as_str(),
            on_hand: view.on_hand,
            reserved: view.reserved,
            available: view.available,
        }
    }
}

/// The reservation body.
#[derive(Debug, Serialize)]
pub struct ReservationBody<'a> {
    /// The reservation id.
    pub reservation_id: String,
    /// The SKU it holds.
    pub sku: &'a str,
    /// Units.
    pub qty: u64,
    /// `held`, `committed`, `released` or `expired`.
    pub state: ReservationState,
    /// When it was taken (RFC 3339 UTC).
    pub created_at: String,
    /// When it lapses, or lapsed (RFC 3339 UTC).
    pub expires_at: String,
    /// When it left `held`, if it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
}

impl<'a> From<&'a Reservation> for ReservationBody<'a> {
    fn from(reservation: &'a Reservation) -> Self {
        ReservationBody {
            reservation_id: reservation.id.to_string(),
            sku: reservation.sku.as_str(),
            qty: reservation.qty,
            state: reservation.state,
            created_at: rfc3339(reservation.created_ms),
            expires_at: rfc3339(reservation.expires_ms),
            settled_at: reservation.settled_ms.map(rfc3339),
        }
    }
}

/// Serialises a body; our bodies are plain structs, so this cannot fail in practice.
pub fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

fn unexpected(reply: &SkuReply) -> (u16, Vec<u8>) {
    error_parts(&ApiError::Internal(anyhow::anyhow!(
        "unexpected actor answer: {reply:?}"
    )))
}

/// `PUT /v1/skus/{sku}`: 201 when created, 200 when updated.
pub fn render_upsert(reply: &SkuReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Sku { view, created }) => (if *created { 201 } else { 200 }, to_json(&SkuBody::from(view))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Restock and adjust: 200 with the SKU.
pub fn render_sku(reply: &SkuReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Sku { view, .. }) => (200, to_json(&SkuBody::from(view))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Creating a reservation: 201 with the reservation.
pub fn render_reserved(reply: &SkuReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Reservation(reservation)) => (201, to_json(&ReservationBody::from(reservation))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}

/// Releasing or committing a reservation: 200 with the reservation.
pub fn render_reservation(reply: &SkuReply) -> (u16, Vec<u8>) {
    match reply {
        Ok(SkuOutcome::Reservation(reservation)) => (200, to_json(&ReservationBody::from(reservation))),
        Err(failure) => error_parts(&failure.clone().into()),
        Ok(_) => unexpected(reply),
    }
}
