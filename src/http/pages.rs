//! The web pages, embedded in the binary: the storefront (`GET /`), its order tracking page
//! (`GET /orders/{id}`) and the back office (`GET /admin`), with their scripts and style
//! under `/ui/`.
//!
//! They are plain HTML, CSS and JavaScript written by hand: no build step, no CDN, nothing
//! fetched from elsewhere, so they work offline. The pages call the same JSON API as any
//! client, from the same origin. No secret is ever written into them: the storefront keeps
//! its cart token in the browser, and the back office asks for a credential and keeps it in
//! the tab (`sessionStorage`). `[ui] enabled = false` answers 404 for all of them.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::path_param;
use super::AppState;
use crate::domain::OrderId;

/// The paths of the pages and their assets: not part of the JSON API, so not in its
/// OpenAPI description.
pub const PATHS: &[&str] = &["/", "/admin", "/orders/{id}", "/ui/{file}"];

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The files under `/ui/`.
const ASSETS: &[Asset] = &[
    Asset::style("app.css", include_str!("pages/app.css")),
    Asset::script("common.js", include_str!("pages/common.js")),
    Asset::script("storefront.js", include_str!("pages/storefront.js")),
    Asset::script("order.js", include_str!("pages/order.js")),
    Asset::script("admin.js", include_str!("pages/admin.js")),
    Asset::script("explorer.js", include_str!("pages/explorer.js")),
];

impl Asset {
    const fn script(name: &'static str, body: &'static str) -> Self {
        Asset {
            name,
            content_type: "text/javascript; charset=utf-8",
            body,
        }
    }

    const fn style(name: &'static str, body: &'static str) -> Self {
        Asset {
            name,
            content_type: "text/css; charset=utf-8",
            body,
        }
    }
}

const STOREFRONT: &str = include_str!("pages/index.html");
const ORDER: &str = include_str!("pages/order.html");
const ADMIN: &str = include_str!("pages/admin.html");

/// Where the pages may load from and talk to: this origin only (its WebSockets included),
/// no inline script, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the storefront.
pub async fn storefront(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&state, STOREFRONT)
}

/// `GET /orders/{id}`: follows one order live (the browser that checked it out holds its
/// cart token).
pub async fn order(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    OrderId::parse(path_param(&request, "id")).map_err(|_| ApiError::NotFound)?;
    page(&state, ORDER)
}

/// `GET /admin`: the back office.
pub async fn admin(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&state, ADMIN)
}

/// `GET /ui/{file}`: a script or the style sheet, with an `ETag` (`304` on `If-None-Match`).
pub async fn asset(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !state.settings.ui.enabled {
        return Err(ApiError::NotFound);
    }
    let name = path_param(&request, "file");
    let index = ASSETS
        .iter()
        .position(|asset| asset.name == name)
        .ok_or(ApiError::NotFound)?;
    let asset = &ASSETS[index];
    let tag = &etags()[index];
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|candidate| candidate.trim() == tag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, tag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body))
}

/// The strong `ETag` of each asset: a hash of its bytes, worked out once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body.as_bytes());
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// A page, with what it needs to know of the settings filled in.
fn page(state: &AppState, template: &str) -> Result<HttpResponse, ApiError> {
    let ui = &state.settings.ui;
    if !ui.enabled {
        return Err(ApiError::NotFound);
    }
    let body = template.replace("{{demo_payments}}", if ui.demo_payments { "true" } else { "false" });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_and_style_a_page_names_is_embedded() {
        for page in [STOREFRONT, ORDER, ADMIN] {
            for reference in page.split("\"/ui/").skip(1) {
                let name = reference.split('"').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|asset| asset.name == name),
                    "a page loads /ui/{name}, which is not embedded"
                );
            }
        }
    }

    #[test]
    fn no_page_runs_inline_script_or_loads_from_elsewhere() {
        for page in [STOREFRONT, ORDER, ADMIN] {
            assert!(!page.contains("<script>"), "inline script is refused by the policy");
            let handler = page.split(" on").skip(1).find(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(handler.is_none(), "inline handlers are refused by the policy");
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "nothing from elsewhere"
            );
        }
        for asset in ASSETS {
            assert!(
                !asset.body.contains("http://") && !asset.body.contains("https://"),
                "{} loads from elsewhere",
                asset.name
            );
        }
    }
}
