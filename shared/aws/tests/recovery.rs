//! A coordinator that dies between its checkpoint write and its sends: the
//! commands it saved in the outbox are delivered when the message that
//! triggered it is redelivered, and nothing is applied twice.

use std::sync::Arc;

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::testing::fresh_backend;
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::definition::Format;
use baton_core::engine;
use baton_core::{Event, ExecutionStatus, Workflow, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, HistoryEntry, LeasedTask, TaskQueue, WorkflowStore};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::json;

const TWO_STEPS: &str = r#"
name: two-steps
steps:
  first:
    function: fn-a
    mutates: false
    retry: { max_attempts: 1 }
  second:
    needs: [first]
    function: fn-b
    mutates: false
    retry: { max_attempts: 1 }
"#;

async fn take_task(backend: &AwsBackend, function: &str) -> Vec<LeasedTask> {
    let tasks = backend
        .receive(&[function.to_string()], 10, 30_000, SystemClock.now())
        .await
        .unwrap();
    for t in &tasks {
        backend.ack(t).await.unwrap();
    }
    tasks
}

fn result_message(task: &LeasedTask, output: serde_json::Value) -> QueueMessage {
    let message = CoordinatorMessage::Event {
        execution_id: task.task.execution_id.to_string(),
        event: Event::TaskSucceeded {
            task: task.task.task.clone(),
            output,
        },
    };
    QueueMessage {
        id: format!("m-{}", task.task.task.step),
        body: message.to_json(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_saved_before_a_crash_are_sent_on_redelivery() {
    let backend = Arc::new(fresh_backend("recovery", &["fn-a", "fn-b"], 3).await);
    let definition = WorkflowDefinition::parse(TWO_STEPS, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("two-steps", None, "ex-crash", json!({}))
        .await
        .unwrap();
    let first = take_task(&backend, "fn-a").await;
    assert_eq!(first.len(), 1, "the first step was dispatched");
    let trigger = result_message(&first[0], json!({"a": 1}));

    // The coordinator's work up to its checkpoint, then it dies: the state
    // and outbox are written, nothing is sent.
    let record = backend.load("ex-crash").await.unwrap().unwrap();
    let workflow = Workflow::from_definition(definition).unwrap();
    let mut state = record.state.clone();
    let event: CoordinatorMessage = serde_json::from_str(&trigger.body).unwrap();
    let CoordinatorMessage::Event { event, .. } = event else {
        unreachable!()
    };
    let now = SystemClock.now();
    let transition = engine::apply(&workflow, &mut state, event.clone(), now);
    let next = baton_runtime::ports::ExecutionRecord {
        version: record.version + 1,
        state,
        updated_at: now,
        ..record
    };
    let history = [HistoryEntry {
        seq: next.version,
        at: now,
        event,
    }];
    let saved = backend
        .commit(&next, record.version, &history, &transition.commands)
        .await
        .unwrap();
    assert!(
        !saved.is_empty(),
        "the transition saved commands in its outbox"
    );
    assert!(
        take_task(&backend, "fn-b").await.is_empty(),
        "nothing was sent before the crash"
    );
    assert_eq!(backend.pending_outbox("ex-crash").await.unwrap(), saved);

    // SQS redelivers the triggering message to another coordinator.
    let failed = process_coordinator_batch(&coordinator, vec![trigger.clone()]).await;
    assert!(failed.is_empty(), "redelivery handled: {failed:?}");
    let second = take_task(&backend, "fn-b").await;
    assert_eq!(second.len(), 1, "the saved dispatch was sent on redelivery");
    assert!(
        backend.pending_outbox("ex-crash").await.unwrap().is_empty(),
        "the outbox is cleared"
    );
    let applied = backend.history("ex-crash").await.unwrap();
    assert_eq!(
        applied.len(),
        2,
        "the result was applied once: {applied:#?}"
    );

    // A further duplicate changes nothing and sends nothing.
    assert!(
        process_coordinator_batch(&coordinator, vec![trigger])
            .await
            .is_empty()
    );
    assert!(
        take_task(&backend, "fn-b").await.is_empty(),
        "no second dispatch"
    );

    let done = result_message(&second[0], json!({"b": 2}));
    assert!(
        process_coordinator_batch(&coordinator, vec![done])
            .await
            .is_empty()
    );
    let record = backend.load("ex-crash").await.unwrap().unwrap();
    assert_eq!(record.status(), ExecutionStatus::Succeeded);
    assert_eq!(record.version, 3, "start, first result, second result");
}
