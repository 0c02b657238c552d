//! Locations: the warehouses and stores that hold stock. The merchant names them (the rule
//! of SKU ids); `default` always exists, and is where the stock of a data directory from
//! before locations lives.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::{is_merchant_id, SKU_ID_LENGTH_MAX};
use super::values::{InvalidValue, Name};

/// The location every data directory has: stock written without a location goes here.
pub const DEFAULT_LOCATION: &str = "default";

/// Highest `priority` accepted.
pub const PRIORITY_MAX: i64 = 1_000_000;

/// A location id: 1 to 64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationId(Arc<str>);

impl LocationId {
    /// Parses a location id.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if is_merchant_id(raw) {
            Ok(Self(Arc::from(raw)))
        } else {
            Err(InvalidValue::new(
                "invalid_location",
                format!("location ids are 1 to {SKU_ID_LENGTH_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
            ))
        }
    }

    /// The `default` location.
    pub fn default_location() -> Self {
        Self(Arc::from(DEFAULT_LOCATION))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for LocationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LocationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        LocationId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

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
