//! The coordinator's work on one batch of coordinator-queue messages (Baton's
//! own, step functions' Lambda destination records, and events EventBridge
//! rules matched), shared by the coordinator Lambda and `baton dev`.
//!
//! Messages are grouped by execution and each group is applied in order, its
//! results and timers in one transition (one load, one conditional write),
//! so one execution's events never race each other inside a batch; groups
//! run concurrently. Before its events, each execution's pending outbox is
//! delivered: that is how commands saved by a coordinator that died after
//! its checkpoint get sent when the message is redelivered. The ids of
//! messages to retry are returned (SQS partial batch failures).
//!
//! Every message has one of three outcomes, never a fourth: applied (or
//! found to change nothing); left for redelivery when the failure may pass
//! (throttling, an unreachable service, a version race, denied permission
//! while IAM changes), where the queue's redrive policy dead-letters it if
//! it keeps failing; or, when no retry can apply it (it does not decode, its
//! execution or workflow does not exist), dead-lettered at once for a person
//! with its body, the reason and its execution. A message that cannot even be
//! dead-lettered is left for redelivery.
//!
//! An event (from a trigger's rule, see [`crate::rules`], or a bare one)
//! is handled like a start: each execution it starts has an id derived from
//! the event's id, so a redelivery starts nothing twice. An event that is not
//! an EventBridge event is dead-lettered as malformed; one whose trigger
//! input fails on it is dead-lettered with the reason.

use std::collections::BTreeMap;

use baton_core::{Event, Outcome};
use baton_runtime::coordinator::{Coordinator, CoordinatorError, describe_ignored};
use baton_runtime::ports::{Backend, DeadLetterKind, DeadLetterRecord};
use futures::future::{BoxFuture, join_all};
use tracing::{Instrument, error, info_span, warn};

