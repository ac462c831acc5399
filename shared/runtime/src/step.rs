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
