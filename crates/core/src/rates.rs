//! The rates table: list prices per model and per vision backend, versioned and dated.
//!
//! A usage event records the version of the table that priced it, so a price change never
//! rewrites history and a bill can be recomputed from its events.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Micros;

/// The rates file shipped with the project (`config/rates.toml`).
pub const DEFAULT_RATES_TOML: &str = include_str!("../../../config/rates.toml");

/// A rates table as written in TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesTable {
    /// Recorded on every usage event priced with this table.
    pub version: String,
    /// When these prices start to apply.
    pub effective_from: DateTime<Utc>,
    /// Only `USD` is supported.
    pub currency: String,
    /// Prices by price id; backends of the catalog name the id they are billed under.
    pub prices: BTreeMap<String, Price>,
}

/// What one backend charges. All amounts in USD; absent components cost nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million uncached input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_mtok: Option<Decimal>,
    /// Per million input tokens served from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<Decimal>,
    /// Per million output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_mtok: Option<Decimal>,
    /// Per image processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_image: Option<Decimal>,
    /// Per hour of compute (instance price); billed per microsecond used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_compute_hour: Option<Decimal>,
    /// Per request, whatever it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Decimal>,
}

/// The measured units of one call, as a worker reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Input tokens not served from a cache.
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub images: u64,
    /// Compute time attributed to this call in microseconds (a batch's time divided over its
    /// images).
    #[serde(default)]
    pub compute_us: u64,
    /// Requests made (retries that the provider billed count).
    #[serde(default)]
    pub requests: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RatesError {
    #[error("cannot read rates file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rates file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("rates: {0}")]
    Invalid(String),
    #[error("rates: price id `{0}` is not in the table")]
    UnknownPrice(String),
    #[error("cost overflows the ledger's range")]
    Overflow,
}

impl RatesTable {
    pub fn from_toml(text: &str, origin: &str) -> Result<RatesTable, RatesError> {
        let table: RatesTable = toml::from_str(text).map_err(|error| RatesError::Parse {
            path: origin.to_owned(),
            message: error.to_string(),
        })?;
        table.validate()?;
        Ok(table)
    }

