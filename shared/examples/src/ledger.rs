//! The ledger: a SQLite file standing in for the outside services the order
//! saga talks to (inventory, payments, shipping, e-mail).
//!
//! It owns two tables:
//!
//! - `effects`, an append-only log of side effects. It is deliberately *not*
//!   unique on the idempotency key: the handlers deduplicate the way a real
//!   payment API does, so if deduplication ever broke, the duplicate would be
//!   a visible second row instead of a swallowed constraint error.
//! - `calls`, one row per handler invocation (including failed, replayed and
//!   crashed ones), so tests and people can see how often a function ran.
//!
//! Several processes may write the same file at once (an embedded worker, a
//! CLI, step Lambdas sharing a volume): the file is in WAL mode, waits on a
//! busy timeout, and every write is a `BEGIN IMMEDIATE` transaction so the
//! look-up and the insert of an effect can never interleave with another
//! writer's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_core::Timestamp;
use baton_runtime::step::StepContext;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// Environment variable naming the ledger file; see [`Ledger::default_path`].
pub const LEDGER_ENV: &str = "BATON_LEDGER";

/// Where the ledger lives when [`LEDGER_ENV`] is not set, relative to the
/// working directory.
pub const DEFAULT_LEDGER_PATH: &str = ".baton/ledger.db";

/// How long a writer waits for another process's transaction before giving
/// up; generous because a step that fails on a busy ledger would be retried
/// and show up as noise in the `calls` table.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS effects (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT    NOT NULL,
    function        TEXT    NOT NULL,
    execution_id    TEXT    NOT NULL,
    step            TEXT    NOT NULL,
    item_index      INTEGER,
    attempt         INTEGER NOT NULL,
    effect          TEXT    NOT NULL,
    recorded_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS effects_by_key ON effects (idempotency_key, function);
CREATE TABLE IF NOT EXISTS calls (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT    NOT NULL,
    function        TEXT    NOT NULL,
    execution_id    TEXT    NOT NULL,
    step            TEXT    NOT NULL,
    item_index      INTEGER,
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,
    error           TEXT
);
";

/// What can go wrong with the ledger file.
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("cannot create the ledger directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored effect is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed ledger row: {0}")]
    Malformed(String),
}

/// One side effect as the outside service remembers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    /// Row id: increases in the order effects were recorded.
    pub id: i64,
    pub idempotency_key: String,
    pub function: String,
    pub execution_id: String,
    pub step: String,
    /// The `for_each` element, if the step has one.
    pub index: Option<u32>,
    /// The attempt that performed the effect (a replay keeps the first one).
    pub attempt: u32,
    /// What the handler returned for it, e.g. `{"paymentId": ..., "amount": ...}`.
    pub effect: Value,
    /// Milliseconds since the Unix epoch.
    pub recorded_at: Timestamp,
}

/// How one handler invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Performed a new side effect.
    Recorded,
    /// Found the effect already done under this key and returned it.
    Replayed,
    /// Succeeded without a side effect (e.g. `validate-order`).
    Succeeded,
    /// Returned an error (injected or invalid input).
    Failed,
    /// Was about to abort the process on a `"crash"` switch.
    Crashed,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Recorded => "recorded",
            CallOutcome::Replayed => "replayed",
            CallOutcome::Succeeded => "succeeded",
            CallOutcome::Failed => "failed",
            CallOutcome::Crashed => "crashed",
        }
    }

    fn parse(text: &str) -> Option<CallOutcome> {
        [
            CallOutcome::Recorded,
            CallOutcome::Replayed,
            CallOutcome::Succeeded,
            CallOutcome::Failed,
            CallOutcome::Crashed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One handler invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub id: i64,
    pub idempotency_key: String,
    pub function: String,
    pub execution_id: String,
    pub step: String,
    pub index: Option<u32>,
    pub attempt: u32,
    /// Milliseconds since the Unix epoch.
    pub at: Timestamp,
    pub outcome: CallOutcome,
    /// `name: message` of the error, for failed calls.
    pub error: Option<String>,
}

/// The result of [`Ledger::record_effect`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The effect now on record: the new one, or the earlier one on a replay.
    pub effect: Effect,
    /// True when an effect already existed for the key and nothing new was done.
    pub replayed: bool,
}

