//! Sub-workflows on the AWS backend, against moto server: the coordinator
//! that commits a `workflow:` step starts the child execution (its steps
//! invoked like any others), the child's end reaches the parent through the
//! child's outbox, and undoing the parent asks the child to run its own
//! compensations. Each step's result comes back as its Lambda destination
//! record on the coordinator queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_aws::AwsBackend;
use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::{RecordingInvoker, fresh_recording_backend};
use baton_core::ExecutionStatus;
use baton_runtime::Coordinator;
use baton_runtime::ports::{DeadLetterStore, ExecutionStore};
use baton_runtime::step::StepEvent;
use serde_json::{Value, json};

mod common;

const PAYMENT: &str = r#"
name: payment
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  authorize: { function: fn-authorize, compensate: { function: fn-void } }
  capture: { function: fn-capture, needs: [authorize], compensate: { function: fn-refund } }
output: { paid: "${ input.amount }" }
"#;

const ORDER: &str = r#"
name: order
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  reserve: { function: fn-reserve, compensate: { function: fn-release } }
  pay: { workflow: payment, needs: [reserve], input: { amount: "${ input.total }" } }
  ship: { function: fn-ship, needs: [pay], mutates: false, input: "${ steps.pay.output }" }
"#;

/// Answers each invoke of the functions as its destination would, in the
/// order they were invoked (failing those `fails` says), and plays the
/// coordinator until `id` ends. Returns the functions invoked,
/// `{execution} {function}`, in order.
async fn drive(
    backend: &Arc<AwsBackend>,
    coordinator: &Coordinator<AwsBackend>,
    invoker: &RecordingInvoker,
    id: &str,
    fails: impl Fn(&StepEvent) -> bool,
) -> Vec<String> {
    let mut invoked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for task in invoker.take_all() {
            invoked.push(format!(
                "{} {}",
                task.baton.execution_id, task.baton.function
            ));
            let record = if fails(&task) {
                DestinationRecord::failure(&task, "PermanentBroken", "it broke")
            } else {
                DestinationRecord::success(&task, json!({ "by": task.baton.function }))
            };
            common::send_record(backend, &record).await;
        }
        let handled = common::coordinator_round(backend, coordinator).await;
        let status = backend.load(id).await.unwrap().unwrap().status();
        if status.is_terminal() && handled == 0 {
            return invoked;
        }
        assert!(Instant::now() < deadline, "`{id}` did not end: {invoked:?}");
    }
}

async fn setup(
    name: &str,
) -> (
    Arc<AwsBackend>,
    Coordinator<AwsBackend>,
    Arc<RecordingInvoker>,
) {
    let (backend, invoker) = fresh_recording_backend(name, 5).await;
    let backend = Arc::new(backend);
    common::deployed(&backend, PAYMENT).await;
    let coordinator = common::deployed(&backend, ORDER).await;
    (backend, coordinator, invoker)
}

/// Runs order `id` to its end with `function` failing for good; returns the
/// backend and the functions invoked.
async fn order_failing(name: &str, id: &str, function: &str) -> (Arc<AwsBackend>, Vec<String>) {
    let (backend, coordinator, invoker) = setup(name).await;
    coordinator
        .start("order", None, id, json!({"total": 7}))
        .await
        .unwrap();
    let invoked = drive(&backend, &coordinator, &invoker, id, |t| {
        t.baton.function == function
    })
    .await;
    (backend, invoked)
}

fn state(record: &baton_runtime::ports::ExecutionRecord) -> Value {
    serde_json::to_value(&record.state).unwrap()
}

