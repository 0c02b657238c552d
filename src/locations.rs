//! The locations, in memory and in the store (`l<id>` rows, written through the writer with
//! a `stockroom.location.created` / `updated` event). `default` is always there: configured
//! or not, it is where stock without a location lives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::access::By;
use crate::domain::location::{Location, LocationEvent, LocationId};
use crate::domain::sku::{Site, Sites};
use crate::domain::DomainEvent;
use crate::persistence::{codec, keys, Op, StateView, StoreError, Ticket, Writer};

/// Every location.
pub struct Locations {
    table: RwLock<BTreeMap<LocationId, Location>>,
    /// The same, as allocation sees it: swapped whole on every change.
    sites: RwLock<Arc<Sites>>,
    /// Serialises saves, so that "created or updated" is decided against what is stored.
    changes: Mutex<()>,
}

/// Why a location could not be saved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    /// The writer's queue is full.
    #[error("the writer is overloaded")]
    Overloaded,
}

impl Locations {
    /// The locations stored in `store`, and `default`.
    pub fn load(store: &StateView) -> anyhow::Result<Self> {
        let mut table = BTreeMap::new();
        table.insert(LocationId::default_location(), Location::implicit_default());
        crate::persistence::recovery::for_each_row(store, keys::LOCATION, |key, bytes| {
            let location: Location = store.decode(key, bytes)?;
            let id = LocationId::parse(&String::from_utf8_lossy(&key[1..])).map_err(|error| StoreError::Corrupt {
                key: keys::display(key),
                reason: error.message,
            })?;
            table.insert(id, location);
            Ok(())
        })?;
        Ok(Self {
            sites: RwLock::new(sites_of(&table)),
            table: RwLock::new(table),
            changes: Mutex::new(()),
        })
    }

    /// Only `default`: for tests and tools that have no store.
    pub fn only_default() -> Self {
        let mut table = BTreeMap::new();
        table.insert(LocationId::default_location(), Location::implicit_default());
        Self {
            sites: RwLock::new(sites_of(&table)),
            table: RwLock::new(table),
            changes: Mutex::new(()),
        }
    }

    /// The locations as allocation sees them, now.
    pub fn sites(&self) -> Arc<Sites> {
        Arc::clone(&self.sites.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Every location, by id.
    pub fn list(&self) -> Vec<(LocationId, Location)> {
        let table = self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        table
            .iter()
            .map(|(id, location)| (id.clone(), location.clone()))
            .collect()
    }

    /// One location.
    pub fn get(&self, id: &LocationId) -> Option<Location> {
        let table = self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.get(id).cloned()
    }

    /// Creates or replaces a location: whether it was created, and the ticket of its row.
    /// Saving the same settings again writes nothing (and answers the last ticket: 0).
    pub fn save(
        &self,
        writer: &Writer,
        id: LocationId,
        location: Location,
        by: &By,
        now_ms: u64,
    ) -> Result<(bool, Ticket), LocationError> {
        let _change = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = self.get(&id);
        if before.as_ref() == Some(&location) {
            return Ok((false, 0));
        }
        // `default` always exists: saving it is an update.
        let created = before.is_none();
        let ops = vec![Op::Put(keys::location(&id), codec::encode(&location))];
        let events = vec![DomainEvent::Location {
            location: id.clone(),
            event: LocationEvent::Saved {
                created,
                location: location.clone(),
            },
        }];
        let ticket = crate::actors::persist(writer, ops, events, now_ms, by).ok_or(LocationError::Overloaded)?;
        let mut table = self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.insert(id, location);
        *self.sites.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = sites_of(&table);
        Ok((created, ticket))
    }
}

/// The allocation view of a location table.
fn sites_of(table: &BTreeMap<LocationId, Location>) -> Arc<Sites> {
    Arc::new(Sites::new(
        table
            .iter()
            .map(|(id, location)| {
                (
                    id.clone(),
                    Site {
                        priority: location.priority,
                        active: location.active,
                    },
                )
            })
            .collect(),
    ))
}
