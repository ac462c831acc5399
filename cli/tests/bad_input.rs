//! What the user gets wrong: each mistake exits 2 with one message naming
//! it, and leaves nothing half-written behind.

mod common;

use common::{Outcome, Sandbox, path_arg, repo_file, test_workflow};

fn bad_workflow(name: &str) -> String {
    path_arg(&test_workflow(&format!("bad/{name}")))
}

fn saga() -> String {
    path_arg(&repo_file("workflows/order-saga.yaml"))
}

/// Exit 2, nothing on stdout, exactly one `error:` message on stderr that
/// contains every `expected` fragment.
fn assert_rejected(outcome: &Outcome, expected: &[&str]) {
    outcome.expect_code(2);
    assert_eq!(
        outcome.stdout,
        "",
        "`baton {}` printed on stdout",
        outcome.args.join(" ")
    );
    let messages = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(
        messages, 1,
        "expected one error message:\n{}",
        outcome.stderr
    );
    assert!(outcome.stderr.starts_with("error: "), "{}", outcome.stderr);
    for fragment in expected {
        assert!(
            outcome.stderr.contains(fragment),
            "stderr lacks `{fragment}`:\n{}",
            outcome.stderr
        );
    }
}

/// The database does not exist, or holds no workflow and no execution.
fn assert_nothing_written(sb: &Sandbox) {
    if !sb.db_path().exists() {
        return;
    }
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM workflows"),
        0,
        "a workflow version was registered"
    );
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM executions"),
        0,
        "an execution was created"
    );
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM tasks"),
        0,
        "a task was queued"
    );
}

#[test]
fn yaml_syntax_error_is_rejected_by_run_start_and_validate() {
    let file = bad_workflow("syntax-error.yaml");
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &file]);
        assert_rejected(&outcome, &["syntax-error.yaml", "invalid YAML", "line 6"]);
        assert_nothing_written(&sb);
    }

    let sb = Sandbox::new();
    let outcome = sb.baton(&["validate", &file]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("invalid YAML") && outcome.stderr.contains("line 6"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let file = bad_workflow("several-problems.yaml");
    let problems = [
        "`several problems` is not a valid workflow name",
        "step `reserve`, `needs`: unknown step `validate`",
        "step `charge`, `needs`: a step cannot need itself",
        "step `charge`, `timeout`: `soon` is not a duration",
        "step `ship`, `retry.max_attempts`: must be between 1 and 100, not 1000",
    ];
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &file, "--input", r#"{"orderId":"o-1"}"#]);
        assert_rejected(&outcome, &problems);
        assert_nothing_written(&sb);
    }

    let sb = Sandbox::new();
    let outcome = sb.baton(&["validate", &file]);
    outcome.expect_code(2);
    for problem in problems {
        assert!(
            outcome.stderr.contains(problem),
            "validate does not report `{problem}`:\n{}",
            outcome.stderr
        );
    }
    assert!(
        outcome.stderr.contains("problems in workflow definition"),
        "{}",
        outcome.stderr
    );

    let outcome = sb.baton(&["validate", "--json", &file]);
    let report = outcome.expect_code(2).json();
    assert_eq!(report["valid"], false);
    let messages: Vec<String> = report["problems"]
        .as_array()
        .expect("a list of problems")
        .iter()
        .map(|p| p["message"].as_str().unwrap_or("").to_string())
        .collect();
    for fragment in [
        "not a valid workflow name",
        "unknown step",
        "cannot need itself",
        "not a duration",
        "between 1 and 100",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(fragment)),
            "no `{fragment}` in {messages:?}"
        );
    }
    assert!(
        !sb.db_path().exists(),
        "validate does not touch the database"
    );
}

#[test]
fn malformed_input_json_is_rejected() {
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &saga(), "--input", r#"{"orderId":"#]);
        assert_rejected(
            &outcome,
            &["the input from the command line is not valid JSON"],
        );
        assert_nothing_written(&sb);

        let outcome = sb.baton(&[command, &saga(), "--input", "@missing.json"]);
        assert_rejected(&outcome, &["cannot read the input file missing.json"]);
        assert_nothing_written(&sb);
    }
}

#[test]
fn unknown_functions_are_all_named() {
    let file = bad_workflow("unknown-function.yaml");
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &file]);
        assert_rejected(
            &outcome,
            &[
                "workflow `unknown-function`",
                "`no-such-function`",
                "`undo-nothing`",
            ],
        );
        assert_nothing_written(&sb);
    }
}

#[test]
fn oversized_input_is_rejected() {
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        // One byte over the 256 KiB limit once serialised; too long for a
        // single command-line argument, so it goes through a file.
        let padding = "x".repeat(256 * 1024);
        let input = serde_json::json!({ "orderId": "o-big", "padding": padding }).to_string();
        std::fs::write(sb.path().join("big.json"), &input).unwrap();
        let outcome = sb.baton(&[command, &saga(), "--input", "@big.json"]);
        assert_rejected(
            &outcome,
            &[&format!(
                "the input is {} bytes, more than the 262144-byte limit",
                input.len()
            )],
        );
        assert_nothing_written(&sb);
    }
}

#[test]
fn unknown_ids_are_rejected() {
    let sb = Sandbox::new();
    // A database with one execution, so the commands have something to look in.
    sb.baton(&[
        "run",
        &saga(),
        "--id",
        "known",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ])
    .expect_code(0);
    assert_rejected(&sb.baton(&["status", "nope"]), &["no execution `nope`"]);
    assert_rejected(&sb.baton(&["history", "nope"]), &["no execution `nope`"]);
    assert_rejected(
        &sb.baton(&["signal", "nope", "approval"]),
        &["no execution `nope`"],
    );
    assert_rejected(&sb.baton(&["cancel", "nope"]), &["no execution `nope`"]);
    assert_rejected(
        &sb.baton(&["dlq", "show", "nope"]),
        &["no dead letter `nope`"],
    );
    assert_rejected(
        &sb.baton(&["dlq", "redrive", "nope"]),
        &["no dead letter `nope`"],
    );
    assert_rejected(
        &sb.baton(&["list", "--status", "done"]),
        &["unknown status `done`"],
    );
    assert_eq!(sb.count("SELECT COUNT(*) FROM executions"), 1);
}
