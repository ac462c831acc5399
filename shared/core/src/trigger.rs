//! Event triggers: the `triggers:` of a definition, matching an event
//! against a trigger's EventBridge-style pattern, and the execution a
//! matching event starts.
//!
//! Matching follows EventBridge's event patterns, so the rule deployed on
//! AWS and `baton emit` on the embedded backend agree:
//!
//! - a pattern is a map of the event's fields (`source`, `detail-type`,
//!   `detail` and its nested fields, any other top-level field); every field
//!   it names must match (`$or` lists alternatives);
//! - a leaf is a list, matched when any of its entries matches: an exact
//!   string, number (compared as a number), boolean or `null`, or one of the
//!   matchers `prefix`, `suffix`, `equals-ignore-case`, `anything-but`,
//!   `exists`, `numeric` and `wildcard`;
//! - an array in the event matches when any of its elements does;
//! - only leaves are values: `{"exists": true}` does not match a field
//!   holding an object, and `{"exists": false}` matches one that is absent.
//!
//! An event that matches starts one execution whose id is derived from the
//! workflow, the trigger and the event's `id` ([`execution_id`]): a
//! redelivered event names the same execution and starts nothing new.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::expr::{EvalError, Template, TextPart};
use crate::limits::{self, MAX_EXECUTION_ID_LEN};

/// One trigger: events matching `pattern` start an execution of the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerDefinition {
    /// Identifier of the trigger within its workflow (letters, digits, `-` and `_`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub pattern: EventPattern,
    /// The started execution's input: a JSON template whose `${ ... }`
    /// expressions read `event` (default `${ event.detail }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// An EventBridge event pattern as written: kept as JSON so validation can
/// report every problem in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventPattern(pub Value);

impl JsonSchema for EventPattern {
    fn schema_name() -> Cow<'static, str> {
        "EventPattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An EventBridge event pattern: fields of the event (`source`, `detail-type`, `detail` with nested fields, ...) whose leaves are lists of allowed values or matchers (`prefix`, `suffix`, `equals-ignore-case`, `anything-but`, `exists`, `numeric`, `wildcard`).",
            "type": "object"
        })
    }
}

/// EventBridge's limit on the length of a rule's event pattern.
pub const MAX_PATTERN_LEN: usize = 4096;
/// The matchers a leaf entry may use.
pub const MATCHERS: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "exists",
    "numeric",
    "wildcard",
];

/// One thing wrong with a trigger: the field it is in (relative to the
/// trigger, e.g. `pattern.detail.status`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerProblem {
    pub field: String,
    pub message: String,
}

/// A compiled pattern: every field to match, each a nested pattern or a leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    fields: Vec<(String, Node)>,
    /// `$or`: at least one of these must match too.
    any_of: Vec<Vec<Pattern>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Nested(Pattern),
    Leaf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    /// A string, number, boolean or null; numbers compare as numbers.
    Exact(Value),
    Prefix(Text),
    Suffix(Text),
    EqualsIgnoreCase(String),
    /// Matches a value none of these match.
    AnythingBut(Vec<Matcher>),
    Exists(bool),
    /// Every bound must hold.
    Numeric(Vec<(Comparison, f64)>),
    Wildcard(String),
}

/// The text of a `prefix` or `suffix`, compared exactly or ignoring case.
#[derive(Debug, Clone, PartialEq)]
struct Text {
    text: String,
    ignore_case: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Less,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    Greater,
}

impl Comparison {
    fn parse(text: &str) -> Option<Comparison> {
        Some(match text {
            "<" => Comparison::Less,
            "<=" => Comparison::LessOrEqual,
            "=" => Comparison::Equal,
            ">=" => Comparison::GreaterOrEqual,
            ">" => Comparison::Greater,
            _ => return None,
        })
    }

    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Comparison::Less => value < bound,
            Comparison::LessOrEqual => value <= bound,
            Comparison::Equal => value == bound,
            Comparison::GreaterOrEqual => value >= bound,
            Comparison::Greater => value > bound,
        }
    }

    fn is_lower_bound(self) -> bool {
        matches!(self, Comparison::Greater | Comparison::GreaterOrEqual)
    }

    fn is_upper_bound(self) -> bool {
        matches!(self, Comparison::Less | Comparison::LessOrEqual)
    }
}

/// Whether `event` matches `pattern`.
pub fn matches(pattern: &Pattern, event: &Value) -> bool {
    pattern.matches(event)
}

impl Pattern {
    /// Compiles a pattern as written, or returns every problem in it, each
    /// with the path of its field under `pattern`.
    pub fn parse(pattern: &Value) -> Result<Pattern, Vec<TriggerProblem>> {
        let mut problems = Vec::new();
        if let Err(e) = limits::check_json_depth(pattern, "the pattern") {
            problems.push(TriggerProblem {
                field: "pattern".into(),
                message: e.to_string(),
            });
            return Err(problems);
        }
        let length = pattern.to_string().len();
        if length > MAX_PATTERN_LEN {
            problems.push(TriggerProblem {
                field: "pattern".into(),
                message: format!(
                    "is {length} characters as JSON; EventBridge takes at most {MAX_PATTERN_LEN}"
                ),
            });
        }
        let compiled = match pattern {
            Value::Object(map) if map.is_empty() => {
                problems.push(TriggerProblem {
                    field: "pattern".into(),
                    message: "is empty: a pattern names at least one field of the event, such as `source`".into(),
                });
                None
            }
            Value::Object(_) => parse_object(pattern, "pattern", &mut problems),
            other => {
                problems.push(TriggerProblem {
                    field: "pattern".into(),
                    message: format!("must be a map of event fields, not `{other}`"),
                });
                None
            }
        };
        match compiled {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(problems),
        }
    }

