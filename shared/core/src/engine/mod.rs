//! The pure engine: one execution's state, the events that move it, and the
//! commands it asks a shell to carry out.
//!
//! [`apply`] is the whole contract: given a workflow, the current state, an
//! event and the time, it updates the state and returns commands plus the next
//! instant at which a timer is due. It reads no clock, does no I/O and draws
//! no randomness, so the same events in the same order always give the same
//! state and commands; a shell can replay history to rebuild an execution.
//!
//! Glossary: a *step* is a node of the workflow; a *unit* is one runnable
//! piece of it (a plain step has one, a `for_each` step one per element); a
//! *task* is one attempt of a unit or of its compensation, named by a
//! [`TaskRef`] that the shell echoes back in its result.

mod state;
mod time;
mod transition;

pub use state::{
    CompensationState, Execution, ExecutionStatus, StartMark, StepState, StepStatus, Unit, UnitRef,
    UnitStatus, Units,
};
pub use time::{MAX_TIMESTAMP, MAX_WAIT_AHEAD_MS, wait_until_instant, wait_until_literal};
pub use transition::{EXECUTION_TIMED_OUT, apply};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Timestamp;

/// Whether a task runs a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Step,
    Compensation,
}

/// Names one attempt of a step (or its compensation); results carry it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub step: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub attempt: u32,
    pub kind: TaskKind,
}

/// An error as the engine records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// A short machine-readable name (`Timeout`, `CardDeclined`, ...); retry filters match on it.
    pub name: String,
    pub message: String,
    /// Whether trying again could help; `false` fails the task at once.
    #[serde(default = "default_true")]
    pub retryable: bool,
    /// The attempt ended without saying what it did (its worker or function
    /// died mid-way), so its effect may have happened: like a timeout, it
    /// makes the unit's compensation run if the saga unwinds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

fn default_true() -> bool {
    true
}

impl ErrorInfo {
    pub fn new(name: impl Into<String>, message: impl Into<String>, retryable: bool) -> ErrorInfo {
        ErrorInfo {
            name: name.into(),
            message: message.into(),
            retryable,
            outcome_unknown: false,
        }
    }

    /// The same error, saying the attempt may have had its effect (see [`ErrorInfo::outcome_unknown`]).
    pub fn with_outcome_unknown(mut self) -> ErrorInfo {
        self.outcome_unknown = true;
        self
    }
}

/// What happened, fed to [`apply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Started {
        input: Value,
        /// This execution's timeout, overriding the workflow's `timeout`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// The step of another execution this one runs for (a child of a
        /// `workflow:` step): told how this one ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    TaskSucceeded {
        task: TaskRef,
        output: Value,
    },
    TaskFailed {
        task: TaskRef,
        error: ErrorInfo,
    },
    TaskTimedOut {
        task: TaskRef,
    },
    TimerFired {
        timer: TimerId,
    },
    SignalReceived {
        name: String,
        payload: Value,
        /// Names this signal: a repeat with the same id (a client's retry)
        /// changes nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    CancelRequested {
        #[serde(default)]
        reason: Option<String>,
    },
    /// A person put one of the execution's dead letters back (`baton dlq
    /// redrive`): a task went back on its queue, or a compensation was run
    /// again and succeeded. Applied after the execution finished too, so its
    /// history keeps the trace, and its status follows once nothing is left
    /// unresolved.
    DeadLetterRedriven {
        dead_letter: DeadLetterRef,
    },
    /// A person resolved one of the execution's dead letters by hand and
    /// dropped it (`baton dlq discard`).
    DeadLetterDiscarded {
        dead_letter: DeadLetterRef,
    },
    /// The parent of this (succeeded) child execution is undoing the step
    /// that ran it: undo what this execution did with its compensations,
    /// then answer the parent's compensation `task` with how that went.
    CompensationRequested {
        task: TaskRef,
    },
    /// Run a failed execution again from where it failed: its failed and
    /// unfinished steps get fresh attempts under the same idempotency keys;
    /// what succeeded stays done.
    RedriveRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// Names a dead letter of an execution, for the events that resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRef {
    /// The dead letter's id in the store.
    pub id: String,
    pub kind: DeadLetterKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// What was dead-lettered, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// A compensation that failed for good ([`Command::DeadLetter`]).
    Compensation,
    /// A task or timer the shell could not deliver or apply.
    Task,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Compensation => "compensation",
            DeadLetterKind::Task => "task",
        }
    }
}

