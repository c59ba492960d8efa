//! Step conditions (`when = "..."`): CEL expressions over a dossier's declared attributes.
//!
//! A condition is parsed with the `cel` crate and then **type-checked statically** against the
//! procedure's `[attributes]`, so that a mistake is found when the workflow file is loaded, not when
//! a citizen's dossier reaches the step. The rules (also in the crate docs):
//!
//! - Attributes are declared with dotted names (`child.age_months`) and read as nested maps
//!   (`child.age_months`). Each name segment is a CEL identifier (`[A-Za-z_][A-Za-z0-9_]*`).
//! - Types: `integer` is CEL `int`, `text` is `string`, `boolean` is `bool`, `date` is a CEL
//!   `timestamp` at 00:00 UTC of that day. Date constants are written `date('2025-07-01')`, a helper
//!   that exists only in our dialect: it is checked at load time and rewritten to
//!   `timestamp('2025-07-01T00:00:00Z')`, so dates compare as dates (`<`, `<=`, `==`, ...).
//! - Allowed: literals of integer, text and boolean; `&&`, `||`, `!`, `? :`; `==`, `!=` on two
//!   values of one type; `<`, `<=`, `>`, `>=` on integers, texts or dates; `+` on integers or texts;
//!   `-`, `*`, `/`, `%` and unary `-` on integers; `x in [a, b]` with a list literal of `x`'s type;
//!   `has(a.b)`; `size(text)`, `text.startsWith(text)`, `text.endsWith(text)`,
//!   `text.contains(text)`, `text.matches(regex)`; `date('YYYY-MM-DD')`. Anything else (decimal
//!   numbers, maps, list macros, other functions) is rejected with a hint.
//! - The whole condition must be boolean.
//! - **Optional attributes** (`required = false`) may be absent from a dossier. Reading one is
//!   allowed only where `has(...)` has proved it present, checked statically: on the right of
//!   `has(a.b) && ...`, on the right of `!has(a.b) || ...`, and in the first branch of
//!   `has(a.b) ? ... : ...`. So evaluation never meets a missing optional attribute. A required
//!   attribute missing at evaluation time is an [`Error::Missing`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use cel::common::types::CelString;
use cel::{Context, Value};
use chrono::{NaiveDate, NaiveTime};

use crate::definition::{AttrType, AttrValue, AttributeSpec};
use crate::diagnostic::did_you_mean;

/// CEL's standard library (functions, macros, types), built once and shared by every
/// evaluation.
static STDLIB: std::sync::LazyLock<std::sync::Arc<cel::Env>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(cel::Env::stdlib()));

/// Longest condition accepted, in bytes: a condition is a routing rule, not a program.
pub const CONDITION_BYTES_MAX: usize = 2_000;

/// Deepest nesting of brackets (`(`, `[`, `{`) accepted in a condition, counted over the whole
/// text (inside string literals too, so that no quoting trick can hide one). The CEL parser, our
/// checker and the interpreter all recurse once per level, with large frames in the generated
/// parser: the fuzz target `condition` overflowed the stack with 56 levels in 64 bytes
/// (`[[[[...((((...[[[a)`). Real conditions nest two or three levels.
pub const CONDITION_NESTING_MAX: usize = 10;

/// Why a condition could not be evaluated against a dossier's attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A required attribute that the condition reads is not on the dossier.
    #[error("required attribute `{0}` is missing from the dossier")]
    Missing(String),
    /// A value has another type than its declaration.
    #[error("attribute `{name}` is declared {declared} but the dossier holds {found}")]
    Type {
        /// The attribute.
        name: String,
        /// Declared type.
        declared: &'static str,
        /// Type of the value given.
        found: &'static str,
    },
    /// The CEL interpreter failed (e.g. integer overflow, division by zero).
    #[error("condition `{source_text}` failed: {message}")]
    Eval {
        /// The condition's text.
        source_text: String,
        /// The interpreter's message.
        message: String,
    },
    /// The result was not a boolean (cannot happen for a checked condition; kept as a guard).
    #[error("condition `{0}` did not produce true or false")]
    NotBoolean(String),
}

/// One problem in a condition's text, found when it is compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// `condition-syntax` or `condition-type`.
    pub code: &'static str,
    /// Character offsets inside the condition text.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// A parsed, type-checked condition, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Condition {
    /// The text as written in the workflow file.
    source: String,
    /// The checked expression, with `date('...')` rewritten to `timestamp('...')`.
    expr: IdedExpr,
    /// Declared attributes (name -> type) of the procedure: values are checked against these.
    declared: BTreeMap<String, AttrType>,
    /// Required attributes the condition reads: absent ones are an error, not `false`.
    required_reads: BTreeSet<String>,
    /// Every namespace prefix (`child` for `child.age_months`): always bound, even when empty,
    /// so that `has(child.x)` works when no `child.*` attribute is present.
    namespaces: BTreeSet<String>,
    /// The value when it does not depend on attributes (e.g. `false`), found by folding constants.
    constant: Option<bool>,
}

// Conditions are shared by the engine's threads.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Condition>();
};

