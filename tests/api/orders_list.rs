//! The order list for the back office: by status, by creation time, paged by id.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

/// Order ids of a list answer, in order.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn staff_list_orders_by_status_and_creation_time_page_by_page() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 100).await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        let cart = app.create_cart().await;
        let with_line: Value = app.set_line(&cart, "mug", 1).await.json().await.unwrap();
        assert_eq!(
            with_line["lines"][0]["name"], "Product mug",
            "a cart line shows its SKU's name"
        );
        let order: Value = app.checkout(&cart).await.json().await.unwrap();
        assert_eq!(order["cart_id"], cart.id.as_str(), "an order names its cart");
        orders.push(order);
    }
    let all_ids: Vec<String> = orders
        .iter()
        .map(|order| order["order_id"].as_str().unwrap().to_owned())
        .collect();
    // Two of them paid.
    let psp = app.credential("psp", &["payments"]).await;
    for order in &orders[1..3] {
        let path = format!("/v1/orders/{}/pay", order["order_id"].as_str().unwrap());
        let paid = app
            .with_token(&psp, Method::POST, &path)
            .json(&json!({"payment_ref": "p"}))
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), StatusCode::OK);
    }
    let warehouse = app.credential("warehouse", &["fulfilment"]).await;

    let everything = app.read_json(&warehouse, "/v1/orders").await;
    assert_eq!(ids(&everything), all_ids, "oldest first");
    assert_eq!(everything["next"], Value::Null);
    assert_eq!(
        everything["items"][0]["lines"][0]["sku"], "mug",
        "each item is the order body"
    );

    let paid = app.read_json(&warehouse, "/v1/orders?status=paid").await;
    assert_eq!(ids(&paid), all_ids[1..3]);

    // Page by page, two at a time.
    let mut seen = Vec::new();
    let mut path = "/v1/orders?limit=2".to_owned();
    loop {
        let page = app.read_json(ADMIN_TOKEN, &path).await;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/orders?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, all_ids);

    // From the fourth order's creation on.
    let since = orders[3]["created_at"].as_str().unwrap();
    let recent = app
        .read_json(ADMIN_TOKEN, &format!("/v1/orders?created_after={since}"))
        .await;
    let recent_ids = ids(&recent);
    assert!(recent_ids.ends_with(&all_ids[3..]), "{recent_ids:?}");
    assert!(!recent_ids.contains(&all_ids[0]));

    // The shopper, the payment service and the public may not list orders.
    let cart = app.create_cart().await;
    let shopper = app.as_cart(&cart, Method::GET, "/v1/orders").send().await.unwrap();
    assert_eq!(shopper.status(), StatusCode::FORBIDDEN);
    let payments = app.with_token(&psp, Method::GET, "/v1/orders").send().await.unwrap();
    assert_eq!(payments.status(), StatusCode::FORBIDDEN);
    let public = app.client.get(app.url("/v1/orders")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::UNAUTHORIZED);

    for (query, code) in [
        ("status=lost", "invalid_status"),
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("created_after=yesterday", "invalid_query"),
        ("after=nope", "invalid_id"),
        ("colour=red", "invalid_query"),
    ] {
        let response = app
            .admin(Method::GET, &format!("/v1/orders?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{query}");
    }
}

#[actix_web::test]
async fn an_order_keeps_who_ordered_and_the_shops_metadata_through_a_restart() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 10).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "mug", 1).await;
    let checkout = |body: Value| {
        app.as_cart(&cart, Method::POST, &format!("/v1/carts/{}/checkout", cart.id))
            .json(&body)
            .send()
    };
    for (bad, code) in [
        (json!({"customer": {"email": "not an email"}}), "invalid_customer"),
        (json!({"customer": {"phone": "123"}}), "invalid_json"),
        (
            json!({"customer": {"shipping_address": {"line 1": "x"}}}),
            "invalid_customer",
        ),
        (json!({"metadata": {"k": "v".repeat(513)}}), "invalid_metadata"),
        (
            json!({"metadata": (0..33).map(|n| (format!("k{n}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "invalid_metadata",
        ),
    ] {
        let refused = checkout(bad.clone()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&refused.json().await.unwrap()), code, "{bad}");
    }
    let customer = json!({
        "reference": "cust-881",
        "email": "ada@example.com",
        "shipping_address": {"name": "Ada", "line1": "1 Analytical Way", "city": "London", "country": "GB"}
    });
    let metadata = json!({"channel": "web", "campaign": "spring-sale"});
    let placed = checkout(json!({"customer": customer, "metadata": metadata}))
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    let order: Value = placed.json().await.unwrap();
    assert_eq!((&order["customer"], &order["metadata"]), (&customer, &metadata));
    let id = order["order_id"].as_str().unwrap().to_owned();
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Default::default(), |_| {}).await;
    let read = app.read_json(ADMIN_TOKEN, &format!("/v1/orders/{id}")).await;
    assert_eq!((&read["customer"], &read["metadata"]), (&customer, &metadata));
}
