//! A `repeat` step on the AWS backend, against moto server: each iteration
//! is an asynchronous invoke of its own (with its own idempotency key), the
//! delay between iterations a timer on the coordinator queue, and the step
//! ends once its output says done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_aws::dispatch::DestinationRecord;
use baton_aws::testing::fresh_recording_backend;
use baton_core::ExecutionStatus;
use baton_runtime::ports::ExecutionStore;
use serde_json::json;

mod common;

const POLL: &str = r#"
name: poll
defaults: { retry: { max_attempts: 1 }, timeout: 30s }
steps:
  ready:
    function: fn-poll
    mutates: false
    repeat: { until: "${ steps.ready.output.done }", max_iterations: 5, delay: 1s }
"#;

#[tokio::test]
async fn a_repeating_step_is_invoked_until_its_output_says_done() {
    let (backend, invoker) = fresh_recording_backend("repeat", 5).await;
    let backend = Arc::new(backend);
    let coordinator = common::deployed(&backend, POLL).await;
    coordinator
        .start("poll", None, "polling", json!({}))
        .await
        .unwrap();

    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = ExecutionStatus::Running;
    while Instant::now() < deadline && status == ExecutionStatus::Running {
        // Answer every invoke as its Lambda destination would: done on the third.
        for task in invoker.take("fn-poll") {
            keys.push(task.baton.idempotency_key.clone());
            let output = json!({ "done": keys.len() >= 3, "n": keys.len() });
            let record = DestinationRecord::success(&task, output);
            common::send_record(&backend, &record).await;
        }
        common::coordinator_round(&backend, &coordinator).await;
        status = backend.load("polling").await.unwrap().unwrap().status();
    }
    assert_eq!(status, ExecutionStatus::Succeeded);
    let record = backend.load("polling").await.unwrap().unwrap();
    assert_eq!(
        record.state.steps[0].output.as_deref(),
        Some(&json!({ "done": true, "n": 3 }))
    );
    assert_eq!(keys.len(), 3);
    assert!(keys[0] != keys[1] && keys[1] != keys[2], "{keys:?}");
}
