//! The catalog: everything in a `workflows/` directory, loaded and validated together.
//!
//! ```text
//! workflows/
//!   agencies.toml          [agency.<code>] tables: name_vi, name_en, code_prefix
//!   calendars/*.toml       working-day calendars, grouped into families (see lienthong-calendar)
//!   procedures/*.toml      one procedure per file (see the crate docs for the format)
//! ```
//!
//! Loading reports every problem of every file, as [`Diagnostic`]s, instead of stopping at the
//! first: a designer runs `lienthong check` once and sees the whole list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lienthong_calendar::Calendar;

use crate::definition::{Agency, AgencyCode, Workflow};
use crate::diagnostic::Diagnostic;
use crate::raw;

/// Most procedure files a catalog may hold; a province publishes hundreds of procedures, of
/// which only the liên thông ones need a workflow file.
pub const PROCEDURE_FILES_MAX: usize = 2_000;

/// All agencies, calendars and procedures of one directory, validated.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// Agencies by code.
    pub agencies: BTreeMap<String, Agency>,
    /// Procedures by national procedure code.
    pub procedures: BTreeMap<String, Arc<Workflow>>,
    /// Calendars by family (e.g. `vn`).
    pub calendars: BTreeMap<String, Calendar>,
}

impl Catalog {
    /// Loads `dir/agencies.toml`, `dir/calendars/*.toml` and `dir/procedures/*.toml`.
    pub fn load(dir: &Path) -> Result<Catalog, Vec<Diagnostic>> {
        let mut diagnostics = Vec::new();

        let agencies_path = dir.join("agencies.toml");
        let agencies = match std::fs::read_to_string(&agencies_path) {
            Ok(text) => match parse_agencies(&text, &agencies_path.display().to_string()) {
                Ok(a) => a,
                Err(mut ds) => {
                    diagnostics.append(&mut ds);
                    BTreeMap::new()
                }
            },
            Err(e) => {
                diagnostics.push(read_error(&agencies_path, &e));
                BTreeMap::new()
            }
        };

        let calendars_dir = dir.join("calendars");
        let (calendars, families) = match Calendar::load_dir(&calendars_dir) {
            Ok(c) => {
                // Each family's office-hour overrides are calendars of their own, named
                // `family@office` (e.g. `vn@ha-noi`): a procedure may name one, and events record
                // the view's name so that readers find the same hours.
                let mut all = c.clone();
                for cal in c.values() {
                    for office in cal.offices() {
                        let view = cal.for_office(office);
                        all.insert(view.view_name(), view);
                    }
                }
                let families: Vec<String> = all.keys().cloned().collect();
                (all, families)
            }
            Err(errors) => {
                for e in &errors {
                    let source = std::fs::read_to_string(e.origin()).ok();
                    diagnostics.push(Diagnostic::from_calendar(e, source.as_deref()));
                }
                // Guess the families from the file names so that procedures are still checked
                // without a cascade of "unknown calendar" errors.
                (BTreeMap::new(), guess_families(&calendars_dir))
            }
        };
        let family_refs: Vec<&str> = families.iter().map(String::as_str).collect();

        let procedures_dir = dir.join("procedures");
        let mut procedures: BTreeMap<String, Arc<Workflow>> = BTreeMap::new();
        match toml_files(&procedures_dir) {
            Ok(paths) if paths.len() > PROCEDURE_FILES_MAX => {
                diagnostics.push(Diagnostic::whole_file(
                    "too-many",
                    &procedures_dir.display().to_string(),
                    format!("more than {PROCEDURE_FILES_MAX} procedure files"),
                ))
            }
            Ok(paths) => {
                for path in paths {
                    let origin = path.display().to_string();
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            diagnostics.push(read_error(&path, &e));
                            continue;
                        }
                    };
                    match Workflow::parse(&text, &origin, &agencies, &family_refs) {
                        Ok(wf) => {
                            if let Some(first) = procedures.get(&wf.code) {
                                diagnostics.push(duplicate_code(&wf, &first.origin));
                            } else {
                                procedures.insert(wf.code.clone(), Arc::new(wf));
                            }
                        }
                        Err(mut ds) => diagnostics.append(&mut ds),
                    }
                }
            }
            Err(e) => diagnostics.push(read_error(&procedures_dir, &e)),
        }

        if diagnostics.is_empty() {
            Ok(Catalog {
                agencies,
                procedures,
                calendars,
            })
        } else {
            Err(diagnostics)
        }
    }

    /// The procedure with this national code.
    pub fn procedure(&self, code: &str) -> Option<&Arc<Workflow>> {
        self.procedures.get(code)
    }

    /// The calendar family with this name.
    /// A calendar family (`vn`) or one of its office views (`vn@ha-noi`).
    pub fn calendar(&self, family: &str) -> Option<&Calendar> {
        self.calendars.get(family)
    }

    /// The calendar families' names, as [`Workflow::parse`] wants them.
    pub fn calendar_families(&self) -> Vec<&str> {
        self.calendars.keys().map(String::as_str).collect()
    }

    /// Re-loads a stored definition (e.g. from the engine's content-addressed store) against this
    /// catalog's agencies and calendars.
    pub fn parse_workflow(&self, source: &str, origin: &str) -> Result<Workflow, Vec<Diagnostic>> {
        Workflow::parse(source, origin, &self.agencies, &self.calendar_families())
    }
}

