//! Diagnostics: what is wrong in a workflow, agency or calendar file, and where.
//!
//! Designers edit these files by hand, so every problem points at `file:line:column` and shows the
//! offending line with a caret, like rustc does. Validation collects every problem of a file before
//! it gives up, so that one run lists everything to fix.

use std::fmt;
use std::ops::Range;

/// One problem found in a definition file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable, machine-readable kind (e.g. `unknown-agency`), for tools and tests; the message is
    /// for people and may be reworded.
    pub code: &'static str,
    /// The file (or origin label) the problem is in.
    pub file: String,
    /// 1-based line; 0 when the problem has no position (e.g. a file that could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 when there is no position.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it, when we can tell.
    pub hint: Option<String>,
    /// The text of the source line, shown under the location.
    pub source_line: Option<String>,
    /// How many characters the caret underline spans (at least 1 when there is a line).
    pub width: usize,
}

impl Diagnostic {
    /// A diagnostic that points at `span` (byte offsets) of `source`.
    pub fn at(
        code: &'static str,
        file: &str,
        source: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = clamp_to_char_boundary(source, span.start);
        let end = clamp_to_char_boundary(source, span.end.max(start));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line_text = source[line_start..line_end].trim_end_matches('\r');
        let line = source[..start].matches('\n').count() + 1;
        let column = source[line_start..start].chars().count() + 1;
        let underlined_end = end.min(line_start + line_text.len()).max(start);
        let width = source[start..underlined_end].chars().count().max(1);
        Diagnostic {
            code,
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            hint: None,
            source_line: Some(line_text.to_string()),
            width,
        }
    }

    /// A diagnostic about a whole file, with no position.
    pub fn whole_file(code: &'static str, file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            file: file.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
            source_line: None,
            width: 0,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint when there is one.
    pub fn with_optional_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    /// A calendar file problem, as a diagnostic. `source` is the calendar file's text when it
    /// could be read, used to show the offending line.
    pub fn from_calendar(error: &lienthong_calendar::Error, source: Option<&str>) -> Diagnostic {
        let line = error.line().unwrap_or(0);
        let column = error.column().unwrap_or(if line > 0 { 1 } else { 0 });
        let source_line = source
            .filter(|_| line > 0)
            .and_then(|s| s.lines().nth(line - 1))
            .map(|l| l.trim_end_matches('\r').to_string());
        Diagnostic {
            code: "calendar",
            file: error.origin().to_string(),
            line,
            column,
            message: error.message(),
            hint: error.hint(),
            width: usize::from(source_line.is_some()),
            source_line,
        }
    }
}

fn clamp_to_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let number = if self.line > 0 {
            self.line.to_string()
        } else {
            String::new()
        };
        let pad = " ".repeat(number.len());
        if self.line > 0 {
            writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
        } else {
            writeln!(f, "{pad}--> {}", self.file)?;
        }
        if let Some(text) = &self.source_line {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{number} | {text}")?;
            // Tabs keep their width so that the caret lines up under them.
            let lead: String = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(self.width.max(1)))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Renders many diagnostics, separated by blank lines, followed by a count.
pub fn render_all(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    match diagnostics.len() {
        0 => {}
        1 => out.push_str("error: 1 problem found\n"),
        n => out.push_str(&format!("error: {n} problems found\n")),
    }
    out
}

/// The candidate closest to `word` by edit distance, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `hint` text listing what is known and, when one is close, the likely intended one.
pub fn known_list_hint<'a>(
    what: &str,
    word: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let list: Vec<&str> = known.clone().into_iter().collect();
    let mut hint = if list.is_empty() {
        format!("no {what} are declared")
    } else {
        format!("known {what}: {}", list.join(", "))
    };
    if let Some(best) = did_you_mean(word, known) {
        hint.push_str(&format!("; did you mean `{best}`?"));
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_the_span_with_a_caret() {
        // Given a file whose second line holds a bad value
        let src = "[step]\nagency = \"cong-ann\"\n";
        let start = src.find("\"cong").unwrap_or(0);
        // When a diagnostic is made at the quoted value
        let d = Diagnostic::at(
            "unknown-agency",
            "f.toml",
            src,
            start..start + 10,
            "unknown agency",
        )
        .with_hint("did you mean `cong-an`?");
        // Then the position is 1-based and the caret covers the value
        assert_eq!((d.line, d.column, d.width), (2, 10, 10));
        let shown = d.to_string();
        assert!(shown.contains(" --> f.toml:2:10"), "{shown}");
        assert!(shown.contains("2 | agency = \"cong-ann\""), "{shown}");
        assert!(shown.contains("  |          ^^^^^^^^^^"), "{shown}");
        assert!(
            shown.contains("  = hint: did you mean `cong-an`?"),
            "{shown}"
        );
    }

    #[test]
    fn suggests_only_close_words() {
        let known = ["bhxh", "cong-an", "thue"];
        assert_eq!(did_you_mean("cong-ann", known), Some("cong-an"));
        assert_eq!(did_you_mean("police", known), None);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let src = "name = \"Khai sinh\" # đ\nx = ở\n";
        let start = src.find('ở').unwrap_or(0);
        let d = Diagnostic::at("t", "f", src, start..start + 'ở'.len_utf8(), "m");
        assert_eq!((d.line, d.column, d.width), (2, 5, 1));
    }

    #[test]
    fn calendar_errors_become_diagnostics_with_their_line() {
        // Given a calendar error at line 2, column 12 of a file whose text we have
        let e = lienthong_calendar::Error::Invalid {
            origin: "calendars/vn-2026.toml".into(),
            line: Some(2),
            column: Some(12),
            message: "`2026-02-30` is not a date".into(),
            hint: Some("write YYYY-MM-DD".into()),
        };
        let text = "[calendar]\nholidays = [\"2026-02-30\"]\n";
        // When converted
        let d = Diagnostic::from_calendar(&e, Some(text));
        // Then it keeps the position, message and hint, and shows the line
        assert_eq!((d.line, d.column, d.code), (2, 12, "calendar"));
        assert_eq!(
            d.source_line.as_deref(),
            Some("holidays = [\"2026-02-30\"]")
        );
        assert_eq!(d.hint.as_deref(), Some("write YYYY-MM-DD"));
    }
}