    /// Whether `event` (an EventBridge event: `id`, `source`,
    /// `detail-type`, `detail`, ...) matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.matches_at(Some(event))
    }

    fn matches_at(&self, value: Option<&Value>) -> bool {
        match value {
            // An array of objects matches when one element matches the whole
            // sub-pattern, so fields are never matched across elements.
            Some(Value::Array(items)) if items.iter().any(Value::is_object) => items
                .iter()
                .filter(|item| item.is_object())
                .any(|item| self.matches_at(Some(item))),
            Some(Value::Object(map)) => self.matches_fields(|field| map.get(field)),
            // Nothing below here: only `exists: false` leaves can match.
            _ => self.matches_fields(|_| None),
        }
    }

    fn matches_fields<'v>(&self, get: impl Fn(&str) -> Option<&'v Value> + Copy) -> bool {
        self.fields.iter().all(|(field, node)| {
            let value = get(field);
            match node {
                Node::Nested(pattern) => pattern.matches_at(value),
                Node::Leaf(matchers) => leaf_matches(matchers, value),
            }
        }) && self.any_of.iter().all(|alternatives| {
            alternatives
                .iter()
                .any(|pattern| pattern.matches_fields(get))
        })
    }
}

/// The leaf values at a field: a scalar, each scalar of an array (nested
/// arrays flattened), none for an absent field or an object.
fn leaves<'v>(value: Option<&'v Value>, out: &mut Vec<&'v Value>) {
    match value {
        None | Some(Value::Object(_)) => {}
        Some(Value::Array(items)) => items.iter().for_each(|item| leaves(Some(item), out)),
        Some(scalar) => out.push(scalar),
    }
}

fn leaf_matches(matchers: &[Matcher], value: Option<&Value>) -> bool {
    let mut values = Vec::new();
    leaves(value, &mut values);
    if values.is_empty() {
        return matchers.iter().any(|m| matches!(m, Matcher::Exists(false)));
    }
    matchers
        .iter()
        .any(|m| values.iter().any(|value| m.matches(value)))
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        match self {
            Matcher::Exact(expected) => same_value(expected, value),
            Matcher::Prefix(text) => value.as_str().is_some_and(|v| text.starts(v)),
            Matcher::Suffix(text) => value.as_str().is_some_and(|v| text.ends(v)),
            Matcher::EqualsIgnoreCase(text) => value
                .as_str()
                .is_some_and(|v| v.to_lowercase() == text.to_lowercase()),
            Matcher::AnythingBut(excluded) => !excluded.iter().any(|m| m.matches(value)),
            Matcher::Exists(exists) => *exists,
            Matcher::Numeric(bounds) => value
                .as_f64()
                .is_some_and(|v| bounds.iter().all(|(op, bound)| op.holds(v, *bound))),
            Matcher::Wildcard(pattern) => value.as_str().is_some_and(|v| wildcard(pattern, v)),
        }
    }
}

impl Text {
    fn starts(&self, value: &str) -> bool {
        if self.ignore_case {
            value.to_lowercase().starts_with(&self.text.to_lowercase())
        } else {
            value.starts_with(&self.text)
        }
    }

    fn ends(&self, value: &str) -> bool {
        if self.ignore_case {
            value.to_lowercase().ends_with(&self.text.to_lowercase())
        } else {
            value.ends_with(&self.text)
        }
    }
}

