//! Who may call what: the access matrix generated from the route table, named credentials
//! and their revocation, the shopper's limits on an order, what the public sees of stock,
//! and WebSocket tickets.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::access::{Role, Rule};
use stockroom::config::PublicStock;
use stockroom::domain::clock::{Clock, ManualClock, SystemClock};
use stockroom::http::auth::{RouteRule, ROUTES};
use stockroom::startup::Options;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::{error_code, TestApp, TestCart, ADMIN_TOKEN};

/// Who tries a route in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    OwnCart,
    OtherCart,
    Role(Role),
    Revoked,
    Admin,
}

/// What a route's rule says `who` gets: `None` for "let through" (the handler answers), or
/// the refusal.
fn expected(rule: Rule, who: Who) -> Option<StatusCode> {
    let role_listed = |roles: &[Role], role: Role| roles.contains(&role);
    match (rule, who) {
        (_, Who::Admin) => None,
        (_, Who::Revoked) => Some(StatusCode::UNAUTHORIZED),
        (Rule::Public, _) => None,
        (_, Who::Nobody) => Some(StatusCode::UNAUTHORIZED),
        (Rule::Owner(_), Who::OwnCart) => None,
        (Rule::Owner(_), Who::OtherCart) => Some(StatusCode::NOT_FOUND),
        (Rule::Roles(roles) | Rule::Owner(roles), Who::Role(role)) if role_listed(roles, role) => None,
        _ => Some(StatusCode::FORBIDDEN),
    }
}

/// What one caller's round of the matrix works on.
struct Fixture {
    sku: String,
    cart: TestCart,
    order: String,
    reservation: String,
    credential: String,
    transfer: String,
}

