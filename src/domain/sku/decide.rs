//! Every rule of a SKU: a command, the state and what is known of a settled reservation go
//! in; the events that follow, or a refusal, come out. Pure: no clock, no storage.

use super::command::{SkuCommand, SkuRejection};
use super::event::SkuEvent;
use super::model::{Hold, Reservation, ReservationState, SkuLimits, Transfer, EXPIRE_BATCH_MAX, ON_HAND_MAX};
use super::state::SkuState;
use super::stock::{allocate, first_site, merge_parts, shrink_parts, Part, Placement, Unplaced};

/// Decides what a command does to a SKU at time `now_ms`: every rule of the SKU is here.
///
/// - `state` is `None` for a SKU that does not exist yet.
/// - `settled` is the stored record of the reservation the command names, when this SKU no
///   longer holds it (the caller looks it up; `None` when there is none). Releasing,
///   committing and returning a settled reservation are answered from it, and an id that was
///   committed is never held again.
///
/// Never mutates; the events it returns are applied with [`apply_all`](super::apply_all). `Ok` with no events
/// means the command stands without changing anything (a repeat, for example).
pub fn decide(
    state: Option<&SkuState>,
    command: &SkuCommand,
    settled: Option<&Reservation>,
    now_ms: u64,
    limits: &SkuLimits,
) -> Result<Vec<SkuEvent>, SkuRejection> {
    let Some(state) = state else {
        return match command {
            SkuCommand::Upsert {
                product,
                on_hand,
                low_stock_threshold,
                backorder_limit,
                available_from_ms,
            } => {
                let on_hand = on_hand.unwrap_or(0);
                if on_hand > ON_HAND_MAX {
                    return Err(SkuRejection::StockLimitExceeded);
                }
                let mut events = vec![SkuEvent::SkuCreated {
                    product: product.clone(),
                    on_hand,
                }];
                if let Some(threshold) = low_stock_threshold.filter(|threshold| *threshold > 0) {
                    events.push(SkuEvent::SettingsChanged {
                        low_stock_threshold: threshold,
                    });
                }
                let settings = (backorder_limit.unwrap_or(0), available_from_ms.flatten());
                if settings != (0, None) {
                    events.push(SkuEvent::BackorderSettingsChanged {
                        backorder_limit: settings.0,
                        available_from_ms: settings.1,
                    });
                }
                Ok(events)
            }
            // A settled record names its SKU, so there is none to find here.
            SkuCommand::Release { .. }
            | SkuCommand::Commit { .. }
            | SkuCommand::Return { .. }
            | SkuCommand::Ship { .. }
            | SkuCommand::TakeBack { .. } => Err(SkuRejection::ReservationNotFound),
            SkuCommand::ReceiveTransfer { .. } => Err(SkuRejection::TransferNotFound),
            _ => Err(SkuRejection::SkuNotFound),
        };
    };
    // A record of another SKU's reservation says nothing about this one.
    let settled = settled.filter(|record| record.sku == state.sku);
    let on_hand = state.on_hand();
    let within_max = |extra: u64| on_hand.checked_add(extra).is_some_and(|total| total <= ON_HAND_MAX);
    match command {
        SkuCommand::Upsert {
            product,
            on_hand: stated,
            low_stock_threshold,
            backorder_limit,
            available_from_ms,
        } => {
            if stated.is_some_and(|stated| stated != on_hand) {
                return Err(SkuRejection::OnHandNotUpdatable { on_hand });
            }
            let mut events = Vec::new();
            if *product != state.product {
                events.push(SkuEvent::SkuUpdated {
                    product: product.clone(),
                });
            }
            if let Some(threshold) = low_stock_threshold.filter(|threshold| *threshold != state.low_stock_threshold) {
                events.push(SkuEvent::SettingsChanged {
                    low_stock_threshold: threshold,
                });
            }
            let (limit_now, from_now) = state.backorder_settings();
            let settings = (
                backorder_limit.unwrap_or(limit_now),
                available_from_ms.unwrap_or(from_now),
            );
            if settings != (limit_now, from_now) {
                events.push(SkuEvent::BackorderSettingsChanged {
                    backorder_limit: settings.0,
                    available_from_ms: settings.1,
                });
            }
            Ok(events)
        }
        SkuCommand::Restock { location, qty, reason } => {
            if !within_max(qty.get()) {
                return Err(SkuRejection::StockLimitExceeded);
            }
            Ok(vec![SkuEvent::Received {
                location: location.clone(),
                qty: qty.get(),
                reason: reason.clone(),
            }])
        }
        SkuCommand::Adjust {
            location,
            delta,
            reason,
        } => {
            let magnitude = delta.get().unsigned_abs();
            let available = state.stock_at(location).available();
            if delta.get() < 0 && magnitude > available {
                return Err(SkuRejection::InsufficientStock { available });
            }
            if delta.get() > 0 && !within_max(magnitude) {
                return Err(SkuRejection::StockLimitExceeded);
            }
            Ok(vec![SkuEvent::Adjusted {
                location: location.clone(),
                delta: delta.get(),
                reason: reason.clone(),
            }])
        }
        SkuCommand::Count {
            location,
            on_hand: counted,
            reason,
        } => {
            let here = state.stock_at(location);
            // The units held or sold here are on the shelf (but those backordered): a count
            // below them is refused.
            let on_shelf = (here.reserved + here.committed).saturating_sub(state.backordered_at(location));
            if *counted < on_shelf {
                return Err(SkuRejection::InsufficientStock {
                    available: here.available(),
                });
            }
            if *counted > here.on_hand && !within_max(counted - here.on_hand) {
                return Err(SkuRejection::StockLimitExceeded);
            }
            if *counted == here.on_hand && state.stock.contains_key(location) {
                return Ok(Vec::new());
            }
            Ok(vec![SkuEvent::Counted {
                location: location.clone(),
                on_hand: *counted,
                reason: reason.clone(),
            }])
        }
        SkuCommand::Reserve {
            id,
            qty,
            ttl_ms,
            placement,
        } => {
            if state.holds.len() >= limits.holds_max {
                return Err(SkuRejection::HoldLimitReached {
                    holds_max: limits.holds_max,
                });
            }
            let parts = place(state, qty.get(), placement, limits, 0)?;
            Ok(vec![SkuEvent::Held {
                hold: Hold {
                    id: *id,
                    qty: qty.get(),
                    parts: parts.into_iter().collect(),
                    created_ms: now_ms,
                    expires_ms: now_ms.saturating_add(*ttl_ms),
                },
            }])
        }
        SkuCommand::Release { id } => match state.holds.get(id) {
            Some(hold) => Ok(vec![SkuEvent::ReservationReleased { id: *id, qty: hold.qty }]),
            // Releasing is idempotent: a released or lapsed reservation stays so.
            None => match settled.map(|record| record.state) {
                Some(ReservationState::Released | ReservationState::Expired) => Ok(Vec::new()),
                Some(ReservationState::Sold | ReservationState::Committed | ReservationState::Returned) => {
                    Err(SkuRejection::ReservationCommitted)
                }
                Some(ReservationState::Held) | None => Err(SkuRejection::ReservationNotFound),
            },
        },
        SkuCommand::Commit { id, until_shipped } => match state.holds.get(id) {
            Some(hold) if hold.expires_ms <= now_ms => Err(SkuRejection::ReservationExpired),
            Some(hold) if *until_shipped => Ok(vec![SkuEvent::Committed { id: *id, qty: hold.qty }]),
            // Sold outright, the units leave the shelf now: they must be on it.
            Some(hold) if state.backordered_of(id, None) > 0 => Err(SkuRejection::Backordered {
                location: hold.parts[0].location.clone(),
                waiting: state.backordered_of(id, None),
            }),
            Some(hold) => Ok(vec![SkuEvent::ReservationCommitted { id: *id, qty: hold.qty }]),
            // Committing twice commits once.
            None => match settled.map(|record| record.state) {
                Some(ReservationState::Sold | ReservationState::Committed) => Ok(Vec::new()),
                Some(ReservationState::Released) => Err(SkuRejection::ReservationReleased),
                Some(ReservationState::Expired) => Err(SkuRejection::ReservationExpired),
                Some(ReservationState::Returned) => Err(SkuRejection::ReservationCommitted),
                Some(ReservationState::Held) | None => Err(SkuRejection::ReservationNotFound),
            },
        },
        SkuCommand::SetHold {
            id,
            qty,
            expires_ms,
            placement,
        } => match state.holds.get(id) {
            Some(hold) if *qty == 0 => Ok(vec![SkuEvent::ReservationReleased { id: *id, qty: hold.qty }]),
            Some(hold) if *qty == hold.qty && *expires_ms == hold.expires_ms => Ok(Vec::new()),
            Some(hold) => {
                let parts = if *qty > hold.qty {
                    let extra = place(state, qty - hold.qty, placement, limits, hold.qty)?;
                    merge_parts(&hold.parts, extra)
                } else {
                    shrink_parts(&hold.parts, hold.qty - qty)
                };
                Ok(vec![SkuEvent::HoldChanged {
                    id: *id,
                    qty: *qty,
                    parts,
                    expires_ms: *expires_ms,
                }])
            }
            None if *qty == 0 => Ok(Vec::new()),
            // An id that was committed belongs to a sale now; it is never held again.
            None if settled
                .is_some_and(|record| record.state.is_sold() || record.state == ReservationState::Returned) =>
            {
                Err(SkuRejection::ReservationCommitted)
            }
            None => {
                if state.holds.len() >= limits.holds_max {
                    return Err(SkuRejection::HoldLimitReached {
                        holds_max: limits.holds_max,
                    });
                }
                let parts = place(state, *qty, placement, limits, 0)?;
                Ok(vec![SkuEvent::Held {
                    hold: Hold {
                        id: *id,
                        qty: *qty,
                        parts: parts.into_iter().collect(),
                        created_ms: now_ms,
                        expires_ms: *expires_ms,
                    },
                }])
            }
        },
        SkuCommand::ExtendHold { id, expires_ms } => match state.holds.get(id) {
            Some(hold) if hold.expires_ms != *expires_ms => Ok(vec![SkuEvent::HoldChanged {
                id: *id,
                qty: hold.qty,
                parts: hold.parts.to_vec(),
                expires_ms: *expires_ms,
            }]),
            _ => Ok(Vec::new()),
        },
        // Only a sold reservation's units go back; returning twice returns once. Units sold
        // by this build are still on the shelf (`committed`); units sold before fulfilment
        // left it, and go back on it.
        SkuCommand::Return { id } => match (state.holds.get(id), settled) {
            (Some(_), _) => Err(SkuRejection::ReservationNotCommitted),
            (None, Some(record)) => match record.state {
                ReservationState::Committed => Ok(vec![SkuEvent::Uncommitted {
                    id: *id,
                    parts: record.parts.clone(),
                }]),
                ReservationState::Sold if !within_max(record.qty) => Err(SkuRejection::StockLimitExceeded),
                ReservationState::Sold => Ok(vec![SkuEvent::Returned {
                    id: *id,
                    parts: record.parts.clone(),
                }]),
                ReservationState::Returned => Ok(Vec::new()),
                _ => Err(SkuRejection::ReservationNotCommitted),
            },
            (None, None) => Err(SkuRejection::ReservationNotFound),
        },
        SkuCommand::Ship { id, location, qty } => match (state.holds.get(id), settled) {
            (Some(_), _) => Err(SkuRejection::ReservationNotCommitted),
            (None, None) => Err(SkuRejection::ReservationNotFound),
            (None, Some(record)) if !record.state.is_sold() => Err(SkuRejection::ReservationNotCommitted),
            (None, Some(record)) => {
                let committed = super::stock::units_at(&record.parts, location);
                if committed < *qty {
                    return Err(SkuRejection::NotCommittedHere {
                        location: location.clone(),
                        committed,
                    });
                }
                let waiting = state.backordered_of(id, Some(location));
                if committed - waiting < *qty {
                    return Err(SkuRejection::Backordered {
                        location: location.clone(),
                        waiting,
                    });
                }
                Ok(vec![SkuEvent::Shipped {
                    id: *id,
                    location: location.clone(),
                    qty: *qty,
                    on_shelf: record.state == ReservationState::Committed,
                }])
            }
        },
        SkuCommand::TakeBack {
            id,
            location,
            qty,
            restock,
        } => {
            if *restock && !within_max(*qty) {
                return Err(SkuRejection::StockLimitExceeded);
            }
            Ok(vec![SkuEvent::TakenBack {
                id: *id,
                location: location.clone(),
                qty: *qty,
                restock: *restock,
            }])
        }
        SkuCommand::Transfer { id, from, to, qty } => {
            let available = state.stock_at(from).available();
            if qty.get() > available {
                return Err(SkuRejection::InsufficientStock { available });
            }
            Ok(vec![SkuEvent::TransferSent {
                transfer: Transfer {
                    id: *id,
                    from: from.clone(),
                    to: to.clone(),
                    qty: qty.get(),
                    created_ms: now_ms,
                },
            }])
        }
        // A transfer this SKU sent that is no longer in transit was received: receiving
        // twice receives once. (Whether this SKU sent it is the caller's to know.)
        SkuCommand::ReceiveTransfer { id } => Ok(state
            .in_transit
            .get(id)
            .map(|transfer| {
                vec![SkuEvent::TransferReceived {
                    id: *id,
                    to: transfer.to.clone(),
                    qty: transfer.qty,
                }]
            })
            .unwrap_or_default()),
        SkuCommand::TrimLedger {
            from_seq,
            upto_seq,
            folded,
        } => {
            if *from_seq != state.ledger_start || upto_seq < from_seq || *upto_seq > state.movement_seq {
                return Ok(Vec::new());
            }
            Ok(vec![SkuEvent::LedgerTrimmed {
                from_seq: *from_seq,
                upto_seq: *upto_seq,
                folded: folded.clone(),
            }])
        }
        SkuCommand::ExpireDue => Ok(state
            .expiry
            .iter()
            .take_while(|(expires_ms, _)| *expires_ms <= now_ms)
            .take(EXPIRE_BATCH_MAX)
            .map(|(_, id)| SkuEvent::ReservationExpired {
                id: *id,
                qty: state.holds[id].qty,
            })
            .collect()),
    }
}

