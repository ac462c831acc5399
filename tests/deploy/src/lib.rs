//! Reading what Baton deploys, for the checks in `tests/`.
//!
//! - [`Template`]: `template.yaml` parsed with its CloudFormation short-form
//!   tags (`!Ref`, `!GetAtt`, `!Sub`, ...) turned into their long form
//!   (`{"Ref": ...}`, `{"Fn::GetAtt": [...]}`), so a check can tell a
//!   reference from a literal.
//! - [`filter_matches`]: whether a CloudWatch Logs JSON filter pattern matches
//!   a log line, for the metric filters on the functions' JSON logs.
//! - [`repo_path`]: files relative to the repository root.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A path relative to the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(relative)
}

/// A YAML node in CloudFormation's long form.
struct Node(Value);

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        let serde_saphyr::Tagged(Untagged(value), tag) =
            serde_saphyr::Tagged::<Untagged>::deserialize(deserializer)?;
        match tag {
            None => Ok(Node(value)),
            Some(tag) => long_form(&tag, value).map(Node).map_err(de::Error::custom),
        }
    }
}

/// The node's value, its children read as [`Node`]s so their tags are kept.
struct Untagged(Value);

impl<'de> serde::Deserialize<'de> for Untagged {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Untagged, D::Error> {
        deserializer.deserialize_any(UntaggedVisitor).map(Untagged)
    }
}

struct UntaggedVisitor;

impl<'de> Visitor<'de> for UntaggedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Node::deserialize_from(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Node(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((key, Node(value))) = map.next_entry::<String, Node>()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

impl Node {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        <Node as serde::Deserialize>::deserialize(d).map(|n| n.0)
    }
}

/// `!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`,
/// `!Condition C` → `{"Condition": "C"}`, any other `!Name v` → `{"Fn::Name": v}`.
fn long_form(tag: &str, value: Value) -> Result<Value, String> {
    let name = tag.trim_start_matches('!');
    let (key, value) = match name {
        "Ref" => ("Ref".to_string(), value),
        "Condition" => ("Condition".to_string(), value),
        "GetAtt" => {
            let value = match value {
                Value::String(text) => match text.split_once('.') {
                    Some((resource, attribute)) => Value::Array(vec![
                        Value::String(resource.into()),
                        Value::String(attribute.into()),
                    ]),
                    None => return Err(format!("`!GetAtt {text}` has no attribute")),
                },
                other => other,
            };
            ("Fn::GetAtt".to_string(), value)
        }
        "Base64" | "Cidr" | "Equals" | "FindInMap" | "GetAZs" | "If" | "ImportValue" | "Join"
        | "Not" | "And" | "Or" | "Select" | "Split" | "Sub" | "Transform" | "Length"
        | "ToJsonString" => (format!("Fn::{name}"), value),
        _ => return Err(format!("unknown tag `{tag}`")),
    };
    Ok(Value::Object(Map::from_iter([(key, value)])))
}

/// A CloudFormation template in long form.
#[derive(Debug, Clone)]
pub struct Template {
    pub doc: Value,
}

/// A number a property resolves to: a literal, or a `Ref` to a `Number`
/// parameter (its default and bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub value: f64,
    /// The parameter it came from, if any.
    pub parameter: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        // YAML 1.2 booleans only: CloudFormation reads `Y` or `on` as text.
        let options = serde_saphyr::options! { strict_booleans: true };
        let Node(doc) =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
        Ok(Template { doc })
    }

    /// The repository's `template.yaml`.
    pub fn load() -> Template {
        let path = repo_path("template.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Template::parse(&text).unwrap_or_else(|e| panic!("template.yaml does not parse: {e}"))
    }

    /// `(logical id, resource)` pairs, in template order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.doc["Resources"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(id, r)| (id.as_str(), r))
    }

    pub fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources().filter(move |(_, r)| r["Type"] == kind)
    }

    pub fn resource(&self, id: &str) -> Option<&Value> {
        self.doc["Resources"].get(id)
    }

    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.doc["Parameters"].get(name)
    }

    /// A function property, falling back to `Globals.Function`.
    pub fn function_property<'a>(&'a self, function: &'a Value, name: &str) -> Option<&'a Value> {
        function["Properties"]
            .get(name)
            .or_else(|| self.doc["Globals"]["Function"].get(name))
    }

    /// The number `value` stands for: a literal, or a `Ref` to a `Number`
    /// parameter with a numeric default. `None` for anything else.
    pub fn number(&self, value: &Value) -> Option<Resolved> {
        if let Some(n) = as_number(value) {
            return Some(Resolved {
                value: n,
                parameter: None,
                min: None,
                max: None,
            });
        }
        let name = value.get("Ref")?.as_str()?;
        let parameter = self.parameter(name)?;
        if parameter["Type"] != "Number" {
            return None;
        }
        Some(Resolved {
            value: as_number(&parameter["Default"])?,
            parameter: Some(name.to_string()),
            min: parameter.get("MinValue").and_then(as_number),
            max: parameter.get("MaxValue").and_then(as_number),
        })
    }
}

