//! Property: any acyclic `after` graph written as a workflow file, in any file order, validates,
//! and its steps come out in a topological order.
//!
//! How: proptest draws a number of steps, for each step a bit mask choosing its predecessors among
//! the steps with a lower index (which makes the graph acyclic by construction), a condition or
//! none, an `on_reject` (refuse, or rework to one of its predecessors), and a shuffled order in
//! which the steps are written to the file. The test renders the TOML, validates it, and checks
//! the order, the ids, the `after` lists and the hash.

use std::collections::{BTreeMap, BTreeSet};

use lienthong_workflow::{Agency, AgencyCode, Workflow};
use proptest::prelude::*;

fn agencies() -> BTreeMap<String, Agency> {
    ["ubnd-xa", "tu-phap", "cong-an", "bhxh"]
        .iter()
        .map(|c| {
            (
                c.to_string(),
                Agency {
                    code: AgencyCode(c.to_string()),
                    name_vi: c.to_string(),
                    name_en: c.to_string(),
                    code_prefix: "X".into(),
                },
            )
        })
        .collect()
}

const CONDITIONS: [&str; 4] = [
    "",
    "child.age_months < 72",
    "has(parent.phone) && parent.phone.startsWith('09')",
    "child.birth_date >= date('2025-01-01') || child.age_months in [1, 2, 3]",
];
const AGENCIES: [&str; 4] = ["ubnd-xa", "tu-phap", "cong-an", "bhxh"];

#[derive(Debug, Clone)]
struct Plan {
    deps: Vec<Vec<usize>>,
    conditions: Vec<usize>,
    rework: Vec<Option<usize>>,
    file_order: Vec<usize>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (1usize..14).prop_flat_map(|n| {
        (
            prop::collection::vec(any::<u16>(), n),
            prop::collection::vec(0usize..CONDITIONS.len(), n),
            prop::collection::vec(any::<u8>(), n),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(move |(masks, conditions, rework_picks, file_order)| {
                let deps: Vec<Vec<usize>> = (0..n)
                    .map(|i| (0..i).filter(|j| masks[i] & (1 << (j % 16)) != 0).collect())
                    .collect();
                let rework = (0..n)
                    .map(|i| {
                        let d = &deps[i];
                        let pick = usize::from(rework_picks[i]);
                        (pick % 2 == 1 && !d.is_empty()).then(|| d[pick / 2 % d.len()])
                    })
                    .collect();
                Plan {
                    deps,
                    conditions,
                    rework,
                    file_order,
                }
            })
    })
}

fn render(p: &Plan) -> String {
    let mut s = String::from(
        "[procedure]\ncode = \"p\"\nname = \"P\"\nversion = 1\nlimit = \"10wd\"\ncalendar = \"vn\"\nreceiving_agency = \"ubnd-xa\"\n\n[attributes]\n\"child.age_months\" = { type = \"integer\", required = true }\n\"child.birth_date\" = { type = \"date\", required = true }\n\"parent.phone\" = { type = \"text\" }\n",
    );
    for &i in &p.file_order {
        s.push_str(&format!(
            "\n[[step]]\nid = \"s{i}\"\nagency = \"{}\"\nbudget = \"1wd\"\n",
            AGENCIES[i % AGENCIES.len()]
        ));
        let after: Vec<String> = p.deps[i].iter().map(|d| format!("\"s{d}\"")).collect();
        s.push_str(&format!("after = [{}]\n", after.join(", ")));
        if p.conditions[i] != 0 {
            s.push_str(&format!("when = \"{}\"\n", CONDITIONS[p.conditions[i]]));
        }
        if let Some(t) = p.rework[i] {
            s.push_str(&format!("on_reject = \"s{t}\"\n"));
        }
    }
    s
}

proptest! {
    #[test]
    fn random_dags_validate_in_topological_order(p in plan()) {
        let text = render(&p);
        let wf = match Workflow::parse(&text, "generated.toml", &agencies(), &["vn"]) {
            Ok(wf) => wf,
            Err(ds) => {
                let shown = lienthong_workflow::diagnostic::render_all(&ds);
                return Err(TestCaseError::fail(format!("{text}\n{shown}")));
            }
        };
        prop_assert_eq!(wf.steps.len(), p.deps.len());
        let mut seen = BTreeSet::new();
        for s in &wf.steps {
            for a in &s.after {
                prop_assert!(seen.contains(&a.0), "{} comes before {}", s.id, a);
            }
            seen.insert(s.id.0.clone());
            let i: usize = s.id.0[1..].parse().map_err(|_| TestCaseError::fail("id"))?;
            let want: Vec<String> = p.deps[i].iter().map(|d| format!("s{d}")).collect();
            let got: Vec<String> = s.after.iter().map(|a| a.0.clone()).collect();
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(wf.hash, lienthong_workflow::validate::content_hash(&text));
    }
}
