//! What the AWS backend's integration tests share: a two-step workflow and
//! taking its tasks off their queues.

use baton_aws::AwsBackend;
use baton_runtime::ports::{LeasedTask, TaskQueue};
use baton_runtime::{Clock, SystemClock};

/// `first` on `fn-a`, then `second` on `fn-b`; no retries.
pub const TWO_STEPS: &str = r#"
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

/// Every task now on `function`'s queue, deleted as it is taken.
pub async fn take_task(backend: &AwsBackend, function: &str) -> Vec<LeasedTask> {
    let tasks = backend
        .receive(&[function.to_string()], 10, 30_000, SystemClock.now())
        .await
        .unwrap();
    for t in &tasks {
        backend.ack(t).await.unwrap();
    }
    tasks
}