fn same_value(expected: &Value, value: &Value) -> bool {
    match (expected, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// `*` matches any run of characters (`\*` is a literal star).
fn wildcard(pattern: &str, value: &str) -> bool {
    let mut pieces: Vec<String> = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => pieces.last_mut().map(|p| p.push(escaped)).unwrap_or(()),
                None => pieces.last_mut().map(|p| p.push('\\')).unwrap_or(()),
            },
            '*' => pieces.push(String::new()),
            c => pieces.last_mut().map(|p| p.push(c)).unwrap_or(()),
        }
    }
    let (first, rest) = pieces.split_first().expect("at least one piece");
    let Some(mut remaining) = value.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for piece in middle {
        match remaining.find(piece.as_str()) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

fn problem(problems: &mut Vec<TriggerProblem>, field: &str, message: impl Into<String>) {
    problems.push(TriggerProblem {
        field: field.to_string(),
        message: message.into(),
    });
}

fn parse_object(value: &Value, at: &str, problems: &mut Vec<TriggerProblem>) -> Option<Pattern> {
    let Value::Object(map) = value else {
        problem(
            problems,
            at,
            format!("must be a map of fields, not `{value}`"),
        );
        return None;
    };
    let mut pattern = Pattern {
        fields: Vec::new(),
        any_of: Vec::new(),
    };
    let before = problems.len();
    for (field, node) in map {
        let here = format!("{at}.{field}");
        if field == "$or" {
            match node {
                Value::Array(alternatives) if alternatives.len() >= 2 => {
                    let parsed: Vec<Option<Pattern>> = alternatives
                        .iter()
                        .enumerate()
                        .map(|(i, alt)| parse_object(alt, &format!("{here}[{i}]"), problems))
                        .collect();
                    pattern.any_of.push(parsed.into_iter().flatten().collect());
                }
                _ => problem(
                    problems,
                    &here,
                    "must be a list of at least two patterns, any of which may match",
                ),
            }
            continue;
        }
        match node {
            Value::Object(_) => {
                if let Some(nested) = parse_object(node, &here, problems) {
                    pattern.fields.push((field.clone(), Node::Nested(nested)));
                }
            }
            Value::Array(entries) if entries.is_empty() => problem(
                problems,
                &here,
                "is an empty list, which matches nothing: list the values to allow",
            ),
            Value::Array(entries) => {
                let matchers: Vec<Option<Matcher>> = entries
                    .iter()
                    .map(|entry| parse_entry(entry, &here, problems))
                    .collect();
                pattern.fields.push((
                    field.clone(),
                    Node::Leaf(matchers.into_iter().flatten().collect()),
                ));
            }
            other => problem(
                problems,
                &here,
                format!(
                    "must be a list of allowed values or matchers, such as `[{other}]` or `[{{\"prefix\": \"...\"}}]`, or a map of nested fields; EventBridge takes no bare `{other}`"
                ),
            ),
        }
    }
    if map.is_empty() {
        problem(problems, at, "is an empty map, which matches nothing");
    }
    (problems.len() == before).then_some(pattern)
}

fn parse_entry(entry: &Value, at: &str, problems: &mut Vec<TriggerProblem>) -> Option<Matcher> {
    match entry {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
            Some(Matcher::Exact(entry.clone()))
        }
        Value::Array(_) => {
            problem(
                problems,
                at,
                format!("`{entry}`: a list of values cannot hold another list"),
            );
            None
        }
        Value::Object(map) => {
            let mut keys = map.iter();
            let (Some((name, argument)), None) = (keys.next(), keys.next()) else {
                problem(
                    problems,
                    at,
                    format!(
                        "`{entry}`: a matcher is a map with exactly one of {}",
                        matcher_list()
                    ),
                );
                return None;
            };
            parse_matcher(name, argument, at, problems)
        }
    }
}