    pub fn load(path: &Path) -> Result<RatesTable, RatesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RatesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        RatesTable::from_toml(&text, &path.display().to_string())
    }

    /// The table shipped with the project.
    pub fn default_table() -> Result<RatesTable, RatesError> {
        RatesTable::from_toml(DEFAULT_RATES_TOML, "config/rates.toml (built in)")
    }

    fn validate(&self) -> Result<(), RatesError> {
        if self.currency != "USD" {
            return Err(RatesError::Invalid(format!(
                "currency `{}` is not supported; only USD",
                self.currency
            )));
        }
        if self.version.trim().is_empty() {
            return Err(RatesError::Invalid("version must not be empty".into()));
        }
        for (id, price) in &self.prices {
            let components = [
                ("input_per_mtok", price.input_per_mtok),
                ("cached_input_per_mtok", price.cached_input_per_mtok),
                ("output_per_mtok", price.output_per_mtok),
                ("per_image", price.per_image),
                ("per_compute_hour", price.per_compute_hour),
                ("per_request", price.per_request),
            ];
            for (name, value) in components {
                if value.is_some_and(|v| v.is_sign_negative()) {
                    return Err(RatesError::Invalid(format!(
                        "prices.{id}.{name} must not be negative"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn price(&self, price_id: &str) -> Result<&Price, RatesError> {
        self.prices
            .get(price_id)
            .ok_or_else(|| RatesError::UnknownPrice(price_id.to_owned()))
    }

    /// Prices `usage` under `price_id`.
    pub fn cost(&self, price_id: &str, usage: &Usage) -> Result<Cost, RatesError> {
        let price = self.price(price_id)?;
        let exact = price.exact_cost(usage).ok_or(RatesError::Overflow)?;
        let micros = Micros::from_usd(exact).ok_or(RatesError::Overflow)?;
        Ok(Cost {
            micros,
            exact_usd: exact,
            rates_version: self.version.clone(),
        })
    }
}

impl Price {
    /// The exact dollar amount, before rounding to the ledger's unit. `None` on overflow.
    pub fn exact_cost(&self, usage: &Usage) -> Option<Decimal> {
        let million = Decimal::from(1_000_000u32);
        let compute_us_per_hour = Decimal::from(3_600_000_000u64);
        let zero = Decimal::ZERO;
        let mut total = zero;
        let mut add = |rate: Option<Decimal>, units: u64, per: Decimal| -> Option<()> {
            if units == 0 {
                return Some(());
            }
            let rate = rate.unwrap_or(zero);
            let term = rate.checked_mul(Decimal::from(units))?.checked_div(per)?;
            total = total.checked_add(term)?;
            Some(())
        };
        add(self.input_per_mtok, usage.input_tokens, million)?;
        // Providers without a cache price bill cached tokens as ordinary input.
        add(
            self.cached_input_per_mtok.or(self.input_per_mtok),
            usage.cached_input_tokens,
            million,
        )?;
        add(self.output_per_mtok, usage.output_tokens, million)?;
        add(self.per_image, usage.images, Decimal::ONE)?;
        add(self.per_compute_hour, usage.compute_us, compute_us_per_hour)?;
        add(self.per_request, usage.requests, Decimal::ONE)?;
        Some(total)
    }
}

/// A priced call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cost {
    pub micros: Micros,
    pub exact_usd: Decimal,
    pub rates_version: String,
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn usd(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn default_table_loads_and_names_its_version() {
        let table = RatesTable::default_table().unwrap();
        assert!(!table.version.is_empty());
        assert!(table.prices.len() >= 10, "{}", table.prices.len());
        for (id, price) in &table.prices {
            assert_ne!(price, &Price::default(), "{id} has no price component");
        }
    }

    #[test]
    fn llm_cost_is_tokens_times_price_per_million() {
        let price = Price {
            input_per_mtok: Some(usd("2.50")),
            cached_input_per_mtok: Some(usd("1.25")),
            output_per_mtok: Some(usd("10.00")),
            ..Price::default()
        };
        let usage = Usage {
            input_tokens: 1_000,
            cached_input_tokens: 2_000,
            output_tokens: 500,
            ..Usage::default()
        };
        // 1000*2.5/1e6 + 2000*1.25/1e6 + 500*10/1e6 = 0.0025 + 0.0025 + 0.005
        assert_eq!(price.exact_cost(&usage), Some(usd("0.01")));
    }

    #[test]
    fn cached_tokens_fall_back_to_the_input_price() {
        let price = Price {
            input_per_mtok: Some(usd("3")),
            ..Price::default()
        };
        let usage = Usage {
            cached_input_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(price.exact_cost(&usage), Some(usd("3")));
    }

    #[test]
    fn vision_cost_is_compute_time_at_the_hourly_rate_plus_image_fees() {
        let price = Price {
            per_compute_hour: Some(usd("3.60")),
            per_image: Some(usd("0.0001")),
            per_request: Some(usd("0.000002")),
            ..Price::default()
        };
        let usage = Usage {
            images: 2,
            compute_us: 500_000,
            requests: 1,
            ..Usage::default()
        };
        // 0.5 s at $0.001/s = 0.0005, + 2 * 0.0001, + 0.000002
        assert_eq!(price.exact_cost(&usage), Some(usd("0.000702")));
    }

    #[test]
    fn cost_rounds_to_micros_and_records_the_version() {
        let table = RatesTable::from_toml(
            r#"
            version = "t1"
            effective_from = "2026-01-01T00:00:00Z"
            currency = "USD"
            [prices.nano]
            input_per_mtok = "0.10"
            "#,
            "test",
        )
        .unwrap();
        let usage = Usage {
            input_tokens: 7,
            ..Usage::default()
        };
        let cost = table.cost("nano", &usage).unwrap();
        assert_eq!(cost.exact_usd, usd("0.0000007"));
        assert_eq!(cost.micros, Micros(1));
        assert_eq!(cost.rates_version, "t1");
        assert!(matches!(
            table.cost("missing", &usage),
            Err(RatesError::UnknownPrice(id)) if id == "missing"
        ));
    }

    #[test]
    fn rejects_negative_prices_and_other_currencies() {
        let negative = r#"
            version = "x"
            effective_from = "2026-01-01T00:00:00Z"
            currency = "USD"
            [prices.a]
            per_image = "-1"
        "#;
        let error = RatesTable::from_toml(negative, "t")
            .unwrap_err()
            .to_string();
        assert!(error.contains("prices.a.per_image"), "{error}");
        let euro = negative.replace("USD", "EUR").replace("-1", "1");
        assert!(
            RatesTable::from_toml(&euro, "t")
                .unwrap_err()
                .to_string()
                .contains("EUR")
        );
    }
}
