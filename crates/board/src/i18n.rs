//! The board's two languages: Vietnamese first (the default), English on `?lang=en`.
//!
//! Labels are written side by side where they are used (`lang.pick("Quá hạn", "Overdue")`), so
//! that a reader of the renderer sees both and no key can go missing. Instants are shown in the
//! zone they carry (the dossier's calendar zone, set by the projections), in the local habit:
//! `07/12/2026 14:30` in Vietnamese, `2026-12-07 14:30` in English.

use chrono::{DateTime, FixedOffset};

/// A language of the board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    /// Vietnamese, the default.
    #[default]
    Vi,
    /// English.
    En,
}

impl Lang {
    /// `vi` or `en`; anything else is an error naming the choices.
    pub fn parse(text: &str) -> Result<Lang, String> {
        match text {
            "" | "vi" => Ok(Lang::Vi),
            "en" => Ok(Lang::En),
            other => Err(format!("unknown language `{other}`: use vi or en")),
        }
    }

    /// The code for `lang=` and `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The other language (the toggle's target).
    pub fn other(self) -> Lang {
        match self {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        }
    }

    /// The Vietnamese or the English text.
    pub fn pick<'a>(self, vi: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }

    /// An instant as a person reads it, in the zone it carries.
    pub fn instant(self, t: &DateTime<FixedOffset>) -> String {
        match self {
            Lang::Vi => t.format("%d/%m/%Y %H:%M").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// A slip line's verdict (`early`, `on-time`, `late`, `open`, `open-late`, `cancelled`).
    pub fn verdict(self, v: &str) -> &'static str {
        match (v, self) {
            ("early", Lang::Vi) => "trước hạn",
            ("early", Lang::En) => "early",
            ("on-time", Lang::Vi) => "đúng hạn",
            ("on-time", Lang::En) => "on time",
            ("late", Lang::Vi) => "quá hạn",
            ("late", Lang::En) => "late",
            ("open", Lang::Vi) => "đang xử lý",
            ("open", Lang::En) => "in progress",
            ("open-late", Lang::Vi) => "đang xử lý, quá hạn",
            ("open-late", Lang::En) => "in progress, late",
            ("cancelled", Lang::Vi) => "hủy",
            ("cancelled", Lang::En) => "cancelled",
            (_, _) => "-",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_is_the_default_and_unknown_languages_are_refused() {
        assert_eq!(Lang::parse(""), Ok(Lang::Vi));
        assert_eq!(Lang::parse("en"), Ok(Lang::En));
        assert!(Lang::parse("fr").is_err_and(|e| e.contains("vi or en")));
        assert_eq!(Lang::Vi.other(), Lang::En);
    }

    #[test]
    fn instants_keep_their_zone_and_local_habit() {
        let t = DateTime::parse_from_rfc3339("2026-12-07T14:30:00+07:00").expect("instant");
        assert_eq!(Lang::Vi.instant(&t), "07/12/2026 14:30");
        assert_eq!(Lang::En.instant(&t), "2026-12-07 14:30");
        assert_eq!(Lang::Vi.verdict("open-late"), "đang xử lý, quá hạn");
        assert_eq!(Lang::En.verdict("on-time"), "on time");
    }
}
