//! The coordinator's work on one batch of coordinator-queue messages (Baton's
//! own and step functions' Lambda destination records), shared by the
//! coordinator Lambda and `baton dev`.
//!
//! Messages are grouped by execution and each group is applied in order, so
//! one execution's events never race each other inside a batch; groups run
//! concurrently. Before its events, each execution's pending outbox is
//! delivered: that is how commands saved by a coordinator that died after
//! its checkpoint get sent when the message is redelivered. The ids of
//! messages to retry are returned (SQS partial batch failures).

use std::collections::BTreeMap;

use baton_core::Event;
use baton_runtime::coordinator::{Coordinator, CoordinatorError, describe_ignored};
use baton_runtime::ports::{Backend, DeadLetterKind, DeadLetterRecord};
use futures::future::join_all;
use tracing::{Instrument, error, info_span, warn};

use crate::messages::CoordinatorMessage;

/// One message as a queue delivered it.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
}

impl From<&aws_sdk_sqs::types::Message> for QueueMessage {
    /// A message as `ReceiveMessage` returned it, keyed by its message id (as
    /// partial batch failures name it).
    fn from(m: &aws_sdk_sqs::types::Message) -> QueueMessage {
        QueueMessage {
            id: m.message_id().unwrap_or_default().to_string(),
            body: m.body().unwrap_or_default().to_string(),
        }
    }
}

/// Applies a batch; returns the ids of messages that should be delivered again.
pub async fn process_coordinator_batch<B: Backend>(
    coordinator: &Coordinator<B>,
    messages: Vec<QueueMessage>,
) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<(String, CoordinatorMessage)>> = BTreeMap::new();
    let mut failed = Vec::new();
    for message in messages {
        match CoordinatorMessage::decode(&message.body) {
            Ok(decoded) => groups
                .entry(decoded.execution_id().to_string())
                .or_default()
                .push((message.id, decoded)),
            Err(e) => {
                // Retrying cannot fix it: keep it for a person instead of looping.
                error!(message.id = %message.id, error = %e, "malformed coordinator message; dead-lettered");
                let record = DeadLetterRecord {
                    id: format!("malformed-{}", message.id),
                    kind: DeadLetterKind::Malformed,
                    execution_id: None,
                    created_at: coordinator.now(),
                    reason: format!("coordinator message does not decode: {e}"),
                    body: serde_json::Value::String(message.body.clone()),
                };
                if let Err(e) = coordinator.backend().put_dead_letter(&record).await {
                    warn!(error = %e, "could not dead-letter; leaving the message for the queue's redrive policy");
                    failed.push(message.id);
                }
            }
        }
    }
    let runs = groups.into_iter().map(|(execution_id, group)| {
        let span = info_span!("execution", workflow.execution.id = %execution_id);
        async move { process_group(coordinator, &execution_id, group).await }.instrument(span)
    });
    for group_failures in join_all(runs).await {
        failed.extend(group_failures);
    }
    failed
}

async fn process_group<B: Backend>(
    coordinator: &Coordinator<B>,
    execution_id: &str,
    group: Vec<(String, CoordinatorMessage)>,
) -> Vec<String> {
    let is_start = matches!(group.first(), Some((_, CoordinatorMessage::Start { .. })));
    if !is_start && let Err(e) = coordinator.recover(execution_id).await {
        if e.is_retryable() {
            warn!(error = %e, "outbox not delivered yet; retrying the batch's messages for this execution");
            return group.into_iter().map(|(id, _)| id).collect();
        }
        error!(error = %e, "outbox could not be delivered");
    }
    let mut failed = Vec::new();
    let mut ids = group.into_iter();
    while let Some((id, message)) = ids.next() {
        let result = match message {
            CoordinatorMessage::Event { event, .. } => {
                coordinator.handle(execution_id, event).await.map(Some)
            }
            CoordinatorMessage::Timer { timer, .. } => coordinator
                .handle(execution_id, Event::TimerFired { timer })
                .await
                .map(Some),
            CoordinatorMessage::Start {
                workflow,
                version,
                execution_id,
                input,
            } => crate::schedules::start(coordinator, &workflow, version, &execution_id, input)
                .await
                .map(|_| None),
        };
        match result {
            Ok(Some(baton_core::Outcome::Ignored(reason))) => {
                tracing::debug!(reason = %describe_ignored(&reason), "message changed nothing");
            }
            Ok(_) => {}
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "retrying this execution's remaining messages");
                failed.push(id);
                failed.extend(ids.map(|(id, _)| id));
                break;
            }
            Err(e) => report_unusable(coordinator, &id, &e),
        }
    }
    failed
}

fn report_unusable<B: Backend>(coordinator: &Coordinator<B>, id: &str, e: &CoordinatorError) {
    // Not retryable (an unknown execution or workflow, an oversized payload):
    // log it loudly; the message is dropped rather than looping.
    error!(message.id = %id, error = %e, at = coordinator.now(), "coordinator message cannot be applied");
}
