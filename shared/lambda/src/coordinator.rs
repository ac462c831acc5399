//! The coordinator Lambda: each SQS batch of coordinator messages (task
//! results, timers, starts, signals, cancels) goes through
//! [`process_coordinator_batch`], and the ids it wants retried become the
//! batch's partial failures.
//!
//! The backend and [`Coordinator`] are built once per instance, so its cache
//! of compiled workflow versions lives across invocations.

use std::convert::Infallible;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::AwsBackend;
use baton_aws::coordinator_batch::process_coordinator_batch;
use baton_runtime::{Coordinator, SystemClock};
use lambda_runtime::{LambdaEvent, service_fn};

/// Runs the coordinator Lambda until the runtime stops. A missing setting
/// stops it at once with an error naming the variable.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init_tracing();
    let backend = crate::backend_from_env().await?;
    let coordinator = Coordinator::new(Arc::new(backend), Arc::new(SystemClock));
    let coordinator = &coordinator;
    // Boxed: the runtime's future is nested deeply enough to overflow the
    // compiler's layout query depth inside a binary's `main`.
    Box::pin(lambda_runtime::run(service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            Ok::<_, Infallible>(handle(coordinator, event.payload).await)
        },
    )))
    .await
}

/// One SQS event, as the Lambda runtime calls it.
pub async fn handle(coordinator: &Coordinator<AwsBackend>, event: SqsEvent) -> SqsBatchResponse {
    let failed = process_coordinator_batch(coordinator, crate::sqs::messages(event)).await;
    crate::sqs::batch_response(failed)
}