fn matcher_list() -> String {
    MATCHERS
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_matcher(
    name: &str,
    argument: &Value,
    at: &str,
    problems: &mut Vec<TriggerProblem>,
) -> Option<Matcher> {
    let mut bad = |expected: &str| {
        problem(
            problems,
            at,
            format!("`{name}` takes {expected}, not `{argument}`"),
        );
        None
    };
    match name {
        "prefix" | "suffix" => {
            let text = match argument {
                Value::String(text) => Text {
                    text: text.clone(),
                    ignore_case: false,
                },
                Value::Object(inner) if inner.len() == 1 => match inner.get("equals-ignore-case") {
                    Some(Value::String(text)) => Text {
                        text: text.clone(),
                        ignore_case: true,
                    },
                    _ => return bad("a string or `{\"equals-ignore-case\": \"...\"}`"),
                },
                _ => return bad("a string or `{\"equals-ignore-case\": \"...\"}`"),
            };
            Some(if name == "prefix" {
                Matcher::Prefix(text)
            } else {
                Matcher::Suffix(text)
            })
        }
        "equals-ignore-case" => match argument {
            Value::String(text) => Some(Matcher::EqualsIgnoreCase(text.clone())),
            _ => bad("a string"),
        },
        "wildcard" => match argument {
            Value::String(text) => Some(Matcher::Wildcard(text.clone())),
            _ => bad("a string"),
        },
        "exists" => match argument {
            Value::Bool(exists) => Some(Matcher::Exists(*exists)),
            _ => bad("`true` or `false`"),
        },
        "anything-but" => {
            let expected = "a string, a number, a list of them, or a map with one of `prefix`, `suffix`, `equals-ignore-case` or `wildcard`";
            match argument {
                Value::String(_) | Value::Number(_) => {
                    Some(Matcher::AnythingBut(vec![Matcher::Exact(argument.clone())]))
                }
                Value::Array(items)
                    if !items.is_empty()
                        && items.iter().all(|i| i.is_string() || i.is_number()) =>
                {
                    Some(Matcher::AnythingBut(
                        items.iter().cloned().map(Matcher::Exact).collect(),
                    ))
                }
                Value::Object(inner) if inner.len() == 1 => {
                    let (inner_name, inner_argument) = inner.iter().next()?;
                    if !["prefix", "suffix", "equals-ignore-case", "wildcard"]
                        .contains(&inner_name.as_str())
                    {
                        return bad(expected);
                    }
                    let nested = parse_matcher(inner_name, inner_argument, at, problems)?;
                    Some(Matcher::AnythingBut(vec![nested]))
                }
                _ => bad(expected),
            }
        }
        "numeric" => parse_numeric(argument, at, problems),
        other => {
            let hint = crate::fields::closest(other, MATCHERS.iter().copied())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            problem(
                problems,
                at,
                format!(
                    "`{other}` is not a matcher{hint}; use one of {}",
                    matcher_list()
                ),
            );
            None
        }
    }
}

/// `{"numeric": [">", 0, "<=", 5]}`: one comparison, or a lower and an upper bound.
fn parse_numeric(
    argument: &Value,
    at: &str,
    problems: &mut Vec<TriggerProblem>,
) -> Option<Matcher> {
    let usage = "`numeric` takes one comparison and number, or a lower then an upper bound, such as `[\">\", 0, \"<=\", 5]`; comparisons are `<`, `<=`, `=`, `>=`, `>`";
    let Value::Array(items) = argument else {
        problem(problems, at, format!("{usage}, not `{argument}`"));
        return None;
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        problem(problems, at, format!("{usage}, not `{argument}`"));
        return None;
    }
    let mut bounds = Vec::new();
    for pair in items.chunks(2) {
        let op = pair[0].as_str().and_then(Comparison::parse);
        let number = pair[1].as_f64();
        match (op, number) {
            (Some(op), Some(number)) => bounds.push((op, number)),
            _ => {
                problem(problems, at, format!("{usage}, not `{argument}`"));
                return None;
            }
        }
    }
    if let [(low, low_bound), (high, high_bound)] = bounds.as_slice()
        && !(low.is_lower_bound() && high.is_upper_bound() && low_bound < high_bound)
    {
        problem(
            problems,
            at,
            format!(
                "`{argument}`: a range is a lower bound (`>` or `>=`) then a greater upper bound (`<` or `<=`)"
            ),
        );
        return None;
    }
    Some(Matcher::Numeric(bounds))
}

/// A trigger ready to match events and give the input of what they start.
#[derive(Debug)]
pub struct Trigger {
    pub name: String,
    pub pattern: Pattern,
    /// `None`: the event's `detail`.
    input: Option<Template>,
}

/// What a trigger's input expressions may read.
pub const TRIGGER_VARIABLES: &[&str] = &["event"];

impl Trigger {
    /// Compiles a trigger, or returns every problem in its pattern and input.
    pub fn compile(definition: &TriggerDefinition) -> Result<Trigger, Vec<TriggerProblem>> {
        let mut problems = Vec::new();
        let pattern = Pattern::parse(&definition.pattern.0)
            .map_err(|found| problems.extend(found))
            .ok();
        let input = match &definition.input {
            None => None,
            Some(value) => compile_input(value, &mut problems),
        };
        match pattern {
            Some(pattern) if problems.is_empty() => Ok(Trigger {
                name: definition.name.clone(),
                pattern,
                input,
            }),
            _ => Err(problems),
        }
    }

    pub fn matches(&self, event: &Value) -> bool {
        self.pattern.matches(event)
    }

    /// The input of the execution `event` starts: the template evaluated
    /// over `event`, or its `detail` (`{}` when it has none).
    pub fn input(&self, event: &Value) -> Result<Value, EvalError> {
        match &self.input {
            None => Ok(match event.get("detail") {
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(detail) => detail.clone(),
            }),
            Some(template) => {
                let value = eval_template(template, event)?;
                limits::check_json_depth(&value, "the input").map_err(|e| EvalError {
                    text: "the trigger's input".into(),
                    message: e.to_string(),
                })?;
                Ok(value)
            }
        }
    }
}

fn compile_input(value: &Value, problems: &mut Vec<TriggerProblem>) -> Option<Template> {
    if let Err(e) = limits::check_json_depth(value, "the template") {
        problem(problems, "input", e.to_string());
        return None;
    }
    let template = match Template::compile(value) {
        Ok(template) => template,
        Err(errors) => {
            for e in errors {
                problem(problems, "input", e.to_string());
            }
            return None;
        }
    };
    let before = problems.len();
    for e in template.exprs() {
        for variable in e.free_variables() {
            if !TRIGGER_VARIABLES.contains(&variable.as_str()) {
                let hint = if crate::expr::ROOT_VARIABLES.contains(&variable.as_str()) {
                    " (it exists in steps, not before the execution starts)".to_string()
                } else {
                    crate::fields::closest(variable, TRIGGER_VARIABLES.iter().copied())
                        .map(|k| format!(" (did you mean `{k}`?)"))
                        .unwrap_or_default()
                };
                problem(
                    problems,
                    "input",
                    format!(
                        "`{}` names `{variable}`{hint}; a trigger's input may read only `event`, such as `${{ event.detail }}`",
                        e.source()
                    ),
                );
            }
        }
    }
    (problems.len() == before).then_some(template)
}

fn eval_template(template: &Template, event: &Value) -> Result<Value, EvalError> {
    let bind = [("event", event)];
    match template {
        Template::Literal(value) => Ok(value.clone()),
        Template::Expr(expr) => expr.eval_with(&bind),
        Template::Text(parts) => {
            let mut out = String::new();
            for part in parts {
                match part {
                    TextPart::Text(text) => out.push_str(text),
                    TextPart::Expr(expr) => match expr.eval_with(&bind)? {
                        Value::String(s) => out.push_str(&s),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Ok(Value::String(out))
        }
        Template::Array(items) => items
            .iter()
            .map(|t| eval_template(t, event))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Template::Object(fields) => {
            let mut map = serde_json::Map::with_capacity(fields.len());
            for (key, template) in fields {
                map.insert(key.clone(), eval_template(template, event)?);
            }
            Ok(Value::Object(map))
        }
    }
}

/// The `id` of an EventBridge event, or why `event` is not one Baton can
/// start from: a map with a non-empty string `id`, string `source` and
/// `detail-type`, and a `detail` map.
pub fn event_id(event: &Value) -> Result<&str, String> {
    let Value::Object(map) = event else {
        return Err(format!("an event is a JSON object, not `{event}`"));
    };
    let id = match map.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.as_str(),
        Some(other) => return Err(format!("`id` must be a non-empty string, not `{other}`")),
        None => return Err("the event has no `id`".into()),
    };
    for field in ["source", "detail-type"] {
        match map.get(field) {
            Some(Value::String(_)) => {}
            Some(other) => return Err(format!("`{field}` must be a string, not `{other}`")),
            None => return Err(format!("the event has no `{field}`")),
        }
    }
    match map.get("detail") {
        Some(Value::Object(_)) => Ok(id),
        Some(other) => Err(format!("`detail` must be a JSON object, not `{other}`")),
        None => Err("the event has no `detail`".into()),
    }
}

/// Whether `name` can name a trigger: 1 to 64 letters, digits, `-` and `_`.
pub fn is_trigger_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The id of the execution `trigger` of `workflow` starts for the event
/// whose `id` is `event_id`: `{workflow}:{trigger}:{event_id}`. Names
/// have no `:`, so no two (workflow, trigger) pairs share a prefix. An event
/// id that is too long or has characters ids may not hold is replaced by a
/// hash of it, and a long workflow and trigger name is cut, so every event
/// gets a valid id, the same on every delivery.
pub fn execution_id(workflow: &str, trigger: &str, event_id: &str) -> String {
    let plain = format!("{workflow}:{trigger}:{event_id}");
    if !event_id.is_empty() && limits::check_execution_id(&plain).is_ok() {
        return plain;
    }
    let mut hasher = Sha256::new();
    for part in [workflow, trigger, event_id] {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let hash: String = hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix = format!("{workflow}:{trigger}");
    let keep = MAX_EXECUTION_ID_LEN - hash.len() - 2;
    let prefix: String = prefix.chars().take(keep).collect();
    format!("{prefix}:h{hash}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pattern(value: Value) -> Pattern {
        Pattern::parse(&value).unwrap_or_else(|e| panic!("{value}: {e:?}"))
    }

    fn problems(value: Value) -> Vec<String> {
        Pattern::parse(&value)
            .expect_err("an invalid pattern")
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    /// The event EventBridge's documentation uses for its pattern examples.
    fn ec2_event() -> Value {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "111122223333",
            "time": "2017-12-22T18:43:48Z",
            "region": "us-west-1",
            "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
            "detail": {
                "instance-id": "i-1234567890abcdef0",
                "state": "terminated",
                "c-count": 5,
                "d-count": 3,
                "x-limit": 301.8,
                "source-ip": "10.0.0.33",
                "location": null
            }
        })
    }

    fn check(p: Value, event: &Value) -> bool {
        matches(&pattern(p), event)
    }

    #[test]
    fn exact_values_any_of_the_list() {
        let e = ec2_event();
        assert!(check(json!({"source": ["aws.ec2"]}), &e));
        assert!(check(json!({"source": ["aws.s3", "aws.ec2"]}), &e));
        assert!(!check(json!({"source": ["aws.s3"]}), &e));
        // Every field of the pattern must match.
        assert!(check(
            json!({"source": ["aws.ec2"], "detail": {"state": ["terminated", "stopped"]}}),
            &e
        ));
        assert!(!check(
            json!({"source": ["aws.ec2"], "detail": {"state": ["running"]}}),
            &e
        ));
        // Case matters; a field the event lacks does not match a value.
        assert!(!check(json!({"source": ["AWS.EC2"]}), &e));
        assert!(!check(json!({"detail": {"missing": ["x"]}}), &e));
    }

    #[test]
    fn numbers_compare_as_numbers_and_types_do_not_mix() {
        let e = ec2_event();
        assert!(check(json!({"detail": {"c-count": [5]}}), &e));
        assert!(check(json!({"detail": {"c-count": [5.0]}}), &e));
        assert!(!check(json!({"detail": {"c-count": ["5"]}}), &e));
        assert!(check(json!({"detail": {"location": [null]}}), &e));
        // null matches null, not a missing field.
        assert!(!check(json!({"detail": {"nowhere": [null]}}), &e));
        assert!(check(
            json!({"detail": {"flag": [true]}}),
            &json!({"detail": {"flag": true}})
        ));
        assert!(!check(
            json!({"detail": {"flag": ["true"]}}),
            &json!({"detail": {"flag": true}})
        ));
    }

    #[test]
    fn arrays_in_the_event_match_when_any_element_does() {
        let e = ec2_event();
        assert!(check(
            json!({"resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0", "other"]}),
            &e
        ));
        let order = json!({"detail": {"tags": ["a", "b"], "items": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 5}]}});
        assert!(check(json!({"detail": {"tags": ["b"]}}), &order));
        assert!(!check(json!({"detail": {"tags": ["c"]}}), &order));
        assert!(check(json!({"detail": {"items": {"sku": ["y"]}}}), &order));
        // Fields of one element, never mixed across elements.
        assert!(check(
            json!({"detail": {"items": {"sku": ["y"], "qty": [5]}}}),
            &order
        ));
        assert!(!check(
            json!({"detail": {"items": {"sku": ["x"], "qty": [5]}}}),
            &order
        ));
    }

    #[test]
    fn prefix_suffix_and_ignoring_case() {
        let e = ec2_event();
        assert!(check(
            json!({"detail-type": [{"prefix": "EC2 Instance"}]}),
            &e
        ));
        assert!(!check(json!({"detail-type": [{"prefix": "ec2"}]}), &e));
        assert!(check(
            json!({"detail-type": [{"prefix": {"equals-ignore-case": "ec2 instance"}}]}),
            &e
        ));
        assert!(check(
            json!({"detail": {"instance-id": [{"suffix": "def0"}]}}),
            &e
        ));
        assert!(check(
            json!({"detail": {"instance-id": [{"suffix": {"equals-ignore-case": "DEF0"}}]}}),
            &e
        ));
        assert!(check(
            json!({"source": [{"equals-ignore-case": "AWS.EC2"}]}),
            &e
        ));
        // Text matchers match only strings.
        assert!(!check(
            json!({"detail": {"c-count": [{"prefix": "5"}]}}),
            &e
        ));
    }

    #[test]
    fn exists_is_about_leaves() {
        let e = ec2_event();
        assert!(check(json!({"detail": {"state": [{"exists": true}]}}), &e));
        assert!(!check(
            json!({"detail": {"missing": [{"exists": true}]}}),
            &e
        ));
        assert!(check(
            json!({"detail": {"missing": [{"exists": false}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"state": [{"exists": false}]}}),
            &e
        ));
        // A field holding an object is not a leaf: exists does not see it.
        assert!(!check(json!({"detail": [{"exists": true}]}), &e));
        assert!(check(json!({"detail": [{"exists": false}]}), &e));
        // Below a missing object, everything is missing.
        assert!(check(
            json!({"detail": {"a": {"b": [{"exists": false}]}}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"a": {"b": [{"exists": true}]}}}),
            &e
        ));
        // A null is a value that exists.
        assert!(check(
            json!({"detail": {"location": [{"exists": true}]}}),
            &e
        ));
    }

    #[test]
    fn anything_but() {
        let e = ec2_event();
        assert!(check(
            json!({"detail": {"state": [{"anything-but": ["running", "pending"]}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"state": [{"anything-but": ["terminated"]}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"state": [{"anything-but": "terminated"}]}}),
            &e
        ));
        assert!(check(
            json!({"detail": {"c-count": [{"anything-but": [4, 6]}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"c-count": [{"anything-but": [5]}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"state": [{"anything-but": {"prefix": "term"}}]}}),
            &e
        ));
        assert!(check(
            json!({"detail": {"state": [{"anything-but": {"suffix": "ing"}}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"state": [{"anything-but": {"equals-ignore-case": "TERMINATED"}}]}}),
            &e
        ));
        // It needs the field to be there.
        assert!(!check(
            json!({"detail": {"missing": [{"anything-but": ["x"]}]}}),
            &e
        ));
    }

    #[test]
    fn numeric_ranges() {
        let e = ec2_event();
        assert!(check(
            json!({"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}], "d-count": [{"numeric": ["<", 10]}], "x-limit": [{"numeric": ["=", 301.8]}]}}),
            &e
        ));
        assert!(!check(
            json!({"detail": {"c-count": [{"numeric": [">", 5]}]}}),
            &e
        ));
        assert!(check(
            json!({"detail": {"c-count": [{"numeric": [">=", 5]}]}}),
            &e
        ));
        // Only numbers are compared.
        assert!(!check(
            json!({"detail": {"state": [{"numeric": [">", 0]}]}}),
            &e
        ));
    }

    #[test]
    fn wildcards() {
        let e = ec2_event();
        assert!(check(
            json!({"detail": {"instance-id": [{"wildcard": "i-*"}]}}),
            &e
        ));
        assert!(check(
            json!({"detail-type": [{"wildcard": "EC2*State*Notification"}]}),
            &e
        ));
        assert!(!check(
            json!({"detail-type": [{"wildcard": "EC2*Stop*"}]}),
            &e
        ));
        assert!(check(json!({"source": [{"wildcard": "aws.ec2"}]}), &e));
        assert!(!check(json!({"source": [{"wildcard": "aws.ec"}]}), &e));
        assert!(wildcard("a\\*b", "a*b"));
        assert!(!wildcard("a\\*b", "axb"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("ab*ba", "aba"));
    }

    #[test]
    fn or_lists_alternatives() {
        let e = ec2_event();
        let p = json!({"source": ["aws.ec2"], "$or": [{"detail": {"c-count": [{"numeric": [">", 10]}]}}, {"detail": {"state": ["terminated"]}}]});
        assert!(check(p, &e));
        let p = json!({"$or": [{"detail": {"c-count": [1]}}, {"detail": {"state": ["running"]}}]});
        assert!(!check(p, &e));
    }

    #[test]
    fn bad_patterns_are_reported_every_one() {
        assert_eq!(
            problems(json!({
                "source": "orders",
                "detail-type": [],
                "detail": {
                    "status": [{"prefx": "x"}],
                    "n": [{"numeric": ["<", 5, ">", 1]}],
                    "seen": [{"exists": "yes"}],
                    "kind": [{"prefix": "a", "suffix": "b"}],
                    "nested": [["a"]],
                    "other": [{"anything-but": []}]
                }
            })),
            [
                "pattern.source: must be a list of allowed values or matchers, such as `[\"orders\"]` or `[{\"prefix\": \"...\"}]`, or a map of nested fields; EventBridge takes no bare `\"orders\"`",
                "pattern.detail-type: is an empty list, which matches nothing: list the values to allow",
                "pattern.detail.status: `prefx` is not a matcher (did you mean `prefix`?); use one of `prefix`, `suffix`, `equals-ignore-case`, `anything-but`, `exists`, `numeric`, `wildcard`",
                "pattern.detail.n: `[\"<\",5,\">\",1]`: a range is a lower bound (`>` or `>=`) then a greater upper bound (`<` or `<=`)",
                "pattern.detail.seen: `exists` takes `true` or `false`, not `\"yes\"`",
                "pattern.detail.kind: `{\"prefix\":\"a\",\"suffix\":\"b\"}`: a matcher is a map with exactly one of `prefix`, `suffix`, `equals-ignore-case`, `anything-but`, `exists`, `numeric`, `wildcard`",
                "pattern.detail.nested: `[\"a\"]`: a list of values cannot hold another list",
                "pattern.detail.other: `anything-but` takes a string, a number, a list of them, or a map with one of `prefix`, `suffix`, `equals-ignore-case` or `wildcard`, not `[]`",
            ]
        );
        assert_eq!(
            problems(json!({})),
            [
                "pattern: is empty: a pattern names at least one field of the event, such as `source`"
            ]
        );
        assert_eq!(
            problems(json!(["a"])),
            ["pattern: must be a map of event fields, not `[\"a\"]`"]
        );
        assert_eq!(
            problems(json!({"detail": {"n": [{"numeric": [">", "five"]}]}})).len(),
            1
        );
        assert_eq!(
            problems(json!({"$or": [{"source": ["a"]}]})),
            ["pattern.$or: must be a list of at least two patterns, any of which may match"]
        );
    }

    fn trigger(definition: Value) -> Result<Trigger, Vec<String>> {
        let definition: TriggerDefinition = serde_json::from_value(definition).expect("parses");
        Trigger::compile(&definition).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect()
        })
    }

    #[test]
    fn input_defaults_to_the_detail_and_templates_read_the_event() {
        let e = ec2_event();
        let plain = trigger(json!({"name": "t", "pattern": {"source": ["aws.ec2"]}})).unwrap();
        assert!(plain.matches(&e));
        assert_eq!(plain.input(&e).unwrap(), e["detail"]);
        assert_eq!(plain.input(&json!({"id": "1"})).unwrap(), json!({}));
        let shaped = trigger(json!({
            "name": "t",
            "pattern": {"source": ["aws.ec2"]},
            "input": {
                "instance": "${ event.detail['instance-id'] }",
                "count": "${ event.detail['c-count'] }",
                "note": "from ${ event.source } at ${ event.time }"
            }
        }))
        .unwrap();
        assert_eq!(
            shaped.input(&e).unwrap(),
            json!({"instance": "i-1234567890abcdef0", "count": 5, "note": "from aws.ec2 at 2017-12-22T18:43:48Z"})
        );
        // A field the event lacks is an evaluation error, not a panic.
        let missing = trigger(json!({"name": "t", "pattern": {"source": ["x"]}, "input": "${ event.detail.nope.deeper }"})).unwrap();
        assert!(missing.input(&e).is_err());
    }

    #[test]
    fn input_expressions_may_read_only_the_event() {
        let problems = trigger(json!({
            "name": "t",
            "pattern": {"source": ["x"]},
            "input": {"a": "${ input.x }", "b": "${ evnt.detail }", "c": "${ event. }"}
        }))
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("input: expression `event.` does not compile"));
        let problems = trigger(json!({
            "name": "t",
            "pattern": {"source": ["x"]},
            "input": {"a": "${ input.x }", "b": "${ evnt.detail }"}
        }))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "input: `input.x` names `input` (it exists in steps, not before the execution starts); a trigger's input may read only `event`, such as `${ event.detail }`",
                "input: `evnt.detail` names `evnt` (did you mean `event`?); a trigger's input may read only `event`, such as `${ event.detail }`",
            ]
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::super::*;

        /// A detail of a few string and number leaves, some nested.
        fn detail() -> impl Strategy<Value = Map<String, Value>> {
            let leaf = prop_oneof![
                "[a-z]{0,6}".prop_map(Value::from),
                (-1000i64..1000).prop_map(Value::from),
            ];
            prop::collection::btree_map(
                "[a-d]",
                (leaf.clone(), prop::option::of(("[e-f]", leaf))),
                1..5,
            )
            .prop_map(|fields| {
                fields
                    .into_iter()
                    .map(|(k, (v, nested))| match nested {
                        None => (k, v),
                        Some((nk, nv)) => (k, json!({ nk: nv, "x": v })),
                    })
                    .collect()
            })
        }

        /// Every leaf of a detail with its path.
        fn leaves(
            map: &Map<String, Value>,
            path: &mut Vec<String>,
            out: &mut Vec<(Vec<String>, Value)>,
        ) {
            for (k, v) in map {
                path.push(k.clone());
                match v {
                    Value::Object(inner) => leaves(inner, path, out),
                    leaf => out.push((path.clone(), leaf.clone())),
                }
                path.pop();
            }
        }

        /// A pattern on `detail` holding `entries` at `path`.
        fn at(path: &[String], entries: Value) -> Value {
            let mut node = entries;
            for key in path.iter().rev() {
                node = json!({ key.clone(): node });
            }
            json!({ "source": ["s"], "detail": node })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn a_leaf_matches_its_own_value_and_not_what_excludes_it(detail in detail(), pick in any::<prop::sample::Index>()) {
                let event = json!({ "id": "e", "source": "s", "detail-type": "t", "detail": detail.clone() });
                let mut all = Vec::new();
                leaves(&detail, &mut Vec::new(), &mut all);
                let (path, value) = &all[pick.index(all.len())];
                let check = |entries: Value| Pattern::parse(&at(path, entries)).expect("valid").matches(&event);
                prop_assert!(check(json!([value])), "{:?}: {}", path, value);
                prop_assert!(check(json!([{ "exists": true }])), "{:?}: {}", path, value);
                prop_assert!(!check(json!([{ "exists": false }])), "{:?}: {}", path, value);
                prop_assert!(!check(json!([{ "anything-but": [value] }])), "{:?}: {}", path, value);
                // Another value of the same type does not match.
                let other = match value {
                    Value::String(s) => json!(format!("{s}~")),
                    n => json!(n.as_f64().unwrap_or_default() + 0.5),
                };
                prop_assert!(!check(json!([other])), "{:?}: {}", path, value);
                prop_assert!(check(json!([other, value])), "{:?}: {}", path, value);
                if let Value::String(text) = value {
                    let half: String = text.chars().take(text.len() / 2).collect();
                    prop_assert!(check(json!([{ "prefix": half }])), "{:?}: {}", path, value);
                    prop_assert!(check(json!([{ "wildcard": format!("{half}*") }])), "{:?}: {}", path, value);
                    prop_assert!(check(json!([{ "equals-ignore-case": text.to_uppercase() }])), "{:?}: {}", path, value);
                } else {
                    let n = value.as_f64().unwrap_or_default();
                    prop_assert!(check(json!([{ "numeric": [">=", n, "<", n + 1.0] }])), "{:?}: {}", path, value);
                    prop_assert!(!check(json!([{ "numeric": [">", n] }])), "{:?}: {}", path, value);
                }
                // A field the event does not have: only `exists: false` matches it.
                let mut missing = path.clone();
                missing.push("zz".into());
                let check_missing = |entries: Value| Pattern::parse(&at(&missing, entries)).expect("valid").matches(&event);
                prop_assert!(check_missing(json!([{ "exists": false }])), "{:?}: {}", path, value);
                prop_assert!(!check_missing(json!([value])), "{:?}: {}", path, value);
            }
        }
    }

    #[test]
    fn events_need_an_id_a_source_a_detail_type_and_a_detail() {
        assert_eq!(
            event_id(&ec2_event()),
            Ok("6a7e8feb-b491-4cf7-a9f1-bf3703467718")
        );
        let mut e = ec2_event();
        e["detail"] = json!("text");
        assert_eq!(
            event_id(&e),
            Err("`detail` must be a JSON object, not `\"text\"`".into())
        );
        for field in ["id", "source", "detail-type", "detail"] {
            let mut e = ec2_event();
            e.as_object_mut().unwrap().remove(field);
            assert_eq!(event_id(&e), Err(format!("the event has no `{field}`")));
        }
        let mut e = ec2_event();
        e["id"] = json!("");
        assert!(event_id(&e).is_err());
        assert!(event_id(&json!([1])).is_err());
    }

    #[test]
    fn execution_ids_are_stable_and_valid() {
        let id = execution_id("orders", "placed", "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        assert_eq!(id, "orders:placed:6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        assert_eq!(
            id,
            execution_id("orders", "placed", "6a7e8feb-b491-4cf7-a9f1-bf3703467718")
        );
        assert_ne!(
            id,
            execution_id("orders", "other", "6a7e8feb-b491-4cf7-a9f1-bf3703467718")
        );
        for event_id in ["has spaces/and slashes", &"x".repeat(300), "", "é"] {
            let id = execution_id("orders", "placed", event_id);
            assert_eq!(limits::check_execution_id(&id), Ok(()), "{id}");
            assert!(id.starts_with("orders:placed:h"), "{id}");
            assert_eq!(id, execution_id("orders", "placed", event_id));
        }
        assert_ne!(
            execution_id("orders", "placed", "a b"),
            execution_id("orders", "placed", "a  b")
        );
        let long = "w".repeat(100);
        let id = execution_id(&long, &"t".repeat(64), "e-1");
        assert_eq!(limits::check_execution_id(&id), Ok(()), "{id}");
    }
}
