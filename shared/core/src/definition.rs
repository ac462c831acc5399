//! The workflow definition as users write it, in YAML or JSON.
//!
//! These types are the file format: they accept what parses and keep it as
//! written (durations and expressions stay strings), so that
//! [`crate::validate`] can report every problem at once rather than stop at
//! the first. The JSON Schema published in `schema/` is generated from them.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::limits::{self, LimitError, MAX_JSON_DEPTH};

/// A workflow: named steps wired by `needs`, plus defaults and an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Identifier of the workflow (letters, digits, `-` and `_`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Retry and timeout settings every step inherits unless it overrides them.
    #[serde(default, skip_serializing_if = "Defaults::is_empty")]
    pub defaults: Defaults,
    /// Steps in declaration order. A step without `needs` starts at once.
    pub steps: Steps,
    /// The execution's result: a JSON template with `${ expression }` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Cron schedules that start executions of this workflow.
    #[serde(default, skip_serializing_if = "Schedules::is_empty")]
    pub schedules: Schedules,
    /// Events that start executions of this workflow: each trigger's
    /// EventBridge-style pattern, and the input it gives (see [`crate::trigger`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<crate::trigger::TriggerDefinition>,
    /// The longest the whole execution may run, e.g. `1h`: then it fails
    /// with `ExecutionTimedOut` and undoes what it did. A start may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long a finished execution's records are kept, e.g. `90d`
    /// (default 30 days; 1 day to 10 years). A start may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDefinition>,
    /// Per-attempt timeout, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy of compensations that do not set their own
    /// (default: exponential, 5 attempts, 1s, at most 1m, full jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_retry: Option<RetryDefinition>,
}

impl Defaults {
    fn is_empty(&self) -> bool {
        self == &Defaults::default()
    }
}

/// One step. Exactly one of `function`, `workflow`, `wait`, `wait_until` or `wait_for` says what it does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The function (a Lambda, a local command or an in-process handler) this step calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The workflow this step runs as a child execution, whose output becomes the step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The version of `workflow` to run (default: its newest when the step starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_version: Option<u32>,
    /// Steps that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Condition `${ ... }`; when false the step is skipped.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Whether the step changes state outside Baton (default true). Mutating steps need `compensate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutates: Option<bool>,
    /// The function's input: a JSON template with `${ expression }` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDefinition>,
    /// Per-attempt timeout, e.g. `30s`; for a `workflow` step, the child execution's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The undo of this step, or `none` (with a `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Compensate>,
    /// Why a mutating step has `compensate: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Run the step once per element of this list `${ ... }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// At most this many elements of a `for_each` run at once (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// How many elements of a `for_each` may fail for good with the step still succeeding (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u32>,
    /// What percentage of a `for_each`'s elements may fail for good with the step still succeeding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percent: Option<u32>,
    /// Pause for a duration, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Pause until an instant `${ ... }` (RFC 3339 text or epoch milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<String>,
    /// Pause until a signal arrives; its payload becomes the step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitForDefinition>,
    /// When this step fails for good, record it and go on instead of failing the execution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Calls the function again until `until` holds (a poll): each call an
    /// iteration with its own attempts and idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<RepeatDefinition>,
}

/// `repeat:` of a step: run it again until a condition over its latest
/// output holds, at most `max_iterations` times, `delay` apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatDefinition {
    /// A `${ }` expression, true when the step is done; `steps.NAME.output`
    /// is the iteration's output.
    pub until: String,
    /// The most iterations (1 to 1,000); past them the step fails with `RepeatExhausted`.
    pub max_iterations: u32,
    /// The wait between iterations, e.g. `30s` (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDefinition {
    /// Hard limit on attempts, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Base delay, e.g. `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Upper bound on any one delay, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// Only these error names are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    /// These error names are never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_retry_on: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    Fixed,
    Linear,
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    None,
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForDefinition {
    /// Name of the signal to wait for.
    pub signal: String,
    /// Fail the step when no signal came within this duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompensationDefinition {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `compensate:` is either the literal `none` or a compensation.
#[derive(Debug, Clone, PartialEq)]
pub enum Compensate {
    None,
    Run(Box<CompensationDefinition>),
}

impl Serialize for Compensate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Compensate::None => serializer.serialize_str("none"),
            Compensate::Run(definition) => definition.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Compensate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CompensateVisitor;
        impl<'de> Visitor<'de> for CompensateVisitor {
            type Value = Compensate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`none` or a map with `function` (and optional `input`, `retry`, `timeout`)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Compensate, E> {
                if v == "none" {
                    Ok(Compensate::None)
                } else {
                    Err(E::custom(format!(
                        "compensate must be `none` or a map with `function`, not `{v}`"
                    )))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Compensate, A::Error> {
                CompensationDefinition::deserialize(serde::de::value::MapAccessDeserializer::new(
                    map,
                ))
                .map(|d| Compensate::Run(Box::new(d)))
            }
        }
        deserializer.deserialize_any(CompensateVisitor)
    }
}

impl JsonSchema for Compensate {
    fn schema_name() -> Cow<'static, str> {
        "Compensate".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let run = generator.subschema_for::<CompensationDefinition>();
        json_schema!({
            "description": "The undo of a step, or `none` for a step whose effect cannot be undone (then give a `reason`).",
            "oneOf": [ { "const": "none" }, run ]
        })
    }
}

