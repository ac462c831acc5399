//! The optional Rust step SDK.
//!
//! Any Lambda function is a step, in any runtime and with no Baton code: the
//! coordinator invokes it asynchronously with one [`StepEvent`] (the step's
//! `input`, and Baton's context under `baton`), its return value is the
//! step's output, and a thrown error is a failed attempt whose error type is
//! what the workflow's `retry_on` / `no_retry_on` match. An error type that
//! starts with [`PERMANENT_ERROR_PREFIX`](baton_runtime::step::PERMANENT_ERROR_PREFIX) is never retried. The function's
//! event-invoke configuration (no Lambda retries, success and failure
//! destinations on Baton's coordinator queue) carries the result back; the
//! function itself sends nothing.
//!
//! This module is a convenience for Rust functions, nothing more. A
//! [`StepHandler`] gets the context as a [`StepContext`](baton_runtime::step::StepContext) and returns JSON or
//! a [`StepError`]; [`run`] is its Lambda's whole `main`:
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
//! What the SDK owns, per invocation (see [`handle`]):
//!
//! - decoding the event, refusing one that is not a [`StepEvent`] with the
//!   permanent error type `Permanent.InvalidEvent`;
//! - not running the handler when the task's deadline has already passed
//!   (error type `DeadlineExceeded`), and stopping it at the deadline
//!   (error type `Timeout`);
//! - turning a [`StepError`] into the error type Lambda reports
//!   ([`StepError::function_error_type`]: a permanent error's name gains the
//!   `Permanent.` prefix), with its message as the error message;
//! - turning a panic into the retryable error type `HandlerPanicked`, so the
//!   instance lives on.
//!
//! - with `BATON_PAYLOAD_BUCKET` set (the stack's payload bucket), reading an
//!   input that arrives by reference and writing an output too large for a
//!   destination record to the bucket, returning its reference (see
//!   `baton_aws::payloads`); the handler sees and returns plain JSON.
//!
//! Idempotency is the handler's to keep, by passing `context.idempotency_key`
//! (the same on every retry and redelivery of the step) on to the service it
//! calls.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use baton_aws::payloads::PayloadStore;
use baton_core::Timestamp;
use baton_runtime::step::{StepError, StepEvent, StepHandler};
use baton_runtime::{Clock, SystemClock};
use futures::FutureExt;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;
use tracing::{Instrument, error, info, info_span, warn};

/// Error type of an attempt whose deadline passed before the handler ran.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Error type of a handler still running at the task's deadline.
pub const TIMEOUT: &str = "Timeout";
/// Error type of a handler that panicked.
pub const HANDLER_PANICKED: &str = "HandlerPanicked";
/// Error type of an event that is not a [`StepEvent`]; never retried.
pub const INVALID_EVENT: &str = "Permanent.InvalidEvent";

/// Where the example handlers keep their ledger on Lambda (the only writable
/// directory) when `BATON_LEDGER` is not set.
#[cfg(feature = "examples")]
pub const LAMBDA_LEDGER_PATH: &str = "/tmp/ledger.db";

/// Runs a step function: hands each invocation's event to `handler` through
/// [`handle`] until the runtime stops.
pub async fn run(handler: Arc<dyn StepHandler>) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init_tracing();
    let handler = handler.as_ref();
    let payloads = payload_store().await;
    let payloads = payloads.as_ref();
    // Boxed: the runtime's future is nested deeply enough to overflow the
    // compiler's layout query depth inside a binary's `main`.
    Box::pin(lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Value>| async move {
            let mut event = decode_event(event.payload)?;
            let Some(payloads) = payloads else {
                return handle(handler, event, SystemClock.now()).await;
            };
            event.input = payloads
                .function_input(event.input)
                .await
                .map_err(payload_unavailable)?;
            let execution_id = event.baton.execution_id.clone();
            let output = handle(handler, event, SystemClock.now()).await?;
            payloads
                .function_output(&execution_id, output)
                .await
                .map_err(payload_unavailable)
        },
    )))
    .await
}

