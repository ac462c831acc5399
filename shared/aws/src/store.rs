//! Executions, history, outbox, workflow versions, step results and
//! compensation dead letters in one DynamoDB table.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | execution | `X#{id}` | `S` |
//! | history entry (and its outbox) | `X#{id}` | `H#{seq:012}` |
//! | workflow version | `W#{name}` | `V#{version:08}` |
//! | step result | `R#{idempotency key}` | `R` |
//! | compensation dead letter | `D` | `{id}` |
//!
//! A transition is one `TransactWriteItems`: the execution update conditioned
//! on its version, and the history item carrying the transition's commands
//! (the outbox) marked pending. Delivery clears the mark; a pending entry
//! found later is delivered again.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use baton_core::{Command, ExecutionStatus, Timestamp, WorkflowDefinition};
use baton_runtime::ports::{
    Created, DeadLetterKind, DeadLetterRecord, ExecutionRecord, ExecutionSummary, HistoryEntry,
    OutboxEntry, StoreError, StoreResult, StoredWorkflow,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// DynamoDB's item limit is 400 KB; keep room for keys and attributes.
pub const MAX_ITEM_BYTES: usize = 380 * 1024;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, key: &str) -> StoreResult<&'a str> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!(
            "attribute `{key}` missing or not a string"
        ))),
    }
}

fn get_n(item: &Item, key: &str) -> StoreResult<u64> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(format!("attribute `{key}` is not a number"))),
        _ => Err(corrupt(format!(
            "attribute `{key}` missing or not a number"
        ))),
    }
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        what: "DynamoDB item".into(),
        message,
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("engine types always serialise to JSON")
}

fn parse<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Maps an SDK error: throttling, server and transport problems may pass
/// (retry), anything else the request itself got wrong (do not).
pub(crate) fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("ServiceError").to_string();
            let message = err
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            let transient = [
                "Throttl",
                "ProvisionedThroughput",
                "InternalServer",
                "ServiceUnavailable",
                "RequestLimitExceeded",
                "TransactionConflict",
            ]
            .iter()
            .any(|t| code.contains(t));
            if transient {
                StoreError::Unavailable(format!("{code}: {message}"))
            } else {
                StoreError::Corrupt {
                    what: "AWS request".into(),
                    message: format!("{code}: {message}"),
                }
            }
        }
        _ => StoreError::Unavailable(
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
        ),
    }
}

fn execution_key(id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("X#{id}"))),
        ("sk".to_string(), s("S")),
    ])
}

