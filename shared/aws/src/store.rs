//! Executions, history, outbox, workflow versions, step results and
//! compensation dead letters in one DynamoDB table.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | execution (version, status, tail; not the state; `ord` for the status index) | `X#{id}` | `S` |
//! | snapshot of the state, as of a version | `X#{id}` | `C` |
//! | history entry (written once its commands are delivered) | `X#{id}` | `H#{seq:012}` |
//! | workflow version | `W#{name}` | `V#{version:08}` |
//! | workflow catalog (newest version of each) | `W` | `{name}` |
//! | step result | `R#{idempotency key}` | `R` |
//! | compensation dead letter | `D` | `{id}` |
//!
//! A transition is one conditional write of the execution item (on its
//! version) that also carries the transition's history entry and commands
//! (its tail, the outbox). After the commands are delivered the history
//! items are written, the last one marking the delivery: a tail whose mark is
//! missing is delivered again by the next message for the execution, and
//! carried into the next transition's tail so nothing in it is lost. One
//! write per transition, where a transaction of two items bills each twice.
//!
//! The state is not rewritten by every transition (see
//! [`baton_runtime::checkpoint`]): the snapshot item is written every 64
//! transitions and on a signal; a load replays the history after it (from
//! the start without one), or catches up a state this process holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use baton_core::engine::Execution;
use baton_core::{Command, ExecutionStatus, Timestamp, Workflow, WorkflowDefinition};
use baton_runtime::checkpoint::{self, CompiledWorkflows, KnownStates};
use baton_runtime::ports::{
    Created, DeadLetterKind, DeadLetterRecord, ExecutionPage, ExecutionRecord, ExecutionSummary,
    HistoryEntry, ListCursor, ListQuery, OutboxEntry, StoreError, StoreResult, StoredWorkflow,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// DynamoDB's item limit is 400 KB; keep room for keys and attributes.
pub const MAX_ITEM_BYTES: usize = 380 * 1024;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    tails: TailCache,
    states: Arc<KnownStates>,
    workflows: Arc<CompiledWorkflows>,
    /// Where payloads too large to keep inline go; `None` keeps every
    /// payload in the items (and limits them accordingly).
    payloads: Option<Arc<PayloadStore>>,
}

/// A transition's history entries and commands, kept on the execution item
/// until the commands are delivered; then its history items are written, the
/// last one marking the delivery. Tails of transitions whose commands were
/// never delivered are carried into the next one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tail {
    #[serde(default, rename = "h")]
    history: Vec<HistoryEntry>,
    #[serde(default, rename = "o")]
    outbox: Vec<TailCommand>,
    /// How long the history items written from this tail are kept: the
    /// execution's retention, or the longest a load may need them.
    #[serde(default, rename = "r", skip_serializing_if = "Option::is_none")]
    retention_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TailCommand {
    seq: u64,
    position: u32,
    command: Command,
}

impl Tail {
    fn last_seq(&self) -> Option<u64> {
        self.history.last().map(|e| e.seq)
    }

    /// This tail followed by a transition's history and commands.
    fn then(mut self, history: &[HistoryEntry], outbox: &[Command]) -> StoreResult<Tail> {
        let Some(last) = history.last() else {
            if outbox.is_empty() {
                return Ok(self);
            }
            return Err(corrupt("an outbox needs a history entry to ride on".into()));
        };
        let seq = last.seq;
        self.history.extend(history.iter().cloned());
        self.outbox.extend(
            outbox
                .iter()
                .enumerate()
                .map(|(position, command)| TailCommand {
                    seq,
                    position: position as u32,
                    command: command.clone(),
                }),
        );
        Ok(self)
    }

    fn entries(&self, id: &str) -> Vec<OutboxEntry> {
        self.outbox
            .iter()
            .map(|c| OutboxEntry {
                execution_id: id.to_string(),
                seq: c.seq,
                position: c.position,
                command: c.command.clone(),
            })
            .collect()
    }
}

/// Tails this process read or wrote, by execution. A version's tail never
/// changes and a delivered one stays delivered, so an entry never goes stale;
/// it spares the reads of the hot path (load, then commit, then clear).
#[derive(Clone, Default)]
struct TailCache(Arc<Mutex<HashMap<String, CachedTail>>>);

struct CachedTail {
    version: u64,
    tail: Tail,
    flushed: bool,
}

/// Executions remembered before the cache starts over.
const TAIL_CACHE_LIMIT: usize = 10_000;

