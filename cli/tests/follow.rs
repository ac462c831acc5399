//! `baton follow`: an execution's progress, one line per change when stdout
//! is not a terminal, until it ends; the exit code says how it ended.

mod common;

use common::{Sandbox, repo_file};
use serde_json::json;

/// A step's line as `baton status` prints it, after one attempt.
fn step_line(step: &str, status: &str) -> String {
    format!("  {step:<20} {status:<10} attempts 1")
}

#[test]
fn follow_prints_each_change_once_and_exits_with_how_the_execution_ended() {
    let mut sb = Sandbox::new();
    let saga = repo_file("workflows/order-saga.yaml");
    // Shipping takes a while, so `follow` sees it running before it succeeds.
    sb.start(
        &saga,
        "slow",
        &json!({"orderId": "o-1", "fail": {"ship-order": {"slow_ms": 600}}}),
    );
    sb.start(
        &saga,
        "declined",
        &json!({"orderId": "o-2", "fail": {"process-payment": "permanent"}}),
    );
    let _worker = sb.worker(&[]);

    let out = sb.baton(&["follow", "slow", "--interval-ms", "50"]);
    out.expect_code(0);
    assert!(
        !out.stdout.contains('\x1b'),
        "escapes in a pipe: {:?}",
        out.stdout
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "following slow (workflow `order-processing` version 1)",
        "{}",
        out.stdout
    );
    let running = step_line("ship", "running");
    assert!(lines.contains(&running.as_str()), "{}", out.stdout);
    // Only changes: no line is printed twice in a row for the same step.
    for step in ["validate", "reserve", "charge", "ship", "notify"] {
        let done = step_line(step, "succeeded");
        assert_eq!(
            lines.iter().filter(|l| **l == done).count(),
            1,
            "{step}:\n{}",
            out.stdout
        );
    }
    assert!(lines.contains(&"status     running"), "{}", out.stdout);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("execution slow succeeded in "),
        "{}",
        out.stdout
    );

    // A saga that undid its work: `run`'s exit code for compensated.
    let out = sb.baton(&["follow", "declined", "--interval-ms", "50"]);
    out.expect_code(4);
    assert!(
        out.stdout.contains(&step_line("charge", "failed")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("execution declined compensated in "),
        "{}",
        out.stdout
    );

    // Unknown executions are bad input, as for `status`.
    sb.baton(&["follow", "nothing-here"]).expect_code(2);
}
