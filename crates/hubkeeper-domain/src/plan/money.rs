//! Money as integer minor units plus an ISO 4217 currency. Floats never appear: a price of
//! 0.10 USD is `10` cents, so sums, comparisons and round trips through JSON are exact.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Currencies a plan may be priced in, with their minor-unit exponent (ISO 4217).
///
/// A closed list rather than "any three letters": a typo such as `NKO` must be refused when the
/// plan is created, not discovered on an invoice. Stored events are read with
/// [`Currency::from_stored`], which does not consult this list, so shrinking it never makes
/// history unreadable.
pub const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JPY", 0),
    ("KRW", 0),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// Largest amount accepted, in minor units (10 billion in major units of a 2-decimal currency):
/// far above any plan price, and small enough that sums over many subscribers cannot overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// A currency from user input: case-insensitive, surrounding whitespace ignored, and it
    /// must be in [`CURRENCIES`]. `None` otherwise.
    pub fn parse(input: &str) -> Option<Currency> {
        let code = input.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .and_then(|(known, _)| Self::from_stored(known))
    }

    /// A currency read back from storage: three ASCII capitals, list not consulted.
    pub fn from_stored(code: &str) -> Option<Currency> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // Constructed only from ASCII capitals.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY); 2 for a code no longer listed.
    pub fn exponent(&self) -> u8 {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == self.code())
            .map_or(2, |(_, exponent)| *exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::from_stored(&value).ok_or_else(|| format!("invalid currency code {value:?}"))
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_owned()
    }
}

/// An amount of money. Never negative: plans have prices, not credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor unit (cents, øre, ...).
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money {
            amount_minor: 0,
            currency,
        }
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }
}

impl fmt::Display for Money {
    /// `0.10 USD`, `1500 JPY`: the exact decimal, computed with integers only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent());
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        if exponent == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(exponent);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_checked_against_the_list() {
        assert_eq!(
            Currency::parse(" nok ").map(|c| c.to_string()),
            Some("NOK".into())
        );
        assert_eq!(Currency::parse("USD").map(|c| c.exponent()), Some(2));
        assert_eq!(Currency::parse("jpy").map(|c| c.exponent()), Some(0));
        for bad in ["NKO", "US", "USDD", "", "U$D", "usd1"] {
            assert_eq!(Currency::parse(bad), None, "{bad:?} must be refused");
        }
        // Storage accepts any well-formed code so history stays readable.
        assert!(Currency::from_stored("XTS").is_some());
        assert!(Currency::from_stored("xts").is_none());
    }

    #[test]
    fn money_displays_exact_decimals_and_round_trips_as_integers() {
        let usd = Currency::parse("USD").expect("listed");
        let jpy = Currency::parse("JPY").expect("listed");
        let ten_cents = Money {
            amount_minor: 10,
            currency: usd,
        };
        assert_eq!(ten_cents.to_string(), "0.10 USD");
        assert_eq!(
            Money {
                amount_minor: 123_456,
                currency: usd
            }
            .to_string(),
            "1234.56 USD"
        );
        assert_eq!(
            Money {
                amount_minor: 1500,
                currency: jpy
            }
            .to_string(),
            "1500 JPY"
        );
        let json = serde_json::to_string(&ten_cents).expect("serializes");
        assert_eq!(json, r#"{"amount_minor":10,"currency":"USD"}"#);
        assert_eq!(
            serde_json::from_str::<Money>(&json).expect("parses"),
            ten_cents
        );
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1.5,"currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"usd"}"#).is_err());
    }
}
