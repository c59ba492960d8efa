//! Loads the real `workflows/` directory: every shipped procedure must validate, and the birth
//! group's health-card step must run or be skipped by the child's age.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lienthong_workflow::{AttrValue, Catalog, Diagnostic, OnReject, Workflow};

fn workflows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows")
}

fn load() -> Catalog {
    match Catalog::load(&workflows_dir()) {
        Ok(c) => c,
        Err(ds) => panic!(
            "workflows/ does not validate:\n{}",
            lienthong_workflow::diagnostic::render_all(&ds)
        ),
    }
}

#[test]
fn every_shipped_procedure_validates() {
    let catalog = load();
    let codes: Vec<&str> = catalog.procedures.keys().map(String::as_str).collect();
    assert_eq!(
        codes,
        [
            "2.000986",
            "LT.CHUYEN-NHUONG-DAT",
            "LT.DKDN-BHXH",
            "LT.KHAI-TU"
        ]
    );
    assert!(catalog.calendar("vn").is_some());
    for wf in catalog.procedures.values() {
        // Topological order: every step comes after the steps it waits for.
        for (i, s) in wf.steps.iter().enumerate() {
            for a in &s.after {
                let j = wf.steps.iter().position(|t| t.id == *a);
                assert!(j.is_some_and(|j| j < i), "{}: {} before {a}", wf.code, s.id);
            }
        }
        assert_eq!(wf.hash.len(), 64);
    }
}

#[test]
fn birth_health_card_step_depends_on_age() {
    // Given the birth group as shipped
    let catalog = load();
    let wf = catalog.procedure("2.000986").expect("birth group");
    let step = wf.step("issue-health-card").expect("health-card step");
    let when = step.when.as_ref().expect("conditional");
    let attrs = |months: i64| -> BTreeMap<String, AttrValue> {
        BTreeMap::from([
            ("child.age_months".to_string(), AttrValue::Integer(months)),
            (
                "child.birth_date".to_string(),
                AttrValue::Date(chrono::NaiveDate::MIN),
            ),
        ])
    };
    // When evaluated for a newborn, a child of 71 months and one of exactly 6 years
    // Then the step runs only for children under 6 (72 months)
    assert_eq!(when.evaluate(&attrs(0)), Ok(true));
    assert_eq!(when.evaluate(&attrs(71)), Ok(true));
    assert_eq!(when.evaluate(&attrs(72)), Ok(false));
    // And a child who already holds a card is skipped too (optional attribute behind has())
    let mut has_card = attrs(3);
    has_card.insert("child.has_health_card".into(), AttrValue::Boolean(true));
    assert_eq!(when.evaluate(&has_card), Ok(false));
    // And residence and health card run in parallel after birth registration, joined at return
    assert_eq!(
        wf.initial_steps()
            .map(|s| s.id.0.as_str())
            .collect::<Vec<_>>(),
        ["register-birth"]
    );
    let ret = wf.step("return-result").expect("return step");
    assert_eq!(ret.after.len(), 2);
    assert_eq!(
        wf.step("register-residence").map(|s| s.on_reject.clone()),
        Some(OnReject::Rework(lienthong_workflow::StepId(
            "register-birth".into()
        )))
    );
}

#[test]
fn stored_text_reparses_to_the_same_definition() {
    // The engine stores definitions by hash and re-parses them after a restart.
    let catalog = load();
    for wf in catalog.procedures.values() {
        let again: Result<Workflow, Vec<Diagnostic>> =
            catalog.parse_workflow(&wf.source, &wf.origin);
        let again = again.expect("re-parses");
        assert_eq!(again.hash, wf.hash);
        assert_eq!(again.steps.len(), wf.steps.len());
    }
}

#[test]
fn graphs_render_for_every_procedure() {
    let catalog = load();
    for wf in catalog.procedures.values() {
        let m = lienthong_workflow::mermaid(wf, &catalog.agencies);
        let d = lienthong_workflow::dot(wf, &catalog.agencies);
        assert!(m.starts_with("flowchart TD\n"));
        assert!(d.ends_with("}\n"));
    }
}