impl Condition {
    /// Parses and type-checks `source` against the declared `attributes`.
    pub fn compile(
        source: &str,
        attributes: &BTreeMap<String, AttributeSpec>,
    ) -> Result<Condition, Vec<Issue>> {
        if source.len() > CONDITION_BYTES_MAX {
            return Err(vec![Issue {
                code: "condition-syntax",
                span: 0..source.chars().count(),
                message: format!("condition is longer than {CONDITION_BYTES_MAX} bytes"),
                hint: Some("split the rule over several steps or attributes".into()),
            }]);
        }
        if let Some(at) = too_deep(source) {
            return Err(vec![Issue {
                code: "condition-syntax",
                span: at..at + 1,
                message: format!(
                    "condition nests brackets more than {CONDITION_NESTING_MAX} levels deep"
                ),
                hint: Some(
                    "write the rule flatter, e.g. `a && b && c` instead of `(a && (b && (c)))`"
                        .into(),
                ),
            }]);
        }
        let (expr, info) = match cel::parser::Parser::default().parse_with_source_info(source) {
            Ok(parsed) => parsed,
            Err(errors) => return Err(syntax_issues(source, &errors)),
        };
        let mut checker = Checker::new(attributes, &info, source);
        let ty = checker.check(&expr, &BTreeSet::new());
        if !matches!(ty, Ty::Bool | Ty::Error) {
            let span = checker.extent(&expr);
            checker.issue(
                span,
                format!(
                    "a condition must be true or false, but this is {}",
                    ty.name()
                ),
                Some("compare the value, e.g. `child.age_months < 72`".into()),
            );
        }
        if !checker.issues.is_empty() {
            return Err(checker.issues);
        }
        let required_reads = checker
            .reads
            .iter()
            .filter(|r| attributes.get(*r).is_some_and(|a| a.required))
            .cloned()
            .collect();
        let constant = match constant(&expr) {
            Some(Const::Bool(b)) => Some(b),
            _ => None,
        };
        let mut expr = expr;
        rewrite_dates(&mut expr);
        Ok(Condition {
            source: source.to_string(),
            expr,
            declared: attributes.iter().map(|(k, a)| (k.clone(), a.ty)).collect(),
            required_reads,
            namespaces: namespaces(attributes.keys().map(String::as_str)),
            constant,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `Some(value)` when the condition does not depend on any attribute.
    pub fn constant(&self) -> Option<bool> {
        self.constant
    }

    /// Evaluates against a dossier's attributes. Attributes not declared by the procedure are
    /// ignored (no condition can read them).
    pub fn evaluate(&self, attrs: &BTreeMap<String, AttrValue>) -> Result<bool, Error> {
        if let Some(missing) = self.required_reads.iter().find(|r| !attrs.contains_key(*r)) {
            return Err(Error::Missing(missing.clone()));
        }
        let mut root = Node::default();
        for ns in &self.namespaces {
            root.branch(ns.split('.'));
        }
        for (name, value) in attrs {
            let Some(declared) = self.declared.get(name) else {
                continue;
            };
            if *declared != value.attr_type() {
                return Err(Error::Type {
                    name: name.clone(),
                    declared: type_name(*declared),
                    found: type_name(value.attr_type()),
                });
            }
            root.insert(name, to_cel(value));
        }
        // A root context on the shared standard library: `Context::default()` builds that
        // library again on every call, which was most of an evaluation's cost.
        let mut context = Context::Root {
            env: STDLIB.clone(),
            variables: Default::default(),
            functions: Default::default(),
            resolver: None,
        };
        if let Node::Branch(children) = root {
            for (name, node) in children {
                context.add_variable_from_value(name, node.into_value());
            }
        }
        match context.resolve(&self.expr) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(_) => Err(Error::NotBoolean(self.source.clone())),
            Err(e) => Err(Error::Eval {
                source_text: self.source.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// The character offset of the first bracket that opens a level deeper than
/// [`CONDITION_NESTING_MAX`], if any.
fn too_deep(source: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in source.chars().enumerate() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > CONDITION_NESTING_MAX {
                    return Some(i);
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The name of an attribute type as written in workflow files.
pub fn type_name(ty: AttrType) -> &'static str {
    match ty {
        AttrType::Text => "text",
        AttrType::Integer => "integer",
        AttrType::Boolean => "boolean",
        AttrType::Date => "date",
    }
}

/// Every proper prefix of the dotted names: `child.age_months` gives `child`.
pub(crate) fn namespaces<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in names {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('.').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            out.insert(prefix.clone());
        }
    }
    out
}

fn to_cel(value: &AttrValue) -> Value {
    match value {
        AttrValue::Text(s) => Value::from(s.clone()),
        AttrValue::Integer(i) => Value::Int(*i),
        AttrValue::Boolean(b) => Value::Bool(*b),
        AttrValue::Date(d) => Value::Timestamp(date_to_timestamp(*d)),
    }
}

fn date_to_timestamp(d: NaiveDate) -> chrono::DateTime<chrono::FixedOffset> {
    d.and_time(NaiveTime::MIN).and_utc().fixed_offset()
}

/// The nested maps that hold a dossier's attributes for CEL.
#[derive(Debug)]
enum Node {
    Branch(BTreeMap<String, Node>),
    Leaf(Value),
}

impl Default for Node {
    fn default() -> Self {
        Node::Branch(BTreeMap::new())
    }
}

impl Node {
    fn branch<'a>(&mut self, mut path: impl Iterator<Item = &'a str>) {
        if let (Some(seg), Node::Branch(children)) = (path.next(), self) {
            children.entry(seg.to_string()).or_default().branch(path);
        }
    }

    fn insert(&mut self, dotted: &str, value: Value) {
        let mut node = self;
        let parts: Vec<&str> = dotted.split('.').collect();
        let Some((last, init)) = parts.split_last() else {
            return;
        };
        for part in init {
            let Node::Branch(children) = node else {
                return;
            };
            node = children.entry((*part).to_string()).or_default();
        }
        if let Node::Branch(children) = node {
            children.insert((*last).to_string(), Node::Leaf(value));
        }
    }

    fn into_value(self) -> Value {
        match self {
            Node::Leaf(v) => v,
            Node::Branch(children) => {
                let map: HashMap<String, Value> = children
                    .into_iter()
                    .map(|(k, n)| (k, n.into_value()))
                    .collect();
                Value::from(map)
            }
        }
    }
}

fn syntax_issues(source: &str, errors: &cel::ParseErrors) -> Vec<Issue> {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            source
                .chars()
                .enumerate()
                .filter(|(_, c)| *c == '\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let mut issues: Vec<Issue> = Vec::new();
    for e in &errors.errors {
        let line = usize::try_from(e.pos.0).unwrap_or(1).max(1);
        let col = usize::try_from(e.pos.1).unwrap_or(0);
        // Columns from the CEL parser are 1-based.
        let start = (line_starts.get(line - 1).copied().unwrap_or(0) + col.saturating_sub(1))
            .min(source.chars().count());
        let issue = Issue {
            code: "condition-syntax",
            span: start..start + 1,
            message: format!("condition does not parse: {}", e.msg),
            hint: Some("conditions are CEL, e.g. `child.age_months < 72 && has(parent.id)`".into()),
        };
        if !issues.iter().any(|i| i.message == issue.message) {
            issues.push(issue);
        }
    }
    issues
}

/// Static types of condition sub-expressions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Text,
    Bool,
    Date,
    List(Box<Ty>),
    /// A prefix of declared attribute names, e.g. `child`: only useful to select from.
    Namespace(String),
    /// Already reported: stay quiet about what follows from it.
    Error,
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Int => "an integer".into(),
            Ty::Text => "text".into(),
            Ty::Bool => "a boolean".into(),
            Ty::Date => "a date".into(),
            Ty::List(t) => format!("a list of {}", t.name()),
            Ty::Namespace(n) => format!("the attribute group `{n}`"),
            Ty::Error => "invalid".into(),
        }
    }
}

const SUPPORTED: &str = "conditions may use &&, ||, !, ?:, ==, !=, <, <=, >, >=, +, -, *, /, %, \
     `x in [..]`, has(a.b), size(), startsWith(), endsWith(), contains(), matches(), date('YYYY-MM-DD')";

const FUNCTIONS: [&str; 7] = [
    "has",
    "size",
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "date",
];

struct Checker<'a> {
    attributes: &'a BTreeMap<String, AttributeSpec>,
    namespaces: BTreeSet<String>,
    info: &'a SourceInfo,
    source_chars: usize,
    issues: Vec<Issue>,
    reads: BTreeSet<String>,
}

impl<'a> Checker<'a> {
    fn new(
        attributes: &'a BTreeMap<String, AttributeSpec>,
        info: &'a SourceInfo,
        source: &str,
    ) -> Self {
        Checker {
            attributes,
            namespaces: namespaces(attributes.keys().map(String::as_str)),
            info,
            source_chars: source.chars().count(),
            issues: Vec::new(),
            reads: BTreeSet::new(),
        }
    }

    fn issue(&mut self, span: Range<usize>, message: String, hint: Option<String>) {
        self.issues.push(Issue {
            code: "condition-type",
            span,
            message,
            hint,
        });
    }

    /// Character range covered by a sub-expression and all its children.
    fn extent(&self, e: &IdedExpr) -> Range<usize> {
        let mut lo = usize::MAX;
        let mut hi = 0usize;
        self.visit_offsets(e, &mut lo, &mut hi);
        if lo == usize::MAX {
            return 0..self.source_chars;
        }
        lo..(hi + 1).min(self.source_chars).max(lo + 1)
    }

    fn visit_offsets(&self, e: &IdedExpr, lo: &mut usize, hi: &mut usize) {
        if let Some((start, stop)) = self.info.offset_for(e.id) {
            *lo = (*lo).min(start as usize);
            *hi = (*hi).max(stop as usize);
        }
        match &e.expr {
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    self.visit_offsets(t, lo, hi);
                }
                for a in &c.args {
                    self.visit_offsets(a, lo, hi);
                }
            }
            Expr::Select(s) => {
                // The parser records the dot of `a.field`: the field's name follows it.
                if let Some((dot, _)) = self.info.offset_for(e.id) {
                    *hi = (*hi).max(dot as usize + s.field.chars().count());
                }
                self.visit_offsets(&s.operand, lo, hi);
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.visit_offsets(x, lo, hi);
                }
            }
            Expr::Comprehension(c) => self.visit_offsets(&c.iter_range, lo, hi),
            _ => {}
        }
    }

    fn known_names(&self) -> Vec<&str> {
        self.attributes
            .keys()
            .map(String::as_str)
            .chain(self.namespaces.iter().map(String::as_str))
            .collect()
    }

    fn unknown(&mut self, e: &IdedExpr, name: &str) -> Ty {
        let known = self.known_names();
        let hint = match did_you_mean(name, known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None if self.attributes.is_empty() => {
                "declare it under [attributes], e.g. `\"child.age_months\" = { type = \"integer\", required = true }`".into()
            }
            None => format!(
                "declared attributes: {}",
                self.attributes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let span = self.extent(e);
        self.issue(span, format!("unknown attribute `{name}`"), Some(hint));
        Ty::Error
    }

    /// The type of a name that resolves to a declared attribute or group.
    fn name(&mut self, e: &IdedExpr, name: String, guards: &BTreeSet<String>) -> Ty {
        if let Some(spec) = self.attributes.get(&name) {
            if !spec.required && !guards.contains(&name) {
                let span = self.extent(e);
                self.issue(
                    span,
                    format!(
                        "optional attribute `{name}` is read without checking that it is present"
                    ),
                    Some(format!(
                        "write `has({name}) && ...`, or declare it with `required = true`"
                    )),
                );
            }
            self.reads.insert(name);
            return match spec.ty {
                AttrType::Integer => Ty::Int,
                AttrType::Text => Ty::Text,
                AttrType::Boolean => Ty::Bool,
                AttrType::Date => Ty::Date,
            };
        }
        if self.namespaces.contains(&name) {
            return Ty::Namespace(name);
        }
        self.unknown(e, &name)
    }

    fn check(&mut self, e: &IdedExpr, guards: &BTreeSet<String>) -> Ty {
        match &e.expr {
            Expr::Literal(lit) => match lit {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::String(_) => Ty::Text,
                LiteralValue::Double(_) | LiteralValue::UInt(_) => {
                    let span = self.extent(e);
                    self.issue(
                        span,
                        "only whole numbers (integers) are supported in conditions".into(),
                        Some(
                            "attributes are integers: write e.g. `72`, not `72.0` or `72u`".into(),
                        ),
                    );
                    Ty::Error
                }
                LiteralValue::Null | LiteralValue::Bytes(_) => {
                    let span = self.extent(e);
                    self.issue(
                        span,
                        "`null` and bytes are not supported in conditions".into(),
                        Some(
                            "to test whether an optional attribute is there, use `has(a.b)`".into(),
                        ),
                    );
                    Ty::Error
                }
            },
            Expr::Ident(name) => self.name(e, name.clone(), guards),
            Expr::Select(sel) => {
                let operand = self.check(&sel.operand, guards);
                match operand {
                    Ty::Error => Ty::Error,
                    Ty::Namespace(prefix) => {
                        let full = format!("{prefix}.{}", sel.field);
                        if sel.test {
                            if self.attributes.contains_key(&full) {
                                Ty::Bool
                            } else if self.namespaces.contains(&full) {
                                let span = self.extent(e);
                                self.issue(
                                    span,
                                    format!("`has({full})` tests a group, not an attribute"),
                                    Some("test one attribute, e.g. `has(child.age_months)`".into()),
                                );
                                Ty::Error
                            } else {
                                self.unknown(e, &full)
                            }
                        } else {
                            self.name(e, full, guards)
                        }
                    }
                    other => {
                        let span = self.extent(e);
                        self.issue(
                            span,
                            format!(
                                "`.{}` selects from {}, which has no fields",
                                sel.field,
                                other.name()
                            ),
                            Some(
                                "only attribute groups have fields, e.g. `child.age_months`".into(),
                            ),
                        );
                        Ty::Error
                    }
                }
            }
            Expr::Call(call) => self.call(e, call, guards),
            Expr::List(list) => {
                let mut elem: Option<Ty> = None;
                for x in &list.elements {
                    let t = self.check(x, guards);
                    match (&elem, t) {
                        (_, Ty::Error) => return Ty::Error,
                        (None, t) => elem = Some(t),
                        (Some(prev), t) if *prev != t => {
                            let span = self.extent(x);
                            self.issue(
                                span,
                                format!("a list mixes {} and {}", prev.name(), t.name()),
                                Some("write every element with the same type".into()),
                            );
                            return Ty::Error;
                        }
                        _ => {}
                    }
                }
                match elem {
                    Some(t) => Ty::List(Box::new(t)),
                    None => {
                        let span = self.extent(e);
                        self.issue(
                            span,
                            "an empty list is always false with `in`".into(),
                            Some("list the values, e.g. `x in ['a', 'b']`".into()),
                        );
                        Ty::Error
                    }
                }
            }
            Expr::Map(_) | Expr::Struct(_) => {
                let span = self.extent(e);
                self.issue(
                    span,
                    "maps and messages are not supported in conditions".into(),
                    Some(SUPPORTED.into()),
                );
                Ty::Error
            }
            Expr::Comprehension(_) => {
                let span = self.extent(e);
                self.issue(
                    span,
                    "list macros (all, exists, exists_one, map, filter) are not supported in conditions".into(),
                    Some(SUPPORTED.into()),
                );
                Ty::Error
            }
            Expr::Unspecified => Ty::Error,
        }
    }

    fn expect(&mut self, e: &IdedExpr, got: Ty, want: &Ty, role: &str) -> bool {
        if got == Ty::Error {
            return false;
        }
        if got != *want {
            let span = self.extent(e);
            self.issue(
                span,
                format!("{role} must be {}, but this is {}", want.name(), got.name()),
                None,
            );
            return false;
        }
        true
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr, guards: &BTreeSet<String>) -> Ty {
        let f = call.func_name.as_str();
        let args = &call.args;
        match (f, call.target.as_deref(), args.as_slice()) {
            ("_&&_" | "_||_", None, [a, b]) => {
                let ta = self.check(a, guards);
                let mut inner = guards.clone();
                inner.extend(facts(a, f == "_&&_"));
                let tb = self.check(b, &inner);
                let op = if f == "_&&_" { "`&&`" } else { "`||`" };
                let ok_a = self.expect(a, ta, &Ty::Bool, &format!("each side of {op}"));
                let ok_b = self.expect(b, tb, &Ty::Bool, &format!("each side of {op}"));
                if ok_a && ok_b { Ty::Bool } else { Ty::Error }
            }
            ("!_", None, [a]) => {
                let t = self.check(a, guards);
                if self.expect(a, t, &Ty::Bool, "the operand of `!`") {
                    Ty::Bool
                } else {
                    Ty::Error
                }
            }
            ("_?_:_", None, [c, t, f_]) => {
                let tc = self.check(c, guards);
                let mut yes = guards.clone();
                yes.extend(facts(c, true));
                let mut no = guards.clone();
                no.extend(facts(c, false));
                let tt = self.check(t, &yes);
                let tf = self.check(f_, &no);
                if !self.expect(c, tc, &Ty::Bool, "the condition of `? :`") {
                    return Ty::Error;
                }
                match (tt, tf) {
                    (Ty::Error, _) | (_, Ty::Error) => Ty::Error,
                    (x, y) if x == y => x,
                    (x, y) => {
                        let span = self.extent(e);
                        self.issue(
                            span,
                            format!(
                                "the branches of `? :` differ: {} and {}",
                                x.name(),
                                y.name()
                            ),
                            Some("both branches must have the same type".into()),
                        );
                        Ty::Error
                    }
                }
            }
            ("_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_", None, [a, b]) => {
                let ta = self.check(a, guards);
                let tb = self.check(b, guards);
                let op = operator_text(f);
                if ta == Ty::Error || tb == Ty::Error {
                    return Ty::Error;
                }
                let ordered = !matches!(f, "_==_" | "_!=_");
                let comparable = match &ta {
                    Ty::Int | Ty::Text | Ty::Date => true,
                    Ty::Bool => !ordered,
                    _ => false,
                };
                if ta != tb {
                    let span = self.extent(e);
                    self.issue(
                        span,
                        format!("`{op}` compares {} with {}", ta.name(), tb.name()),
                        Some(comparison_hint(&ta, &tb)),
                    );
                    return Ty::Error;
                }
                if !comparable {
                    let span = self.extent(e);
                    self.issue(
                        span,
                        format!("`{op}` cannot compare {}", ta.name()),
                        Some(if ordered {
                            "`<`, `<=`, `>`, `>=` work on integers, texts and dates".into()
                        } else {
                            "`==` and `!=` work on integers, texts, booleans and dates".into()
                        }),
                    );
                    return Ty::Error;
                }
                Ty::Bool
            }
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", None, [a, b]) => {
                let ta = self.check(a, guards);
                let tb = self.check(b, guards);
                if ta == Ty::Error || tb == Ty::Error {
                    return Ty::Error;
                }
                if ta == Ty::Int && tb == Ty::Int {
                    return Ty::Int;
                }
                if f == "_+_" && ta == Ty::Text && tb == Ty::Text {
                    return Ty::Text;
                }
                let span = self.extent(e);
                self.issue(
                    span,
                    format!(
                        "`{}` cannot combine {} and {}",
                        operator_text(f),
                        ta.name(),
                        tb.name()
                    ),
                    Some("arithmetic works on integers (and `+` joins two texts)".into()),
                );
                Ty::Error
            }
            ("-_", None, [a]) => {
                let t = self.check(a, guards);
                if self.expect(a, t, &Ty::Int, "the operand of unary `-`") {
                    Ty::Int
                } else {
                    Ty::Error
                }
            }
            ("@in", None, [a, b]) => {
                let ta = self.check(a, guards);
                let tb = self.check(b, guards);
                match (ta, tb) {
                    (Ty::Error, _) | (_, Ty::Error) => Ty::Error,
                    (x, Ty::List(elem)) if x == *elem => Ty::Bool,
                    (x, other) => {
                        let span = self.extent(e);
                        self.issue(
                            span,
                            format!("`in` looks for {} in {}", x.name(), other.name()),
                            Some(
                                "write a list of values of the same type, e.g. `x in ['a', 'b']`"
                                    .into(),
                            ),
                        );
                        Ty::Error
                    }
                }
            }
            ("size", None, [a]) | ("size", Some(a), []) => {
                let t = self.check(a, guards);
                if self.expect(a, t, &Ty::Text, "the argument of `size`") {
                    Ty::Int
                } else {
                    Ty::Error
                }
            }
            ("startsWith" | "endsWith" | "contains" | "matches", Some(target), [arg]) => {
                let tt = self.check(target, guards);
                let ta = self.check(arg, guards);
                let ok_t = self.expect(target, tt, &Ty::Text, &format!("the receiver of `{f}`"));
                let ok_a = self.expect(arg, ta, &Ty::Text, &format!("the argument of `{f}`"));
                if ok_t && ok_a { Ty::Bool } else { Ty::Error }
            }
            ("date", None, [arg]) => {
                let text = match &arg.expr {
                    Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
                    _ => None,
                };
                match text.map(|t| (NaiveDate::parse_from_str(&t, "%Y-%m-%d"), t)) {
                    Some((Ok(_), _)) => Ty::Date,
                    Some((Err(_), t)) => {
                        let span = self.extent(arg);
                        self.issue(
                            span,
                            format!("`{t}` is not a date"),
                            Some(
                                "write the date as `date('YYYY-MM-DD')`, e.g. `date('2025-07-01')`"
                                    .into(),
                            ),
                        );
                        Ty::Error
                    }
                    None => {
                        let span = self.extent(arg);
                        self.issue(
                            span,
                            "`date(...)` takes a written date".into(),
                            Some(
                                "write the date as `date('YYYY-MM-DD')`, e.g. `date('2025-07-01')`"
                                    .into(),
                            ),
                        );
                        Ty::Error
                    }
                }
            }
            _ => {
                let span = self.extent(e);
                let shown = if f.starts_with('_') || f.starts_with('@') || f.ends_with('_') {
                    operator_text(f).to_string()
                } else {
                    f.to_string()
                };
                let known = FUNCTIONS.contains(&f);
                let message = if known {
                    format!("`{shown}` is called the wrong way here")
                } else {
                    format!("unsupported function `{shown}`")
                };
                let hint = match did_you_mean(f, FUNCTIONS) {
                    Some(best) if !known => format!("did you mean `{best}`? {SUPPORTED}"),
                    _ => SUPPORTED.to_string(),
                };
                self.issue(span, message, Some(hint));
                Ty::Error
            }
        }
    }
}

