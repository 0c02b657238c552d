//! Value encoding: a format version byte, then bincode 1.3 (fixed-width integers).
//!
//! Bincode 1.3's wire format is frozen, so stored values stay readable. Decoding is bounded
//! by [`DECODE_BYTES_MAX`] so that a corrupt length prefix cannot allocate without limit.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use super::StoreError;

/// The version byte in front of every stored value written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// The version byte of values whose layout changed when stock went per location (SKU rows,
/// holds and settled reservations: see [`Versioned`]), and of orders and carts written before
/// backorders.
pub const FORMAT_VERSION_LOCATIONS: u8 = 2;

/// The version byte this build writes [`Versioned`] values with (SKU rows gained their
/// backorders).
pub const FORMAT_VERSION_BACKORDERS: u8 = 3;

/// A stored type whose layout changed: this build writes it with
/// [`FORMAT_VERSION_BACKORDERS`], and still reads the layouts earlier releases wrote:
/// `Previous` under [`FORMAT_VERSION_LOCATIONS`], `Legacy` under [`FORMAT_VERSION`]. (A type
/// that did not change at a version names itself.)
pub trait Versioned: Serialize + DeserializeOwned {
    /// The layout written under [`FORMAT_VERSION`].
    type Legacy: DeserializeOwned + Into<Self>;
    /// The layout written under [`FORMAT_VERSION_LOCATIONS`].
    type Previous: DeserializeOwned + Into<Self>;
}

/// Largest value the decoder accepts.
pub const DECODE_BYTES_MAX: u64 = 16 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(DECODE_BYTES_MAX)
        .reject_trailing_bytes()
}

/// Encodes a value with its version byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // expect: encoding plain structs into a Vec cannot fail; a failure is a programming error.
    options()
        .serialize_into(&mut out, value)
        .expect("stored types always encode");
    out
}

/// Encodes a [`Versioned`] value with the current version byte.
pub fn encode_versioned<T: Versioned>(value: &T) -> Vec<u8> {
    encode_current(value)
}

/// Encodes, with the current version byte, a value that serializes exactly as a
/// [`Versioned`] type (a borrowed view of one).
pub fn encode_current<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION_BACKORDERS];
    // expect: as in `encode`.
    options()
        .serialize_into(&mut out, value)
        .expect("stored types always encode");
    out
}

/// Decodes a [`Versioned`] value in either layout.
pub fn decode_versioned<T: Versioned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: keys::display(key),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_VERSION_BACKORDERS, body)) => {
            options().deserialize(body).map_err(|error| corrupt(error.to_string()))
        }
        Some((&FORMAT_VERSION_LOCATIONS, body)) => options()
            .deserialize::<T::Previous>(body)
            .map(Into::into)
            .map_err(|error| corrupt(error.to_string())),
        Some((&FORMAT_VERSION, body)) => options()
            .deserialize::<T::Legacy>(body)
            .map(Into::into)
            .map_err(|error| corrupt(error.to_string())),
        Some((version, _)) => Err(corrupt(format!("unknown format version {version}"))),
        None => Err(corrupt("empty value".to_owned())),
    }
}

/// Decodes a value stored under `key`, checking the version byte.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: keys::display(key),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => options().deserialize(body).map_err(|error| corrupt(error.to_string())),
        Some((version, _)) => Err(corrupt(format!("unknown format version {version}"))),
        None => Err(corrupt("empty value".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_refuse_unknown_versions() {
        let bytes = encode(&(7u64, "mug".to_owned()));
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String) = decode(b"k", &bytes).unwrap();
        assert_eq!(back, (7, "mug".to_owned()));
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(decode::<(u64, String)>(b"k", &future).is_err());
        assert!(decode::<(u64, String)>(b"k", &[]).is_err());
    }
}