/// What a durable timer is for; the engine checks on firing that it still matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// An attempt's deadline.
    Timeout,
    /// The end of a retry backoff.
    Retry,
    /// The end of a `wait` or `wait_until`.
    Wait,
    /// The end of a `wait_for` signal's patience.
    SignalTimeout,
    /// The execution's own deadline (its `timeout`); names no step.
    ExecutionTimeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerId {
    pub kind: TimerKind,
    pub task_kind: TaskKind,
    pub step: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The attempt this timer concerns (for `Retry`, the attempt it starts).
    pub attempt: u32,
}

impl TimerId {
    /// A stable text form, used by shells as a primary key so a timer is stored once.
    pub fn key(&self) -> String {
        let kind = match self.kind {
            TimerKind::Timeout => "timeout",
            TimerKind::Retry => "retry",
            TimerKind::Wait => "wait",
            TimerKind::SignalTimeout => "signal-timeout",
            TimerKind::ExecutionTimeout => "execution-timeout",
        };
        let task = match self.task_kind {
            TaskKind::Step => "step",
            TaskKind::Compensation => "comp",
        };
        match self.index {
            Some(i) => format!("{kind}/{task}/{}/{i}/{}", self.step, self.attempt),
            None => format!("{kind}/{task}/{}/-/{}", self.step, self.attempt),
        }
    }
}

/// Asks the shell to run one attempt of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub execution_id: Arc<str>,
    pub workflow: Arc<str>,
    pub task: TaskRef,
    pub function: Arc<str>,
    pub input: Value,
    /// Same on every attempt and redelivery of this unit.
    pub idempotency_key: String,
    pub timeout_ms: u64,
    pub deadline: Timestamp,
}

/// Asks the shell to start a child execution: one attempt of a unit of a
/// `workflow:` step. Starting it again changes nothing (the id is fixed by
/// the parent, step, element and attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStart {
    /// The child's id.
    pub execution_id: Arc<str>,
    pub workflow: Arc<str>,
    /// `None`: the workflow's newest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    pub parent: ParentRef,
}

/// The attempt of a parent's step a child execution runs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub execution_id: Arc<str>,
    pub task: TaskRef,
    /// 1 for a child of a top-level execution, 2 for its child, ...
    pub depth: u32,
}

/// A compensation that failed for good, with what a person needs to resolve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub execution_id: Arc<str>,
    pub workflow: Arc<str>,
    pub step: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub function: Arc<str>,
    pub input: Value,
    pub idempotency_key: String,
    pub error: ErrorInfo,
    pub attempts: u32,
    pub at: Timestamp,
    /// The compensation was undoing a step whose outcome is unknown (see
    /// [`LifecycleEvent::outcome_unknown`]): the step may never have had an effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Dispatch(Dispatch),
    /// Start a child execution (see [`ChildStart`]).
    StartChild(ChildStart),
    /// Apply `event` to another execution: a child's result to its parent,
    /// a parent's cancel or compensation request to its child.
    SendEvent {
        execution_id: Arc<str>,
        event: Box<Event>,
        /// Applied to this execution instead when the other one does not
        /// exist (its records expired, it never started), so nothing waits
        /// for an answer that cannot come.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undeliverable: Option<Box<Event>>,
    },
    StartTimer {
        timer: TimerId,
        fire_at: Timestamp,
    },
    Emit(LifecycleEvent),
    DeadLetter(DeadLetter),
    Finish {
        status: ExecutionStatus,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "state::present"
        )]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
}

