//! Baton's Lambda side on AWS.
//!
//! - [`step`]: the optional Rust step SDK. Any Lambda function is a step
//!   with no Baton code; a Rust one may hand its
//!   [`StepHandler`](baton_runtime::step::StepHandler) to [`step::run`],
//!   which decodes the [`StepEvent`](baton_runtime::step::StepEvent),
//!   enforces the task's deadline, catches panics and reports a failure with
//!   the error type Baton reads its retryability from.
//! - [`coordinator`]: the coordinator Lambda, feeding each SQS batch to
//!   [`baton_aws::coordinator_batch::process_coordinator_batch`].
//! - [`sqs`]: SQS events in, partial batch failures out.
//! - [`telemetry`]: JSON logs for CloudWatch.
//!
//! Feature `examples` adds `step::run_example`, step functions over the
//! order saga's example handlers.
//!
//! The coordinator returns the ids of messages to deliver again as
//! `batchItemFailures`, so its event source mapping must enable
//! `ReportBatchItemFailures`; without it a single failure retries the batch.

pub mod coordinator;
pub mod sqs;
pub mod step;
pub mod telemetry;

pub use baton_aws::coordinator_batch::QueueMessage;

use baton_aws::{AwsBackend, AwsSettings, ConfigError};
use thiserror::Error;

/// Why a function could not start.
#[derive(Debug, Error)]
pub enum LambdaError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("no handler is registered for function `{0}`")]
    UnknownFunction(String),
    #[cfg(feature = "examples")]
    #[error("the example ledger at {path} could not be opened: {message}")]
    Ledger { path: String, message: String },
}

/// The backend named by the environment (`BATON_TABLE`,
/// `BATON_COORDINATOR_QUEUE_URL`, ...), read once at cold start.
pub async fn backend_from_env() -> Result<AwsBackend, LambdaError> {
    let settings = AwsSettings::from_env().inspect_err(|e| {
        // Logged as well as returned: the runtime prints only the error's Debug form.
        tracing::error!(error = %e, "function cannot start");
    })?;
    Ok(AwsBackend::from_env(settings).await)
}