/// Steps in declaration order. Unlike a map it keeps duplicate names, so
/// validation can report them instead of one silently replacing the other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps(pub Vec<(String, StepDefinition)>);

impl Steps {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StepDefinition)> {
        self.0.iter().map(|(name, step)| (name.as_str(), step))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn get(&self, name: &str) -> Option<&StepDefinition> {
        self.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }
}

impl Serialize for Steps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, step) in &self.0 {
            map.serialize_entry(name, step)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepsVisitor;
        impl<'de> Visitor<'de> for StepsVisitor {
            type Value = Steps;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from step name to step")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Steps, A::Error> {
                let mut steps = Vec::new();
                while let Some((name, step)) = map.next_entry::<String, StepDefinition>()? {
                    steps.push((name, step));
                }
                Ok(Steps(steps))
            }
        }
        deserializer.deserialize_map(StepsVisitor)
    }
}

impl JsonSchema for Steps {
    fn schema_name() -> Cow<'static, str> {
        "Steps".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let step = generator.subschema_for::<StepDefinition>();
        json_schema!({
            "description": "Steps in order, by name (letters, digits and `_`, starting with a letter).",
            "type": "object",
            "minProperties": 1,
            "propertyNames": { "pattern": "^[A-Za-z][A-Za-z0-9_]*$" },
            "additionalProperties": step
        })
    }
}

/// One schedule: a cron expression read in a time zone, and the input of the
/// executions it starts. See [`crate::schedule`] for when it fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDefinition {
    /// The schedule's name in the list form; the map form names it by its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Standard 5-field cron: minute hour day-of-month month day-of-week,
    /// e.g. `0 9 * * MON-FRI`.
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `America/New_York` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The input of every execution it starts (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Whether it fires (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// What to do when an instant comes while this schedule's previous
    /// execution is still going (default `skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// What to do with instants missed while no worker ran (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// With `catch_up: all`, at most this many missed instants run, the most
    /// recent ones (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_catch_up: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Do not start while the previous execution of the schedule is not finished.
    #[default]
    Skip,
    /// Start every instant, whatever is still running.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run only instants that are on time; drop missed ones.
    None,
    /// Run the latest missed instant once.
    #[default]
    Latest,
    /// Run every missed instant, up to `max_catch_up` of the most recent.
    All,
}

/// Schedules in declaration order, written as a map from name to schedule
/// or as a list of schedules that each have a `name`. Like [`Steps`] it keeps
/// duplicates so validation can report them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedules(pub Vec<(String, ScheduleDefinition)>);

impl Schedules {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ScheduleDefinition)> {
        self.0.iter().map(|(name, s)| (name.as_str(), s))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Schedules {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Always the map form: one canonical text per definition, so storing
        // the same definition again is recognised as the same version.
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, schedule) in &self.0 {
            map.serialize_entry(name, schedule)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Schedules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SchedulesVisitor;
        impl<'de> Visitor<'de> for SchedulesVisitor {
            type Value = Schedules;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from schedule name to schedule, or a list of schedules with a `name` each")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Schedules, A::Error> {
                let mut schedules = Vec::new();
                while let Some(entry) = map.next_entry::<String, ScheduleDefinition>()? {
                    schedules.push(entry);
                }
                Ok(Schedules(schedules))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Schedules, A::Error> {
                let mut schedules = Vec::new();
                while let Some(mut schedule) = seq.next_element::<ScheduleDefinition>()? {
                    // An unnamed entry keeps an empty name for validation to report.
                    let name = schedule.name.take().unwrap_or_default();
                    schedules.push((name, schedule));
                }
                Ok(Schedules(schedules))
            }
        }
        deserializer.deserialize_any(SchedulesVisitor)
    }
}

impl JsonSchema for Schedules {
    fn schema_name() -> Cow<'static, str> {
        "Schedules".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let schedule = generator.subschema_for::<ScheduleDefinition>();
        json_schema!({
            "description": "Cron schedules by name (letters, digits, `-` and `_`), or a list of schedules with a `name` each.",
            "oneOf": [
                { "type": "object", "additionalProperties": schedule },
                { "type": "array", "items": schedule }
            ]
        })
    }
}