/// Parses and checks `agencies.toml`.
pub fn parse_agencies(
    source: &str,
    origin: &str,
) -> Result<BTreeMap<String, Agency>, Vec<Diagnostic>> {
    let (raw, errors) = raw::parse_agencies(source);
    let mut diagnostics: Vec<Diagnostic> = errors
        .iter()
        .map(|e| {
            Diagnostic::at(e.code, origin, source, e.span.clone(), e.message.clone())
                .with_optional_hint(e.hint.clone())
        })
        .collect();
    let mut out = BTreeMap::new();
    for (code, a) in raw {
        let c = code.get_ref();
        let good_code = !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
        if !good_code {
            diagnostics.push(
                Diagnostic::at(
                    "bad-agency",
                    origin,
                    source,
                    code.span(),
                    format!("agency code `{c}` is not valid"),
                )
                .with_hint("use lower-case letters, digits and `-`, e.g. `tu-phap`"),
            );
            continue;
        }
        let prefix = a.code_prefix.get_ref();
        let good_prefix = !prefix.is_empty()
            && prefix
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '.' || ch == '-');
        if !good_prefix {
            diagnostics.push(
                Diagnostic::at(
                    "bad-agency",
                    origin,
                    source,
                    a.code_prefix.span(),
                    format!("code prefix `{prefix}` is not valid"),
                )
                .with_hint("use upper-case letters, digits and dots, e.g. `UBND.XA`"),
            );
            continue;
        }
        for (field, value) in [("name_vi", &a.name_vi), ("name_en", &a.name_en)] {
            if value.get_ref().trim().is_empty() {
                diagnostics.push(Diagnostic::at(
                    "bad-agency",
                    origin,
                    source,
                    value.span(),
                    format!("`{field}` of `{c}` is empty"),
                ));
            }
        }
        out.insert(
            c.clone(),
            Agency {
                code: AgencyCode(c.clone()),
                name_vi: a.name_vi.get_ref().clone(),
                name_en: a.name_en.get_ref().clone(),
                code_prefix: prefix.clone(),
            },
        );
    }
    if out.is_empty() && diagnostics.is_empty() {
        diagnostics.push(
            Diagnostic::whole_file("missing-key", origin, "no agency is declared").with_hint(
                "declare agencies as `[agency.tu-phap]` with name_vi, name_en and code_prefix",
            ),
        );
    }
    if diagnostics.is_empty() {
        Ok(out)
    } else {
        Err(diagnostics)
    }
}

fn duplicate_code(wf: &Workflow, first_origin: &str) -> Diagnostic {
    let (raw, _) = raw::parse_workflow(&wf.source);
    let span = raw
        .procedure
        .as_ref()
        .and_then(|(_, p)| p.code.as_ref().map(toml::Spanned::span))
        .unwrap_or(0..0);
    Diagnostic::at(
        "duplicate-procedure",
        &wf.origin,
        &wf.source,
        span,
        format!("procedure code `{}` is already defined", wf.code),
    )
    .with_hint(format!(
        "{first_origin} defines it too; a new version of a procedure replaces the old file (raise `version`)"
    ))
}

fn read_error(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::whole_file(
        "io",
        &path.display().to_string(),
        format!("cannot read: {e}"),
    )
}

fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// `vn-2026.toml` is family `vn`: only used when the calendars failed to load.
fn guess_families(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = toml_files(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .map(|stem| match stem.rsplit_once('-') {
            Some((family, year)) if year.len() == 4 && year.chars().all(|c| c.is_ascii_digit()) => {
                family.to_string()
            }
            _ => stem,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agencies_parse_and_bad_prefix_is_reported() {
        // Given an agencies file with one good and one bad agency
        let src = "[agency.tu-phap]\nname_vi = \"Tư pháp\"\nname_en = \"Justice\"\ncode_prefix = \"TP\"\n\n[agency.x]\nname_vi = \"X\"\nname_en = \"X\"\ncode_prefix = \"bad prefix\"\n";
        // When parsed
        let result = parse_agencies(src, "agencies.toml");
        // Then the bad prefix is reported at its line
        let ds = result.err().unwrap_or_default();
        assert_eq!(ds.len(), 1);
        assert_eq!((ds[0].code, ds[0].line), ("bad-agency", 9));
        // And without the bad one it loads
        let good = src.split("\n\n").next().unwrap_or_default();
        let agencies = parse_agencies(good, "agencies.toml").unwrap_or_default();
        assert_eq!(agencies["tu-phap"].code_prefix, "TP");
    }

    #[test]
    fn families_are_guessed_from_file_names() {
        let dir = std::env::temp_dir().join(format!("lienthong-wf-guess-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        for f in ["vn-2025.toml", "vn-2026.toml", "hcm.toml"] {
            let _ = std::fs::write(dir.join(f), "");
        }
        assert_eq!(guess_families(&dir), ["hcm", "vn"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
