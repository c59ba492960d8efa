//! Fuzz target `workflow`: arbitrary bytes as a workflow file, through the same functions that
//! `lienthong check` and `Catalog::load` use.
//!
//! The input is read as a procedure file (`Workflow::parse`, i.e. raw TOML parse + validation,
//! against the shipped agencies and calendar families) and as an agencies file
//! (`catalog::parse_agencies`). Non-UTF-8 input stops where the real loader stops
//! (`read_to_string` fails before any parser runs).
//!
//! Checks: nothing panics; every diagnostic names the file and, when it has a position, a line
//! and column inside the text; rendering the diagnostics works; a procedure that loads has the
//! content hash of its text, loads again to the same definition, and draws as a graph.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::catalog;
use lienthong_workflow::catalog::parse_agencies;
use lienthong_workflow::diagnostic::render_all;
use lienthong_workflow::{Diagnostic, Workflow, dot, mermaid};

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let catalog = catalog();
    let families = catalog.calendar_families();
    match Workflow::parse(source, ORIGIN, &catalog.agencies, &families) {
        Ok(wf) => {
            assert_eq!(
                wf.hash,
                lienthong_workflow::validate::content_hash(source),
                "a definition's identity is the hash of its text"
            );
            let again = Workflow::parse(source, ORIGIN, &catalog.agencies, &families)
                .expect("the same text loads twice");
            assert_eq!(again.hash, wf.hash);
            assert_eq!(again.steps.len(), wf.steps.len());
            let _ = mermaid(&wf, &catalog.agencies);
            let _ = dot(&wf, &catalog.agencies);
        }
        Err(ds) => check_diagnostics(source, &ds),
    }
    if let Err(ds) = parse_agencies(source, ORIGIN) {
        check_diagnostics(source, &ds);
    }
});

/// Every diagnostic points into the file it names, and renders.
fn check_diagnostics(source: &str, ds: &[Diagnostic]) {
    assert!(
        !ds.is_empty(),
        "a rejected file has at least one diagnostic"
    );
    let lines = source.split('\n').count();
    for d in ds {
        assert_eq!(d.file, ORIGIN);
        assert!(!d.code.is_empty());
        assert!(!d.message.is_empty(), "{d:?}");
        if d.line > 0 {
            assert!(d.line <= lines, "line {} of {lines}: {d:?}", d.line);
            assert!(d.column >= 1, "{d:?}");
        }
    }
    let _ = render_all(ds);
}