fn history_sk(seq: u64) -> String {
    format!("H#{seq:012}")
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn check_size(what: &str, bytes: usize) -> StoreResult<()> {
        // Offloading large payloads to S3 would hook in here.
        if bytes > MAX_ITEM_BYTES {
            return Err(StoreError::TooLarge {
                what: what.to_string(),
                size: bytes,
                limit: MAX_ITEM_BYTES,
            });
        }
        Ok(())
    }

    fn execution_item(record: &ExecutionRecord, state: String) -> Item {
        let mut item = execution_key(&record.id);
        item.insert("workflow".into(), s(&record.workflow));
        item.insert("wv".into(), n(record.workflow_version));
        item.insert("version".into(), n(record.version));
        item.insert("status".into(), s(record.status().as_str()));
        item.insert("state".into(), s(state));
        item.insert("created".into(), n(record.created_at));
        item.insert("updated".into(), n(record.updated_at));
        item
    }

    fn history_item(id: &str, entry: &HistoryEntry, outbox: &[Command]) -> Item {
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("X#{id}"))),
            ("sk".to_string(), s(history_sk(entry.seq))),
            ("at".to_string(), n(entry.at)),
            ("event".to_string(), s(json(&entry.event))),
        ]);
        if !outbox.is_empty() {
            item.insert("outbox".into(), s(json(&outbox)));
            item.insert("pending".into(), AttributeValue::Bool(true));
        }
        item
    }

    fn record_from_item(item: &Item) -> StoreResult<ExecutionRecord> {
        let pk = get_s(item, "pk")?;
        Ok(ExecutionRecord {
            id: pk.trim_start_matches("X#").to_string(),
            workflow: get_s(item, "workflow")?.to_string(),
            workflow_version: get_n(item, "wv")? as u32,
            version: get_n(item, "version")?,
            state: parse("execution state", get_s(item, "state")?)?,
            created_at: get_n(item, "created")?,
            updated_at: get_n(item, "updated")?,
        })
    }

    fn outbox_entries(id: &str, seq: u64, item: &Item) -> StoreResult<Vec<OutboxEntry>> {
        let Some(AttributeValue::S(text)) = item.get("outbox") else {
            return Ok(Vec::new());
        };
        let commands: Vec<Command> = parse("outbox", text)?;
        Ok(commands
            .into_iter()
            .enumerate()
            .map(|(position, command)| OutboxEntry {
                execution_id: id.to_string(),
                seq,
                position: position as u32,
                command,
            })
            .collect())
    }

    async fn query_all(
        &self,
        pk: &str,
        sk_prefix: &str,
        forward: bool,
        limit: Option<i32>,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self.client.query().table_name(&self.table);
            query = if sk_prefix.is_empty() {
                query.key_condition_expression("pk = :pk")
            } else {
                query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", s(sk_prefix))
            };
            let out = query
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .scan_index_forward(forward)
                .set_limit(limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if limit.is_none() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    pub async fn create(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Created> {
        let state = json(&record.state);
        Self::check_size("the execution state", state.len())?;
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(Self::execution_item(record, state)))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(|e| corrupt(e.to_string()))?,
                )
                .build(),
        ];
        for (i, entry) in history.iter().enumerate() {
            let commands = if i + 1 == history.len() { outbox } else { &[] };
            writes.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(Self::history_item(&record.id, entry, commands)))
                            .build()
                            .map_err(|e| corrupt(e.to_string()))?,
                    )
                    .build(),
            );
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => {
                let seq = history.last().map_or(record.version, |h| h.seq);
                let mut item = HashMap::new();
                if !outbox.is_empty() {
                    item.insert("outbox".to_string(), s(json(&outbox)));
                }
                Ok(Created::New(Self::outbox_entries(&record.id, seq, &item)?))
            }
            Err(e) if is_condition_failure(&e) => match self.load(&record.id).await? {
                Some(existing) => Ok(Created::Existing(Box::new(existing))),
                None => Err(StoreError::Unavailable(
                    "execution vanished during create".into(),
                )),
            },
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub async fn load(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(execution_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item().map(Self::record_from_item).transpose()
    }

    pub async fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Vec<OutboxEntry>> {
        let state = json(&record.state);
        Self::check_size("the execution state", state.len())?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(execution_key(&record.id)))
            .update_expression("SET #v = :v, #st = :st, #state = :state, #u = :u")
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#u", "updated")
            .expression_attribute_values(":v", n(record.version))
            .expression_attribute_values(":st", s(record.status().as_str()))
            .expression_attribute_values(":state", s(state))
            .expression_attribute_values(":u", n(record.updated_at))
            .expression_attribute_values(":expected", n(expected_version))
            .build()
            .map_err(|e| corrupt(e.to_string()))?;
        let mut writes = vec![TransactWriteItem::builder().update(update).build()];
        for (i, entry) in history.iter().enumerate() {
            let commands = if i + 1 == history.len() { outbox } else { &[] };
            let item = Self::history_item(&record.id, entry, commands);
            let bytes: usize = item
                .values()
                .map(|v| v.as_s().map_or(16, |s| s.len()))
                .sum();
            Self::check_size("the transition's history and outbox", bytes)?;
            writes.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .build()
                            .map_err(|e| corrupt(e.to_string()))?,
                    )
                    .build(),
            );
        }
        if history.is_empty() && !outbox.is_empty() {
            return Err(corrupt("an outbox needs a history entry to ride on".into()));
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => {
                let Some(last) = history.last() else {
                    return Ok(Vec::new());
                };
                let mut item = HashMap::new();
                if !outbox.is_empty() {
                    item.insert("outbox".to_string(), s(json(&outbox)));
                }
                Self::outbox_entries(&record.id, last.seq, &item)
            }
            Err(e) if is_condition_failure(&e) => {
                if self.load(&record.id).await?.is_some() {
                    Err(StoreError::VersionConflict {
                        id: record.id.clone(),
                        expected: expected_version,
                    })
                } else {
                    Err(StoreError::NotFound(record.id.clone()))
                }
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub async fn pending_outbox(&self, id: &str) -> StoreResult<Vec<OutboxEntry>> {
        let mut entries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .filter_expression("attribute_exists(pending)")
                .expression_attribute_values(":pk", s(format!("X#{id}")))
                .expression_attribute_values(":p", s("H#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out.items() {
                let seq = get_s(item, "sk")?
                    .trim_start_matches("H#")
                    .parse()
                    .map_err(|_| corrupt("history key is not a sequence number".into()))?;
                entries.extend(Self::outbox_entries(id, seq, item)?);
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        Ok(entries)
    }

    pub async fn clear_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<()> {
        let mut seen = std::collections::BTreeSet::new();
        for entry in entries {
            if !seen.insert((entry.execution_id.clone(), entry.seq)) {
                continue;
            }
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("X#{}", entry.execution_id)))
                .key("sk", s(history_sk(entry.seq)))
                .update_expression("REMOVE pending, outbox")
                .condition_expression("attribute_exists(pk)")
                .send()
                .await
                .map_err(|e| {
                    if is_update_condition_failure(&e) {
                        corrupt(format!(
                            "no history entry {} for {}",
                            entry.seq, entry.execution_id
                        ))
                    } else {
                        sdk_error(e)
                    }
                })?;
        }
        Ok(())
    }

    pub async fn history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.query_all(&format!("X#{id}"), "H#", true, None)
            .await?
            .iter()
            .map(|item| {
                Ok(HistoryEntry {
                    seq: get_s(item, "sk")?
                        .trim_start_matches("H#")
                        .parse()
                        .map_err(|_| corrupt("history key is not a sequence number".into()))?,
                    at: get_n(item, "at")?,
                    event: parse("history event", get_s(item, "event")?)?,
                })
            })
            .collect()
    }

    /// Lists executions by scanning: an operator's command, not a hot path.
    pub async fn list(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> StoreResult<Vec<ExecutionSummary>> {
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(if status.is_some() {
                    "sk = :s AND #st = :status"
                } else {
                    "sk = :s"
                })
                .expression_attribute_values(":s", s("S"))
                .projection_expression("pk, workflow, wv, #st, created, updated")
                .expression_attribute_names("#st", "status")
                .set_exclusive_start_key(start.take());
            if let Some(status) = status {
                scan = scan.expression_attribute_values(":status", s(status.as_str()));
            }
            let out = scan.send().await.map_err(sdk_error)?;
            for item in out.items() {
                let status_text = get_s(item, "status")?;
                rows.push(ExecutionSummary {
                    id: get_s(item, "pk")?.trim_start_matches("X#").to_string(),
                    workflow: get_s(item, "workflow")?.to_string(),
                    workflow_version: get_n(item, "wv")? as u32,
                    status: ExecutionStatus::parse(status_text)
                        .ok_or_else(|| corrupt(format!("unknown status `{status_text}`")))?,
                    created_at: get_n(item, "created")?,
                    updated_at: get_n(item, "updated")?,
                });
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        rows.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        rows.truncate(limit);
        Ok(rows)
    }

    pub async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Timestamp,
    ) -> StoreResult<u32> {
        let text = json(definition);
        Self::check_size("the workflow definition", text.len())?;
        loop {
            let latest = self.get_workflow(&definition.name, None).await?;
            let version = match latest {
                Some(l) if json(&l.definition) == text => return Ok(l.version),
                Some(l) => l.version + 1,
                None => 1,
            };
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("W#{}", definition.name)))
                .item("sk", s(format!("V#{version:08}")))
                .item("definition", s(text.clone()))
                .item("created", n(now))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match put {
                Ok(_) => return Ok(version),
                // Someone stored this version first: look again.
                Err(e) if is_put_condition_failure(&e) => continue,
                Err(e) => return Err(sdk_error(e)),
            }
        }
    }

    pub async fn get_workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StoredWorkflow>> {
        let item = match version {
            Some(v) => self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(format!("W#{name}")))
                .key("sk", s(format!("V#{v:08}")))
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk_error)?
                .item
                .clone(),
            None => self
                .query_all(&format!("W#{name}"), "V#", false, Some(1))
                .await?
                .into_iter()
                .next(),
        };
        item.map(|item| Self::workflow_from_item(name, &item))
            .transpose()
    }

    fn workflow_from_item(name: &str, item: &Item) -> StoreResult<StoredWorkflow> {
        Ok(StoredWorkflow {
            name: name.to_string(),
            version: get_s(item, "sk")?
                .trim_start_matches("V#")
                .parse()
                .map_err(|_| corrupt("workflow version key".into()))?,
            definition: parse("workflow definition", get_s(item, "definition")?)?,
            created_at: get_n(item, "created")?,
        })
    }

    pub async fn list_workflows(&self) -> StoreResult<Vec<StoredWorkflow>> {
        let mut latest: std::collections::BTreeMap<String, StoredWorkflow> = Default::default();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :w)")
                .expression_attribute_values(":w", s("W#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out.items() {
                let name = get_s(item, "pk")?.trim_start_matches("W#").to_string();
                let stored = Self::workflow_from_item(&name, item)?;
                if latest.get(&name).is_none_or(|w| w.version < stored.version) {
                    latest.insert(name, stored);
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The recorded successful output for an idempotency key, if any.
    pub async fn step_result(&self, idempotency_key: &str) -> StoreResult<Option<Value>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("R#{idempotency_key}")))
            .key("sk", s("R"))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item()
            .map(|item| parse("step result", get_s(item, "output")?))
            .transpose()
    }

    /// Records a step's successful output; the first record for a key wins.
    pub async fn record_step_result(
        &self,
        idempotency_key: &str,
        output: &Value,
        now: Timestamp,
    ) -> StoreResult<Value> {
        let text = json(output);
        Self::check_size("the step output", text.len())?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("R#{idempotency_key}")))
            .item("sk", s("R"))
            .item("output", s(text))
            .item("at", n(now))
            .condition_expression("attribute_not_exists(pk)")
            .return_values(ReturnValue::None)
            .send()
            .await;
        match put {
            Ok(_) => Ok(output.clone()),
            Err(e) if is_put_condition_failure(&e) => Ok(self
                .step_result(idempotency_key)
                .await?
                .unwrap_or_else(|| output.clone())),
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub async fn put_dead_letter(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("D"))
            .item("sk", s(&record.id))
            .item("kind", s(record.kind.as_str()))
            .item("created", n(record.created_at))
            .item("reason", s(&record.reason))
            .item("body", s(json(&record.body)));
        if let Some(id) = &record.execution_id {
            put = put.item("execution", s(id));
        }
        put.send().await.map_err(sdk_error)?;
        Ok(())
    }

    pub async fn dead_letters(&self) -> StoreResult<Vec<DeadLetterRecord>> {
        self.query_all("D", "", true, None)
            .await?
            .iter()
            .map(|item| {
                Ok(DeadLetterRecord {
                    id: get_s(item, "sk")?.to_string(),
                    kind: match get_s(item, "kind")? {
                        "compensation" => DeadLetterKind::Compensation,
                        "task" => DeadLetterKind::Task,
                        _ => DeadLetterKind::Malformed,
                    },
                    execution_id: item.get("execution").and_then(|v| v.as_s().ok()).cloned(),
                    created_at: get_n(item, "created")?,
                    reason: get_s(item, "reason")?.to_string(),
                    body: parse("dead letter", get_s(item, "body")?)?,
                })
            })
            .collect()
    }

    pub async fn remove_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s("D"))
            .key("sk", s(id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.attributes().is_some())
    }
}

fn is_condition_failure<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(t) => t
                .cancellation_reasons()
                .iter()
                .any(|r| r.code() == Some("ConditionalCheckFailed")),
            _ => false,
        },
        _ => false,
    }
}

fn is_put_condition_failure<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().is_conditional_check_failed_exception())
}

fn is_update_condition_failure<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().is_conditional_check_failed_exception())
}
