//! Resolving dead letters leaves a trace on the execution: a redrive or a
//! discard is an event in its history, and once every failed compensation is
//! resolved the execution's status stops saying `compensation_failed`.

mod common;

use common::{Sandbox, path_arg, repo_file};
use serde_json::Value;

fn saga() -> String {
    path_arg(&repo_file("workflows/order-saga.yaml"))
}

/// Runs the saga with shipping and the given compensations failing for good;
/// returns the dead letters of the execution, by step.
fn run_with_failing_compensations(sb: &Sandbox, id: &str, failing: &str) -> Vec<(String, String)> {
    let run = sb.baton_env(
        &[
            "run",
            &saga(),
            "--id",
            id,
            "--input",
            &format!(r#"{{"orderId":"{id}","fail":{{"ship-order":"permanent"}}}}"#),
        ],
        &[("BATON_FAIL", failing)],
    );
    run.expect_code(5);
    sb.baton(&["dlq", "list", "--json"])
        .expect_code(0)
        .json_lines()
        .iter()
        .filter(|d| d["execution_id"] == id)
        .map(|d| {
            (
                d["body"]["step"].as_str().unwrap().to_string(),
                d["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_json(sb: &Sandbox, id: &str) -> Value {
    sb.baton(&["status", id, "--json"]).expect_code(0).json()
}

fn compensation_of(record: &Value, step: &str) -> Value {
    record["state"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step {step}: {record:#}"))["units"][0]["compensation"]
        .clone()
}

#[test]
fn a_redriven_compensation_is_in_the_history_and_the_saga_ends_compensated() {
    let sb = Sandbox::new();
    let dead = run_with_failing_compensations(&sb, "o-4", r#"{"refund-payment":"permanent"}"#);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (step, dead_id) = &dead[0];
    assert_eq!(step, "charge");
    let history_before = sb.baton(&["history", "o-4"]).expect_code(0).stdout.clone();

    // Without BATON_FAIL the refund goes through.
    let redrive = sb.baton(&["dlq", "redrive", dead_id]);
    redrive.expect_code(0);
    assert!(
        redrive
            .stdout
            .contains("compensation `refund-payment` of step `charge` succeeded")
            && redrive
                .stdout
                .contains("execution o-4 is now compensated: every dead letter resolved"),
        "{}",
        redrive.stdout
    );

    // `baton status` says how it ended now, step by step.
    let record = status_json(&sb, "o-4");
    assert_eq!(record["state"]["status"], "compensated", "{record:#}");
    assert_eq!(compensation_of(&record, "charge")["status"], "succeeded");
    assert_eq!(compensation_of(&record, "charge")["attempt"], 2);
    let text = sb.baton(&["status", "o-4"]).expect_code(0).stdout.clone();
    assert!(text.contains("status     compensated"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("charge") && l.contains("(compensated)")),
        "{text}"
    );
    assert_eq!(
        sb.baton(&["list", "--status", "compensated", "--json"])
            .expect_code(0)
            .json_lines()
            .iter()
            .map(|r| r["id"].clone())
            .collect::<Vec<_>>(),
        ["o-4"]
    );

    // `baton history` shows the redrive as the newest entry.
    let history = sb.baton(&["history", "o-4"]).expect_code(0).stdout.clone();
    assert_eq!(
        history.lines().count(),
        history_before.lines().count() + 1,
        "{history}"
    );
    let last = history.lines().last().unwrap();
    assert!(
        last.contains(&format!(
            "dead letter {dead_id} (compensation of charge) redriven"
        )),
        "{history}"
    );
    let entries = sb
        .baton(&["history", "o-4", "--json"])
        .expect_code(0)
        .json_lines();
    let event = &entries.last().unwrap()["event"];
    assert_eq!(event["type"], "dead_letter_redriven", "{event}");
    assert_eq!(event["dead_letter"]["id"], dead_id.as_str());
    assert_eq!(event["dead_letter"]["kind"], "compensation");
    assert_eq!(event["dead_letter"]["step"], "charge");

    // Observers see the compensation succeed and the execution's new end.
    let kinds: Vec<String> = sb
        .events("o-4")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["step"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds[kinds.len() - 3..],
        [
            "execution.compensation_failed ",
            "compensation.succeeded charge",
            "execution.compensated "
        ],
        "{kinds:#?}"
    );
    assert_eq!(
        sb.effects("o-4"),
        [
            "reserve-inventory",
            "process-payment",
            "release-inventory",
            "refund-payment"
        ]
    );

    // Nothing is left to redrive.
    assert!(
        sb.baton(&["dlq", "list", "--json"])
            .expect_code(0)
            .stdout
            .is_empty()
    );
    sb.baton(&["dlq", "redrive", dead_id]).expect_code(2);
}

#[test]
fn the_status_changes_only_once_every_dead_letter_is_resolved() {
    let sb = Sandbox::new();
    let dead = run_with_failing_compensations(
        &sb,
        "o-5",
        r#"{"refund-payment":"permanent","release-inventory":"permanent"}"#,
    );
    let id_of = |step: &str| {
        dead.iter()
            .find(|(s, _)| s == step)
            .unwrap_or_else(|| panic!("no dead letter for {step}: {dead:?}"))
            .1
            .clone()
    };
    assert_eq!(dead.len(), 2, "{dead:?}");

    // Resolved by hand: recorded, but one dead letter is still open.
    let discard = sb.baton(&["dlq", "discard", &id_of("reserve")]);
    discard.expect_code(0);
    assert!(
        discard
            .stdout
            .contains("execution o-5: compensation_failed, 1 dead letter left"),
        "{}",
        discard.stdout
    );
    let record = status_json(&sb, "o-5");
    assert_eq!(record["state"]["status"], "compensation_failed");
    assert_eq!(compensation_of(&record, "reserve")["resolved"], true);
    let text = sb.baton(&["status", "o-5"]).expect_code(0).stdout.clone();
    assert!(
        text.contains("(compensation failed, resolved by hand)"),
        "{text}"
    );
    let history = sb.baton(&["history", "o-5"]).expect_code(0).stdout.clone();
    assert!(
        history.lines().last().unwrap().contains(&format!(
            "dead letter {} (compensation of reserve) discarded (resolved by hand)",
            id_of("reserve")
        )),
        "{history}"
    );

    // The last one: the execution's status follows.
    let redrive = sb.baton(&["dlq", "redrive", &id_of("charge")]);
    redrive.expect_code(0);
    assert!(
        redrive.stdout.contains("execution o-5 is now compensated"),
        "{}",
        redrive.stdout
    );
    assert_eq!(status_json(&sb, "o-5")["state"]["status"], "compensated");
    let types: Vec<Value> = sb
        .baton(&["history", "o-5", "--json"])
        .expect_code(0)
        .json_lines()
        .iter()
        .map(|e| e["event"]["type"].clone())
        .collect();
    assert_eq!(
        types[types.len() - 2..],
        ["dead_letter_discarded", "dead_letter_redriven"]
    );
}

#[test]
fn a_compensation_that_fails_again_on_redrive_changes_nothing() {
    let sb = Sandbox::new();
    let dead = run_with_failing_compensations(&sb, "o-6", r#"{"refund-payment":"permanent"}"#);
    let dead_id = &dead[0].1;
    let history_before = sb.baton(&["history", "o-6"]).expect_code(0).stdout.clone();
    let redrive = sb.baton_env(
        &["dlq", "redrive", dead_id],
        &[("BATON_FAIL", r#"{"refund-payment":"permanent"}"#)],
    );
    redrive.expect_code(1);
    assert!(
        redrive.stderr.contains("the dead letter stays"),
        "{}",
        redrive.stderr
    );
    assert_eq!(
        status_json(&sb, "o-6")["state"]["status"],
        "compensation_failed"
    );
    assert_eq!(
        sb.baton(&["history", "o-6"]).expect_code(0).stdout.clone(),
        history_before
    );
    assert_eq!(sb.baton(&["dlq", "list", "--json"]).json_lines().len(), 1);
}
