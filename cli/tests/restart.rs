//! Durable timers: a retry backoff and a `wait` that are pending when the
//! only worker is killed with SIGKILL are still honoured by the next worker,
//! at the time they were set for.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::{Sandbox, test_workflow};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn at(event: &Value) -> u64 {
    event["at"].as_u64().expect("events carry their time")
}

/// Fails the test if the execution moved on while no worker was running.
fn assert_no_progress(sb: &Sandbox, id: &str, events_before: usize) {
    let events = sb.events(id);
    assert_eq!(
        events.len(),
        events_before,
        "{id} moved on without a worker: {events:#?}"
    );
    assert_eq!(sb.status(id).as_deref(), Some("running"));
}

#[test]
fn retry_backoff_survives_a_restart_of_the_only_worker() {
    let mut sb = Sandbox::new();
    sb.start(
        &test_workflow("retry-after-restart.yaml"),
        "retry-1",
        &json!({"orderId": "o-retry"}),
    );

    let mut worker = sb.worker(&[]);
    let retrying = sb.wait_event("retry-1", "step.retrying", Some("reserve"), WAIT);
    worker.kill();
    assert_eq!(retrying["delay_ms"], 2000, "{retrying}");
    let events = sb.events("retry-1");
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "step.started" && e["attempt"] == 2),
        "the retry already started before the kill; the machine is too slow for this test: {events:#?}"
    );

    let timers = sb.timers("retry-1");
    let (_, fire_at) = timers
        .iter()
        .find(|(key, _)| key == "retry/step/reserve/-/2")
        .unwrap_or_else(|| panic!("no retry timer is stored: {timers:?}"));
    assert_eq!(*fire_at, at(&retrying) + 2000);

    // Nothing moves while no worker runs; the next one starts before the
    // timer is due, so it has to wait for it rather than fire it at once.
    sleep(Duration::from_millis(500));
    assert_no_progress(&sb, "retry-1", events.len());

    let _worker = sb.worker(&[]);
    let statuses = sb.wait_terminal(&["retry-1".to_string()], WAIT);
    assert_eq!(statuses["retry-1"], "succeeded");

    let second = sb
        .events("retry-1")
        .into_iter()
        .find(|e| e["kind"] == "step.started" && e["step"] == "reserve" && e["attempt"] == 2)
        .expect("a second attempt");
    assert!(
        at(&second) >= *fire_at,
        "the retry started at {} before its timer ({fire_at})",
        at(&second)
    );
    assert_eq!(sb.calls("retry-1", "reserve-inventory", "failed"), 1);
    assert_eq!(sb.effects("retry-1"), ["reserve-inventory"]);
    let record = sb
        .baton(&["status", "retry-1", "--json"])
        .expect_code(0)
        .json();
    assert!(
        record["state"]["output"]["reservationId"]
            .as_str()
            .is_some_and(|r| r.starts_with("res-")),
        "{record:#}"
    );
}

#[test]
fn wait_survives_a_restart_of_the_only_worker() {
    let mut sb = Sandbox::new();
    sb.start(
        &test_workflow("wait-after-restart.yaml"),
        "wait-1",
        &json!({}),
    );

    let mut worker = sb.worker(&[]);
    let waiting = sb.wait_event("wait-1", "step.waiting", Some("pause"), WAIT);
    worker.kill();
    let events = sb.events("wait-1");
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "step.succeeded" && e["step"] == "pause"),
        "the wait already ended before the kill; the machine is too slow for this test: {events:#?}"
    );

    let timers = sb.timers("wait-1");
    let (_, fire_at) = timers
        .iter()
        .find(|(key, _)| key == "wait/step/pause/-/1")
        .unwrap_or_else(|| panic!("no wait timer is stored: {timers:?}"));
    assert_eq!(*fire_at, at(&waiting) + 2000);

    sleep(Duration::from_millis(500));
    assert_no_progress(&sb, "wait-1", events.len());

    let _worker = sb.worker(&[]);
    let statuses = sb.wait_terminal(&["wait-1".to_string()], WAIT);
    assert_eq!(statuses["wait-1"], "succeeded");

    let waited = sb
        .events("wait-1")
        .into_iter()
        .find(|e| e["kind"] == "step.succeeded" && e["step"] == "pause")
        .expect("the wait ended");
    assert!(
        at(&waited) >= *fire_at,
        "the wait ended at {} before its timer ({fire_at})",
        at(&waited)
    );
    let record = sb
        .baton(&["status", "wait-1", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(record["state"]["output"], json!({"last": "after"}));
    assert!(
        sb.timers("wait-1")
            .iter()
            .all(|(key, _)| !key.starts_with("wait/")),
        "the wait timer is left behind"
    );
}
