//! A poison pill: a task whose handler aborts the worker that runs it
//! (failure switch "crash"). The worker is restarted whenever it dies, as a
//! supervisor would; the execution must still end, and the task must not
//! take down worker after worker.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Sandbox, WorkerProcess, test_workflow};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn crash_input(order: &str) -> Value {
    json!({"orderId": order, "fail": {"process-payment": "crash"}})
}

/// Restarts the worker whenever it has died, until `done` holds; returns how many times it died.
fn supervise(
    sb: &mut Sandbox,
    worker: &mut WorkerProcess,
    what: &str,
    mut done: impl FnMut(&Sandbox) -> bool,
) -> usize {
    let start = Instant::now();
    let mut deaths = Vec::new();
    loop {
        if let Some(status) = worker.exited() {
            deaths.push(status);
            *worker = sb.worker(&[]);
        }
        if done(sb) {
            return deaths.len();
        }
        assert!(
            start.elapsed() < WAIT,
            "{what} did not happen within {WAIT:?}; the worker died {} times ({deaths:?})",
            deaths.len()
        );
        sleep(Duration::from_millis(50));
    }
}

fn tasks_of(sb: &Sandbox, id: &str) -> i64 {
    sb.count(&format!(
        "SELECT COUNT(*) FROM tasks WHERE execution_id = '{id}'"
    ))
}

/// The dead letter of `id`'s payment task, if there is one.
fn payment_dead_letter(sb: &Sandbox, id: &str) -> Option<Value> {
    sb.baton(&["dlq", "list", "--json"])
        .expect_code(0)
        .json_lines()
        .into_iter()
        .find(|d| {
            d["kind"] == "task"
                && d["execution_id"] == id
                && d["body"]["task"]["task"]["step"] == "charge"
        })
}

#[test]
fn poison_pill_is_dead_lettered_after_its_max_receives_and_the_execution_still_ends() {
    let mut sb = Sandbox::new().with_env("BATON_MAX_RECEIVES", "3");
    sb.start(
        &test_workflow("poison.yaml"),
        "poisoned",
        &crash_input("o-poison"),
    );
    let mut worker = sb.worker(&[]);

    // Each receive kills the worker; once the lease of the dead worker runs
    // out the task is received again, until the redrive limit moves it aside.
    let deaths = supervise(
        &mut sb,
        &mut worker,
        "the dead letter of the poison pill",
        |sb| payment_dead_letter(sb, "poisoned").is_some(),
    );
    assert_eq!(
        deaths, 3,
        "the pill should kill one worker per receive, 3 receives"
    );
    assert_eq!(sb.calls("poisoned", "process-payment", "crashed"), 3);

    let list = sb.baton(&["dlq", "list"]);
    let line = list
        .expect_code(0)
        .stdout
        .lines()
        .find(|l| l.contains("poisoned") && l.contains("`charge`"))
        .unwrap_or_else(|| panic!("`dlq list` does not show the poison pill:\n{}", list.stdout))
        .to_string();
    assert!(
        line.contains(" task ") && line.contains("received 3 times"),
        "{line}"
    );
    let dead = payment_dead_letter(&sb, "poisoned").unwrap();
    let shown = sb
        .baton(&["dlq", "show", dead["id"].as_str().unwrap()])
        .expect_code(0)
        .json();
    assert_eq!(shown["kind"], "task");
    assert_eq!(shown["execution_id"], "poisoned");
    let task = &shown["body"]["task"];
    assert_eq!(task["task"]["step"], "charge");
    assert_eq!(task["function"], "process-payment");
    assert_eq!(
        task["input"],
        json!({"orderId": "o-poison", "amount": 10, "fail": {"process-payment": "crash"}})
    );
    assert_eq!(shown["body"]["receive_count"], 3);

    // Nothing is stuck: the attempt times out, the saga compensates, and no
    // task or timer of the execution is left behind.
    supervise(
        &mut sb,
        &mut worker,
        "the end of the poisoned execution",
        |sb| {
            sb.status("poisoned").as_deref() == Some("compensated")
                && tasks_of(sb, "poisoned") == 0
                && sb.timers("poisoned").is_empty()
        },
    );
    assert!(
        worker.is_running(),
        "the worker died after the pill was set aside"
    );
    assert_eq!(sb.calls("poisoned", "process-payment", "crashed"), 3);
    let events = sb.events("poisoned");
    let failed = events
        .iter()
        .find(|e| e["kind"] == "step.failed" && e["step"] == "charge")
        .expect("the payment step failed");
    assert_eq!(failed["error"]["name"], "Timeout");
    assert_eq!(events.last().unwrap()["kind"], "execution.compensated");
    // The payment's attempts timed out: whether it charged is unknown, so
    // the saga refunds it too (by the id the payment would have made), then
    // releases the reservation.
    assert_eq!(
        sb.effects("poisoned"),
        ["reserve-inventory", "refund-payment", "release-inventory"]
    );
}

