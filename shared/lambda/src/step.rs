//! The step SDK: what runs inside a step Lambda.
//!
//! A step function is a [`StepHandler`]; its Lambda's `main` is one call:
//!
//! ```no_run
//! use baton_runtime::step::handler_fn;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     baton_lambda::step::run(handler_fn(|_context, input| async move { Ok(input) })).await
//! }
//! ```
//!
//! For each task of an SQS batch, [`process_step_batch`]:
//!
//! 1. acknowledges it without running anything when its execution exists and
//!    no longer runs that attempt (a late redelivery or a superseded attempt);
//! 2. reports the recorded output again, without running the handler, when a
//!    success is already recorded under the task's idempotency key;
//! 3. otherwise runs the handler until the task's deadline, records a success
//!    under the idempotency key, and reports `TaskSucceeded`, `TaskFailed` or
//!    `TaskTimedOut` to the coordinator queue.
//!
//! Only successes are recorded, so a retry after a failure really runs again.
//! A message whose result could not be reported is returned as a batch
//! failure; when it comes back, the recorded result is reported instead of
//! running the handler twice. A message that does not decode is dead-lettered
//! (kind `malformed`) and acknowledged: no retry could fix it.
//!
//! Copies of one task in a batch (same idempotency key) run one after
//! another, so the second finds the first's result; other tasks run
//! concurrently. Two Lambda instances can still run the same task at once:
//! delivery is at least once, and handlers pass the idempotency key on to
//! make the effect happen once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::coordinator_batch::QueueMessage;
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::engine::Dispatch;
use baton_core::{ErrorInfo, Event};
use baton_runtime::coordinator::task_is_current;
use baton_runtime::ports::{DeadLetterKind, DeadLetterRecord, DeadLetterStore, StoreError};
use baton_runtime::step::{StepContext, StepHandler};
use baton_runtime::{Clock, SystemClock};
use futures::FutureExt;
use futures::future::join_all;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Where the example handlers keep their ledger on Lambda (the only writable
/// directory) when `BATON_LEDGER` is not set.
#[cfg(feature = "examples")]
pub const LAMBDA_LEDGER_PATH: &str = "/tmp/ledger.db";

/// Runs a step Lambda: reads the settings once (a missing variable stops it
/// with an error naming the variable), then handles SQS batches of tasks
/// with `handler` until the runtime stops.
pub async fn run(handler: Arc<dyn StepHandler>) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init_tracing();
    let backend = crate::backend_from_env().await?;
    let (backend, handler) = (&backend, handler.as_ref());
    // Boxed: the runtime's future is nested deeply enough to overflow the
    // compiler's layout query depth inside a binary's `main`.
    Box::pin(lambda_runtime::run(service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            Ok::<_, Infallible>(handle(backend, handler, event.payload).await)
        },
    )))
    .await
}

/// Runs the step Lambda of one of the order saga's example functions
/// (`process-payment`, ...), with the same handler code the embedded runtime
/// uses. Its ledger is `BATON_LEDGER`, else [`LAMBDA_LEDGER_PATH`].
#[cfg(feature = "examples")]
pub async fn run_example(function: &str) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init_tracing();
    let handler = example_handler(function).inspect_err(|e| {
        error!(error = %e, function, "function cannot start");
    })?;
    run(handler).await
}

