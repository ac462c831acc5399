//! Unknown fields of a definition, every one at once with a suggestion.
//!
//! Deserialising stops at the first unknown field; a user fixing a
//! definition wants the whole list. The definition's own JSON Schema (the
//! one `schema/workflow.schema.json` publishes, generated from the types)
//! says which fields each object has, so walking the document beside it
//! finds them all without a second description of the format.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::definition::WorkflowDefinition;

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(schemars::schema_for!(WorkflowDefinition))
        .expect("a schema serialises to JSON")
});

/// One field the format does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// Where the field is, as `steps.charge` (empty at the top level).
    pub at: String,
    pub field: String,
    /// The known field it most likely means.
    pub suggestion: Option<String>,
    /// The line of the definition's text it is on, when found.
    pub line: Option<usize>,
}

impl std::fmt::Display for UnknownField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "unknown field `{}`", self.field)?;
        } else {
            write!(f, "{}: unknown field `{}`", self.at, self.field)?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Every field of `document` the definition format does not have, in
/// document order.
pub fn unknown_fields(document: &Value) -> Vec<UnknownField> {
    let mut found = Vec::new();
    scan(&SCHEMA, &SCHEMA, document, "", &mut found);
    found
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |node, part| &node[part]))
            .map_or(schema, |target| resolve(root, target)),
        None => schema,
    }
}

/// Whether a schema allows an object at all (branches of `oneOf`/`anyOf`).
fn allows_object(root: &Value, schema: &Value) -> bool {
    let schema = resolve(root, schema);
    match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        None => schema.get("properties").is_some() || schema.get("oneOf").is_some(),
        _ => false,
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

fn scan(root: &Value, schema: &Value, value: &Value, at: &str, found: &mut Vec<UnknownField>) {
    let schema = resolve(root, schema);
    for choice in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(choice).and_then(Value::as_array) {
            // Only an object can have unknown fields; follow the one branch
            // that takes objects, if exactly one does.
            if value.is_object() {
                let mut objects = branches.iter().filter(|b| allows_object(root, b));
                if let (Some(only), None) = (objects.next(), objects.next()) {
                    scan(root, only, value, at, found);
                }
            } else if let Value::Array(items) = value {
                for branch in branches {
                    if resolve(root, branch).get("items").is_some() {
                        scan(root, branch, &Value::Array(items.clone()), at, found);
                    }
                }
            }
            return;
        }
    }
    match value {
        Value::Object(object) => scan_object(root, schema, object, at, found),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    scan(root, item_schema, item, &format!("{at}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn scan_object(
    root: &Value,
    schema: &Value,
    object: &Map<String, Value>,
    at: &str,
    found: &mut Vec<UnknownField>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (field, value) in object {
        match properties.and_then(|p| p.get(field)) {
            Some(property) => scan(root, property, value, &join(at, field), found),
            None => match additional {
                Some(Value::Bool(false)) => found.push(UnknownField {
                    at: at.to_string(),
                    field: field.clone(),
                    suggestion: properties.and_then(|p| suggest(field, p.keys())),
                    line: None,
                }),
                // A map by name (steps, schedules): each value has the schema.
                Some(each @ Value::Object(_)) => scan(root, each, value, &join(at, field), found),
                _ => {}
            },
        }
    }
}

/// Gives each unknown field the line of `text` where it is written as a
/// key (bare or quoted, in block or flow style), in order of appearance.
pub fn locate(found: &mut [UnknownField], text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    // A second unknown field of the same name is looked for after the first.
    let mut next_from: std::collections::HashMap<String, usize> = Default::default();
    for field in found.iter_mut() {
        let bare = format!("{}:", field.field);
        let quoted = format!("\"{}\"", field.field);
        let is_key = |line: &str| {
            line.split(['{', ',', ' '])
                .map(|token| token.trim_start_matches('-'))
                .any(|token| token.starts_with(&bare) || token.starts_with(&quoted))
        };
        let from = next_from.get(&field.field).copied().unwrap_or(0);
        field.line = (from..lines.len())
            .find(|&n| is_key(lines[n]))
            .map(|n| n + 1);
        if let Some(line) = field.line {
            next_from.insert(field.field.clone(), line);
        }
    }
}

/// The closest known name, if it is close enough to be a slip: at most two
/// edits away, or sharing most of its letters in order (`retires`, `retry`).
pub(crate) fn closest<'a, S: AsRef<str> + ?Sized + 'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a S>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(AsRef::as_ref)
        .filter(|k| {
            let edits = strsim::damerau_levenshtein(name, k);
            (edits <= 2 && edits < k.len()) || strsim::jaro_winkler(name, k) >= 0.85
        })
        .max_by(|a, b| strsim::jaro_winkler(name, a).total_cmp(&strsim::jaro_winkler(name, b)))
}

fn suggest<'a>(field: &str, known: impl Iterator<Item = &'a String>) -> Option<String> {
    closest(field, known).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_unknown_field_is_found_with_a_suggestion() {
        let document = json!({
            "name": "w",
            "desciption": "typo at the top",
            "defaults": { "retyr": { "max_attempts": 2 } },
            "steps": {
                "a": { "function": "f", "retry": { "max_attemps": 3, "backof": "fixed" } },
                "b": { "functoin": "g", "compensate": { "function": "h", "inptu": {} } },
                "c": { "wait_for": { "signal": "s", "timeuot": "1h" }, "colour": "red" }
            }
        });
        let found: Vec<String> = unknown_fields(&document)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "unknown field `desciption` (did you mean `description`?)",
                "defaults: unknown field `retyr` (did you mean `retry`?)",
                "steps.a.retry: unknown field `max_attemps` (did you mean `max_attempts`?)",
                "steps.a.retry: unknown field `backof` (did you mean `backoff`?)",
                "steps.b: unknown field `functoin` (did you mean `function`?)",
                "steps.b.compensate: unknown field `inptu` (did you mean `input`?)",
                "steps.c.wait_for: unknown field `timeuot` (did you mean `timeout`?)",
                "steps.c: unknown field `colour`",
            ]
        );
    }

    #[test]
    fn a_valid_definition_has_none() {
        let document = json!({
            "name": "w",
            "steps": {
                "a": { "function": "f", "compensate": "none", "reason": "read only" },
                "b": { "function": "g", "needs": ["a"], "input": { "anything": { "goes": 1 } } }
            },
            "schedules": [{ "name": "nightly", "cron": "0 0 * * *" }]
        });
        assert_eq!(unknown_fields(&document), []);
    }
}
