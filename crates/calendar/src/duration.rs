//! Durations with units, as written in workflow files: `3wd`, `4wh`, `7d`, `12h`.
//!
//! The unit is part of the law's text, so it is part of the value: `3wd` is not `24wh`, even when a
//! working day has eight office hours, because a calendar with other office hours gives another
//! answer. Only a [`crate::Calendar`] turns a duration into an instant.

use std::fmt;
use std::str::FromStr;

/// A time budget with its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Duration {
    /// `Nwd`: N working days, each the length of a working day's office hours.
    WorkingDays(u32),
    /// `Nwh`: N working hours, accrued only inside office hours on working days.
    WorkingHours(u32),
    /// `Nd`: N calendar days.
    Days(u32),
    /// `Nh`: N hours of wall-clock time.
    Hours(u32),
}

/// Largest number accepted in a duration: ten years of days; anything larger is a typo.
pub const DURATION_NUMBER_MAX: u32 = 3660;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not `<number><unit>`.
    #[error("`{0}` is not a duration: write a number and a unit, e.g. `3wd`, `4wh`, `7d` or `12h`")]
    Syntax(String),
    /// The unit is not one of wd, wh, d, h.
    #[error(
        "`{0}` has an unknown unit: use `wd` (working days), `wh` (working hours), `d` (calendar days) or `h` (hours)"
    )]
    Unit(String),
    /// Zero or larger than [`DURATION_NUMBER_MAX`].
    #[error("`{0}` is out of range: the number must be between 1 and {DURATION_NUMBER_MAX}")]
    Range(String),
}

impl FromStr for Duration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(Error::Syntax(s.to_string()));
        }
        let (num, unit) = t.split_at(digits);
        let n: u32 = num.parse().map_err(|_| Error::Range(s.to_string()))?;
        if n == 0 || n > DURATION_NUMBER_MAX {
            return Err(Error::Range(s.to_string()));
        }
        match unit {
            "wd" => Ok(Duration::WorkingDays(n)),
            "wh" => Ok(Duration::WorkingHours(n)),
            "d" => Ok(Duration::Days(n)),
            "h" => Ok(Duration::Hours(n)),
            "" => Err(Error::Syntax(s.to_string())),
            _ => Err(Error::Unit(s.to_string())),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duration::WorkingDays(n) => write!(f, "{n}wd"),
            Duration::WorkingHours(n) => write!(f, "{n}wh"),
            Duration::Days(n) => write!(f, "{n}d"),
            Duration::Hours(n) => write!(f, "{n}h"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_unit() {
        for s in ["3wd", "4wh", "7d", "12h"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_input_with_a_hint() {
        assert!(matches!("wd".parse::<Duration>(), Err(Error::Syntax(_))));
        assert!(matches!("3".parse::<Duration>(), Err(Error::Syntax(_))));
        assert!(matches!("3w".parse::<Duration>(), Err(Error::Unit(_))));
        assert!(matches!("0wd".parse::<Duration>(), Err(Error::Range(_))));
        assert!(matches!(
            "99999999999wd".parse::<Duration>(),
            Err(Error::Range(_))
        ));
    }
}