fn comparison_hint(a: &Ty, b: &Ty) -> String {
    match (a, b) {
        (Ty::Int, Ty::Text) | (Ty::Text, Ty::Int) => {
            "write numbers without quotes, e.g. `child.age_months < 72`".into()
        }
        (Ty::Date, Ty::Text) | (Ty::Text, Ty::Date) => {
            "write a date constant as `date('2025-07-01')`".into()
        }
        _ => "both sides must have the same type".into(),
    }
}

fn operator_text(f: &str) -> &str {
    match f {
        "_==_" => "==",
        "_!=_" => "!=",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        "_+_" => "+",
        "_-_" => "-",
        "_*_" => "*",
        "_/_" => "/",
        "_%_" => "%",
        "-_" => "-",
        "!_" => "!",
        "_&&_" => "&&",
        "_||_" => "||",
        "@in" => "in",
        "_[_]" => "[]",
        "_?_:_" => "? :",
        other => other,
    }
}

/// Attributes proved present when `e` evaluates to `positive`.
fn facts(e: &IdedExpr, positive: bool) -> BTreeSet<String> {
    match &e.expr {
        Expr::Select(sel) if sel.test && positive => dotted(&sel.operand)
            .map(|p| BTreeSet::from([format!("{p}.{}", sel.field)]))
            .unwrap_or_default(),
        Expr::Call(c) => match (c.func_name.as_str(), c.args.as_slice()) {
            ("!_", [a]) => facts(a, !positive),
            ("_&&_", [a, b]) if positive => {
                let mut s = facts(a, true);
                s.extend(facts(b, true));
                s
            }
            ("_||_", [a, b]) if !positive => {
                let mut s = facts(a, false);
                s.extend(facts(b, false));
                s
            }
            _ => BTreeSet::new(),
        },
        _ => BTreeSet::new(),
    }
}