#[test]
fn poison_pill_is_dead_lettered_and_can_be_redriven() {
    let mut sb = Sandbox::new().with_env("BATON_MAX_RECEIVES", "2");
    sb.start(
        &test_workflow("poison.yaml"),
        "poisoned",
        &crash_input("o-poison"),
    );
    let mut worker = sb.worker(&[]);
    let deaths = supervise(
        &mut sb,
        &mut worker,
        "the dead letter and the end of the execution",
        |sb| {
            sb.status("poisoned").is_some_and(|s| s == "compensated")
                && payment_dead_letter(sb, "poisoned").is_some()
        },
    );
    assert_eq!(deaths, 2);
    worker.kill();

    let dead = payment_dead_letter(&sb, "poisoned").unwrap();
    let dead_id = dead["id"].as_str().unwrap().to_string();
    let redrive = sb.baton(&["dlq", "redrive", &dead_id]);
    assert!(
        redrive.expect_code(0).stdout.contains("redriven"),
        "{}",
        redrive.stdout
    );
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM tasks WHERE execution_id = 'poisoned' AND function = 'process-payment'"),
        1,
        "the redriven task is not queued"
    );
    assert!(
        payment_dead_letter(&sb, "poisoned").is_none(),
        "the dead letter is still listed"
    );
    // The execution's history keeps the trace of the redrive.
    let history = sb
        .baton(&["history", "poisoned", "--json"])
        .expect_code(0)
        .json_lines();
    let event = &history.last().unwrap()["event"];
    assert_eq!(event["type"], "dead_letter_redriven", "{event}");
    assert_eq!(event["dead_letter"]["id"], dead_id.as_str());
    assert_eq!(event["dead_letter"]["kind"], "task");
    assert_eq!(event["dead_letter"]["step"], "charge");
    let listed = sb.baton(&["dlq", "list"]);
    assert!(
        !listed
            .stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(dead_id.as_str())),
        "{}",
        listed.stdout
    );

    // The execution is over, so a worker drops the redriven task instead of running it again.
    let mut worker = sb.worker(&[]);
    let drained = common::wait_until("the redriven task to be dropped", WAIT, || {
        (tasks_of(&sb, "poisoned") == 0).then_some(())
    });
    assert!(drained.is_some(), "the redriven task stays queued");
    assert!(
        worker.is_running(),
        "the redriven task crashed a worker again"
    );
    assert_eq!(sb.calls("poisoned", "process-payment", "crashed"), 2);
    assert_eq!(sb.status("poisoned").as_deref(), Some("compensated"));
}

#[test]
fn dead_letters_of_successive_poison_pills_are_all_kept() {
    // The queue empties between the two pills: a dead letter named after a
    // task id that is then reused would be replaced by the second one.
    let mut sb = Sandbox::new().with_env("BATON_MAX_RECEIVES", "1");
    let mut worker = sb.worker(&[]);
    for id in ["first-pill", "second-pill"] {
        sb.start(&test_workflow("poison.yaml"), id, &crash_input(id));
        supervise(&mut sb, &mut worker, "a dead letter", |sb| {
            payment_dead_letter(sb, id).is_some()
        });
    }
    assert!(
        payment_dead_letter(&sb, "first-pill").is_some(),
        "the first dead letter was lost: {:#?}",
        sb.baton(&["dlq", "list", "--json"]).json_lines()
    );
}
