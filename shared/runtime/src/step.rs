//! The step handler API: what a function that implements a step sees.
//!
//! The same handler runs in-process under the embedded worker and inside a
//! step Lambda; it gets a [`StepContext`] (execution id, step, attempt,
//! idempotency key, deadline) and the step's JSON input, and returns JSON or
//! a [`StepError`] that says whether a retry could help.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use baton_core::{ErrorInfo, TaskKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// Who is calling and why; identical on every redelivery of the same attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepContext {
    pub execution_id: String,
    pub workflow: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub attempt: u32,
    pub kind: TaskKind,
    pub function: String,
    /// Same across attempts and redeliveries: pass it to the outside service.
    pub idempotency_key: String,
    /// Milliseconds since the epoch after which the result is no longer wanted.
    pub deadline: Timestamp,
}

/// A step's failure as its handler reports it.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{name}: {message}")]
pub struct StepError {
    pub name: String,
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    /// A failure that may go away on a later attempt (network, throttling, ...).
    pub fn retryable(name: impl Into<String>, message: impl Into<String>) -> StepError {
        StepError {
            name: name.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix (invalid input, card declined, ...).
    pub fn permanent(name: impl Into<String>, message: impl Into<String>) -> StepError {
        StepError {
            name: name.into(),
            message: message.into(),
            retryable: false,
        }
    }

    pub fn into_error_info(self) -> ErrorInfo {
        ErrorInfo::new(self.name, self.message, self.retryable)
    }
}

pub type StepFuture = Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send>>;

/// Implements one function.
pub trait StepHandler: Send + Sync + 'static {
    fn call(&self, context: StepContext, input: Value) -> StepFuture;
}

/// A handler from an async closure: `handler_fn(|ctx, input| async move { ... })`.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn StepHandler>
where
    F: Fn(StepContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, StepError>> + Send + 'static,
{
    struct FnHandler<F>(F);
    impl<F, Fut> StepHandler for FnHandler<F>
    where
        F: Fn(StepContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepError>> + Send + 'static,
    {
        fn call(&self, context: StepContext, input: Value) -> StepFuture {
            Box::pin((self.0)(context, input))
        }
    }
    Arc::new(FnHandler(f))
}

/// In-process handlers by function name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn StepHandler>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(
        &mut self,
        function: impl Into<String>,
        handler: Arc<dyn StepHandler>,
    ) -> &mut Self {
        self.handlers.insert(function.into(), handler);
        self
    }

    pub fn get(&self, function: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.get(function).cloned()
    }

    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

impl StepContext {
    /// The context of one dispatched attempt.
    pub fn of(task: &baton_core::engine::Dispatch) -> StepContext {
        StepContext {
            execution_id: task.execution_id.to_string(),
            workflow: task.workflow.to_string(),
            step: task.task.step.to_string(),
            index: task.task.index,
            attempt: task.task.attempt,
            kind: task.task.kind,
            function: task.function.to_string(),
            idempotency_key: task.idempotency_key.clone(),
            deadline: task.deadline,
        }
    }

    /// The attempt this context belongs to, as results name it.
    pub fn task_ref(&self) -> baton_core::TaskRef {
        baton_core::TaskRef {
            step: self.step.as_str().into(),
            index: self.index,
            attempt: self.attempt,
            kind: self.kind,
        }
    }
}

/// The one JSON event a step function receives, in any runtime: the step's
/// input as the workflow computed it, and Baton's context beside it (never
/// mixed into the input).
///
/// ```json
/// {"input": {"orderId": "o-1"},
///  "baton": {"execution_id": "order-1", "workflow": "order-processing", "step": "charge",
///            "attempt": 1, "kind": "step", "function": "orders-charge",
///            "idempotency_key": "bk-…", "deadline": 1764504000000}}
/// ```
///
/// The function's return value is the step's output; a thrown error is a
/// failed attempt named by [`error_from_function`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    #[serde(default)]
    pub input: Value,
    pub baton: StepContext,
}

/// Error types that start with this are not retried, whatever the step's
/// retry policy says: a function's way to say "do not retry" with no Baton
/// library (`class PermanentCardDeclined(Exception)` in Python).
pub const PERMANENT_ERROR_PREFIX: &str = "Permanent";

/// A function's error as the engine records it: the error type (as Lambda
/// reports it, the exception's class name) is the name `retry_on` and
/// `no_retry_on` match; a type starting with [`PERMANENT_ERROR_PREFIX`] is
/// never retried.
pub fn error_from_function(error_type: &str, message: &str) -> ErrorInfo {
    let retryable = !error_type.starts_with(PERMANENT_ERROR_PREFIX);
    ErrorInfo::new(error_type, message, retryable)
}

impl StepError {
    /// The error type a function reports for this error, such that
    /// [`error_from_function`] reads the same retryability back: a
    /// permanent error's name gains the [`PERMANENT_ERROR_PREFIX`] (and a
    /// dot) unless it already starts with it.
    pub fn function_error_type(&self) -> String {
        match (
            self.retryable,
            self.name.starts_with(PERMANENT_ERROR_PREFIX),
        ) {
            (false, false) => format!("{PERMANENT_ERROR_PREFIX}.{}", self.name),
            _ => self.name.clone(),
        }
    }
}

impl StepEvent {
    pub fn of(task: &baton_core::engine::Dispatch) -> StepEvent {
        StepEvent {
            input: task.input.clone(),
            baton: StepContext::of(task),
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn a_step_event_keeps_input_and_context_apart() {
        let event: StepEvent = serde_json::from_value(serde_json::json!({
            "input": {"orderId": "o-1", "baton": "the user's own field"},
            "baton": {"execution_id": "e", "workflow": "w", "step": "s", "attempt": 2,
                      "kind": "compensation", "function": "f", "idempotency_key": "k",
                      "deadline": 5}
        }))
        .unwrap();
        assert_eq!(event.input["baton"], "the user's own field");
        assert_eq!(event.baton.attempt, 2);
        assert_eq!(event.baton.kind, TaskKind::Compensation);
        assert_eq!(event.baton.index, None);
    }

    #[test]
    fn permanent_errors_survive_the_round_trip_through_a_function() {
        let declined = StepError::permanent("CardDeclined", "no funds");
        let info = error_from_function(&declined.function_error_type(), "no funds");
        assert_eq!(info.name, "Permanent.CardDeclined");
        assert!(!info.retryable);
        let flaky = StepError::retryable("Timeout", "slow");
        let info = error_from_function(&flaky.function_error_type(), "slow");
        assert_eq!((info.name.as_str(), info.retryable), ("Timeout", true));
        assert!(!error_from_function("PermanentError", "x").retryable);
        assert!(error_from_function("ValueError", "x").retryable);
    }
}