/// A handle on the ledger file. Share it with `Arc`; each process (or test
/// thread simulating one) opens its own.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    // rusqlite connections are not `Sync`; one connection per handle is
    // enough because SQLite serialises writers anyway.
    conn: Mutex<Connection>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, creating its parent
    /// directory too.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, LedgerError> {
        let path = path.as_ref().to_path_buf();
        create_parent(&path)?;
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching to WAL needs a moment of exclusive access; when many
        // processes open a fresh file at once it can report busy even with a
        // busy timeout, so retry it within the same time budget.
        retry_busy(|| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
        })?;
        // With WAL, NORMAL loses nothing on a process crash (only on power
        // loss), which is what the "crash" failure switch exercises.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        Ok(Ledger {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// `$BATON_LEDGER` if set and not empty, else `.baton/ledger.db`; creates
    /// the parent directory so the path can be opened right away.
    pub fn default_path() -> Result<PathBuf, LedgerError> {
        let path = path_from_env(std::env::var_os(LEDGER_ENV));
        create_parent(&path)?;
        Ok(path)
    }

    /// Opens the ledger at [`Ledger::default_path`].
    pub fn open_default() -> Result<Ledger, LedgerError> {
        Ledger::open(Ledger::default_path()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Performs `effect` for `function` under the context's idempotency key,
    /// unless an effect was already recorded for that key and function, in
    /// which case the stored one is returned unchanged (as a payment API
    /// replays the original response). Also records the call.
    pub fn record_effect(
        &self,
        function: &str,
        context: &StepContext,
        effect: &Value,
    ) -> Result<Recorded, LedgerError> {
        let mut conn = self.lock();
        // IMMEDIATE takes the write lock up front, so no other writer can
        // insert between our look-up and our insert.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let existing = tx
            .query_row(
                &format!(
                    "SELECT {EFFECT_COLUMNS} FROM effects
                     WHERE idempotency_key = ?1 AND function = ?2
                     ORDER BY id LIMIT 1"
                ),
                params![context.idempotency_key, function],
                |row| Ok(read_effect_row(row)),
            )
            .optional()?
            .transpose()?;
        let recorded = match existing {
            Some(effect) => Recorded {
                effect,
                replayed: true,
            },
            None => {
                tx.execute(
                    "INSERT INTO effects
                     (idempotency_key, function, execution_id, step, item_index, attempt, effect, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        context.idempotency_key,
                        function,
                        context.execution_id,
                        context.step,
                        context.index,
                        context.attempt,
                        serde_json::to_string(effect)?,
                        to_sql_time(now),
                    ],
                )?;
                Recorded {
                    effect: Effect {
                        id: tx.last_insert_rowid(),
                        idempotency_key: context.idempotency_key.clone(),
                        function: function.to_owned(),
                        execution_id: context.execution_id.clone(),
                        step: context.step.clone(),
                        index: context.index,
                        attempt: context.attempt,
                        effect: effect.clone(),
                        recorded_at: now,
                    },
                    replayed: false,
                }
            }
        };
        let outcome = if recorded.replayed {
            CallOutcome::Replayed
        } else {
            CallOutcome::Recorded
        };
        insert_call(&tx, function, context, outcome, None, now)?;
        tx.commit()?;
        Ok(recorded)
    }

    /// Records an invocation that performed no effect: a success of a
    /// side-effect-free handler, a failure, or an imminent crash.
    pub fn record_call(
        &self,
        function: &str,
        context: &StepContext,
        outcome: CallOutcome,
        error: Option<&str>,
    ) -> Result<(), LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_call(&tx, function, context, outcome, error, now_ms())?;
        tx.commit()?;
        Ok(())
    }

    /// Every effect row, oldest first, duplicates included.
    pub fn effects(&self) -> Result<Vec<Effect>, LedgerError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {EFFECT_COLUMNS} FROM effects ORDER BY id"))?;
        let rows = stmt.query_map([], |row| Ok(read_effect_row(row)))?;
        let mut effects = Vec::new();
        for row in rows {
            effects.push(row??);
        }
        Ok(effects)
    }

    /// How many effect rows each (idempotency key, function) has: exactly-once
    /// side effects mean every count is 1.
    pub fn effect_counts(&self) -> Result<BTreeMap<(String, String), usize>, LedgerError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT idempotency_key, function, COUNT(*) FROM effects GROUP BY idempotency_key, function",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let (key, function, count) = row?;
            let count = usize::try_from(count)
                .map_err(|_| LedgerError::Malformed(format!("negative count {count}")))?;
            counts.insert((key, function), count);
        }
        Ok(counts)
    }

    /// Every call row, oldest first.
    pub fn calls(&self) -> Result<Vec<Call>, LedgerError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, idempotency_key, function, execution_id, step, item_index, attempt, at, outcome, error
             FROM calls ORDER BY id",
        )?;
        let rows = stmt.query_map([], |row| Ok(read_call_row(row)))?;
        let mut calls = Vec::new();
        for row in rows {
            calls.push(row??);
        }
        Ok(calls)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves at worst an open transaction,
        // which rusqlite rolls back when it is dropped: the connection is fine.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const EFFECT_COLUMNS: &str =
    "id, idempotency_key, function, execution_id, step, item_index, attempt, effect, recorded_at";

