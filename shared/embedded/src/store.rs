//! The backend ports on one SQLite file.
//!
//! A transition is written in one `BEGIN IMMEDIATE` transaction: the
//! versioned update of the execution, its history row, and the rows its
//! commands produce (tasks, timers, events, dead letters), so a process
//! killed at any moment leaves either all of a transition or none of it.
//! Commands that act on other executions (starting a child, sending an
//! event) cannot be carried out inside that transaction: they are written
//! to the `outbox` table with it, returned to the coordinator to deliver
//! once committed, and cleared when delivered. A process killed in between
//! leaves them there for a worker to deliver (see [`crate::worker`]).
//! Transitions waiting at the same moment share a transaction (see
//! [`crate::group`]); reads use other connections, so they do not wait for
//! the writer's disk syncs.
//!
//! No SQLite call runs on a thread of the async runtime: writes go to the
//! writer's thread and reads to Tokio's blocking threads, so a database that
//! is busy (another process holding the write lock) or slow to sync parks
//! those threads, never the tasks of the runtime. An error that a retry may
//! fix (busy, I/O) is [`StoreError::Unavailable`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::engine::{Dispatch, TaskKind, TimerKind};
use baton_core::{
    Command, Event, ExecutionStatus, LifecycleEvent, TaskRef, TimerId, Timestamp,
    WorkflowDefinition,
};
use baton_runtime::checkpoint;
use baton_runtime::coordinator::compensation_dead_letter;
use baton_runtime::ports::{
    Backend, Created, DeadLetterKind, DeadLetterRecord, DeadLetterStore, EventSink, ExecutionPage,
    ExecutionRecord, ExecutionStore, ExecutionSummary, HistoryEntry, LeasedTask, ListQuery,
    OutboxEntry, ScheduledTimer, StoreError, StoreResult, StoredWorkflow, TaskDispatcher,
    TaskQueue, TimerService, WorkflowStore,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::checkpoints::Checkpoints;
use crate::group::Writer;
use crate::local::LocalQueue;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    -- The newest snapshot of the state, as of version `state_version`; the
    -- history after it rebuilds the rest (see baton_runtime::checkpoint).
    state TEXT NOT NULL,
    state_version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- How long it is kept once finished; when it finished, the time it may go.
    retention_ms INTEGER NOT NULL DEFAULT 2592000000,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status, created_at);
CREATE INDEX IF NOT EXISTS executions_by_created ON executions (created_at, id);
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow, created_at);
CREATE TABLE IF NOT EXISTS history (
    execution_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    execution_id TEXT NOT NULL,
    function TEXT NOT NULL,
    body TEXT NOT NULL,
    available_at INTEGER NOT NULL,
    lease_until INTEGER,
    visibility_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_availability ON tasks (available_at);
CREATE TABLE IF NOT EXISTS timers (
    execution_id TEXT NOT NULL,
    timer_key TEXT NOT NULL,
    timer TEXT NOT NULL,
    fire_at INTEGER NOT NULL,
    PRIMARY KEY (execution_id, timer_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (fire_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_execution ON events (execution_id, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    execution_id TEXT,
    created_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    workflow TEXT NOT NULL,
    schedule TEXT NOT NULL,
    last_fired INTEGER NOT NULL,
    last_execution TEXT,
    skipped INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workflow, schedule)
) WITHOUT ROWID;
-- Commands of a transition that act on other executions (start a child,
-- send an event), kept until delivered: `seq` is the history entry of the
-- transition that produced them, `position` their index among its commands.
CREATE TABLE IF NOT EXISTS outbox (
    execution_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    position INTEGER NOT NULL,
    command TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_checks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
"#;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Receives after which a task moves to the dead letters (the redrive policy's maxReceiveCount).
    pub max_receives: u32,
    /// Largest JSON payload accepted.
    pub payload_limit: usize,
    /// `FULL` syncs every commit to disk before it returns; `NORMAL` survives
    /// process crashes but may lose the last commits on power loss.
    pub synchronous_full: bool,
    /// How long a received task stays invisible to other workers (the SQS
    /// visibility timeout). A worker running a task extends its lease while
    /// it works, so this only bounds how soon a crashed worker's task returns.
    pub visibility_ms: u64,
    /// How long a statement waits for another connection's write lock before
    /// it fails as busy ([`StoreError::Unavailable`], which callers retry).
    pub busy_timeout_ms: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_receives: 5,
            payload_limit: 256 * 1024,
            synchronous_full: true,
            visibility_ms: 30_000,
            busy_timeout_ms: 30_000,
        }
    }
}

/// Reads at once on blocking threads; more wait (asynchronously) for one to finish.
const READERS: usize = 4;

/// Connections for reads, each used by one thread at a time.
struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    path: PathBuf,
    busy_timeout: Duration,
}

impl ReaderPool {
    /// Runs `f` on an idle connection (opening one if none is idle), on the calling thread.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_connection(&self.path, self.busy_timeout)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_connection(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(busy_timeout).map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Runs `f` on one of Tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "a database read did not finish: {e}"
        ))),
    }
}

pub struct SqliteBackend {
    readers: Arc<ReaderPool>,
    read_permits: Arc<Semaphore>,
    writer: Writer,
    /// Workers of this process that lease the tasks its transitions create.
    local: Mutex<Vec<Arc<LocalQueue>>>,
    checkpoints: Arc<Checkpoints>,
    /// Commits refused because the stored version had moved: contention
    /// that batching per execution is meant to remove, counted so that a
    /// benchmark can report it from the store rather than guess it.
    version_conflicts: AtomicU64,
    path: PathBuf,
    options: SqliteOptions,
}

