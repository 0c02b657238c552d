//! Finding a reservation's SKU from its id: a SKU's reservations carry its tag in their ids
//! and need no entry in the hold index; ids without it (from earlier releases) stay indexed.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use stockroom::access::by_system;
use stockroom::domain::sku::{Placement, SkuCommand};
use stockroom::domain::{Quantity, ReservationId, SkuId};
use stockroom::startup::Options;

use crate::helpers::{counters, error_code, TestApp};

/// Two SKU ids whose tags are equal, found by searching (a 32-bit hash collides after about
/// 2^16 tries); the same pair every run.
fn colliding_skus() -> (String, String) {
    let mut seen: HashMap<u32, String> = HashMap::new();
    for n in 0u32.. {
        let name = format!("c-{n}");
        let tag = SkuId::parse(&name).unwrap().tag();
        if let Some(first) = seen.insert(tag, name.clone()) {
            return (first, name);
        }
    }
    unreachable!("u32 ran out")
}

async fn settle(app: &TestApp, id: &str, action: &str) -> (StatusCode, Value) {
    let (method, path) = match action {
        "commit" => (Method::POST, format!("/v1/reservations/{id}/commit")),
        _ => (Method::DELETE, format!("/v1/reservations/{id}")),
    };
    let response = app.admin(method, &path).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn reserve_id(app: &TestApp, sku: &str) -> String {
    let response = app.reserve(sku, 1, 3600).await;
    assert_eq!(response.status(), StatusCode::CREATED, "reserving at {sku}");
    let body: Value = response.json().await.unwrap();
    body["reservation_id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn reservations_of_two_skus_whose_tags_collide_are_each_found_at_their_own_sku() {
    let (first, second) = colliding_skus();
    let app = TestApp::spawn().await;
    app.create_sku(&first, 5).await;
    app.create_sku(&second, 5).await;
    let at_first = reserve_id(&app, &first).await;
    let at_second = reserve_id(&app, &second).await;
    assert_eq!(app.reservation(&at_first).await["sku"], first.as_str());
    assert_eq!(app.reservation(&at_second).await["sku"], second.as_str());

    assert_eq!(settle(&app, &at_first, "commit").await.0, StatusCode::OK);
    assert_eq!(settle(&app, &at_second, "release").await.0, StatusCode::OK);
    assert_eq!(
        counters(&app.sku(&first).await),
        (4, 0, 4),
        "the commit took a unit at {first}"
    );
    assert_eq!(
        counters(&app.sku(&second).await),
        (5, 0, 5),
        "the release gave one back at {second}"
    );

    // Settled, and again: each answer comes from its own SKU.
    let again = settle(&app, &at_first, "commit").await;
    assert_eq!(
        (again.0, again.1["sku"].as_str()),
        (StatusCode::OK, Some(first.as_str()))
    );
    let refused = settle(&app, &at_second, "commit").await;
    assert_eq!(
        (refused.0, error_code(&refused.1)),
        (StatusCode::CONFLICT, "reservation_released")
    );
    assert_eq!(app.reservation(&at_second).await["state"], "released");
    assert_eq!(counters(&app.sku(&first).await), (4, 0, 4));
    assert_eq!(counters(&app.sku(&second).await), (5, 0, 5));
}

#[actix_web::test]
async fn an_id_that_carries_a_skus_tag_but_was_never_issued_is_not_found_and_moves_nothing() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 5).await;
    let issued = reserve_id(&app, "mug").await;
    // The same tag, other time and counter bits: an id no one was given.
    let mut bytes = *ReservationId::parse(&issued).unwrap().as_bytes();
    bytes[..12].copy_from_slice(&[0x01, 0x8f, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0]);
    let forged = ReservationId::from_bytes(bytes).to_string();
    let read = app
        .admin(Method::GET, &format!("/v1/reservations/{forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    for action in ["commit", "release"] {
        let (status, body) = settle(&app, &forged, action).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{action}"
        );
    }
    assert_eq!(counters(&app.sku("mug").await), (5, 1, 4), "only the issued hold holds");
}

/// A hold with an id as releases before tags made them (a plain UUIDv7), taken through the
/// SKU's actor as those releases did: `tag_of` sets the id's last 32 bits, so an id can be
/// made to carry another SKU's tag by chance.
async fn legacy_hold(app: &TestApp, sku: &str, tag_of: Option<&str>) -> ReservationId {
    let mut bytes = *ReservationId::generate().as_bytes();
    if let Some(other) = tag_of {
        bytes[12..].copy_from_slice(&SkuId::parse(other).unwrap().tag().to_be_bytes());
    }
    let id = ReservationId::from_bytes(bytes);
    let engine = Arc::clone(app.state.engine().unwrap());
    let command = SkuCommand::Reserve {
        id,
        qty: Quantity::parse(1, 1).unwrap(),
        ttl_ms: 3_600_000,
        placement: Placement::Any,
    };
    let sku = SkuId::parse(sku).unwrap();
    let (reply, ticket) = engine.registry.skus.command(&sku, command, &by_system()).await.unwrap();
    assert!(matches!(reply, Ok(Ok(_))), "{reply:?}");
    engine.writer.durability().wait(ticket).await.unwrap();
    id
}

#[actix_web::test]
async fn holds_whose_ids_do_not_carry_their_skus_tag_are_found_before_and_after_a_restart() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 5).await;
    app.create_sku("tee", 5).await;
    let plain = legacy_hold(&app, "mug", None).await.to_string();
    // Its last bits are tee's tag: the id looks like one of tee's, yet mug holds it.
    let misleading = legacy_hold(&app, "mug", Some("tee")).await.to_string();
    let tagged = reserve_id(&app, "mug").await;
    for id in [&plain, &misleading, &tagged] {
        assert_eq!(app.reservation(id).await["sku"], "mug", "{id}");
    }

    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    for id in [&plain, &misleading, &tagged] {
        assert_eq!(app.reservation(id).await["state"], "held", "{id} after the restart");
    }
    assert_eq!(counters(&app.sku("mug").await), (5, 3, 2));
    assert_eq!(settle(&app, &plain, "commit").await.0, StatusCode::OK);
    assert_eq!(settle(&app, &misleading, "release").await.0, StatusCode::OK);
    assert_eq!(settle(&app, &tagged, "release").await.0, StatusCode::OK);
    assert_eq!(counters(&app.sku("mug").await), (4, 0, 4));
    assert_eq!(counters(&app.sku("tee").await), (5, 0, 5), "tee never held any of them");

    // Settled: the misleading id's record, not its bits, names its SKU.
    let refused = settle(&app, &misleading, "commit").await;
    assert_eq!(
        (refused.0, error_code(&refused.1)),
        (StatusCode::CONFLICT, "reservation_released"),
        "answered by mug, which released it"
    );
    let again = settle(&app, &plain, "commit").await;
    assert_eq!((again.0, again.1["sku"].as_str()), (StatusCode::OK, Some("mug")));
    assert_eq!(app.reservation(&misleading).await["state"], "released");
}
