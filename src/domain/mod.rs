//! The pure domain: newtypes parsed at the edge and the state machines of the aggregates.
//!
//! Nothing here does IO or reads a clock: every function takes the current time as an
//! argument, so the same code runs inside actors, in recovery and in seeded simulations.
//! The shape of every state machine is `decide(state, command, now) -> Result<events,
//! rejection>` followed by `apply(state, event)`: deciding never mutates, applying never fails.

pub mod cart;
pub mod clock;
pub mod event;
pub mod ids;
pub mod location;
pub mod order;
pub mod sku;
pub mod values;

pub use clock::{Clock, SteadyClock, SystemClock};
pub use event::{CartEvent, DomainEvent, EventRecord, OrderEvent, SkuEvent};
pub use ids::{CartId, OrderId, ReservationId, SkuId};
pub use values::{Currency, InvalidValue, Money, Name, Quantity, StockDelta};