use baton_runtime::triggers::{self, TriggerError};

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
    let mut groups: BTreeMap<String, Vec<(QueueMessage, CoordinatorMessage)>> = BTreeMap::new();
    let mut failed = Vec::new();
    for message in messages {
        match CoordinatorMessage::decode(&message.body) {
            Ok(decoded) => groups
                .entry(decoded.execution_id().to_string())
                .or_default()
                .push((message, decoded)),
            Err(e) => {
                // Retrying cannot fix it: keep it for a person instead of looping.
                let reason = format!("coordinator message does not decode: {e}");
                if !dead_letter(
                    coordinator,
                    &message,
                    DeadLetterKind::Malformed,
                    None,
                    reason,
                )
                .await
                {
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

/// One execution's messages, in order. Boxed, as the coordinator's own
/// operations are, so a batch's stack frames hold pointers, not futures.
fn process_group<'a, B: Backend>(
    coordinator: &'a Coordinator<B>,
    execution_id: &'a str,
    group: Vec<(QueueMessage, CoordinatorMessage)>,
) -> BoxFuture<'a, Vec<String>> {
    Box::pin(async move {
        // A bare event's group is keyed by the event, not an execution.
        let execution = (!matches!(
            group.first(),
            Some((_, CoordinatorMessage::BusEvent { .. }))
        ))
        .then_some(execution_id);
        let is_start = matches!(
            group.first(),
            Some((
                _,
                CoordinatorMessage::Start { .. }
                    | CoordinatorMessage::Trigger { .. }
                    | CoordinatorMessage::BusEvent { .. }
            ))
        );
        if !is_start && let Err(e) = coordinator.recover(execution_id).await {
            // Whatever the cause, the saved commands must go out before anything
            // else moves the execution: leave its messages for redelivery (and
            // the redrive policy, with its alarm, if it keeps failing).
            warn!(error = %e, retryable = e.is_retryable(), "outbox not delivered yet; retrying the batch's messages for this execution");
            return group.into_iter().map(|(m, _)| m.id).collect();
        }
        // Runs of results and timers are applied together, in one transition
        // (see `Coordinator::handle_all`); a start message stands alone.
        let mut failed = Vec::new();
        let mut messages = group.into_iter().peekable();
        while messages.peek().is_some() {
            let mut run: Vec<(QueueMessage, Event)> = Vec::new();
            let mut start = None;
            for (queued, message) in messages.by_ref() {
                match message {
                    CoordinatorMessage::Event { event, .. } => run.push((queued, event)),
                    CoordinatorMessage::Timer { timer, .. } => {
                        run.push((queued, Event::TimerFired { timer }))
                    }
                    start_like @ (CoordinatorMessage::Start { .. }
                    | CoordinatorMessage::Trigger { .. }
                    | CoordinatorMessage::BusEvent { .. }) => {
                        start = Some((queued, start_like));
                        break;
                    }
                }
            }
            let (queued, events): (Vec<_>, Vec<_>) = run.into_iter().unzip();
            let mut results: Vec<(QueueMessage, Result<(), Unapplied>)> = queued
            .into_iter()
            .zip(coordinator.handle_all(execution_id, events).await)
            .map(|(q, r)| {
                let r = match r {
                    Ok(Outcome::Ignored(reason)) => {
                        tracing::debug!(reason = %describe_ignored(&reason), "message changed nothing");
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(Unapplied::from(e)),
                };
                (q, r)
            })
            .collect();
            if let Some((queued, message)) = start {
                let result = start_one(coordinator, message).await;
                results.push((queued, result));
            }
            let mut results = results.into_iter();
            while let Some((queued, result)) = results.next() {
                let id = queued.id.clone();
                let give_up = match result {
                    Ok(()) => false,
                    Err(Unapplied::Retry(error)) => {
                        warn!(error = %error, "retrying this execution's remaining messages");
                        true
                    }
                    Err(Unapplied::Dead(kind, reason)) => {
                        !dead_letter(coordinator, &queued, kind, execution, reason).await
                    }
                };
                if give_up {
                    failed.push(id);
                    failed.extend(results.map(|(m, _)| m.id));
                    failed.extend(messages.map(|(m, _)| m.id));
                    return failed;
                }
            }
        }
        failed
    })
}

/// Why a message was not applied, and what becomes of it.
enum Unapplied {
    /// Sending it again may apply it: leave it for redelivery.
    Retry(String),
    /// No retry can: keep it for a person.
    Dead(DeadLetterKind, String),
}

impl From<CoordinatorError> for Unapplied {
    fn from(e: CoordinatorError) -> Unapplied {
        if e.may_pass() {
            Unapplied::Retry(e.to_string())
        } else {
            Unapplied::Dead(
                DeadLetterKind::Task,
                format!("coordinator message cannot be applied: {e}"),
            )
        }
    }
}

/// Carries out a message that starts executions: a `start` (a schedule's,
/// see [`crate::schedules::start`]), an event a trigger's rule matched, or a
/// bare EventBridge event matched against every workflow's triggers.
fn start_one<'a, B: Backend>(
    coordinator: &'a Coordinator<B>,
    message: CoordinatorMessage,
) -> BoxFuture<'a, Result<(), Unapplied>> {
    Box::pin(async move {
        let outcome = match message {
            CoordinatorMessage::Start {
                workflow,
                version,
                execution_id,
                input,
            } => {
                return crate::schedules::start(
                    coordinator,
                    &workflow,
                    version,
                    &execution_id,
                    input,
                )
                .await
                .map(|_| ())
                .map_err(Unapplied::from);
            }
            CoordinatorMessage::Trigger {
                workflow,
                trigger,
                event,
                ..
            } => triggers::start_triggered(coordinator, &workflow, &trigger, &event).await,
            CoordinatorMessage::BusEvent { event, .. } => {
                triggers::start_matching(coordinator, &event).await
            }
            CoordinatorMessage::Event { .. } | CoordinatorMessage::Timer { .. } => {
                // Only start messages are passed here; were another to be, it is
                // left for redelivery (and the redrive policy), never acked unapplied.
                return Err(Unapplied::Retry(
                    "not a start message: it belongs with its execution's events".into(),
                ));
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e @ TriggerError::Malformed(_)) => {
                return Err(Unapplied::Dead(DeadLetterKind::Malformed, e.to_string()));
            }
            Err(TriggerError::Start { error, .. }) => return Err(Unapplied::from(error)),
            Err(e) => return Err(Unapplied::Dead(DeadLetterKind::Task, e.to_string())),
        };
        if outcome.failed.is_empty() {
            return Ok(());
        }
        // What started stays started: handling the event again starts only
        // what failed, since each start is idempotent by its id.
        let reasons: Vec<String> = outcome.failed.iter().map(ToString::to_string).collect();
        if outcome.failed.iter().any(|e| match e {
            TriggerError::Start { error, .. } => error.may_pass(),
            _ => false,
        }) {
            Err(Unapplied::Retry(reasons.join("; ")))
        } else {
            Err(Unapplied::Dead(
                DeadLetterKind::Task,
                format!("event starts nothing more: {}", reasons.join("; ")),
            ))
        }
    })
}

/// Keeps a message for a person; `false` if even that failed, in which case
/// the queue's redrive policy takes over.
async fn dead_letter<B: Backend>(
    coordinator: &Coordinator<B>,
    message: &QueueMessage,
    kind: DeadLetterKind,
    execution_id: Option<&str>,
    reason: String,
) -> bool {
    error!(message.id = %message.id, workflow.execution.id = execution_id.unwrap_or(""), reason = %reason, "coordinator message dead-lettered");
    let record = DeadLetterRecord {
        id: format!("{}-{}", kind.as_str(), message.id),
        kind,
        execution_id: execution_id.map(str::to_string),
        created_at: coordinator.now(),
        reason,
        body: serde_json::Value::String(message.body.clone()),
    };
    match coordinator.backend().dead_letter_message(&record).await {
        Ok(()) => true,
        Err(e) => {
            warn!(message.id = %message.id, error = %e, "could not dead-letter; leaving the message for the queue's redrive policy");
            false
        }
    }
}
