//! CORS: a browser storefront on an allowed origin may call the API; other origins get no
//! CORS headers.

use std::sync::Arc;

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::TestApp;

const SHOP: &str = "https://shop.example";

#[actix_web::test]
async fn an_allowed_origin_gets_its_preflight_and_cors_headers_and_others_get_none() {
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.http.cors.allowed_origins = vec![SHOP.to_owned()];
    })
    .await;
    let preflight = |origin: &str| {
        app.client
            .request(Method::OPTIONS, app.url("/v1/carts"))
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header("Access-Control-Request-Headers", "content-type, idempotency-key")
            .send()
    };

    let allowed = preflight(SHOP).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    let headers = allowed.headers();
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    assert!(headers[ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    let allowed_headers = headers[ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for needed in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed_headers.contains(needed), "{allowed_headers}");
    }
    assert_eq!(headers[ACCESS_CONTROL_MAX_AGE], "600");

    // The actual request from the storefront's page.
    let created = app
        .client
        .post(app.url("/v1/carts"))
        .header(ORIGIN, SHOP)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    assert!(created.headers()[ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .contains("Retry-After"));

    // Another origin: no CORS headers, on the preflight or the request.
    let elsewhere = "https://evil.example";
    let refused = preflight(elsewhere).await.unwrap();
    assert!(!refused.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_ne!(refused.status(), StatusCode::NO_CONTENT);
    let read = app
        .client
        .get(app.url("/v1/skus?limit=1"))
        .header(ORIGIN, elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK, "served, as for any client");
    assert!(!read.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[actix_web::test]
async fn no_origin_is_allowed_by_default() {
    let app = TestApp::spawn().await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/v1/carts"))
        .header(ORIGIN, SHOP)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
}
