//! stockroom: real-time stock, reservations, carts and orders for an online shop.
//!
//! Layout, from the outside in:
//!
//! - [`main`](../stockroom/index.html) parses `--config` and runs [`startup::Application`].
//! - [`startup`]: binds HTTP at once, recovers the [`engine`] in the background, serves until
//!   a signal, then makes everything durable.
//! - [`http`]: the JSON API; each handler parses input, asks one actor, waits for
//!   durability, answers. [`http::error`] holds the error code table.
//! - [`actors`]: one actor per aggregate, the single writer of its state; the registry that
//!   finds them; bounded mailboxes.
//! - [`domain`]: pure state machines (`decide` / `apply`) and the newtypes parsed at the edge.
//! - [`idempotency`]: `Idempotency-Key`s, from the header to the stored answer.
//! - [`persistence`]: the store interface and its durability contract, the sled store, the
//!   group-commit writer, recovery.
//! - [`config`], [`telemetry`], [`metrics`]: operations.

pub mod access;
pub mod actors;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod engine;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod locations;
pub mod metrics;
pub mod persistence;
pub mod startup;
pub mod telemetry;
