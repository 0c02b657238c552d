//! Black-box tests: the real server on port 0 with a fresh data directory, driven over HTTP.
//! One test binary (fast to link); one module per area. The crash tests run the real binary.

// The in-process server allocates as the real binary does (`src/main.rs`), so what these
// tests time (recovery, for example) is what a deployment sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod backorders;
mod bad_input;
mod batch;
mod compat;
mod cors;
mod crash;
mod crash_checkout;
mod crash_scale;
mod expiry;
mod faults;
mod fulfilment;
mod helpers;
mod idempotency;
mod kafka;
mod kafka_support;
mod lifecycle;
mod locations;
mod orders_list;
mod overload;
mod pages;
mod power_cut;
mod power_cut_fs;
mod readme;
mod recovery;
mod reservation_ids;
mod simulation;
mod slow_clients;
mod stock;
mod stock_locations;
mod storefront;
mod tracking;
mod write_path;
