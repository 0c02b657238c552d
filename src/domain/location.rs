//! Locations: the warehouses and stores that hold stock. The merchant names them (the rule
//! of SKU ids); `default` always exists, and is where the stock of a data directory from
//! before locations lives.

use serde::{Deserialize, Serialize};

pub use super::ids::LocationId;
use super::values::{InvalidValue, Name};

/// The location every data directory has: stock written without a location goes here.
pub const DEFAULT_LOCATION: &str = "default";

/// Highest `priority` accepted.
pub const PRIORITY_MAX: i64 = 1_000_000;

/// What a location is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// A warehouse (ships orders).
    Warehouse,
    /// A shop (sells over the counter, may ship or hand over).
    Store,
}

impl LocationKind {
    /// Parses `warehouse` or `store`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "warehouse" => Ok(LocationKind::Warehouse),
            "store" => Ok(LocationKind::Store),
            _ => Err(InvalidValue::new("invalid_kind", "kind must be warehouse or store")),
        }
    }

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Warehouse => "warehouse",
            LocationKind::Store => "store",
        }
    }
}

/// A location's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Display name.
    pub name: String,
    /// Warehouse or store.
    pub kind: LocationKind,
    /// Allocation order: a lower number is chosen first (`priority` strategy).
    pub priority: i64,
    /// An inactive location keeps its stock but takes no new holds.
    pub active: bool,
}

impl Location {
    /// The `default` location as it exists before anyone configures it.
    pub fn implicit_default() -> Self {
        Location {
            name: "Default".to_owned(),
            kind: LocationKind::Warehouse,
            priority: 0,
            active: true,
        }
    }

    /// Checks and builds a location from the fields of a request.
    pub fn parse(name: &str, kind: &str, priority: i64, active: bool) -> Result<Self, InvalidValue> {
        let name = Name::parse(name, "name", "invalid_name")?;
        let kind = LocationKind::parse(kind)?;
        if !(0..=PRIORITY_MAX).contains(&priority) {
            return Err(InvalidValue::new(
                "invalid_priority",
                format!("priority must be an integer from 0 to {PRIORITY_MAX}"),
            ));
        }
        Ok(Location {
            name: name.as_str().to_owned(),
            kind,
            priority,
            active,
        })
    }
}

/// What happened to a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocationEvent {
    /// Created or changed: its settings now.
    Saved {
        /// Whether it is new.
        created: bool,
        /// The settings.
        location: Location,
    },
}

impl LocationEvent {
    /// The CloudEvents type.
    pub fn type_name(&self) -> &'static str {
        match self {
            LocationEvent::Saved { created: true, .. } => "stockroom.location.created",
            LocationEvent::Saved { created: false, .. } => "stockroom.location.updated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_checked_field_by_field() {
        let ok = Location::parse("Main warehouse", "warehouse", 1, true).unwrap();
        assert_eq!((ok.kind, ok.priority, ok.active), (LocationKind::Warehouse, 1, true));
        assert_eq!(Location::parse("", "store", 1, true).unwrap_err().code, "invalid_name");
        assert_eq!(
            Location::parse("Shop", "depot", 1, true).unwrap_err().code,
            "invalid_kind"
        );
        assert_eq!(
            Location::parse("Shop", "store", -1, true).unwrap_err().code,
            "invalid_priority"
        );
        assert_eq!(
            Location::parse("Shop", "store", PRIORITY_MAX + 1, true)
                .unwrap_err()
                .code,
            "invalid_priority"
        );
        assert_eq!(LocationId::parse("bad id").unwrap_err().code, "invalid_location");
        assert_eq!(LocationId::parse("berlin-1").unwrap().as_str(), "berlin-1");
    }
}
