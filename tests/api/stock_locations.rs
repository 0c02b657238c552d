//! Stock per location: counters per location with totals, holds placed by location,
//! preference or strategy (split when allowed), transfers, the ledger, the storefront's view
//! of some locations, and the low / out / back-in events.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stockroom::config::Settings;
use stockroom::domain::clock::{Clock, ManualClock};
use stockroom::domain::sku::Strategy;
use stockroom::startup::Options;
use tempfile::TempDir;

use crate::crash::movements;
use crate::helpers::{error_code, TestApp, ADMIN_TOKEN};

/// Creates `id` with `priority` (active).
async fn site(app: &TestApp, id: &str, priority: i64) {
    let response = app
        .admin(Method::PUT, &format!("/v1/locations/{id}"))
        .json(&json!({"name": id, "kind": "warehouse", "priority": priority}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{id}: {}", response.status());
}

/// Posts `body` to `path` as admin.
async fn post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app.admin(Method::POST, path).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The counters of `sku` at `location` as `[on_hand, reserved, committed, available]`.
fn at(sku: &Value, location: &str) -> [u64; 4] {
    sku["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["location"] == location)
        .map_or([0; 4], |entry| {
            ["on_hand", "reserved", "committed", "available"].map(|name| entry[name].as_u64().unwrap())
        })
}

/// `[location, qty]` pairs of a reservation body's parts.
fn parts(reservation: &Value) -> Vec<(String, u64)> {
    reservation["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| {
            (
                part["location"].as_str().unwrap().to_owned(),
                part["qty"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn with_allocation(strategy: Strategy, allow_split: bool) -> impl FnOnce(&mut Settings) {
    move |settings| {
        settings.allocation.strategy = strategy;
        settings.allocation.allow_split = allow_split;
    }
}

async fn spawn(strategy: Strategy, allow_split: bool) -> TestApp {
    TestApp::spawn_with(
        Arc::new(TempDir::new().unwrap()),
        Options::default(),
        with_allocation(strategy, allow_split),
    )
    .await
}

/// A clock the test moves, and the server options that use it.
fn test_clock() -> (Arc<ManualClock>, Options) {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let options = Options {
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        ..Options::default()
    };
    (clock, options)
}

/// For every location of `sku`: opening plus movements equals the counters.
async fn assert_ledger_matches(app: &TestApp, sku: &str) {
    let client = reqwest::Client::new();
    crate::crash::check_ledger(&client, &app.url(""), 0, &[sku.to_owned()]).await;
}

#[actix_web::test]
async fn stock_is_received_adjusted_and_counted_per_location_and_the_sku_shows_the_sums() {
    let app = TestApp::spawn().await;
    site(&app, "north", 1).await;
    site(&app, "south", 2).await;
    app.create_sku("mug", 5).await;

    let (status, body) = post(
        &app,
        "/v1/skus/mug/locations/north/restock",
        json!({"qty": 10, "reason": "PO-7"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(at(&body, "north"), [10, 0, 0, 10]);
    assert_eq!(at(&body, "default"), [5, 0, 0, 5]);
    assert_eq!(
        (body["on_hand"].as_u64(), body["available"].as_u64()),
        (Some(15), Some(15))
    );

    let (status, body) = post(
        &app,
        "/v1/skus/mug/locations/north/adjust",
        json!({"delta": -3, "reason": "broken"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(at(&body, "north"), [7, 0, 0, 7]);
    let (status, body) = post(
        &app,
        "/v1/skus/mug/locations/south/count",
        json!({"on_hand": 4, "reason": "stocktake"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(at(&body, "south"), [4, 0, 0, 4]);
    assert_eq!(body["on_hand"], 16);

    // A hold at north: north's shelf cannot be counted or adjusted below it.
    let (status, held) = post(
        &app,
        "/v1/skus/mug/reservations",
        json!({"qty": 6, "location": "north"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(parts(&held), [("north".to_owned(), 6)]);
    let (status, body) = post(&app, "/v1/skus/mug/locations/north/count", json!({"on_hand": 5})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "insufficient_stock")
    );
    let (status, body) = post(
        &app,
        "/v1/skus/mug/locations/north/adjust",
        json!({"delta": -2, "reason": "x"}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "insufficient_stock")
    );
    assert_eq!(body["error"]["available"], 1, "what north has free");

    // Unknown locations and SKUs are 404; the plain routes act on `default`.
    let (status, _) = post(&app, "/v1/skus/mug/locations/nowhere/restock", json!({"qty": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/v1/skus/nothing/locations/north/restock", json!({"qty": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = post(&app, "/v1/skus/mug/restock", json!({"qty": 2})).await;
    assert_eq!(at(&body, "default"), [7, 0, 0, 7]);

    let sku = app.sku("mug").await;
    assert_eq!(
        (
            sku["on_hand"].as_u64(),
            sku["reserved"].as_u64(),
            sku["committed"].as_u64(),
            sku["available"].as_u64()
        ),
        (Some(18), Some(6), Some(0), Some(12))
    );

    // The ledger, both ways, all locations or one.
    let all = app.read_json(ADMIN_TOKEN, "/v1/skus/mug/movements").await;
    let kinds: Vec<(&str, &str, i64, i64)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| {
            (
                movement["kind"].as_str().unwrap(),
                movement["location"].as_str().unwrap(),
                movement["on_hand_delta"].as_i64().unwrap(),
                movement["reserved_delta"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("receipt", "default", 5, 0),
            ("receipt", "north", 10, 0),
            ("adjustment", "north", -3, 0),
            ("count", "south", 4, 0),
            ("reservation", "north", 0, 6),
            ("receipt", "default", 2, 0),
        ]
    );
    assert_eq!(all["items"][1]["reason"], "PO-7");
    assert_eq!(all["items"][1]["by"], "admin");
    assert_eq!(all["items"][4]["reference"], held["reservation_id"]);
    let north_newest_first = app
        .read_json(ADMIN_TOKEN, "/v1/skus/mug/movements?location=north&order=desc&limit=2")
        .await;
    let seqs: Vec<u64> = north_newest_first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| movement["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 3]);
    let rest = app
        .read_json(
            ADMIN_TOKEN,
            &format!(
                "/v1/skus/mug/movements?location=north&order=desc&limit=2&after={}",
                north_newest_first["next"]
            ),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["seq"], 2);
    assert_eq!(rest["next"], Value::Null);
    assert_ledger_matches(&app, "mug").await;
}

#[actix_web::test]
async fn holds_go_where_they_are_told_or_where_the_strategy_says_and_split_only_when_allowed() {
    for (strategy, allow_split) in [
        (Strategy::Priority, true),
        (Strategy::Priority, false),
        (Strategy::MostAvailable, true),
    ] {
        let app = spawn(strategy, allow_split).await;
        site(&app, "north", 1).await;
        site(&app, "south", 2).await;
        app.create_sku("tee", 0).await;
        post(&app, "/v1/skus/tee/locations/north/restock", json!({"qty": 3})).await;
        post(&app, "/v1/skus/tee/locations/south/restock", json!({"qty": 5})).await;
        // `default` has priority 0 and nothing; north (1) has 3; south (2) has 5.
        let (status, first) = post(&app, "/v1/skus/tee/reservations", json!({"qty": 2})).await;
        assert_eq!(status, StatusCode::CREATED);
        let expected = match strategy {
            Strategy::Priority => "north",
            Strategy::MostAvailable => "south",
        };
        assert_eq!(parts(&first), [(expected.to_owned(), 2)], "{strategy:?}");

        let (status, preferred) = post(
            &app,
            "/v1/skus/tee/reservations",
            json!({"qty": 1, "locations": ["south", "north"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(parts(&preferred), [("south".to_owned(), 1)]);

        // 5 left in all (north and south), never 5 at one place.
        let (status, big) = post(&app, "/v1/skus/tee/reservations", json!({"qty": 5})).await;
        let sku = app.sku("tee").await;
        if allow_split {
            assert_eq!(status, StatusCode::CREATED, "{strategy:?}: {big}");
            assert_eq!(parts(&big).iter().map(|(_, qty)| qty).sum::<u64>(), 5);
            assert_eq!(sku["available"], 0);
            // Release and commit act on every part.
            let id = big["reservation_id"].as_str().unwrap();
            let (status, released) = post(&app, &format!("/v1/reservations/{id}/commit"), json!({})).await;
            assert_eq!(
                (status, released["state"].as_str()),
                (StatusCode::OK, Some("committed"))
            );
            assert_eq!(parts(&released), parts(&big));
        } else {
            assert_eq!((status, error_code(&big)), (StatusCode::CONFLICT, "insufficient_stock"));
            assert_eq!(big["error"]["available"], 4, "the most one location has");
            assert_eq!(sku["available"], 5, "a refusal holds nothing");
        }

        // An inactive location takes no holds; an unknown one is 404; both at once is 400.
        let closed = app
            .admin(Method::PUT, "/v1/locations/south")
            .json(&json!({"name": "south", "kind": "warehouse", "priority": 2, "active": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(closed.status(), StatusCode::OK);
        let (status, refused) = post(
            &app,
            "/v1/skus/tee/reservations",
            json!({"qty": 1, "location": "south"}),
        )
        .await;
        assert_eq!(
            (status, error_code(&refused)),
            (StatusCode::CONFLICT, "location_inactive")
        );
        let (status, _) = post(&app, "/v1/skus/tee/reservations", json!({"qty": 1, "location": "mars"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, both) = post(
            &app,
            "/v1/skus/tee/reservations",
            json!({"qty": 1, "location": "north", "locations": ["north"]}),
        )
        .await;
        assert_eq!(
            (status, error_code(&both)),
            (StatusCode::BAD_REQUEST, "invalid_placement")
        );
        assert_ledger_matches(&app, "tee").await;
    }
}

/// One wave of the concurrent test: 48 clients each ask 4 times for 1 to 4 units, anywhere,
/// at one place, or by preference, with short (1 s) or long holds; of what they get, a
/// quarter is released and a quarter committed at once. Returns the ids still held.
async fn wave(base: &str, seed: u64, sites: [&'static str; 4]) -> Vec<String> {
    let client = reqwest::Client::new();
    let held = futures::future::join_all((0..48).map(|worker| {
        let (client, base) = (client.clone(), base.to_owned());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker));
        async move {
            let mut held = Vec::new();
            for _ in 0..4 {
                let mut body =
                    json!({"qty": rng.random_range(1..=4), "ttl_seconds": if rng.random_bool(0.3) { 1 } else { 600 }});
                match rng.random_range(0..3) {
                    0 => {}
                    1 => body["location"] = json!(sites[rng.random_range(0..4)]),
                    _ => body["locations"] = json!([sites[rng.random_range(0..2)], sites[rng.random_range(2..4)]]),
                }
                let response = client
                    .post(format!("{base}/v1/skus/flash/reservations"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let answer: Value = response.json().await.unwrap();
                match status {
                    StatusCode::CREATED => {
                        let id = answer["reservation_id"].as_str().unwrap().to_owned();
                        match rng.random_range(0..4) {
                            0 => {
                                let path = format!("{base}/v1/reservations/{id}");
                                let released = client.delete(path).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
                                assert_eq!(released.status(), StatusCode::OK);
                            }
                            1 => {
                                let path = format!("{base}/v1/reservations/{id}/commit");
                                let committed = client
                                    .post(path)
                                    .bearer_auth(ADMIN_TOKEN)
                                    .json(&json!({}))
                                    .send()
                                    .await
                                    .unwrap();
                                assert_eq!(committed.status(), StatusCode::OK);
                            }
                            _ => held.push(id),
                        }
                    }
                    StatusCode::CONFLICT => assert_eq!(error_code(&answer), "insufficient_stock", "{answer}"),
                    other => panic!("unexpected {other}: {answer}"),
                }
            }
            held
        }
    }))
    .await;
    held.into_iter().flatten().collect()
}

#[actix_web::test]
async fn concurrent_holds_anywhere_never_oversell_a_location_or_the_total_and_the_ledger_matches() {
    let (clock, options) = test_clock();
    let app = TestApp::spawn_with(
        Arc::new(TempDir::new().unwrap()),
        options,
        with_allocation(Strategy::MostAvailable, true),
    )
    .await;
    let sites = ["default", "north", "south", "east"];
    for (priority, id) in sites.iter().enumerate().skip(1) {
        site(&app, id, priority as i64).await;
    }
    app.create_sku("flash", 20).await;
    for id in &sites[1..] {
        post(
            &app,
            &format!("/v1/skus/flash/locations/{id}/restock"),
            json!({"qty": 20}),
        )
        .await;
    }
    let seed: u64 = rand::random();
    println!("concurrent holds seed {seed}");
    let mut held = wave(&app.url(""), seed, sites).await;
    // The short holds lapse; the next wave races for what they gave back.
    clock.advance(2_000);
    held.extend(wave(&app.url(""), seed.wrapping_add(1000), sites).await);
    clock.advance(2_000);
    // Any command expires what is due first (this one is refused: nobody has that much).
    let (status, _) = post(&app, "/v1/skus/flash/reservations", json!({"qty": 1000})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let sku = app.sku("flash").await;
    // Every location: never below zero, and `reserved` is exactly its share of the holds
    // that are still held.
    let mut shares: HashMap<String, u64> = HashMap::new();
    let mut expired = 0;
    for id in &held {
        let reservation = app.reservation(id).await;
        match reservation["state"].as_str().unwrap() {
            "held" => {
                for (location, qty) in parts(&reservation) {
                    *shares.entry(location).or_default() += qty;
                }
            }
            "expired" => expired += 1,
            other => panic!("{id} is {other}"),
        }
    }
    assert!(expired > 0, "some holds lapsed during the run");
    let mut on_hand = 0;
    for id in sites {
        let [shelf, reserved, committed, available] = at(&sku, id);
        assert_eq!(available, shelf - reserved - committed, "{id}");
        assert_eq!(
            reserved,
            shares.get(id).copied().unwrap_or(0),
            "{id}: reserved is its held parts"
        );
        on_hand += shelf;
    }
    assert_eq!(sku["on_hand"].as_u64(), Some(on_hand), "the total is the sum");
    assert_eq!(sku["reserved"].as_u64(), Some(shares.values().sum::<u64>()));
    assert_ledger_matches(&app, "flash").await;
}

#[actix_web::test]
async fn transfers_leave_at_once_arrive_when_received_once_and_survive_a_restart() {
    let dir = Arc::new(TempDir::new().unwrap());
    let app = TestApp::spawn_with(Arc::clone(&dir), Options::default(), |_| {}).await;
    site(&app, "store", 1).await;
    app.create_sku("lamp", 10).await;

    let (status, refused) = post(
        &app,
        "/v1/transfers",
        json!({"sku": "lamp", "from": "default", "to": "store", "qty": 11}),
    )
    .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::CONFLICT, "insufficient_stock")
    );
    let (status, same) = post(
        &app,
        "/v1/transfers",
        json!({"sku": "lamp", "from": "store", "to": "store", "qty": 1}),
    )
    .await;
    assert_eq!(
        (status, error_code(&same)),
        (StatusCode::BAD_REQUEST, "invalid_transfer")
    );
    let (status, _) = post(
        &app,
        "/v1/transfers",
        json!({"sku": "lamp", "from": "default", "to": "moon", "qty": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, sent) = post(
        &app,
        "/v1/transfers",
        json!({"sku": "lamp", "from": "default", "to": "store", "qty": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sent["status"], "in_transit");
    let id = sent["transfer_id"].as_str().unwrap().to_owned();
    let lamp = app.sku("lamp").await;
    assert_eq!(at(&lamp, "default"), [6, 0, 0, 6], "the units left");
    assert_eq!(at(&lamp, "store"), [0; 4], "and have not arrived");
    assert_eq!(
        (lamp["on_hand"].as_u64(), lamp["in_transit"].as_u64()),
        (Some(6), Some(4))
    );

    // In transit across a restart.
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_eq!(
        app.read_json(ADMIN_TOKEN, &format!("/v1/transfers/{id}")).await["status"],
        "in_transit"
    );
    let (status, received) = post(&app, &format!("/v1/transfers/{id}/receive"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(received["status"], "received");
    assert!(received["received_at"].is_string());
    let (status, again) = post(&app, &format!("/v1/transfers/{id}/receive"), json!({})).await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &received),
        "receiving twice receives once"
    );
    let lamp = app.sku("lamp").await;
    assert_eq!(at(&lamp, "store"), [4, 0, 0, 4]);
    assert_eq!(
        (lamp["on_hand"].as_u64(), lamp["in_transit"].as_u64()),
        (Some(10), Some(0))
    );
    let (status, _) = post(
        &app,
        "/v1/transfers/01a23358-431c-7779-937f-1e92f9706024/receive",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/lamp/movements").await;
    let moved: Vec<(&str, &str, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|movement| movement["reference"] == id.as_str())
        .map(|movement| {
            (
                movement["kind"].as_str().unwrap(),
                movement["location"].as_str().unwrap(),
                movement["on_hand_delta"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(moved, [("transfer_out", "default", -4), ("transfer_in", "store", 4)]);
    assert_ledger_matches(&app, "lamp").await;
}

#[actix_web::test]
async fn a_storefront_sees_the_sum_and_each_figure_of_the_locations_it_asks_for() {
    let app = TestApp::spawn().await;
    site(&app, "shop-a", 1).await;
    site(&app, "shop-b", 2).await;
    app.create_sku("cap", 7).await;
    post(&app, "/v1/skus/cap/locations/shop-a/restock", json!({"qty": 2})).await;
    post(&app, "/v1/skus/cap/locations/shop-b/restock", json!({"qty": 3})).await;
    let view = app.read_public("/v1/skus?ids=cap&locations=shop-a,shop-b").await;
    let item = &view["items"][0];
    assert_eq!(item["available"], 5, "the sum of the two shops, not the warehouse");
    assert_eq!(
        item["locations"],
        json!([{"location": "shop-a", "available": 2}, {"location": "shop-b", "available": 3}])
    );
    assert!(
        item.get("on_hand").is_none(),
        "the public sees what public_stock allows"
    );
    let one = app.read_public("/v1/skus?ids=cap&locations=shop-b,nowhere").await;
    assert_eq!(one["items"][0]["available"], 3, "a location without stock counts zero");
    let bad = app.url("/v1/skus?ids=cap&locations=,");
    let status = reqwest::get(bad).await.unwrap().status();
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn low_out_and_back_in_are_published_once_per_crossing_per_location() {
    let app = TestApp::spawn().await;
    site(&app, "north", 1).await;
    let created = app
        .admin(Method::PUT, "/v1/skus/bell")
        .json(&json!({"name": "Bell", "price_minor": 100, "currency": "EUR", "on_hand": 0, "low_stock_threshold": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    post(&app, "/v1/skus/bell/locations/north/restock", json!({"qty": 4})).await; // back in
    post(
        &app,
        "/v1/skus/bell/reservations",
        json!({"qty": 1, "location": "north"}),
    )
    .await; // 3
    post(
        &app,
        "/v1/skus/bell/reservations",
        json!({"qty": 1, "location": "north"}),
    )
    .await; // 2: low
    post(
        &app,
        "/v1/skus/bell/reservations",
        json!({"qty": 1, "location": "north"}),
    )
    .await; // 1: still low
    post(
        &app,
        "/v1/skus/bell/reservations",
        json!({"qty": 1, "location": "north"}),
    )
    .await; // 0: out
    post(&app, "/v1/skus/bell/locations/north/restock", json!({"qty": 1})).await; // back in (low)
    let engine = Arc::clone(app.state.engine().unwrap());
    engine.barrier().await.unwrap();
    let log = crate::kafka_support::event_log(engine.store.storage.as_ref());
    let crossings: Vec<(&str, Value)> = log
        .iter()
        .filter(|record| record.event.type_name().starts_with("stockroom.stock.") && record.event.subject() == "bell")
        .filter_map(|record| {
            let kind = record.event.type_name();
            let cloud = stockroom::events::cloud_event(record, "/test");
            matches!(
                kind,
                "stockroom.stock.low" | "stockroom.stock.out" | "stockroom.stock.back_in"
            )
            .then(|| (kind, json!([cloud["data"]["location"], cloud["data"]["available"]])))
        })
        .collect();
    assert_eq!(
        crossings,
        [
            ("stockroom.stock.back_in", json!(["north", 4])),
            ("stockroom.stock.low", json!(["north", 2])),
            ("stockroom.stock.out", json!(["north", 0])),
            ("stockroom.stock.back_in", json!(["north", 1])),
        ]
    );
}

#[actix_web::test]
async fn the_ledger_pages_both_ways_and_refuses_bad_queries() {
    let app = TestApp::spawn().await;
    app.create_sku("pin", 1).await;
    for _ in 0..9 {
        post(&app, "/v1/skus/pin/restock", json!({"qty": 1})).await;
    }
    let (items, opening) = movements(&reqwest::Client::new(), &app.url(""), "pin").await;
    assert_eq!(items.len(), 10);
    assert_eq!(opening, json!([]));
    let seen = seqs_newest_first(&app, "pin", 3).await;
    assert_eq!(seen, (1..=10).rev().collect::<Vec<u64>>());
    for query in [
        "limit=0",
        "limit=1001",
        "order=sideways",
        "location=bad%20id",
        "after=-1",
        "colour=red",
    ] {
        let response = app
            .admin(Method::GET, &format!("/v1/skus/pin/movements?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    let missing = app.admin(Method::GET, "/v1/skus/none/movements").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn movements_past_their_retention_fold_into_the_opening_balance() {
    let (clock, options) = test_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.ledger.retention_days = 1;
        settings.reservation.max_ttl_seconds = 3 * 86_400;
    })
    .await;
    site(&app, "north", 1).await;
    app.create_sku("old", 3).await;
    post(&app, "/v1/skus/old/locations/north/restock", json!({"qty": 4})).await;
    let (_, held) = post(
        &app,
        "/v1/skus/old/reservations",
        json!({"qty": 2, "location": "north", "ttl_seconds": 3 * 86_400}),
    )
    .await;
    let engine = Arc::clone(app.state.engine().unwrap());
    assert_eq!(engine.trim_ledgers().await.unwrap(), 0, "nothing is a day old yet");

    clock.advance(36 * 3_600_000);
    post(&app, "/v1/skus/old/restock", json!({"qty": 1})).await;
    assert_eq!(engine.trim_ledgers().await.unwrap(), 1);
    assert_eq!(engine.trim_ledgers().await.unwrap(), 0, "folded once");
    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/old/movements").await;
    let kept: Vec<(u64, &str)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| (movement["seq"].as_u64().unwrap(), movement["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kept,
        [(4, "receipt")],
        "the three movements of a day and a half ago are folded"
    );
    assert_eq!(
        ledger["opening"],
        json!([
            {"location": "default", "on_hand": 3, "reserved": 0, "committed": 0},
            {"location": "north", "on_hand": 4, "reserved": 2, "committed": 0},
        ])
    );
    // The hold still settles on top of the opening balance, and everything still adds up.
    let id = held["reservation_id"].as_str().unwrap();
    let released = app
        .admin(Method::DELETE, &format!("/v1/reservations/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), StatusCode::OK);
    assert_ledger_matches(&app, "old").await;
    let newest_first = app.read_json(ADMIN_TOKEN, "/v1/skus/old/movements?order=desc").await;
    let seqs: Vec<u64> = newest_first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|movement| movement["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (seqs, &newest_first["next"]),
        (vec![5, 4], &Value::Null),
        "nothing below the folded ones"
    );
    // And across a restart.
    engine.barrier().await.unwrap();
    drop(engine);
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_ledger_matches(&app, "old").await;
    assert_eq!(
        app.read_json(ADMIN_TOKEN, "/v1/skus/old/movements").await["items"][0]["seq"],
        4
    );
}

#[actix_web::test]
async fn a_cart_line_holds_where_the_shopper_picks_up() {
    let app = TestApp::spawn().await;
    site(&app, "shop", 1).await;
    app.create_sku("kite", 5).await;
    post(&app, "/v1/skus/kite/locations/shop/restock", json!({"qty": 2})).await;
    let cart = app.create_cart().await;
    let line = |body: Value| {
        let request = app.as_cart(
            &cart,
            Method::PUT,
            "/v1/carts/{id}/items/kite".replace("{id}", &cart.id).as_str(),
        );
        async move { request.json(&body).send().await.unwrap() }
    };
    assert_eq!(
        line(json!({"qty": 2, "location": "shop"})).await.status(),
        StatusCode::OK
    );
    let kite = app.sku("kite").await;
    assert_eq!(at(&kite, "shop"), [2, 2, 0, 0], "held at the shop, not at default");
    assert_eq!(at(&kite, "default"), [5, 0, 0, 5]);
    let refused = line(json!({"qty": 3, "location": "shop"})).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT, "the shop has no third one");
    assert_eq!(
        line(json!({"qty": 3, "locations": ["shop", "default"]})).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        at(&app.sku("kite").await, "default"),
        [5, 1, 0, 4],
        "the third comes from the next choice"
    );
    let bad = line(json!({"qty": 1, "location": "nowhere"})).await;
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    let order: Value = app.checkout(&cart).await.json().await.unwrap();
    assert_eq!(order["status"], "placed");
    let kite = app.sku("kite").await;
    assert_eq!(
        (at(&kite, "shop"), at(&kite, "default")),
        ([2, 0, 2, 0], [5, 0, 1, 4]),
        "checkout sold from both: committed there, on the shelf until shipped"
    );
    assert_eq!(
        order["lines"][0]["parts"],
        json!([{"location": "shop", "qty": 2}, {"location": "default", "qty": 1}]),
        "the order line says where its units are"
    );
    assert_ledger_matches(&app, "kite").await;
}

#[actix_web::test]
async fn one_ledger_pass_folds_more_than_one_batch_of_a_busy_sku() {
    let (clock, options) = test_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.ledger.retention_days = 1;
    })
    .await;
    app.create_sku("busy", 0).await;
    // 2,100 movements: more than two batches of 1,000.
    let client = reqwest::Client::new();
    for chunk in 0..(2_100 / 50) {
        futures::future::join_all((0..50).map(|n| {
            client
                .post(app.url("/v1/skus/busy/restock"))
                .bearer_auth(ADMIN_TOKEN)
                .header("Idempotency-Key", format!("busy-{chunk}-{n}"))
                .json(&json!({"qty": 1}))
                .send()
        }))
        .await
        .into_iter()
        .for_each(|response| assert_eq!(response.unwrap().status(), StatusCode::OK));
    }
    clock.advance(2 * 86_400_000);
    let engine = Arc::clone(app.state.engine().unwrap());
    assert_eq!(
        engine.trim_ledgers().await.unwrap(),
        3,
        "three folds: 1,000, 1,000 and 100"
    );
    let ledger = app.read_json(ADMIN_TOKEN, "/v1/skus/busy/movements").await;
    assert_eq!(ledger["items"], json!([]));
    assert_eq!(
        ledger["opening"],
        json!([{"location": "default", "on_hand": 2_100, "reserved": 0, "committed": 0}])
    );
    assert_ledger_matches(&app, "busy").await;
}

/// The ledger newest first, `limit` a page, as seqs.
async fn seqs_newest_first(app: &TestApp, sku: &str, limit: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = app
            .read_json(
                ADMIN_TOKEN,
                &format!("/v1/skus/{sku}/movements?order=desc&limit={limit}{after}"),
            )
            .await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["seq"].as_u64().unwrap()),
        );
        match page["next"].as_u64() {
            Some(next) => after = format!("&after={next}"),
            None => return seen,
        }
    }
}

#[actix_web::test]
async fn the_ledger_reads_the_same_from_checkpointed_pages_after_a_fold_and_a_restart() {
    let (clock, options) = test_clock();
    let app = TestApp::spawn_with(Arc::new(TempDir::new().unwrap()), options, |settings| {
        settings.ledger.retention_days = 1;
    })
    .await;
    app.create_sku("tide", 0).await;
    let restock = |times: usize| {
        let app = &app;
        async move {
            for _ in 0..times {
                assert_eq!(
                    post(app, "/v1/skus/tide/restock", json!({"qty": 1})).await.0,
                    StatusCode::OK
                );
            }
        }
    };
    restock(60).await;
    clock.advance(36 * 3_600_000);
    restock(60).await;
    let client = reqwest::Client::new();
    let (before, _) = movements(&client, &app.url(""), "tide").await;
    assert_eq!(before.len(), 120);
    let newest_first = seqs_newest_first(&app, "tide", 7).await;

    // The checkpoint writes the 120 movements as a few pages; reads are unchanged.
    let engine = Arc::clone(app.state.engine().unwrap());
    engine.checkpoint().unwrap();
    let sku = stockroom::domain::SkuId::parse("tide").unwrap();
    let rows = engine
        .store
        .storage
        .scan(&stockroom::persistence::keys::movements_of(&sku), None, usize::MAX)
        .unwrap();
    assert!(rows.len() < 10, "120 movements in {} rows", rows.len());
    assert_eq!(movements(&client, &app.url(""), "tide").await.0, before);
    assert_eq!(seqs_newest_first(&app, "tide", 7).await, newest_first);

    // The 60 movements of a day and a half ago fold; the page that holds the last of them
    // and the first kept one stays, and reads start after the folded ones.
    assert_eq!(engine.trim_ledgers().await.unwrap(), 1);
    engine.checkpoint().unwrap();
    let first_kept = before[60]["seq"].as_u64().unwrap();
    let stored = stockroom::persistence::ledger::read_movements(&engine.store, &sku, 1, u64::MAX, usize::MAX).unwrap();
    assert!(
        stored.first().is_some_and(|row| row.movement.seq < first_kept),
        "a page holds folded movements beside kept ones"
    );
    assert_folded_ledger(&app, &before[60..], &newest_first[..60]).await;
    drop(engine);
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, Options::default(), |_| {}).await;
    assert_folded_ledger(&app, &before[60..], &newest_first[..60]).await;
}

/// The ledger of `tide` after its first 60 units folded: `kept` oldest first, `newest_first`
/// as seqs, and an opening balance of 60.
async fn assert_folded_ledger(app: &TestApp, kept: &[Value], newest_first: &[u64]) {
    let (items, opening) = movements(&reqwest::Client::new(), &app.url(""), "tide").await;
    assert_eq!(items, kept);
    assert_eq!(
        opening,
        json!([{"location": "default", "on_hand": 60, "reserved": 0, "committed": 0}])
    );
    assert_eq!(seqs_newest_first(app, "tide", 7).await, newest_first);
    assert_ledger_matches(app, "tide").await;
}