/// Lifecycle event names, as published (`step.started`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LifecycleKind {
    #[serde(rename = "execution.started")]
    ExecutionStarted,
    #[serde(rename = "execution.succeeded")]
    ExecutionSucceeded,
    #[serde(rename = "execution.failed")]
    ExecutionFailed,
    #[serde(rename = "execution.compensated")]
    ExecutionCompensated,
    #[serde(rename = "execution.compensation_failed")]
    ExecutionCompensationFailed,
    #[serde(rename = "execution.cancelled")]
    ExecutionCancelled,
    #[serde(rename = "step.started")]
    StepStarted,
    #[serde(rename = "step.succeeded")]
    StepSucceeded,
    #[serde(rename = "step.failed")]
    StepFailed,
    #[serde(rename = "step.retrying")]
    StepRetrying,
    #[serde(rename = "step.skipped")]
    StepSkipped,
    #[serde(rename = "step.waiting")]
    StepWaiting,
    #[serde(rename = "compensation.started")]
    CompensationStarted,
    #[serde(rename = "compensation.succeeded")]
    CompensationSucceeded,
    #[serde(rename = "compensation.retrying")]
    CompensationRetrying,
    #[serde(rename = "compensation.failed")]
    CompensationFailed,
}

impl LifecycleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleKind::ExecutionStarted => "execution.started",
            LifecycleKind::ExecutionSucceeded => "execution.succeeded",
            LifecycleKind::ExecutionFailed => "execution.failed",
            LifecycleKind::ExecutionCompensated => "execution.compensated",
            LifecycleKind::ExecutionCompensationFailed => "execution.compensation_failed",
            LifecycleKind::ExecutionCancelled => "execution.cancelled",
            LifecycleKind::StepStarted => "step.started",
            LifecycleKind::StepSucceeded => "step.succeeded",
            LifecycleKind::StepFailed => "step.failed",
            LifecycleKind::StepRetrying => "step.retrying",
            LifecycleKind::StepSkipped => "step.skipped",
            LifecycleKind::StepWaiting => "step.waiting",
            LifecycleKind::CompensationStarted => "compensation.started",
            LifecycleKind::CompensationSucceeded => "compensation.succeeded",
            LifecycleKind::CompensationRetrying => "compensation.retrying",
            LifecycleKind::CompensationFailed => "compensation.failed",
        }
    }
}

/// Which lifecycle events a deployment publishes. Every event published to
/// EventBridge is billed, so high-volume workflows can publish less.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventDetail {
    /// Every event (the default).
    #[default]
    All,
    /// Everything but `step.started` and `step.waiting`: how each step and
    /// compensation ended, and the execution's start and end.
    Outcomes,
    /// The execution's start and end, and every failure (`step.failed`,
    /// `compensation.failed`).
    Executions,
    /// Nothing.
    None,
}

