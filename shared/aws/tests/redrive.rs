//! Redriving a failed execution on the AWS backend, against moto server: the
//! failed step is invoked again under its idempotency key, what succeeded is
//! not, and the execution then succeeds.

use std::sync::Arc;

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::fresh_recording_backend;
use baton_core::{ExecutionStatus, Outcome};
use baton_runtime::ports::ExecutionStore;
use baton_runtime::step::StepEvent;
use serde_json::json;

mod common;

const TWO_READS: &str = r#"
name: two-reads
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  first: { function: fn-first, mutates: false }
  second: { needs: [first], function: fn-second, mutates: false }
"#;

fn success(task: &StepEvent, output: serde_json::Value) -> QueueMessage {
    QueueMessage {
        id: format!("ok-{}-{}", task.baton.step, task.baton.attempt),
        body: serde_json::to_string(&DestinationRecord::success(task, output)).unwrap(),
    }
}

fn failure(task: &StepEvent) -> QueueMessage {
    QueueMessage {
        id: format!("failed-{}-{}", task.baton.step, task.baton.attempt),
        body: serde_json::to_string(&DestinationRecord::failure(
            task,
            "ServiceDown",
            "the service is down",
        ))
        .unwrap(),
    }
}

#[tokio::test]
async fn a_redriven_execution_runs_its_failed_step_again_and_succeeds() {
    let (backend, invoker) = fresh_recording_backend("redrive", 5).await;
    let backend = Arc::new(backend);
    let coordinator = common::deployed(&backend, TWO_READS).await;
    coordinator
        .start("two-reads", None, "again", json!({}))
        .await
        .unwrap();
    let first = invoker.take("fn-first");
    assert!(
        process_coordinator_batch(&coordinator, vec![success(&first[0], json!(1))])
            .await
            .is_empty()
    );
    let second = invoker.take("fn-second");
    assert!(
        process_coordinator_batch(&coordinator, vec![failure(&second[0])])
            .await
            .is_empty()
    );
    assert_eq!(
        backend.load("again").await.unwrap().unwrap().status(),
        ExecutionStatus::Failed
    );

    let outcome = coordinator
        .redrive("again", Some("the service is back".into()))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Applied);
    assert!(
        invoker.take("fn-first").is_empty(),
        "what succeeded is not run again"
    );
    let again = invoker.take("fn-second");
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].baton.idempotency_key,
        second[0].baton.idempotency_key
    );
    assert_eq!(again[0].baton.attempt, 2);
    assert!(
        process_coordinator_batch(&coordinator, vec![success(&again[0], json!(2))])
            .await
            .is_empty()
    );
    let record = backend.load("again").await.unwrap().unwrap();
    assert_eq!(record.status(), ExecutionStatus::Succeeded);
    let history = backend.history("again").await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| matches!(&h.event, baton_core::Event::RedriveRequested { reason: Some(r) } if r == "the service is back")),
        "{history:?}"
    );

    // Once it succeeded there is nothing to run again.
    let outcome = coordinator.redrive("again", None).await.unwrap();
    assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
}
