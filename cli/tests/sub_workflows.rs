//! Sub-workflows and per-item pipelines end to end on the embedded backend:
//! `baton run` of a workflow whose step runs another deployed workflow as a
//! child execution, with command steps that log what they do.

mod common;

use common::{Sandbox, path_arg};
use serde_json::Value;

/// Appends `{execution_id} {function}` to `calls.txt`; fails with the
/// error name in `$FAIL_{function}` if set (`FAIL_pack=1` fails only when
/// the input is 1), else echoes its input with the function's name.
/// Appends `{execution id} {function}` to `calls.txt`; fails for good if
/// `$FAIL_{function}` is set (to an empty string: always; else when the
/// input's JSON equals it), or echoes its input with the function's name.
const STEP_PY: &str = r#"
import json, os, sys
function = sys.argv[1]
given = json.load(sys.stdin)
with open("calls.txt", "a") as log:
    log.write(f"{os.environ['BATON_EXECUTION_ID']} {function}\n")
fail = os.environ.get("FAIL_" + function)
if fail is not None and (fail == "" or json.dumps(given) == fail):
    sys.stderr.write(f"{function} broke\n")
    sys.exit(3)
print(json.dumps({"by": function, "input": given}))
"#;

const FUNCTIONS: [&str; 9] = [
    "authorize",
    "void",
    "capture",
    "refund",
    "reserve",
    "release",
    "ship",
    "pick",
    "pack",
];

const PAYMENT: &str = r#"name: payment
defaults: { retry: { max_attempts: 1 } }
steps:
  authorize:
    function: authorize
    input: { amount: "${ input.amount }" }
    compensate: { function: void }
  capture:
    function: capture
    needs: [authorize]
    compensate: { function: refund }
output: { paid: "${ input.amount }" }
"#;

const ORDER: &str = r#"name: order
defaults: { retry: { max_attempts: 1 } }
steps:
  reserve:
    function: reserve
    compensate: { function: release }
  pay:
    workflow: payment
    needs: [reserve]
    input: { amount: "${ input.total }" }
  ship:
    function: ship
    needs: [pay]
    input: "${ steps.pay.output }"
    mutates: false
output: "${ steps.ship.output.input }"
"#;

const LINE: &str = r#"name: line
defaults: { retry: { max_attempts: 1 } }
steps:
  pick:
    function: pick
    input: "${ input }"
    mutates: false
  pack:
    function: pack
    needs: [pick]
    input: "${ input }"
    mutates: false
output: "${ steps.pack.output.input }"
"#;

const BATCH: &str = r#"name: batch
steps:
  lines:
    workflow: line
    for_each: "${ input.items }"
    max_concurrency: 2
    tolerated_failures: 1
    input: "${ item }"
output: "${ steps.lines.output }"
"#;

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("step.py"), STEP_PY).unwrap();
    let mut config = String::new();
    for f in FUNCTIONS {
        config.push_str(&format!(
            "[functions.{f}]\ncommand = [\"python3\", \"step.py\", \"{f}\"]\n"
        ));
    }
    std::fs::write(sb.path().join("baton.toml"), config).unwrap();
    for (name, text) in [
        ("payment", PAYMENT),
        ("order", ORDER),
        ("line", LINE),
        ("batch", BATCH),
    ] {
        std::fs::write(sb.path().join(format!("{name}.yaml")), text).unwrap();
    }
    sb
}

fn file(sb: &Sandbox, name: &str) -> String {
    path_arg(&sb.path().join(format!("{name}.yaml")))
}

fn status(sb: &Sandbox, id: &str) -> Value {
    sb.baton(&["status", id, "--json"]).expect_code(0).json()
}

