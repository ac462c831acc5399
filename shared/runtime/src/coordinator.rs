//! The coordinator: loads an execution, applies one event with the engine,
//! commits the new state with a version check, then delivers the commands.
//!
//! A version conflict means another coordinator moved the execution first:
//! reload and apply again, after a short randomised pause (the event may then
//! be stale, which the engine reports). Commands are saved in the outbox in
//! the same write as the state, so a coordinator that dies before delivering
//! them leaves them for [`Coordinator::recover`].
//!
//! Delivery attempts every command. One that may pass later keeps the whole
//! outbox for redelivery (every delivery is idempotent); a dispatch the
//! backend refuses for good (the function does not exist, Baton may not
//! invoke it) becomes a failed attempt of its step, so the workflow's own
//! retry and compensation take over and the execution still ends.
//!
//! Operations return boxed futures ([`BoxFuture`]). They nest (a delivery
//! applies a refused dispatch's failure, starts a child or tells a parent,
//! each delivering in turn), and an unboxed future takes room in its
//! caller's stack frame, which every nested operation is polled through
//! (much room in a build without optimisation); boxed, it leaves a pointer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_core::engine::{self, ChildStart, ExecutionStatus, Ignored, Outcome, ParentRef};
use baton_core::{Command, ErrorInfo, Event, Execution, Timestamp, ValidationErrors, Workflow};
use futures::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::mailbox::{Entered, Mailboxes};
use crate::ports::{
    Backend, Created, DeadLetterKind, DeadLetterRecord, ExecutionRecord, HistoryEntry, OutboxEntry,
    ScheduledTimer, StoreError,
};

/// How many times a transition is re-applied after version conflicts before giving up.
const MAX_CONFLICT_RETRIES: usize = 32;
/// The longest pause between two tries after a version conflict.
const MAX_CONFLICT_PAUSE_MS: u64 = 200;
/// Events applied together in one transition, at most.
const MAX_BATCH: usize = 64;
/// Transitions one writer commits before it hands its mailbox over, so
/// that no caller waits on a stream of others' events.
const MAX_WRITER_ROUNDS: usize = 8;

#[derive(Debug, Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no workflow `{name}`{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownWorkflow { name: String, version: Option<u32> },
    #[error("stored workflow `{name}` version {version} no longer validates: {errors}")]
    InvalidStoredWorkflow {
        name: String,
        version: u32,
        errors: ValidationErrors,
    },
    #[error("no execution `{0}`")]
    NotFound(String),
    #[error("{what} is {size} bytes, more than the {limit}-byte limit")]
    PayloadTooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "execution `{0}` kept changing under us; giving up after {MAX_CONFLICT_RETRIES} attempts"
    )]
    Contended(String),
    /// The request breaks a limit every path shares (an execution id, input nesting).
    #[error(transparent)]
    Limit(#[from] baton_core::limits::LimitError),
    /// A start named an existing execution with a different workflow or input.
    #[error("execution id `{id}` is already used {by}")]
    ExecutionExists { id: String, by: String },
    /// A start asked to keep the execution's records for a time out of range.
    #[error("retention {0}")]
    InvalidRetention(String),
    /// A start gave the execution a timeout out of range.
    #[error("timeout {0}")]
    InvalidTimeout(String),
    /// A signal no step of the execution's workflow waits for.
    #[error("no step of workflow `{workflow}` waits for a `{name}` signal{}", waits_for_text(.waited_for))]
    UnknownSignal {
        name: String,
        workflow: String,
        waited_for: Vec<String>,
    },
}

fn waits_for_text(names: &[String]) -> String {
    if names.is_empty() {
        return "; it waits for none".into();
    }
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("; it waits for {}", names.join(", "))
}

/// What one execution changes of its workflow's settings, given at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// How long its records are kept once it has ended.
    pub retention_ms: Option<u64>,
    /// The longest it may run.
    pub timeout_ms: Option<u64>,
    /// The parent step's attempt a child execution runs for.
    pub parent: Option<ParentRef>,
}

impl CoordinatorError {
    /// Whether the triggering message should be retried (redelivered) rather than dropped.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinatorError::Store(e) => e.is_retryable(),
            CoordinatorError::Contended(_) => true,
            _ => false,
        }
    }

    /// Whether trying again later may succeed: a retryable error, or denied
    /// permission (while a permissions change propagates).
    pub fn may_pass(&self) -> bool {
        self.is_retryable() || matches!(self, CoordinatorError::Store(StoreError::Denied(_)))
    }
}

/// Result of starting an execution.
#[derive(Debug, Clone)]
pub struct Started {
    pub record: ExecutionRecord,
    /// False when an execution with this id already existed (nothing new started).
    pub created: bool,
}

