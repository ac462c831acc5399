//! Warnings about a valid definition that probably does not say what its
//! author meant: strings written in another tool's template syntax, which
//! Baton passes on as literal text.

use serde_json::Value;

use crate::definition::WorkflowDefinition;

/// Fields of free text, never evaluated, so never warned about.
const PROSE: &[&str] = &["description", "reason"];

/// One string that looks like another tool's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the string is, as `steps.charge.input.amount`.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Every string of the definition that looks like a template of another
/// tool (`{{ x }}`, `$.x`, `$steps.x`), with the `${ ... }` it may mean.
pub fn warnings(definition: &WorkflowDefinition) -> Vec<Warning> {
    let mut found = Vec::new();
    walk(&definition.to_json(), "", &mut found);
    found
}

fn walk(value: &Value, at: &str, found: &mut Vec<Warning>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                if PROSE.contains(&key.as_str()) {
                    continue;
                }
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                walk(value, &path, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{at}[{i}]"), found);
            }
        }
        Value::String(text) => {
            if let Some(message) = foreign_template(text) {
                found.push(Warning {
                    at: at.to_string(),
                    message,
                });
            }
        }
        _ => {}
    }
}

fn foreign_template(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if let Some(start) = trimmed.find("{{")
        && let Some(len) = trimmed[start..].find("}}")
    {
        let inner = trimmed[start + 2..start + len].trim();
        return Some(format!(
            "`{trimmed}` is passed on as literal text: `{{{{ }}}}` is not Baton's syntax; an expression is written `${{ {inner} }}`"
        ));
    }
    for prefix in ["$.", "$steps.", "$input.", "$input", "$steps"] {
        if let Some(rest) = trimmed.strip_prefix(prefix)
            && !trimmed.starts_with("${")
        {
            let meant = match prefix {
                "$." => format!("input.{rest}"),
                _ => format!("{}{rest}", &prefix[1..]),
            };
            return Some(format!(
                "`{trimmed}` is passed on as literal text; an expression is written `${{ {meant} }}`"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Format;

    #[test]
    fn other_tools_templates_are_warned_about_and_prose_is_not() {
        let text = r#"
name: w
description: "uses {{ handlebars }} in prose, which is fine"
steps:
  a:
    function: f
    input: { id: "{{ input.orderId }}", path: "$.orderId", total: "$steps.a.output.total", ok: "${ input.x }", note: "$5 off" }
"#;
        let definition = WorkflowDefinition::parse(text, Format::Yaml).unwrap();
        let found: Vec<String> = warnings(&definition)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "steps.a.input.id: `{{ input.orderId }}` is passed on as literal text: `{{ }}` is not Baton's syntax; an expression is written `${ input.orderId }`",
                "steps.a.input.path: `$.orderId` is passed on as literal text; an expression is written `${ input.orderId }`",
                "steps.a.input.total: `$steps.a.output.total` is passed on as literal text; an expression is written `${ steps.a.output.total }`",
            ]
        );
    }
}
