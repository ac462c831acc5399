//! Triggers in a definition: every problem in their names, patterns and
//! inputs reported at once, unknown fields caught with a suggestion, and a
//! valid trigger matching the events it names.

use baton_core::definition::{Format, ParseError, WorkflowDefinition};
use baton_core::trigger::{Trigger, execution_id};
use baton_core::{ValidationErrors, Workflow};
use serde_json::json;

const STEPS: &str = "steps:\n  a: { wait: 1s }\n";

fn problems(text: &str) -> Vec<String> {
    match Workflow::from_text(text, Format::Yaml) {
        Ok(_) => panic!("should not validate:\n{text}"),
        Err(ValidationErrors { problems }) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_trigger_problem_is_reported_with_its_place() {
    let text = format!(
        r#"name: w
{STEPS}triggers:
  - name: placed
    pattern:
      source: orders
      detail: {{ status: [{{ prefx: new }}] }}
    input: "${{ input.orderId }}"
  - name: placed
    pattern: {{ source: [orders] }}
  - name: "bad name"
    pattern: {{}}
"#
    );
    assert_eq!(
        problems(&text),
        [
            "`triggers.placed.pattern.source`: must be a list of allowed values or matchers, such as `[\"orders\"]` or `[{\"prefix\": \"...\"}]`, or a map of nested fields; EventBridge takes no bare `\"orders\"`",
            "`triggers.placed.pattern.detail.status`: `prefx` is not a matcher (did you mean `prefix`?); use one of `prefix`, `suffix`, `equals-ignore-case`, `anything-but`, `exists`, `numeric`, `wildcard`",
            "`triggers.placed.input`: `input.orderId` names `input` (it exists in steps, not before the execution starts); a trigger's input may read only `event`, such as `${ event.detail }`",
            "`triggers.placed`: duplicate trigger name",
            "`triggers[2].name`: `bad name` is not a trigger name: use 1 to 64 letters, digits, `-` and `_`",
            "`triggers[2].pattern`: is empty: a pattern names at least one field of the event, such as `source`",
        ]
    );
}

#[test]
fn unknown_trigger_fields_are_found_but_pattern_fields_are_free() {
    let text = format!(
        "name: w\n{STEPS}triggers:\n  - name: t\n    patern: {{ source: [x] }}\n    inptu: {{}}\n"
    );
    match WorkflowDefinition::parse(&text, Format::Yaml) {
        Err(ParseError::UnknownFields(fields)) => {
            let shown: Vec<String> = fields.iter().map(ToString::to_string).collect();
            assert_eq!(
                shown,
                [
                    "triggers[0]: unknown field `patern` (did you mean `pattern`?) (line 6)",
                    "triggers[0]: unknown field `inptu` (did you mean `input`?) (line 7)",
                ]
            );
        }
        other => panic!("expected unknown fields, got {other:?}"),
    }
    // Any field name of an event may appear in a pattern.
    let text = format!(
        "name: w\n{STEPS}triggers:\n  - name: t\n    pattern: {{ source: [x], detail: {{ whatever-field: [1], nested: {{ deep: [{{ exists: true }}] }} }} }}\n"
    );
    Workflow::from_text(&text, Format::Yaml).expect("valid");
}

#[test]
fn the_example_trigger_matches_what_it_names() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/order-placed.yaml"
    ))
    .expect("the example");
    let workflow = Workflow::from_text(&text, Format::Yaml).expect("valid");
    let definition = &workflow.definition.triggers[0];
    let trigger = Trigger::compile(definition).expect("compiles");
    let event = |detail| {
        json!({
            "id": "e-1", "source": "shop.orders", "detail-type": "Order Placed",
            "time": "2026-01-01T00:00:00Z", "detail": detail
        })
    };
    let placed = event(json!({"orderId": "o-9", "total": 42}));
    assert!(trigger.matches(&placed));
    assert_eq!(
        trigger.input(&placed).unwrap(),
        json!({"orderId": "o-9", "eventId": "e-1"})
    );
    assert!(trigger.matches(&event(
        json!({"orderId": "o-9", "total": 1, "channel": "web"})
    )));
    assert!(!trigger.matches(&event(
        json!({"orderId": "o-9", "total": 1, "channel": "test"})
    )));
    assert!(!trigger.matches(&event(json!({"orderId": "o-9", "total": 0}))));
    let mut other_source = placed.clone();
    other_source["source"] = json!("shop.returns");
    assert!(!trigger.matches(&other_source));
    assert_eq!(
        execution_id("order-placed", "placed", "e-1"),
        "order-placed:placed:e-1"
    );
}
