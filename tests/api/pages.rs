//! The web pages as a client sees them over HTTP (the browser tests in `tests/ui/` drive them
//! in Chromium): embedded, locked to their own origin, free of secrets, and off when
//! `ui.enabled` is false; and the demo payment the storefront page uses.

use std::sync::Arc;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

async fn app_with(demo_payments: bool, enabled: bool) -> TestApp {
    TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.ui.demo_payments = demo_payments;
        settings.ui.enabled = enabled;
    })
    .await
}

#[actix_web::test]
async fn the_pages_and_their_assets_are_served_from_the_binary_with_no_secret_in_them() {
    let app = app_with(false, true).await;
    let order = "019a0000-0000-7000-8000-000000000000";
    for (path, marker) in [
        ("/", "stockroom shop"),
        ("/admin", "back office"),
        (&format!("/orders/{order}") as &str, "Your order"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains(marker), "{path}");
        assert!(!page.contains(ADMIN_TOKEN), "{path} carries the admin token");
        assert!(!page.contains("{{"), "{path} has an unfilled placeholder");
        // Every script and style sheet it names is there, and says what it is.
        for reference in page.split("\"/ui/").skip(1) {
            let name = reference.split('"').next().unwrap();
            let asset = app.client.get(app.url(&format!("/ui/{name}"))).send().await.unwrap();
            assert_eq!(asset.status(), StatusCode::OK, "/ui/{name}");
            let kind = asset.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
            assert!(
                kind.starts_with(if name.ends_with(".css") {
                    "text/css"
                } else {
                    "text/javascript"
                }),
                "{kind}"
            );
            let tag = asset.headers()[header::ETAG].clone();
            assert!(!asset.text().await.unwrap().contains(ADMIN_TOKEN));
            let again = app
                .client
                .get(app.url(&format!("/ui/{name}")))
                .header(header::IF_NONE_MATCH, tag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "/ui/{name} unchanged");
        }
    }
    for missing in ["/ui/nothing.js", "/ui/..%2Fconfig.toml", "/orders/not-an-order"] {
        let response = app.client.get(app.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "not_found");
    }
}

#[actix_web::test]
async fn with_the_pages_off_only_the_api_answers() {
    let app = app_with(false, false).await;
    for path in [
        "/",
        "/admin",
        "/orders/019a0000-0000-7000-8000-000000000000",
        "/ui/app.css",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn the_storefront_page_says_whether_demo_payments_are_on() {
    for demo in [false, true] {
        let app = app_with(demo, true).await;
        let page = app.client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(&format!("data-demo-payments=\"{demo}\"")), "{demo}");
    }
}

#[actix_web::test]
async fn a_demo_payment_pays_only_the_shoppers_own_order_and_only_when_switched_on() {
    let off = app_with(false, true).await;
    off.create_sku("mug", 5).await;
    let cart = off.create_cart().await;
    off.set_line(&cart, "mug", 1).await;
    let order: Value = off.checkout(&cart).await.json().await.unwrap();
    let path = format!("/v1/demo/orders/{}/pay", order["order_id"].as_str().unwrap());
    let refused = off
        .as_cart(&cart, Method::POST, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::NOT_FOUND,
        "off by default: as if not there"
    );
    let still: Value = off
        .get_as(&cart, &format!("/v1/orders/{}", order["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(still["status"], "placed");

    let app = app_with(true, true).await;
    app.create_sku("mug", 5).await;
    let payments = app.credential("psp", &["payments"]).await;
    let cart = app.create_cart().await;
    let other = app.create_cart().await;
    app.set_line(&cart, "mug", 2).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap();
    let path = format!("/v1/demo/orders/{id}/pay");
    let by_other = app
        .as_cart(&other, Method::POST, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_other.status(),
        StatusCode::NOT_FOUND,
        "another cart's token finds nothing"
    );
    let by_psp = app
        .client
        .post(app.url(&path))
        .bearer_auth(&payments)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_psp.status(),
        StatusCode::FORBIDDEN,
        "the payment service pays by the real route"
    );
    let anonymous = app.client.post(app.url(&path)).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unknown = app
        .as_cart(
            &cart,
            Method::POST,
            "/v1/demo/orders/019a0000-0000-7000-8000-000000000000/pay",
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let paid = app
        .as_cart(&cart, Method::POST, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["payment_ref"], "demo");
    let again = app
        .as_cart(&cart, Method::POST, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(&again.json().await.unwrap()), "invalid_transition");
    // Paid is paid: the shopper still may not cancel it.
    let cancel = app
        .as_cart(&cart, Method::POST, &format!("/v1/orders/{id}/cancel"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::FORBIDDEN);
    let sku: Value = app.read_json(ADMIN_TOKEN, "/v1/skus/mug").await;
    assert_eq!((sku["on_hand"].as_u64(), sku["committed"].as_u64()), (Some(5), Some(2)));
}
