//! Routing diagrams of a workflow, as Mermaid or Graphviz DOT text (for `lienthong graph`).
//!
//! Both show the same picture: the receiving desk, every step labelled with its agency's name and
//! time budget, `after` edges (a step with several successors is a parallel split, a step with
//! several predecessors a join), conditions on the edges into a conditional step (and the step drawn
//! with a dashed border, since it may be skipped), `on_reject` rework edges dashed and labelled,
//! rework-only steps dashed, and the return of the result by the desk.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::definition::{Agency, OnReject, Step, Workflow};

fn agency_name<'a>(step: &'a Step, agencies: &'a BTreeMap<String, Agency>) -> &'a str {
    agencies
        .get(&step.agency.0)
        .map_or(step.agency.0.as_str(), |a| a.name_vi.as_str())
}

fn desk_name<'a>(wf: &'a Workflow, agencies: &'a BTreeMap<String, Agency>) -> &'a str {
    agencies
        .get(&wf.receiving_agency.0)
        .map_or(wf.receiving_agency.0.as_str(), |a| a.name_vi.as_str())
}

/// Steps nobody waits for (the dossier is done when they are), excluding rework-only steps.
fn final_steps(wf: &Workflow) -> impl Iterator<Item = &Step> {
    wf.steps
        .iter()
        .filter(|s| !s.rework_only && wf.dependents(&s.id).next().is_none())
}

