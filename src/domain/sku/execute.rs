//! One command as the SKU's single writer runs it: expire the holds that are due, look up the
//! settled record the command needs, [`decide`](super::decide()), [`apply_all`], and build
//! the answer.

use super::command::{SkuCommand, SkuRejection};
use super::decide::decide;
use super::event::Crossing;
use super::event::SkuEvent;
use super::model::{settled_reservation, Movement, Reservation, ReservationState, SkuLimits, SkuView, TransferRecord};
use super::state::{apply_all, SkuState};
use crate::domain::ids::{ReservationId, SkuId};
use crate::domain::location::LocationId;

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkuOutcome {
    /// The SKU after the command; `created` when the command created it.
    Sku {
        /// The counters.
        view: SkuView,
        /// Whether this command created the SKU.
        created: bool,
    },
    /// The reservation the command made, released, committed or returned.
    Reservation(Reservation),
    /// The transfer the command sent or received; `None` when it had been received before.
    Transfer(Option<TransferRecord>),
}

/// Everything one command did: its answer, the events applied (due expiries first), and the
/// records of the reservations those events settled (or returned).
#[derive(Debug)]
pub struct Executed {
    /// The answer to the command.
    pub answer: Result<SkuOutcome, SkuRejection>,
    /// Events applied to the state, in order.
    pub events: Vec<SkuEvent>,
    /// Reservations settled by `events`, as they are to be stored.
    pub settled: Vec<Reservation>,
    /// The ledger movements `events` made, in order.
    pub movements: Vec<Movement>,
}

/// Runs one command the way the SKU's single writer does: first expires every hold that is
/// due at `now_ms`, then decides and applies the command. A command naming a reservation
/// this SKU does not hold gets its settled record, which `settled_record` looks up in
/// storage; a storage error is returned as is.
pub fn execute<E>(
    sku: &SkuId,
    state: &mut Option<SkuState>,
    command: &SkuCommand,
    now_ms: u64,
    limits: &SkuLimits,
    settled_record: impl FnOnce(&ReservationId) -> Result<Option<Reservation>, E>,
) -> Result<Executed, E> {
    // Due holds go first, so no command sees a hold past its expiry (`ExpireDue` itself is
    // decided below, once). They are decided here and applied only once the record the
    // command needs was read: a failed read leaves the state as it was, so memory never holds
    // a change that is not written.
    let due = match state.as_ref().filter(|_| !matches!(command, SkuCommand::ExpireDue)) {
        Some(live) => decide(Some(live), &SkuCommand::ExpireDue, None, now_ms, limits)
            .expect("expiring due holds is never refused"),
        None => Vec::new(),
    };
    let mut settled = settled_before(state.as_ref(), &due, now_ms);
    let record = match needs_record(state.as_ref(), command, &settled) {
        // A hold that falls due now is settled by this very call: its record is not stored
        // anywhere yet.
        Some(id) => match settled.iter().find(|record| record.id == id) {
            Some(just_settled) => Some(just_settled.clone()),
            None => settled_record(&id)?,
        },
        None => None,
    };
    let mut movements = apply_all(sku, state, &due);
    let mut events = due;
    let existed = state.is_some();
    let answer = decide(state.as_ref(), command, record.as_ref(), now_ms, limits).map(|decided| {
        let settled_now = settled_before(state.as_ref(), &decided, now_ms);
        let received = decided.iter().find_map(|event| match event {
            SkuEvent::TransferReceived { id, .. } => state.as_ref()?.transfer(id).cloned(),
            _ => None,
        });
        movements.extend(apply_all(sku, state, &decided));
        let answer = answer(
            state.as_ref(),
            command,
            Decided {
                existed,
                events: &decided,
                settled_now: &settled_now,
                record,
                received,
            },
            now_ms,
        );
        settled.extend(settled_now);
        if let SkuOutcome::Reservation(changed) = &answer {
            if decided.iter().any(|event| {
                matches!(
                    event,
                    SkuEvent::Returned { .. }
                        | SkuEvent::ReservationReturned { .. }
                        | SkuEvent::Uncommitted { .. }
                        | SkuEvent::Shipped { .. }
                )
            }) {
                settled.push(changed.clone());
            }
        }
        events.extend(decided);
        answer
    });
    // Units on the shelf again (a restock, a release) fill backorders, oldest first.
    let filled: Vec<SkuEvent> = state
        .as_ref()
        .map(SkuState::fillable)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, location, qty)| SkuEvent::BackorderFilled { id, location, qty })
        .collect();
    if !filled.is_empty() {
        movements.extend(apply_all(sku, state, &filled));
        events.extend(filled);
    }
    // The answer shows the SKU after the fills too.
    let answer = match (answer, state.as_ref()) {
        (Ok(SkuOutcome::Sku { created, .. }), Some(live)) => Ok(SkuOutcome::Sku {
            view: live.view(),
            created,
        }),
        (answer, _) => answer,
    };
    if let Some(live) = state.as_ref() {
        events.extend(crossings(live, &movements));
    }
    Ok(Executed {
        answer,
        events,
        settled,
        movements,
    })
}

