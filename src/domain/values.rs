//! Value newtypes parsed at the edge ("parse, don't validate"): once a value exists, it is
//! within its documented range, so the domain never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw value was refused: a stable snake_case `code` and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    /// Machine-readable reason, for example `invalid_quantity`.
    pub code: &'static str,
    /// What was wrong and what is accepted.
    pub message: String,
}

impl InvalidValue {
    /// A refusal with its code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The largest quantity one request may move.
pub const QUANTITY_MAX: u64 = 1_000_000;

/// An amount in minor units of a currency (cents), with checked arithmetic: a total that
/// does not fit in 64 bits is an error, never a wrong (saturated) figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Money(u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// `minor` units (cents).
    pub const fn from_minor(minor: u64) -> Self {
        Money(minor)
    }

    /// The amount in minor units.
    pub const fn minor(self) -> u64 {
        self.0
    }

    /// `qty` times this unit price; `None` when it does not fit.
    pub fn times(self, qty: u64) -> Option<Money> {
        self.0.checked_mul(qty).map(Money)
    }

    /// The sum of two amounts; `None` when it does not fit.
    pub fn plus(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// The sum of `amounts`; `None` when it does not fit.
    pub fn sum(amounts: impl IntoIterator<Item = Option<Money>>) -> Option<Money> {
        amounts
            .into_iter()
            .try_fold(Money::ZERO, |total, amount| total.plus(amount?))
    }
}

/// A quantity of units in one request: `1 ..= 1_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(u64);

impl Quantity {
    /// Parses a quantity, refusing zero, negatives and anything above `max`
    /// (which itself never exceeds [`QUANTITY_MAX`]).
    pub fn parse(raw: i64, max: u64) -> Result<Self, InvalidValue> {
        let max = max.min(QUANTITY_MAX);
        match u64::try_from(raw) {
            Ok(value) if (1..=max).contains(&value) => Ok(Self(value)),
            _ => Err(InvalidValue::new(
                "invalid_quantity",
                format!("qty must be an integer from 1 to {max}"),
            )),
        }
    }

    /// The number of units.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A signed stock correction: non-zero, at most [`QUANTITY_MAX`] either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockDelta(i64);

impl StockDelta {
    /// Parses a delta, refusing zero and anything beyond one million units either way.
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if raw != 0 && raw.unsigned_abs() <= QUANTITY_MAX {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(
                "invalid_delta",
                format!("delta must be a non-zero integer from -{QUANTITY_MAX} to {QUANTITY_MAX}"),
            ))
        }
    }

    /// The signed number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The largest price accepted, in minor units (ten billion major units).
pub const PRICE_MINOR_MAX: u64 = 1_000_000_000_000;

/// A unit price in minor units of its currency, `0 ..= PRICE_MINOR_MAX`.
pub fn parse_price_minor(raw: i64) -> Result<u64, InvalidValue> {
    match u64::try_from(raw) {
        Ok(value) if value <= PRICE_MINOR_MAX => Ok(value),
        _ => Err(InvalidValue::new(
            "invalid_price",
            format!("price_minor must be an integer from 0 to {PRICE_MINOR_MAX}"),
        )),
    }
}

/// An ISO-4217 currency code: three upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter upper-case code such as `EUR`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(InvalidValue::new(
                "invalid_currency",
                "currency must be an ISO-4217 code of three upper-case letters, such as EUR",
            )),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // unwrap_or: the bytes are checked ASCII letters at construction.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest free text (names, reasons) accepted, in characters.
pub const TEXT_LENGTH_MAX: usize = 200;

/// A short human text: 1 to 200 characters, no control characters, not only spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name(String);

impl Name {
    /// Parses a text field; `field` names it in the error (`name`, `reason`).
    pub fn parse(raw: &str, field: &'static str, code: &'static str) -> Result<Self, InvalidValue> {
        let length = raw.chars().count();
        let printable = !raw.chars().any(char::is_control);
        if (1..=TEXT_LENGTH_MAX).contains(&length) && printable && !raw.trim().is_empty() {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                code,
                format!("{field} must be 1 to {TEXT_LENGTH_MAX} printable characters"),
            ))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_overflows_as_an_error_never_as_a_saturated_figure() {
        let price = Money::from_minor(1299);
        assert_eq!(price.times(3), Some(Money::from_minor(3897)));
        assert_eq!(Money::from_minor(u64::MAX / 2).times(3), None);
        assert_eq!(Money::from_minor(u64::MAX).plus(Money::from_minor(1)), None);
        assert_eq!(
            Money::sum([Some(Money::from_minor(1)), Some(Money::from_minor(2))]),
            Some(Money::from_minor(3))
        );
        assert_eq!(
            Money::sum([Some(Money::from_minor(u64::MAX)), Some(Money::from_minor(1))]),
            None
        );
        assert_eq!(
            Money::sum([Some(Money::from_minor(1)), None]),
            None,
            "a line that overflowed"
        );
    }

    #[test]
    fn quantities_are_one_to_the_limit() {
        assert_eq!(Quantity::parse(1, QUANTITY_MAX).unwrap().get(), 1);
        assert_eq!(Quantity::parse(1_000_000, QUANTITY_MAX).unwrap().get(), 1_000_000);
        for bad in [0, -1, 1_000_001, i64::MIN] {
            assert!(Quantity::parse(bad, QUANTITY_MAX).is_err(), "{bad}");
        }
        assert!(
            Quantity::parse(11, 10).is_err(),
            "a configured limit lowers the maximum"
        );
    }

    #[test]
    fn deltas_are_non_zero_and_bounded() {
        assert_eq!(StockDelta::parse(-5).unwrap().get(), -5);
        for bad in [0, 1_000_001, -1_000_001, i64::MIN] {
            assert!(StockDelta::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_empty_blank_control_and_overlong_text() {
        assert!(Name::parse("Blue mug", "name", "invalid_name").is_ok());
        for bad in ["", "   ", "tab\there", &"n".repeat(201)] {
            assert!(Name::parse(bad, "name", "invalid_name").is_err(), "{bad:?}");
        }
    }
}
