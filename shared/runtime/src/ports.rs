//! The narrow traits a backend implements, and the records they exchange.
//!
//! A backend is a store of executions (saved only if the version read is
//! still current, with history and outbox in the same write), a registry of
//! workflow versions, a task queue, durable timers, a lifecycle event sink and
//! a dead-letter store. The embedded SQLite backend and the AWS backend both
//! implement them and both pass the suite in [`crate::contract`].

use std::future::Future;

use baton_core::engine::Dispatch;
use baton_core::{
    Command, Event, Execution, ExecutionStatus, LifecycleEvent, TimerId, Timestamp,
    WorkflowDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// An execution as stored: the engine state plus what the store needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub workflow: String,
    /// The workflow version the execution started with; it keeps it to the end.
    pub workflow_version: u32,
    /// Optimistic-lock version, 1 on creation, +1 per committed transition.
    pub version: u64,
    pub state: Execution,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// How long the execution's records are kept once it has finished.
    #[serde(default = "default_retention")]
    pub retention_ms: u64,
}

fn default_retention() -> u64 {
    baton_core::workflow::DEFAULT_RETENTION_MS
}

impl ExecutionRecord {
    /// When a finished execution's records may go (epoch milliseconds);
    /// `None` while it runs.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.status()
            .is_terminal()
            .then(|| self.updated_at.saturating_add(self.retention_ms))
    }

    pub fn status(&self) -> ExecutionStatus {
        self.state.status
    }
}

/// One applied event; replaying history through the engine rebuilds the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The record version this event produced.
    pub seq: u64,
    pub at: Timestamp,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    pub id: String,
    pub workflow: String,
    pub workflow_version: u32,
    pub status: ExecutionStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which executions a listing returns: newest first, each filter optional.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub status: Option<ExecutionStatus>,
    pub workflow: Option<String>,
    /// Created at or after this time.
    pub since: Option<Timestamp>,
    /// Created before this time.
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// The `next` of the page before; the listing continues after it.
    pub after: Option<ListCursor>,
}

impl ListQuery {
    pub fn newest(limit: usize) -> ListQuery {
        ListQuery {
            status: None,
            workflow: None,
            since: None,
            until: None,
            limit,
            after: None,
        }
    }

    pub fn status(self, status: ExecutionStatus) -> ListQuery {
        ListQuery {
            status: Some(status),
            ..self
        }
    }
}

/// A place in the newest-first order of executions: creation time, then id
/// (both descending), so pages neither skip nor repeat an execution created
/// while a client pages. Its text form is what clients pass back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListCursor {
    pub created_at: Timestamp,
    pub id: String,
}

impl ListCursor {
    pub fn of(summary: &ExecutionSummary) -> ListCursor {
        ListCursor {
            created_at: summary.created_at,
            id: summary.id.clone(),
        }
    }

    /// The sort key both backends order by: fixed-width time, then id.
    pub fn key(&self) -> String {
        format!("{:015}#{}", self.created_at, self.id)
    }