/// Brings a database made by an older Baton to this schema.
fn migrate(conn: &Connection) -> StoreResult<()> {
    // Before snapshots: the state is current.
    add_column(
        conn,
        "state_version",
        "ALTER TABLE executions ADD COLUMN state_version INTEGER NOT NULL DEFAULT 0;
         UPDATE executions SET state_version = version;",
    )?;
    // Before retention: finished executions are kept the default 30 days from now.
    add_column(
        conn,
        "expires_at",
        "ALTER TABLE executions ADD COLUMN retention_ms INTEGER NOT NULL DEFAULT 2592000000;
         ALTER TABLE executions ADD COLUMN expires_at INTEGER;
         UPDATE executions SET expires_at = updated_at + retention_ms
          WHERE status NOT IN ('pending', 'running', 'compensating');",
    )?;
    // After the column exists, old file or new.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS executions_by_expiry ON executions (expires_at) WHERE expires_at IS NOT NULL;",
    )
    .map_err(unavailable)
}

fn add_column(conn: &Connection, column: &str, statements: &str) -> StoreResult<()> {
    let has: bool = conn
        .query_row(
            "SELECT 1 FROM pragma_table_info('executions') WHERE name = ?1",
            [column],
            |_| Ok(true),
        )
        .optional()
        .map_err(unavailable)?
        .unwrap_or(false);
    if !has {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {statements} COMMIT;"))
            .map_err(unavailable)?;
    }
    Ok(())
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("engine types always serialise to JSON")
}

fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// A receipt is `row id:receive count`: it owns the task only for that receive.
fn parse_receipt(receipt: &str) -> StoreResult<(i64, i64)> {
    receipt
        .split_once(':')
        .and_then(|(id, count)| Some((id.parse::<i64>().ok()?, count.parse::<i64>().ok()?)))
        .ok_or_else(|| StoreError::Corrupt {
            what: "task receipt".into(),
            message: receipt.to_string(),
        })
}

fn task_dedup_key(task: &Dispatch) -> String {
    task_ref_dedup_key(&task.execution_id, &task.task)
}

/// One row per attempt: sending the same attempt twice queues it once.
fn task_ref_dedup_key(execution_id: &str, task: &TaskRef) -> String {
    let kind = match task.kind {
        TaskKind::Step => "step",
        TaskKind::Compensation => "comp",
    };
    let index = task
        .index
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{execution_id}/{}/{index}/{kind}/{}",
        task.step, task.attempt
    )
}

/// What one transition writes, serialised before it reaches the writer so
/// the writer spends its time on SQL alone.
struct TransitionRows {
    execution_id: String,
    now: i64,
    visibility_ms: i64,
    /// `(seq, at, event)`.
    history: Vec<(i64, i64, String)>,
    /// What the applied event consumed: the task whose result it records
    /// (its ack) with that attempt's timeout timer, or the timer that fired.
    /// Removed in the same transaction, so a crash never leaves them to be
    /// delivered again.
    done_tasks: Vec<String>,
    done_timers: Vec<String>,
    tasks: Vec<TaskRow>,
    /// `(key, timer, fire_at)`.
    timers: Vec<(String, String, i64)>,
    /// `(execution id, kind, at, body)`.
    events: Vec<(String, &'static str, i64, String)>,
    dead_letters: Vec<DeadLetterRecord>,
    /// Commands delivered after the commit: `(seq, position, command)`.
    outbox: Vec<(i64, i64, String)>,
}

/// Places reserved on local workers for a transition's tasks, released
/// when the transition is done with them (a task handed over holds its own).
struct Reserved(Vec<Arc<LocalQueue>>);

impl Drop for Reserved {
    fn drop(&mut self) {
        for queue in &self.0 {
            queue.release(1);
        }
    }
}

struct TaskRow {
    dedup_key: String,
    execution_id: String,
    function: String,
    body: String,
    /// A local worker with a place reserved for this task, which it leases in the same transaction.
    claim: Option<(Arc<LocalQueue>, Dispatch)>,
}

impl TransitionRows {
    /// Writes the rows after the execution's own; returns the tasks leased to local workers.
    fn write(
        self,
        tx: &Transaction<'_>,
    ) -> StoreResult<Vec<(Arc<LocalQueue>, LeasedTask, Timestamp)>> {
        let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> StoreResult<usize> {
            tx.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute(params))
                .map_err(unavailable)
        };
        let id = &self.execution_id;
        for (seq, at, event) in &self.history {
            run(
                "INSERT INTO history (execution_id, seq, at, event) VALUES (?1, ?2, ?3, ?4)",
                params![id, seq, at, event],
            )?;
        }
        for key in &self.done_tasks {
            run("DELETE FROM tasks WHERE dedup_key = ?1", params![key])?;
        }
        for key in &self.done_timers {
            run(
                "DELETE FROM timers WHERE execution_id = ?1 AND timer_key = ?2",
                params![id, key],
            )?;
        }
        // A task or timer that a later event of this same transition consumes
        // (a result for an attempt an earlier event dispatched) is not
        // written: applied one by one, that event would delete the row the
        // earlier one wrote, and a task leased here would run for nothing.
        let mut claimed = Vec::new();
        for task in self.tasks {
            if self.done_tasks.contains(&task.dedup_key) {
                continue;
            }
            // A task leased here is written as a receive would leave it.
            let (lease_until, receive_count) = match task.claim {
                Some(_) => (Some(self.now + self.visibility_ms), 1),
                None => (None, 0),
            };
            let inserted = run(
                "INSERT OR IGNORE INTO tasks (dedup_key, execution_id, function, body, available_at, lease_until, visibility_ms, receive_count, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?5)",
                params![
                    task.dedup_key,
                    task.execution_id,
                    task.function,
                    task.body,
                    self.now,
                    lease_until,
                    self.visibility_ms,
                    receive_count
                ],
            )?;
            // A copy already queued (the same attempt sent twice) is left as it is.
            if let (Some((queue, dispatch)), 1) = (task.claim, inserted) {
                claimed.push((
                    queue,
                    LeasedTask {
                        receipt: format!("{}:1", tx.last_insert_rowid()),
                        receive_count: 1,
                        task: dispatch,
                    },
                    (self.now + self.visibility_ms) as Timestamp,
                ));
            }
        }
        for (key, timer, fire_at) in &self.timers {
            if self.done_timers.contains(key) {
                continue;
            }
            run(
                "INSERT OR REPLACE INTO timers (execution_id, timer_key, timer, fire_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, key, timer, fire_at],
            )?;
        }
        for (execution_id, kind, at, body) in &self.events {
            run(
                "INSERT INTO events (execution_id, kind, at, body) VALUES (?1, ?2, ?3, ?4)",
                params![execution_id, kind, at, body],
            )?;
        }
        for record in &self.dead_letters {
            SqliteBackend::insert_dead_letter(tx, record)?;
        }
        for (seq, position, command) in &self.outbox {
            run(
                "INSERT OR REPLACE INTO outbox (execution_id, seq, position, command, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq, position, command, self.now],
            )?;
        }
        Ok(claimed)
    }
}

