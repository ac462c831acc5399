//! Signals and cancellation through the CLI, with a worker running the
//! executions: a signal's payload becomes the waiting step's output, and
//! cancelling a waiting execution undoes what it did.

mod common;

use std::time::Duration;

use common::{Sandbox, test_workflow};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn signal_completes_the_waiting_step_with_its_payload() {
    let mut sb = Sandbox::new();
    let workflow = test_workflow("approval.yaml");
    sb.start(&workflow, "approve-me", &json!({"orderId": "o-sig"}));
    let _worker = sb.worker(&[]);
    sb.wait_event("approve-me", "step.waiting", Some("approve"), WAIT);
    assert_eq!(sb.status("approve-me").as_deref(), Some("running"));

    let sent = sb.baton(&[
        "signal",
        "approve-me",
        "approval",
        "--data",
        r#"{"ok":true}"#,
    ]);
    sent.expect_code(0);
    assert!(sent.stdout.contains("delivered"), "{}", sent.stdout);
    sb.wait_terminal(&["approve-me".to_string()], WAIT);

    let record = sb
        .baton(&["status", "approve-me", "--json"])
        .expect_code(0)
        .json();
    let state = &record["state"];
    assert_eq!(state["status"], "succeeded", "{record:#}");
    let approve = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "approve")
        .expect("the approve step");
    assert_eq!(approve["status"], "succeeded");
    assert_eq!(approve["output"], json!({"ok": true}));
    assert_eq!(state["output"]["approval"], json!({"ok": true}));
    // The step after the wait saw the payload too.
    let finish = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "finish")
        .unwrap();
    assert_eq!(finish["output"], json!({"approval": {"ok": true}}));
    assert_eq!(
        sb.effects("approve-me"),
        ["reserve-inventory", "process-payment"],
        "nothing is undone after a success"
    );

    // A second signal finds the execution finished: it changes nothing, and
    // says so with a failing exit code and the reason on stderr.
    let late = sb.baton(&[
        "signal",
        "approve-me",
        "approval",
        "--data",
        r#"{"ok":false}"#,
    ]);
    late.expect_code(1);
    assert!(
        late.stderr.contains(
            "signal `approval` not delivered to approve-me: the execution already finished"
        ),
        "{}",
        late.stderr
    );
    assert!(!late.stdout.contains("delivered"), "{}", late.stdout);

    // An execution that does not exist is named as such (bad input: exit 2).
    let nowhere = sb.baton(&["signal", "no-such-execution", "approval"]);
    nowhere.expect_code(2);
    assert!(
        nowhere.stderr.contains("no execution `no-such-execution`"),
        "{}",
        nowhere.stderr
    );
    let record = sb
        .baton(&["status", "approve-me", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(record["state"]["output"]["approval"], json!({"ok": true}));
}

#[test]
fn cancel_of_a_waiting_execution_compensates_its_mutating_steps() {
    let mut sb = Sandbox::new();
    let workflow = test_workflow("approval.yaml");
    sb.start(&workflow, "cancel-me", &json!({"orderId": "o-cancel"}));
    let _worker = sb.worker(&[]);
    sb.wait_event("cancel-me", "step.waiting", Some("approve"), WAIT);

    let cancelled = sb.baton(&[
        "cancel",
        "cancel-me",
        "--reason",
        "customer changed their mind",
    ]);
    cancelled.expect_code(0);
    assert!(
        cancelled.stdout.contains("cancelling cancel-me"),
        "{}",
        cancelled.stdout
    );
    let statuses = sb.wait_terminal(&["cancel-me".to_string()], WAIT);
    assert_eq!(statuses["cancel-me"], "cancelled");

    let record = sb
        .baton(&["status", "cancel-me", "--json"])
        .expect_code(0)
        .json();
    let state = &record["state"];
    assert_eq!(state["failure"]["name"], "Cancelled");
    assert_eq!(state["failure"]["message"], "customer changed their mind");
    let step = |name: &str| {
        state["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    assert_eq!(step("approve")["status"], "cancelled");
    assert_eq!(step("finish")["status"], "cancelled");
    for mutating in ["reserve", "charge"] {
        assert_eq!(
            step(mutating)["units"][0]["compensation"]["status"],
            "succeeded",
            "{mutating} was not compensated: {record:#}"
        );
    }
    assert!(
        step("check")["units"][0].get("compensation").is_none(),
        "a read-only step was compensated"
    );

    // Undone latest first, and the ledger saw exactly that.
    let undone: Vec<(String, String)> = sb
        .events("cancel-me")
        .iter()
        .filter(|e| e["kind"] == "compensation.succeeded")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["step"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        undone,
        [
            ("compensation.succeeded".to_string(), "charge".to_string()),
            ("compensation.succeeded".to_string(), "reserve".to_string())
        ]
    );
    assert_eq!(
        sb.effects("cancel-me"),
        [
            "reserve-inventory",
            "process-payment",
            "refund-payment",
            "release-inventory"
        ]
    );
    let finish_events = sb.finish_event_counts();
    assert_eq!(finish_events.get("cancel-me"), Some(&1));
    assert_eq!(
        sb.events("cancel-me").last().unwrap()["kind"],
        "execution.cancelled"
    );

    // Cancelling again, or signalling, changes nothing.
    let again = sb.baton(&["cancel", "cancel-me"]);
    assert!(
        again.expect_code(0).stdout.contains("nothing to cancel"),
        "{}",
        again.stdout
    );
    let late = sb.baton(&[
        "signal",
        "cancel-me",
        "approval",
        "--data",
        r#"{"ok":true}"#,
    ]);
    late.expect_code(1);
    assert!(
        late.stderr.contains("not delivered to cancel-me"),
        "{}",
        late.stderr
    );
    assert_eq!(sb.status("cancel-me").as_deref(), Some("cancelled"));
}

/// A signal no step waits for is refused with the names the workflow does
/// wait for, before anything is stored; a signal sent again with its id is
/// taken once.
#[test]
fn misspelt_and_repeated_signals() {
    let mut sb = Sandbox::new();
    let workflow = test_workflow("approval.yaml");
    sb.start(&workflow, "spelling", &json!({"orderId": "o-spell"}));
    let misspelt = sb.baton(&["signal", "spelling", "aproval", "--data", "{}"]);
    misspelt.expect_code(2);
    assert!(
        misspelt.stderr.contains(
            "no step of workflow `approval` waits for a `aproval` signal; it waits for `approval`"
        ),
        "{}",
        misspelt.stderr
    );

    let _worker = sb.worker(&[]);
    sb.wait_event("spelling", "step.waiting", Some("approve"), WAIT);
    let first = sb.baton(&[
        "signal",
        "spelling",
        "approval",
        "--data",
        r#"{"ok":true}"#,
        "--signal-id",
        "approve-1",
    ]);
    first.expect_code(0);
    // Once it has ended too, the repeat is recognised rather than refused.
    sb.wait_terminal(&["spelling".to_string()], WAIT);
    let again = sb.baton(&[
        "signal",
        "spelling",
        "approval",
        "--data",
        r#"{"ok":false}"#,
        "--signal-id",
        "approve-1",
    ]);
    again.expect_code(0);
    assert!(
        again
            .stdout
            .contains("signal `approval` with id `approve-1` was delivered to spelling before"),
        "{}",
        again.stdout
    );
    let record = sb
        .baton(&["status", "spelling", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(record["state"]["output"]["approval"], json!({"ok": true}));
}