    pub fn parse(text: &str) -> Option<ListCursor> {
        let (created, id) = text.split_once('#')?;
        if created.len() != 15 || id.is_empty() {
            return None;
        }
        Some(ListCursor {
            created_at: created.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// One page of a listing; `next` is set when more may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionPage {
    pub executions: Vec<ExecutionSummary>,
    pub next: Option<ListCursor>,
}

impl ExecutionPage {
    /// The first `limit` of `rows` (newest first), with a cursor when the
    /// source said more remain or rows were cut.
    pub fn of(mut rows: Vec<ExecutionSummary>, limit: usize, more: bool) -> ExecutionPage {
        let cut = rows.len() > limit;
        rows.truncate(limit);
        let next = match (cut || more, rows.last()) {
            (true, Some(last)) => Some(ListCursor::of(last)),
            _ => None,
        };
        ExecutionPage {
            executions: rows,
            next,
        }
    }
}

/// A command saved with a transition that still has to be carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub execution_id: String,
    /// The record version that produced it.
    pub seq: u64,
    /// Its position among that transition's commands.
    pub position: u32,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Stored; these outbox entries still need delivering.
    New(Vec<OutboxEntry>),
    /// An execution with this id already exists (an idempotent start): nothing was written.
    Existing(Box<ExecutionRecord>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    pub name: String,
    pub version: u32,
    pub definition: WorkflowDefinition,
    pub created_at: Timestamp,
}

/// A task handed to a consumer until its lease (visibility timeout) runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedTask {
    /// Identifies this lease for [`TaskQueue::ack`].
    pub receipt: String,
    /// How many times the task has been received, this time included.
    pub receive_count: u32,
    pub task: Dispatch,
}

/// Why something was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// A compensation that exhausted its retries: a person must resolve it.
    Compensation,
    /// A task received more than its maximum number of times (a poison pill).
    Task,
    /// A message that could not be decoded.
    Malformed,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Compensation => "compensation",
            DeadLetterKind::Task => "task",
            DeadLetterKind::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub id: String,
    pub kind: DeadLetterKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    pub created_at: Timestamp,
    pub reason: String,
    /// Everything needed to act on it: the dead-letter context or the task itself.
    pub body: Value,
}

/// Errors of a backend, grouped by what the caller must do.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum StoreError {
    /// Someone else committed first: reload and apply again.
    #[error("execution `{id}` changed since it was read (expected version {expected})")]
    VersionConflict { id: String, expected: u64 },
    #[error("no execution `{0}`")]
    NotFound(String),
    /// Will not fit; retrying cannot help.
    #[error("{what} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// The request cannot be carried out as given (a workflow naming
    /// functions Baton cannot run): nothing was stored; fix it and retry.
    #[error("{what}: {}", problems.join("; "))]
    Refused { what: String, problems: Vec<String> },
    /// A stored record does not decode; retrying cannot help.
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
    /// The backend could not be reached or was busy: retrying may help.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The caller lacks permission. Retrying may help while a permissions
    /// change propagates; a message kept failing this way reaches the
    /// dead letters through its queue's redrive policy.
    #[error("access denied: {0}")]
    Denied(String),
    /// The service refused the request as made (a missing resource, an
    /// invalid parameter): retrying cannot help.
    #[error("refused ({code}): {message}")]
    Rejected { code: String, message: String },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::VersionConflict { .. } | StoreError::Unavailable(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait ExecutionStore: Send + Sync {
    /// Inserts a new execution at version 1 with its history and outbox, unless
    /// one with the same id exists.
    fn create(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> impl Future<Output = StoreResult<Created>> + Send;

    fn load(&self, id: &str) -> impl Future<Output = StoreResult<Option<ExecutionRecord>>> + Send;

    /// Saves `record` only if the stored version is still `expected_version`
    /// (`record.version` is `expected_version + 1`), writing history and
    /// outbox in the same atomic write. Returns the outbox entries the caller
    /// must still deliver (a backend that delivers inside the write returns none).
    fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> impl Future<Output = StoreResult<Vec<OutboxEntry>>> + Send;

    /// Outbox entries saved but not yet cleared (left by a shell that died after committing).
    fn pending_outbox(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Vec<OutboxEntry>>> + Send;

    fn clear_outbox(&self, entries: &[OutboxEntry])
    -> impl Future<Output = StoreResult<()>> + Send;

    fn history(&self, id: &str) -> impl Future<Output = StoreResult<Vec<HistoryEntry>>> + Send;

    /// Newest first, filtered and paged by `query`; never a full scan of
    /// the store.
    fn list(&self, query: &ListQuery) -> impl Future<Output = StoreResult<ExecutionPage>> + Send;
}

pub trait WorkflowStore: Send + Sync {
    /// Stores a definition as the next version of its workflow; storing the same
    /// definition as the latest version again returns that version.
    fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<u32>> + Send;

    /// A given version, or the latest when `version` is `None`.
    fn get_workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> impl Future<Output = StoreResult<Option<StoredWorkflow>>> + Send;

    /// The latest version of every workflow.
    fn list_workflows(&self) -> impl Future<Output = StoreResult<Vec<StoredWorkflow>>> + Send;
}

/// Hands one attempt to whatever runs the step: a task queue the embedded
/// worker leases from, or, on AWS, the step's Lambda function itself.
pub trait TaskDispatcher: Send + Sync {
    /// Dispatches one attempt; sending the same attempt twice runs it once
    /// where the backend can tell (otherwise the idempotency key guards it).
    fn send(&self, task: &Dispatch, now: Timestamp)
    -> impl Future<Output = StoreResult<()>> + Send;

    /// Problems that would stop these functions from running as steps (a
    /// function that does not exist, that Baton may not invoke, whose
    /// results would not come back), one line each naming the function.
    /// Deploying refuses a workflow while there are any.
    fn check_functions(
        &self,
        functions: &[String],
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
}

/// A queue of dispatched tasks that workers lease (the embedded backend).
pub trait TaskQueue: TaskDispatcher {
    /// Leases up to `max` tasks of these functions (all when empty) for
    /// `visibility_ms`. A task received more than `max_receives` times is moved to
    /// the dead-letter store instead, as an SQS redrive policy would.
    fn receive(
        &self,
        functions: &[String],
        max: usize,
        visibility_ms: u64,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<LeasedTask>>> + Send;

    /// Deletes a task whose result is recorded.
    fn ack(&self, task: &LeasedTask) -> impl Future<Output = StoreResult<()>> + Send;
}

pub trait TimerService: Send + Sync {
    /// Arranges for `TimerFired { timer }` to reach the execution at `fire_at`; idempotent per timer.
    fn schedule(
        &self,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Arranges every timer of one delivery, each as [`TimerService::schedule`]
    /// does. All are attempted; the first error is returned. A backend
    /// that can send several in one request (a fan-out's attempt timeouts)
    /// overrides this.
    fn schedule_all(
        &self,
        timers: &[ScheduledTimer],
    ) -> impl Future<Output = StoreResult<()>> + Send {
        async move {
            let mut first_error = None;
            for t in timers {
                if let Err(e) = self.schedule(&t.execution_id, &t.timer, t.fire_at).await {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        }
    }
}

/// One timer a transition asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledTimer {
    pub execution_id: String,
    pub timer: TimerId,
    pub fire_at: Timestamp,
}

pub trait EventSink: Send + Sync {
    fn publish(&self, events: &[LifecycleEvent]) -> impl Future<Output = StoreResult<()>> + Send;
}

pub trait DeadLetterStore: Send + Sync {
    fn put_dead_letter(
        &self,
        record: &DeadLetterRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Keeps a message no retry can apply (it does not decode, or applying it
    /// failed for good) for a person, with the reason and its execution. A
    /// backend with a dead-letter queue puts it there, where its alarm sees it.
    fn dead_letter_message(
        &self,
        record: &DeadLetterRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.put_dead_letter(record)
    }
    fn list_dead_letters(&self) -> impl Future<Output = StoreResult<Vec<DeadLetterRecord>>> + Send;
    fn get_dead_letter(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<DeadLetterRecord>>> + Send;
    /// Removes an entry (after it was redriven or discarded); `false` if it was not there.
    fn remove_dead_letter(&self, id: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Puts a dead-lettered message back on the queue it came from and removes
    /// it here; `false` if there is no such entry. Compensations are not
    /// messages: they are redriven by running the compensation again.
    fn redrive_dead_letter(&self, id: &str) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Everything the coordinator needs from a backend.
pub trait Backend:
    ExecutionStore + WorkflowStore + TaskDispatcher + TimerService + EventSink + DeadLetterStore
{
    /// The largest JSON payload (input, output, signal) this backend stores.
    fn payload_limit(&self) -> usize;

    /// A step's output as its function returned it, with a reference to a
    /// payload the function stored itself replaced by that payload (a
    /// backend whose transport limits results more than its store does).
    /// [`StoreError::TooLarge`] and [`StoreError::Rejected`] fail the step.
    fn resolve_output(
        &self,
        execution_id: &str,
        output: Value,
    ) -> impl Future<Output = StoreResult<Value>> + Send {
        let _ = execution_id;
        async move { Ok(output) }
    }
}