fn mermaid_id(id: &str) -> String {
    format!("s_{}", id.replace('-', "_"))
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Mermaid `flowchart` of the routing.
pub fn mermaid(wf: &Workflow, agencies: &BTreeMap<String, Agency>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flowchart TD");
    let _ = writeln!(
        out,
        "  %% {} v{}: {} (limit {})",
        wf.code,
        wf.version,
        mermaid_text(&wf.name),
        wf.limit
    );
    let _ = writeln!(
        out,
        "  receive([\"Tiếp nhận: {}\"])",
        mermaid_text(desk_name(wf, agencies))
    );
    for s in &wf.steps {
        let mut label = format!(
            "<b>{}</b><br/>{} · {}",
            mermaid_text(&s.name),
            mermaid_text(agency_name(s, agencies)),
            s.budget
        );
        if let Some(when) = &s.when {
            let _ = write!(label, "<br/>khi: {}", mermaid_text(when.source()));
        }
        let _ = writeln!(out, "  {}[\"{label}\"]", mermaid_id(&s.id.0));
    }
    let _ = writeln!(
        out,
        "  done([\"Trả kết quả: {}\"])",
        mermaid_text(desk_name(wf, agencies))
    );
    for s in &wf.steps {
        let into = match &s.when {
            Some(w) => format!(" -->|\"{}\"| ", mermaid_text(w.source())),
            None => " --> ".to_string(),
        };
        if s.after.is_empty() && !s.rework_only {
            let _ = writeln!(out, "  receive{into}{}", mermaid_id(&s.id.0));
        }
        for a in &s.after {
            let _ = writeln!(out, "  {}{into}{}", mermaid_id(&a.0), mermaid_id(&s.id.0));
        }
    }
    for s in final_steps(wf) {
        let _ = writeln!(out, "  {} --> done", mermaid_id(&s.id.0));
    }
    for s in &wf.steps {
        if let OnReject::Rework(target) = &s.on_reject {
            let _ = writeln!(
                out,
                "  {} -.->|\"trả lại / rework\"| {}",
                mermaid_id(&s.id.0),
                mermaid_id(&target.0)
            );
        }
    }
    let _ = writeln!(
        out,
        "  classDef conditional stroke-dasharray: 4 3;\n  classDef reworkonly stroke-dasharray: 2 2,fill:#f4f4f4;"
    );
    for s in &wf.steps {
        if s.rework_only {
            let _ = writeln!(out, "  class {} reworkonly;", mermaid_id(&s.id.0));
        } else if s.when.is_some() {
            let _ = writeln!(out, "  class {} conditional;", mermaid_id(&s.id.0));
        }
    }
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A Graphviz `digraph` of the routing.
pub fn dot(wf: &Workflow, agencies: &BTreeMap<String, Agency>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_text(&wf.code));
    let _ = writeln!(
        out,
        "  label=\"{} v{}: {} (limit {})\";",
        dot_text(&wf.code),
        wf.version,
        dot_text(&wf.name),
        wf.limit
    );
    let _ = writeln!(out, "  rankdir=TB;\n  node [shape=box, style=rounded];");
    let _ = writeln!(
        out,
        "  \"receive\" [shape=oval, label=\"Tiếp nhận: {}\"];",
        dot_text(desk_name(wf, agencies))
    );
    let _ = writeln!(
        out,
        "  \"done\" [shape=oval, label=\"Trả kết quả: {}\"];",
        dot_text(desk_name(wf, agencies))
    );
    for s in &wf.steps {
        let mut label = format!(
            "{}\\n{} · {}",
            dot_text(&s.name),
            dot_text(agency_name(s, agencies)),
            s.budget
        );
        if let Some(when) = &s.when {
            let _ = write!(label, "\\nkhi: {}", dot_text(when.source()));
        }
        let style = if s.rework_only || s.when.is_some() {
            "rounded,dashed"
        } else {
            "rounded"
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\", style=\"{style}\"];",
            dot_text(&s.id.0)
        );
    }
    for s in &wf.steps {
        let attrs = match &s.when {
            Some(w) => format!(" [label=\"{}\"]", dot_text(w.source())),
            None => String::new(),
        };
        if s.after.is_empty() && !s.rework_only {
            let _ = writeln!(out, "  \"receive\" -> \"{}\"{attrs};", dot_text(&s.id.0));
        }
        for a in &s.after {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{attrs};",
                dot_text(&a.0),
                dot_text(&s.id.0)
            );
        }
    }
    for s in final_steps(wf) {
        let _ = writeln!(out, "  \"{}\" -> \"done\";", dot_text(&s.id.0));
    }
    for s in &wf.steps {
        if let OnReject::Rework(target) = &s.on_reject {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [style=dashed, constraint=false, label=\"trả lại / rework\"];",
                dot_text(&s.id.0),
                dot_text(&target.0)
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::agencies;

    const WF: &str = r#"
[procedure]
code = "t"
name = "T"
version = 1
limit = "3wd"
calendar = "vn"
receiving_agency = "ubnd-xa"
[attributes]
"child.age_months" = { type = "integer", required = true }
[[step]]
id = "a"
agency = "tu-phap"
budget = "1wd"
[[step]]
id = "b"
agency = "cong-an"
budget = "1wd"
after = ["a"]
on_reject = "a"
[[step]]
id = "c"
agency = "bhxh"
budget = "1wd"
after = ["a"]
when = "child.age_months < 72"
"#;

    #[test]
    fn diagrams_show_parallel_branches_conditions_and_rework() {
        // Given a split after `a` into `b` and a conditional `c`, with `b` reworking to `a`
        let wf = Workflow::parse(WF, "t", &agencies(), &["vn"]).expect("valid");
        // When drawn
        let m = mermaid(&wf, &agencies());
        let d = dot(&wf, &agencies());
        // Then both diagrams show the split, the condition on the edge and the dashed rework edge
        assert!(m.contains("  s_a --> s_b\n"), "{m}");
        assert!(
            m.contains("  s_a -->|\"child.age_months &lt; 72\"| s_c\n"),
            "{m}"
        );
        assert!(m.contains("  s_b -.->|"), "{m}");
        assert!(
            m.contains("  s_b --> done\n") && m.contains("  s_c --> done\n"),
            "{m}"
        );
        assert!(
            d.contains("\"a\" -> \"c\" [label=\"child.age_months < 72\"];"),
            "{d}"
        );
        assert!(d.contains("\"b\" -> \"a\" [style=dashed"), "{d}");
        assert!(d.contains("tu-phap · 1wd"), "{d}");
    }
}
