//! [`AwsBackend`]: the backend ports on DynamoDB, SQS, EventBridge and
//! EventBridge Scheduler.
//!
//! Steps are Lambda functions invoked through a [`StepInvoker`] (see
//! [`crate::dispatch`]). Dead letters live in two places: compensations that
//! failed for good are items in the table (a person resolves them), and
//! messages the coordinator queue's redrive policy gave up on sit in its DLQ. Both are listed
//! together; DLQ messages are peeked (received with no visibility timeout),
//! shown, sent back and deleted by hand, since not every SQS stand-in has the
//! message-move API.

use std::sync::Arc;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use baton_core::engine::Dispatch;
use baton_core::{Command, LifecycleEvent, TimerId, Timestamp, WorkflowDefinition};
use baton_runtime::ports::{
    Backend, Created, DeadLetterKind, DeadLetterRecord, DeadLetterStore, EventSink, ExecutionPage,
    ExecutionRecord, ExecutionStore, HistoryEntry, ListQuery, OutboxEntry, ScheduledTimer,
    StoreError, StoreResult, StoredWorkflow, TaskDispatcher, TimerService, WorkflowStore,
};
use baton_runtime::step::StepEvent;
use baton_runtime::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::config::AwsSettings;
use crate::counter::RequestCounter;
use crate::dispatch::{LambdaInvoker, StepInvoker};
use crate::messages::CoordinatorMessage;
use crate::payloads::{self, INLINE_INVOKE_BYTES, PayloadStore};
use crate::queues::{Clients, Queues};
use crate::store::{DynamoStore, sdk_error};

/// How many empty or repeated peeks end a DLQ listing.
const PEEK_ROUNDS: usize = 4;

#[derive(Clone)]
pub struct AwsBackend {
    store: DynamoStore,
    queues: Arc<Queues>,
    clients: Clients,
    invoker: Arc<dyn StepInvoker>,
    counter: RequestCounter,
    clock: Arc<dyn Clock>,
}

/// A message sitting in a DLQ.
struct DlqMessage {
    queue: String,
    message_id: String,
    body: String,
    receipt: String,
    sent_at: Timestamp,
    /// Why the coordinator dead-lettered it itself (attribute [`REASON_ATTRIBUTE`]);
    /// none when the redrive policy moved it after its receives ran out.
    reason: Option<String>,
}

/// Message attributes of a message the coordinator dead-letters itself.
const REASON_ATTRIBUTE: &str = "baton-reason";
const EXECUTION_ATTRIBUTE: &str = "baton-execution-id";

impl AwsBackend {
    /// Clients from the standard AWS configuration chain (`AWS_ENDPOINT_URL`,
    /// region, credentials), each counting its requests.
    pub async fn from_env(settings: AwsSettings) -> AwsBackend {
        let counter = RequestCounter::new();
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        AwsBackend::with_config(&shared, settings, counter)
    }

