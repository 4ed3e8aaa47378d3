//! Money. The ledger counts integer micro-dollars; prices are exact decimals.
//!
//! Architecture invariant: no `f64` ever holds money. Prices are `Decimal` (exact for any price
//! written in a rates file), each charge is rounded once to whole micro-dollars, and totals are
//! integer sums of those charges, so a spend total always equals the sum of its events.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// An amount of US dollars in integer millionths.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// Rounds an exact dollar amount to micro-dollars, half away from zero (the usual billing
    /// rule: a charge of 0.5 µ$ or more counts).
    pub fn from_usd(usd: Decimal) -> Option<Micros> {
        let micros = (usd * Decimal::from(1_000_000))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(micros).ok().map(Micros)
    }

    /// The exact dollar value.
    pub fn to_usd(self) -> Decimal {
        Decimal::new(self.0, 6)
    }

    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }
}

impl Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Micros) -> Micros {
        Micros(self.0 + rhs.0)
    }
}

impl AddAssign for Micros {
    fn add_assign(&mut self, rhs: Micros) {
        self.0 += rhs.0;
    }
}

impl Sum for Micros {
    fn sum<I: Iterator<Item = Micros>>(iter: I) -> Micros {
        iter.fold(Micros::ZERO, Add::add)
    }
}

impl fmt::Display for Micros {
    /// Dollars with six decimals: `$0.001250`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_usd())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn usd(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn rounds_half_away_from_zero_once() {
        assert_eq!(Micros::from_usd(usd("0.0000005")), Some(Micros(1)));
        assert_eq!(Micros::from_usd(usd("0.00000049")), Some(Micros(0)));
        assert_eq!(Micros::from_usd(usd("1.2345675")), Some(Micros(1_234_568)));
    }

    #[test]
    fn converts_back_exactly() {
        assert_eq!(Micros(1_250).to_usd(), usd("0.00125"));
        assert_eq!(Micros(1_250).to_string(), "$0.001250");
    }

    #[test]
    fn refuses_amounts_beyond_i64() {
        assert_eq!(Micros::from_usd(usd("99999999999999999")), None);
    }
}
