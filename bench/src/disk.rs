//! The disk's durable-commit rate: one-row SQLite transactions per second in
//! the journal modes the benchmarks use, so every figure can be read against
//! what the disk allowed at the time.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CommitRates {
    /// WAL, `synchronous=FULL`: Baton's embedded default.
    pub wal_full: f64,
    /// WAL, `synchronous=NORMAL`: survives a process crash, not a power loss.
    pub wal_normal: f64,
    /// Rollback journal, `synchronous=FULL`: SQLite's default (DBOS's).
    pub rollback_full: f64,
}

impl CommitRates {
    pub fn print(&self) {
        println!(
            "disk durable-commit rate (one-row SQLite transactions/s): WAL+FULL {:.0}, WAL+NORMAL {:.0}, rollback+FULL {:.0}",
            self.wal_full, self.wal_normal, self.rollback_full
        );
    }
}

fn rate(dir: &Path, journal: &str, synchronous: &str, budget: Duration) -> anyhow::Result<f64> {
    let path = dir.join(format!("commit-rate-{journal}-{synchronous}.db"));
    let conn = Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", journal)?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
    let payload = "x".repeat(100);
    let start = Instant::now();
    let mut commits = 0u64;
    while start.elapsed() < budget {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute("INSERT INTO t (v) VALUES (?1)", [&payload])?;
        conn.execute_batch("COMMIT")?;
        commits += 1;
    }
    Ok(commits as f64 / start.elapsed().as_secs_f64())
}

/// Measures each mode for about `seconds` in a scratch directory under `base`.
pub fn commit_rates(base: &Path, seconds: f64) -> anyhow::Result<CommitRates> {
    std::fs::create_dir_all(base)?;
    let dir = tempfile::tempdir_in(base)?;
    let budget = Duration::from_secs_f64(seconds);
    Ok(CommitRates {
        wal_full: rate(dir.path(), "WAL", "FULL", budget)?,
        wal_normal: rate(dir.path(), "WAL", "NORMAL", budget)?,
        rollback_full: rate(dir.path(), "DELETE", "FULL", budget)?,
    })
}
