//! The checkpointed state of one execution.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Deref;
use std::sync::Arc;

use imbl::{OrdSet, Vector};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ErrorInfo, ParentRef, TaskKind, TaskRef};
use crate::Timestamp;
use crate::workflow::Workflow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Created, `Started` not yet applied.
    Pending,
    Running,
    /// A step failed or cancel was asked: in-flight results are collected,
    /// then succeeded steps are undone in reverse order.
    Compensating,
    Succeeded,
    /// Failed with nothing to undo.
    Failed,
    /// Failed, and every compensation succeeded (or, having failed for good,
    /// was redriven or resolved by hand).
    Compensated,
    /// At least one compensation failed for good and was dead-lettered, and
    /// not every such dead letter has been resolved (redriven or discarded).
    CompensationFailed,
    /// Cancelled, and every compensation (if any) succeeded.
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 8] = [
        ExecutionStatus::Pending,
        ExecutionStatus::Running,
        ExecutionStatus::Compensating,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Compensated,
        ExecutionStatus::CompensationFailed,
        ExecutionStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            ExecutionStatus::Pending | ExecutionStatus::Running | ExecutionStatus::Compensating
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Compensating => "compensating",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Compensated => "compensated",
            ExecutionStatus::CompensationFailed => "compensation_failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutionStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    /// Paused on `wait`, `wait_until` or `wait_for`.
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    /// Never finished because the execution stopped.
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    Pending,
    Running,
    /// Waiting for a retry timer.
    BackingOff,
    Succeeded,
    Failed,
    Cancelled,
}

/// Progress of one runnable piece of work (or of its compensation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub status: UnitStatus,
    /// The current (or last) attempt, 1-based; 0 before the first. Attempts
    /// count on across the iterations of a `repeat` step.
    pub attempt: u32,
    /// A `repeat` step's current iteration, 0-based, and the attempt the
    /// current run of attempts follows (a new iteration's, or a redrive's):
    /// retries are counted from there.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub iteration: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub iteration_after: u32,
    /// Running: the attempt's deadline. Backing off: when the next attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Timestamp>,
    /// The element's output (for `for_each` elements; a plain step's is in
    /// [`StepState::output`]). Shared, so that copying a unit does not copy it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Arc<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Box<Unit>>,
    /// For a unit with a compensation: an attempt ended without a result (it
    /// timed out, or its worker died), so its effect may have happened. Unless
    /// a later attempt succeeds, the unit is compensated if the saga unwinds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
    /// For a unit with a compensation: where its current attempt started in
    /// the saga (kept from the first attempt whose outcome is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<StartMark>,
    /// For a compensation that failed for good: a person resolved it by hand
    /// and discarded its dead letter, so it no longer counts as unresolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolved: bool,
}

impl Unit {
    pub(crate) fn new() -> Unit {
        Unit {
            status: UnitStatus::Pending,
            attempt: 0,
            iteration: 0,
            iteration_after: 0,
            due: None,
            output: None,
            error: None,
            compensation: None,
            outcome_unknown: false,
            started: None,
            resolved: false,
        }
    }
}

/// Where an attempt started among the saga's completions, so that a unit
/// whose outcome is unknown is undone in order with the units that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StartMark {
    /// How many units had succeeded ([`Execution::completed`]) when it started.
    pub after: u32,
    /// Its number among the attempts of compensable units started ([`Execution::attempts_started`]).
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub name: Arc<str>,
    pub status: StepStatus,
    /// One for a plain step, one per element for `for_each`, none for waits.
    #[serde(default, skip_serializing_if = "Units::is_empty")]
    pub units: Units,
    /// The list a `for_each` step iterates over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vector<Value>>,
    /// Next `for_each` element to start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_item: u32,
    /// Shared, so that cloning the execution does not copy it (a `for_each`
    /// step's output holds every element's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Arc<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// When a wait ends (or a `wait_for` gives up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Timestamp>,
}

