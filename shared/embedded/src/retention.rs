//! Retention: a finished execution is kept for its `retention` (the
//! workflow's, or the start's), then swept with its history, lifecycle
//! events, tasks, timers and undelivered outbox entries. Dead letters stay
//! until a person redrives or removes them. `baton gc` sweeps on demand; a
//! worker sweeps now and then.

use baton_core::Timestamp;
use baton_runtime::ports::{StoreError, StoreResult};
use rusqlite::params;
use serde::Serialize;

use crate::SqliteBackend;

/// Executions deleted per write transaction, so a sweep never holds the
/// writer for long.
pub const SWEEP_BATCH: usize = 500;

/// What a sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swept {
    pub executions: u64,
    pub history: u64,
    pub events: u64,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.executions += other.executions;
        self.history += other.history;
        self.events += other.events;
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteBackend {
    /// Deletes every execution whose retention had passed at `now`.
    pub async fn sweep_expired(&self, now: Timestamp) -> StoreResult<Swept> {
        let mut total = Swept::default();
        loop {
            let swept = self.sweep_batch(now).await?;
            total.add(swept);
            if swept.executions < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn sweep_batch(&self, now: Timestamp) -> StoreResult<Swept> {
        let (swept, ids) = self.delete_expired(now).await?;
        for id in &ids {
            self.checkpoints().forget(id);
        }
        Ok(swept)
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<(Swept, Vec<String>)> {
        self.write(move |tx| {
            let ids: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM executions WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![now as i64, SWEEP_BATCH as i64], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()
                })
                .map_err(unavailable)?;
            let mut swept = Swept::default();
            for id in &ids {
                let delete = |sql: &str| -> StoreResult<u64> {
                    tx.prepare_cached(sql)
                        .and_then(|mut stmt| stmt.execute([id]))
                        .map(|n| n as u64)
                        .map_err(unavailable)
                };
                swept.history += delete("DELETE FROM history WHERE execution_id = ?1")?;
                swept.events += delete("DELETE FROM events WHERE execution_id = ?1")?;
                delete("DELETE FROM tasks WHERE execution_id = ?1")?;
                delete("DELETE FROM timers WHERE execution_id = ?1")?;
                delete("DELETE FROM outbox WHERE execution_id = ?1")?;
                swept.executions += delete("DELETE FROM executions WHERE id = ?1")?;
            }
            Ok((swept, ids))
        })
        .await
    }
}