/// The `LevelCrossed` events of the locations whose availability `movements` took across
/// zero or the SKU's `low_stock_threshold` (at or below it is low).
fn crossings(state: &SkuState, movements: &[Movement]) -> Vec<SkuEvent> {
    let mut touched: Vec<(&LocationId, i64)> = Vec::new();
    for movement in movements {
        let change = movement.on_hand_delta - movement.reserved_delta - movement.committed_delta;
        match touched.iter_mut().find(|(location, _)| **location == movement.location) {
            Some((_, total)) => *total += change,
            None => touched.push((&movement.location, change)),
        }
    }
    let threshold = state.low_stock_threshold();
    touched
        .into_iter()
        .filter_map(|(location, change)| {
            let after = state.stock_at(location).available();
            let before = after.checked_add_signed(-change)?;
            let low = |units: u64| units > 0 && units <= threshold;
            let crossing = if before > 0 && after == 0 {
                Crossing::Out
            } else if before == 0 && after > 0 {
                Crossing::BackIn
            } else if low(after) && !low(before) && before > after {
                Crossing::Low
            } else {
                return None;
            };
            Some(SkuEvent::LevelCrossed {
                location: location.clone(),
                crossing,
                available: after,
            })
        })
        .collect()
}

/// The reservation whose settled record `command` needs: one it names that `state` does not
/// hold once the `due` holds are settled (for a non-empty `SetHold`, to refuse an id that was
/// committed).
fn needs_record(state: Option<&SkuState>, command: &SkuCommand, due: &[Reservation]) -> Option<ReservationId> {
    let held = |id: &ReservationId| {
        state.is_some_and(|state| state.hold(id).is_some()) && !due.iter().any(|record| record.id == *id)
    };
    match command {
        SkuCommand::Release { id }
        | SkuCommand::Commit { id, .. }
        | SkuCommand::Return { id }
        | SkuCommand::Ship { id, .. }
            if !held(id) =>
        {
            Some(*id)
        }
        SkuCommand::SetHold { id, qty, .. } if *qty > 0 && state.is_some() && !held(id) => Some(*id),
        _ => None,
    }
}

/// What an accepted command did, for its answer.
struct Decided<'a> {
    /// Whether the SKU existed before.
    existed: bool,
    /// The command's events.
    events: &'a [SkuEvent],
    /// The reservations they settled.
    settled_now: &'a [Reservation],
    /// The settled record the command named, if any.
    record: Option<Reservation>,
    /// The transfer they received, as it was in transit.
    received: Option<crate::domain::sku::Transfer>,
}

