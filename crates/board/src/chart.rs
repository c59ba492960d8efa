//! Server-rendered SVG charts: one horizontal bar per agency or procedure, its on-time rate.
//!
//! No script and no library: the SVG is part of the HTML the server sends, so the page works the
//! moment it arrives, scales with its `viewBox` from a laptop to a wall screen, and is tested
//! here as text. Rates are per-mille integers (the projections' `on_time_permille`), never
//! floats; bar widths are computed from them in whole tenths of a unit.

use lienthong_projections::views::percent;

use crate::html::esc;
use crate::i18n::Lang;

/// The on-time target drawn on every chart, per-mille (Decision 766's example target, 98%).
pub const TARGET_PERMILLE: i64 = 980;

/// Below this the bar is drawn as bad (red) rather than a warning (amber), per-mille.
pub const WARN_PERMILLE: i64 = 900;

/// Width of the chart's coordinate system (the SVG scales to its box).
const WIDTH: i64 = 600;
/// Width of the label column.
const LABEL_W: i64 = 250;
/// Characters of a label shown; a longer one is cut with `…` (the whole name is its tooltip).
pub const LABEL_CHARS_MAX: usize = 30;
/// Width of the value column on the right.
const VALUE_W: i64 = 120;
/// Height of one row.
const ROW_H: i64 = 30;
/// Space above the first row (the target's label).
const TOP: i64 = 18;

/// One bar: what it is, and its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// The agency's name or the procedure's code (cut to [`LABEL_CHARS_MAX`]).
    pub label: String,
    /// The whole name, shown as the bar's tooltip.
    pub title: String,
    /// Finished early or on time.
    pub on_time: i64,
    /// Finished in the period.
    pub finished: i64,
}

impl Bar {
    /// `on_time / finished` in per-mille, rounded half up (none when nothing finished).
    pub fn permille(&self) -> Option<i64> {
        lienthong_projections::views::permille(self.on_time, self.finished)
    }
}

/// The CSS class of a rate: `good` at or above the target, `warn` above [`WARN_PERMILLE`],
/// `bad` below, `none` when nothing finished.
pub fn class(permille: Option<i64>) -> &'static str {
    match permille {
        None => "none",
        Some(p) if p >= TARGET_PERMILLE => "good",
        Some(p) if p >= WARN_PERMILLE => "warn",
        Some(_) => "bad",
    }
}

/// `text` cut to `max` characters, the last one `…`, when longer.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A bar chart of on-time rates, titled `title` (for screen readers), with the target line.
pub fn on_time_chart(title: &str, bars: &[Bar], lang: Lang) -> String {
    if bars.is_empty() {
        return format!(
            "<p class=\"empty\">{}</p>",
            lang.pick(
                "Chưa có hồ sơ nào được giải quyết trong tháng.",
                "Nothing was finished this month."
            )
        );
    }
    let rows = i64::try_from(bars.len()).unwrap_or(i64::MAX / ROW_H - 1);
    let height = TOP + rows * ROW_H + 4;
    let plot_w = WIDTH - LABEL_W - VALUE_W;
    let x_of = |permille: i64| LABEL_W + plot_w * permille.clamp(0, 1000) / 1000;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(title)
    );
    svg.push_str(&format!("<title>{}</title>", esc(title)));
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + i64::try_from(i).unwrap_or(0) * ROW_H;
        let p = bar.permille();
        svg.push_str(&format!(
            "<g><title>{}</title><text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            esc(&bar.title),
            LABEL_W - 8,
            y + ROW_H / 2 + 5,
            esc(&clip(&bar.label, LABEL_CHARS_MAX))
        ));
        svg.push_str(&format!(
            "<rect class=\"track\" x=\"{LABEL_W}\" y=\"{}\" width=\"{plot_w}\" height=\"{}\"/>",
            y + 4,
            ROW_H - 8
        ));
        if let Some(p) = p {
            svg.push_str(&format!(
                "<rect class=\"bar {}\" x=\"{LABEL_W}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                class(Some(p)),
                y + 4,
                x_of(p) - LABEL_W,
                ROW_H - 8
            ));
        }
        svg.push_str(&format!(
            "<text class=\"value {}\" x=\"{}\" y=\"{}\">{} ({}/{})</text>",
            class(p),
            WIDTH - VALUE_W + 8,
            y + ROW_H / 2 + 5,
            percent(p),
            bar.on_time,
            bar.finished
        ));
        svg.push_str("</g>");
    }
    let tx = x_of(TARGET_PERMILLE);
    svg.push_str(&format!(
        "<line class=\"target\" x1=\"{tx}\" y1=\"{}\" x2=\"{tx}\" y2=\"{}\"/>",
        TOP - 2,
        height - 2
    ));
    svg.push_str(&format!(
        "<text class=\"target-label\" x=\"{tx}\" y=\"12\" text-anchor=\"end\">{} {}</text>",
        lang.pick("mục tiêu", "target"),
        percent(Some(TARGET_PERMILLE))
    ));
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, on_time: i64, finished: i64) -> Bar {
        Bar {
            label: label.into(),
            title: format!("{label} (whole name)"),
            on_time,
            finished,
        }
    }

    #[test]
    fn bars_are_as_long_as_their_rate_and_coloured_by_the_target() {
        let svg = on_time_chart(
            "Tỉ lệ đúng hạn",
            &[
                bar("Tư pháp", 39, 40),
                bar("Công an <xã>", 1, 2),
                bar("BHXH", 0, 0),
            ],
            Lang::Vi,
        );
        // 97.5%: below the 98% target, above the warning line.
        assert!(svg.contains("class=\"bar warn\""), "{svg}");
        assert!(svg.contains("97.5% (39/40)"), "{svg}");
        // 50%: bad, and its width is half the plot (600 - 250 - 120 = 230 wide).
        assert!(
            svg.contains("class=\"bar bad\" x=\"250\" y=\"52\" width=\"115\""),
            "{svg}"
        );
        // Nothing finished: no bar, a dash.
        assert_eq!(svg.matches("class=\"bar ").count(), 2, "{svg}");
        assert!(svg.contains("- (0/0)"), "{svg}");
        // Labels are escaped; the target line is at 98% of the plot.
        assert!(svg.contains("Công an &lt;xã&gt;"), "{svg}");
        assert!(svg.contains("x1=\"475\""), "{svg}");
        assert!(svg.contains("<title>Tư pháp (whole name)</title>"), "{svg}");
        assert!(svg.contains("mục tiêu 98.0%"), "{svg}");
    }

    #[test]
    fn long_labels_are_cut_by_characters() {
        assert_eq!(clip("Tư pháp", 30), "Tư pháp");
        let long = "Phòng Đăng ký kinh doanh (Sở Tài chính)";
        let cut = clip(long, 10);
        assert_eq!(cut, "Phòng Đăn…");
        assert_eq!(cut.chars().count(), 10);
    }

    #[test]
    fn an_empty_month_says_so() {
        assert!(on_time_chart("x", &[], Lang::En).contains("Nothing was finished"));
        assert_eq!(class(Some(1000)), "good");
        assert_eq!(class(Some(980)), "good");
        assert_eq!(class(Some(979)), "warn");
        assert_eq!(class(Some(899)), "bad");
        assert_eq!(class(None), "none");
    }
}