pub struct Coordinator<B> {
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    workflows: Mutex<HashMap<(String, u32), Arc<Workflow>>>,
    mailboxes: Mailboxes<Event, Result<Outcome, CoordinatorError>>,
}

/// Why a batch of events did not simply succeed.
enum Failed {
    /// Nothing was committed: each event may be tried on its own.
    NotCommitted(CoordinatorError),
    /// Committed, but its commands are still in the outbox.
    Undelivered(CoordinatorError),
}

impl Failed {
    fn into_error(self) -> CoordinatorError {
        match self {
            Failed::NotCommitted(e) | Failed::Undelivered(e) => e,
        }
    }
}

impl<B: Backend> Coordinator<B> {
    pub fn new(backend: Arc<B>, clock: Arc<dyn Clock>) -> Coordinator<B> {
        Coordinator {
            backend,
            clock,
            workflows: Mutex::new(HashMap::new()),
            mailboxes: Mailboxes::default(),
        }
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A compiled workflow version, cached: definitions are immutable per version.
    pub async fn workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(u32, Arc<Workflow>), CoordinatorError> {
        if let Some(v) = version
            && let Some(w) = self.lock_cache().get(&(name.to_string(), v))
        {
            return Ok((v, w.clone()));
        }
        let stored = self
            .backend
            .get_workflow(name, version)
            .await?
            .ok_or_else(|| CoordinatorError::UnknownWorkflow {
                name: name.to_string(),
                version,
            })?;
        let compiled = Workflow::from_definition(stored.definition).map_err(|errors| {
            CoordinatorError::InvalidStoredWorkflow {
                name: name.to_string(),
                version: stored.version,
                errors,
            }
        })?;
        let compiled = Arc::new(compiled);
        self.lock_cache()
            .insert((name.to_string(), stored.version), compiled.clone());
        Ok((stored.version, compiled))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Arc<Workflow>>> {
        // The cache holds only immutable compiled workflows; a panic elsewhere cannot corrupt it.
        self.workflows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_size(&self, what: &str, value: &Value) -> Result<(), CoordinatorError> {
        let size = serde_json::to_vec(value)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        let limit = self.backend.payload_limit();
        if size > limit {
            return Err(CoordinatorError::PayloadTooLarge {
                what: what.to_string(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Starts an execution of the latest (or given) version of a workflow.
    /// Starting again with the same id, workflow and input returns the
    /// existing execution after delivering whatever its first start left
    /// undelivered; the same id with another workflow or input is refused.
    pub async fn start(
        &self,
        workflow: &str,
        version: Option<u32>,
        execution_id: &str,
        input: Value,
    ) -> Result<Started, CoordinatorError> {
        self.start_retained(workflow, version, execution_id, input, None)
            .await
    }

    /// [`Coordinator::start`], keeping the finished execution's records for
    /// `retention_ms` instead of the workflow's retention.
    pub async fn start_retained(
        &self,
        workflow: &str,
        version: Option<u32>,
        execution_id: &str,
        input: Value,
        retention_ms: Option<u64>,
    ) -> Result<Started, CoordinatorError> {
        let options = StartOptions {
            retention_ms,
            ..StartOptions::default()
        };
        self.start_with(workflow, version, execution_id, input, options)
            .await
    }

    /// [`Coordinator::start`] with what this execution changes of its
    /// workflow's settings.
    pub fn start_with<'a>(
        &'a self,
        workflow: &'a str,
        version: Option<u32>,
        execution_id: &'a str,
        input: Value,
        options: StartOptions,
    ) -> BoxFuture<'a, Result<Started, CoordinatorError>> {
        Box::pin(async move {
            let StartOptions {
                retention_ms,
                timeout_ms,
                parent,
            } = options;
            // One id rule and one nesting limit for every path that creates an
            // execution (API, CLI, schedules, coordinator start messages).
            baton_core::limits::check_execution_id(execution_id)?;
            baton_core::limits::check_json_depth(&input, "the execution input")?;
            self.check_size("the execution input", &input)?;
            if let Some(ms) = retention_ms {
                baton_core::workflow::check_retention(ms)
                    .map_err(CoordinatorError::InvalidRetention)?;
            }
            if let Some(ms) = timeout_ms {
                baton_core::workflow::check_execution_timeout(ms)
                    .map_err(CoordinatorError::InvalidTimeout)?;
            }
            if let Some(existing) = self.backend.load(execution_id).await? {
                return self.started_before(existing, workflow, &input).await;
            }
            let (workflow_version, compiled) = self.workflow(workflow, version).await?;
            let now = self.clock.now();
            let mut state = Execution::new(&compiled, execution_id);
            let event = Event::Started {
                input,
                timeout_ms,
                parent,
            };
            let transition = engine::apply(&compiled, &mut state, event.clone(), now);
            let record = ExecutionRecord {
                id: execution_id.to_string(),
                workflow: workflow.to_string(),
                workflow_version,
                version: 1,
                state,
                created_at: now,
                updated_at: now,
                retention_ms: retention_ms.unwrap_or(compiled.retention_ms),
            };
            let history = [HistoryEntry {
                seq: 1,
                at: now,
                event,
            }];
            match self
                .backend
                .create(&record, &history, &transition.commands)
                .await?
            {
                Created::New(outbox) => {
                    info!(workflow.execution.id = %execution_id, workflow.name = %workflow, workflow.version = workflow_version, "execution started");
                    self.deliver(&outbox).await?;
                    Ok(Started {
                        record,
                        created: true,
                    })
                }
                Created::Existing(existing) => {
                    let input = record.state.input.clone();
                    self.started_before(*existing, workflow, &input).await
                }
            }
        })
    }

    /// A repeated start: the same request finishes what the first one may
    /// not have (its commands), a different one is refused.
    fn started_before<'a>(
        &'a self,
        existing: ExecutionRecord,
        workflow: &'a str,
        input: &'a Value,
    ) -> BoxFuture<'a, Result<Started, CoordinatorError>> {
        Box::pin(async move {
            if existing.workflow != workflow {
                return Err(CoordinatorError::ExecutionExists {
                    id: existing.id,
                    by: format!("by workflow `{}`", existing.workflow),
                });
            }
            if *existing.state.input != *input {
                return Err(CoordinatorError::ExecutionExists {
                    id: existing.id,
                    by: "with a different input".into(),
                });
            }
            self.recover(&existing.id).await?;
            Ok(Started {
                record: existing,
                created: false,
            })
        })
    }

    /// Sends a signal, refusing before anything is stored one whose name no
    /// step of the execution's workflow waits for, or whose id is not valid.
    /// A signal with an `id` the execution took already changes nothing.
    pub async fn signal(
        &self,
        execution_id: &str,
        name: &str,
        payload: Value,
        id: Option<String>,
    ) -> Result<Outcome, CoordinatorError> {
        if let Some(id) = &id {
            baton_core::limits::check_signal_id(id)?;
        }
        let record = self
            .backend
            .load(execution_id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(execution_id.to_string()))?;
        let (_, workflow) = self
            .workflow(&record.workflow, Some(record.workflow_version))
            .await?;
        let waited_for = workflow.signal_names();
        if !waited_for.iter().any(|n| n == name) {
            return Err(CoordinatorError::UnknownSignal {
                name: name.to_string(),
                workflow: record.workflow,
                waited_for,
            });
        }
        let event = Event::SignalReceived {
            name: name.to_string(),
            payload,
            id,
        };
        self.handle(execution_id, event).await
    }

    /// Runs a failed execution again from where it failed (see
    /// [`Event::RedriveRequested`]); any other status is an ignored outcome
    /// saying why.
    pub async fn redrive(
        &self,
        execution_id: &str,
        reason: Option<String>,
    ) -> Result<Outcome, CoordinatorError> {
        self.handle(execution_id, Event::RedriveRequested { reason })
            .await
    }

    /// Applies one event to an execution, retrying on version conflicts.
    /// Events for the same execution handled at the same time in this
    /// process are applied together, in one transition (see [`crate::mailbox`]).
    pub fn handle<'a>(
        &'a self,
        execution_id: &'a str,
        event: Event,
    ) -> BoxFuture<'a, Result<Outcome, CoordinatorError>> {
        Box::pin(async move {
            let event = self.receive(execution_id, event).await?;
            loop {
                let mut writer = match self.mailboxes.enter(execution_id, event.clone()) {
                    Entered::Waiting(answer) => match answer.await {
                        Ok(result) => return result,
                        // Its writer stopped before answering: try again.
                        Err(_) => continue,
                    },
                    Entered::Writer(writer, _) => writer,
                };
                let mut mine = Some(event);
                let mut my_result = None;
                let mut rounds = 0;
                loop {
                    let waiting = writer.take(MAX_BATCH - usize::from(mine.is_some()));
                    if mine.is_none() && waiting.is_empty() {
                        if writer.leave_if_empty() {
                            break;
                        }
                        continue;
                    }
                    let own = mine.take();
                    let has_own = own.is_some();
                    let (events, replies): (Vec<Event>, Vec<_>) = own
                        .map(|e| (e, None))
                        .into_iter()
                        .chain(waiting.into_iter().map(|(e, reply)| (e, Some(reply))))
                        .unzip();
                    let mut results = self.apply_together(execution_id, events).await.into_iter();
                    if has_own {
                        my_result = results.next();
                    }
                    for (reply, result) in replies.into_iter().flatten().zip(results) {
                        // A waiter that stopped waiting no longer needs its answer.
                        let _ = reply.send(result);
                    }
                    rounds += 1;
                    if rounds >= MAX_WRITER_ROUNDS {
                        // Hand over: the waiters left try again, one of them writes.
                        break;
                    }
                }
                return my_result.expect("the writer's own event is in its first round");
            }
        })
    }

    /// Applies events to one execution in one transition each time it can:
    /// every event's result, in order. Used by a coordinator that received
    /// several messages for one execution at once.
    pub fn handle_all<'a>(
        &'a self,
        execution_id: &'a str,
        events: Vec<Event>,
    ) -> BoxFuture<'a, Vec<Result<Outcome, CoordinatorError>>> {
        Box::pin(async move {
            let mut results: Vec<Option<Result<Outcome, CoordinatorError>>> = Vec::new();
            let mut admitted = Vec::new();
            for event in events {
                match self.receive(execution_id, event).await {
                    Ok(event) => {
                        admitted.push(event);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            let mut applied = self
                .apply_together(execution_id, admitted)
                .await
                .into_iter();
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| applied.next().expect("one result per admitted event"))
                })
                .collect()
        })
    }