/// `baton run` of the order with `{"total": total}`, the function named by
/// `fail` (if any) failing for good.
fn run_order(sb: &Sandbox, id: &str, total: u32, fail: Option<&str>) -> common::Outcome {
    let input = format!(r#"{{"total": {total}}}"#);
    let env: Vec<(String, &str)> = fail
        .map(|f| (format!("FAIL_{f}"), ""))
        .into_iter()
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    sb.baton_env(
        &["run", &file(sb, "order"), "--id", id, "--input", &input],
        &env,
    )
}

fn calls(sb: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sb.path().join("calls.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_step_runs_a_deployed_workflow_as_a_child_and_takes_its_output() {
    let sb = sandbox();
    sb.baton(&["deploy", &file(&sb, "payment")]).expect_code(0);
    run_order(&sb, "o-1", 42, None).expect_code(0);
    assert_eq!(status(&sb, "o-1")["state"]["output"]["paid"], 42);
    let child = status(&sb, "o-1:pay");
    assert_eq!(child["state"]["status"], "succeeded", "{child:#}");
    assert_eq!(child["state"]["parent"]["execution_id"], "o-1");
    assert_eq!(
        calls(&sb),
        [
            "o-1 reserve",
            "o-1:pay authorize",
            "o-1:pay capture",
            "o-1 ship"
        ]
    );
    // The child's start is in its history, naming its parent.
    let history = sb.baton(&["history", "o-1:pay"]);
    history.expect_code(0);
    assert!(
        history
            .stdout
            .contains("started for step `pay` of execution o-1"),
        "{}",
        history.stdout
    );
}

#[test]
fn a_workflow_naming_a_child_that_is_not_deployed_is_refused_before_it_runs() {
    let sb = sandbox();
    let out = sb.baton(&["run", &file(&sb, "order"), "--id", "o-1"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("workflow `payment` is not deployed"),
        "{}",
        out.stderr
    );
    assert!(calls(&sb).is_empty(), "nothing ran");
    sb.baton(&["deploy", &file(&sb, "order")]).expect_code(2);
}

#[test]
fn a_later_failure_undoes_the_child_with_its_own_compensations_in_reverse() {
    let sb = sandbox();
    sb.baton(&["deploy", &file(&sb, "payment")]).expect_code(0);
    run_order(&sb, "o-2", 7, Some("ship")).expect_code(4);
    assert_eq!(status(&sb, "o-2")["state"]["status"], "compensated");
    assert_eq!(status(&sb, "o-2:pay")["state"]["status"], "compensated");
    assert_eq!(
        calls(&sb)[4..],
        ["o-2:pay refund", "o-2:pay void", "o-2 release"],
        "the child undoes capture then authorize, then the parent its own step"
    );
}

#[test]
fn a_failing_child_fails_the_step_with_its_error_after_undoing_itself() {
    let sb = sandbox();
    sb.baton(&["deploy", &file(&sb, "payment")]).expect_code(0);
    run_order(&sb, "o-3", 5, Some("capture")).expect_code(4);
    let parent = status(&sb, "o-3");
    let pay = &parent["state"]["steps"][1];
    assert_eq!(pay["status"], "failed", "{parent:#}");
    assert_eq!(pay["error"]["name"], "CommandFailed");
    assert!(
        pay["error"]["message"]
            .as_str()
            .unwrap()
            .contains("capture broke"),
        "{parent:#}"
    );
    assert_eq!(status(&sb, "o-3:pay")["state"]["status"], "compensated");
    let calls = calls(&sb);
    assert!(
        calls.ends_with(&["o-3:pay void".to_string(), "o-3 release".to_string()]),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("ship")));
}

#[test]
fn a_for_each_runs_a_pipeline_per_element_and_tolerates_a_failure() {
    let sb = sandbox();
    sb.baton(&["deploy", &file(&sb, "line")]).expect_code(0);
    let out = sb.baton_env(
        &[
            "run",
            &file(&sb, "batch"),
            "--id",
            "b-1",
            "--input",
            r#"{"items": [1, 2, 3]}"#,
        ],
        &[("FAIL_pack", "2")],
    );
    out.expect_code(0);
    assert_eq!(
        status(&sb, "b-1")["state"]["output"],
        serde_json::json!([1, null, 3])
    );
    assert_eq!(status(&sb, "b-1:lines:1")["state"]["status"], "failed");
    // Two failures are more than the one tolerated.
    let out = sb.baton_env(
        &[
            "run",
            &file(&sb, "batch"),
            "--id",
            "b-2",
            "--input",
            r#"{"items": [2, 2, 3]}"#,
        ],
        &[("FAIL_pack", "2")],
    );
    out.expect_code(3);
}

#[test]
fn cancelling_a_parent_cancels_its_child() {
    let sb = sandbox();
    let approval = "name: approval\nsteps:\n  decision:\n    wait_for: { signal: approved }\n";
    let expense = "name: expense\nsteps:\n  approve:\n    workflow: approval\n";
    std::fs::write(sb.path().join("approval.yaml"), approval).unwrap();
    std::fs::write(sb.path().join("expense.yaml"), expense).unwrap();
    sb.baton(&["deploy", &file(&sb, "approval")]).expect_code(0);
    sb.baton(&["start", &file(&sb, "expense"), "--id", "e-1"])
        .expect_code(0);
    assert_eq!(status(&sb, "e-1:approve")["state"]["status"], "running");
    sb.baton(&["cancel", "e-1", "--reason", "withdrawn"])
        .expect_code(0);
    let child = status(&sb, "e-1:approve");
    assert_eq!(child["state"]["status"], "cancelled", "{child:#}");
    assert!(
        child["state"]["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("withdrawn")
    );
    assert_eq!(status(&sb, "e-1")["state"]["status"], "cancelled");
}