/// `a.b.c` for an identifier followed by field selections.
fn dotted(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Ident(n) => Some(n.clone()),
        Expr::Select(s) if !s.test => dotted(&s.operand).map(|p| format!("{p}.{}", s.field)),
        _ => None,
    }
}

/// Values known without any attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Const {
    Bool(bool),
    Int(i64),
    Text(String),
}

/// Folds constants: `Some` when the value does not depend on attributes.
fn constant(e: &IdedExpr) -> Option<Const> {
    match &e.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Const::Bool(**b)),
        Expr::Literal(LiteralValue::Int(i)) => Some(Const::Int(**i)),
        Expr::Literal(LiteralValue::String(s)) => Some(Const::Text(s.inner().to_string())),
        Expr::Call(c) => {
            let args: Vec<Option<Const>> = c.args.iter().map(constant).collect();
            match (c.func_name.as_str(), args.as_slice()) {
                ("!_", [Some(Const::Bool(b))]) => Some(Const::Bool(!b)),
                // `false && x` is false and `true || x` is true whatever x is.
                ("_&&_", [Some(Const::Bool(false)), _] | [_, Some(Const::Bool(false))]) => {
                    Some(Const::Bool(false))
                }
                ("_&&_", [Some(Const::Bool(true)), Some(Const::Bool(true))]) => {
                    Some(Const::Bool(true))
                }
                ("_||_", [Some(Const::Bool(true)), _] | [_, Some(Const::Bool(true))]) => {
                    Some(Const::Bool(true))
                }
                ("_||_", [Some(Const::Bool(false)), Some(Const::Bool(false))]) => {
                    Some(Const::Bool(false))
                }
                ("_==_", [Some(a), Some(b)]) => Some(Const::Bool(a == b)),
                ("_!=_", [Some(a), Some(b)]) => Some(Const::Bool(a != b)),
                (op @ ("_<_" | "_<=_" | "_>_" | "_>=_"), [Some(a), Some(b)]) => {
                    let ord = match (a, b) {
                        (Const::Int(x), Const::Int(y)) => x.cmp(y),
                        (Const::Text(x), Const::Text(y)) => x.cmp(y),
                        _ => return None,
                    };
                    Some(Const::Bool(match op {
                        "_<_" => ord.is_lt(),
                        "_<=_" => ord.is_le(),
                        "_>_" => ord.is_gt(),
                        _ => ord.is_ge(),
                    }))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Rewrites our `date('YYYY-MM-DD')` helper into CEL's `timestamp('YYYY-MM-DDT00:00:00Z')`.
fn rewrite_dates(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(c) => {
            if c.func_name == "date"
                && c.target.is_none()
                && let [arg] = c.args.as_mut_slice()
                && let Expr::Literal(LiteralValue::String(lit)) = &arg.expr
            {
                let stamp = format!("{}T00:00:00Z", lit.inner());
                arg.expr = Expr::Literal(LiteralValue::String(CelString::from(stamp)));
                c.func_name = "timestamp".to_string();
            }
            if let Some(t) = c.target.as_deref_mut() {
                rewrite_dates(t);
            }
            for a in &mut c.args {
                rewrite_dates(a);
            }
        }
        Expr::Select(s) => rewrite_dates(&mut s.operand),
        Expr::List(l) => {
            for x in &mut l.elements {
                rewrite_dates(x);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> BTreeMap<String, AttributeSpec> {
        let mut m = BTreeMap::new();
        for (name, ty, required) in [
            ("child.age_months", AttrType::Integer, true),
            ("child.birth_date", AttrType::Date, true),
            ("child.name", AttrType::Text, true),
            ("deceased.pension", AttrType::Boolean, false),
            ("deceased.years_paid", AttrType::Integer, false),
        ] {
            m.insert(
                name.to_string(),
                AttributeSpec {
                    name: name.to_string(),
                    ty,
                    required,
                    description: String::new(),
                },
            );
        }
        m
    }

    fn values(pairs: &[(&str, AttrValue)]) -> BTreeMap<String, AttrValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn compile(src: &str) -> Result<Condition, Vec<Issue>> {
        Condition::compile(src, &attrs())
    }

    fn first_issue(src: &str) -> Issue {
        match compile(src) {
            Ok(_) => panic!("`{src}` should not compile"),
            Err(mut issues) => issues.remove(0),
        }
    }

    /// The fuzz target `condition` overflowed the stack in the CEL parser on this input
    /// (fuzz/artifacts/condition/crash-43b37325856a2b7ff265623eb6c3289a5502872e, 56 nested
    /// brackets in 64 bytes). It must be a syntax issue, found before the parser runs.
    #[test]
    fn deep_nesting_is_an_issue_not_a_stack_overflow() {
        let fuzzed = include_str!(
            "../../../fuzz/artifacts/condition/crash-43b37325856a2b7ff265623eb6c3289a5502872e"
        );
        let issue = first_issue(fuzzed);
        assert_eq!(issue.code, "condition-syntax");
        assert!(issue.message.contains("nests brackets"), "{issue:?}");
        assert_eq!(issue.span, 10..11, "the eleventh opening bracket");
        // Far deeper, and inside a string literal too: the same issue, quickly.
        let deep = format!("child.name == '{}'", "(".repeat(1_000));
        assert_eq!(first_issue(&deep).code, "condition-syntax");
        // The limit itself is fine.
        let at_limit = format!(
            "{}child.age_months < 72{}",
            "(".repeat(CONDITION_NESTING_MAX),
            ")".repeat(CONDITION_NESTING_MAX)
        );
        assert!(compile(&at_limit).is_ok(), "{:?}", compile(&at_limit).err());
    }

    #[test]
    fn age_condition_runs_for_a_young_child_only() {
        // Given the birth group's health-card condition
        let c = compile("child.age_months < 72").expect("compiles");
        // When evaluated for a 5-month-old and a 7-year-old
        let young = values(&[("child.age_months", AttrValue::Integer(5))]);
        let old = values(&[("child.age_months", AttrValue::Integer(84))]);
        // Then only the young child's dossier runs the step
        assert_eq!(c.evaluate(&young), Ok(true));
        assert_eq!(c.evaluate(&old), Ok(false));
        assert_eq!(c.source(), "child.age_months < 72");
    }

    #[test]
    fn dates_compare_as_dates() {
        let c = compile("child.birth_date >= date('2025-07-01')").expect("compiles");
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date");
        let after = values(&[("child.birth_date", AttrValue::Date(d("2025-12-01")))]);
        let before = values(&[("child.birth_date", AttrValue::Date(d("2025-06-30")))]);
        assert_eq!(c.evaluate(&after), Ok(true));
        assert_eq!(c.evaluate(&before), Ok(false));
    }

    #[test]
    fn optional_attribute_needs_has_and_then_evaluates_when_absent() {
        // Given an optional attribute read without a guard, compilation fails with a hint
        let issue = first_issue("deceased.pension");
        assert!(
            issue
                .message
                .contains("optional attribute `deceased.pension`"),
            "{issue:?}"
        );
        // When guarded by has(), it compiles
        let c = compile("has(deceased.pension) && deceased.pension").expect("compiles");
        // Then absent means false, present means its value
        assert_eq!(c.evaluate(&BTreeMap::new()), Ok(false));
        let yes = values(&[("deceased.pension", AttrValue::Boolean(true))]);
        assert_eq!(c.evaluate(&yes), Ok(true));
        // And the negative guard and the ternary are understood too
        assert!(compile("!has(deceased.years_paid) || deceased.years_paid >= 15").is_ok());
        assert!(compile("has(deceased.years_paid) ? deceased.years_paid >= 15 : false").is_ok());
        assert!(compile("has(deceased.years_paid) ? false : deceased.years_paid >= 15").is_err());
    }

    #[test]
    fn unknown_attribute_suggests_the_closest() {
        let issue = first_issue("child.age_month < 72");
        assert_eq!(issue.message, "unknown attribute `child.age_month`");
        assert_eq!(
            issue.hint.as_deref(),
            Some("did you mean `child.age_months`?")
        );
        assert_eq!(issue.span, 0..15);
    }

    #[test]
    fn integer_compared_to_text_is_a_type_error() {
        let issue = first_issue("child.age_months < '72'");
        assert_eq!(issue.message, "`<` compares an integer with text");
        assert_eq!(issue.span, 0..23);
    }

    #[test]
    fn non_boolean_result_and_unsupported_function_are_errors() {
        assert!(
            first_issue("child.age_months + 1")
                .message
                .contains("must be true or false")
        );
        let issue = first_issue("lower(child.name) == 'a'");
        assert_eq!(issue.message, "unsupported function `lower`");
        assert!(
            first_issue("child.age_months < 7.5")
                .message
                .contains("whole numbers")
        );
        assert!(
            first_issue("child.birth_date < date('2025-13-01')")
                .message
                .contains("not a date")
        );
    }

    #[test]
    fn syntax_error_points_into_the_condition() {
        let issue = first_issue("child.age_months < ");
        assert_eq!(issue.code, "condition-syntax");
        assert!(issue.span.start <= 19, "{issue:?}");
    }

    #[test]
    fn text_functions_and_in_lists_work() {
        let c = compile("child.name.startsWith('Ng') && size(child.name) > 2 && child.name in ['Nga', 'Nguyen']")
            .expect("compiles");
        let v = values(&[("child.name", AttrValue::Text("Nga".into()))]);
        assert_eq!(c.evaluate(&v), Ok(true));
    }

    #[test]
    fn constant_conditions_are_known() {
        assert_eq!(
            compile("false").map(|c| c.constant()).ok(),
            Some(Some(false))
        );
        assert_eq!(
            compile("1 > 2 || false").map(|c| c.constant()).ok(),
            Some(Some(false))
        );
        assert_eq!(
            compile("child.age_months < 72 && false")
                .map(|c| c.constant())
                .ok(),
            Some(Some(false))
        );
        assert_eq!(
            compile("child.age_months < 72").map(|c| c.constant()).ok(),
            Some(None)
        );
    }

    #[test]
    fn evaluation_errors_name_the_attribute() {
        let c = compile("child.age_months < 72").expect("compiles");
        assert_eq!(
            c.evaluate(&BTreeMap::new()),
            Err(Error::Missing("child.age_months".into()))
        );
        let wrong = values(&[("child.age_months", AttrValue::Text("5".into()))]);
        assert!(matches!(c.evaluate(&wrong), Err(Error::Type { .. })));
    }
}