impl TailCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedTail>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, id: &str, version: u64, tail: &Tail, flushed: bool) {
        let mut map = self.lock();
        if let Some(known) = map.get_mut(id) {
            if known.version == version {
                known.flushed |= flushed;
                return;
            }
            if known.version > version {
                return;
            }
        }
        if map.len() >= TAIL_CACHE_LIMIT {
            map.clear();
        }
        map.insert(
            id.to_string(),
            CachedTail {
                version,
                tail: tail.clone(),
                flushed,
            },
        );
    }

    /// The tail at `version` and whether it is known delivered.
    fn get(&self, id: &str, version: u64) -> Option<(Tail, bool)> {
        self.lock()
            .get(id)
            .filter(|c| c.version == version)
            .map(|c| (c.tail.clone(), c.flushed))
    }

    fn current(&self, id: &str) -> Option<Tail> {
        self.lock().get(id).map(|c| c.tail.clone())
    }

    fn mark_flushed(&self, id: &str, last_seq: u64) {
        if let Some(known) = self.lock().get_mut(id)
            && known.tail.last_seq() == Some(last_seq)
        {
            known.flushed = true;
        }
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
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

pub(crate) use crate::errors::sdk_error;
use crate::payloads::PayloadStore;

fn execution_key(id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("X#{id}"))),
        ("sk".to_string(), s("S")),
    ])
}

/// Which items of a partition a query reads.
enum SortKeys<'a> {
    All,
    Prefix(&'a str),
    /// From the first key to the second, both included.
    Between(String, String),
}

/// The index that lists executions: partition `status`, sort `ord` (see
/// [`ListCursor::key`]), projecting `workflow` for the workflow filter. The
/// execution item's other attributes change on every commit; left out of
/// the index, a commit that keeps the status writes nothing to it.
pub const STATUS_INDEX: &str = "by-status";

/// The attribute DynamoDB's time to live reads: epoch seconds after which
/// the item may be deleted. A running execution's own item and snapshot do
/// not carry it; its history items do (see [`checkpoint::SNAPSHOT_IDLE_MS`]
/// for why a load never needs one that expired).
pub const EXPIRES: &str = "expires";

fn expires_value(at_ms: Timestamp) -> AttributeValue {
    n(at_ms.div_ceil(1000))
}

/// The partition naming every workflow with its newest version, so listing
/// workflows is a query.
const CATALOG_PK: &str = "W";

/// How long a history item is kept: the retention, and at least as long as
/// a load of the execution may replay it (see
/// [`checkpoint::replay_window_ms`]).
fn keep_history_ms(record: &ExecutionRecord) -> u64 {
    record
        .retention_ms
        .max(checkpoint::replay_window_ms(&record.state))
}

/// The largest part of a snapshot one item holds.
const SNAPSHOT_PART_BYTES: usize = 350 * 1024;

/// The largest state an execution may hold (its snapshot, in parts).
pub const MAX_STATE_BYTES: usize = 8 * 1024 * 1024;

/// How long the parts of a replaced snapshot stay readable.
const SUPERSEDED_PARTS_MS: u64 = 24 * 60 * 60 * 1000;

/// A state too large to snapshot is refused, as the embedded backend
/// refuses it.
fn check_state_size(bytes: usize) -> StoreResult<()> {
    if bytes > MAX_STATE_BYTES {
        return Err(StoreError::TooLarge {
            what: "the execution state".into(),
            size: bytes,
            limit: MAX_STATE_BYTES,
        });
    }
    Ok(())
}

fn snapshot_part_sk(version: u64, part: usize) -> String {
    format!("C#{version:012}#{part:04}")
}

/// `text` cut into pieces of at most `max` bytes, on character boundaries.
fn split_at_most(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, tail) = rest.split_at(cut);
        parts.push(part);
        rest = tail;
    }
    parts.push(rest);
    parts
}

/// The sort key of an execution's snapshot item.
const SNAPSHOT_SK: &str = "C";