    /// An event as it arrived, its output fetched if the function stored it
    /// by reference, then admitted. An output that cannot be fetched for
    /// good (too large, missing, not JSON) is the step's failure.
    async fn receive(&self, execution_id: &str, event: Event) -> Result<Event, CoordinatorError> {
        let Event::TaskSucceeded { task, output } = event else {
            return self.admit(execution_id, event);
        };
        // Boxed: a backend's fetch is a large future, and this one sits
        // inside every event's handling.
        let resolved = Box::pin(self.backend.resolve_output(execution_id, output)).await;
        let (name, message) = match resolved {
            Ok(output) => return self.admit(execution_id, Event::TaskSucceeded { task, output }),
            Err(e @ StoreError::TooLarge { .. }) => ("PayloadTooLarge".to_string(), e.to_string()),
            Err(StoreError::Rejected { code, message }) => (code, message),
            Err(e) => return Err(e.into()),
        };
        warn!(workflow.execution.id = %execution_id, workflow.step = %task.step, error.name = %name, error = %message, "step output cannot be fetched; the attempt fails");
        let event = Event::TaskFailed {
            error: ErrorInfo::new(
                name,
                format!("step `{}`'s output: {message}", task.step),
                false,
            ),
            task,
        };
        self.admit(execution_id, event)
    }

