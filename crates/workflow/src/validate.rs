//! Validation: raw workflow files into the typed, immutable [`Workflow`].
//!
//! Every check that can be made without a dossier is made here, and every problem of a file is
//! collected before giving up: unknown agencies and calendars, bad durations and cut-off times,
//! duplicate or malformed step ids, `after` naming no step, cycles, steps that can never run or
//! never finish, `on_reject` naming a step that is not earlier on the same path, conditions that do
//! not parse or do not type-check, unknown and missing keys. What comes out is a `Workflow` whose
//! steps are in a topological order of `after`, identified by the SHA-256 of its exact source.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::NaiveTime;
use lienthong_calendar::Duration;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::condition::{Condition, namespaces};
use crate::definition::{
    Agency, AgencyCode, AttrType, AttributeSpec, OnReject, Step, StepId, SupplementClock, Workflow,
};
use crate::diagnostic::{Diagnostic, did_you_mean, known_list_hint};
use crate::raw::{self, RawError, RawStep};

/// Most steps a procedure may have: real liên thông procedures have a handful.
pub const STEPS_MAX: usize = 64;
/// Most attributes a procedure may declare.
pub const ATTRIBUTES_MAX: usize = 128;
/// Largest workflow file accepted, in bytes.
pub const SOURCE_BYTES_MAX: usize = 256 * 1024;

impl Workflow {
    /// Parses and validates a workflow file's text.
    ///
    /// `origin` names the file in diagnostics; `agencies` are the known agencies; `calendars` the
    /// known calendar families. Used both when loading the `workflows/` directory and when the
    /// engine re-loads a stored definition from its text (same text, same hash, same result).
    pub fn parse(
        source: &str,
        origin: &str,
        agencies: &BTreeMap<String, Agency>,
        calendars: &[&str],
    ) -> Result<Workflow, Vec<Diagnostic>> {
        validate(source, origin, agencies, calendars)
    }
}

/// Lower-case hex SHA-256 of `source`: a definition's identity.
pub fn content_hash(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// See [`Workflow::parse`].
pub fn validate(
    source: &str,
    origin: &str,
    agencies: &BTreeMap<String, Agency>,
    calendars: &[&str],
) -> Result<Workflow, Vec<Diagnostic>> {
    if source.len() > SOURCE_BYTES_MAX {
        return Err(vec![Diagnostic::whole_file(
            "too-large",
            origin,
            format!("workflow file is larger than {SOURCE_BYTES_MAX} bytes"),
        )]);
    }
    let (raw, raw_errors) = raw::parse_workflow(source);
    let mut v = Validator {
        source,
        origin,
        agencies,
        diagnostics: raw_errors
            .iter()
            .map(|e| raw_diagnostic(origin, source, e))
            .collect(),
    };
    if raw_errors.iter().any(|e| e.code == "toml-syntax") {
        return Err(v.diagnostics);
    }

    let procedure = v.procedure(raw.procedure.as_ref(), calendars);
    let attributes = v.attributes(&raw.attributes);
    let (steps, written_ids) = v.steps(&raw.steps, &attributes);
    let ordered = v.graph(steps, &written_ids);

    if !v.diagnostics.is_empty() {
        v.diagnostics.sort_by_key(|d| (d.line, d.column));
        return Err(v.diagnostics);
    }
    let (Some(p), Some(steps)) = (procedure, ordered) else {
        // Every path that yields `None` has pushed a diagnostic; this is a guard.
        return Err(vec![Diagnostic::whole_file(
            "internal",
            origin,
            "workflow is invalid",
        )]);
    };
    Ok(Workflow {
        code: p.code,
        name: p.name,
        version: p.version,
        limit: p.limit,
        cutoff: p.cutoff,
        calendar: p.calendar,
        supplement_clock: p.supplement_clock,
        payment_counts: p.payment_counts,
        receiving_agency: p.receiving_agency,
        attributes,
        steps,
        hash: content_hash(source),
        source: source.to_string(),
        origin: origin.to_string(),
    })
}

fn raw_diagnostic(origin: &str, source: &str, e: &RawError) -> Diagnostic {
    Diagnostic::at(e.code, origin, source, e.span.clone(), e.message.clone())
        .with_optional_hint(e.hint.clone())
}

/// `[procedure]`, checked.
struct Procedure {
    code: String,
    name: String,
    version: u32,
    limit: Duration,
    cutoff: Option<NaiveTime>,
    calendar: String,
    supplement_clock: SupplementClock,
    payment_counts: bool,
    receiving_agency: AgencyCode,
}

/// A step checked on its own, before the graph checks.
struct Checked {
    step: Step,
    header: Range<usize>,
    after_spans: Vec<Range<usize>>,
    after_span: Option<Range<usize>>,
    on_reject_span: Option<Range<usize>>,
    when_span: Option<Range<usize>>,
}

struct Validator<'a> {
    source: &'a str,
    origin: &'a str,
    agencies: &'a BTreeMap<String, Agency>,
    diagnostics: Vec<Diagnostic>,
}

fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_cel_ident(s: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&s)
}

impl Validator<'_> {
    fn error(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        message: String,
        hint: Option<String>,
    ) {
        self.diagnostics.push(
            Diagnostic::at(code, self.origin, self.source, span, message).with_optional_hint(hint),
        );
    }

    fn missing(&mut self, span: Range<usize>, what: &str, key: &str, example: &str) {
        self.error(
            "missing-key",
            span,
            format!("{what} is missing the required key `{key}`"),
            Some(format!("add e.g. `{key} = {example}`")),
        );
    }

    fn duration(&mut self, value: &Spanned<String>, what: &str) -> Option<Duration> {
        match value.get_ref().parse::<Duration>() {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    "bad-duration",
                    value.span(),
                    format!("bad {what}: {e}"),
                    Some("durations are a number and a unit: `3wd` (working days), `4wh` (working hours), `7d` (days), `12h` (hours)".into()),
                );
                None
            }
        }
    }

    fn agency(&mut self, value: &Spanned<String>) -> Option<AgencyCode> {
        let code = value.get_ref();
        if self.agencies.contains_key(code) {
            return Some(AgencyCode(code.clone()));
        }
        let hint = known_list_hint("agencies", code, self.agencies.keys().map(String::as_str));
        self.error(
            "unknown-agency",
            value.span(),
            format!("unknown agency `{code}`"),
            Some(hint),
        );
        None
    }

    fn procedure(
        &mut self,
        raw: Option<&(Range<usize>, raw::RawProcedure)>,
        calendars: &[&str],
    ) -> Option<Procedure> {
        let Some((header, p)) = raw else {
            if !self
                .diagnostics
                .iter()
                .any(|d| d.message.contains("procedure"))
            {
                self.diagnostics.push(
                    Diagnostic::at("missing-key", self.origin, self.source, 0..0, "missing the `[procedure]` table")
                        .with_hint("start the file with `[procedure]` and its code, name, version, limit, calendar and receiving_agency"),
                );
            }
            return None;
        };
        let header = header.clone();
        let what = "[procedure]";
        let mut ok = true;
        let mut required = |v: &mut Self, value: &Option<Spanned<String>>, key: &str, ex: &str| {
            if value.is_none() {
                v.missing(header.clone(), what, key, ex);
                ok = false;
            }
        };
        required(self, &p.code, "code", "\"2.000986\"");
        required(self, &p.name, "name", "\"...\"");
        required(self, &p.limit, "limit", "\"3wd\"");
        required(self, &p.calendar, "calendar", "\"vn\"");
        required(self, &p.receiving_agency, "receiving_agency", "\"ubnd-xa\"");
        if p.version.is_none() {
            self.missing(header.clone(), what, "version", "1");
            ok = false;
        }

        let code = p.code.as_ref().and_then(|c| {
            let s = c.get_ref().trim();
            if s.is_empty() || s.contains(char::is_whitespace) {
                self.error(
                    "bad-value",
                    c.span(),
                    "procedure code must be one word, e.g. `2.000986`".into(),
                    None,
                );
                None
            } else {
                Some(s.to_string())
            }
        });
        let version = p
            .version
            .as_ref()
            .and_then(|v| match u32::try_from(*v.get_ref()) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.error(
                        "bad-value",
                        v.span(),
                        format!("version must be a whole number from 1, not {}", v.get_ref()),
                        None,
                    );
                    None
                }
            });
        let limit = p.limit.as_ref().and_then(|l| self.duration(l, "limit"));
        let cutoff = match &p.cutoff {
            None => Some(None),
            Some(c) => match parse_cutoff(c.get_ref()) {
                Some(t) => Some(Some(t)),
                None => {
                    self.error(
                        "bad-cutoff",
                        c.span(),
                        format!("`{}` is not a cut-off time", c.get_ref()),
                        Some("write a time of day as HH:MM on a 24-hour clock, e.g. `cutoff = \"15:00\"`".into()),
                    );
                    None
                }
            },
        };
        let calendar = p.calendar.as_ref().and_then(|c| {
            if calendars.contains(&c.get_ref().as_str()) {
                Some(c.get_ref().clone())
            } else {
                let hint = known_list_hint("calendars", c.get_ref(), calendars.iter().copied());
                self.error(
                    "unknown-calendar",
                    c.span(),
                    format!("unknown calendar `{}`", c.get_ref()),
                    Some(format!(
                        "{hint} (calendar families are the files in workflows/calendars/)"
                    )),
                );
                None
            }
        });
        let supplement_clock = match &p.supplement_clock {
            None => Some(SupplementClock::Pause),
            Some(s) => match s.get_ref().as_str() {
                "pause" => Some(SupplementClock::Pause),
                "restart" => Some(SupplementClock::Restart),
                other => {
                    self.error(
                        "bad-value",
                        s.span(),
                        format!("supplement_clock must be `pause` or `restart`, not `{other}`"),
                        None,
                    );
                    None
                }
            },
        };
        let receiving_agency = p.receiving_agency.as_ref().and_then(|a| self.agency(a));
        Some(Procedure {
            code: code?,
            name: p.name.as_ref()?.get_ref().clone(),
            version: version?,
            limit: limit?,
            cutoff: cutoff?,
            calendar: calendar?,
            supplement_clock: supplement_clock?,
            payment_counts: p.payment_counts.as_ref().is_some_and(|b| *b.get_ref()),
            receiving_agency: receiving_agency?,
        })
        .filter(|_| ok)
    }

    fn attributes(
        &mut self,
        raw: &[(Spanned<String>, raw::RawAttribute)],
    ) -> BTreeMap<String, AttributeSpec> {
        let mut out = BTreeMap::new();
        if raw.len() > ATTRIBUTES_MAX {
            self.error(
                "too-many",
                raw[ATTRIBUTES_MAX].0.span(),
                format!("more than {ATTRIBUTES_MAX} attributes"),
                None,
            );
        }
        for (name, a) in raw {
            let n = name.get_ref();
            if n.split('.').any(|seg| !is_cel_ident(seg)) {
                self.error(
                    "bad-attribute",
                    name.span(),
                    format!("attribute name `{n}` cannot be read in conditions"),
                    Some("use dotted lower-case words, e.g. `child.age_months` (each part a letter then letters, digits or `_`, and not a CEL keyword)".into()),
                );
                continue;
            }
            let Some(ty) = &a.ty else {
                self.missing(
                    name.span(),
                    &format!("attribute `{n}`"),
                    "type",
                    "\"integer\"",
                );
                continue;
            };
            let attr_type = match ty.get_ref().as_str() {
                "text" => AttrType::Text,
                "integer" => AttrType::Integer,
                "boolean" => AttrType::Boolean,
                "date" => AttrType::Date,
                other => {
                    let hint =
                        known_list_hint("types", other, ["text", "integer", "boolean", "date"]);
                    self.error(
                        "bad-attribute",
                        ty.span(),
                        format!("unknown attribute type `{other}`"),
                        Some(hint),
                    );
                    continue;
                }
            };
            let required = a.required.as_ref().is_some_and(|r| *r.get_ref());
            if !required && !n.contains('.') {
                self.error(
                    "bad-attribute",
                    name.span(),
                    format!("optional attribute `{n}` needs a dotted name"),
                    Some(format!("conditions test optional attributes with `has(group.{n})`, which needs a group: rename it e.g. `dossier.{n}`, or make it `required = true`")),
                );
                continue;
            }
            out.insert(
                n.clone(),
                AttributeSpec {
                    name: n.clone(),
                    ty: attr_type,
                    required,
                    description: a
                        .description
                        .as_ref()
                        .map(|d| d.get_ref().clone())
                        .unwrap_or_default(),
                },
            );
        }
        // A name cannot be both a value and a group of values.
        let groups = namespaces(out.keys().map(String::as_str));
        for (name, _) in raw {
            if groups.contains(name.get_ref()) && out.contains_key(name.get_ref()) {
                self.error(
                    "bad-attribute",
                    name.span(),
                    format!(
                        "`{}` is both an attribute and the group of other attributes",
                        name.get_ref()
                    ),
                    Some("rename one of them".into()),
                );
            }
        }
        out.retain(|k, _| !groups.contains(k));
        out
    }

    fn steps(
        &mut self,
        raw: &[(Range<usize>, RawStep)],
        attributes: &BTreeMap<String, AttributeSpec>,
    ) -> (Vec<Checked>, BTreeSet<String>) {
        let mut out: Vec<Checked> = Vec::new();
        if raw.is_empty() && !self.diagnostics.iter().any(|d| d.message.contains("step")) {
            self.diagnostics.push(
                Diagnostic::at(
                    "missing-key",
                    self.origin,
                    self.source,
                    self.source.len()..self.source.len(),
                    "the procedure has no steps",
                )
                .with_hint("add at least one `[[step]]` with id, agency and budget"),
            );
        }
        if raw.len() > STEPS_MAX {
            self.error(
                "too-many",
                raw[STEPS_MAX].0.clone(),
                format!("more than {STEPS_MAX} steps"),
                None,
            );
        }
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for (header, s) in raw {
            let Some(id) = &s.id else {
                self.missing(header.clone(), "this [[step]]", "id", "\"register-birth\"");
                continue;
            };
            let id_text = id.get_ref().clone();
            let what = format!("step `{id_text}`");
            if !is_id(&id_text) {
                self.error(
                    "bad-step-id",
                    id.span(),
                    format!("step id `{id_text}` is not a valid id"),
                    Some("use lower-case letters, digits and `-`, e.g. `register-birth`".into()),
                );
            }
            if let Some(first) = seen.get(&id_text) {
                let first_line = self.source[..first.start.min(self.source.len())]
                    .matches('\n')
                    .count()
                    + 1;
                self.error(
                    "duplicate-step",
                    id.span(),
                    format!("duplicate step id `{id_text}`"),
                    Some(format!("`{id_text}` is first defined on line {first_line}; give each step its own id")),
                );
                continue;
            }
            seen.insert(id_text.clone(), id.span());

            if s.agency.is_none() {
                self.missing(header.clone(), &what, "agency", "\"tu-phap\"");
            }
            if s.budget.is_none() {
                self.missing(header.clone(), &what, "budget", "\"1wd\"");
            }
            let agency = s.agency.as_ref().and_then(|a| self.agency(a));
            let budget = s.budget.as_ref().and_then(|b| self.duration(b, "budget"));
            let when = s.when.as_ref().and_then(|w| self.condition(w, attributes));
            let when_failed = s.when.is_some() && when.is_none();
            let on_reject = match &s.on_reject {
                None => OnReject::Refuse,
                Some(r) if r.get_ref() == "refuse" => OnReject::Refuse,
                Some(r) => OnReject::Rework(StepId(r.get_ref().clone())),
            };
            let payment = s.payment.as_ref().is_some_and(|b| *b.get_ref());
            let rework_only = s.rework_only.as_ref().is_some_and(|b| *b.get_ref());
            let supplement = s.supplement.as_ref().is_none_or(|b| *b.get_ref());
            if let Some(p) = s.payment.as_ref().filter(|_| payment) {
                // The waiting time of a payment step is the citizen's: it may be excluded from
                // the deadlines as a whole, so it must not also be a supplement pause, and it
                // must be part of the normal flow (a rework-only step runs only on rework).
                if rework_only {
                    self.error(
                        "bad-payment",
                        p.span(),
                        format!("step `{id_text}` cannot be both a payment step and rework-only"),
                        Some("the payment is part of the normal flow: remove `rework_only`, or `payment`".into()),
                    );
                }
                if supplement {
                    let span = s.supplement.as_ref().map_or(p.span(), Spanned::span);
                    self.error(
                        "bad-payment",
                        span,
                        format!("payment step `{id_text}` may not ask for a supplement"),
                        Some("while it is open the dossier waits for the citizen's payment, not for documents; write `supplement = false`".into()),
                    );
                }
            }
            let (Some(agency), Some(budget)) = (agency, budget) else {
                continue;
            };
            if when_failed {
                continue;
            }
            let after: Vec<StepId> = s
                .after
                .as_ref()
                .map(|a| {
                    a.get_ref()
                        .iter()
                        .map(|x| StepId(x.get_ref().clone()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Checked {
                step: Step {
                    id: StepId(id_text.clone()),
                    name: s
                        .name
                        .as_ref()
                        .map_or_else(|| id_text.clone(), |n| n.get_ref().clone()),
                    agency,
                    after,
                    when,
                    budget,
                    supplement,
                    on_reject,
                    rework_only,
                    payment,
                },
                header: header.clone(),
                after_spans: s
                    .after
                    .as_ref()
                    .map(|a| a.get_ref().iter().map(Spanned::span).collect())
                    .unwrap_or_default(),
                after_span: s.after.as_ref().map(Spanned::span),
                on_reject_span: s.on_reject.as_ref().map(Spanned::span),
                when_span: s.when.as_ref().map(Spanned::span),
            });
        }
        // `after` and `on_reject` may name steps that failed their own checks: those are
        // reported already, so the graph checks must know every id that was written.
        (out, seen.into_keys().collect())
    }

    fn condition(
        &mut self,
        when: &Spanned<String>,
        attributes: &BTreeMap<String, AttributeSpec>,
    ) -> Option<Condition> {
        match Condition::compile(when.get_ref(), attributes) {
            Ok(c) => Some(c),
            Err(issues) => {
                let span = when.span();
                let text = when.get_ref();
                let written = self.source.get(span.clone()).unwrap_or("");
                // Map offsets inside the condition to the file when the string is written
                // verbatim between quotes (no escapes); otherwise point at the whole string.
                let verbatim = written.len() == text.len() + 2
                    && (written.starts_with('"') || written.starts_with('\''))
                    && &written[1..written.len() - 1] == text.as_str();
                for issue in issues {
                    let file_span = if verbatim {
                        let byte =
                            |ci: usize| text.char_indices().nth(ci).map_or(text.len(), |(b, _)| b);
                        span.start + 1 + byte(issue.span.start)
                            ..span.start + 1 + byte(issue.span.end)
                    } else {
                        span.clone()
                    };
                    let file_span = if file_span.start == file_span.end {
                        file_span.start..file_span.start + 1
                    } else {
                        file_span
                    };
                    self.error(issue.code, file_span, issue.message, issue.hint);
                }
                None
            }
        }
    }

    /// Graph checks and the topological order. `None` when the graph is invalid.
    fn graph(
        &mut self,
        checked: Vec<Checked>,
        all_written: &BTreeSet<String>,
    ) -> Option<Vec<Step>> {
        let ids: Vec<&str> = checked.iter().map(|c| c.step.id.0.as_str()).collect();
        let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut ok = true;
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); checked.len()];
        for (i, c) in checked.iter().enumerate() {
            let mut listed = BTreeSet::new();
            for (a, span) in c.step.after.iter().zip(&c.after_spans) {
                if !listed.insert(a.0.as_str()) {
                    self.error(
                        "duplicate-after",
                        span.clone(),
                        format!("`{a}` is listed twice in `after`"),
                        Some("list each step once".into()),
                    );
                    ok = false;
                    continue;
                }
                if a.0 == c.step.id.0 {
                    self.error(
                        "cycle",
                        span.clone(),
                        format!("step `{a}` waits for itself"),
                        Some("remove it from its own `after`".into()),
                    );
                    ok = false;
                    continue;
                }
                match index.get(a.0.as_str()) {
                    Some(j) => deps[i].push(*j),
                    None if all_written.contains(&a.0) => ok = false, // reported at that step
                    None => {
                        let hint = match did_you_mean(&a.0, all_written.iter().map(String::as_str))
                        {
                            Some(best) => format!("did you mean `{best}`?"),
                            None => format!(
                                "steps are: {}",
                                all_written.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        };
                        self.error(
                            "dangling-after",
                            span.clone(),
                            format!("`after` names `{a}`, which is not a step of this procedure"),
                            Some(hint),
                        );
                        ok = false;
                    }
                }
            }
        }

        // Kahn's algorithm, always taking the earliest ready step in file order, so that a file
        // already in order keeps its order.
        let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut order: Vec<usize> = Vec::with_capacity(checked.len());
        let mut ready: BTreeSet<usize> = (0..checked.len()).filter(|i| indegree[*i] == 0).collect();
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for (j, d) in deps.iter().enumerate() {
                if d.contains(&i) {
                    indegree[j] -= d.iter().filter(|x| **x == i).count();
                    if indegree[j] == 0 {
                        ready.insert(j);
                    }
                }
            }
        }
        if order.len() < checked.len() {
            ok = false;
            let mut reported: BTreeSet<usize> = BTreeSet::new();
            let left: BTreeSet<usize> = (0..checked.len()).filter(|i| !order.contains(i)).collect();
            for start in left.iter().copied() {
                if reported.contains(&start) {
                    continue;
                }
                if let Some(cycle) = find_cycle(start, &deps, &left) {
                    if cycle.iter().any(|i| reported.contains(i)) {
                        continue;
                    }
                    reported.extend(cycle.iter().copied());
                    let first = cycle[0];
                    let names: Vec<String> = cycle
                        .iter()
                        .chain(std::iter::once(&first))
                        .map(|i| format!("`{}`", ids[*i]))
                        .collect();
                    let chain = names.join(", which waits for ");
                    let span = checked[first]
                        .after_span
                        .clone()
                        .unwrap_or(checked[first].header.clone());
                    self.error(
                        "cycle",
                        span,
                        format!("steps wait for each other in a cycle: {chain}"),
                        Some("a step can only wait for steps that come before it; use `on_reject` to send a dossier back".into()),
                    );
                }
            }
        }

        // Ancestors (transitive `after`) of every step, for the rework checks.
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); checked.len()];
        for &i in &order {
            let mut set = BTreeSet::new();
            for &d in &deps[i] {
                set.insert(d);
                set.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = set;
        }

        for (i, c) in checked.iter().enumerate() {
            let s = &c.step;
            // Rework-only steps: no `after`, nobody waits for them, somebody sends work there.
            if s.rework_only {
                if let Some(span) = &c.after_span
                    && !s.after.is_empty()
                {
                    self.error(
                        "rework-only-after",
                        span.clone(),
                        format!("rework-only step `{}` cannot have `after`", s.id),
                        Some("it opens when a later step's `on_reject` names it, not after other steps; remove `after`".into()),
                    );
                    ok = false;
                }
                let named = checked
                    .iter()
                    .any(|o| matches!(&o.step.on_reject, OnReject::Rework(t) if t.0 == s.id.0));
                if !named {
                    self.error("unreachable", c.header.clone(), format!("step `{}` can never run: it is rework-only but no step's `on_reject` names it", s.id), Some(format!("name it in a later step's `on_reject = \"{}\"`, or remove `rework_only`", s.id)));
                    ok = false;
                }
            }
            for (a, span) in s.after.iter().zip(&c.after_spans) {
                if let Some(j) = index.get(a.0.as_str())
                    && checked[*j].step.rework_only
                {
                    self.error(
                        "never-finishes",
                        span.clone(),
                        format!("step `{}` can never open: it waits for `{a}`, which only runs as a rework target", s.id),
                        Some(format!("remove `{a}` from `after`, or make `{a}` a normal step (remove `rework_only`)")),
                    );
                    ok = false;
                }
            }
            if let (Some(when), Some(span)) = (&s.when, &c.when_span)
                && when.constant() == Some(false)
            {
                self.error(
                    "unreachable",
                    span.clone(),
                    format!(
                        "step `{}` can never run: its condition is always false",
                        s.id
                    ),
                    Some(
                        "write a condition over the dossier's attributes, or remove the step"
                            .into(),
                    ),
                );
                ok = false;
            }
            if let OnReject::Rework(target) = &s.on_reject {
                let span = c.on_reject_span.clone().unwrap_or(c.header.clone());
                match index.get(target.0.as_str()) {
                    Some(j) if checked[*j].step.rework_only => {}
                    Some(j) if ancestors[i].contains(j) => {}
                    // In a cycle, "earlier" has no meaning; the cycle is reported already.
                    Some(_) if !order.contains(&i) => ok = false,
                    _ if s.rework_only => {
                        self.error("bad-on-reject", span, format!("rework-only step `{}` can only refuse", s.id), Some("write `on_reject = \"refuse\"` (a rework-only step has no earlier step on its path)".into()));
                        ok = false;
                    }
                    Some(_) => {
                        let earlier: Vec<&str> = ancestors[i].iter().map(|j| ids[*j]).collect();
                        let hint = if earlier.is_empty() {
                            "this step has no earlier step: write `on_reject = \"refuse\"`"
                                .to_string()
                        } else {
                            format!(
                                "`on_reject` is `refuse` or one of the steps before `{}`: {}",
                                s.id,
                                earlier.join(", ")
                            )
                        };
                        self.error("bad-on-reject", span, format!("`on_reject` of `{}` names `{target}`, which is not an earlier step on its path", s.id), Some(hint));
                        ok = false;
                    }
                    None => {
                        let mut hint =
                            "`on_reject` is `refuse` or the id of an earlier step".to_string();
                        if let Some(best) =
                            did_you_mean(&target.0, ids.iter().copied().chain(["refuse"]))
                        {
                            hint = format!("did you mean `{best}`? {hint}");
                        }
                        self.error(
                            "bad-on-reject",
                            span,
                            format!(
                                "`on_reject` of `{}` names `{target}`, which is not a step",
                                s.id
                            ),
                            Some(hint),
                        );
                        ok = false;
                    }
                }
            }
        }

        if !ok || order.len() < checked.len() {
            return None;
        }
        let mut slots: Vec<Option<Step>> = checked.into_iter().map(|c| Some(c.step)).collect();
        Some(order.iter().filter_map(|i| slots[*i].take()).collect())
    }
}

