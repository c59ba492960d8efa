//! Snapshot tests of the diagnostics people read.
//!
//! Each file in `tests/broken/` holds one mistake (`several_mistakes.toml` holds three, to show
//! that every problem of a file is reported). The test validates each file against the real
//! agency list, renders its diagnostics as a designer would see them, and compares the text with
//! the reviewed snapshot in `tests/snapshots/`. A change of wording or position shows up as a
//! snapshot diff to review, never by accident.

use std::path::{Path, PathBuf};

use lienthong_workflow::Workflow;
use lienthong_workflow::catalog::parse_agencies;
use lienthong_workflow::diagnostic::render_all;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn broken_files() -> Vec<PathBuf> {
    let dir = manifest_dir().join("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/broken exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("unnamed")
        .to_string()
}

#[test]
fn every_broken_file_is_rejected_with_the_reviewed_diagnostics() {
    let agencies_path = manifest_dir().join("../../workflows/agencies.toml");
    let agencies_text = std::fs::read_to_string(&agencies_path).expect("agencies.toml");
    let agencies =
        parse_agencies(&agencies_text, "workflows/agencies.toml").expect("agencies valid");
    let files = broken_files();
    assert!(files.len() >= 13, "the corpus lost files: {files:?}");
    for path in files {
        let name = stem(&path);
        let text = std::fs::read_to_string(&path).expect("readable");
        let origin = format!("tests/broken/{name}.toml");
        let diagnostics = match Workflow::parse(&text, &origin, &agencies, &["vn"]) {
            Ok(_) => panic!("{origin} should not validate"),
            Err(ds) => ds,
        };
        insta::assert_snapshot!(name, render_all(&diagnostics));
    }
}