    /// What an event becomes before it is applied: an output too large or
    /// too deep to keep is the step's failure; a signal too large is refused.
    fn admit(&self, execution_id: &str, event: Event) -> Result<Event, CoordinatorError> {
        // An output too large to keep is the step's failure, not a lost
        // message: the workflow's compensation takes over at once.
        let event = match event {
            Event::TaskSucceeded { task, output } => {
                let what = format!("step `{}`'s output", task.step);
                let kept = baton_core::limits::check_json_depth(&output, &what)
                    .map_err(CoordinatorError::from)
                    .and_then(|()| self.check_size(&what, &output));
                match kept {
                    Ok(()) => Event::TaskSucceeded { task, output },
                    Err(e) => {
                        warn!(workflow.execution.id = %execution_id, workflow.step = %task.step, error = %e, "step output cannot be kept; the attempt fails");
                        let name = match e {
                            CoordinatorError::Limit(_) => "PayloadTooDeep",
                            _ => "PayloadTooLarge",
                        };
                        Event::TaskFailed {
                            task,
                            error: ErrorInfo::new(name, e.to_string(), false),
                        }
                    }
                }
            }
            other => other,
        };
        if let Event::SignalReceived { payload, .. } = &event {
            baton_core::limits::check_json_depth(payload, "a signal payload")?;
            self.check_size("a signal payload", payload)?;
        }
        Ok(event)
    }

    /// Admitted events in one transition; if that cannot be committed, one
    /// transition each, so each event gets its own answer.
    async fn apply_together(
        &self,
        execution_id: &str,
        events: Vec<Event>,
    ) -> Vec<Result<Outcome, CoordinatorError>> {
        let n = events.len();
        if n == 0 {
            return Vec::new();
        }
        let single = n == 1;
        match self
            .apply_batch(execution_id, &events, &Settled::new())
            .await
        {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(Failed::Undelivered(e)) if !single => {
                // Committed, so every event took effect; its commands wait in
                // the outbox, and each message must come back to deliver them.
                let message = e.to_string();
                std::iter::once(Err(e))
                    .chain((1..n).map(|_| {
                        Err(CoordinatorError::Store(StoreError::Unavailable(
                            message.clone(),
                        )))
                    }))
                    .collect()
            }
            Err(Failed::Undelivered(e) | Failed::NotCommitted(e)) if single => vec![Err(e)],
            Err(Failed::NotCommitted(_)) | Err(Failed::Undelivered(_)) => {
                let mut results = Vec::with_capacity(n);
                for event in events {
                    results.push(
                        self.apply_batch(
                            execution_id,
                            std::slice::from_ref(&event),
                            &Settled::new(),
                        )
                        .await
                        .map(|mut outcomes| outcomes.remove(0))
                        .map_err(Failed::into_error),
                    );
                }
                results
            }
        }
    }

