//! Loading an execution from its newest snapshot and the history after it
//! (see [`baton_runtime::checkpoint`]), with the states this process
//! committed or loaded kept in memory, so that a load usually reads one
//! small row and replays nothing.
//!
//! The cache is only a shortcut: a state is used when its version is the
//! one stored, or brought forward from the history when another process
//! committed since. The database stays the truth.

use std::sync::Arc;

use baton_core::{Timestamp, Workflow, WorkflowDefinition};
use baton_runtime::checkpoint::{self, CompiledWorkflows, KnownStates};
use baton_runtime::ports::{ExecutionRecord, HistoryEntry, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Default)]
pub(crate) struct Checkpoints {
    states: KnownStates,
    workflows: CompiledWorkflows,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl Checkpoints {
    /// Drops what is known of a deleted execution.
    pub(crate) fn forget(&self, id: &str) {
        self.states.forget(id);
    }

    /// Remembers a record that was just committed.
    pub(crate) fn remember(&self, record: &ExecutionRecord) {
        self.states.remember(record);
    }

    /// The execution as its last committed transition left it.
    pub(crate) fn load(&self, conn: &Connection, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        let head = conn
            .prepare_cached(
                "SELECT workflow, workflow_version, version, state_version, created_at FROM executions WHERE id = ?1",
            )
            .map_err(unavailable)?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
            .map_err(unavailable)?;
        let Some((workflow, workflow_version, version, state_version, created_at)) = head else {
            return Ok(None);
        };
        let (version, state_version) = (version as u64, state_version as u64);
        let cached = self
            .states
            .at_or_before(id, created_at as Timestamp, version);
        let mut record = match cached {
            Some(known) if known.version == version => return Ok(Some(known)),
            // Another process committed since: catch up from here unless the
            // snapshot is nearer.
            Some(known) if known.version >= state_version => known,
            _ => self.read_snapshot(conn, id)?,
        };
        let entries = history_after(conn, id, record.version)?;
        if !entries.is_empty() {
            let compiled = self.workflow(conn, &workflow, workflow_version as u32)?;
            checkpoint::replay(&compiled, &mut record, &entries)?;
        }
        if record.version != version {
            return Err(corrupt(
                &format!("the history of execution `{id}`"),
                format!(
                    "it ends at {} but the execution is at {version}",
                    record.version
                ),
            ));
        }
        self.remember(&record);
        Ok(Some(record))
    }

    fn read_snapshot(&self, conn: &Connection, id: &str) -> StoreResult<ExecutionRecord> {
        let (workflow, workflow_version, state_version, state, created_at, updated_at, retention) = conn
            .prepare_cached(
                "SELECT workflow, workflow_version, state_version, state, created_at, updated_at, retention_ms
                 FROM executions WHERE id = ?1",
            )
            .map_err(unavailable)?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(unavailable)?;
        // `updated_at` is the head's: it is the snapshot's own when no
        // transition followed it, and replaying sets it otherwise.
        Ok(ExecutionRecord {
            id: id.to_string(),
            workflow,
            workflow_version: workflow_version as u32,
            version: state_version as u64,
            state: serde_json::from_str(&state).map_err(|e| corrupt("execution state", e))?,
            created_at: created_at as Timestamp,
            updated_at: updated_at as Timestamp,
            retention_ms: retention as u64,
        })
    }

    fn workflow(&self, conn: &Connection, name: &str, version: u32) -> StoreResult<Arc<Workflow>> {
        if let Some(compiled) = self.workflows.get(name, version) {
            return Ok(compiled);
        }
        let text: String = conn
            .prepare_cached("SELECT definition FROM workflows WHERE name = ?1 AND version = ?2")
            .map_err(unavailable)?
            .query_row(params![name, version], |r| r.get(0))
            .optional()
            .map_err(unavailable)?
            .ok_or_else(|| {
                corrupt(
                    "an execution's workflow",
                    format!("workflow `{name}` version {version} is not stored"),
                )
            })?;
        let definition: WorkflowDefinition =
            serde_json::from_str(&text).map_err(|e| corrupt("workflow definition", e))?;
        self.workflows.compile(name, version, definition)
    }
}

/// An execution's history entries after `version`, in order.
pub(crate) fn history_after(
    conn: &Connection,
    id: &str,
    version: u64,
) -> StoreResult<Vec<HistoryEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, event FROM history WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![id, version as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(seq, at, event)| {
            Ok(HistoryEntry {
                seq: seq as u64,
                at: at as Timestamp,
                event: serde_json::from_str(&event).map_err(|e| corrupt("history event", e))?,
            })
        })
        .collect()
}