/// Reads an optional value that is there, `null` included, as `Some`: an
/// output that is `null` reads back as it was written (a missing one is `None`).
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One unit of one step, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnitRef {
    pub step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationState {
    /// Units to undo, in the order they are undone: newest first, a unit that
    /// succeeded placed by when it succeeded, one whose outcome is unknown by
    /// when its attempt started.
    pub queue: Vector<UnitRef>,
    /// Position in `queue` of the compensation running now.
    pub position: u32,
    pub any_failed: bool,
}

/// Everything the engine knows about one execution; checkpointed after every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: Arc<str>,
    pub workflow: Arc<str>,
    pub status: ExecutionStatus,
    /// Shared, so that cloning the execution, as a shell does for every
    /// event, does not copy it (it often holds a `for_each` list).
    pub input: Arc<Value>,
    pub steps: Vec<StepState>,
    /// Succeeded units that have a compensation, in completion order.
    #[serde(default, skip_serializing_if = "Vector::is_empty")]
    pub completed: Vector<UnitRef>,
    /// Attempts of units with a compensation started so far (see [`StartMark`]).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub attempts_started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationState>,
    /// Why the execution stopped (the first failure, or the cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub output: Option<Value>,
    /// Signals that arrived before any step waited for them, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, VecDeque<Value>>,
    /// Signals taken so far, and the ids of those that had one, so a repeat
    /// is recognised; both bounded by [`crate::limits::MAX_SIGNALS`].
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub signals_taken: u32,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub signal_ids: BTreeSet<String>,
    #[serde(default)]
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When the execution times out (its `timeout`, or the start's), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// For a child execution: the parent step's attempt it runs for, told how it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// For a succeeded child its parent asked to undo: the parent's
    /// compensation task, told how the undoing ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_for: Option<TaskRef>,
}

impl Execution {
    /// A new execution, before its `Started` event.
    pub fn new(workflow: &Workflow, id: impl Into<Arc<str>>) -> Execution {
        Execution {
            id: id.into(),
            workflow: workflow.name.clone(),
            status: ExecutionStatus::Pending,
            input: Arc::new(Value::Null),
            steps: workflow
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name.clone(),
                    status: StepStatus::Pending,
                    units: Units::default(),
                    items: None,
                    next_item: 0,
                    output: None,
                    error: None,
                    wake_at: None,
                })
                .collect(),
            completed: Vector::new(),
            attempts_started: 0,
            compensation: None,
            failure: None,
            cancel_requested: false,
            output: None,
            signals: BTreeMap::new(),
            signals_taken: 0,
            signal_ids: BTreeSet::new(),
            started_at: 0,
            finished_at: None,
            deadline: None,
            parent: None,
            undone_for: None,
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| &*s.name == name)
    }

    /// The earliest instant a timer of this execution is due.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        if self.status.is_terminal() {
            return None;
        }
        let mut earliest: Option<Timestamp> = None;
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        for step in &self.steps {
            if step.status == StepStatus::Waiting {
                consider(step.wake_at);
            }
            consider(step.units.next_due());
        }
        earliest
    }
}

/// The units of a step, with what the engine asks of them on every event
/// (how many succeeded, how many are in flight, which timer is due first)
/// kept up to date by each change, so that an event costs the same however
/// many elements a `for_each` has.
///
/// The units are a persistent vector and the timers a persistent set: an
/// execution is cloned for every event it takes, and these clones share
/// them instead of copying them. Stored as the plain list of units; the
/// counts are derived from it, rebuilt when it is read, and not compared.
#[derive(Debug, Clone, Default)]
pub struct Units {
    list: Vector<Unit>,
    succeeded: usize,
    failed: usize,
    running: usize,
    /// Running or backing off: what counts against `max_concurrency`.
    active: usize,
    /// The deadline or retry instant of each unit and compensation running
    /// or backing off, with its index: the first is the step's next timer.
    due: OrdSet<(Timestamp, u32, TaskKind)>,
}

/// What of a unit the counts of [`Units`] depend on.
#[derive(Clone, Copy, PartialEq)]
struct Tallied {
    status: UnitStatus,
    due: Option<Timestamp>,
    compensation: Option<(UnitStatus, Option<Timestamp>)>,
}

impl Tallied {
    fn of(unit: &Unit) -> Tallied {
        Tallied {
            status: unit.status,
            due: unit.due,
            compensation: unit.compensation.as_deref().map(|c| (c.status, c.due)),
        }
    }
}

