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

/// JSON nesting `depth` arrays around `1`, as text.
fn nested_json(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn approval() -> String {
    path_arg(&test_workflow("approval.yaml"))
}

#[test]
fn a_deeply_nested_expression_is_a_problem_not_a_crash() {
    let sb = Sandbox::new();
    let depth = 10_000;
    let definition = format!(
        "name: nested\nsteps:\n  a:\n    function: noop\n    mutates: false\n    if: \"${{ {}true{} }}\"\n",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let file = sb.path().join("nested.yaml");
    std::fs::write(&file, definition).unwrap();
    let file = path_arg(&file);

    let outcome = sb.baton(&["validate", &file]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("step `a`, `if`: expression `((((")
            && outcome
                .stderr
                .contains("nests deeper than the limit of 24 levels"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.len() < 1000,
        "the message quotes the expression shortened:\n{}",
        outcome.stderr
    );

    let report = sb
        .baton(&["validate", "--json", &file])
        .expect_code(2)
        .json();
    assert_eq!(report["problems"][0]["step"], "a");
    assert_eq!(report["problems"][0]["field"], "if");

    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &file]);
        assert_rejected(&outcome, &["nests deeper than the limit of 24 levels"]);
        assert_nothing_written(&sb);
    }
}

#[test]
fn input_nested_too_deep_is_refused_before_anything_is_written() {
    for command in ["run", "start"] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&[command, &saga(), "--input", &nested_json(65)]);
        assert_rejected(
            &outcome,
            &[
                "the input from the command line nests arrays and objects deeper than the limit of 64 levels",
            ],
        );
        assert_nothing_written(&sb);

        // Far deeper than any JSON reader goes, from a file.
        std::fs::write(sb.path().join("deep.json"), nested_json(100_000)).unwrap();
        let outcome = sb.baton(&[command, &saga(), "--input", "@deep.json"]);
        assert_rejected(
            &outcome,
            &[
                "the input from deep.json nests arrays and objects deeper than the limit of 64 levels",
            ],
        );
        assert_nothing_written(&sb);
    }
}

#[test]
fn input_at_the_depth_limit_is_started_and_stays_readable() {
    let sb = Sandbox::new();
    // The object is one level, the arrays in it the other 63.
    let input = format!(r#"{{"orderId": "o-1", "deep": {}}}"#, nested_json(63));
    sb.baton(&["start", &approval(), "--id", "deep-1", "--input", &input])
        .expect_code(0);
    let status = sb
        .baton(&["status", "deep-1", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(status["state"]["status"], "running");
    sb.baton(&["history", "deep-1"]).expect_code(0);
    sb.baton(&["cancel", "deep-1"]).expect_code(0);
    sb.baton(&["status", "deep-1"]).expect_code(0);
}

#[test]
fn a_signal_nested_too_deep_is_refused_and_the_execution_stays_readable() {
    let sb = Sandbox::new();
    sb.baton(&[
        "start",
        &approval(),
        "--id",
        "sig-1",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ])
    .expect_code(0);
    let before = sb.count("SELECT COUNT(*) FROM history");
    let outcome = sb.baton(&["signal", "sig-1", "approval", "--data", &nested_json(65)]);
    assert_rejected(
        &outcome,
        &[
            "the signal data from the command line nests arrays and objects deeper than the limit of 64 levels",
        ],
    );
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM history"),
        before,
        "nothing was applied"
    );
    sb.baton(&["status", "sig-1"]).expect_code(0);
    sb.baton(&["signal", "sig-1", "approval", "--data", &nested_json(64)])
        .expect_code(0);
    sb.baton(&["history", "sig-1"]).expect_code(0);
}

#[test]
fn execution_ids_the_api_would_refuse_are_refused() {
    let long = format!("{}../x", "a".repeat(306));
    let cases: [(&str, &str); 5] = [
        ("", "the execution id is empty"),
        (&long, "is 310 characters long, more than the limit of 128"),
        ("../etc", "execution id `../etc` contains `/`"),
        ("..", "execution id `..` is a path segment"),
        ("order 1", "execution id `order 1` contains ' '"),
    ];
    for command in ["run", "start"] {
        for (id, message) in cases {
            let sb = Sandbox::new();
            let outcome = sb.baton(&[
                command,
                &saga(),
                "--id",
                id,
                "--input",
                r#"{"orderId":"o-1"}"#,
            ]);
            assert_rejected(&outcome, &[message]);
            assert_nothing_written(&sb);
        }
    }
    // The ids schedules and the examples use are fine.
    let sb = Sandbox::new();
    for id in ["order-1001", "nightly-report-2026-03-08T05:00:00Z"] {
        sb.baton(&[
            "start",
            &approval(),
            "--id",
            id,
            "--input",
            r#"{"orderId":"o-1"}"#,
        ])
        .expect_code(0);
        sb.baton(&["status", id]).expect_code(0);
    }
}

#[test]
fn a_definition_nested_too_deep_is_refused_naming_the_limit() {
    let sb = Sandbox::new();
    let yaml = format!(
        "name: deep\nsteps:\n  a:\n    wait: 1s\n    input: {}\n",
        nested_json(100_000)
    );
    let json = format!(
        r#"{{"name": "deep", "steps": {{"a": {{"wait": "1s", "input": {}}}}}}}"#,
        nested_json(100_000)
    );
    for (name, text) in [("deep.yaml", yaml), ("deep.json", json)] {
        std::fs::write(sb.path().join(name), text).unwrap();
        let outcome = sb.baton(&["validate", name]);
        outcome.expect_code(2);
        assert!(
            outcome.stderr.contains(
                "the definition nests arrays and objects deeper than the limit of 64 levels"
            ),
            "{}",
            outcome.stderr
        );
        let outcome = sb.baton(&["start", name]);
        assert_rejected(&outcome, &["deeper than the limit of 64 levels"]);
        assert_nothing_written(&sb);
    }
}

#[test]
fn a_retention_out_of_range_is_rejected_before_anything_is_stored() {
    for (retention, expected) in [
        ("1m", "from 1 day to 3650 days"),
        ("soon", "not a duration"),
    ] {
        let sb = Sandbox::new();
        let outcome = sb.baton(&["start", &saga(), "--retention", retention]);
        assert_rejected(&outcome, &["--retention", expected]);
        assert_nothing_written(&sb);
    }
    let sb = Sandbox::new();
    sb.baton(&[
        "start",
        &saga(),
        "--retention",
        "7d",
        "--id",
        "kept",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ])
    .expect_code(0);
    assert_eq!(
        sb.count("SELECT retention_ms FROM executions WHERE id = 'kept'"),
        7 * 24 * 60 * 60 * 1000
    );
    let gc = sb.baton(&["gc"]);
    gc.expect_code(0);
    assert!(
        gc.stdout.starts_with("deleted 0 expired executions"),
        "a running execution is not swept: {}",
        gc.stdout
    );
}