/// A number, or a string holding one (CloudFormation accepts both).
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The resource a `!GetAtt R.attribute` names, if `value` is one with that attribute.
pub fn get_att<'a>(value: &'a Value, attribute: &str) -> Option<&'a str> {
    let parts = value.get("Fn::GetAtt")?.as_array()?;
    match parts.as_slice() {
        [resource, Value::String(a)] if a == attribute => resource.as_str(),
        _ => None,
    }
}

/// The name a `!Ref X` refers to.
pub fn reference(value: &Value) -> Option<&str> {
    value.get("Ref")?.as_str()
}

/// `value` as a list: an array's items, or the value itself.
pub fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Whether a CloudWatch Logs JSON filter pattern matches `line`.
///
/// Supports what the template uses: `{ TERM }` or `{ (TERM) && (TERM) ... }`,
/// each term `$.a.b = "text"`, `$.a.b != "text"` or `$.a.b = number`. Any
/// other syntax is an error, so a pattern this cannot read is not passed
/// silently. A line that is not JSON never matches.
pub fn filter_matches(pattern: &str, line: &str) -> Result<bool, String> {
    let body = pattern
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .ok_or_else(|| format!("`{pattern}` is not a JSON filter pattern"))?;
    if body.contains("||") {
        return Err(format!("`{pattern}`: `||` is not supported here"));
    }
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return Ok(false);
    };
    for term in body.split("&&") {
        let term = term.trim();
        let term = term
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(term)
            .trim();
        let (selector, negate, expected) = if let Some((s, v)) = term.split_once("!=") {
            (s.trim(), true, v.trim())
        } else if let Some((s, v)) = term.split_once('=') {
            (s.trim(), false, v.trim())
        } else {
            return Err(format!("`{term}` is not `$.field = value`"));
        };
        let path = selector
            .strip_prefix("$.")
            .ok_or_else(|| format!("`{selector}` is not a `$.` selector"))?;
        let actual = path.split('.').try_fold(&event, |node, key| node.get(key));
        let equal = match (
            expected.strip_prefix('"').and_then(|v| v.strip_suffix('"')),
            actual,
        ) {
            (Some(text), Some(Value::String(actual))) => actual == text,
            (Some(_), _) => false,
            (None, Some(actual)) => {
                let wanted: f64 = expected
                    .parse()
                    .map_err(|_| format!("`{expected}` is neither quoted text nor a number"))?;
                as_number(actual) == Some(wanted)
            }
            (None, None) => false,
        };
        if equal == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn short_form_tags_become_long_form() {
        let t = Template::parse(
            "A: !Ref X\nB: !GetAtt Q.Arn\nC: !Sub \"${X}-y\"\nD: !If [C, !Ref Y, !Ref AWS::NoValue]\nE: [!GetAtt Q.QueueName]\nF: plain\nG: 5\n",
        )
        .unwrap();
        assert_eq!(
            t.doc,
            json!({
                "A": {"Ref": "X"},
                "B": {"Fn::GetAtt": ["Q", "Arn"]},
                "C": {"Fn::Sub": "${X}-y"},
                "D": {"Fn::If": ["C", {"Ref": "Y"}, {"Ref": "AWS::NoValue"}]},
                "E": [{"Fn::GetAtt": ["Q", "QueueName"]}],
                "F": "plain",
                "G": 5
            })
        );
        assert!(Template::parse("A: !Nope x\n").is_err());
    }

    #[test]
    fn numbers_resolve_through_number_parameters() {
        let t = Template::parse(
            "Parameters:\n  N: {Type: Number, Default: 5, MinValue: 2}\n  S: {Type: String, Default: '5'}\n",
        )
        .unwrap();
        let n = t.number(&json!({"Ref": "N"})).unwrap();
        assert_eq!((n.value, n.min), (5.0, Some(2.0)));
        assert_eq!(t.number(&json!(3)).map(|r| r.value), Some(3.0));
        assert_eq!(t.number(&json!({"Ref": "S"})), None);
        assert_eq!(t.number(&json!({"Ref": "Missing"})), None);
    }

    #[test]
    fn json_filter_patterns_match_by_field() {
        let line = r#"{"level":"WARN","fields":{"message":"execution finished","status":"compensation_failed","n":3}}"#;
        let both = r#"{ ($.fields.message = "execution finished") && ($.fields.status = "compensation_failed") }"#;
        assert_eq!(filter_matches(both, line), Ok(true));
        assert_eq!(
            filter_matches(r#"{ $.fields.status = "failed" }"#, line),
            Ok(false)
        );
        assert_eq!(
            filter_matches(r#"{ $.fields.status != "failed" }"#, line),
            Ok(true)
        );
        assert_eq!(filter_matches(r#"{ $.fields.n = 3 }"#, line), Ok(true));
        assert_eq!(
            filter_matches(r#"{ $.fields.missing = "x" }"#, line),
            Ok(false)
        );
        assert_eq!(
            filter_matches(r#"{ $.fields.status = "x" }"#, "not json"),
            Ok(false)
        );
        assert!(filter_matches(r#"{ $.a = "x" || $.b = "y" }"#, line).is_err());
        assert!(filter_matches("ERROR", line).is_err());
    }
}
