//! What the AWS backend's integration tests share: a two-step workflow and
//! the attempts a backend dispatched to its functions.

use baton_aws::testing::RecordingInvoker;
use baton_runtime::step::StepEvent;

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

/// Every attempt dispatched to `function` since the last look.
pub fn take_task(invoker: &RecordingInvoker, function: &str) -> Vec<StepEvent> {
    invoker.take(function)
}