    /// [`Coordinator::handle`] inside a delivery: the commands in `settled`
    /// were carried out already (or their refusal is this event), so if the
    /// transition's outbox still holds them they are not carried out again.
    fn handle_after<'a>(
        &'a self,
        execution_id: &'a str,
        event: Event,
        settled: &'a Settled,
    ) -> BoxFuture<'a, Result<Outcome, CoordinatorError>> {
        Box::pin(async move {
            let event = self.receive(execution_id, event).await?;
            self.apply_batch(execution_id, std::slice::from_ref(&event), settled)
                .await
                .map(|mut outcomes| outcomes.remove(0))
                .map_err(Failed::into_error)
        })
    }

    /// Applies `events` in order to one loaded state and commits every one
    /// that changed something in one transition (a history entry each),
    /// retrying on version conflicts; then delivers its commands.
    fn apply_batch<'a>(
        &'a self,
        execution_id: &'a str,
        events: &'a [Event],
        settled: &'a Settled,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, Failed>> {
        Box::pin(async move {
            for conflicts in 0..MAX_CONFLICT_RETRIES {
                if conflicts > 0 {
                    tokio::time::sleep(conflict_pause(conflicts)).await;
                }
                let record = self
                    .backend
                    .load(execution_id)
                    .await
                    .map_err(|e| Failed::NotCommitted(e.into()))?
                    .ok_or_else(|| {
                        Failed::NotCommitted(CoordinatorError::NotFound(execution_id.to_string()))
                    })?;
                let (_, compiled) = self
                    .workflow(&record.workflow, Some(record.workflow_version))
                    .await
                    .map_err(Failed::NotCommitted)?;
                let now = self.clock.now().max(record.updated_at);
                // The loaded record is this transition's own: apply to it in place.
                let mut state = record.state;
                let mut outcomes = Vec::with_capacity(events.len());
                let mut history = Vec::new();
                let mut commands = Vec::new();
                for event in events {
                    let transition = engine::apply(&compiled, &mut state, event.clone(), now);
                    if let Outcome::Ignored(reason) = &transition.outcome {
                        debug!(workflow.execution.id = %execution_id, ?reason, "event changed nothing");
                    } else {
                        history.push(HistoryEntry {
                            seq: record.version + history.len() as u64 + 1,
                            at: now,
                            event: event.clone(),
                        });
                        commands.extend(transition.commands);
                    }
                    outcomes.push(transition.outcome);
                }
                if history.is_empty() {
                    return Ok(outcomes);
                }
                let next = ExecutionRecord {
                    version: record.version + history.len() as u64,
                    state,
                    updated_at: now,
                    ..record
                };
                match self
                    .backend
                    .commit(&next, record.version, &history, &commands)
                    .await
                {
                    Ok(outbox) => {
                        log_finish(&next, &commands);
                        self.deliver_after(&outbox, settled)
                            .await
                            .map_err(Failed::Undelivered)?;
                        return Ok(outcomes);
                    }
                    Err(StoreError::VersionConflict { .. }) => {
                        debug!(workflow.execution.id = %execution_id, "version conflict; reloading");
                        continue;
                    }
                    Err(e) => return Err(Failed::NotCommitted(e.into())),
                }
            }
            Err(Failed::NotCommitted(CoordinatorError::Contended(
                execution_id.to_string(),
            )))
        })
    }

    /// Delivers outbox entries left by a coordinator that died after committing.
    pub fn recover<'a>(
        &'a self,
        execution_id: &'a str,
    ) -> BoxFuture<'a, Result<usize, CoordinatorError>> {
        Box::pin(async move {
            let pending = self.backend.pending_outbox(execution_id).await?;
            let n = pending.len();
            if n > 0 {
                warn!(workflow.execution.id = %execution_id, entries = n, "delivering commands left in the outbox");
                self.deliver(&pending).await?;
            }
            Ok(n)
        })
    }

    /// Carries out commands, then clears them from the outbox. Every
    /// delivery is idempotent, so delivering an entry twice is harmless:
    /// every command is attempted, and if any failed in a way that may pass
    /// later, the outbox stays for redelivery. Dispatches refused for good
    /// become failed attempts of their steps before the outbox is cleared.
    async fn deliver(&self, entries: &[OutboxEntry]) -> Result<(), CoordinatorError> {
        self.deliver_after(entries, &Settled::new()).await
    }

    fn deliver_after<'a>(
        &'a self,
        entries: &'a [OutboxEntry],
        settled: &'a Settled,
    ) -> BoxFuture<'a, Result<(), CoordinatorError>> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            let now = self.clock.now();
            let mut events = Vec::new();
            let mut timers = Vec::new();
            let mut undelivered: Option<StoreError> = None;
            // What commands that cannot be carried out become, for the
            // execution that gave them: a refused dispatch's failed attempt,
            // a child that cannot start, an event with nowhere to go.
            let mut instead: Vec<(&str, Event)> = Vec::new();
            for entry in entries {
                if settled.contains(&settled_key(entry)) {
                    continue;
                }
                let result = match &entry.command {
                    Command::Dispatch(dispatch) => match self.backend.send(dispatch, now).await {
                        Err(e) => match dispatch_failure(&e) {
                            None => Err(e),
                            Some(error) => {
                                warn!(
                                workflow.execution.id = %entry.execution_id,
                                workflow.step = %dispatch.task.step,
                                function = %dispatch.function,
                                error = %e,
                                "the step's function cannot be invoked; its attempt fails"
                                );
                                let task = dispatch.task.clone();
                                instead.push((
                                    &dispatch.execution_id,
                                    Event::TaskFailed { task, error },
                                ));
                                Ok(())
                            }
                        },
                        Ok(()) => Ok(()),
                    },
                    Command::StartTimer { timer, fire_at } => {
                        timers.push(ScheduledTimer {
                            execution_id: entry.execution_id.clone(),
                            timer: timer.clone(),
                            fire_at: *fire_at,
                        });
                        Ok(())
                    }
                    Command::Emit(event) => {
                        events.push(event.clone());
                        Ok(())
                    }
                    Command::DeadLetter(dead) => {
                        let record = compensation_dead_letter(dead);
                        self.backend.put_dead_letter(&record).await
                    }
                    command @ (Command::StartChild(_) | Command::SendEvent { .. }) => self
                        .deliver_elsewhere(entry, command, now)
                        .await
                        .map(|event| instead.extend(event.map(|e| (&*entry.execution_id, e)))),
                    Command::Finish { .. } => Ok(()),
                };
                if let Err(e) = result {
                    warn!(workflow.execution.id = %entry.execution_id, seq = entry.seq, error = %e, "command not delivered; the outbox keeps it");
                    undelivered.get_or_insert(e);
                }
            }
            if !timers.is_empty()
                && let Err(e) = self.backend.schedule_all(&timers).await
            {
                warn!(timers = timers.len(), error = %e, "timers not scheduled; the outbox keeps them");
                undelivered.get_or_insert(e);
            }
            if !events.is_empty()
                && let Err(e) = self.backend.publish(&events).await
            {
                warn!(error = %e, "lifecycle events not published; the outbox keeps them");
                undelivered.get_or_insert(e);
            }
            if let Some(e) = undelivered {
                return Err(e.into());
            }
            // Refused dispatches become failed attempts (and the like) before
            // the outbox is cleared: if applying one fails, the outbox stays,
            // the dispatch is refused again on redelivery, and its failure is
            // applied then (a failure already applied is ignored the second
            // time). A transition committed meanwhile may carry this outbox
            // along: what was carried out here is not carried out again.
            if !instead.is_empty() {
                let mut done = settled.clone();
                done.extend(entries.iter().map(settled_key));
                for (execution_id, event) in instead {
                    self.handle_after(execution_id, event, &done).await?;
                }
            }
            self.backend.clear_outbox(entries).await?;
            Ok(())
        })
    }
}

