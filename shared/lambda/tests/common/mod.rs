//! Helpers shared by the integration tests: tasks as the coordinator would
//! queue them, a handler that counts its calls, and draining the coordinator
//! queue of a backend on moto server.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton_aws::coordinator_batch::QueueMessage;
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::engine::Dispatch;
use baton_core::{TaskKind, TaskRef, idempotency};
use baton_runtime::step::{StepContext, StepFuture, StepHandler};
use baton_runtime::{Clock, SystemClock};
use serde_json::Value;

/// A task for attempt `attempt` of `step`, with the real idempotency key and
/// a deadline `timeout_ms` from now.
pub fn task(
    execution: &str,
    step: &str,
    function: &str,
    attempt: u32,
    timeout_ms: u64,
    input: Value,
) -> Dispatch {
    Dispatch {
        execution_id: execution.into(),
        workflow: "test".into(),
        task: TaskRef {
            step: step.into(),
            index: None,
            attempt,
            kind: TaskKind::Step,
        },
        function: function.into(),
        input,
        idempotency_key: idempotency::key(execution, step, None, TaskKind::Step),
        timeout_ms,
        deadline: SystemClock.now() + timeout_ms,
    }
}

/// The task as an SQS message with the given id.
pub fn message(id: &str, task: &Dispatch) -> QueueMessage {
    QueueMessage {
        id: id.to_string(),
        body: serde_json::to_string(task).expect("a task serialises"),
    }
}

/// Wraps a handler and counts how often it is called.
pub struct Counting {
    pub calls: Arc<AtomicUsize>,
    inner: Arc<dyn StepHandler>,
}

impl Counting {
    pub fn new(inner: Arc<dyn StepHandler>) -> Counting {
        Counting {
            calls: Arc::new(AtomicUsize::new(0)),
            inner,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl StepHandler for Counting {
    fn call(&self, context: StepContext, input: Value) -> StepFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(context, input)
    }
}

/// Every message now on the coordinator queue, decoded.
pub async fn drain_coordinator(backend: &AwsBackend) -> Vec<CoordinatorMessage> {
    baton_aws::testing::drain_coordinator_queue(backend)
        .await
        .iter()
        .map(|m| serde_json::from_str(&m.body).expect("a coordinator message"))
        .collect()
}