/// The example handler for `function`, sharing a ledger opened from
/// `BATON_LEDGER` (else [`LAMBDA_LEDGER_PATH`]).
#[cfg(feature = "examples")]
pub fn example_handler(function: &str) -> Result<Arc<dyn StepHandler>, crate::LambdaError> {
    use crate::LambdaError;
    use baton_examples::{LEDGER_ENV, Ledger, register_all};
    use baton_runtime::step::Registry;

    if !baton_examples::FUNCTIONS.contains(&function) {
        return Err(LambdaError::UnknownFunction(function.to_string()));
    }
    let path = std::env::var(LEDGER_ENV)
        .ok()
        .filter(|path| !path.trim().is_empty())
        .unwrap_or_else(|| LAMBDA_LEDGER_PATH.to_string());
    let ledger = Ledger::open(&path).map_err(|e| LambdaError::Ledger {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut registry = Registry::new();
    register_all(&mut registry, Arc::new(ledger));
    registry
        .get(function)
        .ok_or_else(|| LambdaError::UnknownFunction(function.to_string()))
}

/// One SQS event through [`process_step_batch`], as the Lambda runtime calls it.
pub async fn handle(
    backend: &AwsBackend,
    handler: &dyn StepHandler,
    event: SqsEvent,
) -> SqsBatchResponse {
    let failed = process_step_batch(backend, handler, crate::sqs::messages(event)).await;
    crate::sqs::batch_response(failed)
}

/// Handles a batch of task messages; returns the ids of those to deliver again.
pub async fn process_step_batch(
    backend: &AwsBackend,
    handler: &dyn StepHandler,
    messages: Vec<QueueMessage>,
) -> Vec<String> {
    let mut failed = Vec::new();
    let mut copies: BTreeMap<String, Vec<(String, Dispatch)>> = BTreeMap::new();
    for message in messages {
        match serde_json::from_str::<Dispatch>(&message.body) {
            Ok(task) => copies
                .entry(task.idempotency_key.clone())
                .or_default()
                .push((message.id, task)),
            Err(e) => {
                if !dead_letter_malformed(backend, &message, &e).await {
                    failed.push(message.id);
                }
            }
        }
    }
    let runs = copies.into_values().map(|group| async move {
        let mut failed = Vec::new();
        for (id, task) in group {
            let span = info_span!(
                "task",
                message.id = %id,
                workflow.execution.id = %task.execution_id,
                workflow.step = %task.task.step,
                workflow.attempt = task.task.attempt,
                function = %task.function,
            );
            if let Err(e) = process_task(backend, handler, &task)
                .instrument(span.clone())
                .await
            {
                span.in_scope(|| warn!(error = %e, "task left for redelivery"));
                failed.push(id);
            }
        }
        failed
    });
    for group_failures in join_all(runs).await {
        failed.extend(group_failures);
    }
    failed
}

/// Keeps an undecodable message for a person; `false` if even that failed,
/// in which case the queue's redrive policy takes over.
async fn dead_letter_malformed(
    backend: &AwsBackend,
    message: &QueueMessage,
    e: &serde_json::Error,
) -> bool {
    error!(message.id = %message.id, error = %e, "malformed task message; dead-lettered");
    let record = DeadLetterRecord {
        id: format!("malformed-{}", message.id),
        kind: DeadLetterKind::Malformed,
        execution_id: None,
        created_at: SystemClock.now(),
        reason: format!("task message does not decode: {e}"),
        body: Value::String(message.body.clone()),
    };
    match backend.put_dead_letter(&record).await {
        Ok(()) => true,
        Err(e) => {
            warn!(message.id = %message.id, error = %e, "could not dead-letter; leaving the message for the queue's redrive policy");
            false
        }
    }
}

/// One task; an error means the message should come back.
async fn process_task(
    backend: &AwsBackend,
    handler: &dyn StepHandler,
    task: &Dispatch,
) -> Result<(), StoreError> {
    let store = backend.store();
    // An unknown execution does not stop the task: the coordinator decides
    // what a result for it means.
    if let Some(record) = store.load(&task.execution_id).await?
        && !task_is_current(&record.state, &task.task)
    {
        debug!("task superseded or already reported; dropping it");
        return Ok(());
    }
    let event = match store.step_result(&task.idempotency_key).await? {
        Some(output) => {
            info!("result already recorded; reporting it again without running the handler");
            Event::TaskSucceeded {
                task: task.task.clone(),
                output,
            }
        }
        None => run_handler(backend, handler, task).await,
    };
    report(backend, task, event).await
}

/// Runs the handler within the task's deadline and turns what happened into
/// the event to report, recording a success first.
async fn run_handler(backend: &AwsBackend, handler: &dyn StepHandler, task: &Dispatch) -> Event {
    let task_ref = task.task.clone();
    let remaining = task.deadline.saturating_sub(SystemClock.now());
    if remaining == 0 {
        warn!(
            deadline = task.deadline,
            "deadline passed before the task ran"
        );
        return Event::TaskTimedOut { task: task_ref };
    }
    let context = StepContext {
        execution_id: task.execution_id.to_string(),
        workflow: task.workflow.to_string(),
        step: task.task.step.to_string(),
        index: task.task.index,
        attempt: task.task.attempt,
        kind: task.task.kind,
        function: task.function.to_string(),
        idempotency_key: task.idempotency_key.clone(),
        deadline: task.deadline,
    };
    // A panicking handler fails its own task, not the rest of the batch.
    let call = AssertUnwindSafe(handler.call(context, task.input.clone())).catch_unwind();
    let output = match tokio::time::timeout(Duration::from_millis(remaining), call).await {
        Err(_) => {
            warn!(
                timeout_ms = remaining,
                "handler ran past the task's deadline"
            );
            return Event::TaskTimedOut { task: task_ref };
        }
        Ok(Err(panic)) => {
            let message = panic_message(panic.as_ref());
            error!(panic = %message, "handler panicked");
            return failed(task_ref, ErrorInfo::new("HandlerPanicked", message, true));
        }
        Ok(Ok(Err(step_error))) => return failed(task_ref, step_error.into_error_info()),
        Ok(Ok(Ok(output))) => output,
    };
    let size = serde_json::to_vec(&output)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    let limit = backend.settings().payload_limit;
    if size > limit {
        let message = format!("the output is {size} bytes, more than the {limit}-byte limit");
        return failed(task_ref, ErrorInfo::new("PayloadTooLarge", message, false));
    }
    let output = match backend
        .store()
        .record_step_result(&task.idempotency_key, &output, SystemClock.now())
        .await
    {
        // A concurrent copy may have recorded first; its output is the one that counts.
        Ok(recorded) => recorded,
        Err(e) => {
            // Reporting still moves the execution on; only the guard against
            // running the handler again on a redelivery is lost.
            warn!(error = %e, "could not record the result; reporting it anyway");
            output
        }
    };
    Event::TaskSucceeded {
        task: task_ref,
        output,
    }
}

fn failed(task: baton_core::TaskRef, error: ErrorInfo) -> Event {
    warn!(error.name = %error.name, error.message = %error.message, retryable = error.retryable, "task failed");
    Event::TaskFailed { task, error }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_string())
}

async fn report(backend: &AwsBackend, task: &Dispatch, event: Event) -> Result<(), StoreError> {
    let message = CoordinatorMessage::Event {
        execution_id: task.execution_id.to_string(),
        event,
    };
    backend.queues().send_to_coordinator(&message, 0).await
}

#[cfg(all(test, feature = "examples"))]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_example_function_is_refused_before_anything_opens() {
        let err = example_handler("teleport-order")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no handler is registered for function `teleport-order`")
        );
    }
}
