//! Malformed requests get the right 4xx and error code, never a 5xx.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

/// One malformed request and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<String>,
    /// `None`: the admin token; `Some("")`: no header; else that header value.
    authorization: Option<&'static str>,
    content_type: &'static str,
    idempotency_key: Option<String>,
    status: StatusCode,
    code: &'static str,
}

fn case(name: &'static str, method: Method, path: &str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        body: (!body.is_empty()).then(|| body.to_owned()),
        authorization: None,
        content_type: "application/json",
        idempotency_key: None,
        status: StatusCode::from_u16(status).unwrap(),
        code,
    }
}

#[actix_web::test]
async fn malformed_requests_get_the_right_4xx_and_error_code() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 5).await;
    let held: Value = app.reserve("mug", 1, 600).await.json().await.unwrap();
    let held_id = held["reservation_id"].as_str().unwrap();
    let unknown_id = "01900000-0000-7000-8000-000000000000";
    let sku_body = r#"{"name":"Mug","price_minor":1299,"currency":"EUR"}"#;
    use Method as M;
    let mut cases = vec![
        case(
            "SKU id with a space",
            M::PUT,
            "/v1/skus/bad%20id",
            sku_body,
            400,
            "invalid_sku",
        ),
        case(
            "SKU id of 65 characters",
            M::PUT,
            &format!("/v1/skus/{}", "x".repeat(65)),
            sku_body,
            400,
            "invalid_sku",
        ),
        case(
            "SKU id with a slash-like character",
            M::GET,
            "/v1/skus/a%2Fb",
            "",
            400,
            "invalid_sku",
        ),
        case(
            "SKU without a name",
            M::PUT,
            "/v1/skus/new",
            r#"{"price_minor":1,"currency":"EUR"}"#,
            400,
            "invalid_json",
        ),
        case(
            "blank name",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"  ","price_minor":1,"currency":"EUR"}"#,
            400,
            "invalid_name",
        ),
        case(
            "negative price",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x","price_minor":-1,"currency":"EUR"}"#,
            400,
            "invalid_price",
        ),
        case(
            "price as a float",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x","price_minor":12.99,"currency":"EUR"}"#,
            400,
            "invalid_json",
        ),
        case(
            "lower-case currency",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x","price_minor":1,"currency":"eur"}"#,
            400,
            "invalid_currency",
        ),
        case(
            "negative on_hand",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x","price_minor":1,"currency":"EUR","on_hand":-1}"#,
            400,
            "invalid_on_hand",
        ),
        case(
            "unknown field",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x","price_minor":1,"currency":"EUR","colour":"red"}"#,
            400,
            "invalid_json",
        ),
        case(
            "truncated JSON",
            M::PUT,
            "/v1/skus/new",
            r#"{"name":"x""#,
            400,
            "invalid_json",
        ),
        case("JSON array body", M::PUT, "/v1/skus/new", "[]", 400, "invalid_json"),
        case(
            "restock of zero",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":0}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "negative restock",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":-5}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "restock over a million",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":1000001}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "quantity as a string",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":"1"}"#,
            400,
            "invalid_json",
        ),
        case(
            "quantity beyond 64 bits",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":1e30}"#,
            400,
            "invalid_json",
        ),
        case(
            "restock of an unknown SKU",
            M::POST,
            "/v1/skus/nope/restock",
            r#"{"qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "adjust by zero",
            M::POST,
            "/v1/skus/mug/adjust",
            r#"{"delta":0,"reason":"x"}"#,
            400,
            "invalid_delta",
        ),
        case(
            "adjust without a reason",
            M::POST,
            "/v1/skus/mug/adjust",
            r#"{"delta":1}"#,
            400,
            "invalid_json",
        ),
        case(
            "adjust with an empty reason",
            M::POST,
            "/v1/skus/mug/adjust",
            r#"{"delta":1,"reason":""}"#,
            400,
            "invalid_reason",
        ),
        case(
            "shrinkage beyond available",
            M::POST,
            "/v1/skus/mug/adjust",
            r#"{"delta":-5,"reason":"lost"}"#,
            409,
            "insufficient_stock",
        ),
        case(
            "reservation with ttl 0",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"ttl_seconds":0}"#,
            400,
            "invalid_ttl",
        ),
        case(
            "reservation with ttl over the maximum",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"ttl_seconds":86401}"#,
            400,
            "invalid_ttl",
        ),
        case(
            "reservation of zero units",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":0}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "reservation beyond stock",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":5}"#,
            409,
            "insufficient_stock",
        ),
        case(
            "reservation of an unknown SKU",
            M::POST,
            "/v1/skus/nope/reservations",
            r#"{"qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "reservation id that is not a UUID",
            M::GET,
            "/v1/reservations/abc",
            "",
            400,
            "invalid_id",
        ),
        case(
            "unknown reservation",
            M::GET,
            &format!("/v1/reservations/{unknown_id}"),
            "",
            404,
            "not_found",
        ),
        case(
            "commit of an unknown reservation",
            M::POST,
            &format!("/v1/reservations/{unknown_id}/commit"),
            "",
            404,
            "not_found",
        ),
        case(
            "release with a body field",
            M::DELETE,
            &format!("/v1/reservations/{held_id}"),
            r#"{"why":"x"}"#,
            400,
            "invalid_json",
        ),
        case(
            "list with limit 0",
            M::GET,
            "/v1/skus?limit=0",
            "",
            400,
            "invalid_query",
        ),
        case(
            "list with limit not a number",
            M::GET,
            "/v1/skus?limit=ten",
            "",
            400,
            "invalid_query",
        ),
        case(
            "list with ids and after",
            M::GET,
            "/v1/skus?ids=a&after=b",
            "",
            400,
            "invalid_query",
        ),
        case(
            "list with a bad id",
            M::GET,
            "/v1/skus?ids=ok,not%20ok",
            "",
            400,
            "invalid_sku",
        ),
        case("unknown SKU", M::GET, "/v1/skus/nope", "", 404, "not_found"),
        case(
            "location id with a space",
            M::PUT,
            "/v1/locations/bad%20id",
            r#"{"name":"Shop","kind":"store","priority":1}"#,
            400,
            "invalid_location",
        ),
        case(
            "location of an unknown kind",
            M::PUT,
            "/v1/locations/depot",
            r#"{"name":"Depot","kind":"depot","priority":1}"#,
            400,
            "invalid_kind",
        ),
        case(
            "negative location priority",
            M::PUT,
            "/v1/locations/shop",
            r#"{"name":"Shop","kind":"store","priority":-1}"#,
            400,
            "invalid_priority",
        ),
        case(
            "location without a name",
            M::PUT,
            "/v1/locations/shop",
            r#"{"name":"","kind":"store","priority":1}"#,
            400,
            "invalid_name",
        ),
        case(
            "credential with an unknown role",
            M::POST,
            "/v1/credentials",
            r#"{"name":"erp","roles":["owner"]}"#,
            400,
            "invalid_roles",
        ),
        case(
            "WebSocket ticket for an order id that is not one",
            M::POST,
            "/v1/ws/tickets",
            r#"{"order_id":"nope"}"#,
            404,
            "not_found",
        ),
        case("unknown path", M::GET, "/v1/nothing-here", "", 404, "not_found"),
        case(
            "unsupported method",
            M::PATCH,
            "/v1/skus/mug",
            "",
            405,
            "method_not_allowed",
        ),
    ];
    let mut extra = |mut case: Case, adjust: &dyn Fn(&mut Case)| {
        adjust(&mut case);
        cases.push(case);
    };
    extra(
        case("no credentials", M::PUT, "/v1/skus/new", sku_body, 401, "unauthorized"),
        &|c| c.authorization = Some(""),
    );
    extra(
        case(
            "wrong admin token",
            M::PUT,
            "/v1/skus/new",
            sku_body,
            401,
            "unauthorized",
        ),
        &|c| c.authorization = Some("Bearer wrong-token-wrong-token"),
    );
    extra(
        case(
            "basic auth instead of bearer",
            M::PUT,
            "/v1/skus/new",
            sku_body,
            401,
            "unauthorized",
        ),
        &|c| c.authorization = Some("Basic YWRtaW46YWRtaW4="),
    );
    extra(
        case(
            "reservation read without credentials",
            M::GET,
            &format!("/v1/reservations/{held_id}"),
            "",
            401,
            "unauthorized",
        ),
        &|c| c.authorization = Some(""),
    );
    extra(
        case(
            "body that is not JSON",
            M::POST,
            "/v1/skus/mug/restock",
            "qty=1",
            415,
            "unsupported_media_type",
        ),
        &|c| c.content_type = "application/x-www-form-urlencoded",
    );
    extra(
        case(
            "body over the size limit",
            M::POST,
            "/v1/skus/mug/restock",
            &format!(r#"{{"qty":1,"pad":"{}"}}"#, "x".repeat(20_000)),
            413,
            "payload_too_large",
        ),
        &|_| {},
    );
    extra(
        case(
            "idempotency key of 256 characters",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":1}"#,
            400,
            "invalid_idempotency_key",
        ),
        &|c| c.idempotency_key = Some("k".repeat(256)),
    );
    extra(
        case(
            "idempotency key with a control character",
            M::POST,
            "/v1/skus/mug/restock",
            r#"{"qty":1}"#,
            400,
            "invalid_idempotency_key",
        ),
        &|c| c.idempotency_key = Some("tab\there".to_owned()),
    );

    // Locations, stock per location, transfers and the ledger.
    let north = app
        .admin(Method::PUT, "/v1/locations/north")
        .json(&serde_json::json!({"name": "North", "kind": "warehouse", "priority": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(north.status(), StatusCode::CREATED);
    cases.extend([
        case(
            "restock at an unknown location",
            M::POST,
            "/v1/skus/mug/locations/moon/restock",
            r#"{"qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "restock at a bad location id",
            M::POST,
            "/v1/skus/mug/locations/bad%20id/restock",
            r#"{"qty":1}"#,
            400,
            "invalid_location",
        ),
        case(
            "restock of an unknown SKU at a location",
            M::POST,
            "/v1/skus/none/locations/north/restock",
            r#"{"qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "restock of 0 at a location",
            M::POST,
            "/v1/skus/mug/locations/north/restock",
            r#"{"qty":0}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "restock with a blank reason",
            M::POST,
            "/v1/skus/mug/locations/north/restock",
            r#"{"qty":1,"reason":" "}"#,
            400,
            "invalid_reason",
        ),
        case(
            "adjust at a location without a reason",
            M::POST,
            "/v1/skus/mug/locations/north/adjust",
            r#"{"delta":1}"#,
            400,
            "invalid_json",
        ),
        case(
            "adjust by 0 at a location",
            M::POST,
            "/v1/skus/mug/locations/north/adjust",
            r#"{"delta":0,"reason":"x"}"#,
            400,
            "invalid_delta",
        ),
        case(
            "adjust below zero at a location",
            M::POST,
            "/v1/skus/mug/locations/north/adjust",
            r#"{"delta":-1,"reason":"x"}"#,
            409,
            "insufficient_stock",
        ),
        case(
            "count below zero",
            M::POST,
            "/v1/skus/mug/locations/north/count",
            r#"{"on_hand":-1}"#,
            400,
            "invalid_on_hand",
        ),
        case(
            "count as text",
            M::POST,
            "/v1/skus/mug/locations/north/count",
            r#"{"on_hand":"3"}"#,
            400,
            "invalid_json",
        ),
        case(
            "count with an unknown field",
            M::POST,
            "/v1/skus/mug/locations/north/count",
            r#"{"on_hand":3,"by":"me"}"#,
            400,
            "invalid_json",
        ),
        case(
            "count below what is held",
            M::POST,
            "/v1/skus/mug/locations/default/count",
            r#"{"on_hand":0}"#,
            409,
            "insufficient_stock",
        ),
        case(
            "transfer to where it is",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"mug","from":"north","to":"north","qty":1}"#,
            400,
            "invalid_transfer",
        ),
        case(
            "transfer of an unknown SKU",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"none","from":"default","to":"north","qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "transfer of a bad SKU id",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"a b","from":"default","to":"north","qty":1}"#,
            400,
            "invalid_sku",
        ),
        case(
            "transfer of 0",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"mug","from":"default","to":"north","qty":0}"#,
            400,
            "invalid_quantity",
        ),
        case(
            "transfer to an unknown location",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"mug","from":"default","to":"moon","qty":1}"#,
            404,
            "not_found",
        ),
        case(
            "transfer of more than is free",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"mug","from":"default","to":"north","qty":5}"#,
            409,
            "insufficient_stock",
        ),
        case(
            "transfer without a destination",
            M::POST,
            "/v1/transfers",
            r#"{"sku":"mug","from":"default","qty":1}"#,
            400,
            "invalid_json",
        ),
        case(
            "receive a bad transfer id",
            M::POST,
            "/v1/transfers/nope/receive",
            "{}",
            400,
            "invalid_id",
        ),
        case(
            "receive an unknown transfer",
            M::POST,
            &format!("/v1/transfers/{unknown_id}/receive"),
            "{}",
            404,
            "not_found",
        ),
        case(
            "read a bad transfer id",
            M::GET,
            "/v1/transfers/nope",
            "",
            400,
            "invalid_id",
        ),
        case(
            "ledger page of 0",
            M::GET,
            "/v1/skus/mug/movements?limit=0",
            "",
            400,
            "invalid_query",
        ),
        case(
            "ledger in no order",
            M::GET,
            "/v1/skus/mug/movements?order=up",
            "",
            400,
            "invalid_query",
        ),
        case(
            "ledger of a bad location",
            M::GET,
            "/v1/skus/mug/movements?location=a%20b",
            "",
            400,
            "invalid_location",
        ),
        case(
            "ledger of an unknown SKU",
            M::GET,
            "/v1/skus/none/movements",
            "",
            404,
            "not_found",
        ),
        case(
            "hold at a location and by preference",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"location":"north","locations":["north"]}"#,
            400,
            "invalid_placement",
        ),
        case(
            "hold by an empty preference",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"locations":[]}"#,
            400,
            "invalid_placement",
        ),
        case(
            "hold preferring a location twice",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"locations":["north","north"]}"#,
            400,
            "invalid_placement",
        ),
        case(
            "hold at an unknown location",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"location":"moon"}"#,
            404,
            "not_found",
        ),
        case(
            "hold at a bad location id",
            M::POST,
            "/v1/skus/mug/reservations",
            r#"{"qty":1,"location":"a b"}"#,
            400,
            "invalid_location",
        ),
        case(
            "storefront view of no location",
            M::GET,
            "/v1/skus?ids=mug&locations=,",
            "",
            400,
            "invalid_query",
        ),
        case(
            "storefront view of a bad location",
            M::GET,
            "/v1/skus?ids=mug&locations=a%20b",
            "",
            400,
            "invalid_location",
        ),
        case(
            "negative low_stock_threshold",
            M::PUT,
            "/v1/skus/mug",
            r#"{"name":"Mug","price_minor":1299,"currency":"EUR","low_stock_threshold":-1}"#,
            400,
            "invalid_low_stock_threshold",
        ),
    ]);

    let mut failures = Vec::new();
    for case in &cases {
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        match case.authorization {
            None => request = request.header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}")),
            Some("") => {}
            Some(value) => request = request.header(AUTHORIZATION, value),
        }
        if let Some(body) = &case.body {
            request = request.header(CONTENT_TYPE, case.content_type).body(body.clone());
        }
        if let Some(key) = &case.idempotency_key {
            request = request.header("Idempotency-Key", key.as_str());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() || status != case.status || error_code(&body) != case.code {
            failures.push(format!(
                "{}: expected {} {}, got {} {}",
                case.name, case.status, case.code, status, body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        crate::helpers::counters(&app.sku("mug").await),
        (5, 1, 4),
        "no malformed request changed stock"
    );
}

#[actix_web::test]
async fn the_openapi_description_covers_every_route() {
    let app = crate::helpers::TestApp::spawn().await;
    let spec: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut described: Vec<String> = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            described.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    described.sort();
    // The route table, where every route declares who may call it (the description itself
    // is not described, nor are the web pages).
    let routes: Vec<String> = stockroom::http::auth::ROUTES
        .iter()
        .filter(|route| route.path != "/openapi.json" && !stockroom::http::pages::PATHS.contains(&route.path))
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    let mut expected = routes;
    expected.sort();
    assert_eq!(
        described, expected,
        "every route is described and has an access rule, and nothing else"
    );
}
