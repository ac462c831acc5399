//! Schedules on the embedded backend: the worker starts the executions of
//! the deployed workflows' schedules when they come due.
//!
//! A row per (workflow, schedule) in the `schedules` table holds the last
//! instant the schedule moved through. For each due instant a worker starts
//! an execution under the id derived from workflow, schedule and instant (a
//! start with an id that exists creates nothing), then moves the row forward
//! with a compare-and-set on the instant it read. Any number of workers, in
//! one process or many, so start each instant once: one that loses the race
//! reads the row again, and one that dies between the start and the move
//! leaves a start that the next one repeats harmlessly.
//!
//! - A schedule seen for the first time starts from now: nothing in the past fires.
//! - After a pause, the schedule's `catch_up` policy picks which missed instants run.
//! - With `overlap: skip`, an instant whose previous execution of the same
//!   schedule has not finished is passed over, logged and counted in the row.
//! - A disabled or removed schedule loses its row, so enabling it again
//!   starts from then rather than catching up on the time it was off.
//!
//! The schedules are looked at about once a second per database, not on
//! every round of every worker: `schedule_checks` holds the time of the last
//! look, and a worker takes the next one only when it is due.

use std::collections::HashSet;

use baton_core::Timestamp;
use baton_core::schedule::{self, Overlap, Schedule};
use baton_runtime::ports::{ExecutionStore, StoreError, StoreResult, WorkflowStore};
use baton_runtime::{Coordinator, CoordinatorError};
use rusqlite::{OptionalExtension, params};
use tracing::{debug, error, info, warn};

use crate::store::SqliteBackend;

/// How often, at most, the schedules of one database are looked at.
pub const CHECK_INTERVAL_MS: u64 = 1_000;

/// How many times a schedule is read again after losing a race in one look.
const MAX_RACES: usize = 8;

/// The first pause after losing a race, doubled on each further loss (with jitter).
const RACE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(5);

/// What one look at the schedules did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// Executions this look created.
    pub started: Vec<String>,
    /// Executions not started because the schedule's previous one was still going.
    pub skipped: Vec<String>,
}

/// A schedule's row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    last_fired: Timestamp,
    last_execution: Option<String>,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The worker's hook: looks at the schedules if no worker on this database
/// has in the last [`CHECK_INTERVAL_MS`]. Returns how many executions it
/// started; a failure is logged and left for the next look.
pub async fn tick(coordinator: &Coordinator<SqliteBackend>) -> usize {
    let now = coordinator.now();
    let result = match claim_check(coordinator.backend(), now).await {
        Ok(true) => fire_due(coordinator, now).await,
        Ok(false) => return 0,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(fired) => fired.started.len(),
        Err(e) => {
            warn!(error = %e, "schedules not checked; trying again on a later round");
            0
        }
    }
}

