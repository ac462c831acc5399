//! `baton run` of the README's order saga: progress, output, exit codes, and
//! which compensations run (and in what order) when a step fails.

mod common;

use common::{Sandbox, path_arg, repo_file};
use serde_json::{Value, json};

fn saga() -> String {
    path_arg(&repo_file("workflows/order-saga.yaml"))
}

/// `(kind, step)` of each progress line of the text output, e.g.
/// `  +0.004s  ✓ step.succeeded   validate   attempt 1`.
fn progress(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let is_progress = words
                .first()
                .is_some_and(|w| w.starts_with('+') && w.ends_with('s'));
            if !is_progress || words.len() < 3 {
                return None;
            }
            let step = words
                .get(3)
                .filter(|w| !w.ends_with(':') && **w != "attempt")
                .unwrap_or(&"");
            Some((words[2].to_string(), step.to_string()))
        })
        .collect()
}

/// Splits `run --json` output into the lifecycle events and the final summary.
fn events_and_summary(lines: Vec<Value>) -> (Vec<Value>, Value) {
    let mut lines = lines;
    let summary = lines.pop().expect("at least the summary line");
    (lines, summary)
}

/// `(kind, step)` of the compensation events, in order.
fn compensations(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("compensation."))
        })
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["step"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

#[test]
fn readme_run_succeeds_with_progress_and_a_tracking_number() {
    let sb = Sandbox::new();
    let run = sb.baton(&["run", &saga(), "--input", r#"{"orderId":"o-1"}"#]);
    run.expect_code(0);

    let lines = progress(&run.stdout);
    let succeeded: Vec<&str> = lines
        .iter()
        .filter(|(kind, _)| kind == "step.succeeded")
        .map(|(_, step)| step.as_str())
        .collect();
    assert_eq!(
        succeeded,
        ["validate", "reserve", "charge", "ship", "notify"],
        "{}",
        run.stdout
    );
    for step in ["validate", "reserve", "charge", "ship", "notify"] {
        assert!(
            lines.contains(&("step.started".to_string(), step.to_string())),
            "no step.started line for {step}:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        lines.first().map(|l| l.0.as_str()),
        Some("execution.started"),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.last().map(|l| l.0.as_str()),
        Some("execution.succeeded"),
        "{}",
        run.stdout
    );
    assert!(
        !lines.iter().any(|(k, _)| k.starts_with("compensation.")),
        "{}",
        run.stdout
    );

    let (_, output) = run
        .stdout
        .split_once("output: ")
        .expect("the output is printed");
    let output: Value = serde_json::from_str(output.trim()).expect("the output is JSON");
    assert_eq!(output["orderId"], "o-1");
    let tracking = output["trackingNumber"]
        .as_str()
        .expect("a tracking number");
    assert!(
        tracking.starts_with("TRK") && tracking.len() > 3,
        "{tracking}"
    );
}

#[test]
fn readme_run_json_prints_one_object_per_line_ending_with_the_status() {
    let sb = Sandbox::new();
    let run = sb.baton(&["run", &saga(), "--input", r#"{"orderId":"o-1"}"#, "--json"]);
    run.expect_code(0);
    let (events, summary) = events_and_summary(run.json_lines());

    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["output"]["orderId"], "o-1");
    assert!(
        summary["output"]["trackingNumber"]
            .as_str()
            .is_some_and(|t| t.starts_with("TRK")),
        "{summary}"
    );
    let id = summary["id"]
        .as_str()
        .expect("the summary names the execution");

    assert_eq!(
        events.first().map(|e| &e["kind"]),
        Some(&json!("execution.started"))
    );
    assert_eq!(
        events.last().map(|e| &e["kind"]),
        Some(&json!("execution.succeeded"))
    );
    for event in &events {
        assert_eq!(event["execution_id"], id, "{event}");
    }
    let succeeded: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "step.succeeded")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        succeeded,
        ["validate", "reserve", "charge", "ship", "notify"]
    );
    // The same events are what `history --lifecycle` shows later.
    assert_eq!(sb.events(id), events);
}

#[test]
fn failed_shipment_refunds_then_releases_and_nothing_else() {
    let sb = Sandbox::new();
    let input = r#"{"orderId":"o-2","fail":{"ship-order":"permanent"}}"#;
    let run = sb.baton(&["run", &saga(), "--input", input, "--json"]);
    run.expect_code(4);
    let (events, summary) = events_and_summary(run.json_lines());
    assert_eq!(summary["status"], "compensated", "{summary}");
    assert_eq!(summary["error"]["name"], "InjectedFailure", "{summary}");
    let id = summary["id"].as_str().unwrap();

    assert_eq!(
        compensations(&events),
        pairs(&[
            ("compensation.started", "charge"),
            ("compensation.succeeded", "charge"),
            ("compensation.started", "reserve"),
            ("compensation.succeeded", "reserve"),
        ])
    );
    assert_eq!(
        events.last().map(|e| &e["kind"]),
        Some(&json!("execution.compensated"))
    );

    // The outside world saw the refund first, then the release, and no shipment.
    assert_eq!(
        sb.effects(id),
        [
            "reserve-inventory",
            "process-payment",
            "refund-payment",
            "release-inventory"
        ]
    );
}

#[test]
fn payment_that_always_fails_is_retried_then_only_the_reservation_is_released() {
    let sb = Sandbox::new();
    let input = r#"{"orderId":"o-3","fail":{"process-payment":"always"}}"#;
    let run = sb.baton(&["run", &saga(), "--input", input]);
    run.expect_code(4);

    let lines = progress(&run.stdout);
    let retries = lines
        .iter()
        .filter(|(k, s)| k == "step.retrying" && s == "charge")
        .count();
    assert_eq!(retries, 4, "charge has max_attempts 5:\n{}", run.stdout);
    let undone: Vec<&(String, String)> = lines
        .iter()
        .filter(|(k, _)| k.starts_with("compensation."))
        .collect();
    assert_eq!(
        undone.into_iter().cloned().collect::<Vec<_>>(),
        pairs(&[
            ("compensation.started", "reserve"),
            ("compensation.succeeded", "reserve")
        ]),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.last().map(|l| l.0.as_str()),
        Some("execution.compensated"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(" compensated in "), "{}", run.stdout);

    let id = run
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("started "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the first line names the execution");
    assert_eq!(sb.effects(id), ["reserve-inventory", "release-inventory"]);
    assert_eq!(sb.calls(id, "process-payment", "failed"), 5);
}

#[test]
fn refund_that_fails_for_good_exits_5_and_is_dead_lettered() {
    let sb = Sandbox::new();
    let input = r#"{"orderId":"o-4","fail":{"ship-order":"permanent"}}"#;
    let run = sb.baton_env(
        &["run", &saga(), "--input", input, "--json"],
        &[("BATON_FAIL", r#"{"refund-payment":"permanent"}"#)],
    );
    run.expect_code(5);
    let (events, summary) = events_and_summary(run.json_lines());
    assert_eq!(summary["status"], "compensation_failed", "{summary}");
    let id = summary["id"].as_str().unwrap();
    // A failed compensation does not stop the ones after it.
    assert_eq!(
        compensations(&events),
        pairs(&[
            ("compensation.started", "charge"),
            ("compensation.failed", "charge"),
            ("compensation.started", "reserve"),
            ("compensation.succeeded", "reserve"),
        ])
    );
    assert_eq!(
        sb.effects(id),
        ["reserve-inventory", "process-payment", "release-inventory"]
    );

    let list = sb.baton(&["dlq", "list"]);
    list.expect_code(0);
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("`dlq list` does not show {id}:\n{}", list.stdout));
    assert!(
        line.contains("compensation") && line.contains("refund-payment"),
        "{line}"
    );

    let listed = sb.baton(&["dlq", "list", "--json"]);
    let listed = listed.expect_code(0).json_lines();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["execution_id"], id);
    let dead_id = listed[0]["id"].as_str().unwrap();

    let show = sb.baton(&["dlq", "show", dead_id]);
    let shown = show.expect_code(0).json();
    let body = &shown["body"];
    assert_eq!(shown["kind"], "compensation");
    assert_eq!(body["execution_id"], id);
    assert_eq!(body["step"], "charge");
    assert_eq!(body["function"], "refund-payment");
    assert!(
        body["input"]["paymentId"]
            .as_str()
            .is_some_and(|p| p.starts_with("pay-")),
        "{shown}"
    );
    assert_eq!(body["error"]["name"], "InjectedFailure");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permanent"),
        "{shown}"
    );
    assert_eq!(body["attempts"], 1);
}