#[tokio::test]
async fn a_child_execution_runs_its_steps_and_its_output_is_the_parent_steps() {
    let (backend, coordinator, invoker) = setup("children-ok").await;
    coordinator
        .start("order", None, "o-1", json!({"total": 42}))
        .await
        .unwrap();
    let invoked = drive(&backend, &coordinator, &invoker, "o-1", |_| false).await;
    assert_eq!(
        invoked,
        [
            "o-1 fn-reserve",
            "o-1:pay fn-authorize",
            "o-1:pay fn-capture",
            "o-1 fn-ship"
        ]
    );
    let parent = backend.load("o-1").await.unwrap().unwrap();
    assert_eq!(parent.status(), ExecutionStatus::Succeeded);
    assert_eq!(state(&parent)["steps"][1]["output"], json!({"paid": 42}));
    let child = backend.load("o-1:pay").await.unwrap().unwrap();
    assert_eq!(child.status(), ExecutionStatus::Succeeded);
    assert_eq!(child.workflow, "payment");
}

#[tokio::test]
async fn undoing_the_parent_runs_the_childs_compensations_before_its_own() {
    let (backend, invoked) = order_failing("children-undo", "o-2", "fn-ship").await;
    assert_eq!(
        invoked[4..],
        ["o-2:pay fn-refund", "o-2:pay fn-void", "o-2 fn-release"],
        "{invoked:?}"
    );
    let parent = backend.load("o-2").await.unwrap().unwrap();
    assert_eq!(parent.status(), ExecutionStatus::Compensated);
    let child = backend.load("o-2:pay").await.unwrap().unwrap();
    assert_eq!(child.status(), ExecutionStatus::Compensated);
}

#[tokio::test]
async fn a_failed_child_fails_the_parent_step_after_undoing_itself() {
    let (backend, invoked) = order_failing("children-fail", "o-3", "fn-capture").await;
    assert_eq!(
        invoked[3..],
        ["o-3:pay fn-void", "o-3 fn-release"],
        "{invoked:?}"
    );
    let parent = backend.load("o-3").await.unwrap().unwrap();
    assert_eq!(parent.status(), ExecutionStatus::Compensated);
    let pay = &state(&parent)["steps"][1];
    assert_eq!(pay["status"], "failed");
    assert_eq!(pay["error"]["name"], "PermanentBroken");
}

const LINE: &str = r#"
name: line
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  pick: { function: fn-pick, mutates: false, input: "${ input }" }
  pack: { function: fn-pack, needs: [pick], mutates: false, input: "${ input }" }
output: "${ input }"
"#;

const BATCH: &str = r#"
name: batch
steps:
  lines:
    workflow: line
    for_each: "${ input }"
    input: "${ item }"
    max_concurrency: 2
    tolerated_failures: 1
output: "${ steps.lines.output }"
"#;

