//! The workflow and agency files as written: serde structs that mirror the TOML, with positions.
//!
//! Nothing here is checked beyond TOML syntax, the set of keys and the TOML type of each value:
//! [`crate::validate`] turns these into the typed model. Values that a diagnostic may point at are
//! [`toml::Spanned`]. Keys that validation requires are `Option` here, so that a missing key is
//! reported with the others instead of stopping at the first one.
//!
//! Each section (`[procedure]`, every attribute, every `[[step]]`) is deserialised on its own, and
//! unknown keys are looked for before serde runs, so that one pass reports every unknown key and
//! every wrongly typed value of a file, not only the first.

use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diagnostic::did_you_mean;

/// `[procedure]`: the procedure as a whole.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcedure {
    /// National procedure code, e.g. `2.000986`.
    pub code: Option<Spanned<String>>,
    /// Official name.
    pub name: Option<Spanned<String>>,
    /// Designer's version number.
    pub version: Option<Spanned<i64>>,
    /// Total time limit, e.g. `3wd`.
    pub limit: Option<Spanned<String>>,
    /// Cut-off time of day, `HH:MM`.
    pub cutoff: Option<Spanned<String>>,
    /// Calendar family, e.g. `vn`.
    pub calendar: Option<Spanned<String>>,
    /// `pause` or `restart`.
    pub supplement_clock: Option<Spanned<String>>,
    /// Whether waiting for payment counts toward the deadline.
    pub payment_counts: Option<Spanned<bool>>,
    /// Agency code of the one-stop desk.
    pub receiving_agency: Option<Spanned<String>>,
}

/// Keys of `[procedure]`, for the unknown-key check.
pub const PROCEDURE_KEYS: &[&str] = &[
    "code",
    "name",
    "version",
    "limit",
    "cutoff",
    "calendar",
    "supplement_clock",
    "payment_counts",
    "receiving_agency",
];

/// One entry of `[attributes]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttribute {
    /// `text`, `integer`, `boolean` or `date`.
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
    /// Whether every dossier must carry it.
    pub required: Option<Spanned<bool>>,
    /// What it means.
    pub description: Option<Spanned<String>>,
}

/// Keys of an attribute.
pub const ATTRIBUTE_KEYS: &[&str] = &["type", "required", "description"];

/// One `[[step]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Unique id.
    pub id: Option<Spanned<String>>,
    /// Human name.
    pub name: Option<Spanned<String>>,
    /// Agency code.
    pub agency: Option<Spanned<String>>,
    /// The step's share of the limit.
    pub budget: Option<Spanned<String>>,
    /// Ids of the steps this one waits for.
    pub after: Option<Spanned<Vec<Spanned<String>>>>,
    /// CEL condition.
    pub when: Option<Spanned<String>>,
    /// Whether the step may request a supplement.
    pub supplement: Option<Spanned<bool>>,
    /// `refuse` or the id of an earlier step.
    pub on_reject: Option<Spanned<String>>,
    /// Whether the step opens only as a rework target.
    pub rework_only: Option<Spanned<bool>>,
    /// Whether the step is the wait for the citizen's payment.
    pub payment: Option<Spanned<bool>>,
}

/// Keys of a step.
pub const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "agency",
    "budget",
    "after",
    "when",
    "supplement",
    "on_reject",
    "rework_only",
    "payment",
];

/// Top-level keys of a workflow file.
pub const TOP_KEYS: &[&str] = &["procedure", "attributes", "step"];

/// A workflow file as written.
#[derive(Clone, Debug, Default)]
pub struct RawWorkflow {
    /// `[procedure]`, with the span of its header key; `None` when absent or malformed.
    pub procedure: Option<(Range<usize>, RawProcedure)>,
    /// `[attributes]` entries in file order: the quoted name (with its span) and the entry.
    pub attributes: Vec<(Spanned<String>, RawAttribute)>,
    /// `[[step]]` tables in file order, each with the span of its `[[step]]` header.
    pub steps: Vec<(Range<usize>, RawStep)>,
}

/// A syntax, key or value-type problem in a file, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawError {
    /// Stable kind: `toml-syntax`, `unknown-key`, `bad-value`.
    pub code: &'static str,
    /// Byte range in the file.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

/// `[agency.<code>]` in `agencies.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgency {
    /// Official name in Vietnamese.
    pub name_vi: Spanned<String>,
    /// Name in English.
    pub name_en: Spanned<String>,
    /// Prefix of the dossier codes the agency issues.
    pub code_prefix: Spanned<String>,
}