impl SqliteBackend {
    pub fn open(path: &Path, options: SqliteOptions) -> StoreResult<SqliteBackend> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let busy_timeout = Duration::from_millis(options.busy_timeout_ms);
        let conn = open_connection(path, busy_timeout)?;
        // Switching to WAL needs a moment of exclusive access, which several
        // processes opening a new file at once can be refused despite the busy timeout.
        let mut tries = 0;
        while let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
            tries += 1;
            if tries > 100 {
                return Err(unavailable(e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let synchronous = if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(unavailable)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(unavailable)?;
        migrate(&conn)?;
        let reader = open_connection(path, busy_timeout)?;
        let checkpointer = open_connection(path, busy_timeout)?;
        checkpointer
            .pragma_update(None, "synchronous", synchronous)
            .map_err(unavailable)?;
        Ok(SqliteBackend {
            writer: Writer::start(conn, checkpointer)?,
            readers: Arc::new(ReaderPool {
                idle: Mutex::new(vec![reader]),
                path: path.to_path_buf(),
                busy_timeout,
            }),
            read_permits: Arc::new(Semaphore::new(READERS)),
            local: Mutex::new(Vec::new()),
            checkpoints: Arc::default(),
            version_conflicts: AtomicU64::new(0),
            path: path.to_path_buf(),
            options,
        })
    }

    /// Commits this backend refused with [`StoreError::VersionConflict`] since it was opened.
    pub fn version_conflicts(&self) -> u64 {
        self.version_conflicts.load(Ordering::Relaxed)
    }

    /// Lets a worker of this process lease the tasks this process's
    /// transitions create, in the transaction that creates them, up to
    /// `capacity` tasks at a time (see [`LocalQueue`]).
    pub fn attach_local(&self, functions: Vec<String>, capacity: usize) -> Arc<LocalQueue> {
        let queue = Arc::new(LocalQueue::new(functions, capacity));
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.retain(|q| !q.is_closed());
        local.push(queue.clone());
        queue
    }

    fn local_queues(&self) -> Vec<Arc<LocalQueue>> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|q| !q.is_closed())
            .cloned()
            .collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &SqliteOptions {
        &self.options
    }

    /// Runs `f` in a write transaction on the writer's thread (perhaps
    /// sharing the transaction with other writes, see [`crate::group`]).
    /// `f` must fail with nothing but [`StoreError::Unavailable`] once it
    /// has written something.
    pub(crate) fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.write(f).await
    }

