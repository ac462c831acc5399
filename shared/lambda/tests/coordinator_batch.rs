//! The coordinator Lambda's batch handling on moto server: one batch moves
//! several executions (with Baton's own messages and a step function's
//! Lambda destination record), and a malformed message is dead-lettered, not
//! retried.

mod common;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use baton_aws::CoordinatorMessage;
use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::fresh_recording_backend;
use baton_core::definition::Format;
use baton_core::engine::{StepStatus, UnitStatus};
use baton_core::{Event, ExecutionStatus, TaskKind, TaskRef, WorkflowDefinition};
use baton_runtime::ports::{DeadLetterKind, DeadLetterStore, WorkflowStore};
use baton_runtime::{Coordinator, SystemClock};
use serde_json::json;

const TWO_STEPS: &str = r#"
name: two-steps
defaults: { retry: { max_attempts: 2 }, timeout: 1m }
steps:
  first: { function: noop, mutates: false, input: { n: "${ input.n }" } }
  second: { needs: [first], function: noop, mutates: false, input: { n: "${ steps.first.output.n }" } }
"#;

fn sqs_message(id: &str, body: String) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(id.into());
    record.body = Some(body);
    record
}

fn first_succeeded(execution: &str, n: u32) -> String {
    CoordinatorMessage::Event {
        execution_id: execution.into(),
        event: Event::TaskSucceeded {
            task: TaskRef {
                step: "first".into(),
                index: None,
                attempt: 1,
                kind: TaskKind::Step,
            },
            output: json!({ "n": n }),
        },
    }
    .to_json()
}

#[tokio::test]
async fn one_batch_moves_several_executions_and_dead_letters_malformed_messages() {
    let (backend, invoker) = fresh_recording_backend("coordinator", 5).await;
    let definition = WorkflowDefinition::parse(TWO_STEPS, Format::Yaml).unwrap();
    backend.put_workflow(&definition, 0).await.unwrap();
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    for (id, n) in [("ex-a", 1), ("ex-b", 2)] {
        coordinator
            .start("two-steps", None, id, json!({ "n": n }))
            .await
            .unwrap();
    }
    let dispatched = invoker.take("noop");
    let b_first = dispatched
        .iter()
        .find(|e| e.baton.execution_id == "ex-b")
        .expect("ex-b's first step was invoked");
    // ex-b's function answers through its OnSuccess destination.
    let b_succeeded =
        serde_json::to_string(&DestinationRecord::success(b_first, json!({ "n": 2 }))).unwrap();
    let start_c = CoordinatorMessage::Start {
        workflow: "two-steps".into(),
        version: None,
        execution_id: "ex-c".into(),
        input: json!({ "n": 3 }),
    }
    .to_json();
    let mut event = SqsEvent::default();
    event.records = vec![
        sqs_message("m-1", first_succeeded("ex-a", 1)),
        sqs_message("m-2", start_c),
        sqs_message("m-3", "{\"kind\": \"gibberish\"}".into()),
        sqs_message("m-4", b_succeeded),
        // A duplicate result: ignored by the engine, not an error.
        sqs_message("m-5", first_succeeded("ex-a", 1)),
    ];

    let response = baton_lambda::coordinator::handle(&coordinator, event).await;

    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    for id in ["ex-a", "ex-b"] {
        let record = backend.store().load(id).await.unwrap().expect(id);
        let first = record.state.step("first").unwrap();
        let second = record.state.step("second").unwrap();
        assert_eq!(first.status, StepStatus::Succeeded, "{id}");
        assert_eq!(second.status, StepStatus::Running, "{id}");
        assert_eq!(second.units[0].status, UnitStatus::Running, "{id}");
    }
    let c = backend.store().load("ex-c").await.unwrap().expect("ex-c");
    assert_eq!(c.status(), ExecutionStatus::Running);
    assert_eq!(c.state.step("first").unwrap().status, StepStatus::Running);
    let dead = backend.list_dead_letters().await.unwrap();
    assert!(
        dead.iter().any(|d| d.kind == DeadLetterKind::Malformed
            && d.body["message"]["kind"] == "gibberish"
            && d.reason.contains("does not decode")),
        "{dead:?}"
    );
    // Two `second` steps and one `first` step were invoked by this batch.
    let mut steps: Vec<_> = invoker
        .take("noop")
        .iter()
        .map(|t| format!("{}/{}", t.baton.execution_id, t.baton.step))
        .collect();
    steps.sort();
    assert_eq!(steps, ["ex-a/second", "ex-b/second", "ex-c/first"]);
    let b = backend.store().load("ex-b").await.unwrap().unwrap();
    assert_eq!(
        b.state.step("first").unwrap().output.as_deref(),
        Some(&json!({ "n": 2 })),
        "the destination record's response payload is the step's output"
    );
}
