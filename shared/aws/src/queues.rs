//! SQS: the coordinator queue, with a redrive policy to its DLQ, that task
//! results (Lambda destinations), timers, starts and signals arrive on; SQS
//! delays and one-time EventBridge Scheduler schedules as durable timers;
//! EventBridge for lifecycle events.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use baton_core::{LifecycleEvent, TimerId, Timestamp};
use baton_runtime::ports::{ScheduledTimer, StoreError, StoreResult};

use crate::config::AwsSettings;
use crate::messages::CoordinatorMessage;
use crate::store::sdk_error;

/// SQS cannot delay a message longer than this; later timers become schedules.
pub const MAX_SQS_DELAY_MS: u64 = 15 * 60 * 1000;

/// The most messages one `SendMessageBatch` carries.
const SQS_BATCH: usize = 10;

#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub s3: aws_sdk_s3::Client,
}

pub struct Queues {
    clients: Clients,
    settings: AwsSettings,
    urls: Mutex<HashMap<String, String>>,
}

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "queue message".into(),
        message: message.into(),
    }
}

impl Queues {
    pub fn new(clients: Clients, settings: AwsSettings) -> Queues {
        Queues {
            clients,
            settings,
            urls: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The URL of a queue by name, cached after the first lookup.
    pub async fn queue_url(&self, name: &str) -> StoreResult<String> {
        if let Some(url) = self
            .urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(url.clone());
        }
        let out = self
            .clients
            .sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| match sdk_error(e) {
                StoreError::Rejected { code, message } => StoreError::Rejected {
                    code,
                    message: format!(
                        "queue `{name}` not found ({message}); run `baton bootstrap` or deploy the stack"
                    ),
                },
                other => other,
            })?;
        let url = out.queue_url().unwrap_or_default().to_string();
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), url.clone());
        Ok(url)
    }

    /// Deletes a message by the receipt `queue_url|handle`.
    pub async fn delete(&self, receipt: &str) -> StoreResult<()> {
        let (url, handle) = receipt
            .split_once('|')
            .ok_or_else(|| bad(format!("bad receipt `{receipt}`")))?;
        self.clients
            .sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    pub async fn send_to_coordinator(
        &self,
        message: &CoordinatorMessage,
        delay_seconds: i32,
    ) -> StoreResult<()> {
        self.send_raw_to_coordinator(&message.to_json(), delay_seconds)
            .await
    }

    /// Sends a body as is: a Lambda destination record from a local invoker.
    pub async fn send_raw_to_coordinator(&self, body: &str, delay_seconds: i32) -> StoreResult<()> {
        self.clients
            .sqs
            .send_message()
            .queue_url(&self.settings.coordinator_queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// A timer: an SQS delayed message up to 15 minutes, a one-time schedule beyond.
    pub async fn schedule_timer(
        &self,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let message = CoordinatorMessage::Timer {
            execution_id: execution_id.to_string(),
            timer: timer.clone(),
        };
        let delay = fire_at.saturating_sub(now);
        if delay <= MAX_SQS_DELAY_MS {
            return self
                .send_to_coordinator(&message, delay.div_ceil(1000) as i32)
                .await;
        }
        self.create_one_time_schedule(&schedule_name(execution_id, timer), fire_at, &message)
            .await
    }

    /// Several timers: those within SQS's delay go ten to a `SendMessageBatch`
    /// (one billed request for a fan-out's ten attempt timeouts), later ones
    /// become schedules. Every timer is attempted; the first error is returned.
    pub async fn schedule_timers(
        &self,
        timers: &[ScheduledTimer],
        now: Timestamp,
    ) -> StoreResult<()> {
        let (soon, later): (Vec<_>, Vec<_>) = timers
            .iter()
            .partition(|t| t.fire_at.saturating_sub(now) <= MAX_SQS_DELAY_MS);
        let mut first_error = None;
        for batch in soon.chunks(SQS_BATCH) {
            if let Err(e) = self.send_timer_batch(batch, now).await {
                first_error.get_or_insert(e);
            }
        }
        for t in later {
            if let Err(e) = self
                .schedule_timer(&t.execution_id, &t.timer, t.fire_at, now)
                .await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn send_timer_batch(&self, batch: &[&ScheduledTimer], now: Timestamp) -> StoreResult<()> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let message = CoordinatorMessage::Timer {
                    execution_id: t.execution_id.clone(),
                    timer: t.timer.clone(),
                };
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.to_json())
                    .delay_seconds(t.fire_at.saturating_sub(now).div_ceil(1000) as i32)
                    .build()
                    .map_err(|e| bad(e.to_string()))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let sent = self
            .clients
            .sqs
            .send_message_batch()
            .queue_url(&self.settings.coordinator_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sdk_error)?;
        // A batch can succeed with some entries refused: the sender's fault
        // will not pass by itself; anything else may on redelivery.
        match sent.failed().first() {
            None => Ok(()),
            Some(failed) if failed.sender_fault() => Err(StoreError::Rejected {
                code: failed.code().to_string(),
                message: failed.message().unwrap_or_default().to_string(),
            }),
            Some(failed) => Err(StoreError::Unavailable(format!(
                "{} of {} timers not sent: {}",
                sent.failed().len(),
                batch.len(),
                failed.code()
            ))),
        }
    }

    /// An EventBridge Scheduler `at()` schedule that sends `message` to the
    /// coordinator queue once, then deletes itself.
    pub async fn create_one_time_schedule(
        &self,
        name: &str,
        fire_at: Timestamp,
        message: &CoordinatorMessage,
    ) -> StoreResult<()> {
        let (Some(queue_arn), Some(role)) = (
            &self.settings.coordinator_queue_arn,
            &self.settings.scheduler_role_arn,
        ) else {
            return Err(StoreError::Corrupt {
                what: "timer".into(),
                message: "timers beyond 15 minutes need BATON_COORDINATOR_QUEUE_ARN and BATON_SCHEDULER_ROLE_ARN".into(),
            });
        };
        let target = Target::builder()
            .arn(queue_arn)
            .role_arn(role)
            .input(message.to_json())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let result = self
            .clients
            .scheduler
            .create_schedule()
            .name(name)
            .group_name(&self.settings.schedule_group)
            .schedule_expression(at_expression(fire_at).ok_or_else(|| StoreError::Rejected {
                code: "TimerOutOfRange".into(),
                message: format!("a timer at {fire_at} ms after the epoch is past year 9999"),
            })?)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The same timer scheduled twice (a redelivered outbox): already there.
            Err(e) if matches!(&e, aws_sdk_scheduler::error::SdkError::ServiceError(s) if s.err().is_conflict_exception()) => {
                Ok(())
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub async fn publish(&self, events: &[LifecycleEvent]) -> StoreResult<()> {
        let events: Vec<&LifecycleEvent> = events
            .iter()
            .filter(|e| self.settings.events.publishes(e.kind))
            .collect();
        // PutEvents takes at most 10 entries per request.
        for chunk in events.chunks(10) {
            let entries = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source("baton")
                        .detail_type(e.kind.as_str())
                        .detail(serde_json::to_string(e).unwrap_or_default())
                        .event_bus_name(&self.settings.event_bus)
                        .build()
                })
                .collect::<Vec<_>>();
            let out = self
                .clients
                .eventbridge
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sdk_error)?;
            if out.failed_entry_count() > 0 {
                return Err(StoreError::Unavailable(format!(
                    "EventBridge refused {} of {} lifecycle events",
                    out.failed_entry_count(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}

/// A schedule name unique per execution and timer, within the 64 characters allowed.
pub fn schedule_name(execution_id: &str, timer: &TimerId) -> String {
    let key =
        baton_core::idempotency::key(execution_id, &timer.key(), None, baton_core::TaskKind::Step);
    format!("baton-timer-{}", &key[3..])
}

/// The last second an `at()` expression can name (9999-12-31T23:59:59Z).
const LAST_AT_SECOND: u64 = 253_402_300_799;

/// `at(yyyy-mm-ddThh:mm:ss)` in UTC, rounded up to the next second; `None`
/// past year 9999, which neither the expression nor the formatter can hold.
pub fn at_expression(fire_at: Timestamp) -> Option<String> {
    let secs = fire_at.div_ceil(1000);
    if secs > LAST_AT_SECOND {
        return None;
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    Some(format!("at({})", text.trim_end_matches('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_are_utc_seconds() {
        assert_eq!(
            at_expression(1_767_225_600_000).as_deref(),
            Some("at(2026-01-01T00:00:00)")
        );
        assert_eq!(
            at_expression(1_767_225_600_001).as_deref(),
            Some("at(2026-01-01T00:00:01)")
        );
        assert_eq!(
            at_expression(LAST_AT_SECOND * 1000).as_deref(),
            Some("at(9999-12-31T23:59:59)")
        );
    }

    #[test]
    fn a_time_past_year_9999_is_refused_not_a_panic() {
        assert_eq!(at_expression(LAST_AT_SECOND * 1000 + 1), None);
        assert_eq!(at_expression(u64::MAX), None);
    }

    #[test]
    fn schedule_names_fit_and_differ() {
        let timer = |attempt| TimerId {
            kind: baton_core::engine::TimerKind::Wait,
            task_kind: baton_core::TaskKind::Step,
            step: "wait".into(),
            index: None,
            attempt,
        };
        let a = schedule_name("ex-1", &timer(1));
        assert!(a.len() <= 64);
        assert_ne!(a, schedule_name("ex-1", &timer(2)));
        assert_eq!(a, schedule_name("ex-1", &timer(1)));
    }
}