fn in_flight(status: UnitStatus) -> bool {
    matches!(status, UnitStatus::Running | UnitStatus::BackingOff)
}

impl Units {
    /// `n` units not started yet.
    pub(crate) fn pending(n: usize) -> Units {
        // Units not started count nowhere and have no timer.
        Units {
            list: std::iter::repeat_n(Unit::new(), n).collect(),
            ..Units::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many units succeeded.
    pub fn succeeded(&self) -> usize {
        self.succeeded
    }

    /// How many units failed for good.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// How many units are running an attempt.
    pub fn running(&self) -> usize {
        self.running
    }

    /// How many units are running an attempt or waiting to retry.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The earliest deadline or retry instant of a unit or compensation in flight.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.get_min().map(|(at, _, _)| *at)
    }

    /// Whether the counts match the units (they always should).
    pub fn is_consistent(&self) -> bool {
        let rebuilt = Units::from(self.list.clone());
        (
            rebuilt.succeeded,
            rebuilt.failed,
            rebuilt.running,
            rebuilt.active,
            &rebuilt.due,
        ) == (
            self.succeeded,
            self.failed,
            self.running,
            self.active,
            &self.due,
        )
    }

    /// Changes unit `u`. Every change of a unit goes through here, so the
    /// counts follow whatever `change` does.
    ///
    /// # Panics
    /// If there is no unit `u`.
    pub(crate) fn update<R>(&mut self, u: usize, change: impl FnOnce(&mut Unit) -> R) -> R {
        let unit = self.list.get_mut(u).expect("the unit exists");
        let before = Tallied::of(unit);
        let result = change(unit);
        let after = Tallied::of(unit);
        if before != after {
            self.count(u, before, false);
            self.count(u, after, true);
        }
        result
    }

    fn count(&mut self, u: usize, unit: Tallied, add: bool) {
        let index = u32::try_from(u).expect("fewer than 2^32 units");
        let tally = |n: &mut usize| {
            *n = if add { *n + 1 } else { *n - 1 };
        };
        match unit.status {
            UnitStatus::Succeeded => tally(&mut self.succeeded),
            UnitStatus::Failed => tally(&mut self.failed),
            UnitStatus::Running => tally(&mut self.running),
            _ => {}
        }
        let mut timers = Vec::with_capacity(2);
        if in_flight(unit.status) {
            tally(&mut self.active);
            timers.extend(unit.due.map(|at| (at, index, TaskKind::Step)));
        }
        if let Some((status, Some(at))) = unit.compensation
            && in_flight(status)
        {
            timers.push((at, index, TaskKind::Compensation));
        }
        for timer in timers {
            if add {
                self.due.insert(timer);
            } else {
                self.due.remove(&timer);
            }
        }
    }
}

impl From<Vector<Unit>> for Units {
    fn from(list: Vector<Unit>) -> Units {
        let tallies: Vec<Tallied> = list.iter().map(Tallied::of).collect();
        let mut units = Units {
            list,
            ..Units::default()
        };
        for (u, tallied) in tallies.into_iter().enumerate() {
            units.count(u, tallied, true);
        }
        units
    }
}

impl FromIterator<Unit> for Units {
    fn from_iter<I: IntoIterator<Item = Unit>>(iter: I) -> Units {
        Units::from(iter.into_iter().collect::<Vector<Unit>>())
    }
}

/// Read access to the units as a vector (`len`, `iter`, `get`, indexing);
/// changes go through [`Units::update`].
impl Deref for Units {
    type Target = Vector<Unit>;

    fn deref(&self) -> &Vector<Unit> {
        &self.list
    }
}

impl<'a> IntoIterator for &'a Units {
    type Item = &'a Unit;
    type IntoIter = imbl::vector::Iter<'a, Unit, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// The counts are derived from the units, so only the units are compared.
impl PartialEq for Units {
    fn eq(&self, other: &Units) -> bool {
        self.list == other.list
    }
}

impl Serialize for Units {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Units, D::Error> {
        Vector::<Unit>::deserialize(deserializer).map(Units::from)
    }
}
