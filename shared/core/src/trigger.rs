//! Event triggers: the `triggers:` of a definition, matching an event
//! against a trigger's EventBridge-style pattern, and the execution a
//! matching event starts.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
