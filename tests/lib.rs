//! Helpers for the end-to-end tests: find the `lienthong` binary and run it as a separate process.
//!
//! The binary is the one cargo built for this workspace (`target/<profile>/lienthong`, next to the
//! test executable's `deps/` folder). `scripts/test.sh` builds it before running the tests; a
//! missing binary is a test failure with that instruction, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `lienthong` binary.
pub fn lienthong_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LIENTHONG_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("lienthong");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bin lienthong` (scripts/test.sh does), or set LIENTHONG_BIN",
        bin.display()
    );
    bin
}

/// The repository's root (where `workflows/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `lienthong ARGS` from the repository root and returns its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(lienthong_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run lienthong")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
