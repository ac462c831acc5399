//! An execution's own timeout on the AWS backend, against moto server: its
//! deadline is a delayed message on the coordinator queue like any timer,
//! and the coordinator that receives it fails the execution with
//! `ExecutionTimedOut` and dispatches the compensation of what it did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::fresh_recording_backend;
use baton_core::ExecutionStatus;
use baton_runtime::StartOptions;
use baton_runtime::ports::ExecutionStore;
use serde_json::json;

mod common;

const RESERVE_THEN_WAIT: &str = r#"
name: reserve-then-wait
timeout: 1h
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  reserve: { function: fn-reserve, compensate: { function: fn-release } }
  approval: { needs: [reserve], wait_for: { signal: approved } }
"#;

#[tokio::test]
async fn an_execution_past_its_timeout_fails_and_its_compensation_is_dispatched() {
    let (backend, invoker) = fresh_recording_backend("exec-timeout", 5).await;
    let backend = Arc::new(backend);
    let coordinator = common::deployed(&backend, RESERVE_THEN_WAIT).await;
    // The start's two seconds, not the workflow's hour.
    let options = StartOptions {
        timeout_ms: Some(2_000),
        ..StartOptions::default()
    };
    coordinator
        .start_with("reserve-then-wait", None, "late", json!({}), options)
        .await
        .unwrap();
    let reserve = invoker.take("fn-reserve");
    assert_eq!(reserve.len(), 1);
    let result = DestinationRecord::success(&reserve[0], json!({"id": "r-1"}));
    common::send_record(&backend, &result).await;

    // Play the coordinator's event source until the execution stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = ExecutionStatus::Running;
    while Instant::now() < deadline && status == ExecutionStatus::Running {
        common::coordinator_round(&backend, &coordinator).await;
        status = backend.load("late").await.unwrap().unwrap().status();
    }
    let record = backend.load("late").await.unwrap().unwrap();
    assert_eq!(record.status(), ExecutionStatus::Compensating);
    let failure = record.state.failure.clone().expect("a cause");
    assert_eq!(failure.name, "ExecutionTimedOut");
    let ran = record.state.deadline.unwrap() - record.state.started_at;
    assert_eq!(ran, 2_000);
    assert_eq!(
        invoker.take("fn-release").len(),
        1,
        "the reservation is undone"
    );
}
