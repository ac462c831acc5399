//! The JSON Schema of the definition format, generated from its types.

use crate::definition::WorkflowDefinition;

/// The schema as pretty-printed JSON, as committed in `schema/workflow.schema.json`.
pub fn workflow_schema_json() -> String {
    let schema = schemars::schema_for!(WorkflowDefinition);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises to JSON");
    text.push('\n');
    text
}