/// Whether this worker takes the look due at `now`.
async fn claim_check(backend: &SqliteBackend, now: Timestamp) -> StoreResult<bool> {
    let recent = move |last: Option<i64>| {
        last.is_some_and(|last| {
            let last = last as Timestamp;
            // A clock behind the last look (another process's) takes it anyway.
            now >= last && now < last + CHECK_INTERVAL_MS
        })
    };
    let read = |conn: &rusqlite::Connection| {
        conn.query_row(
            "SELECT checked_at FROM schedule_checks WHERE id = 1",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(unavailable)
    };
    // A plain read first: most rounds stop here without taking the write lock.
    if recent(backend.read(read).await?) {
        return Ok(false);
    }
    backend
        .write(move |tx| {
            if recent(read(tx)?) {
                return Ok(false);
            }
            tx.execute(
                "INSERT OR REPLACE INTO schedule_checks (id, checked_at) VALUES (1, ?1)",
                [now as i64],
            )
            .map_err(unavailable)?;
            Ok(true)
        })
        .await
}

/// Starts what the enabled schedules of every deployed workflow's latest
/// version have due at `now`, and forgets the rows of schedules that are
/// gone or disabled.
pub async fn fire_due(
    coordinator: &Coordinator<SqliteBackend>,
    now: Timestamp,
) -> Result<Fired, CoordinatorError> {
    let backend = coordinator.backend();
    let mut fired = Fired::default();
    let mut active: HashSet<(String, String)> = HashSet::new();
    for stored in backend.list_workflows().await? {
        if stored.definition.schedules.is_empty() {
            continue;
        }
        let (version, workflow) = match coordinator
            .workflow(&stored.name, Some(stored.version))
            .await
        {
            Ok(found) => found,
            Err(e) => {
                warn!(workflow.name = %stored.name, error = %e, "schedules of this workflow not run");
                continue;
            }
        };
        for schedule in workflow.schedules.iter().filter(|s| s.enabled) {
            active.insert((stored.name.clone(), schedule.name.to_string()));
            fire_schedule(
                coordinator,
                &stored.name,
                version,
                schedule,
                now,
                &mut fired,
            )
            .await?;
        }
    }
    forget_inactive(backend, active).await?;
    Ok(fired)
}

async fn fire_schedule(
    coordinator: &Coordinator<SqliteBackend>,
    workflow: &str,
    version: u32,
    schedule: &Schedule,
    now: Timestamp,
    fired: &mut Fired,
) -> Result<(), CoordinatorError> {
    let backend = coordinator.backend();
    let name = &*schedule.name;
    'race: for race in 0..MAX_RACES {
        if race > 0 {
            // Another worker moved the schedule first: let it get ahead
            // rather than race it again at once.
            tokio::time::sleep(crate::worker::backoff(race as u32, RACE_BACKOFF)).await;
        }
        let Some(position) = load_position(backend, workflow, name).await? else {
            // First sight: from now on.
            insert_position(backend, workflow, name, now).await?;
            debug!(workflow.name = %workflow, schedule = %name, "schedule seen for the first time");
            return Ok(());
        };
        let due = schedule.due(position.last_fired, now);
        let Some(through) = due.through else {
            return Ok(());
        };
        if due.dropped {
            info!(
                workflow.name = %workflow,
                schedule = %name,
                catch_up = ?schedule.catch_up,
                through = %schedule::scheduled_time(through),
                "missed instants dropped by the catch-up policy"
            );
        }
        let mut current = position;
        for instant in due.fire {
            let id = schedule.execution_id(workflow, instant);
            if schedule.overlap == Overlap::Skip
                && let Some(previous) = &current.last_execution
                && previous != &id
                && still_running(coordinator, previous).await?
            {
                info!(
                    workflow.name = %workflow,
                    schedule = %name,
                    workflow.execution.id = %id,
                    previous = %previous,
                    "scheduled execution skipped: the previous one is still going"
                );
                let next = Position {
                    last_fired: instant,
                    last_execution: current.last_execution.clone(),
                };
                if !advance(backend, workflow, name, &current, &next, true, now).await? {
                    continue 'race;
                }
                fired.skipped.push(id);
                current = next;
                continue;
            }
            match coordinator
                .start(workflow, Some(version), &id, schedule.input.clone())
                .await
            {
                Ok(started) if started.created => {
                    info!(
                        workflow.name = %workflow,
                        schedule = %name,
                        workflow.execution.id = %id,
                        "scheduled execution started"
                    );
                    fired.started.push(id.clone());
                }
                Ok(_) => {}
                // Leave the instant for the next look.
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    error!(workflow.name = %workflow, schedule = %name, workflow.execution.id = %id, error = %e, "scheduled execution cannot start; passing over it")
                }
            }
            let next = Position {
                last_fired: instant,
                last_execution: Some(id),
            };
            if !advance(backend, workflow, name, &current, &next, false, now).await? {
                continue 'race;
            }
            current = next;
        }
        // Instants the policy dropped are passed over too.
        if current.last_fired < through {
            let next = Position {
                last_fired: through,
                last_execution: current.last_execution.clone(),
            };
            if !advance(backend, workflow, name, &current, &next, false, now).await? {
                continue 'race;
            }
        }
        return Ok(());
    }
    debug!(workflow.name = %workflow, schedule = %name, "other workers keep moving this schedule; leaving it to them");
    Ok(())
}