/// Keys of an agency.
pub const AGENCY_KEYS: &[&str] = &["name_vi", "name_en", "code_prefix"];

/// Parses a workflow file into its raw sections, with every syntax, key and type problem.
pub fn parse_workflow(source: &str) -> (RawWorkflow, Vec<RawError>) {
    let mut errors = Vec::new();
    let mut out = RawWorkflow::default();
    let Some(root) = parse_document(source, &mut errors) else {
        return (out, errors);
    };
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        match name {
            "procedure" => {
                if let Some(p) =
                    section::<RawProcedure>(key, value, PROCEDURE_KEYS, "procedure", &mut errors)
                {
                    out.procedure = Some((key.span(), p));
                }
            }
            "attributes" => match value.get_ref().as_table() {
                Some(table) => {
                    for (akey, avalue) in table.iter() {
                        let aname: &str = akey.get_ref();
                        if let Some(a) = section::<RawAttribute>(
                            akey,
                            avalue,
                            ATTRIBUTE_KEYS,
                            "attribute",
                            &mut errors,
                        ) {
                            out.attributes
                                .push((Spanned::new(akey.span(), aname.to_string()), a));
                        }
                    }
                }
                None => errors.push(not_a_table(value.span(), "[attributes]")),
            },
            "step" => match value.get_ref().as_array() {
                Some(array) => {
                    for item in array.iter() {
                        let header = step_header(source, item.span());
                        if let Some(s) =
                            section::<RawStep>(key, item, STEP_KEYS, "step", &mut errors)
                        {
                            out.steps.push((header, s));
                        }
                    }
                }
                None => errors.push(RawError {
                    code: "bad-value",
                    span: key.span(),
                    message: "`step` must be an array of tables".into(),
                    hint: Some("write each step under its own `[[step]]` header".into()),
                }),
            },
            other => errors.push(unknown_key(key.span(), other, TOP_KEYS, "top-level")),
        }
    }
    out.attributes.sort_by_key(|(k, _)| k.span().start);
    errors.sort_by_key(|e| e.span.start);
    (out, errors)
}

/// Parses `agencies.toml`: `[agency.<code>]` tables.
pub fn parse_agencies(source: &str) -> (Vec<(Spanned<String>, RawAgency)>, Vec<RawError>) {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let Some(root) = parse_document(source, &mut errors) else {
        return (out, errors);
    };
    for (key, value) in root.get_ref().iter() {
        let name: &str = key.get_ref();
        if name != "agency" {
            errors.push(unknown_key(key.span(), name, &["agency"], "top-level"));
            continue;
        }
        let Some(table) = value.get_ref().as_table() else {
            errors.push(not_a_table(value.span(), "[agency]"));
            continue;
        };
        for (code, entry) in table.iter() {
            let code_str: &str = code.get_ref();
            if let Some(a) = section::<RawAgency>(code, entry, AGENCY_KEYS, "agency", &mut errors) {
                out.push((Spanned::new(code.span(), code_str.to_string()), a));
            }
        }
    }
    out.sort_by_key(|(k, _)| k.span().start);
    errors.sort_by_key(|e| e.span.start);
    (out, errors)
}

fn parse_document<'i>(source: &'i str, errors: &mut Vec<RawError>) -> Option<Spanned<DeTable<'i>>> {
    let (root, syntax) = DeTable::parse_recoverable(source);
    if syntax.is_empty() {
        return Some(root);
    }
    for e in syntax {
        errors.push(RawError {
            code: "toml-syntax",
            span: e.span().unwrap_or(0..0),
            message: format!("this is not valid TOML: {}", e.message().trim_end()),
            hint: None,
        });
    }
    None
}

/// The span of the `[[step]]` header that opens the table at `item` (falls back to `item`).
fn step_header(source: &str, item: Range<usize>) -> Range<usize> {
    const HEADER: &str = "[[step]]";
    let upto = (item.start + HEADER.len()).min(source.len());
    match source.get(..upto).and_then(|s| s.rfind(HEADER)) {
        Some(i) => i..i + HEADER.len(),
        None => item,
    }
}

fn not_a_table(span: Range<usize>, what: &str) -> RawError {
    RawError {
        code: "bad-value",
        span,
        message: format!("{what} must be a table"),
        hint: None,
    }
}

