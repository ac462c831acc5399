//! The committed JSON Schema matches the definition types, and the example
//! workflows conform to it.
//!
//! `BATON_UPDATE_SCHEMA=1 cargo test -p baton-core --test schema` rewrites
//! `schema/workflow.schema.json` after the types change.

use std::path::PathBuf;

use baton_core::definition::{Format, WorkflowDefinition};
use baton_core::schema::workflow_schema_json;
use serde_json::{Map, Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    serde_json::from_str(&workflow_schema_json()).expect("the schema is JSON")
}

#[test]
fn committed_schema_matches_the_types() {
    let path = repo_root().join("schema/workflow.schema.json");
    let generated = workflow_schema_json();
    if std::env::var("BATON_UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with\n  BATON_UPDATE_SCHEMA=1 cargo test -p baton-core --test schema",
        path.display()
    );
}

/// A JSON Schema checker for the keywords this schema uses; any other
/// keyword fails the test, so a schema that outgrows it is noticed.
struct Checker<'a> {
    root: &'a Value,
}

impl Checker<'_> {
    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return errors.push(format!("{at}: nothing is allowed here")),
            Value::Object(schema) => schema,
            other => panic!("not a schema: {other}"),
        };
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$schema" | "title" | "description" | "$defs" | "format" => {}
                "$ref" => {
                    let name = rule
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/$defs/"))
                        .expect("a local reference");
                    self.check(&self.root["$defs"][name], value, at, errors);
                }
                "type" => {
                    let types: Vec<&str> = match rule {
                        Value::String(t) => vec![t],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        other => panic!("bad type {other}"),
                    };
                    if !types.iter().any(|t| has_type(value, t)) {
                        errors.push(format!("{at}: {value} is not {}", types.join(" or ")));
                    }
                }
                "enum" => {
                    if !rule.as_array().expect("a list").contains(value) {
                        errors.push(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "const" => {
                    if rule != value {
                        errors.push(format!("{at}: {value} is not {rule}"));
                    }
                }
                "minimum" => {
                    if let (Some(v), Some(min)) = (value.as_f64(), rule.as_f64())
                        && v < min
                    {
                        errors.push(format!("{at}: {v} is below {min}"));
                    }
                }
                "required" => {
                    if let Value::Object(map) = value {
                        for key in rule
                            .as_array()
                            .expect("a list")
                            .iter()
                            .filter_map(Value::as_str)
                        {
                            if !map.contains_key(key) {
                                errors.push(format!("{at}: `{key}` is missing"));
                            }
                        }
                    }
                }
                "minProperties" => {
                    if let Value::Object(map) = value
                        && (map.len() as u64) < rule.as_u64().expect("a count")
                    {
                        errors.push(format!("{at}: too few entries"));
                    }
                }
                "propertyNames" => {
                    let pattern = rule["pattern"].as_str().expect("a pattern");
                    assert_eq!(pattern, "^[A-Za-z][A-Za-z0-9_]*$", "an unknown pattern");
                    if let Value::Object(map) = value {
                        for key in map.keys() {
                            let mut chars = key.chars();
                            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                            if !ok {
                                errors.push(format!("{at}: `{key}` is not a valid name"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Value::Object(map) = value {
                        self.check_properties(schema, map, at, errors);
                    }
                }
                "additionalProperties" => {
                    // With `properties` beside it, that arm checks both.
                    if let Value::Object(map) = value
                        && !schema.contains_key("properties")
                    {
                        self.check_properties(schema, map, at, errors);
                    }
                }
                "items" => {
                    if let Value::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.check(rule, item, &format!("{at}[{i}]"), errors);
                        }
                    }
                }
                "oneOf" | "anyOf" => {
                    let passing = rule
                        .as_array()
                        .expect("a list")
                        .iter()
                        .filter(|option| {
                            let mut sub = Vec::new();
                            self.check(option, value, at, &mut sub);
                            sub.is_empty()
                        })
                        .count();
                    let ok = if keyword == "oneOf" {
                        passing == 1
                    } else {
                        passing >= 1
                    };
                    if !ok {
                        errors.push(format!("{at}: {value} matches {passing} of {keyword}"));
                    }
                }
                other => panic!("the checker does not know `{other}`"),
            }
        }
    }

    fn check_properties(
        &self,
        schema: &Map<String, Value>,
        map: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, value) in map {
            let path = format!("{at}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(rule), _) | (None, Some(rule)) => self.check(rule, value, &path, errors),
                (None, None) => {}
            }
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_u64() || value.is_i64(),
        other => panic!("unknown type {other}"),
    }
}

fn conforms(document: &Value) -> Vec<String> {
    let schema = schema();
    let checker = Checker { root: &schema };
    let mut errors = Vec::new();
    checker.check(&schema, document, "$", &mut errors);
    errors.sort();
    errors.dedup();
    errors
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("workflows"))
        .expect("workflows/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_workflows_conform_to_the_schema() {
    let files = example_files();
    assert!(files.len() >= 2, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let document: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let errors = conforms(&document);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        // The types read the same document, and write it back unchanged.
        let definition = WorkflowDefinition::parse(&text, Format::Yaml)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            conforms(&definition.to_json()).is_empty(),
            "{}: its JSON form",
            path.display()
        );
        let json = serde_json::to_string(&definition).expect("serialises");
        let again = WorkflowDefinition::parse(&json, Format::Json).expect("round trip");
        assert_eq!(again, definition);
        // And every example passes validation, expressions included.
        if let Err(e) = baton_core::Workflow::from_text(&text, Format::Yaml) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn the_schema_rejects_what_the_types_reject() {
    let valid = json!({
        "name": "w",
        "steps": { "a": { "function": "f", "mutates": false, "compensate": "none" } }
    });
    assert!(conforms(&valid).is_empty(), "{:?}", conforms(&valid));
    let steps = valid["steps"].clone();
    for schedules in [
        json!({ "daily": { "cron": "0 0 * * *", "timezone": "America/New_York", "input": { "a": 1 } } }),
        json!([{ "name": "daily", "cron": "0 0 * * *", "overlap": "allow", "catch_up": "all", "max_catch_up": 3 }]),
    ] {
        let doc = json!({ "name": "w", "steps": steps, "schedules": schedules });
        assert!(conforms(&doc).is_empty(), "{:?}", conforms(&doc));
    }
    let cases = [
        json!({ "name": "w" }),
        json!({ "name": "w", "steps": {} }),
        json!({ "name": "w", "steps": { "a": { "function": "f", "retires": 3 } } }),
        json!({ "name": "w", "steps": { "1a": { "function": "f" } } }),
        json!({ "name": "w", "steps": { "a": { "function": 7 } } }),
        json!({ "name": "w", "steps": { "a": { "compensate": "later" } } }),
        json!({ "name": "w", "steps": { "a": { "retry": { "backoff": "random" } } } }),
        json!({ "name": "w", "steps": { "a": { "wait_for": { "timeout": "1s" } } } }),
        json!({ "name": "w", "steps": { "a": { "wait": "1s" } }, "extra": true }),
        json!({ "name": "w", "steps": { "a": { "wait": "1s" } }, "schedules": { "d": { "timezone": "UTC" } } }),
        json!({ "name": "w", "steps": { "a": { "wait": "1s" } }, "schedules": { "d": { "cron": "* * * * *", "overlap": "queue" } } }),
        json!({ "name": "w", "steps": { "a": { "wait": "1s" } }, "schedules": "0 0 * * *" }),
    ];
    for case in cases {
        assert!(!conforms(&case).is_empty(), "the schema accepts {case}");
        let text = case.to_string();
        let typed = WorkflowDefinition::parse(&text, Format::Json);
        // `steps: {}` and a bad step name are left to validation, the rest to parsing.
        let steps = case["steps"].as_object();
        let left_to_validation = steps.is_some_and(|s| s.is_empty() || s.contains_key("1a"));
        assert_eq!(typed.is_err(), !left_to_validation, "{case}");
    }
}
