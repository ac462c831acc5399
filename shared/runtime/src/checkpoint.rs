//! Checkpoints proportional to what changed: a store writes each
//! transition's history entry, and the whole state only now and then (a
//! snapshot). A load is the newest snapshot with the history after it
//! replayed through the engine, which is deterministic, so it rebuilds the
//! exact state every transition committed.
//!
//! Both the policy (when a transition carries a snapshot) and the replay
//! live here so that every backend behaves the same.

use baton_core::engine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use baton_core::{Event, Execution, Timestamp, Workflow, WorkflowDefinition};

use crate::ports::{ExecutionRecord, HistoryEntry, StoreError, StoreResult};

/// A snapshot at least every this many transitions: a load replays fewer.
pub const SNAPSHOT_EVERY: u64 = 64;

/// The most transitions between two snapshots of a big execution.
pub const SNAPSHOT_EVERY_AT_MOST: u64 = 2048;

/// Transitions between snapshots of `state`: [`SNAPSHOT_EVERY`], or one per
/// eight units for a big `for_each` (up to [`SNAPSHOT_EVERY_AT_MOST`]). A
/// snapshot's size grows with the units, so spacing snapshots out as it
/// grows keeps the bytes they write proportional to the history's, and a
/// map's cost linear in its elements.
pub fn snapshot_interval(state: &Execution) -> u64 {
    let units: usize = state.steps.iter().map(|s| s.units.len()).sum();
    (units as u64 / 8).clamp(SNAPSHOT_EVERY, SNAPSHOT_EVERY_AT_MOST)
}

/// How old the history a load of `state` replays can be: fewer than
/// [`snapshot_interval`] transitions, each less than [`SNAPSHOT_IDLE_MS`]
/// after the one before. A store that expires history items keeps each at
/// least this long.
pub fn replay_window_ms(state: &Execution) -> u64 {
    snapshot_interval(state) * SNAPSHOT_IDLE_MS
}

/// A transition after which the execution may take longer than this to
/// move again (nothing of it is due sooner) writes a snapshot.
///
/// Why: a store may expire each history entry some time after it was
/// written (DynamoDB's TTL), while a load needs the entries after the newest
/// snapshot. Between snapshots there are fewer than [`snapshot_interval`]
/// transitions, each at most this long after the one before, so those
/// entries are younger than [`replay_window_ms`] however long the execution
/// runs or waits; a store keeps history at least that long.
pub const SNAPSHOT_IDLE_MS: u64 = 20 * 60 * 1000;

/// Whether committing `record` with `history` should also write its whole
/// state: when it reaches or passes a multiple of [`snapshot_interval`]; when a
/// signal arrived, the one event that grows the state by what a client sends
/// (signals wait there for the step that takes them), so that a store's size
/// limit refuses the signal that would outgrow it; when a redrive brings a
/// failed execution back (its last snapshot was kept only for its
/// retention); and when the execution is left idle (see
/// [`SNAPSHOT_IDLE_MS`]), the start included. Not at the end:
/// a load replays fewer than
/// [`SNAPSHOT_EVERY`] entries either way, where a final snapshot would write
/// every output again.
pub fn needs_snapshot(record: &ExecutionRecord, history: &[HistoryEntry]) -> bool {
    // A transition of several events may step over the multiple.
    let first = history.first().map_or(record.version, |h| h.seq);
    let idle = || {
        !record.status().is_terminal()
            && record
                .state
                .next_wakeup()
                .is_none_or(|t| t > record.updated_at.saturating_add(SNAPSHOT_IDLE_MS))
    };
    let every = snapshot_interval(&record.state);
    first.div_ceil(every) * every <= record.version
        || history.iter().any(|h| {
            matches!(
                h.event,
                Event::SignalReceived { .. } | Event::RedriveRequested { .. }
            )
        })
        || idle()
}

/// Brings `record` forward through the history entries that follow it, in
/// order. An entry that does not follow on (a gap) is corrupt storage.
pub fn replay(
    workflow: &Workflow,
    record: &mut ExecutionRecord,
    entries: &[HistoryEntry],
) -> StoreResult<()> {
    for entry in entries {
        if entry.seq <= record.version {
            continue;
        }
        if entry.seq != record.version + 1 {
            return Err(StoreError::Corrupt {
                what: format!("the history of execution `{}`", record.id),
                message: format!("entry {} follows version {}", entry.seq, record.version),
            });
        }
        engine::apply(workflow, &mut record.state, entry.event.clone(), entry.at);
        record.version = entry.seq;
        record.updated_at = entry.at;
    }
    Ok(())
}

/// Executions whose state a process keeps; beyond it the cache starts
/// again. Enough for the executions a worker or a coordinator batch has in
/// flight; each held state costs memory (tens of KB for a small execution).
const KNOWN_STATES: usize = 128;

/// The newest records this process committed or loaded, by execution: a
/// load whose stored version matches needs no snapshot and no replay, and
/// one a little behind catches up from the history. Only a shortcut; the
/// store stays the truth.
#[derive(Default)]
pub struct KnownStates {
    records: Mutex<HashMap<String, ExecutionRecord>>,
}

impl KnownStates {
    /// Keeps `record` unless a newer one of the same execution is known.
    pub fn remember(&self, record: &ExecutionRecord) {
        let mut records = self.lock();
        if let Some(known) = records.get(&record.id)
            && known.version >= record.version
        {
            return;
        }
        if records.len() >= KNOWN_STATES && !records.contains_key(&record.id) {
            records.clear();
        }
        records.insert(record.id.clone(), record.clone());
    }

    /// The record known for `id` at `version` or before it, of the
    /// execution created at `created_at` (not an earlier one with the same
    /// id, since swept).
    pub fn at_or_before(
        &self,
        id: &str,
        created_at: Timestamp,
        version: u64,
    ) -> Option<ExecutionRecord> {
        self.lock()
            .get(id)
            .filter(|known| known.version <= version && known.created_at == created_at)
            .cloned()
    }

    /// Drops what is known of `id` (it was deleted).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ExecutionRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Workflow versions compiled for replay, by name and version (a stored
/// version never changes).
#[derive(Default)]
pub struct CompiledWorkflows {
    compiled: Mutex<HashMap<(String, u32), Arc<Workflow>>>,
}

impl CompiledWorkflows {
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Workflow>> {
        self.lock().get(&(name.to_string(), version)).cloned()
    }

    /// Compiles a stored definition; one that no longer compiles is corrupt storage.
    pub fn compile(
        &self,
        name: &str,
        version: u32,
        definition: WorkflowDefinition,
    ) -> StoreResult<Arc<Workflow>> {
        let compiled = Arc::new(Workflow::from_definition(definition).map_err(|errors| {
            StoreError::Corrupt {
                what: format!("workflow `{name}` version {version}"),
                message: errors.to_string(),
            }
        })?);
        self.lock()
            .insert((name.to_string(), version), compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, u32), Arc<Workflow>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}