/// Where `qty` more units of a hold come from; `already` is what the hold has (so that a
/// refusal reports what the whole hold could have).
fn place(
    state: &SkuState,
    qty: u64,
    placement: &Placement,
    limits: &SkuLimits,
    already: u64,
) -> Result<Vec<Part>, SkuRejection> {
    match allocate(&state.stock, qty, placement, &limits.allocation) {
        Ok(parts) => Ok(parts),
        Err(Unplaced::Unavailable(location)) => Err(SkuRejection::LocationUnavailable { location }),
        Err(Unplaced::Short { available }) => {
            // Beyond the shelves, within the backorder limit: all of it at the first place the
            // hold would look, where what is missing waits for a restock.
            let room = state.backorder_room();
            if room > 0 {
                if let Some(location) = first_site(&state.stock, placement, &limits.allocation) {
                    let missing = qty.saturating_sub(state.stock_at(&location).available());
                    if missing <= room {
                        return Ok(vec![Part { location, qty }]);
                    }
                }
            }
            Err(SkuRejection::InsufficientStock {
                available: available + already + room,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ReservationId, SkuId};
    #[allow(unused_imports)]
    use crate::domain::location::LocationId;
    use crate::domain::sku::model::{settled_reservation, Product};
    use crate::domain::sku::state::apply_all;
    #[allow(unused_imports)]
    use crate::domain::sku::stock::{at_default, Placement};
    use crate::domain::values::QUANTITY_MAX;
    use crate::domain::values::{Currency, Name, Quantity, StockDelta};

    fn limits() -> SkuLimits {
        SkuLimits {
            holds_max: 3,
            ..SkuLimits::default()
        }
    }

    fn product() -> Product {
        Product {
            name: Name::parse("Mug", "name", "invalid_name").unwrap(),
            price_minor: 1299,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn sku_with(on_hand: u64) -> Option<SkuState> {
        let sku = SkuId::parse("mug").unwrap();
        let mut state = None;
        let events = decide(
            None,
            &SkuCommand::Upsert {
                product: product(),
                on_hand: Some(on_hand),
                low_stock_threshold: None,
                backorder_limit: None,
                available_from_ms: None,
            },
            None,
            0,
            &limits(),
        )
        .unwrap();
        apply_all(&sku, &mut state, &events);
        state
    }

    fn run(state: &mut Option<SkuState>, command: SkuCommand, now_ms: u64) -> Result<Vec<SkuEvent>, SkuRejection> {
        let sku = state.as_ref().unwrap().sku().clone();
        let events = decide(state.as_ref(), &command, None, now_ms, &limits())?;
        apply_all(&sku, state, &events);
        Ok(events)
    }

    /// Holds `units` under `id` at time 0 for 1000 ms.
    fn hold(state: &mut Option<SkuState>, id: ReservationId, units: i64) {
        run(
            state,
            SkuCommand::Reserve {
                placement: Placement::Any,
                id,
                qty: qty(units),
                ttl_ms: 1000,
            },
            0,
        )
        .unwrap();
    }

    fn qty(n: i64) -> Quantity {
        Quantity::parse(n, QUANTITY_MAX).unwrap()
    }

    #[test]
    fn reserving_more_than_available_is_refused_with_the_available_count() {
        let mut state = sku_with(5);
        hold(&mut state, ReservationId::generate(), 3);
        let refused = run(
            &mut state,
            SkuCommand::Reserve {
                placement: Placement::Any,
                id: ReservationId::generate(),
                qty: qty(3),
                ttl_ms: 1000,
            },
            0,
        );
        assert_eq!(refused, Err(SkuRejection::InsufficientStock { available: 2 }));
        let view = state.unwrap().view();
        assert_eq!((view.on_hand, view.reserved, view.available), (5, 3, 2));
    }

    #[test]
    fn committing_keeps_units_on_the_shelf_until_shipped_and_releasing_gives_them_back() {
        let mut state = sku_with(10);
        let kept = ReservationId::generate();
        let returned = ReservationId::generate();
        hold(&mut state, kept, 4);
        hold(&mut state, returned, 2);
        run(
            &mut state,
            SkuCommand::Commit {
                id: kept,
                until_shipped: true,
            },
            10,
        )
        .unwrap();
        run(&mut state, SkuCommand::Release { id: returned }, 10).unwrap();
        let view = state.as_ref().unwrap().view();
        assert_eq!(
            (view.on_hand, view.reserved, view.committed, view.available),
            (10, 0, 4, 6)
        );
        let mut sold = record(4, ReservationState::Committed);
        sold.id = kept;
        let ship = SkuCommand::Ship {
            id: kept,
            location: LocationId::default_location(),
            qty: 3,
        };
        let shipped = decide_settled(&state, ship, &sold).unwrap();
        apply_all(&SkuId::parse("mug").unwrap(), &mut state, &shipped);
        let view = state.unwrap().view();
        assert_eq!(
            (view.on_hand, view.reserved, view.committed, view.available),
            (7, 0, 1, 6)
        );
    }

    #[test]
    fn backorders_stay_exactly_what_holds_take_beyond_the_shelf_as_holds_change() {
        let mut state = sku_with(0);
        let settings = SkuCommand::Upsert {
            product: product(),
            on_hand: None,
            low_stock_threshold: None,
            backorder_limit: Some(10),
            available_from_ms: None,
        };
        run(&mut state, settings, 0).unwrap();
        let (first, second) = (ReservationId::generate(), ReservationId::generate());
        hold(&mut state, first, 3);
        hold(&mut state, second, 2);
        let live = state.as_ref().unwrap();
        assert_eq!(
            (live.backordered_of(&first, None), live.backordered_of(&second, None)),
            (3, 2)
        );
        // Shrinking a hold gives up its own backordered units, once: the others still wait.
        let shrink = SkuCommand::SetHold {
            id: first,
            qty: 1,
            expires_ms: 1000,
            placement: Placement::Any,
        };
        run(&mut state, shrink, 0).unwrap();
        let live = state.as_ref().unwrap();
        assert_eq!(
            (live.backordered_of(&first, None), live.backordered_of(&second, None)),
            (1, 2)
        );
        assert_eq!(live.check_invariants_fully(), Ok(()));
        // Beyond the limit is refused, with the most the hold could have had.
        let third = SkuCommand::Reserve {
            placement: Placement::Any,
            id: ReservationId::generate(),
            qty: qty(8),
            ttl_ms: 1000,
        };
        assert_eq!(
            run(&mut state, third, 0),
            Err(SkuRejection::InsufficientStock { available: 7 })
        );
    }

    #[test]
    fn holds_expire_at_their_instant_and_not_before() {
        let mut state = sku_with(10);
        hold(&mut state, ReservationId::generate(), 4);
        assert!(run(&mut state, SkuCommand::ExpireDue, 999).unwrap().is_empty());
        let expired = run(&mut state, SkuCommand::ExpireDue, 1000).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(state.unwrap().available(), 10);
    }

    #[test]
    fn a_due_hold_cannot_be_committed() {
        let mut state = sku_with(10);
        let id = ReservationId::generate();
        hold(&mut state, id, 1);
        assert_eq!(
            run(
                &mut state,
                SkuCommand::Commit {
                    id,
                    until_shipped: true
                },
                1000
            ),
            Err(SkuRejection::ReservationExpired)
        );
    }

    #[test]
    fn shrinkage_may_not_take_available_below_zero() {
        let mut state = sku_with(5);
        hold(&mut state, ReservationId::generate(), 4);
        let reason = Name::parse("broken", "reason", "invalid_reason").unwrap();
        let refused = run(
            &mut state,
            SkuCommand::Adjust {
                location: LocationId::default_location(),
                delta: StockDelta::parse(-2).unwrap(),
                reason: reason.clone(),
            },
            0,
        );
        assert_eq!(refused, Err(SkuRejection::InsufficientStock { available: 1 }));
        run(
            &mut state,
            SkuCommand::Adjust {
                location: LocationId::default_location(),
                delta: StockDelta::parse(-1).unwrap(),
                reason,
            },
            0,
        )
        .unwrap();
        assert_eq!(state.unwrap().view().on_hand, 4);
    }

    #[test]
    fn on_hand_is_set_only_at_creation() {
        let mut state = sku_with(5);
        let same = run(
            &mut state,
            SkuCommand::Upsert {
                product: product(),
                on_hand: Some(5),
                low_stock_threshold: None,
                backorder_limit: None,
                available_from_ms: None,
            },
            0,
        );
        assert_eq!(same, Ok(vec![]), "repeating the creating PUT changes nothing");
        let changed = run(
            &mut state,
            SkuCommand::Upsert {
                product: product(),
                on_hand: Some(6),
                low_stock_threshold: None,
                backorder_limit: None,
                available_from_ms: None,
            },
            0,
        );
        assert_eq!(changed, Err(SkuRejection::OnHandNotUpdatable { on_hand: 5 }));
    }

    #[test]
    fn the_hold_limit_bounds_a_sku() {
        let mut state = sku_with(100);
        for _ in 0..3 {
            run(
                &mut state,
                SkuCommand::Reserve {
                    placement: Placement::Any,
                    id: ReservationId::generate(),
                    qty: qty(1),
                    ttl_ms: 1000,
                },
                0,
            )
            .unwrap();
        }
        let refused = run(
            &mut state,
            SkuCommand::Reserve {
                placement: Placement::Any,
                id: ReservationId::generate(),
                qty: qty(1),
                ttl_ms: 1000,
            },
            0,
        );
        assert_eq!(refused, Err(SkuRejection::HoldLimitReached { holds_max: 3 }));
    }

    /// A reservation of `qty` units of the test SKU, settled into `state` at 5.
    fn record(qty: u64, state: ReservationState) -> Reservation {
        let hold = Hold {
            id: ReservationId::generate(),
            qty,
            parts: at_default(qty).into(),
            created_ms: 0,
            expires_ms: 10,
        };
        settled_reservation(&SkuId::parse("mug").unwrap(), &hold, state, 5)
    }

    fn decide_settled(
        state: &Option<SkuState>,
        command: SkuCommand,
        record: &Reservation,
    ) -> Result<Vec<SkuEvent>, SkuRejection> {
        decide(state.as_ref(), &command, Some(record), 20, &limits())
    }

    #[test]
    fn settled_reservations_answer_release_and_commit_consistently() {
        let state = sku_with(5);
        let committed = record(1, ReservationState::Committed);
        let released = record(1, ReservationState::Released);
        let expired = record(1, ReservationState::Expired);
        let release = |record: &Reservation| SkuCommand::Release { id: record.id };
        let commit = |record: &Reservation| SkuCommand::Commit {
            id: record.id,
            until_shipped: true,
        };
        assert_eq!(
            decide_settled(&state, release(&committed), &committed),
            Err(SkuRejection::ReservationCommitted)
        );
        assert_eq!(decide_settled(&state, commit(&committed), &committed), Ok(vec![]));
        assert_eq!(decide_settled(&state, release(&released), &released), Ok(vec![]));
        assert_eq!(
            decide_settled(&state, commit(&released), &released),
            Err(SkuRejection::ReservationReleased)
        );
        assert_eq!(decide_settled(&state, release(&expired), &expired), Ok(vec![]));
        assert_eq!(
            decide_settled(&state, commit(&expired), &expired),
            Err(SkuRejection::ReservationExpired)
        );
    }

    #[test]
    fn only_a_committed_reservation_is_returned_and_only_once() {
        let state = sku_with(5);
        let committed = record(2, ReservationState::Sold);
        let return_ = |record: &Reservation| SkuCommand::Return { id: record.id };
        assert_eq!(
            decide_settled(&state, return_(&committed), &committed),
            Ok(vec![SkuEvent::Returned {
                id: committed.id,
                parts: at_default(2)
            }]),
            "sold before fulfilment: the units go back on the shelf"
        );
        let on_shelf = record(2, ReservationState::Committed);
        assert_eq!(
            decide_settled(&state, return_(&on_shelf), &on_shelf),
            Ok(vec![SkuEvent::Uncommitted {
                id: on_shelf.id,
                parts: at_default(2)
            }]),
            "sold, not shipped: the units stop being committed"
        );
        let returned = Reservation {
            state: ReservationState::Returned,
            ..committed.clone()
        };
        assert_eq!(
            decide_settled(&state, return_(&returned), &returned),
            Ok(vec![]),
            "returning twice returns once"
        );
        let released = record(2, ReservationState::Released);
        assert_eq!(
            decide_settled(&state, return_(&released), &released),
            Err(SkuRejection::ReservationNotCommitted)
        );
        assert_eq!(
            decide(state.as_ref(), &return_(&committed), None, 20, &limits()),
            Err(SkuRejection::ReservationNotFound)
        );
        let full = sku_with(ON_HAND_MAX - 1);
        assert_eq!(
            decide_settled(&full, return_(&committed), &committed),
            Err(SkuRejection::StockLimitExceeded)
        );
    }

    #[test]
    fn a_held_reservation_is_not_returned() {
        let mut state = sku_with(5);
        let id = ReservationId::generate();
        hold(&mut state, id, 1);
        assert_eq!(
            run(&mut state, SkuCommand::Return { id }, 1),
            Err(SkuRejection::ReservationNotCommitted)
        );
    }

    #[test]
    fn a_committed_id_is_never_held_again() {
        let state = sku_with(5);
        let committed = record(1, ReservationState::Committed);
        let set = SkuCommand::SetHold {
            placement: Placement::Any,
            id: committed.id,
            qty: 1,
            expires_ms: 100,
        };
        assert_eq!(
            decide_settled(&state, set, &committed),
            Err(SkuRejection::ReservationCommitted)
        );
    }

    #[test]
    fn a_record_of_another_sku_is_not_this_skus_reservation() {
        let state = sku_with(5);
        let mut elsewhere = record(1, ReservationState::Committed);
        elsewhere.sku = SkuId::parse("tee").unwrap();
        assert_eq!(
            decide_settled(
                &state,
                SkuCommand::Commit {
                    id: elsewhere.id,
                    until_shipped: true
                },
                &elsewhere
            ),
            Err(SkuRejection::ReservationNotFound)
        );
    }
}