    /// Runs `f` on a read connection on one of Tokio's blocking threads.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .read_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the database readers have stopped".into()))?;
        let readers = self.readers.clone();
        blocking(move || {
            let _permit = permit;
            readers.with(f)
        })
        .await
    }

    /// Runs `f` on a read connection on the calling thread, for callers
    /// outside the async runtime (status displays, tests). A read waits for
    /// no writer, but it does disk I/O: async code uses [`Self::read`].
    pub(crate) fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.readers.with(f)
    }

    /// Writes a transition's rows through the group writer, leasing the
    /// tasks it creates to local workers with room; returns once committed.
    async fn write_transition<R: Send + 'static, T: Send + 'static>(
        &self,
        rows: TransitionRows,
        head: impl FnOnce(&Transaction<'_>) -> StoreResult<Result<R, T>> + Send + 'static,
    ) -> StoreResult<Result<R, T>> {
        // Given back however this ends, even if the caller stops waiting:
        // a task leased but never handed over just waits out its lease.
        let _reserved = Reserved(
            rows.tasks
                .iter()
                .filter_map(|t| t.claim.as_ref().map(|(q, _)| q.clone()))
                .collect(),
        );
        let written = self
            .writer
            .write(move |tx| match head(tx)? {
                Ok(head) => rows.write(tx).map(|claimed| Ok((head, claimed))),
                Err(other) => Ok(Err(other)),
            })
            .await;
        match written {
            Ok(Ok((head, claimed))) => {
                for (queue, task, lease_until) in claimed {
                    queue.accept(task, lease_until);
                }
                Ok(Ok(head))
            }
            Ok(Err(other)) => Ok(Err(other)),
            Err(e) => Err(e),
        }
    }

    fn check_size(&self, what: &str, text: &str) -> StoreResult<()> {
        if text.len() > self.options.payload_limit * 4 {
            return Err(StoreError::TooLarge {
                what: what.to_string(),
                size: text.len(),
                limit: self.options.payload_limit * 4,
            });
        }
        Ok(())
    }

    fn insert_task(
        tx: &Transaction<'_>,
        task: &Dispatch,
        now: Timestamp,
        visibility_ms: u64,
    ) -> StoreResult<()> {
        tx.execute(
            "INSERT OR IGNORE INTO tasks (dedup_key, execution_id, function, body, available_at, visibility_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
            params![
                task_dedup_key(task),
                &*task.execution_id,
                &*task.function,
                to_json(task),
                now as i64,
                visibility_ms as i64,
            ],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    fn insert_timer(
        tx: &Transaction<'_>,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
    ) -> StoreResult<()> {
        tx.execute(
            "INSERT OR REPLACE INTO timers (execution_id, timer_key, timer, fire_at) VALUES (?1, ?2, ?3, ?4)",
            params![execution_id, timer.key(), to_json(timer), fire_at as i64],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    fn insert_event(tx: &Transaction<'_>, event: &LifecycleEvent) -> StoreResult<()> {
        tx.execute(
            "INSERT INTO events (execution_id, kind, at, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                &*event.execution_id,
                event.kind.as_str(),
                event.at as i64,
                to_json(event)
            ],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    fn insert_dead_letter(tx: &Transaction<'_>, record: &DeadLetterRecord) -> StoreResult<()> {
        tx.execute(
            "INSERT OR REPLACE INTO dead_letters (id, kind, execution_id, created_at, reason, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.id,
                record.kind.as_str(),
                record.execution_id,
                record.created_at as i64,
                record.reason,
                to_json(&record.body)
            ],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    /// Keeps a received task invisible for another visibility timeout from
    /// `now`, as a consumer working on an SQS message extends its visibility.
    /// Returns false if the lease was lost (expired and received by another,
    /// or the task is gone); an error says nothing about the lease.
    pub async fn extend_lease(&self, receipt: &str, now: Timestamp) -> StoreResult<bool> {
        let (id, count) = parse_receipt(receipt)?;
        let until = now + self.options.visibility_ms;
        self.write(move |tx| {
            tx.execute(
                "UPDATE tasks SET lease_until = ?1 WHERE id = ?2 AND receive_count = ?3",
                params![until as i64, id, count],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    /// A place on a local worker that runs `function`, if one has room.
    fn reserve(local: &[Arc<LocalQueue>], function: &str) -> Option<Arc<LocalQueue>> {
        let serving = || local.iter().filter(|q| q.serves(function));
        let found = serving().find(|q| q.try_reserve()).cloned();
        if found.is_none() {
            serving().for_each(|q| q.left_behind());
        }
        found
    }

    /// The rows of a transition of `record`, reserving places on local
    /// workers for the tasks it creates, and the outbox entries it leaves
    /// to deliver once committed.
    fn transition_rows(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        commands: &[Command],
    ) -> (TransitionRows, Vec<OutboxEntry>) {
        let execution_id = record.id.as_str();
        let now = record.updated_at;
        // The transition's outbox is filed under the last history entry it wrote.
        let seq = history.last().map_or(record.version, |entry| entry.seq);
        let mut outbox = Vec::new();
        let local = self.local_queues();
        let mut rows = TransitionRows {
            execution_id: execution_id.to_string(),
            now: now as i64,
            visibility_ms: self.options.visibility_ms as i64,
            history: Vec::new(),
            done_tasks: Vec::new(),
            done_timers: Vec::new(),
            tasks: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
            dead_letters: Vec::new(),
            outbox: Vec::new(),
        };
        for entry in history {
            rows.history
                .push((entry.seq as i64, entry.at as i64, to_json(&entry.event)));
            match &entry.event {
                Event::TaskSucceeded { task, .. }
                | Event::TaskFailed { task, .. }
                | Event::TaskTimedOut { task } => {
                    rows.done_tasks.push(task_ref_dedup_key(execution_id, task));
                    let timeout = TimerId {
                        kind: TimerKind::Timeout,
                        task_kind: task.kind,
                        step: task.step.clone(),
                        index: task.index,
                        attempt: task.attempt,
                    };
                    rows.done_timers.push(timeout.key());
                }
                Event::TimerFired { timer } => rows.done_timers.push(timer.key()),
                _ => {}
            }
        }
        for (position, command) in commands.iter().enumerate() {
            match command {
                Command::Dispatch(task) => rows.tasks.push(TaskRow {
                    dedup_key: task_dedup_key(task),
                    execution_id: task.execution_id.to_string(),
                    function: task.function.to_string(),
                    body: to_json(task),
                    claim: Self::reserve(&local, &task.function).map(|q| (q, task.clone())),
                }),
                Command::StartTimer { timer, fire_at } => {
                    rows.timers
                        .push((timer.key(), to_json(timer), *fire_at as i64))
                }
                Command::Emit(event) => rows.events.push((
                    event.execution_id.to_string(),
                    event.kind.as_str(),
                    event.at as i64,
                    to_json(event),
                )),
                Command::DeadLetter(dead) => rows.dead_letters.push(compensation_dead_letter(dead)),
                // Other executions are written by their own transitions:
                // delivered by the coordinator once this one has committed.
                Command::StartChild(_) | Command::SendEvent { .. } => {
                    rows.outbox
                        .push((seq as i64, position as i64, to_json(command)));
                    outbox.push(OutboxEntry {
                        execution_id: execution_id.to_string(),
                        seq,
                        position: position as u32,
                        command: command.clone(),
                    });
                }
                Command::Finish { .. } => {}
            }
        }
        (rows, outbox)
    }

    /// Timers due at `now`, earliest first. A timer row that does not
    /// decode is moved to the dead letters (kind `malformed`) instead.
    pub async fn due_timers(
        &self,
        now: Timestamp,
        max: usize,
    ) -> StoreResult<Vec<(String, TimerId)>> {
        let rows = self
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT execution_id, timer_key, timer FROM timers WHERE fire_at <= ?1 ORDER BY fire_at LIMIT ?2")
                    .map_err(unavailable)?;
                stmt.query_map(params![now as i64, max as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)
            })
            .await?;
        let mut due = Vec::with_capacity(rows.len());
        let mut malformed = Vec::new();
        for (execution_id, key, text) in rows {
            match serde_json::from_str::<TimerId>(&text) {
                Ok(timer) => due.push((execution_id, timer)),
                Err(e) => malformed.push((execution_id, key, text, e.to_string())),
            }
        }
        if !malformed.is_empty() {
            self.write(move |tx| {
                for (execution_id, key, text, error) in malformed {
                    // Only the row read: a timer written since under the same key stays.
                    let removed = tx
                        .execute(
                            "DELETE FROM timers WHERE execution_id = ?1 AND timer_key = ?2 AND timer = ?3",
                            params![execution_id, key, text],
                        )
                        .map_err(unavailable)?;
                    if removed == 0 {
                        continue;
                    }
                    Self::insert_dead_letter(
                        tx,
                        &DeadLetterRecord {
                            id: format!("timer-{execution_id}-{key}"),
                            kind: DeadLetterKind::Malformed,
                            reason: format!(
                                "timer `{key}` of execution `{execution_id}` does not decode: {error}"
                            ),
                            execution_id: Some(execution_id),
                            created_at: now,
                            body: serde_json::json!({ "timer": text }),
                        },
                    )?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(due)
    }

    /// Executions with outbox entries written at or before `before`, the
    /// oldest first, at most `max`: left by a process that died after
    /// committing them (one still delivering has had its time).
    pub async fn stale_outbox(&self, before: Timestamp, max: usize) -> StoreResult<Vec<String>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT execution_id, MIN(created_at) AS oldest FROM outbox WHERE created_at <= ?1
                 GROUP BY execution_id ORDER BY oldest, execution_id LIMIT ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![before as i64, max as i64], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(unavailable)
        })
        .await
    }

    /// Earliest pending timer, for the worker's sleep.
    pub async fn next_timer_at(&self) -> StoreResult<Option<Timestamp>> {
        self.read(|conn| {
            conn.query_row("SELECT MIN(fire_at) FROM timers", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|t| t as Timestamp))
            .map_err(unavailable)
        })
        .await
    }

    /// Removes a timer that has done its work (its firing was applied or no longer matters).
    pub async fn delete_timer(&self, execution_id: &str, timer: &TimerId) -> StoreResult<()> {
        let execution_id = execution_id.to_string();
        let key = timer.key();
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM timers WHERE execution_id = ?1 AND timer_key = ?2",
                params![execution_id, key],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    /// Moves a timer whose firing cannot be applied, and never will be
    /// (its execution is gone, its workflow or state does not load), to the
    /// dead letters with `reason`, for a person to resolve; a redrive puts
    /// the timer back, due at once.
    pub async fn dead_letter_timer(
        &self,
        execution_id: &str,
        timer: &TimerId,
        reason: String,
        now: Timestamp,
    ) -> StoreResult<()> {
        let key = timer.key();
        let record = DeadLetterRecord {
            id: format!("timer-{execution_id}-{key}"),
            kind: DeadLetterKind::Task,
            execution_id: Some(execution_id.to_string()),
            created_at: now,
            reason,
            body: serde_json::json!({ "timer": timer }),
        };
        let execution_id = execution_id.to_string();
        self.write(move |tx| {
            let removed = tx
                .execute(
                    "DELETE FROM timers WHERE execution_id = ?1 AND timer_key = ?2",
                    params![execution_id, key],
                )
                .map_err(unavailable)?;
            // Applied or dead-lettered by another worker meanwhile: nothing to keep.
            if removed > 0 {
                Self::insert_dead_letter(tx, &record)?;
            }
            Ok(())
        })
        .await
    }

    /// Moves a received task whose result cannot be recorded, and never
    /// will be (its execution is gone, its workflow or state does not load),
    /// to the dead letters with `reason` and the result it produced, for a
    /// person to resolve; a redrive queues the task again. Does nothing and
    /// returns false if `leased`'s receipt no longer owns the task (another
    /// worker received it, and decides its fate).
    pub async fn dead_letter_task(
        &self,
        leased: &LeasedTask,
        reason: String,
        result: Option<&Event>,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (id, count) = parse_receipt(&leased.receipt)?;
        let mut body = serde_json::json!({
            "task": leased.task,
            "receive_count": leased.receive_count,
        });
        if let Some(result) = result {
            body["result"] = serde_json::to_value(result).unwrap_or(serde_json::Value::Null);
        }
        let record = DeadLetterRecord {
            id: format!("task-{id}"),
            kind: DeadLetterKind::Task,
            execution_id: Some(leased.task.execution_id.to_string()),
            created_at: now,
            reason,
            body,
        };
        self.write(move |tx| {
            let removed = tx
                .execute(
                    "DELETE FROM tasks WHERE id = ?1 AND receive_count = ?2",
                    params![id, count],
                )
                .map_err(unavailable)?;
            if removed == 0 {
                return Ok(false);
            }
            Self::insert_dead_letter(tx, &record)?;
            Ok(true)
        })
        .await
    }

    /// Lifecycle events after `after_id` (of one execution, or all), oldest
    /// first, with their row ids. Reads on the calling thread.
    pub fn events_after(
        &self,
        execution_id: Option<&str>,
        after_id: i64,
        max: usize,
    ) -> StoreResult<Vec<(i64, LifecycleEvent)>> {
        self.read_blocking(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, body FROM events WHERE id > ?1 AND (?2 IS NULL OR execution_id = ?2) ORDER BY id LIMIT ?3",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after_id, execution_id, max as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(id, body)| Ok((id, from_json("event", &body)?)))
                .collect()
        })
    }

    /// Executions whose status is not terminal. Reads on the calling thread.
    pub fn unfinished(&self) -> StoreResult<Vec<String>> {
        self.read_blocking(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id FROM executions WHERE status IN ('pending', 'running', 'compensating')")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
    }

    /// Counts of tasks waiting or leased, timers and dead letters (for
    /// status displays and tests). Reads on the calling thread.
    pub fn queue_depths(&self) -> StoreResult<(u64, u64, u64)> {
        self.read_blocking(|conn| {
            let count = |sql: &str| {
                conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
            };
            Ok((
                count("SELECT COUNT(*) FROM tasks").map_err(unavailable)?,
                count("SELECT COUNT(*) FROM timers").map_err(unavailable)?,
                count("SELECT COUNT(*) FROM dead_letters").map_err(unavailable)?,
            ))
        })
    }
}

/// The outbox entries of execution `id` written by transitions up to
/// record version `up_to`, in order.
fn outbox_rows(conn: &Connection, id: &str, up_to: u64) -> StoreResult<Vec<OutboxEntry>> {
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(
            "SELECT seq, position, command FROM outbox WHERE execution_id = ?1 AND seq <= ?2 ORDER BY seq, position",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![id, up_to], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(seq, position, command)| {
            Ok(OutboxEntry {
                execution_id: id.to_string(),
                seq: seq as u64,
                position: position as u32,
                command: from_json("outbox command", &command)?,
            })
        })
        .collect()
}

impl ExecutionStore for SqliteBackend {
    async fn create(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Created> {
        let state = to_json(&record.state);
        self.check_size("the execution state", &state)?;
        let (rows, entries) = self.transition_rows(record, history, outbox);
        let created = record.clone();
        let record = record.clone();
        let checkpoints = self.checkpoints.clone();
        let written = self
            .write_transition(rows, move |tx| {
                if let Some(existing) = checkpoints.load(tx, &record.id)? {
                    return Ok(Err(existing));
                }
                tx.prepare_cached(
                    "INSERT INTO executions (id, workflow, workflow_version, version, status, state, state_version, created_at, updated_at, retention_ms, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        record.id,
                        record.workflow,
                        record.workflow_version,
                        record.version as i64,
                        record.status().as_str(),
                        state,
                        record.created_at as i64,
                        record.updated_at as i64,
                        record.retention_ms as i64,
                        record.expires_at().map(|t| t as i64)
                    ])
                })
                .map_err(unavailable)?;
                Ok(Ok(()))
            })
            .await?;
        Ok(match written {
            Ok(()) => {
                self.checkpoints.remember(&created);
                Created::New(entries)
            }
            Err(existing) => Created::Existing(Box::new(existing)),
        })
    }

    async fn load(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let id = id.to_string();
        let checkpoints = self.checkpoints.clone();
        self.read(move |conn| {
            // One read transaction: the head, the snapshot and the history
            // seen as of the same commit.
            let tx = conn.unchecked_transaction().map_err(unavailable)?;
            let record = checkpoints.load(&tx, &id)?;
            tx.finish().map_err(unavailable)?;
            Ok(record)
        })
        .await
    }

    async fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Vec<OutboxEntry>> {
        // The whole state only now and then; the history row written with
        // every transition rebuilds it in between.
        let snapshot = match checkpoint::needs_snapshot(record, history) {
            true => {
                let state = to_json(&record.state);
                self.check_size("the execution state", &state)?;
                Some(state)
            }
            false => None,
        };
        let (rows, entries) = self.transition_rows(record, history, outbox);
        let id = record.id.clone();
        let version = record.version as i64;
        let status = record.status().as_str();
        let updated_at = record.updated_at as i64;
        let expires_at = record.expires_at().map(|t| t as i64);
        let written = self
            .write_transition::<_, std::convert::Infallible>(rows, move |tx| {
                let updated = match &snapshot {
                    Some(state) => tx
                        .prepare_cached(
                            "UPDATE executions SET version = ?1, status = ?2, state = ?3, state_version = ?1, updated_at = ?4, expires_at = ?7
                             WHERE id = ?5 AND version = ?6",
                        )
                        .and_then(|mut stmt| {
                            stmt.execute(params![version, status, state, updated_at, id, expected_version as i64, expires_at])
                        }),
                    None => tx
                        .prepare_cached(
                            "UPDATE executions SET version = ?1, status = ?2, updated_at = ?3, expires_at = ?6
                             WHERE id = ?4 AND version = ?5",
                        )
                        .and_then(|mut stmt| {
                            stmt.execute(params![version, status, updated_at, id, expected_version as i64, expires_at])
                        }),
                }
                .map_err(unavailable)?;
                if updated == 0 {
                    let exists: bool = tx
                        .query_row("SELECT 1 FROM executions WHERE id = ?1", [&id], |_| Ok(true))
                        .optional()
                        .map_err(unavailable)?
                        .unwrap_or(false);
                    return Err(if exists {
                        StoreError::VersionConflict {
                            id,
                            expected: expected_version,
                        }
                    } else {
                        StoreError::NotFound(id)
                    });
                }
                // Entries an earlier transition left undelivered go out
                // first, so a child is never told of a parent's later
                // decision (a cancel) before the start that preceded it.
                outbox_rows(tx, &id, expected_version).map(Ok)
            })
            .await;
        if let Err(StoreError::VersionConflict { .. }) = &written {
            self.version_conflicts.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut left) = written?;
        self.checkpoints.remember(record);
        left.extend(entries);
        Ok(left)
    }

    async fn pending_outbox(&self, id: &str) -> StoreResult<Vec<OutboxEntry>> {
        let id = id.to_string();
        self.read(move |conn| outbox_rows(conn, &id, u64::MAX))
            .await
    }

    async fn clear_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, i64, i64)> = entries
            .iter()
            .map(|e| (e.execution_id.clone(), e.seq as i64, i64::from(e.position)))
            .collect();
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM outbox WHERE execution_id = ?1 AND seq = ?2 AND position = ?3",
                )
                .map_err(unavailable)?;
            for (execution_id, seq, position) in &keys {
                stmt.execute(params![execution_id, seq, position])
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        let id = id.to_string();
        // Sequence numbers start at 1: everything after 0 is all of it.
        self.read(move |conn| crate::checkpoints::history_after(conn, &id, 0))
            .await
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<ExecutionPage> {
        let query = query.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, workflow, workflow_version, status, created_at, updated_at FROM executions
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)
                       AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4)
                       AND (?5 IS NULL OR (created_at, id) < (?5, ?6))
                     ORDER BY created_at DESC, id DESC LIMIT ?7",
                )
                .map_err(unavailable)?;
            let after = query.after.as_ref();
            let rows = stmt
                .query_map(
                    params![
                        query.status.map(|s| s.as_str()),
                        query.workflow,
                        query.since.map(|t| t as i64),
                        query.until.map(|t| t as i64),
                        after.map(|c| c.created_at as i64),
                        after.map(|c| c.id.as_str()),
                        // One more than asked says whether a next page exists.
                        query.limit as i64 + 1,
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                        ))
                    },
                )
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let rows = rows
                .into_iter()
                .map(|(id, workflow, wv, status, created, updated)| {
                    Ok(ExecutionSummary {
                        id,
                        workflow,
                        workflow_version: wv as u32,
                        status: ExecutionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                            what: "execution status".into(),
                            message: status.clone(),
                        })?,
                        created_at: created as Timestamp,
                        updated_at: updated as Timestamp,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(ExecutionPage::of(rows, query.limit, false))
        })
        .await
    }
}

impl WorkflowStore for SqliteBackend {
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Timestamp,
    ) -> StoreResult<u32> {
        let text = to_json(definition);
        let name = definition.name.to_string();
        self.write(move |tx| {
            let latest = tx
                .query_row(
                    "SELECT version, definition FROM workflows WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                    [&name],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            match latest {
                Some((version, stored)) if stored == text => Ok(version as u32),
                other => {
                    let version = other.map_or(1, |(v, _)| v + 1);
                    tx.execute(
                        "INSERT INTO workflows (name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![name, version, text, now as i64],
                    )
                    .map_err(unavailable)?;
                    Ok(version as u32)
                }
            }
        })
        .await
    }

    async fn get_workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StoredWorkflow>> {
        let name = name.to_string();
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT version, definition, created_at FROM workflows WHERE name = ?1 AND (?2 IS NULL OR version = ?2)
                     ORDER BY version DESC LIMIT 1",
                )
                .map_err(unavailable)?
                .query_row(params![&name, version], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })
                .optional()
                .map_err(unavailable)?;
            row.map(|(version, definition, created_at)| {
                Ok(StoredWorkflow {
                    name: name.to_string(),
                    version: version as u32,
                    definition: from_json("workflow definition", &definition)?,
                    created_at: created_at as Timestamp,
                })
            })
            .transpose()
        })
        .await
    }

    async fn list_workflows(&self) -> StoreResult<Vec<StoredWorkflow>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, MAX(version), definition, created_at FROM workflows GROUP BY name ORDER BY name",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(name, version, definition, created_at)| {
                    Ok(StoredWorkflow {
                        name,
                        version: version as u32,
                        definition: from_json("workflow definition", &definition)?,
                        created_at: created_at as Timestamp,
                    })
                })
                .collect()
        })
        .await
    }
}