/// Error type of an attempt whose input or output could not be read from or
/// written to the payload bucket (retryable).
pub const PAYLOAD_UNAVAILABLE: &str = "PayloadUnavailable";

/// The payload bucket named by `BATON_PAYLOAD_BUCKET`, if any: an input
/// passed by reference is read from it, and an output too large for a
/// destination record is written to it and returned by reference.
async fn payload_store() -> Option<PayloadStore> {
    let bucket = std::env::var("BATON_PAYLOAD_BUCKET")
        .ok()
        .filter(|b| !b.trim().is_empty())?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let s3 = aws_sdk_s3::Client::from_conf(baton_aws::payloads::s3_config(&config).build());
    Some(PayloadStore::new(s3, bucket))
}

fn payload_unavailable(e: baton_runtime::ports::StoreError) -> Diagnostic {
    error!(error = %e, "payload bucket unavailable");
    diagnostic(PAYLOAD_UNAVAILABLE, e.to_string())
}

/// Runs the step function of one of the order saga's example handlers
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

/// The invocation's payload as a [`StepEvent`]. One that does not decode is
/// a permanent failure: no retry of the same event could fix it.
pub fn decode_event(payload: Value) -> Result<StepEvent, Diagnostic> {
    serde_json::from_value(payload).map_err(|e| {
        error!(error = %e, "the event is not a step event");
        Diagnostic {
            error_type: INVALID_EVENT.to_string(),
            error_message: format!("the event is not a Baton step event: {e}"),
        }
    })
}

/// One invocation at time `now` (epoch milliseconds): the handler's output,
/// or the error Lambda reports as the function's `errorType` and
/// `errorMessage`.
pub async fn handle(
    handler: &dyn StepHandler,
    event: StepEvent,
    now: Timestamp,
) -> Result<Value, Diagnostic> {
    let StepEvent { input, baton } = event;
    let span = info_span!(
        "task",
        workflow.execution.id = %baton.execution_id,
        workflow.step = %baton.step,
        workflow.index = baton.index,
        workflow.attempt = baton.attempt,
        function = %baton.function,
    );
    async move {
        let remaining = baton.deadline.saturating_sub(now);
        if remaining == 0 {
            warn!(deadline = baton.deadline, "deadline passed before the task ran");
            return Err(diagnostic(
                DEADLINE_EXCEEDED,
                format!("the task's deadline ({}) passed before it ran", baton.deadline),
            ));
        }
        // A panicking handler fails its attempt, not the instance.
        let call = AssertUnwindSafe(handler.call(baton, input)).catch_unwind();
        match tokio::time::timeout(Duration::from_millis(remaining), call).await {
            Err(_) => {
                warn!(timeout_ms = remaining, "handler ran past the task's deadline");
                Err(diagnostic(
                    TIMEOUT,
                    format!("the handler ran past the task's deadline ({remaining} ms)"),
                ))
            }
            Ok(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                error!(panic = %message, "handler panicked");
                Err(diagnostic(HANDLER_PANICKED, message))
            }
            Ok(Ok(Err(step_error))) => {
                warn!(error.name = %step_error.name, error.message = %step_error.message, retryable = step_error.retryable, "task failed");
                Err(step_diagnostic(&step_error))
            }
            Ok(Ok(Ok(output))) => {
                info!("task succeeded");
                Ok(output)
            }
        }
    }
    .instrument(span)
    .await
}

/// The error Lambda reports for `error`: its type reads back with the same
/// retryability (a permanent error's type starts with
/// [`PERMANENT_ERROR_PREFIX`](baton_runtime::step::PERMANENT_ERROR_PREFIX)).
pub fn step_diagnostic(error: &StepError) -> Diagnostic {
    diagnostic(&error.function_error_type(), error.message.clone())
}

fn diagnostic(error_type: &str, message: String) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_string(),
        error_message: message,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_string())
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