impl EventDetail {
    pub const NAMES: [&'static str; 4] = ["all", "outcomes", "executions", "none"];

    pub fn parse(text: &str) -> Option<EventDetail> {
        match text.trim() {
            "all" => Some(EventDetail::All),
            "outcomes" => Some(EventDetail::Outcomes),
            "executions" => Some(EventDetail::Executions),
            "none" => Some(EventDetail::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventDetail::All => "all",
            EventDetail::Outcomes => "outcomes",
            EventDetail::Executions => "executions",
            EventDetail::None => "none",
        }
    }

    pub fn publishes(self, kind: LifecycleKind) -> bool {
        use LifecycleKind as K;
        match self {
            EventDetail::All => true,
            EventDetail::Outcomes => !matches!(kind, K::StepStarted | K::StepWaiting),
            EventDetail::Executions => matches!(
                kind,
                K::ExecutionStarted
                    | K::ExecutionSucceeded
                    | K::ExecutionFailed
                    | K::ExecutionCompensated
                    | K::ExecutionCompensationFailed
                    | K::ExecutionCancelled
                    | K::StepFailed
                    | K::CompensationFailed
            ),
            EventDetail::None => false,
        }
    }
}

/// One lifecycle event (the seed's step:start / step:complete / step:error, and more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub kind: LifecycleKind,
    pub execution_id: Arc<str>,
    pub workflow: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// For `*.retrying`: how long until the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// For `compensation.*`: the step never reported a result (an attempt
    /// timed out, or its worker died), so it may or may not have had its
    /// effect; the compensation runs in case it did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

/// Why an event changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Ignored {
    NotStarted,
    AlreadyStarted,
    ExecutionFinished,
    UnknownStep {
        step: String,
    },
    UnknownElement {
        step: String,
        index: Option<u32>,
    },
    /// A result for an attempt other than the current one.
    StaleAttempt {
        expected: u32,
        got: u32,
    },
    /// The task is not running: a duplicate result, or one that came after it was settled.
    NotRunning,
    /// The timer's purpose has passed (the attempt finished, the wait ended).
    StaleTimer,
    /// Cancel asked while the execution is already stopping.
    AlreadyStopping,
    /// A signal nobody waits for, arriving while the execution is stopping.
    SignalNotExpected,
    /// A signal no step of the workflow waits for.
    UnknownSignal {
        name: String,
    },
    /// A signal whose id this execution took already.
    DuplicateSignal {
        id: String,
    },
    /// Only a succeeded child execution is undone at its parent's request;
    /// one that did not succeed undid itself already.
    NotCompensable {
        status: ExecutionStatus,
    },
    /// The execution took as many signals as it may.
    TooManySignals {
        limit: u32,
    },
    /// Only a failed execution (one that had nothing to undo) runs again:
    /// one that succeeded is done, and one that compensated undid what its
    /// failed steps would build on.
    NotRedrivable {
        status: ExecutionStatus,
    },
    /// A dead letter's compensation that is not failed and unresolved (it was
    /// resolved already, or it never failed for good).
    NothingToResolve {
        step: String,
        index: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Ignored(Ignored),
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub outcome: Outcome,
    pub commands: Vec<Command>,
    /// The earliest instant at which a timer of this execution is due, if any.
    pub next_wakeup: Option<Timestamp>,
}

impl Transition {
    pub fn is_applied(&self) -> bool {
        self.outcome == Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::{EventDetail, LifecycleKind};

    #[test]
    fn each_detail_level_publishes_a_subset_of_the_one_above() {
        let kinds = [
            LifecycleKind::ExecutionStarted,
            LifecycleKind::ExecutionSucceeded,
            LifecycleKind::ExecutionCompensationFailed,
            LifecycleKind::StepStarted,
            LifecycleKind::StepSucceeded,
            LifecycleKind::StepFailed,
            LifecycleKind::StepWaiting,
            LifecycleKind::CompensationFailed,
        ];
        let published = |level: EventDetail| -> Vec<LifecycleKind> {
            kinds.into_iter().filter(|k| level.publishes(*k)).collect()
        };
        assert_eq!(published(EventDetail::All), kinds);
        assert_eq!(
            published(EventDetail::Outcomes),
            [
                LifecycleKind::ExecutionStarted,
                LifecycleKind::ExecutionSucceeded,
                LifecycleKind::ExecutionCompensationFailed,
                LifecycleKind::StepSucceeded,
                LifecycleKind::StepFailed,
                LifecycleKind::CompensationFailed,
            ]
        );
        assert_eq!(
            published(EventDetail::Executions),
            [
                LifecycleKind::ExecutionStarted,
                LifecycleKind::ExecutionSucceeded,
                LifecycleKind::ExecutionCompensationFailed,
                LifecycleKind::StepFailed,
                LifecycleKind::CompensationFailed,
            ]
        );
        assert!(published(EventDetail::None).is_empty());
        for name in EventDetail::NAMES {
            assert_eq!(EventDetail::parse(name).map(|d| d.as_str()), Some(name));
        }
        assert_eq!(EventDetail::parse("everything"), None);
    }
}