fn history_sk(seq: u64) -> String {
    format!("H#{seq:012}")
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            tails: TailCache::default(),
            states: Arc::default(),
            workflows: Arc::default(),
            payloads: None,
        }
    }

    /// Keeps payloads larger than an item should hold in `payloads`.
    pub fn with_payloads(mut self, payloads: Arc<PayloadStore>) -> DynamoStore {
        self.payloads = Some(payloads);
        self
    }

    pub fn payloads(&self) -> Option<&Arc<PayloadStore>> {
        self.payloads.as_ref()
    }

    /// `value`'s JSON text as an item holds it: large payloads put in S3
    /// first and referenced.
    async fn stored_text<T: Serialize>(&self, id: &str, value: &T) -> StoreResult<String> {
        match &self.payloads {
            None => Ok(json(value)),
            Some(payloads) => {
                let document = serde_json::to_value(value).map_err(|e| StoreError::Corrupt {
                    what: "a document to store".into(),
                    message: e.to_string(),
                })?;
                // Boxed: S3 requests are large futures, and this sits
                // inside every commit.
                Box::pin(payloads.store(&document, id)).await
            }
        }
    }

    /// Parses an item's JSON text, its payload references resolved.
    async fn parse_stored<T: DeserializeOwned>(&self, what: &str, text: &str) -> StoreResult<T> {
        match &self.payloads {
            None => parse(what, text),
            Some(payloads) => Box::pin(payloads.parse(what, text)).await,
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

    fn execution_item(record: &ExecutionRecord, tail: &str) -> Item {
        let mut item = execution_key(&record.id);
        item.insert("workflow".into(), s(&record.workflow));
        item.insert("wv".into(), n(record.workflow_version));
        item.insert("version".into(), n(record.version));
        item.insert("status".into(), s(record.status().as_str()));
        item.insert("tail".into(), s(tail));
        item.insert("created".into(), n(record.created_at));
        item.insert("retention".into(), n(record.retention_ms));
        if let Some(at) = record.expires_at() {
            item.insert(EXPIRES.into(), expires_value(at));
        }
        item.insert(
            "ord".into(),
            s(ListCursor {
                created_at: record.created_at,
                id: record.id.clone(),
            }
            .key()),
        );
        item.insert("updated".into(), n(record.updated_at));
        item
    }

    fn history_item(
        id: &str,
        entry: &HistoryEntry,
        event: String,
        retention_ms: Option<u64>,
    ) -> Item {
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("X#{id}"))),
            ("sk".to_string(), s(history_sk(entry.seq))),
            ("at".to_string(), n(entry.at)),
            ("event".to_string(), s(event)),
        ]);
        if let Some(retention) = retention_ms {
            item.insert(
                EXPIRES.into(),
                expires_value(entry.at.saturating_add(retention)),
            );
        }
        item
    }

    /// The execution item's record, with `state` in place of the state
    /// (which the item does not hold).
    fn record_from_item(item: &Item, state: Execution) -> StoreResult<ExecutionRecord> {
        let pk = get_s(item, "pk")?;
        Ok(ExecutionRecord {
            id: pk.trim_start_matches("X#").to_string(),
            workflow: get_s(item, "workflow")?.to_string(),
            workflow_version: get_n(item, "wv")? as u32,
            version: get_n(item, "version")?,
            state,
            created_at: get_n(item, "created")?,
            updated_at: get_n(item, "updated")?,
            retention_ms: match item.get("retention") {
                Some(_) => get_n(item, "retention")?,
                None => baton_core::workflow::DEFAULT_RETENTION_MS,
            },
        })
    }

    async fn tail_from_item(&self, item: &Item) -> StoreResult<Tail> {
        match item.get("tail") {
            Some(AttributeValue::S(text)) => self.parse_stored("execution tail", text).await,
            _ => Ok(Tail::default()),
        }
    }

    /// The execution item as stored now (consistent read), its tail
    /// remembered; `projection` limits the attributes read.
    async fn read_execution(
        &self,
        id: &str,
        projection: Option<&str>,
    ) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(execution_key(id)))
            .set_projection_expression(projection.map(str::to_string))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let tail = self.tail_from_item(&item).await?;
        self.tails
            .remember(id, get_n(&item, "version")?, &tail, false);
        Ok(Some(item))
    }

    /// The execution's version and tail as stored now.
    async fn read_tail(&self, id: &str) -> StoreResult<Option<(u64, Tail)>> {
        match self.read_execution(id, Some("version, tail")).await? {
            Some(item) => Ok(Some((
                get_n(&item, "version")?,
                self.tail_from_item(&item).await?,
            ))),
            None => Ok(None),
        }
    }

    /// A checkpoint's tail as text, refused if the item would be too large.
    async fn tail_text(&self, id: &str, tail: &Tail) -> StoreResult<String> {
        let tail = self.stored_text(id, tail).await?;
        Self::check_size("the execution's newest history and outbox", tail.len())?;
        Ok(tail)
    }

    /// Whether a tail's commands were delivered: its last history item exists.
    async fn is_flushed(&self, id: &str, tail: &Tail) -> StoreResult<bool> {
        let Some(last) = tail.last_seq() else {
            return Ok(true);
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("X#{id}")))
            .key("sk", s(history_sk(last)))
            .projection_expression("sk")
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item().is_some())
    }

    /// Writes a tail's history items up to `up_to`, oldest first, so the
    /// last one (the delivered mark) is written only after all before it.
    async fn flush(&self, id: &str, tail: &Tail, up_to: u64) -> StoreResult<()> {
        for entry in tail.history.iter().filter(|e| e.seq <= up_to) {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Self::history_item(
                    id,
                    entry,
                    self.stored_text(id, &entry.event).await?,
                    tail.retention_ms,
                )))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        if tail.last_seq() == Some(up_to) {
            self.tails.mark_flushed(id, up_to);
        }
        Ok(())
    }

    async fn query_all(
        &self,
        pk: &str,
        sort_keys: SortKeys<'_>,
        forward: bool,
        limit: Option<i32>,
    ) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self.client.query().table_name(&self.table);
            let query = match &sort_keys {
                SortKeys::All => query.key_condition_expression("pk = :pk"),
                SortKeys::Prefix(prefix) => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", s(*prefix)),
                SortKeys::Between(from, to) => query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                    .expression_attribute_values(":from", s(from))
                    .expression_attribute_values(":to", s(to)),
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
        let state = self.stored_text(&record.id, &record.state).await?;
        check_state_size(state.len())?;
        let tail = Tail {
            retention_ms: Some(keep_history_ms(record)),
            ..Tail::default().then(history, outbox)?
        };
        let tail_text = self.tail_text(&record.id, &tail).await?;
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::execution_item(record, &tail_text)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match written {
            Ok(_) => {
                self.tails
                    .remember(&record.id, record.version, &tail, false);
                self.states.remember(record);
                // An execution that starts by waiting keeps its state at
                // hand (see `checkpoint::SNAPSHOT_IDLE_MS`).
                if checkpoint::needs_snapshot(record, history) {
                    self.put_snapshot(&record.id, record.version, state, record.updated_at)
                        .await;
                }
                Ok(Created::New(tail.entries(&record.id)))
            }
            Err(e) if is_put_condition_failure(&e) => match self.load(&record.id).await? {
                Some(existing) => Ok(Created::Existing(Box::new(existing))),
                None => Err(StoreError::Unavailable(
                    "execution vanished during create".into(),
                )),
            },
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// The execution as its last committed transition left it: the state
    /// this process holds if it is current; else the snapshot (or, without
    /// one, the start) and the history after it, replayed.
    pub async fn load(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let Some(item) = self.read_execution(id, None).await? else {
            return Ok(None);
        };
        let version = get_n(&item, "version")?;
        let known = self
            .states
            .at_or_before(id, get_n(&item, "created")?, version);
        if let Some(known) = known.as_ref().filter(|k| k.version == version) {
            return Ok(Some(known.clone()));
        }
        let compiled = self
            .compiled(get_s(&item, "workflow")?, get_n(&item, "wv")? as u32)
            .await?;
        let mut record = match known {
            Some(known) => known,
            None => match self.read_snapshot(id, version).await? {
                Some((at, state)) => ExecutionRecord {
                    version: at,
                    ..Self::record_from_item(&item, state)?
                },
                None => ExecutionRecord {
                    version: 0,
                    ..Self::record_from_item(&item, Execution::new(&compiled, id))?
                },
            },
        };
        let entries = self
            .history_between(
                id,
                record.version,
                version,
                &self.tail_from_item(&item).await?,
            )
            .await?;
        checkpoint::replay(&compiled, &mut record, &entries)?;
        if record.version != version {
            return Err(corrupt(format!(
                "the history of execution `{id}` ends at {} but the execution is at {version}",
                record.version
            )));
        }
        record.updated_at = get_n(&item, "updated")?;
        self.states.remember(&record);
        Ok(Some(record))
    }

    /// The newest snapshot at or before `version`: its version and state.
    async fn read_snapshot(&self, id: &str, version: u64) -> StoreResult<Option<(u64, Execution)>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("X#{id}")))
            .key("sk", s(SNAPSHOT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let at = get_n(&item, "version")?;
        // Written after the version it holds committed, so a newer one than
        // the execution read just before can only mean it moved on since:
        // the older history is still there to replay from the start.
        if at > version {
            return Ok(None);
        }
        let text = match item.get("state") {
            Some(_) => get_s(&item, "state")?.to_string(),
            None => {
                let parts = get_n(&item, "parts")? as usize;
                let items = self
                    .query_all(
                        &format!("X#{id}"),
                        SortKeys::Between(snapshot_part_sk(at, 0), snapshot_part_sk(at, parts - 1)),
                        true,
                        None,
                    )
                    .await?;
                if items.len() != parts {
                    return Err(corrupt(format!(
                        "snapshot {at} of execution `{id}` has {} of its {parts} parts",
                        items.len()
                    )));
                }
                let mut text = String::new();
                for item in &items {
                    text.push_str(get_s(item, "part")?);
                }
                text
            }
        };
        Ok(Some((
            at,
            self.parse_stored("execution state", &text).await?,
        )))
    }

    /// Writes the state as of `version` as the execution's snapshot, unless
    /// a newer one is there. Best effort: the history holds the same.
    ///
    /// A state larger than an item is written in parts first, then the
    /// snapshot item that names them; the parts of the snapshot it replaces
    /// expire a day later (a load that read the old snapshot item just before
    /// still finds them).
    async fn put_snapshot(&self, id: &str, version: u64, state: String, now: Timestamp) {
        let parts = split_at_most(&state, SNAPSHOT_PART_BYTES);
        let mut pointer = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("X#{id}")))
            .item("sk", s(SNAPSHOT_SK))
            .item("version", n(version));
        if parts.len() == 1 {
            pointer = pointer.item("state", s(&state));
        } else {
            for (i, part) in parts.iter().enumerate() {
                let written = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(format!("X#{id}")))
                    .item("sk", s(snapshot_part_sk(version, i)))
                    .item("part", s(*part))
                    .send()
                    .await;
                if let Err(e) = written {
                    tracing::warn!(workflow.execution.id = %id, version, error = %sdk_error(e), "snapshot not written; loads replay from the previous one");
                    return;
                }
            }
            pointer = pointer.item("parts", n(parts.len()));
        }
        let written = pointer
            .condition_expression("attribute_not_exists(pk) OR version < :v")
            .expression_attribute_values(":v", n(version))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match written {
            Ok(out) => {
                let replaced = out
                    .attributes()
                    .and_then(|old| Some((get_n(old, "version").ok()?, get_n(old, "parts").ok()?)));
                if let Some((old, count)) = replaced {
                    self.expire_parts(id, old, count as usize, now + SUPERSEDED_PARTS_MS)
                        .await;
                }
            }
            Err(e) if is_put_condition_failure(&e) => {
                if parts.len() > 1 {
                    self.expire_parts(id, version, parts.len(), now + SUPERSEDED_PARTS_MS)
                        .await;
                }
            }
            Err(e) => {
                tracing::warn!(workflow.execution.id = %id, version, error = %sdk_error(e), "snapshot not written; loads replay from the previous one");
            }
        }
    }

    /// Sets `expires` on the parts of snapshot `version`. Best effort: a
    /// part left without it is a stray item, not a wrong answer.
    async fn expire_parts(&self, id: &str, version: u64, parts: usize, at: Timestamp) {
        for i in 0..parts {
            let written = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("X#{id}")))
                .key("sk", s(snapshot_part_sk(version, i)))
                .update_expression("SET #exp = :exp")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#exp", EXPIRES)
                .expression_attribute_values(":exp", expires_value(at))
                .send()
                .await;
            match written {
                Ok(_) => {}
                Err(e) if is_update_condition_failure(&e) => {}
                Err(e) => {
                    tracing::warn!(workflow.execution.id = %id, version, error = %sdk_error(e), "a snapshot part left without an expiry");
                }
            }
        }
    }

    /// Gives a finished execution's snapshot, if it has one, its expiry.
    /// Best effort: a snapshot left without it is a stray item, not a wrong
    /// answer.
    async fn expire_snapshot(&self, id: &str, at: Timestamp) {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("X#{id}")))
            .key("sk", s(SNAPSHOT_SK))
            .update_expression("SET #exp = :exp")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#exp", EXPIRES)
            .expression_attribute_values(":exp", expires_value(at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match written {
            Ok(out) => {
                let parts = out.attributes().and_then(|item| {
                    Some((get_n(item, "version").ok()?, get_n(item, "parts").ok()?))
                });
                if let Some((version, count)) = parts {
                    self.expire_parts(id, version, count as usize, at).await;
                }
            }
            Err(e) if is_update_condition_failure(&e) => {}
            Err(e) => {
                tracing::warn!(workflow.execution.id = %id, error = %sdk_error(e), "snapshot of a finished execution left without an expiry");
            }
        }
    }

    /// History entries after `after` up to `upto`, from the history items
    /// and the tail not yet written as items.
    async fn history_between(
        &self,
        id: &str,
        after: u64,
        upto: u64,
        tail: &Tail,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let mut entries: BTreeMap<u64, HistoryEntry> = BTreeMap::new();
        let first_in_tail = tail.history.first().map_or(upto + 1, |e| e.seq);
        if after + 1 < first_in_tail {
            let range = SortKeys::Between(
                history_sk(after + 1),
                history_sk(upto.min(first_in_tail - 1)),
            );
            for item in self
                .query_all(&format!("X#{id}"), range, true, None)
                .await?
            {
                let entry = self.history_entry(&item).await?;
                entries.insert(entry.seq, entry);
            }
        }
        for entry in &tail.history {
            if entry.seq > after && entry.seq <= upto {
                entries.insert(entry.seq, entry.clone());
            }
        }
        Ok(entries.into_values().collect())
    }

    async fn history_entry(&self, item: &Item) -> StoreResult<HistoryEntry> {
        Ok(HistoryEntry {
            seq: get_s(item, "sk")?
                .trim_start_matches("H#")
                .parse()
                .map_err(|_| corrupt("history key is not a sequence number".into()))?,
            at: get_n(item, "at")?,
            event: self
                .parse_stored("history event", get_s(item, "event")?)
                .await?,
        })
    }

    /// A stored workflow version, compiled for replay.
    async fn compiled(&self, name: &str, version: u32) -> StoreResult<Arc<Workflow>> {
        if let Some(compiled) = self.workflows.get(name, version) {
            return Ok(compiled);
        }
        let stored = self
            .get_workflow(name, Some(version))
            .await?
            .ok_or_else(|| {
                corrupt(format!(
                    "workflow `{name}` version {version} of an execution is not stored"
                ))
            })?;
        self.workflows.compile(name, version, stored.definition)
    }

    /// One conditional write of the execution item: its state, and a tail of
    /// the transition's history entry and commands. The tail before it is
    /// carried along if its commands were never delivered, so a coordinator
    /// that died before delivering loses nothing.
    pub async fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Vec<OutboxEntry>> {
        // A transition that writes a snapshot is refused if the state no
        // longer fits in an item, as the embedded backend refuses it.
        let snapshot = match checkpoint::needs_snapshot(record, history) {
            true => {
                let state = self.stored_text(&record.id, &record.state).await?;
                check_state_size(state.len())?;
                Some(state)
            }
            false => None,
        };
        let previous = match self.tails.get(&record.id, expected_version) {
            Some(known) => known,
            None => match self.read_tail(&record.id).await? {
                None => return Err(StoreError::NotFound(record.id.clone())),
                Some((version, _)) if version != expected_version => {
                    return Err(StoreError::VersionConflict {
                        id: record.id.clone(),
                        expected: expected_version,
                    });
                }
                Some((_, tail)) => (tail, false),
            },
        };
        // The update replaces the item's tail; the item must hold the old
        // and the new one while it does (as DynamoDB emulators count it), so
        // both together are held to the item limit.
        let replaced = self.stored_text(&record.id, &previous.0).await?.len();
        let carried = match previous {
            (_, true) => Tail::default(),
            (tail, false) if self.is_flushed(&record.id, &tail).await? => Tail::default(),
            (tail, false) => tail,
        };
        let tail = Tail {
            retention_ms: Some(keep_history_ms(record)),
            ..carried.then(history, outbox)?
        };
        let tail_text = self.tail_text(&record.id, &tail).await?;
        Self::check_size(
            "the execution's newest history and outbox",
            replaced + tail_text.len(),
        )?;
        let expires = record.expires_at();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(execution_key(&record.id)));
        if let Some(at) = expires {
            update = update
                .expression_attribute_names("#exp", EXPIRES)
                .expression_attribute_values(":exp", expires_value(at));
        }
        let written = update
            // The state is not rewritten: the history rebuilds it, and a
            // snapshot is written now and then (`REMOVE` drops the state an
            // item written before snapshots still holds). A finished
            // execution's item expires after its retention.
            .update_expression(match expires {
                None => "SET #v = :v, #st = :st, #u = :u, #tail = :tail REMOVE #state",
                Some(_) => {
                    "SET #v = :v, #st = :st, #u = :u, #tail = :tail, #exp = :exp REMOVE #state"
                }
            })
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#u", "updated")
            .expression_attribute_names("#tail", "tail")
            .expression_attribute_values(":v", n(record.version))
            .expression_attribute_values(":st", s(record.status().as_str()))
            .expression_attribute_values(":u", n(record.updated_at))
            .expression_attribute_values(":tail", s(tail_text))
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        match written {
            Ok(_) => {
                self.tails
                    .remember(&record.id, record.version, &tail, false);
                self.states.remember(record);
                if let Some(state) = snapshot {
                    self.put_snapshot(&record.id, record.version, state, record.updated_at)
                        .await;
                }
                if let Some(at) = expires {
                    self.expire_snapshot(&record.id, at).await;
                }
                if let (true, Some(last)) = (tail.outbox.is_empty(), tail.last_seq()) {
                    // Nothing to deliver: the history can be written now. The
                    // transition is committed either way; if this write fails,
                    // the tail rides into the next transition.
                    if let Err(e) = self.flush(&record.id, &tail, last).await {
                        tracing::warn!(
                            workflow.execution.id = %record.id,
                            error = %e,
                            "history of a committed transition not written yet"
                        );
                    }
                }
                Ok(tail.entries(&record.id))
            }
            Err(e) if is_update_condition_failure(&e) => {
                self.tails.forget(&record.id);
                if self.read_tail(&record.id).await?.is_some() {
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

    /// Commands of the newest tail that were never delivered.
    pub async fn pending_outbox(&self, id: &str) -> StoreResult<Vec<OutboxEntry>> {
        let Some((version, tail)) = self.read_tail(id).await? else {
            return Ok(Vec::new());
        };
        if tail.outbox.is_empty() {
            return Ok(Vec::new());
        }
        // Delivered by this process: no need to ask.
        if self
            .tails
            .get(id, version)
            .is_some_and(|(_, flushed)| flushed)
        {
            return Ok(Vec::new());
        }
        if self.is_flushed(id, &tail).await? {
            if let Some(last) = tail.last_seq() {
                self.tails.mark_flushed(id, last);
            }
            return Ok(Vec::new());
        }
        Ok(tail.entries(id))
    }

    /// Marks delivered commands: writes the history items of the tail they
    /// came from. If a later transition has since taken them into a larger
    /// tail, only the entries up to theirs are written, so that tail's own
    /// delivered mark waits for its own commands.
    pub async fn clear_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<()> {
        let mut cleared: BTreeMap<&str, BTreeSet<(u64, u32)>> = BTreeMap::new();
        for entry in entries {
            cleared
                .entry(entry.execution_id.as_str())
                .or_default()
                .insert((entry.seq, entry.position));
        }
        for (id, commands) in cleared {
            let holds = |tail: &Tail| {
                tail.outbox
                    .iter()
                    .any(|c| commands.contains(&(c.seq, c.position)))
            };
            let tail = match self.tails.current(id).filter(|t| holds(t)) {
                Some(tail) => Some(tail),
                None => self
                    .read_tail(id)
                    .await?
                    .map(|(_, tail)| tail)
                    .filter(|t| holds(t)),
            };
            // No tail holds them: a later transition found them delivered.
            let Some(tail) = tail else { continue };
            let complete = tail
                .outbox
                .iter()
                .all(|c| commands.contains(&(c.seq, c.position)));
            let up_to = if complete {
                tail.last_seq()
            } else {
                commands.iter().map(|(seq, _)| *seq).max()
            };
            if let Some(up_to) = up_to {
                self.flush(id, &tail, up_to).await?;
            }
        }
        Ok(())
    }

    /// The history items, and the newest tail's entries not yet written as items.
    pub async fn history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        // The tail first: whatever it held and was written since shows up
        // among the items read after it.
        let tail = self.read_tail(id).await?.map(|(_, tail)| tail);
        let mut entries = Vec::new();
        for item in self
            .query_all(&format!("X#{id}"), SortKeys::Prefix("H#"), true, None)
            .await?
        {
            entries.push(self.history_entry(&item).await?);
        }
        if let Some(tail) = tail {
            let written: BTreeSet<u64> = entries.iter().map(|e| e.seq).collect();
            entries.extend(
                tail.history
                    .into_iter()
                    .filter(|e| !written.contains(&e.seq)),
            );
            entries.sort_by_key(|e| e.seq);
        }
        Ok(entries)
    }

    /// A page of executions, newest first, through the status index: one
    /// query per status (just the one asked for, when a status is), merged by
    /// creation order; then the page's execution items, for what the index
    /// does not project. Never a scan.
    pub async fn list(&self, query: &ListQuery) -> StoreResult<ExecutionPage> {
        let statuses: Vec<ExecutionStatus> = match query.status {
            Some(status) => vec![status],
            None => ExecutionStatus::ALL.to_vec(),
        };
        let low = query
            .since
            .map_or_else(|| "0".to_string(), |t| format!("{t:015}#"));
        let mut high = query
            .until
            .map_or_else(|| "~".to_string(), |t| format!("{t:015}#"));
        if let Some(after) = &query.after {
            high = high.min(after.key());
        }
        let mut keys: Vec<(String, ExecutionStatus)> = Vec::new();
        if low <= high {
            for status in statuses {
                keys.extend(
                    self.list_status(status, query, &low, &high)
                        .await?
                        .into_iter()
                        .map(|ord| (ord, status)),
                );
            }
        }
        // Each status gave up to one more than the page: merged, that
        // extra one says whether another page follows.
        keys.sort_by(|a, b| b.0.cmp(&a.0));
        let more = keys.len() > query.limit;
        keys.truncate(query.limit);
        let rows = self.summaries(&keys).await?;
        Ok(ExecutionPage::of(rows, query.limit, more))
    }

    /// The ordering keys of up to `limit + 1` executions in one status
    /// partition of the index between `low` and `high` (excluded), newest first.
    async fn list_status(
        &self,
        status: ExecutionStatus,
        query: &ListQuery,
        low: &str,
        high: &str,
    ) -> StoreResult<Vec<String>> {
        let wanted = query.limit + 1;
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATUS_INDEX)
                .key_condition_expression("#st = :st AND #ord BETWEEN :low AND :high")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#ord", "ord")
                .expression_attribute_values(":st", s(status.as_str()))
                .expression_attribute_values(":low", s(low))
                .expression_attribute_values(":high", s(high))
                .scan_index_forward(false)
                .limit(wanted.min(1000) as i32)
                .set_exclusive_start_key(start.take());
            if let Some(workflow) = &query.workflow {
                request = request
                    .filter_expression("#wf = :wf")
                    .expression_attribute_names("#wf", "workflow")
                    .expression_attribute_values(":wf", s(workflow));
            }
            let out = request.send().await.map_err(sdk_error)?;
            for item in out.items() {
                let ord = get_s(item, "ord")?;
                // BETWEEN includes `high`, which is the cursor's own key.
                if ord < high {
                    found.push(ord.to_string());
                }
                if found.len() == wanted {
                    return Ok(found);
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(found),
            }
        }
    }

    /// The execution items behind ordering keys, in their order.
    async fn summaries(
        &self,
        keys: &[(String, ExecutionStatus)],
    ) -> StoreResult<Vec<ExecutionSummary>> {
        let mut found: HashMap<String, ExecutionSummary> = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut pending = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(
                    chunk
                        .iter()
                        .filter_map(|(ord, _)| ListCursor::parse(ord))
                        .map(|c| execution_key(&c.id))
                        .collect(),
                ))
                .projection_expression("pk, workflow, wv, #st, created, updated")
                .expression_attribute_names("#st", "status")
                .consistent_read(true)
                .build()
                .map_err(|e| corrupt(e.to_string()))?;
            loop {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let status_text = get_s(item, "status")?;
                    let summary = ExecutionSummary {
                        id: get_s(item, "pk")?.trim_start_matches("X#").to_string(),
                        workflow: get_s(item, "workflow")?.to_string(),
                        workflow_version: get_n(item, "wv")? as u32,
                        status: ExecutionStatus::parse(status_text)
                            .ok_or_else(|| corrupt(format!("unknown status `{status_text}`")))?,
                        created_at: get_n(item, "created")?,
                        updated_at: get_n(item, "updated")?,
                    };
                    found.insert(summary.id.clone(), summary);
                }
                match out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                {
                    Some(rest) => pending = rest.clone(),
                    None => break,
                }
            }
        }
        // An execution read between the index and here may have moved on
        // (its status changed, or it expired): it is listed as it is now, or
        // not at all.
        Ok(keys
            .iter()
            .filter_map(|(ord, _)| found.remove(&ListCursor::parse(ord)?.id))
            .collect())
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
                Some(l) if json(&l.definition) == text => {
                    // A put that stored the version but died before the
                    // catalog entry completes it now.
                    self.catalog(&definition.name, l.version).await?;
                    return Ok(l.version);
                }
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
                Ok(_) => {
                    self.catalog(&definition.name, version).await?;
                    return Ok(version);
                }
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
                .query_all(&format!("W#{name}"), SortKeys::Prefix("V#"), false, Some(1))
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

    /// Notes `version` as the newest of workflow `name` in the catalog
    /// partition, unless a newer one is there.
    async fn catalog(&self, name: &str, version: u32) -> StoreResult<()> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(CATALOG_PK))
            .item("sk", s(name))
            .item("version", n(version))
            .condition_expression("attribute_not_exists(pk) OR version < :v")
            .expression_attribute_values(":v", n(version))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if is_put_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// The newest version of every workflow: the catalog partition, then
    /// each version it names.
    pub async fn list_workflows(&self) -> StoreResult<Vec<StoredWorkflow>> {
        let mut latest = Vec::new();
        for item in self
            .query_all(CATALOG_PK, SortKeys::All, true, None)
            .await?
        {
            let name = get_s(&item, "sk")?;
            let version = get_n(&item, "version")? as u32;
            if let Some(stored) = self.get_workflow(name, Some(version)).await? {
                latest.push(stored);
            }
        }
        Ok(latest)
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
            // Kept as long as a finished execution is by default.
            .item(
                EXPIRES,
                expires_value(now.saturating_add(baton_core::workflow::DEFAULT_RETENTION_MS)),
            )
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
        self.query_all("D", SortKeys::All, true, None)
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

#[cfg(test)]
mod tests {
    use super::split_at_most;

    #[test]
    fn a_state_is_cut_into_parts_that_fit_and_join_back() {
        let text = "é".repeat(1000) + &"x".repeat(1001);
        let parts = split_at_most(&text, 300);
        assert!(parts.iter().all(|p| p.len() <= 300 && !p.is_empty()));
        assert_eq!(
            parts.concat(),
            text,
            "cut on character boundaries, nothing lost"
        );
        assert_eq!(split_at_most("small", 300), vec!["small"]);
    }
}