impl<B: Backend> Coordinator<B> {
    /// Carries out a command for another execution: starts a child, or
    /// applies an event to another execution. Returns the event to apply to
    /// the sender instead, when it cannot be carried out for good (a child
    /// that cannot start fails its step's attempt; an event for an
    /// execution that does not exist becomes the command's `undeliverable`,
    /// or a dead letter when it has none). A failure that may pass is an
    /// error, so the outbox keeps the command.
    async fn deliver_elsewhere(
        &self,
        entry: &OutboxEntry,
        command: &Command,
        now: Timestamp,
    ) -> Result<Option<Event>, StoreError> {
        match command {
            Command::StartChild(child) => match self.start_child(child).await {
                Ok(()) => Ok(None),
                Err(e) if e.may_pass() => Err(coordinator_store_error(e)),
                Err(e) => {
                    warn!(
                        workflow.execution.id = %entry.execution_id,
                        workflow.step = %child.parent.task.step,
                        child = %child.execution_id,
                        error = %e,
                        "the child execution cannot start; its step's attempt fails"
                    );
                    Ok(Some(Event::TaskFailed {
                        task: child.parent.task.clone(),
                        error: ErrorInfo::new("ChildNotStarted", e.to_string(), false),
                    }))
                }
            },
            Command::SendEvent {
                execution_id,
                event,
                undeliverable,
            } => {
                let why = match self.send_event(execution_id, event).await {
                    Ok(()) => return Ok(None),
                    Err(e) if e.may_pass() => return Err(coordinator_store_error(e)),
                    Err(CoordinatorError::NotFound(_)) => {
                        if let Some(instead) = undeliverable {
                            warn!(workflow.execution.id = %entry.execution_id, to = %execution_id, "the execution an event is for does not exist");
                            return Ok(Some((**instead).clone()));
                        }
                        "it does not exist".to_string()
                    }
                    Err(e) => e.to_string(),
                };
                warn!(workflow.execution.id = %entry.execution_id, to = %execution_id, error = %why, "an event for another execution cannot be applied; dead-lettered");
                let dead = undelivered_event(entry, execution_id, event, &why, now);
                self.backend.put_dead_letter(&dead).await.map(|()| None)
            }
            _ => Ok(None),
        }
    }

