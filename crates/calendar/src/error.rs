//! The one error type of this crate: what went wrong, where (file, line, column), and what to do.
//!
//! Calendar files are written by people, so every error that comes from a file points at the
//! offending value (1-based line and column, counted in characters) and, where we can say it, gives
//! a hint. Errors from arithmetic say which date the calendar does not know and how to fix that.
//! The `Display` form is `FILE:LINE:COL: MESSAGE` (or `FILE: MESSAGE` without a position), followed
//! by `\n  hint: HINT` when there is a hint; the workflow crate reads the accessors instead to build
//! its own diagnostics.

use std::fmt;

use chrono::NaiveDate;

/// Why a calendar could not be loaded or could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A calendar file is malformed, or the files of one family disagree.
    Invalid {
        /// The file, as given to [`crate::Calendar::parse`] or found by `load_dir`.
        origin: String,
        /// 1-based line of the offending value, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the offending value, when known.
        column: Option<usize>,
        /// What is wrong, in one sentence.
        message: String,
        /// What to write instead, when we can say it.
        hint: Option<String>,
    },
    /// A calendar file or directory could not be read.
    Io {
        /// The path that failed.
        origin: String,
        /// The operating system's reason.
        message: String,
    },
    /// A computation needs a day the calendar family does not cover, so its holidays are unknown.
    BeyondCoverage {
        /// The family, e.g. `vn`.
        family: String,
        /// The first day that was needed and is not covered.
        date: NaiveDate,
        /// First covered day of the family.
        covered_first: NaiveDate,
        /// Last covered day of the family.
        covered_last: NaiveDate,
        /// The member file nearest to `date` (where a reader would look).
        origin: String,
    },
    /// An instant or a duration left the range that dates can represent.
    OutOfRange {
        /// The family, e.g. `vn`.
        family: String,
        /// What overflowed.
        message: String,
    },
}

impl Error {
    /// An error at a byte range of a file's text, converted to line and column.
    pub(crate) fn at(
        origin: &str,
        source: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Error {
        let (line, column) = match span.and_then(|s| line_column(source, s.start)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Error::Invalid {
            origin: origin.to_string(),
            line,
            column,
            message: message.into(),
            hint,
        }
    }

    /// The file (or, for [`Error::BeyondCoverage`], the nearest member file) the error is about.
    pub fn origin(&self) -> &str {
        match self {
            Error::Invalid { origin, .. }
            | Error::Io { origin, .. }
            | Error::BeyondCoverage { origin, .. } => origin,
            Error::OutOfRange { family, .. } => family,
        }
    }

    /// 1-based line of the offending value, when the error comes from a place in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Invalid { line, .. } => *line,
            _ => None,
        }
    }

    /// 1-based column (in characters) of the offending value, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Invalid { column, .. } => *column,
            _ => None,
        }
    }

    /// What is wrong, without position or hint.
    pub fn message(&self) -> String {
        match self {
            Error::Invalid { message, .. }
            | Error::Io { message, .. }
            | Error::OutOfRange { message, .. } => message.clone(),
            Error::BeyondCoverage {
                family,
                date,
                covered_first,
                covered_last,
                ..
            } => format!(
                "calendar \"{family}\" does not cover {date} (it covers {covered_first}..{covered_last}), so its holidays are unknown"
            ),
        }
    }

    /// What to do about it, when we can say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Invalid { hint, .. } => hint.clone(),
            Error::Io { .. } => None,
            Error::BeyondCoverage { family, date, .. } => {
                use chrono::Datelike;
                Some(format!(
                    "add the calendar file for {year} (e.g. `{family}-{year}.toml`, with `name = \"{family}-{year}\"`) to the calendars directory",
                    year = date.year()
                ))
            }
            Error::OutOfRange { .. } => Some("check the instant and the duration".to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin())?;
        if let Some(line) = self.line() {
            write!(f, ":{line}")?;
            if let Some(column) = self.column() {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message())?;
        if let Some(hint) = self.hint() {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// 1-based (line, column) of a byte offset; the column counts characters, not bytes.
pub(crate) fn line_column(source: &str, offset: usize) -> Option<(usize, usize)> {
    let before = source.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        let s = "a = 1\n# Tết\nb = \"x\"";
        assert_eq!(line_column(s, 0), Some((1, 1)));
        assert_eq!(line_column(s, 6), Some((2, 1)));
        let b = s.find("b =").unwrap();
        assert_eq!(line_column(s, b + 4), Some((3, 5)));
        let t = s.find("Tết").unwrap();
        assert_eq!(line_column(s, t + "Tết".len()), Some((2, 6)));
        assert_eq!(line_column(s, 999), None);
    }
}