/// The answer to a command that `decide` accepted, given the state after its events.
fn answer(state: Option<&SkuState>, command: &SkuCommand, decided: Decided<'_>, now_ms: u64) -> SkuOutcome {
    let Decided {
        existed,
        events: decided,
        settled_now,
        record,
        received,
    } = decided;
    let state = state.expect("a command that was accepted leaves a SKU");
    match command {
        SkuCommand::Reserve { id, .. } => {
            let hold = state.hold(id).expect("a successful reservation is held");
            SkuOutcome::Reservation(state.held_reservation(hold))
        }
        // Settled by this command, or already settled (a repeat): the record answers.
        SkuCommand::Release { id } | SkuCommand::Commit { id, .. } => SkuOutcome::Reservation(
            settled_now
                .iter()
                .find(|record| record.id == *id)
                .cloned()
                .or(record)
                .expect("a release or commit that stands has a settled record"),
        ),
        SkuCommand::Transfer { id, .. } => SkuOutcome::Transfer(state.transfer(id).map(|transfer| TransferRecord {
            sku: state.sku().clone(),
            transfer: transfer.clone(),
            received_ms: None,
        })),
        SkuCommand::ReceiveTransfer { .. } => SkuOutcome::Transfer(received.map(|transfer| TransferRecord {
            sku: state.sku().clone(),
            transfer,
            received_ms: Some(now_ms),
        })),
        SkuCommand::Ship { location, qty, .. } => {
            let record = record.expect("a shipment that stands has a settled record");
            SkuOutcome::Reservation(Reservation {
                parts: crate::domain::sku::stock::shrink_at(&record.parts, location, *qty),
                ..record
            })
        }
        SkuCommand::Return { .. } => {
            let record = record.expect("a return that stands has a settled record");
            SkuOutcome::Reservation(if decided.is_empty() {
                record
            } else {
                Reservation {
                    state: ReservationState::Returned,
                    settled_ms: Some(now_ms),
                    ..record
                }
            })
        }
        _ => SkuOutcome::Sku {
            view: state.view(),
            created: !existed && decided.iter().any(|event| matches!(event, SkuEvent::SkuCreated { .. })),
        },
    }
}

/// The settled records that `events` will leave, read from the state *before* they apply.
pub fn settled_before(state: Option<&SkuState>, events: &[SkuEvent], now_ms: u64) -> Vec<Reservation> {
    let Some(state) = state else {
        return Vec::new();
    };
    events
        .iter()
        .filter_map(|event| {
            let (id, settled_state) = event.settles()?;
            let hold = state.hold(&id)?;
            Some(settled_reservation(state.sku(), hold, settled_state, now_ms))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::location::LocationId;
    use crate::domain::sku::model::Product;
    #[allow(unused_imports)]
    use crate::domain::sku::stock::{at_default, Placement};
    use crate::domain::values::{Currency, Name, Quantity};

    fn limits() -> SkuLimits {
        SkuLimits {
            holds_max: 10,
            ..SkuLimits::default()
        }
    }

    #[test]
    fn a_failed_read_leaves_the_state_as_it_was_even_with_holds_due() {
        let sku = SkuId::parse("mug").unwrap();
        let mut state = None;
        let product = Product {
            name: Name::parse("Mug", "name", "invalid_name").unwrap(),
            price_minor: 1299,
            currency: Currency::parse("EUR").unwrap(),
        };
        let no_store = |_: &ReservationId| Ok::<_, ()>(None);
        let create = SkuCommand::Upsert {
            product,
            on_hand: Some(10),
            low_stock_threshold: None,
            backorder_limit: None,
            available_from_ms: None,
        };
        execute(&sku, &mut state, &create, 0, &limits(), no_store).unwrap();
        let due = ReservationId::generate();
        let reserve = SkuCommand::Reserve {
            placement: Placement::Any,
            id: due,
            qty: Quantity::parse(4, 100).unwrap(),
            ttl_ms: 1_000,
        };
        execute(&sku, &mut state, &reserve, 0, &limits(), no_store).unwrap();
        // At 2 000 the hold is due; releasing another reservation needs a read, which fails.
        let release = SkuCommand::Release {
            id: ReservationId::generate(),
        };
        let failed = execute(&sku, &mut state, &release, 2_000, &limits(), |_| {
            Err("the store failed")
        });
        assert_eq!(failed.err(), Some("the store failed"));
        let live = state.as_ref().unwrap();
        assert!(
            live.hold(&due).is_some(),
            "the due hold is still held in memory, as it is in storage"
        );
        assert_eq!(live.reserved(), 4);
        // The next command that succeeds expires it, and says so in its events.
        let executed = execute(&sku, &mut state, &SkuCommand::ExpireDue, 2_000, &limits(), no_store).unwrap();
        assert_eq!(executed.events.len(), 1);
        assert_eq!(state.unwrap().reserved(), 0);
    }
}