    /// Starts a child execution for its parent's step; starting it again
    /// (a redelivered outbox) finds it started.
    async fn start_child(&self, child: &ChildStart) -> Result<(), CoordinatorError> {
        let options = StartOptions {
            retention_ms: None,
            timeout_ms: child.timeout_ms,
            parent: Some(child.parent.clone()),
        };
        self.start_with(
            &child.workflow,
            child.version,
            &child.execution_id,
            child.input.clone(),
            options,
        )
        .await
        .map(|_| ())
    }

    /// Applies an event to another execution (a child's end to its parent, a
    /// parent's cancel or undo to its child). Not through the mailbox: the
    /// other execution's writer may be the one delivering to this one; its
    /// version check orders the two.
    async fn send_event(&self, execution_id: &str, event: &Event) -> Result<(), CoordinatorError> {
        self.handle_after(execution_id, event.clone(), &Settled::new())
            .await
            .map(|outcome| {
                if let Outcome::Ignored(reason) = outcome {
                    debug!(workflow.execution.id = %execution_id, reason = %describe_ignored(&reason), "event for another execution changed nothing");
                }
            })
    }
}

/// A store error standing for a coordinator error that may pass, so the outbox is kept.
fn coordinator_store_error(e: CoordinatorError) -> StoreError {
    match e {
        CoordinatorError::Store(e) => e,
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The dead letter of an event for another execution that no retry can apply.
fn undelivered_event(
    entry: &OutboxEntry,
    to: &str,
    event: &Event,
    why: &str,
    now: Timestamp,
) -> DeadLetterRecord {
    DeadLetterRecord {
        id: format!(
            "event-{}-{}-{}",
            entry.execution_id, entry.seq, entry.position
        ),
        kind: DeadLetterKind::Task,
        execution_id: Some(to.to_string()),
        created_at: now,
        reason: format!(
            "an event from execution `{}` for execution `{to}` cannot be applied: {why}",
            entry.execution_id
        ),
        body: serde_json::json!({ "from": entry.execution_id, "to": to, "event": event }),
    }
}

/// Outbox entries already carried out within one delivery, by execution,
/// transition and position.
type Settled = std::collections::HashSet<(String, u64, u32)>;

fn settled_key(entry: &OutboxEntry) -> (String, u64, u32) {
    (entry.execution_id.clone(), entry.seq, entry.position)
}

/// The failed attempt a refused dispatch becomes, or `None` when the
/// refusal may pass by itself (the outbox is then kept and redelivered).
/// Its outcome is unknown: an outbox delivered again may have invoked the
/// function the first time, so a saga undoes the step too.
/// Denied permission fails the attempt as retryable (the workflow's retry
/// policy tries again later, as a permissions change propagates); a
/// function that does not exist, or a request refused as made, fails it
/// for good.
fn dispatch_failure(e: &StoreError) -> Option<ErrorInfo> {
    refusal(e).map(ErrorInfo::with_outcome_unknown)
}

fn refusal(e: &StoreError) -> Option<ErrorInfo> {
    match e {
        StoreError::Denied(message) => {
            Some(ErrorInfo::new("DispatchDenied", message.clone(), true))
        }
        StoreError::Rejected { message, .. } | StoreError::TooLarge { what: message, .. } => {
            Some(ErrorInfo::new("DispatchFailed", message.clone(), false))
        }
        StoreError::Refused { what, problems } => Some(ErrorInfo::new(
            "DispatchFailed",
            format!("{what}: {}", problems.join("; ")),
            false,
        )),
        _ => None,
    }
}

/// A randomised pause before the `n`th try after a version conflict: full
/// jitter over an exponentially growing window, so racing coordinators
/// spread out instead of colliding again.
fn conflict_pause(n: usize) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let window = (1u64 << n.min(8)).clamp(1, MAX_CONFLICT_PAUSE_MS);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(n);
    std::time::Duration::from_millis(hasher.finish() % (window + 1))
}

/// The dead-letter record of a compensation that failed for good.
pub fn compensation_dead_letter(dead: &baton_core::engine::DeadLetter) -> DeadLetterRecord {
    let index = dead.index.map(|i| format!("/{i}")).unwrap_or_default();
    DeadLetterRecord {
        id: format!("comp-{}-{}{}", dead.execution_id, dead.step, index),
        kind: DeadLetterKind::Compensation,
        execution_id: Some(dead.execution_id.to_string()),
        created_at: dead.at,
        reason: format!(
            "compensation `{}` of step `{}` failed after {} attempts: {}: {}",
            dead.function, dead.step, dead.attempts, dead.error.name, dead.error.message
        ),
        body: serde_json::to_value(dead).unwrap_or(Value::Null),
    }
}

fn log_finish(record: &ExecutionRecord, commands: &[Command]) {
    for command in commands {
        // Alarms match this line (`event = "compensation.failed"`): keep its fields stable.
        if let Command::DeadLetter(dead) = command {
            tracing::error!(
                event = "compensation.failed",
                workflow.execution.id = %record.id,
                workflow.name = %record.workflow,
                workflow.step = %dead.step,
                function = %dead.function,
                attempts = dead.attempts,
                error = %dead.error.message,
                "compensation failed for good; dead-lettered for a person to resolve"
            );
        }
    }
    for command in commands {
        if let Command::Finish { status, error, .. } = command {
            match status {
                ExecutionStatus::Succeeded => {
                    info!(workflow.execution.id = %record.id, workflow.name = %record.workflow, status = status.as_str(), "execution finished")
                }
                _ => warn!(
                    workflow.execution.id = %record.id,
                    workflow.name = %record.workflow,
                    status = status.as_str(),
                    error = error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
                    "execution finished"
                ),
            }
        }
    }
}

/// Whether a task is still wanted: its unit is running that very attempt.
/// Lets a consumer drop redelivered or superseded tasks without calling the function.
pub fn task_is_current(state: &Execution, task: &baton_core::TaskRef) -> bool {
    use baton_core::engine::UnitStatus;
    if state.status.is_terminal() {
        return false;
    }
    let Some(step) = state.step(&task.step) else {
        return false;
    };
    let Some(unit) = step.units.get(task.index.unwrap_or(0) as usize) else {
        return false;
    };
    let unit = match task.kind {
        baton_core::TaskKind::Step => Some(unit),
        baton_core::TaskKind::Compensation => unit.compensation.as_deref(),
    };
    unit.is_some_and(|u| u.status == UnitStatus::Running && u.attempt == task.attempt)
}

/// Human-readable reason an event was ignored.
pub fn describe_ignored(reason: &Ignored) -> String {
    match reason {
        Ignored::NotStarted => "the execution has not started".into(),
        Ignored::AlreadyStarted => "the execution already started".into(),
        Ignored::ExecutionFinished => "the execution already finished".into(),
        Ignored::UnknownStep { step } => format!("no step `{step}`"),
        Ignored::UnknownElement { step, index } => {
            format!("step `{step}` has no element {index:?}")
        }
        Ignored::StaleAttempt { expected, got } => {
            format!("result for attempt {got}, but attempt {expected} is current")
        }
        Ignored::NotRunning => "the task is not running (a duplicate or late result)".into(),
        Ignored::StaleTimer => "the timer no longer matters".into(),
        Ignored::AlreadyStopping => "the execution is already stopping".into(),
        Ignored::SignalNotExpected => {
            "no step waits for that signal and the execution is stopping".into()
        }
        Ignored::UnknownSignal { name } => {
            format!("no step of the workflow waits for a `{name}` signal")
        }
        Ignored::DuplicateSignal { id } => {
            format!("the execution took the signal with id `{id}` already")
        }
        Ignored::TooManySignals { limit } => {
            format!("the execution took {limit} signals, as many as it may")
        }
        Ignored::NotRedrivable { status } => format!(
            "the execution {}: only a failed execution that had nothing to undo runs again",
            match status {
                baton_core::ExecutionStatus::Succeeded => "succeeded",
                baton_core::ExecutionStatus::Compensated => "compensated what it did",
                baton_core::ExecutionStatus::CompensationFailed =>
                    "is waiting on a failed compensation",
                baton_core::ExecutionStatus::Cancelled => "was cancelled",
                _ => "has not failed",
            }
        ),
        Ignored::NotCompensable { status } => format!(
            "only a succeeded child execution is undone for its parent; this one is {}",
            status.as_str()
        ),
        Ignored::NothingToResolve { step, index } => {
            let element = index.map(|i| format!(" element {i}")).unwrap_or_default();
            format!("the compensation of step `{step}`{element} has no failure left to resolve")
        }
    }
}