async fn fixture(app: &TestApp, n: usize) -> Fixture {
    let sku = format!("m{n}");
    app.create_sku(&sku, 100).await;
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, &sku, 1).await.status(), StatusCode::OK);
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let reserved: Value = app.reserve(&sku, 1, 600).await.json().await.unwrap();
    let credential = format!("spare-{n}");
    app.credential(&credential, &["read"]).await;
    let site = format!("site-{n}");
    let created = app
        .admin(Method::PUT, &format!("/v1/locations/{site}"))
        .json(&json!({"name": "Site", "kind": "store", "priority": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let transfer: Value = app
        .admin(Method::POST, "/v1/transfers")
        .json(&json!({"sku": sku, "from": "default", "to": site, "qty": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Fixture {
        transfer: transfer["transfer_id"].as_str().unwrap().to_owned(),
        sku,
        cart,
        order: order["order_id"].as_str().unwrap().to_owned(),
        reservation: reserved["reservation_id"].as_str().unwrap().to_owned(),
        credential,
    }
}

/// The concrete path and a valid body of a route, on the fixture. A route added to the table
/// without a request here fails the matrix.
fn request_for(route: &RouteRule, fixture: &Fixture, n: usize) -> (String, Value) {
    let id = if route.path.starts_with("/v1/reservations") {
        fixture.reservation.as_str()
    } else if route.path.starts_with("/v1/carts") {
        fixture.cart.id.as_str()
    } else if route.path.starts_with("/v1/transfers") {
        fixture.transfer.as_str()
    } else {
        fixture.order.as_str()
    };
    let path = route
        .path
        .replace("{sku}", &fixture.sku)
        .replace("{id}", id)
        .replace("{name}", &fixture.credential)
        .replace("/locations/{loc}/", "/locations/default/")
        .replace("{loc}", &format!("loc-{n}"))
        .replace("{file}", "app.css");
    let body = match (route.method, route.path) {
        ("GET" | "DELETE", _) => Value::Null,
        ("PUT", "/v1/skus/{sku}") => json!({"name": "Matrix", "price_minor": 100, "currency": "EUR"}),
        ("POST", "/v1/skus/{sku}/restock") => json!({"qty": 1}),
        ("POST", "/v1/skus/{sku}/adjust") => json!({"delta": 1, "reason": "count"}),
        ("POST", "/v1/skus/{sku}/reservations") => json!({"qty": 1, "ttl_seconds": 60}),
        ("POST", "/v1/reservations/{id}/commit") => json!({}),
        ("POST", "/v1/carts") => json!({}),
        ("PUT", "/v1/carts/{id}/items/{sku}") => json!({"qty": 2}),
        ("POST", "/v1/carts/{id}/checkout") => json!({}),
        ("POST", "/v1/orders/{id}/pay") => json!({"payment_ref": "psp-1"}),
        ("POST", "/v1/demo/orders/{id}/pay") => json!({}),
        ("POST", "/v1/orders/{id}/cancel") => json!({}),
        ("POST", "/v1/orders/{id}/status") => json!({"status": "packed"}),
        ("POST", "/v1/orders/{id}/fulfilments") => {
            json!({"location": "default", "lines": [{"sku": fixture.sku, "qty": 1}]})
        }
        ("POST", "/v1/orders/{id}/returns") => {
            json!({"location": "default", "restock": true, "lines": [{"sku": fixture.sku, "qty": 1}]})
        }
        ("POST", "/v1/ws/tickets") => json!({"order_id": fixture.order}),
        ("POST", "/v1/credentials") => json!({"name": format!("made-{n}"), "roles": ["read"]}),
        ("PUT", "/v1/locations/{loc}") => json!({"name": "Shop", "kind": "store", "priority": 1}),
        ("POST", "/v1/skus/{sku}/locations/{loc}/restock") => json!({"qty": 1}),
        ("POST", "/v1/skus/{sku}/locations/{loc}/adjust") => json!({"delta": 1, "reason": "count"}),
        ("POST", "/v1/skus/{sku}/locations/{loc}/count") => json!({"on_hand": 200}),
        ("POST", "/v1/transfers") => {
            json!({"sku": fixture.sku, "from": "default", "to": format!("site-{n}"), "qty": 1})
        }
        ("POST", "/v1/transfers/{id}/receive") => json!({}),
        ("POST", "/v1/stock/batch") => {
            json!({"items": [{"sku": fixture.sku, "location": "default", "op": "adjust", "qty": 1}]})
        }
        (method, path) => panic!("the access matrix has no request for {method} {path}: add one"),
    };
    (path, body)
}

/// What a refused request must not have changed: the SKU, the order, the reservation, the
/// credentials and the locations.
async fn state_of(app: &TestApp, fixture: &Fixture) -> Value {
    let read = |path: String| async move { app.read_json(ADMIN_TOKEN, &path).await };
    json!([
        read(format!("/v1/skus/{}", fixture.sku)).await,
        read(format!("/v1/orders/{}", fixture.order)).await,
        read(format!("/v1/reservations/{}", fixture.reservation)).await,
        read("/v1/credentials".to_owned()).await,
        read("/v1/locations".to_owned()).await,
        read(format!("/v1/transfers/{}", fixture.transfer)).await,
    ])
}

#[actix_web::test]
async fn every_route_answers_each_kind_of_caller_as_its_rule_says() {
    // Demo payments on, so that their route is there to be refused or let through.
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), Options::default(), |settings| {
        settings.ui.demo_payments = true;
    })
    .await;
    let mut tokens = vec![(Who::Admin, ADMIN_TOKEN.to_owned())];
    for role in Role::ALL {
        let token = app.credential(&format!("as-{}", role.as_str()), &[role.as_str()]).await;
        tokens.push((Who::Role(role), token));
    }
    let revoked = app
        .credential("gone", &["inventory", "fulfilment", "payments", "read"])
        .await;
    let gone = app.admin(Method::DELETE, "/v1/credentials/gone").send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::OK);
    tokens.push((Who::Revoked, revoked));
    let other = app.create_cart().await;
    let callers: Vec<Who> = [Who::Nobody, Who::OwnCart, Who::OtherCart, Who::Revoked, Who::Admin]
        .into_iter()
        .chain(Role::ALL.map(Who::Role))
        .collect();

    let mut failures = Vec::new();
    let mut tried = 0;
    for (n, who) in callers.into_iter().enumerate() {
        // A fresh SKU, order, reservation and spare credential per caller, so that what one
        // caller may do does not decide what the next one meets.
        let fixture = fixture(&app, n).await;
        let token = match who {
            Who::Nobody => None,
            Who::OwnCart => Some(fixture.cart.token.clone()),
            Who::OtherCart => Some(other.token.clone()),
            _ => tokens
                .iter()
                .find(|(kind, _)| *kind == who)
                .map(|(_, token)| token.clone()),
        };
        for route in ROUTES {
            let (path, body) = request_for(route, &fixture, n);
            let refusal = expected(route.rule, who);
            let before = match refusal {
                Some(_) => Some(state_of(&app, &fixture).await),
                None => None,
            };
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let mut request = app.client.request(method, app.url(&path));
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            if !body.is_null() {
                request = request.json(&body);
            }
            let status = request.send().await.unwrap().status();
            tried += 1;
            let route_name = format!("{} {}", route.method, route.path);
            let unchanged = match refusal {
                Some(_) => Some(state_of(&app, &fixture).await) == before,
                None => true,
            };
            match refusal {
                Some(refused) if status != refused => {
                    failures.push(format!("{route_name} as {who:?}: {status}, expected {refused}"))
                }
                Some(_) if !unchanged => {
                    failures.push(format!("{route_name} as {who:?}: refused, yet something changed"))
                }
                Some(_) => {}
                None if matches!(status.as_u16(), 401 | 403 | 404 | 405) || status.is_server_error() => {
                    failures.push(format!("{route_name} as {who:?}: {status}, expected to be let through"))
                }
                None => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} answers wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(tried, ROUTES.len() * 9);
}

#[actix_web::test]
async fn a_shoppers_cart_token_cannot_pay_nor_cancel_a_paid_order() {
    let app = TestApp::spawn().await;
    app.create_sku("cup", 5).await;
    let payments = app.credential("psp", &["payments"]).await;
    let cart = app.create_cart().await;
    app.set_line(&cart, "cup", 2).await;
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    let pay_path = format!("/v1/orders/{}/pay", order["order_id"].as_str().unwrap());
    let cancel_path = pay_path.replace("/pay", "/cancel");

    let by_shopper = app
        .as_cart(&cart, Method::POST, &pay_path)
        .json(&json!({"payment_ref": "self-paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_shopper.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&by_shopper.json().await.unwrap()), "forbidden");

    let paid = app
        .with_token(&payments, Method::POST, &pay_path)
        .json(&json!({"payment_ref": "psp-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);

    let cancel = app
        .as_cart(&cart, Method::POST, &cancel_path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::FORBIDDEN);
    let order_path = pay_path.replace("/pay", "");
    assert_eq!(app.get_as(&cart, &order_path).await["status"], "paid", "still paid");
    assert_eq!(crate::helpers::counters(&app.sku("cup").await), (5, 0, 3));

    // The shop may cancel it, and the stock comes back.
    let fulfilment = app.credential("warehouse", &["fulfilment"]).await;
    let cancelled = app
        .with_token(&fulfilment, Method::POST, &cancel_path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(crate::helpers::counters(&app.sku("cup").await), (5, 0, 5));
}

#[actix_web::test]
async fn a_revoked_credential_is_refused_from_the_next_request_and_after_a_restart() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(Arc::clone(&dir), Options::default(), |_| {}).await;
    app.create_sku("bolt", 1).await;
    let erp = app.credential("erp", &["inventory"]).await;
    let kept = app.credential("auditor", &["read"]).await;
    let restock = |token: String| {
        let request = app
            .with_token(&token, Method::POST, "/v1/skus/bolt/restock")
            .json(&json!({"qty": 1}));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(restock(erp.clone()).await, StatusCode::OK);
    let revoked = app.admin(Method::DELETE, "/v1/credentials/erp").send().await.unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        restock(erp.clone()).await,
        StatusCode::UNAUTHORIZED,
        "the very next request"
    );
    let again = app.admin(Method::DELETE, "/v1/credentials/erp").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    // Both survive a restart: the revocation and the credential that was kept.
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    let restock = app
        .with_token(&erp, Method::POST, "/v1/skus/bolt/restock")
        .json(&json!({"qty": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(restock.status(), StatusCode::UNAUTHORIZED);
    let read = app
        .with_token(&kept, Method::GET, "/v1/skus/bolt")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.json::<Value>().await.unwrap()["on_hand"],
        2,
        "a read credential sees every counter"
    );
}

#[actix_web::test]
async fn credentials_are_listed_without_tokens_and_checked_when_created() {
    let app = TestApp::spawn().await;
    let token = app.credential("warehouse-1", &["fulfilment", "read"]).await;
    assert!(token.starts_with("sr_"));
    let listed: Value = app.read_json(ADMIN_TOKEN, "/v1/credentials").await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "warehouse-1");
    assert_eq!(items[0]["roles"], json!(["fulfilment", "read"]));
    assert_eq!(items[0]["created_by"], "admin");
    assert!(items[0].get("token").is_none(), "a token is shown only once: {listed}");
    assert!(!listed.to_string().contains(&token));

    let create = |body: Value| {
        let request = app.admin(Method::POST, "/v1/credentials").json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, error_code(&response.json().await.unwrap()).to_owned())
        }
    };
    let conflict = (StatusCode::CONFLICT, "credential_exists".to_owned());
    assert_eq!(
        create(json!({"name": "warehouse-1", "roles": ["read"]})).await,
        conflict
    );
    let bad_role = (StatusCode::BAD_REQUEST, "invalid_roles".to_owned());
    assert_eq!(create(json!({"name": "x", "roles": ["owner"]})).await, bad_role);
    assert_eq!(create(json!({"name": "x", "roles": []})).await, bad_role);
    let bad_name = (StatusCode::BAD_REQUEST, "invalid_name".to_owned());
    assert_eq!(create(json!({"name": "admin", "roles": ["read"]})).await, bad_name);
    assert_eq!(create(json!({"name": "a b", "roles": ["read"]})).await, bad_name);

    // A credential manages no credentials, whatever its roles.
    let listing = app
        .with_token(&token, Method::GET, "/v1/credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn the_public_sees_the_stock_catalog_public_stock_allows_and_staff_see_it_all() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(Arc::clone(&dir), Options::default(), |_| {}).await;
    app.create_sku("many", 10).await;
    app.create_sku("few", 3).await;
    app.create_sku("none", 0).await;
    assert_eq!(app.reserve("many", 4, 600).await.status(), StatusCode::CREATED);

    // The default, "available": sell-through (on_hand, reserved) stays private.
    let public = app.read_public("/v1/skus/many").await;
    assert_eq!(public["available"], 6);
    assert!(
        public.get("on_hand").is_none() && public.get("reserved").is_none(),
        "{public}"
    );
    let listed = app.read_public("/v1/skus?ids=many").await;
    assert_eq!(listed["items"][0], public, "the list shows the same");
    let reader = app.credential("bi", &["read"]).await;
    let staff: Value = app.read_json(&reader, "/v1/skus/many").await;
    assert_eq!(
        (staff["on_hand"].clone(), staff["reserved"].clone()),
        (json!(10), json!(4))
    );
    let payments = app.credential("psp", &["payments"]).await;
    let other_staff: Value = app.read_json(&payments, "/v1/skus/many").await;
    assert_eq!(other_staff, staff, "every credential with a role sees every counter");
    let cart = app.create_cart().await;
    let shopper: Value = app.read_json(&cart.token, "/v1/skus/many").await;
    assert_eq!(shopper, public, "a shopper's cart token sees what the public sees");

    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |settings| {
        settings.catalog.public_stock = PublicStock::Level;
        settings.catalog.low_stock_level = 3;
    })
    .await;
    let level = |sku: &'static str| {
        let app = &app;
        async move { app.read_public(&format!("/v1/skus/{sku}")).await }
    };
    let many = level("many").await;
    assert_eq!(many["stock_level"], "in_stock");
    assert!(many.get("available").is_none(), "{many}");
    assert_eq!(level("few").await["stock_level"], "low");
    assert_eq!(level("none").await["stock_level"], "out");

    // The live stock feed shows the public the same: the level, and only when it changes.
    let mut public = stock_socket(&app, "skus=many").await;
    let mut staff = stock_socket(&app, &format!("skus=many&token={reader}")).await;
    assert_eq!(
        next_text(&mut public).await,
        json!({"type": "stock", "sku": "many", "stock_level": "in_stock", "locations": [{"location": "default", "stock_level": "in_stock"}]})
    );
    assert_eq!(
        next_text(&mut staff).await,
        json!({"type": "stock", "sku": "many", "available": 6, "locations": [{"location": "default", "available": 6}]})
    );
    assert_eq!(app.reserve("many", 1, 600).await.status(), StatusCode::CREATED);
    assert_eq!(next_text(&mut staff).await["available"], 5);
    assert_eq!(app.reserve("many", 2, 600).await.status(), StatusCode::CREATED);
    assert_eq!(next_text(&mut staff).await["available"], 3);
    assert_eq!(
        next_text(&mut public).await,
        json!({"type": "stock", "sku": "many", "stock_level": "low", "locations": [{"location": "default", "stock_level": "low"}]}),
        "no message while the level stayed in_stock"
    );
    drop((public, staff));

    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |settings| {
        settings.catalog.public_stock = PublicStock::Exact;
    })
    .await;
    let exact = app.read_public("/v1/skus/many").await;
    assert_eq!(
        (
            exact["on_hand"].clone(),
            exact["reserved"].clone(),
            exact["available"].clone()
        ),
        (json!(10), json!(7), json!(3))
    );
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn stock_socket(app: &TestApp, query: &str) -> Socket {
    let base = app.base.replacen("http://", "ws://", 1);
    let (socket, _) = tokio_tungstenite::connect_async(format!("{base}/v1/ws/stock?{query}"))
        .await
        .expect("the stock feed opens");
    socket
}

/// The next text message as JSON (within 10 s).
async fn next_text(socket: &mut Socket) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection is open")
            .expect("a valid frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn connect(app: &TestApp, order: &str, query: &str) -> Result<Socket, u16> {
    let base = app.base.replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(format!("{base}/v1/ws/orders/{order}?{query}")).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("connecting: {other}"),
    }
}

async fn ticket(app: &TestApp, cart: &TestCart, order: &str) -> String {
    let response = app
        .as_cart(cart, Method::POST, "/v1/ws/tickets")
        .json(&json!({ "order_id": order }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_websocket_ticket_opens_its_order_once_within_30_seconds() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let options = Options {
        clock: clock.clone() as Arc<dyn Clock>,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |_| {}).await;
    app.create_sku("kite", 5).await;
    let mut orders = Vec::new();
    let mut carts = Vec::new();
    for _ in 0..2 {
        let cart = app.create_cart().await;
        app.set_line(&cart, "kite", 1).await;
        let order: Value = app.checkout(&cart).await.json().await.unwrap();
        orders.push(order["order_id"].as_str().unwrap().to_owned());
        carts.push(cart);
    }

    let first = ticket(&app, &carts[0], &orders[0]).await;
    let mut socket = connect(&app, &orders[0], &format!("ticket={first}"))
        .await
        .expect("the ticket opens it");
    use futures::StreamExt;
    let snapshot = socket.next().await.unwrap().unwrap();
    assert!(snapshot.to_text().unwrap().contains("\"snapshot\""));
    assert_eq!(
        connect(&app, &orders[0], &format!("ticket={first}")).await.err(),
        Some(401),
        "single use"
    );

    let elsewhere = ticket(&app, &carts[0], &orders[0]).await;
    assert_eq!(
        connect(&app, &orders[1], &format!("ticket={elsewhere}")).await.err(),
        Some(401),
        "one order only"
    );

    let late = ticket(&app, &carts[0], &orders[0]).await;
    clock.advance(30_000);
    assert_eq!(
        connect(&app, &orders[0], &format!("ticket={late}")).await.err(),
        Some(401),
        "lapsed"
    );

    // A ticket is given only for an order these credentials may track.
    let refused = app
        .as_cart(&carts[1], Method::POST, "/v1/ws/tickets")
        .json(&json!({ "order_id": orders[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    // The token in the URL still works (the less safe way).
    let token = &carts[1].token;
    assert!(connect(&app, &orders[1], &format!("token={token}")).await.is_ok());
}

#[actix_web::test]
async fn every_event_records_who_made_its_change() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let with_clock = |clock: &Arc<ManualClock>| Options {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), with_clock(&clock), |_| {}).await;
    app.create_sku("nut", 10).await;
    let erp = app.credential("erp", &["inventory"]).await;
    let held = app
        .with_token(&erp, Method::POST, "/v1/skus/nut/reservations")
        .json(&json!({"qty": 2, "ttl_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::CREATED);
    let cart = app.create_cart().await;
    assert_eq!(app.set_line(&cart, "nut", 1).await.status(), StatusCode::OK);
    // The hold lapses while the server is down: the server releases it at restart.
    let dir = app.stop().await;
    clock.advance(61_000);
    let app = TestApp::spawn_with(dir, with_clock(&clock), |_| {}).await;
    // The SKU's actor releases the lapsed hold when it starts, which may be after ready: a
    // read through the actor is answered only after that, and once its change is durable.
    assert_eq!(app.sku("nut").await["reserved"], 1);
    let engine = Arc::clone(app.state.engine().unwrap());
    engine.barrier().await.unwrap();

    let log = crate::kafka_support::event_log(engine.store.storage.as_ref());
    let by = |kind: &str| -> Vec<String> {
        log.iter()
            .filter(|record| record.event.type_name() == kind)
            .map(|record| record.by.to_string())
            .collect()
    };
    assert_eq!(by("stockroom.sku.created"), ["admin"]);
    assert_eq!(
        by("stockroom.stock.reserved"),
        ["erp", "cart"],
        "the ERP's hold, then the cart line's"
    );
    assert_eq!(by("stockroom.cart.created"), ["anonymous"]);
    assert_eq!(by("stockroom.cart.line_set"), ["cart"]);
    assert_eq!(
        by("stockroom.stock.expired"),
        ["system"],
        "the server let the hold lapse"
    );
}