fn insert_call(
    conn: &Connection,
    function: &str,
    context: &StepContext,
    outcome: CallOutcome,
    error: Option<&str>,
    at: Timestamp,
) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO calls
         (idempotency_key, function, execution_id, step, item_index, attempt, at, outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            context.idempotency_key,
            function,
            context.execution_id,
            context.step,
            context.index,
            context.attempt,
            to_sql_time(at),
            outcome.as_str(),
            error,
        ],
    )?;
    Ok(())
}

fn read_effect_row(row: &Row<'_>) -> Result<Effect, LedgerError> {
    let effect: String = row.get(7)?;
    Ok(Effect {
        id: row.get(0)?,
        idempotency_key: row.get(1)?,
        function: row.get(2)?,
        execution_id: row.get(3)?,
        step: row.get(4)?,
        index: row.get(5)?,
        attempt: row.get(6)?,
        effect: serde_json::from_str(&effect)?,
        recorded_at: from_sql_time(row.get(8)?)?,
    })
}

fn read_call_row(row: &Row<'_>) -> Result<Call, LedgerError> {
    let outcome: String = row.get(8)?;
    Ok(Call {
        id: row.get(0)?,
        idempotency_key: row.get(1)?,
        function: row.get(2)?,
        execution_id: row.get(3)?,
        step: row.get(4)?,
        index: row.get(5)?,
        attempt: row.get(6)?,
        at: from_sql_time(row.get(7)?)?,
        outcome: CallOutcome::parse(&outcome)
            .ok_or_else(|| LedgerError::Malformed(format!("unknown call outcome {outcome:?}")))?,
        error: row.get(9)?,
    })
}

fn path_from_env(value: Option<std::ffi::OsString>) -> PathBuf {
    match value {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_LEDGER_PATH),
    }
}

fn create_parent(path: &Path) -> Result<(), LedgerError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|source| LedgerError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| Timestamp::try_from(elapsed.as_millis()).unwrap_or(Timestamp::MAX))
        .unwrap_or(0)
}

fn to_sql_time(at: Timestamp) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

fn from_sql_time(at: i64) -> Result<Timestamp, LedgerError> {
    Timestamp::try_from(at).map_err(|_| LedgerError::Malformed(format!("negative timestamp {at}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_uses_the_env_value_unless_empty() {
        assert_eq!(path_from_env(None), PathBuf::from(".baton/ledger.db"));
        assert_eq!(
            path_from_env(Some("".into())),
            PathBuf::from(".baton/ledger.db")
        );
        assert_eq!(
            path_from_env(Some("/tmp/x.db".into())),
            PathBuf::from("/tmp/x.db")
        );
    }

    #[test]
    fn open_creates_missing_parent_directories() -> Result<(), LedgerError> {
        let dir = tempfile::tempdir().map_err(|source| LedgerError::CreateDir {
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = dir.path().join("a/b/ledger.db");
        let ledger = Ledger::open(&path)?;
        assert!(path.exists());
        assert_eq!(ledger.path(), path);
        assert!(ledger.effects()?.is_empty());
        Ok(())
    }
}