/// The definition could not be read at all (syntax or shape); semantic
/// problems are reported by validation instead.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Fields the format does not have, every one of them.
    #[error("{}", unknown_fields_message(.0))]
    UnknownFields(Vec<crate::fields::UnknownField>),
    /// Nested deeper than [`MAX_JSON_DEPTH`]; `line` is where, when known.
    #[error("{error}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    TooDeep {
        error: LimitError,
        line: Option<u64>,
    },
}

fn unknown_fields_message(fields: &[crate::fields::UnknownField]) -> String {
    let list: Vec<String> = fields.iter().map(|f| format!("  - {f}")).collect();
    format!(
        "the definition has {} unknown field{}:\n{}",
        fields.len(),
        if fields.len() == 1 { "" } else { "s" },
        list.join("\n")
    )
}

impl ParseError {
    fn too_deep(line: Option<u64>) -> ParseError {
        ParseError::TooDeep {
            error: LimitError::JsonTooDeep {
                what: "the definition".into(),
                limit: MAX_JSON_DEPTH,
            },
            line,
        }
    }

    /// A YAML error, told apart when it is the nesting: the parser's depth
    /// budget, or (far deeper than that) its own recursion limit, which
    /// names no limit of Baton's.
    fn yaml(e: serde_saphyr::Error, text: &str) -> ParseError {
        match e.without_snippet() {
            serde_saphyr::Error::Budget {
                breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
                ..
            } => ParseError::too_deep(e.location().map(|l| l.line())),
            _ if limits::json_text_depth(text.as_bytes(), MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH => {
                ParseError::too_deep(e.location().map(|l| l.line()))
            }
            _ => ParseError::Yaml(e.to_string()),
        }
    }
}

/// The text formats a definition can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// Guesses the format from a file name; YAML (a superset of JSON) otherwise.
    pub fn from_path(path: &str) -> Format {
        if path.ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

impl WorkflowDefinition {
    /// Reads a definition. Either format may nest at most
    /// [`MAX_JSON_DEPTH`] levels of maps and lists.
    pub fn parse(text: &str, format: Format) -> Result<WorkflowDefinition, ParseError> {
        Self::parse_shape(text, format).map_err(|e| match e {
            ParseError::Yaml(_) | ParseError::Json { .. } => Self::unknown_fields(text, format)
                .map(ParseError::UnknownFields)
                .unwrap_or(e),
            e => e,
        })
    }

    /// The definition's unknown fields, if it reads as a document and has
    /// any: reported all at once, where deserialising names only the first.
    fn unknown_fields(text: &str, format: Format) -> Option<Vec<crate::fields::UnknownField>> {
        let document: Value = match format {
            Format::Json => serde_json::from_str(text).ok()?,
            Format::Yaml => serde_saphyr::from_str_with_options(
                text,
                serde_saphyr::options! {
                    duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
                    budget: serde_saphyr::budget! { max_depth: MAX_JSON_DEPTH },
                },
            )
            .ok()?,
        };
        let mut found = crate::fields::unknown_fields(&document);
        crate::fields::locate(&mut found, text);
        (!found.is_empty()).then_some(found)
    }

    fn parse_shape(text: &str, format: Format) -> Result<WorkflowDefinition, ParseError> {
        match format {
            Format::Json => {
                if limits::json_text_depth(text.as_bytes(), MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH {
                    return Err(ParseError::too_deep(None));
                }
                serde_json::from_str(text).map_err(|e| ParseError::Json {
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })
            }
            Format::Yaml => serde_saphyr::from_str_with_options(
                text,
                serde_saphyr::options! {
                    budget: serde_saphyr::budget! { max_depth: MAX_JSON_DEPTH },
                },
            )
            .or_else(|strict| {
                // A repeated step name is a validation problem, reported with
                // every other one; any other repeated key stays a syntax error.
                let options = serde_saphyr::options! {
                    duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
                    budget: serde_saphyr::budget! { max_depth: MAX_JSON_DEPTH },
                };
                match serde_saphyr::from_str_with_options::<WorkflowDefinition>(text, options) {
                    Ok(definition)
                        if {
                            let mut seen = std::collections::HashSet::new();
                            definition.steps.iter().any(|(name, _)| !seen.insert(name))
                        } =>
                    {
                        Ok(definition)
                    }
                    _ => Err(ParseError::yaml(strict, text)),
                }
            }),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a definition always serialises to JSON")
    }
}