    pub fn with_config(
        shared: &aws_config::SdkConfig,
        settings: AwsSettings,
        counter: RequestCounter,
    ) -> AwsBackend {
        let clients = Clients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            scheduler: aws_sdk_scheduler::Client::from_conf(
                aws_sdk_scheduler::config::Builder::from(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            lambda: aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            s3: aws_sdk_s3::Client::from_conf(
                payloads::s3_config(shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
        };
        let invoker = Arc::new(LambdaInvoker::new(
            clients.lambda.clone(),
            settings.step_function_prefix.clone(),
            settings.coordinator_queue_arn.clone(),
        ));
        let mut store = DynamoStore::new(clients.dynamodb.clone(), settings.table.clone());
        if let Some(bucket) = &settings.payload_bucket {
            store = store.with_payloads(Arc::new(PayloadStore::new(clients.s3.clone(), bucket)));
        }
        AwsBackend {
            store,
            queues: Arc::new(Queues::new(clients.clone(), settings)),
            clients,
            invoker,
            counter,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same backend handing steps to `invoker` instead of the Lambda API
    /// (`baton dev`'s in-process handlers, tests).
    pub fn with_invoker(mut self, invoker: Arc<dyn StepInvoker>) -> AwsBackend {
        self.invoker = invoker;
        self
    }

    /// The coordinator queue and its helpers, shared with a local invoker.
    pub fn queues_handle(&self) -> Arc<Queues> {
        self.queues.clone()
    }

    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    pub fn settings(&self) -> &AwsSettings {
        self.queues.settings()
    }

    pub fn counter(&self) -> &RequestCounter {
        &self.counter
    }

    fn coordinator_queue_name(&self) -> String {
        self.settings()
            .coordinator_queue_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Source queues whose DLQs hold dead letters.
    async fn source_queues(&self) -> StoreResult<Vec<String>> {
        Ok(vec![self.coordinator_queue_name()])
    }

    /// Receives messages of a DLQ. With `hold_ms` 0 they stay visible (a peek).
    async fn dlq_messages(
        &self,
        source: &str,
        hold_ms: u64,
        want: Option<&str>,
    ) -> StoreResult<Vec<DlqMessage>> {
        let dlq = format!("{source}-dlq");
        let url = match self.queues.queue_url(&dlq).await {
            Ok(url) => url,
            Err(StoreError::Rejected { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found: Vec<DlqMessage> = Vec::new();
        let mut quiet = 0;
        while quiet < PEEK_ROUNDS {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(hold_ms.div_ceil(1000) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names(REASON_ATTRIBUTE)
                .send()
                .await
                .map_err(sdk_error)?;
            let mut new = 0;
            for m in out.messages() {
                let id = m.message_id().unwrap_or_default().to_string();
                if found.iter().any(|f| f.message_id == id) {
                    continue;
                }
                new += 1;
                found.push(DlqMessage {
                    queue: dlq.clone(),
                    message_id: id,
                    body: m.body().unwrap_or_default().to_string(),
                    receipt: format!("{url}|{}", m.receipt_handle().unwrap_or_default()),
                    sent_at: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0),
                    reason: m
                        .message_attributes()
                        .and_then(|a| a.get(REASON_ATTRIBUTE))
                        .and_then(|v| v.string_value())
                        .map(str::to_string),
                });
            }
            if want.is_some_and(|w| found.iter().any(|f| f.message_id == w)) {
                break;
            }
            quiet = if new == 0 { quiet + 1 } else { 0 };
        }
        Ok(found)
    }

    fn dlq_record(message: &DlqMessage, source: &str) -> DeadLetterRecord {
        let body: Value = serde_json::from_str(&message.body)
            .unwrap_or_else(|_| Value::String(message.body.clone()));
        let (kind, execution_id, reason) = if let Ok(msg) =
            CoordinatorMessage::decode(&message.body)
        {
            (
                DeadLetterKind::Task,
                Some(msg.execution_id().to_string()),
                message.reason.clone().unwrap_or_else(|| {
                    format!("coordinator message exceeded the receive limit of queue `{source}`")
                }),
            )
        } else {
            (
                DeadLetterKind::Malformed,
                None,
                message
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("message on `{source}` does not decode")),
            )
        };
        DeadLetterRecord {
            id: format!("sqs:{}:{}", message.queue, message.message_id),
            kind,
            execution_id,
            created_at: message.sent_at,
            reason,
            body: json!({ "queue": source, "message": body }),
        }
    }

    /// Finds a DLQ message by record id and holds it invisible for a moment.
    async fn take_dlq_message(&self, id: &str) -> StoreResult<Option<(String, DlqMessage)>> {
        let Some(rest) = id.strip_prefix("sqs:") else {
            return Ok(None);
        };
        let Some((dlq, message_id)) = rest.split_once(':') else {
            return Ok(None);
        };
        let source = dlq.trim_end_matches("-dlq").to_string();
        let messages = self.dlq_messages(&source, 30_000, Some(message_id)).await?;
        let mut wanted = None;
        for message in messages {
            if message.message_id == message_id {
                wanted = Some(message);
            } else {
                // Held only while looking: visible again at once, so the next
                // redrive or listing finds it.
                self.release_dlq_message(&message).await?;
            }
        }
        Ok(wanted.map(|m| (source, m)))
    }

    async fn release_dlq_message(&self, message: &DlqMessage) -> StoreResult<()> {
        let Some((url, handle)) = message.receipt.split_once('|') else {
            return Ok(());
        };
        self.clients
            .sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}

impl ExecutionStore for AwsBackend {
    async fn create(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Created> {
        self.store.create(record, history, outbox).await
    }
    async fn load(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        self.store.load(id).await
    }
    async fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Vec<OutboxEntry>> {
        self.store
            .commit(record, expected_version, history, outbox)
            .await
    }
    async fn pending_outbox(&self, id: &str) -> StoreResult<Vec<OutboxEntry>> {
        self.store.pending_outbox(id).await
    }
    async fn clear_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<()> {
        self.store.clear_outbox(entries).await
    }
    async fn history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.store.history(id).await
    }
    async fn list(&self, query: &ListQuery) -> StoreResult<ExecutionPage> {
        self.store.list(query).await
    }
}

impl WorkflowStore for AwsBackend {
    /// Stores the definition, then makes EventBridge Scheduler hold its
    /// schedules (see [`crate::schedules`]) and the event bus its trigger
    /// rules (see [`crate::rules`]). What EventBridge cannot express is
    /// refused before anything is stored.
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Timestamp,
    ) -> StoreResult<u32> {
        let desired = crate::schedules::desired_for(definition, self.settings())?;
        let rules = crate::rules::desired_for(definition, self.settings())?;
        let functions: Vec<String> = definition_functions(definition);
        let problems = self.invoker.check(&functions).await?;
        if !problems.is_empty() {
            return Err(StoreError::Refused {
                what: format!(
                    "workflow `{}` names functions Baton cannot run as steps",
                    definition.name
                ),
                problems,
            });
        }
        // A workflow that has no schedules (triggers) and had none leaves
        // the scheduler (the bus) alone.
        let previous = self.store.get_workflow(&definition.name, None).await?;
        let had_schedules = previous
            .as_ref()
            .is_some_and(|w| !w.definition.schedules.is_empty());
        let had_triggers = previous
            .as_ref()
            .is_some_and(|w| !w.definition.triggers.is_empty());
        let version = self.store.put_workflow(definition, now).await?;
        if had_schedules || !desired.is_empty() {
            crate::schedules::sync(
                &self.clients.scheduler,
                &self.settings().schedule_group,
                &definition.name,
                &desired,
            )
            .await?;
        }
        if (had_triggers || !rules.is_empty())
            && let Some(queue) = &self.settings().coordinator_queue_arn
        {
            crate::rules::sync(
                &self.clients.eventbridge,
                &self.settings().event_bus,
                queue,
                &definition.name,
                &rules,
            )
            .await?;
        }
        Ok(version)
    }
    async fn get_workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StoredWorkflow>> {
        self.store.get_workflow(name, version).await
    }
    async fn list_workflows(&self) -> StoreResult<Vec<StoredWorkflow>> {
        self.store.list_workflows().await
    }
}

impl TaskDispatcher for AwsBackend {
    /// An input too large for Lambda's asynchronous invoke reaches the
    /// function as a payload reference (see [`crate::payloads`]).
    async fn send(&self, task: &Dispatch, _now: Timestamp) -> StoreResult<()> {
        let mut event = StepEvent::of(task);
        if let Some(payloads) = self.store.payloads()
            && serde_json::to_vec(&event.input).map_or(0, |v| v.len()) > INLINE_INVOKE_BYTES
        {
            event.input = Box::pin(payloads.put_value(&task.execution_id, &event.input)).await?;
        }
        self.invoker.invoke(&event).await
    }
    async fn check_functions(&self, functions: &[String]) -> StoreResult<Vec<String>> {
        self.invoker.check(functions).await
    }
}

/// Every function a definition names, steps' and compensations'.
fn definition_functions(definition: &WorkflowDefinition) -> Vec<String> {
    match baton_core::Workflow::from_definition(definition.clone()) {
        Ok(workflow) => workflow
            .functions()
            .into_iter()
            .map(str::to_string)
            .collect(),
        // An invalid definition is refused by validation, which names its problems.
        Err(_) => Vec::new(),
    }
}

impl TimerService for AwsBackend {
    async fn schedule(
        &self,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
    ) -> StoreResult<()> {
        self.queues
            .schedule_timer(execution_id, timer, fire_at, self.clock.now())
            .await
    }

    async fn schedule_all(&self, timers: &[ScheduledTimer]) -> StoreResult<()> {
        self.queues.schedule_timers(timers, self.clock.now()).await
    }
}

impl EventSink for AwsBackend {
    async fn publish(&self, events: &[LifecycleEvent]) -> StoreResult<()> {
        self.queues.publish(events).await
    }
}

impl DeadLetterStore for AwsBackend {
    async fn put_dead_letter(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        self.store.put_dead_letter(record).await
    }

    /// Sends the message as it arrived to the coordinator queue's DLQ, with
    /// the reason and its execution as message attributes: the DLQ's alarm
    /// fires, `dlq list` shows why, and `dlq redrive` sends it back unchanged.
    async fn dead_letter_message(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let text = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| StoreError::Rejected {
                    code: "InvalidAttribute".into(),
                    message: e.to_string(),
                })
        };
        let body = match &record.body {
            Value::String(body) => body.clone(),
            other => other.to_string(),
        };
        let mut send = self
            .clients
            .sqs
            .send_message()
            .queue_url(format!("{}-dlq", self.settings().coordinator_queue_url))
            .message_body(if body.is_empty() { " ".into() } else { body })
            .message_attributes(REASON_ATTRIBUTE, text(&record.reason)?);
        if let Some(id) = &record.execution_id {
            send = send.message_attributes(EXECUTION_ATTRIBUTE, text(id)?);
        }
        send.send().await.map_err(sdk_error)?;
        Ok(())
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetterRecord>> {
        let mut records = self.store.dead_letters().await?;
        for source in self.source_queues().await? {
            for message in self.dlq_messages(&source, 0, None).await? {
                records.push(Self::dlq_record(&message, &source));
            }
        }
        records.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(records)
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetterRecord>> {
        if let Some(rest) = id.strip_prefix("sqs:") {
            let Some((dlq, message_id)) = rest.split_once(':') else {
                return Ok(None);
            };
            let source = dlq.trim_end_matches("-dlq");
            let messages = self.dlq_messages(source, 0, Some(message_id)).await?;
            return Ok(messages
                .iter()
                .find(|m| m.message_id == message_id)
                .map(|m| Self::dlq_record(m, source)));
        }
        Ok(self
            .store
            .dead_letters()
            .await?
            .into_iter()
            .find(|r| r.id == id))
    }

    async fn remove_dead_letter(&self, id: &str) -> StoreResult<bool> {
        if id.starts_with("sqs:") {
            return match self.take_dlq_message(id).await? {
                Some((_, message)) => self.queues.delete(&message.receipt).await.map(|_| true),
                None => Ok(false),
            };
        }
        self.store.remove_dead_letter(id).await
    }

    async fn redrive_dead_letter(&self, id: &str) -> StoreResult<bool> {
        if !id.starts_with("sqs:") {
            return match self
                .store
                .dead_letters()
                .await?
                .into_iter()
                .find(|r| r.id == id)
            {
                None => Ok(false),
                Some(r) => Err(StoreError::Corrupt {
                    what: format!("dead letter `{id}`"),
                    message: format!("a {} dead letter is not a queued message", r.kind.as_str()),
                }),
            };
        }
        let Some((source, message)) = self.take_dlq_message(id).await? else {
            return Ok(false);
        };
        let url = self.queues.queue_url(&source).await?;
        self.clients
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(&message.body)
            .send()
            .await
            .map_err(sdk_error)?;
        self.queues.delete(&message.receipt).await?;
        Ok(true)
    }
}

impl Backend for AwsBackend {
    fn payload_limit(&self) -> usize {
        self.settings().payload_limit
    }

    async fn resolve_output(&self, execution_id: &str, output: Value) -> StoreResult<Value> {
        let Some(key) = payloads::referenced_key(&output) else {
            return Ok(output);
        };
        match self.store.payloads() {
            Some(payloads) => {
                payloads
                    .output(execution_id, key, self.settings().payload_limit)
                    .await
            }
            None => Err(StoreError::Rejected {
                code: "PayloadMissing".into(),
                message: format!("payload `{key}`: no payload bucket is configured"),
            }),
        }
    }
}