async fn still_running(
    coordinator: &Coordinator<SqliteBackend>,
    id: &str,
) -> Result<bool, CoordinatorError> {
    Ok(coordinator
        .backend()
        .load(id)
        .await?
        .is_some_and(|record| !record.status().is_terminal()))
}

async fn load_position(
    backend: &SqliteBackend,
    workflow: &str,
    schedule: &str,
) -> StoreResult<Option<Position>> {
    let (workflow, schedule) = (workflow.to_string(), schedule.to_string());
    backend.read(move |conn| {
        conn.query_row(
            "SELECT last_fired, last_execution FROM schedules WHERE workflow = ?1 AND schedule = ?2",
            params![workflow, schedule],
            |r| {
                Ok(Position {
                    last_fired: r.get::<_, i64>(0)? as Timestamp,
                    last_execution: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(unavailable)
    })
    .await
}

async fn insert_position(
    backend: &SqliteBackend,
    workflow: &str,
    schedule: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let (workflow, schedule) = (workflow.to_string(), schedule.to_string());
    backend.write(move |tx| {
        tx.execute(
            "INSERT OR IGNORE INTO schedules (workflow, schedule, last_fired, updated_at) VALUES (?1, ?2, ?3, ?3)",
            params![workflow, schedule, now as i64],
        )
        .map_err(unavailable)?;
        Ok(())
    })
    .await
}

/// Moves a schedule from `from` to `to` if nobody moved it since it was read.
async fn advance(
    backend: &SqliteBackend,
    workflow: &str,
    schedule: &str,
    from: &Position,
    to: &Position,
    skipped: bool,
    now: Timestamp,
) -> StoreResult<bool> {
    let (workflow, schedule) = (workflow.to_string(), schedule.to_string());
    let (from, to) = (from.clone(), to.clone());
    backend.write(move |tx| {
        tx.execute(
            "UPDATE schedules SET last_fired = ?1, last_execution = ?2, skipped = skipped + ?3, updated_at = ?4
             WHERE workflow = ?5 AND schedule = ?6 AND last_fired = ?7",
            params![
                to.last_fired as i64,
                to.last_execution,
                i64::from(skipped),
                now as i64,
                workflow,
                schedule,
                from.last_fired as i64
            ],
        )
        .map(|changed| changed == 1)
        .map_err(unavailable)
    })
    .await
}

async fn forget_inactive(
    backend: &SqliteBackend,
    active: HashSet<(String, String)>,
) -> StoreResult<()> {
    let rows: Vec<(String, String)> = backend
        .read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT workflow, schedule FROM schedules")
                .map_err(unavailable)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)
        })
        .await?;
    let gone: Vec<(String, String)> = rows
        .into_iter()
        .filter(|row| !active.contains(row))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    backend
        .write(move |tx| {
            for (workflow, schedule) in gone {
                tx.execute(
                    "DELETE FROM schedules WHERE workflow = ?1 AND schedule = ?2",
                    params![workflow, schedule],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
}

/// A schedule's position as stored: the last instant it moved through, the
/// last execution it started and how many instants overlap skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub workflow: String,
    pub schedule: String,
    pub last_fired: Timestamp,
    pub last_execution: Option<String>,
    pub skipped: u64,
}

/// Every stored schedule position, for status displays and tests. Reads on the calling thread.
pub fn positions(backend: &SqliteBackend) -> StoreResult<Vec<ScheduleState>> {
    backend.read_blocking(|conn| {
        let mut stmt = conn
            .prepare_cached(
                "SELECT workflow, schedule, last_fired, last_execution, skipped FROM schedules ORDER BY workflow, schedule",
            )
            .map_err(unavailable)?;
        stmt.query_map([], |r| {
            Ok(ScheduleState {
                workflow: r.get(0)?,
                schedule: r.get(1)?,
                last_fired: r.get::<_, i64>(2)? as Timestamp,
                last_execution: r.get(3)?,
                skipped: r.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)
    })
}