impl TaskDispatcher for SqliteBackend {
    async fn send(&self, task: &Dispatch, now: Timestamp) -> StoreResult<()> {
        let task = task.clone();
        let visibility_ms = self.options.visibility_ms;
        self.write(move |tx| Self::insert_task(tx, &task, now, visibility_ms))
            .await
    }

    /// Where a function runs is each worker's `baton.toml`, not the
    /// database's: `baton run` and `baton start` check the targets they have.
    async fn check_functions(&self, _functions: &[String]) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }
}

impl TaskQueue for SqliteBackend {
    async fn receive(
        &self,
        functions: &[String],
        max: usize,
        visibility_ms: u64,
        now: Timestamp,
    ) -> StoreResult<Vec<LeasedTask>> {
        let filter = if functions.is_empty() {
            String::new()
        } else {
            let marks = vec!["?"; functions.len()].join(", ");
            format!(" AND function IN ({marks})")
        };
        let select = format!(
            "SELECT id, body, receive_count, visibility_ms FROM tasks
             WHERE available_at <= {now} AND (lease_until IS NULL OR lease_until <= {now}){filter}
             ORDER BY available_at, id LIMIT {max}"
        );
        let max_receives = self.options.max_receives;
        // Most polls find nothing: look without the write lock first.
        let functions = functions.to_vec();
        let exists = format!("SELECT EXISTS ({select})");
        let names = functions.clone();
        let any = self
            .read(move |conn| {
                conn.prepare_cached(&exists)
                    .and_then(|mut stmt| {
                        stmt.query_row(rusqlite::params_from_iter(names.iter()), |r| {
                            r.get::<_, bool>(0)
                        })
                    })
                    .map_err(unavailable)
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(move |tx| {
            let candidates = tx
                .prepare(&select)
                .map_err(unavailable)?
                .query_map(rusqlite::params_from_iter(functions.iter()), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let mut leased = Vec::new();
            for (id, body, receive_count, visibility) in candidates {
                let receive_count = receive_count as u32;
                let task: Result<Dispatch, _> = serde_json::from_str(&body);
                let dead = match &task {
                    Err(e) => Some((DeadLetterKind::Malformed, format!("task does not decode: {e}"))),
                    Ok(t) if receive_count >= max_receives => Some((
                        DeadLetterKind::Task,
                        format!(
                            "task for step `{}` of execution `{}` was received {receive_count} times without a result (limit {max_receives})",
                            t.task.step, t.execution_id
                        ),
                    )),
                    Ok(_) => None,
                };
                if let Some((kind, reason)) = dead {
                    let execution_id = task.as_ref().ok().map(|t| t.execution_id.to_string());
                    let body_value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
                    Self::insert_dead_letter(
                        tx,
                        &DeadLetterRecord {
                            id: format!("task-{id}"),
                            kind,
                            execution_id,
                            created_at: now,
                            reason,
                            body: serde_json::json!({ "task": body_value, "receive_count": receive_count }),
                        },
                    )?;
                    tx.execute("DELETE FROM tasks WHERE id = ?1", [id]).map_err(unavailable)?;
                    continue;
                }
                let Ok(task) = task else { continue };
                let lease = visibility_ms.max(visibility as u64);
                tx.execute(
                    "UPDATE tasks SET lease_until = ?1, receive_count = receive_count + 1 WHERE id = ?2",
                    params![(now + lease) as i64, id],
                )
                .map_err(unavailable)?;
                leased.push(LeasedTask {
                    receipt: format!("{id}:{}", receive_count + 1),
                    receive_count: receive_count + 1,
                    task,
                });
            }
            Ok(leased)
        })
        .await
    }

    async fn ack(&self, task: &LeasedTask) -> StoreResult<()> {
        let (id, count) = parse_receipt(&task.receipt)?;
        self.write(move |tx| {
            // A receipt from an expired lease no longer owns the task.
            tx.execute(
                "DELETE FROM tasks WHERE id = ?1 AND receive_count = ?2",
                params![id, count],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

impl TimerService for SqliteBackend {
    async fn schedule(
        &self,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
    ) -> StoreResult<()> {
        let execution_id = execution_id.to_string();
        let timer = timer.clone();
        self.write(move |tx| Self::insert_timer(tx, &execution_id, &timer, fire_at))
            .await
    }

    /// One write for all of a delivery's timers.
    async fn schedule_all(&self, timers: &[ScheduledTimer]) -> StoreResult<()> {
        let timers = timers.to_vec();
        self.write(move |tx| {
            timers
                .iter()
                .try_for_each(|t| Self::insert_timer(tx, &t.execution_id, &t.timer, t.fire_at))
        })
        .await
    }
}

impl EventSink for SqliteBackend {
    async fn publish(&self, events: &[LifecycleEvent]) -> StoreResult<()> {
        let events = events.to_vec();
        self.write(move |tx| events.iter().try_for_each(|e| Self::insert_event(tx, e)))
            .await
    }
}

impl DeadLetterStore for SqliteBackend {
    async fn put_dead_letter(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        let record = record.clone();
        self.write(move |tx| Self::insert_dead_letter(tx, &record))
            .await
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetterRecord>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, kind, execution_id, created_at, reason, body FROM dead_letters ORDER BY created_at, id")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], dead_letter_row)
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter().collect()
        })
        .await
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetterRecord>> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.prepare_cached("SELECT id, kind, execution_id, created_at, reason, body FROM dead_letters WHERE id = ?1")
                .map_err(unavailable)?
                .query_row([&id], dead_letter_row)
                .optional()
                .map_err(unavailable)?
                .transpose()
        })
        .await
    }

    async fn redrive_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let Some(record) = self.get_dead_letter(id).await? else {
            return Ok(false);
        };
        if record.kind != DeadLetterKind::Task {
            return Err(StoreError::Corrupt {
                what: format!("dead letter `{id}`"),
                message: format!(
                    "a {} dead letter is not a queued message",
                    record.kind.as_str()
                ),
            });
        }
        let corrupt = |message: String| StoreError::Corrupt {
            what: format!("dead letter `{id}`"),
            message,
        };
        // A timer that could not be applied goes back due at once; anything
        // else of this kind is a task, queued again.
        let requeue = match (record.body.get("timer"), &record.execution_id) {
            (Some(timer), Some(execution_id)) => {
                let timer: TimerId = serde_json::from_value(timer.clone())
                    .map_err(|e| corrupt(format!("holds no timer: {e}")))?;
                Requeue::Timer(execution_id.clone(), timer)
            }
            (Some(_), None) => return Err(corrupt("holds a timer but no execution".into())),
            (None, _) => Requeue::Task(
                serde_json::from_value(record.body["task"].clone())
                    .map_err(|e| corrupt(format!("holds no task: {e}")))?,
            ),
        };
        let id = id.to_string();
        let visibility_ms = self.options.visibility_ms;
        let at = record.created_at;
        self.write(move |tx| {
            match &requeue {
                Requeue::Task(task) => Self::insert_task(tx, task, at, visibility_ms)?,
                Requeue::Timer(execution_id, timer) => {
                    Self::insert_timer(tx, execution_id, timer, at)?
                }
            }
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [&id])
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn remove_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM dead_letters WHERE id = ?1", [&id])
                .map(|n| n > 0)
                .map_err(unavailable)
        })
        .await
    }
}

/// What a redriven dead letter puts back.
enum Requeue {
    Task(Dispatch),
    Timer(String, TimerId),
}

fn dead_letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<DeadLetterRecord>> {
    let kind: String = r.get(1)?;
    let body: String = r.get(5)?;
    let kind = match kind.as_str() {
        "compensation" => DeadLetterKind::Compensation,
        "task" => DeadLetterKind::Task,
        _ => DeadLetterKind::Malformed,
    };
    Ok(
        from_json("dead letter", &body).map(|body| DeadLetterRecord {
            id: r.get(0).unwrap_or_default(),
            kind,
            execution_id: r.get(2).unwrap_or_default(),
            created_at: r.get::<_, i64>(3).unwrap_or_default() as Timestamp,
            reason: r.get(4).unwrap_or_default(),
            body,
        }),
    )
}

impl Backend for SqliteBackend {
    fn payload_limit(&self) -> usize {
        self.options.payload_limit
    }
}
