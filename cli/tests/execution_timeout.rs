//! An execution's own timeout through the CLI, with a worker running it: an
//! execution waiting past its deadline fails with `ExecutionTimedOut` and
//! undoes what it did; a start may give it another timeout than the
//! workflow's, and an out-of-range one is refused before anything is stored.

mod common;

use std::time::Duration;

use common::{Sandbox, path_arg, test_workflow};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn an_execution_waiting_past_its_timeout_fails_and_is_undone() {
    let mut sb = Sandbox::new();
    let workflow = test_workflow("approval.yaml");
    sb.baton(&[
        "start",
        &path_arg(&workflow),
        "--id",
        "too-slow",
        "--timeout",
        "3s",
        "--input",
        r#"{"orderId":"o-late"}"#,
    ])
    .expect_code(0);
    let _worker = sb.worker(&[]);
    sb.wait_terminal(&["too-slow".to_string()], WAIT);

    let record = sb
        .baton(&["status", "too-slow", "--json"])
        .expect_code(0)
        .json();
    let state = &record["state"];
    assert_eq!(state["status"], "compensated", "{record:#}");
    assert_eq!(state["failure"]["name"], "ExecutionTimedOut", "{record:#}");
    let deadline = state["deadline"].as_u64().expect("a deadline");
    let started = state["started_at"].as_u64().expect("a start");
    assert_eq!(deadline - started, 3_000);
    assert_eq!(
        sb.effects("too-slow"),
        [
            "reserve-inventory",
            "process-payment",
            "refund-payment",
            "release-inventory"
        ],
        "both steps are undone, newest first"
    );
}

#[test]
fn a_timeout_out_of_range_is_refused_before_anything_is_stored() {
    let sb = Sandbox::new();
    let workflow = test_workflow("approval.yaml");
    let out = sb.baton(&[
        "start",
        &path_arg(&workflow),
        "--id",
        "never",
        "--timeout",
        "500ms",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("--timeout must be from 1s to 365d"),
        "{}",
        out.stderr
    );
    sb.baton(&["status", "never"]).expect_code(2);
}