#[tokio::test]
async fn a_for_each_runs_a_child_per_element_and_tolerates_a_failed_one() {
    let (backend, invoker) = fresh_recording_backend("children-map", 5).await;
    let backend = Arc::new(backend);
    common::deployed(&backend, LINE).await;
    let coordinator = common::deployed(&backend, BATCH).await;
    coordinator
        .start("batch", None, "b-1", json!([1, 2, 3]))
        .await
        .unwrap();
    let mut started = 0;
    for i in 0..3 {
        let child = backend.load(&format!("b-1:lines:{i}")).await.unwrap();
        started += usize::from(child.is_some());
    }
    assert_eq!(started, 2, "at most max_concurrency at once");
    let invoked = drive(&backend, &coordinator, &invoker, "b-1", |t| {
        t.baton.function == "fn-pack" && t.input == json!(2)
    })
    .await;
    assert_eq!(invoked.len(), 6, "{invoked:?}");
    let parent = backend.load("b-1").await.unwrap().unwrap();
    assert_eq!(parent.status(), ExecutionStatus::Succeeded);
    assert_eq!(parent.state.output, Some(json!([1, null, 3])));
    let failed = backend.load("b-1:lines:1").await.unwrap().unwrap();
    assert_eq!(failed.status(), ExecutionStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_start_and_answer_their_parents_under_transient_faults() {
    use baton_runtime::faults::{FaultPlan, FaultyBackend, Op};
    let (backend, invoker) = fresh_recording_backend("children-faults", 50).await;
    let backend = Arc::new(backend);
    // A denied invoke fails its attempt (the workflow's retries try again
    // as permissions propagate), so these steps retry.
    let retrying = |text: &str| {
        text.replace(
            "retry: { max_attempts: 1 }",
            "retry: { max_attempts: 5, backoff: fixed, delay: 100ms }",
        )
    };
    common::deployed(&backend, &retrying(PAYMENT)).await;
    common::deployed(&backend, &retrying(ORDER)).await;
    // Every operation the coordinator calls fails a tenth of the time, with
    // a throttle, a denial or a timeout after the write landed.
    let plan = FaultPlan::random(0xc41d, &Op::COORDINATOR, 0.1, 0, 0);
    let faulty = Arc::new(FaultyBackend::new(backend.clone(), plan));
    let coordinator = Coordinator::new(faulty.clone(), Arc::new(baton_runtime::SystemClock));
    let orders: Vec<String> = (0..6).map(|i| format!("f-{i}")).collect();
    for id in &orders {
        // A client retries a start that failed in a way that may pass.
        let mut tries = 0;
        while let Err(e) = coordinator
            .start("order", None, id, json!({"total": 1}))
            .await
        {
            assert!(e.may_pass(), "{e}");
            tries += 1;
            assert!(tries < 20, "the start of {id} kept failing: {e}");
        }
    }
    let mut invoked: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        for task in invoker.take_all() {
            invoked.push(format!(
                "{} {}",
                task.baton.execution_id, task.baton.function
            ));
            // Shipping fails for the even orders: their children are undone.
            let even = task.baton.execution_id.ends_with(['0', '2', '4']);
            let record = if task.baton.function == "fn-ship" && even {
                DestinationRecord::failure(&task, "PermanentNoCourier", "no courier")
            } else {
                DestinationRecord::success(&task, json!({ "by": task.baton.function }))
            };
            common::send_record(&backend, &record).await;
        }
        let (handled, _) = common::event_source_round(&backend, &coordinator).await;
        let mut ended = true;
        for id in &orders {
            ended &= backend
                .load(id)
                .await
                .unwrap()
                .unwrap()
                .status()
                .is_terminal();
        }
        if ended && handled == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every order ended: {invoked:?}"
        );
    }
    assert!(faulty.counts().total() > 0, "no fault was injected");
    eprintln!(
        "faults injected: {}; {} invokes",
        faulty.counts(),
        invoked.len()
    );
    for (i, id) in orders.iter().enumerate() {
        let parent = backend.load(id).await.unwrap().unwrap();
        let child = backend.load(&format!("{id}:pay")).await.unwrap().unwrap();
        let ran = |f: &str, on: &str| invoked.iter().any(|c| c == &format!("{on} {f}"));
        if i % 2 == 0 {
            assert_eq!(parent.status(), ExecutionStatus::Compensated, "{id}");
            assert_eq!(child.status(), ExecutionStatus::Compensated, "{id}:pay");
            let child_id = format!("{id}:pay");
            assert!(ran("fn-refund", &child_id) && ran("fn-void", &child_id));
            assert!(ran("fn-release", id));
        } else {
            assert_eq!(
                parent.status(),
                ExecutionStatus::Succeeded,
                "{id}: {:?}; child {:?} {:?}; history {:#?}",
                parent.state.failure,
                child.status(),
                child.state.failure,
                backend.history(id).await.unwrap()
            );
            assert_eq!(child.status(), ExecutionStatus::Succeeded, "{id}:pay");
            assert_eq!(
                serde_json::to_value(&parent.state).unwrap()["steps"][1]["output"],
                json!({"paid": 1})
            );
        }
    }
    let dead = backend.list_dead_letters().await.unwrap();
    assert!(dead.is_empty(), "nothing was dead-lettered: {dead:?}");
}