/// A cycle through `start` among `left` (steps not ordered by Kahn's algorithm), as indices.
fn find_cycle(start: usize, deps: &[Vec<usize>], left: &BTreeSet<usize>) -> Option<Vec<usize>> {
    // Every step left over waits for at least one other left-over step, so walking `after`
    // edges inside `left` must revisit a step; the loop from that step is a cycle.
    let mut path: Vec<usize> = vec![start];
    let mut at = start;
    for _ in 0..=deps.len() {
        let next = deps[at].iter().copied().find(|d| left.contains(d))?;
        if let Some(pos) = path.iter().position(|p| *p == next) {
            return Some(path[pos..].to_vec());
        }
        path.push(next);
        at = next;
    }
    None
}

/// `HH:MM` on a 24-hour clock.
fn parse_cutoff(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn agencies() -> BTreeMap<String, Agency> {
        ["ubnd-xa", "tu-phap", "cong-an", "bhxh", "thue", "vpdk-dat"]
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    Agency {
                        code: AgencyCode(c.to_string()),
                        name_vi: c.to_string(),
                        name_en: c.to_string(),
                        code_prefix: c.to_uppercase(),
                    },
                )
            })
            .collect()
    }

    const BIRTH: &str = r#"
[procedure]
code = "2.000986"
name = "Khai sinh"
version = 1
limit = "3wd"
cutoff = "15:00"
calendar = "vn"
receiving_agency = "ubnd-xa"

