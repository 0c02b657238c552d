//! Credential routes (admin only): `POST /v1/credentials` creates a named credential with
//! roles and shows its token once; `GET` lists them (never a token); `DELETE
//! /v1/credentials/{name}` revokes one for the next request on.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::command::durable;
use super::error::ApiError;
use super::request::JsonBody;
use super::views::to_json;
use super::{path_param, AppState};
use crate::access::Caller;
use crate::credentials::{CredentialError, CredentialInfo};
use crate::domain::clock::rfc3339;

/// Body of `POST /v1/credentials`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredentialRequest {
    /// 1 to 64 of `[A-Za-z0-9._-]`; not `admin`, `cart`, `anonymous` or `system`.
    name: String,
    /// One or more of `inventory`, `fulfilment`, `payments`, `read`.
    roles: Vec<String>,
}

/// A credential as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialBody {
    /// Its name (recorded as `by` with the changes it makes).
    pub name: String,
    /// Its roles.
    pub roles: Vec<&'static str>,
    /// When it was created (RFC 3339 UTC).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// The token: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `GET /v1/credentials`.
#[derive(Serialize)]
struct CredentialList {
    items: Vec<CredentialBody>,
}

impl CredentialBody {
    fn new(info: CredentialInfo, token: Option<String>) -> Self {
        CredentialBody {
            name: info.name,
            roles: info.roles.iter().map(|role| role.as_str()).collect(),
            created_at: rfc3339(info.created_at_ms),
            created_by: info.created_by,
            token,
        }
    }
}

impl From<CredentialError> for ApiError {
    fn from(error: CredentialError) -> Self {
        let message = error.to_string();
        match error {
            CredentialError::InvalidName(_) => ApiError::bad_request("invalid_name", message),
            CredentialError::InvalidRoles(_) => ApiError::bad_request("invalid_roles", message),
            CredentialError::Exists(_) => ApiError::conflict("credential_exists", message),
            CredentialError::NotFound(_) => ApiError::NotFound,
            CredentialError::Overloaded => ApiError::Overloaded,
        }
    }
}

/// `POST /v1/credentials` (admin): a named credential; its token is shown only here.
#[utoipa::path(post, path = "/v1/credentials", tag = "credentials", operation_id = "credentials_create", request_body = CreateCredentialRequest,
    responses((status = 201, description = "Created; the token is shown only here", body = CredentialBody), crate::http::openapi::BodyErrors, crate::http::openapi::AuthErrors, crate::http::openapi::Conflict, crate::http::openapi::Unavailable), security(("admin" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody<CreateCredentialRequest>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let created = engine.credentials.create(
        &engine.writer,
        &body.value.name,
        &body.value.roles,
        &caller.by(),
        engine.clock.now_ms(),
    )?;
    durable(engine, created.ticket).await?;
    let body = CredentialBody::new(created.info, Some(created.token));
    Ok(HttpResponse::Created()
        .content_type("application/json")
        .body(to_json(&body)))
}

/// `GET /v1/credentials` (admin): every credential, by name, without tokens.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", operation_id = "credentials_list",
    responses((status = 200, description = "Every credential", body = crate::http::openapi::CredentialList), crate::http::openapi::AuthErrors, crate::http::openapi::Unavailable), security(("admin" = [])))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let items: Vec<CredentialBody> = engine
        .credentials
        .list()
        .into_iter()
        .map(|info| CredentialBody::new(info, None))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&CredentialList { items })))
}

/// `DELETE /v1/credentials/{name}` (admin): revokes the credential; its token gets `401` from
/// the next request on.
#[utoipa::path(delete, path = "/v1/credentials/{name}", tag = "credentials", operation_id = "credentials_revoke", params(("name" = String, Path, description = "Credential name")),
    responses((status = 200, description = "Revoked", body = CredentialBody), crate::http::openapi::AuthErrors, crate::http::openapi::NotFound, crate::http::openapi::Unavailable), security(("admin" = [])))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let (info, ticket) = engine.credentials.revoke(
        &engine.writer,
        path_param(&request, "name"),
        &caller.by(),
        engine.clock.now_ms(),
    )?;
    durable(engine, ticket).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&CredentialBody::new(info, None))))
}
