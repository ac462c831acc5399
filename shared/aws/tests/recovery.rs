//! A coordinator that dies between its checkpoint write and its sends: the
//! commands it saved in the outbox are delivered when the message that
//! triggered it is redelivered, and nothing is applied twice.

use std::sync::Arc;

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::{RecordingInvoker, fresh_recording_backend};
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::definition::Format;
use baton_core::engine;
use baton_core::{Event, ExecutionStatus, Workflow, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, HistoryEntry, OutboxEntry, WorkflowStore};
use baton_runtime::step::StepEvent;
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::json;

mod common;
use common::{TWO_STEPS, take_task};

/// The step function's success as its Lambda destination delivers it.
fn result_message(task: &StepEvent, output: serde_json::Value) -> QueueMessage {
    QueueMessage {
        id: format!("m-{}", task.baton.step),
        body: serde_json::to_string(&DestinationRecord::success(task, output)).unwrap(),
    }
}

/// Starts the workflow `text` (two steps first) as `id`, then plays a coordinator that
/// applies the first step's result, writes its checkpoint and dies before
/// sending anything. Returns the coordinator, the message that triggered the
/// transition (SQS would deliver it again) and the commands it saved.
async fn crash_after_checkpoint(
    backend: &Arc<AwsBackend>,
    invoker: &RecordingInvoker,
    id: &str,
    text: &str,
) -> (Coordinator<AwsBackend>, QueueMessage, Vec<OutboxEntry>) {
    let definition = WorkflowDefinition::parse(text, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("two-steps", None, id, json!({}))
        .await
        .unwrap();
    let first = take_task(invoker, "fn-a");
    assert_eq!(first.len(), 1, "the first step was dispatched");
    let trigger = result_message(&first[0], json!({"a": 1}));

    let record = backend.load(id).await.unwrap().unwrap();
    let workflow = Workflow::from_definition(definition).unwrap();
    let mut state = record.state.clone();
    let event = CoordinatorMessage::decode(&trigger.body).unwrap();
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
        take_task(invoker, "fn-b").is_empty(),
        "nothing was sent before the crash"
    );
    assert_eq!(backend.pending_outbox(id).await.unwrap(), saved);
    (coordinator, trigger, saved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_saved_before_a_crash_are_sent_on_redelivery() {
    let (backend, invoker) = fresh_recording_backend("recovery", 3).await;
    let backend = Arc::new(backend);
    let (coordinator, trigger, _) =
        crash_after_checkpoint(&backend, &invoker, "ex-crash", TWO_STEPS).await;

    // SQS redelivers the triggering message to another coordinator.
    let failed = process_coordinator_batch(&coordinator, vec![trigger.clone()]).await;
    assert!(failed.is_empty(), "redelivery handled: {failed:?}");
    let second = take_task(&invoker, "fn-b");
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
    assert!(take_task(&invoker, "fn-b").is_empty(), "no second dispatch");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_saved_before_a_crash_survive_the_next_transition() {
    let (backend, invoker) = fresh_recording_backend("recovery-next", 3).await;
    let backend = Arc::new(backend);
    // The two steps, then a wait for a `note` signal, which may come early.
    let then_note =
        format!("{TWO_STEPS}  third:\n    needs: [second]\n    wait_for: {{ signal: note }}\n");
    let (coordinator, _, saved) =
        crash_after_checkpoint(&backend, &invoker, "ex-next", &then_note).await;

    // Before the triggering message comes back, another event for the
    // execution is applied on top (a signal no step waits for yet).
    coordinator
        .handle(
            "ex-next",
            Event::SignalReceived {
                name: "note".into(),
                payload: json!("early"),
                id: None,
            },
        )
        .await
        .unwrap();
    let second = take_task(&invoker, "fn-b");
    assert_eq!(
        second.len(),
        1,
        "the dispatch saved before the crash went out with the next transition"
    );
    assert!(
        backend.pending_outbox("ex-next").await.unwrap().is_empty(),
        "nothing left to deliver"
    );
    let history = backend.history("ex-next").await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|h| h.seq).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "no transition is missing from the history"
    );
    assert!(matches!(history[1].event, Event::TaskSucceeded { .. }));
    assert!(matches!(history[2].event, Event::SignalReceived { .. }));
    assert_eq!(saved[0].seq, 2);
}
