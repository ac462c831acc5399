//! Checkpoints proportional to what changed: a store writes each
//! transition's history entry, and the whole state only now and then (a
//! snapshot). A load is the newest snapshot with the history after it
//! replayed through the engine, which is deterministic, so it rebuilds the
//! exact state every transition committed.
//!
//! Both the policy (when a transition carries a snapshot) and the replay
//! live here so that every backend behaves the same.

use baton_core::engine;
use baton_core::{Event, Workflow};

use crate::ports::{ExecutionRecord, HistoryEntry, StoreError, StoreResult};

/// A snapshot at least every this many transitions: a load replays fewer.
pub const SNAPSHOT_EVERY: u64 = 64;

/// Whether committing `record` with `history` should also write its whole
/// state: every [`SNAPSHOT_EVERY`] versions; when the execution has ended
/// (its final state is then read without any replay); and when a signal
/// arrived, the one event that grows the state by what a client sends
/// (signals wait there for the step that takes them), so that a store's
/// size limit refuses the signal that would outgrow it.
pub fn needs_snapshot(record: &ExecutionRecord, history: &[HistoryEntry]) -> bool {
    record.version.is_multiple_of(SNAPSHOT_EVERY)
        || record.status().is_terminal()
        || history
            .iter()
            .any(|h| matches!(h.event, Event::SignalReceived { .. }))
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