[attributes]
"child.age_months" = { type = "integer", required = true }

[[step]]
id = "return-result"
agency = "ubnd-xa"
budget = "4wh"
after = ["register-residence", "issue-health-card"]

[[step]]
id = "register-birth"
agency = "tu-phap"
budget = "1wd"

[[step]]
id = "register-residence"
agency = "cong-an"
after = ["register-birth"]
budget = "1wd"
on_reject = "register-birth"

[[step]]
id = "issue-health-card"
agency = "bhxh"
after = ["register-birth"]
when = "child.age_months < 72"
budget = "1wd"
"#;

    fn parse(src: &str) -> Result<Workflow, Vec<Diagnostic>> {
        Workflow::parse(src, "t.toml", &agencies(), &["vn"])
    }

    fn codes(src: &str) -> Vec<&'static str> {
        match parse(src) {
            Ok(_) => Vec::new(),
            Err(ds) => ds.iter().map(|d| d.code).collect(),
        }
    }

    #[test]
    fn valid_file_becomes_an_ordered_workflow() {
        // Given a valid file whose steps are written out of order
        // When it is parsed
        let wf = parse(BIRTH).expect("valid");
        // Then steps come in a topological order, defaults are filled, and the hash is the source's
        let ids: Vec<&str> = wf.steps.iter().map(|s| s.id.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "register-birth",
                "register-residence",
                "issue-health-card",
                "return-result"
            ]
        );
        assert_eq!(wf.supplement_clock, SupplementClock::Pause);
        assert!(!wf.payment_counts);
        assert_eq!(wf.cutoff, NaiveTime::from_hms_opt(15, 0, 0));
        assert_eq!(wf.hash, content_hash(BIRTH));
        assert_eq!(wf.hash.len(), 64);
        assert_eq!(
            wf.step("register-residence").map(|s| s.on_reject.clone()),
            Some(OnReject::Rework(StepId("register-birth".into())))
        );
        assert_eq!(wf.initial_steps().count(), 1);
    }

    #[test]
    fn collects_every_error_of_a_file() {
        // Given a file with three unrelated mistakes
        let src = BIRTH
            .replace("agency = \"cong-an\"", "agency = \"cong-ann\"")
            .replace("budget = \"4wh\"", "budget = \"4w\"")
            .replace("cutoff = \"15:00\"", "cutoff = \"25:00\"");
        // Then all three are reported
        assert_eq!(
            codes(&src),
            ["bad-cutoff", "bad-duration", "unknown-agency"]
        );
    }

    #[test]
    fn on_reject_must_name_an_earlier_step_on_the_same_path() {
        let src = BIRTH.replace(
            "on_reject = \"register-birth\"",
            "on_reject = \"issue-health-card\"",
        );
        assert_eq!(codes(&src), ["bad-on-reject"]);
    }

    #[test]
    fn cycles_and_dangling_after_are_found() {
        let src = BIRTH.replace("budget = \"1wd\"\n\n[[step]]\nid = \"register-residence\"", "budget = \"1wd\"\nafter = [\"return-result\"]\n\n[[step]]\nid = \"register-residence\"");
        assert_eq!(codes(&src), ["cycle"]);
        let src = BIRTH.replace(
            "after = [\"register-birth\"]\nwhen",
            "after = [\"register-brith\"]\nwhen",
        );
        assert_eq!(codes(&src), ["dangling-after"]);
    }

    #[test]
    fn rework_only_steps_are_checked() {
        let src = format!(
            "{BIRTH}\n[[step]]\nid = \"fix\"\nagency = \"tu-phap\"\nbudget = \"1wd\"\nrework_only = true\n"
        );
        assert_eq!(codes(&src), ["unreachable"]);
        let src = src.replace("on_reject = \"register-birth\"", "on_reject = \"fix\"");
        let wf = parse(&src).expect("valid");
        assert_eq!(wf.initial_steps().count(), 1);
        assert_eq!(wf.rework_only_steps().count(), 1);
        let src = src.replace(
            "after = [\"register-residence\", \"issue-health-card\"]",
            "after = [\"register-residence\", \"issue-health-card\", \"fix\"]",
        );
        assert_eq!(codes(&src), ["never-finishes"]);
    }

    #[test]
    fn payment_steps_are_normal_steps_that_ask_for_no_supplement() {
        // Given a payment step written as it should be
        let src = BIRTH.replace(
            "budget = \"4wh\"\n",
            "budget = \"4wh\"\npayment = true\nsupplement = false\n",
        );
        let wf = parse(&src).expect("valid");
        // Then it is marked, and no other step is
        let payment: Vec<&str> = wf.payment_steps().map(|s| s.id.0.as_str()).collect();
        assert_eq!(payment, ["return-result"]);
        assert!(!parse(BIRTH).expect("valid").steps.iter().any(|s| s.payment));
        // A payment step that may ask for a supplement (the default) is refused
        let src = BIRTH.replace("budget = \"4wh\"\n", "budget = \"4wh\"\npayment = true\n");
        assert_eq!(codes(&src), ["bad-payment"]);
        // And so is a rework-only payment step
        let src = format!(
            "{BIRTH}\n[[step]]\nid = \"pay\"\nagency = \"tu-phap\"\nbudget = \"1wd\"\nrework_only = true\npayment = true\nsupplement = false\n"
        )
        .replace("on_reject = \"register-birth\"", "on_reject = \"pay\"");
        assert_eq!(codes(&src), ["bad-payment"]);
    }

    #[test]
    fn cutoff_parsing_is_strict() {
        assert_eq!(parse_cutoff("15:00"), NaiveTime::from_hms_opt(15, 0, 0));
        assert_eq!(parse_cutoff("7:30"), None);
        assert_eq!(parse_cutoff("24:00"), None);
        assert_eq!(parse_cutoff("15:60"), None);
    }
}