fn unknown_key(span: Range<usize>, key: &str, known: &[&str], section: &str) -> RawError {
    let mut hint = format!("{section} keys are: {}", known.join(", "));
    if let Some(best) = did_you_mean(key, known.iter().copied()) {
        hint = format!("did you mean `{best}`? {hint}");
    }
    RawError {
        code: "unknown-key",
        span,
        message: format!("unknown key `{key}` in {section}"),
        hint: Some(hint),
    }
}

/// Checks the keys of one table and deserialises it.
fn section<T: DeserializeOwned>(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
    known: &[&str],
    what: &str,
    errors: &mut Vec<RawError>,
) -> Option<T> {
    let Some(table) = value.get_ref().as_table() else {
        let name: &str = key.get_ref();
        let mut e = not_a_table(value.span(), &format!("`{name}`"));
        if what == "attribute" {
            e.hint = Some(format!(
                "declare an attribute as `\"{name}\" = {{ type = \"integer\", required = true, description = \"...\" }}`"
            ));
        }
        errors.push(e);
        return None;
    };
    let mut unknown: Vec<Spanned<std::borrow::Cow<'_, str>>> = Vec::new();
    for k in table.keys() {
        let k_str: &str = k.get_ref();
        if !known.contains(&k_str) {
            let mut e = unknown_key(k.span(), k_str, known, what);
            if what == "attribute" && table.values().all(|v| v.get_ref().is_table()) {
                e.hint = Some(
                    "quote dotted attribute names: `\"child.age_months\" = { type = \"integer\" }`"
                        .into(),
                );
            }
            errors.push(e);
            unknown.push(k.clone());
        }
    }
    // Unknown keys are reported above; the rest of the table is still read, so that one
    // misspelt key does not hide the step (and cascade into "no such step" errors).
    let whole = value.span();
    let mut value = value.clone();
    if let DeValue::Table(t) = value.get_mut() {
        for k in &unknown {
            t.remove(k);
        }
    }
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or(whole);
            errors.push(RawError {
                code: "bad-value",
                span,
                message: e.message().trim_end().to_string(),
                hint: None,
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_unknown_key_and_still_reads_the_rest() {
        // Given a file with two unknown keys in two places
        let src =
            "[procedure]\ncode = \"1\"\nlimt = \"3wd\"\n\n[[step]]\nid = \"a\"\nagensy = \"x\"\n";
        // When parsed
        let (raw, errors) = parse_workflow(src);
        // Then both keys are reported with a suggestion, in file order
        let keys: Vec<&str> = errors.iter().map(|e| &src[e.span.clone()]).collect();
        assert_eq!(keys, ["limt", "agensy"]);
        assert!(
            errors[0]
                .hint
                .as_deref()
                .unwrap_or("")
                .starts_with("did you mean `limit`?")
        );
        // And the rest of each table is still read
        assert!(raw.procedure.is_some_and(|(_, p)| p.code.is_some()));
        assert_eq!(raw.steps.len(), 1);
    }

    #[test]
    fn keeps_positions_of_values_and_step_headers() {
        let src = "[procedure]\ncode = \"2.000986\"\n\n[[step]]\nid = \"a\"\n\n[[step]]\nid = \"b\"\nafter = [\"a\"]\n";
        let (raw, errors) = parse_workflow(src);
        assert!(errors.is_empty(), "{errors:?}");
        let (_, p) = raw.procedure.expect("procedure");
        let code = p.code.expect("code");
        assert_eq!(&src[code.span()], "\"2.000986\"");
        assert_eq!(raw.steps.len(), 2);
        let (header, step) = &raw.steps[1];
        assert_eq!(&src[header.clone()], "[[step]]");
        assert_eq!(src[..header.start].matches('\n').count(), 6);
        let after = step.after.as_ref().expect("after");
        assert_eq!(&src[after.get_ref()[0].span()], "\"a\"");
    }

    #[test]
    fn wrong_value_type_is_reported_at_the_value() {
        let src = "[procedure]\nversion = \"one\"\n";
        let (_, errors) = parse_workflow(src);
        assert_eq!(errors.len(), 1);
        assert_eq!(&src[errors[0].span.clone()], "\"one\"");
    }

    #[test]
    fn syntax_errors_stop_early() {
        let (_, errors) = parse_workflow("[procedure\ncode = 1\n");
        assert_eq!(errors[0].code, "toml-syntax");
    }
}
