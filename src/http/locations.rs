//! Location routes: `PUT /v1/locations/{loc}` (inventory) creates or changes a warehouse or
//! store; `GET /v1/locations` lists them (`default` always among them).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::command::durable;
use super::error::ApiError;
use super::request::JsonBody;
use super::views::to_json;
use super::{path_param, AppState};
use crate::access::Caller;
use crate::domain::location::{Location, LocationId};
use crate::locations::LocationError;

/// Body of `PUT /v1/locations/{loc}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutLocationRequest {
    /// Display name.
    name: String,
    /// `warehouse` or `store`.
    kind: String,
    /// Allocation order, 0 to 1,000,000: lower is chosen first.
    priority: i64,
    /// Whether it takes new holds (true when omitted).
    #[serde(default = "active_by_default")]
    active: bool,
}

fn active_by_default() -> bool {
    true
}

/// A location.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationBody {
    /// Its id.
    pub location: String,
    /// Display name.
    pub name: String,
    /// `warehouse` or `store`.
    pub kind: &'static str,
    /// Allocation order: lower is chosen first.
    pub priority: i64,
    /// Whether it takes new holds.
    pub active: bool,
}

impl LocationBody {
    fn new(id: &LocationId, location: &Location) -> Self {
        LocationBody {
            location: id.to_string(),
            name: location.name.clone(),
            kind: location.kind.as_str(),
            priority: location.priority,
            active: location.active,
        }
    }
}

/// `GET /v1/locations`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationList {
    /// Every location, by id.
    pub items: Vec<LocationBody>,
}

/// `PUT /v1/locations/{loc}` (inventory): creates (201) or changes (200) a location. Saving
/// the same settings again changes nothing and answers 200.
#[utoipa::path(put, path = "/v1/locations/{loc}", tag = "locations", operation_id = "locations_put", params(("loc" = String, Path, description = "Location id: 1 to 64 of letters, digits, '-', '_', '.'")), request_body = PutLocationRequest,
    responses((status = 201, description = "Created", body = LocationBody), (status = 200, description = "Updated, or unchanged", body = LocationBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: JsonBody<PutLocationRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let id = LocationId::parse(path_param(&request, "loc"))?;
    let fields = &body.value;
    let location = Location::parse(&fields.name, &fields.kind, fields.priority, fields.active)?;
    let (created, ticket) = engine
        .locations
        .save(
            &engine.writer,
            id.clone(),
            location.clone(),
            &caller.by(),
            engine.clock.now_ms(),
        )
        .map_err(|LocationError::Overloaded| ApiError::Overloaded)?;
    durable(engine, ticket).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response
        .content_type("application/json")
        .body(to_json(&LocationBody::new(&id, &location))))
}

/// `GET /v1/locations`: every location, by id.
#[utoipa::path(get, path = "/v1/locations", tag = "locations", operation_id = "locations_list",
    responses((status = 200, description = "Every location", body = LocationList), crate::http::openapi::AuthErrors, crate::http::openapi::Unavailable), security(("admin" = []), ("credential" = [])))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let items = engine
        .locations
        .list()
        .iter()
        .map(|(id, location)| LocationBody::new(id, location))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&LocationList { items })))
}
