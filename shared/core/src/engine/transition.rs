//! The transition function: how each event moves an execution.
//!
//! Rules worth knowing before reading:
//! - A step becomes ready when every step it `needs` is settled: succeeded,
//!   skipped, or failed with `continue_on_failure`. If *all* of its needs were
//!   skipped it is skipped too; if at least one ran, it runs (after its own
//!   `if`). So in "decide → B if x, C otherwise → D", D needs [B, C], exactly
//!   one of B and C runs, and D runs once.
//! - A failed step (or cancel) stops new work. Results of attempts already in
//!   flight are still recorded; once none is left, every succeeded unit with a
//!   compensation is undone, one at a time, in reverse completion order.
//! - A unit that never succeeded but had an attempt end without a result (it
//!   timed out, or the shell says its worker died) may have had its effect, so
//!   it is undone too, placed by when that attempt started: newest first,
//!   among the succeeded units. If its compensation's input reads the step's
//!   own output, which never came, it gets the step's input and idempotency key
//!   instead. A unit whose attempts all failed with an error is not undone.
//! - Instants are clamped to [`MAX_TIMESTAMP`](super::MAX_TIMESTAMP); a
//!   `wait_until` outside 1970 to ten years ahead fails its step.
//! - Anything that does not match the current state (an old attempt, a second
//!   result, a timer whose purpose has passed) changes nothing and says why.

use std::sync::Arc;

use imbl::Vector;
use serde_json::Value;

use super::state::StartMark;
use super::state::{
    CompensationState, Execution, ExecutionStatus, StepStatus, Unit, UnitRef, UnitStatus, Units,
};
use super::time::{later, type_name, wait_until_instant};
use super::{
    ChildStart, Command, DeadLetter, DeadLetterKind, DeadLetterRef, Dispatch, ErrorInfo, Event,
    Ignored, LifecycleEvent, LifecycleKind, Outcome, ParentRef, TaskKind, TaskRef, TimerId,
    TimerKind, Transition,
};
use crate::Timestamp;
use crate::expr::{Scope, StepLookup, StepRefs, StepView};
use crate::idempotency;
use crate::limits;
use crate::workflow::{Action, Call, MAX_CHILD_DEPTH, Workflow};

static NULL: Value = Value::Null;

/// The error of an execution that ran past its `timeout`.
pub const EXECUTION_TIMED_OUT: &str = "ExecutionTimedOut";

/// Applies one event to an execution at time `now` (milliseconds since the epoch).
pub fn apply(
    workflow: &Workflow,
    execution: &mut Execution,
    event: Event,
    now: Timestamp,
) -> Transition {
    let mut cx = Cx {
        wf: workflow,
        ex: execution,
        now,
        commands: Vec::new(),
    };
    let outcome = if cx.ex.steps.len() != workflow.steps.len() || cx.ex.workflow != workflow.name {
        Outcome::Ignored(Ignored::UnknownStep {
            step: "(state belongs to another workflow or version)".into(),
        })
    } else {
        match cx.handle(event) {
            Ok(()) => {
                cx.advance();
                Outcome::Applied
            }
            Err(ignored) => Outcome::Ignored(ignored),
        }
    };
    let next_wakeup = cx.ex.next_wakeup();
    Transition {
        outcome,
        commands: cx.commands,
        next_wakeup,
    }
}

struct Cx<'a> {
    wf: &'a Workflow,
    ex: &'a mut Execution,
    now: Timestamp,
    commands: Vec<Command>,
}

/// Read access to step outputs for expressions; `own` replaces one step's
/// output (a compensation of a `for_each` element sees that element's output).
struct View<'a> {
    wf: &'a Workflow,
    ex: &'a Execution,
    own: Option<(usize, &'a Value)>,
}

impl StepLookup for View<'_> {
    fn view(&self, name: &str) -> Option<StepView<'_>> {
        let i = self.wf.step_index(name)?;
        let state = &self.ex.steps[i];
        let output = match self.own {
            Some((j, value)) if j == i => value,
            _ => state.output.as_deref().unwrap_or(&NULL),
        };
        Some(StepView {
            status: state.status.as_str(),
            output,
        })
    }

    fn names(&self) -> Vec<String> {
        self.wf.steps.iter().map(|s| s.name.to_string()).collect()
    }
}

fn check_running(unit: &Unit, attempt: u32) -> Result<(), Ignored> {
    if unit.status != UnitStatus::Running {
        return Err(Ignored::NotRunning);
    }
    if unit.attempt != attempt {
        return Err(Ignored::StaleAttempt {
            expected: unit.attempt,
            got: attempt,
        });
    }
    Ok(())
}

fn timeout_error(attempt: u32) -> ErrorInfo {
    ErrorInfo::new(
        "Timeout",
        format!("attempt {attempt} did not finish within its timeout"),
        true,
    )
}

impl Cx<'_> {
    fn call(&self, s: usize) -> &Call {
        match &self.wf.steps[s].action {
            Action::Call(call) => call,
            // Units (and so tasks) exist only for steps that call a function.
            _ => unreachable!("step `{}` has no function", self.wf.steps[s].name),
        }
    }

    fn is_for_each(&self, s: usize) -> bool {
        self.wf.steps[s]
            .call()
            .is_some_and(|c| c.for_each.is_some())
    }

    fn emit(
        &mut self,
        kind: LifecycleKind,
        s: Option<usize>,
        index: Option<u32>,
        attempt: Option<u32>,
        error: Option<ErrorInfo>,
        delay_ms: Option<u64>,
    ) {
        self.commands.push(Command::Emit(LifecycleEvent {
            kind,
            execution_id: self.ex.id.clone(),
            workflow: self.ex.workflow.clone(),
            step: s.map(|s| self.wf.steps[s].name.clone()),
            index,
            attempt,
            at: self.now,
            error,
            delay_ms,
            outcome_unknown: false,
        }));
    }

    /// Emits a `compensation.*` event for unit `u` of step `s`.
    fn emit_compensation(
        &mut self,
        kind: LifecycleKind,
        s: usize,
        u: usize,
        attempt: u32,
        error: Option<ErrorInfo>,
        delay_ms: Option<u64>,
    ) {
        let index = self.is_for_each(s).then_some(u as u32);
        self.emit(kind, Some(s), index, Some(attempt), error, delay_ms);
        if self.outcome_unknown(s, u)
            && let Some(Command::Emit(event)) = self.commands.last_mut()
        {
            event.outcome_unknown = true;
        }
    }

    /// Whether unit `u` of step `s` never succeeded but may have had its
    /// effect: an attempt of it ended without a result.
    fn outcome_unknown(&self, s: usize, u: usize) -> bool {
        let unit = &self.ex.steps[s].units[u];
        unit.outcome_unknown && unit.status != UnitStatus::Succeeded
    }

    fn timer(
        &mut self,
        kind: TimerKind,
        task_kind: TaskKind,
        s: usize,
        index: Option<u32>,
        attempt: u32,
        fire_at: Timestamp,
    ) {
        self.commands.push(Command::StartTimer {
            timer: TimerId {
                kind,
                task_kind,
                step: self.wf.steps[s].name.clone(),
                index,
                attempt,
            },
            fire_at,
        });
    }

    fn handle(&mut self, event: Event) -> Result<(), Ignored> {
        if let Event::Started {
            input,
            timeout_ms,
            parent,
        } = event
        {
            if self.ex.status != ExecutionStatus::Pending {
                return Err(Ignored::AlreadyStarted);
            }
            self.ex.input = Arc::new(input);
            self.ex.parent = parent;
            self.ex.status = ExecutionStatus::Running;
            self.ex.started_at = self.now;
            if let Some(timeout) = timeout_ms.or(self.wf.timeout_ms) {
                let deadline = later(self.now, timeout);
                self.ex.deadline = Some(deadline);
                self.commands.push(Command::StartTimer {
                    timer: TimerId {
                        kind: TimerKind::ExecutionTimeout,
                        task_kind: TaskKind::Step,
                        step: Arc::from(""),
                        index: None,
                        attempt: 0,
                    },
                    fire_at: deadline,
                });
            }
            self.emit(
                LifecycleKind::ExecutionStarted,
                None,
                None,
                None,
                None,
                None,
            );
            return Ok(());
        }
        if self.ex.status == ExecutionStatus::Pending {
            return Err(Ignored::NotStarted);
        }
        // Dead letters are mostly resolved after the execution ended, and
        // their resolution is what can change how it ended.
        match event {
            Event::DeadLetterRedriven { dead_letter } => {
                return self.dead_letter_resolved(dead_letter, true);
            }
            Event::DeadLetterDiscarded { dead_letter } => {
                return self.dead_letter_resolved(dead_letter, false);
            }
            Event::RedriveRequested { .. } => return self.redrive(),
            Event::CompensationRequested { task } => return self.undo_for_parent(task),
            _ => {}
        }
        // A client's retry of a signal the execution took is recognised as
        // such even once the execution has ended.
        if let Event::SignalReceived { id: Some(id), .. } = &event
            && self.ex.signal_ids.contains(id)
        {
            return Err(Ignored::DuplicateSignal { id: id.clone() });
        }
        if self.ex.status.is_terminal() {
            return Err(Ignored::ExecutionFinished);
        }
        match event {
            Event::Started { .. }
            | Event::DeadLetterRedriven { .. }
            | Event::DeadLetterDiscarded { .. }
            | Event::RedriveRequested { .. }
            | Event::CompensationRequested { .. } => unreachable!("handled above"),
            Event::TaskSucceeded { task, output } => self.task_succeeded(task, output),
            Event::TaskFailed { task, error } => {
                let unknown = error.outcome_unknown;
                self.task_failed(task, error, unknown)
            }
            Event::TaskTimedOut { task } => {
                let error = timeout_error(task.attempt);
                self.task_failed(task, error, true)
            }
            Event::TimerFired { timer } => self.timer_fired(timer),
            Event::SignalReceived { name, payload, id } => self.signal(name, payload, id),
            Event::CancelRequested { reason } => {
                if self.ex.status == ExecutionStatus::Compensating {
                    return Err(Ignored::AlreadyStopping);
                }
                self.ex.cancel_requested = true;
                let message = reason.unwrap_or_else(|| "cancel requested".to_string());
                self.stop(ErrorInfo::new("Cancelled", message, false));
                Ok(())
            }
        }
    }

    /// Finds the unit a task or timer names.
    fn locate(&self, step: &str, index: Option<u32>) -> Result<(usize, usize), Ignored> {
        let s = self
            .wf
            .step_index(step)
            .ok_or_else(|| Ignored::UnknownStep {
                step: step.to_string(),
            })?;
        let unknown = || Ignored::UnknownElement {
            step: step.to_string(),
            index,
        };
        let u = match (self.is_for_each(s), index) {
            (false, None) => 0,
            (true, Some(i)) => i as usize,
            _ => return Err(unknown()),
        };
        let units = &self.ex.steps[s].units;
        if units.is_empty() && self.wf.steps[s].call().is_some() && index.is_none() {
            return Err(Ignored::NotRunning);
        }
        if u >= units.len() {
            return Err(unknown());
        }
        Ok((s, u))
    }

    fn task_succeeded(&mut self, task: TaskRef, output: Value) -> Result<(), Ignored> {
        let (s, u) = self.locate(&task.step, task.index)?;
        match task.kind {
            TaskKind::Step => {
                check_running(&self.ex.steps[s].units[u], task.attempt)?;
                if self.repeats_again(s, u, &task, &output) {
                    return Ok(());
                }
                let for_each = self.is_for_each(s);
                let has_compensation = self.call(s).compensable();
                self.unit(s, u, |unit| {
                    unit.status = UnitStatus::Succeeded;
                    unit.due = None;
                    unit.error = None;
                    unit.outcome_unknown = false;
                    unit.started = None;
                });
                if has_compensation {
                    self.ex.completed.push_back(UnitRef {
                        step: s as u32,
                        index: task.index,
                    });
                }
                self.emit(
                    LifecycleKind::StepSucceeded,
                    Some(s),
                    task.index,
                    Some(task.attempt),
                    None,
                    None,
                );
                if for_each {
                    self.unit(s, u, |unit| unit.output = Some(Arc::new(output)));
                    self.for_each_progress(s);
                } else {
                    let step = &mut self.ex.steps[s];
                    step.output = Some(Arc::new(output));
                    if step.status == StepStatus::Running {
                        step.status = StepStatus::Succeeded;
                    }
                }
            }
            TaskKind::Compensation => {
                let comp = self.ex.steps[s].units[u]
                    .compensation
                    .as_deref()
                    .ok_or(Ignored::NotRunning)?;
                check_running(comp, task.attempt)?;
                self.comp(s, u, |comp| {
                    comp.status = UnitStatus::Succeeded;
                    comp.due = None;
                    comp.error = None;
                });
                self.emit_compensation(
                    LifecycleKind::CompensationSucceeded,
                    s,
                    u,
                    task.attempt,
                    None,
                    None,
                );
            }
        }
        Ok(())
    }

    /// A `repeat` step's iteration succeeded: true if it is not done, so the
    /// step waits for its next iteration, or has failed because `until`
    /// could not be read or never held within `max_iterations`.
    fn repeats_again(&mut self, s: usize, u: usize, task: &TaskRef, output: &Value) -> bool {
        let Some(repeat) = &self.call(s).repeat else {
            return false;
        };
        let view = View {
            wf: self.wf,
            ex: self.ex,
            own: Some((s, output)),
        };
        let done = repeat.until.eval(&self.scope(&view, None, None));
        let iteration = self.ex.steps[s].units[u].iteration;
        let (max_iterations, delay) = (repeat.max_iterations, repeat.delay_ms);
        let failure = match done {
            Ok(Value::Bool(true)) => return false,
            Ok(Value::Bool(false)) if iteration + 1 < max_iterations => None,
            Ok(Value::Bool(false)) => Some(ErrorInfo::new(
                "RepeatExhausted",
                format!("`repeat.until` did not hold after {max_iterations} iterations"),
                false,
            )),
            Ok(other) => Some(ErrorInfo::new(
                "RepeatConditionError",
                format!(
                    "`repeat.until` gave {}, not true or false",
                    type_name(&other)
                ),
                false,
            )),
            Err(e) => Some(ErrorInfo::new("RepeatConditionError", e.to_string(), false)),
        };
        if let Some(error) = failure {
            self.ex.steps[s].output = Some(Arc::new(output.clone()));
            self.unit_failed_for_good(s, u, error);
            return true;
        }
        let at = later(self.now, delay);
        let attempt = task.attempt;
        self.unit(s, u, |unit| {
            unit.iteration += 1;
            unit.iteration_after = attempt;
            unit.status = UnitStatus::BackingOff;
            unit.due = Some(at);
            unit.error = None;
        });
        // The latest iteration's output, for a reader while it repeats.
        self.ex.steps[s].output = Some(Arc::new(output.clone()));
        self.attempt_again(TaskKind::Step, s, u, attempt, delay, at);
        true
    }

    /// Starts the attempt after `attempt` of unit `u`'s step or compensation:
    /// now with no `delay`, else when a retry timer fires at `at`.
    fn attempt_again(
        &mut self,
        kind: TaskKind,
        s: usize,
        u: usize,
        attempt: u32,
        delay: u64,
        at: Timestamp,
    ) {
        if delay == 0 {
            match kind {
                TaskKind::Step => self.dispatch_unit(s, u),
                TaskKind::Compensation => self.dispatch_compensation(s, u),
            }
        } else {
            let index = self.is_for_each(s).then_some(u as u32);
            self.timer(
                TimerKind::Retry,
                kind,
                s,
                index,
                attempt.saturating_add(1),
                at,
            );
        }
    }

    /// An attempt failed; `unknown` says it ended without a result, so its
    /// effect may have happened.
    fn task_failed(
        &mut self,
        task: TaskRef,
        error: ErrorInfo,
        unknown: bool,
    ) -> Result<(), Ignored> {
        let (s, u) = self.locate(&task.step, task.index)?;
        let running = self.ex.status == ExecutionStatus::Running;
        match task.kind {
            TaskKind::Step => {
                check_running(&self.ex.steps[s].units[u], task.attempt)?;
                if self.call(s).compensable() {
                    self.unit(s, u, |unit| {
                        if unknown {
                            // Keeps the start of the first attempt whose outcome is unknown.
                            unit.outcome_unknown = true;
                        } else if !unit.outcome_unknown {
                            unit.started = None;
                        }
                    });
                }
                // An element still in flight when its `for_each` step failed is not retried.
                let running = running && self.ex.steps[s].status == StepStatus::Running;
                let policy = &self.call(s).retry;
                // A `repeat` step's retries count within its iteration.
                let attempt = task
                    .attempt
                    .saturating_sub(self.ex.steps[s].units[u].iteration_after);
                if running && policy.should_retry(attempt, &error.name, error.retryable) {
                    let delay = policy.delay_after(attempt, &self.ex.id, &task.step, task.index);
                    let at = later(self.now, delay);
                    self.unit(s, u, |unit| {
                        unit.status = UnitStatus::BackingOff;
                        unit.due = Some(at);
                        unit.error = Some(error.clone());
                    });
                    self.emit(
                        LifecycleKind::StepRetrying,
                        Some(s),
                        task.index,
                        Some(task.attempt),
                        Some(error),
                        Some(delay),
                    );
                    self.attempt_again(TaskKind::Step, s, u, task.attempt, delay, at);
                } else {
                    self.unit_failed_for_good(s, u, error);
                }
            }
            TaskKind::Compensation => {
                let comp = self.ex.steps[s].units[u]
                    .compensation
                    .as_deref()
                    .ok_or(Ignored::NotRunning)?;
                check_running(comp, task.attempt)?;
                // A child's undoing is retried by the child's own compensations.
                let Some(policy) = self.call(s).compensation.as_ref().map(|c| &c.retry) else {
                    self.compensation_failed_for_good(s, u, error);
                    return Ok(());
                };
                if policy.should_retry(task.attempt, &error.name, error.retryable) {
                    let delay =
                        policy.delay_after(task.attempt, &self.ex.id, &task.step, task.index);
                    let at = later(self.now, delay);
                    self.comp(s, u, |comp| {
                        comp.status = UnitStatus::BackingOff;
                        comp.due = Some(at);
                        comp.error = Some(error.clone());
                    });
                    self.emit_compensation(
                        LifecycleKind::CompensationRetrying,
                        s,
                        u,
                        task.attempt,
                        Some(error),
                        Some(delay),
                    );
                    self.attempt_again(TaskKind::Compensation, s, u, task.attempt, delay, at);
                } else {
                    self.compensation_failed_for_good(s, u, error);
                }
            }
        }
        Ok(())
    }

    /// Changes unit `u` of step `s`. Units change only through here (and so
    /// through [`Units::update`]), so the step's counts of its units follow.
    fn unit<R>(&mut self, s: usize, u: usize, change: impl FnOnce(&mut Unit) -> R) -> R {
        self.ex.steps[s].units.update(u, change)
    }

    /// Changes the compensation of unit `u` of step `s`, creating it first if needed.
    fn comp<R>(&mut self, s: usize, u: usize, change: impl FnOnce(&mut Unit) -> R) -> R {
        self.unit(s, u, |unit| {
            change(
                unit.compensation
                    .get_or_insert_with(|| Box::new(Unit::new())),
            )
        })
    }

    /// Cancels the units of step `s` that are not started or are waiting to
    /// retry. Looks at every unit, so it runs once per step when the step
    /// or the execution stops, never per event.
    fn cancel_waiting_units(&mut self, s: usize) {
        let waiting: Vec<usize> = self.ex.steps[s]
            .units
            .iter()
            .enumerate()
            .filter(|(_, unit)| matches!(unit.status, UnitStatus::Pending | UnitStatus::BackingOff))
            .map(|(u, _)| u)
            .collect();
        for u in waiting {
            self.unit(s, u, |unit| {
                unit.status = UnitStatus::Cancelled;
                unit.due = None;
            });
        }
    }

    /// Marks unit `u` failed for good with `error`, and its step with it.
    fn unit_failed_for_good(&mut self, s: usize, u: usize, error: ErrorInfo) {
        self.unit(s, u, |unit| {
            unit.status = UnitStatus::Failed;
            unit.due = None;
            unit.error = Some(error.clone());
        });
        let for_each = self.is_for_each(s);
        let index = for_each.then_some(u as u32);
        let attempt = self.ex.steps[s].units[u].attempt;
        self.emit(
            LifecycleKind::StepFailed,
            Some(s),
            index,
            Some(attempt),
            Some(error.clone()),
            None,
        );
        if self.ex.steps[s].status == StepStatus::Running {
            let units = &self.ex.steps[s].units;
            if for_each && self.call(s).tolerates(units.failed(), units.len()) {
                // Within the step's tolerated failures: the others go on.
                return self.for_each_progress(s);
            }
            if for_each {
                // The element's failure is the step's failure.
                self.emit(
                    LifecycleKind::StepFailed,
                    Some(s),
                    None,
                    None,
                    Some(error.clone()),
                    None,
                );
            }
            self.settle_failed_step(s, error);
        }
    }

    /// Marks a step failed and, unless it may fail, stops the execution.
    fn settle_failed_step(&mut self, s: usize, error: ErrorInfo) {
        let step = &mut self.ex.steps[s];
        step.status = StepStatus::Failed;
        step.wake_at = None;
        step.error = Some(error.clone());
        // A failed step starts nothing more, not even retries of its other
        // `for_each` elements (with `continue_on_failure` nothing else stops them).
        self.cancel_waiting_units(s);
        if !self.wf.steps[s].continue_on_failure && self.ex.status == ExecutionStatus::Running {
            let name = &self.wf.steps[s].name;
            self.stop(ErrorInfo::new(
                error.name,
                format!("step `{name}` failed: {}", error.message),
                false,
            ));
        }
    }

    /// Fails a step that never dispatched anything (bad condition, list or wait).
    fn fail_step(&mut self, s: usize, error: ErrorInfo) {
        self.emit(
            LifecycleKind::StepFailed,
            Some(s),
            None,
            None,
            Some(error.clone()),
            None,
        );
        self.settle_failed_step(s, error);
    }

    fn compensation_failed_for_good(&mut self, s: usize, u: usize, error: ErrorInfo) {
        let index = self.is_for_each(s).then_some(u as u32);
        let attempts = self.comp(s, u, |comp| {
            comp.status = UnitStatus::Failed;
            comp.due = None;
            comp.error = Some(error.clone());
            comp.attempt
        });
        let call = self.call(s);
        let (function, input) = match (&call.compensation, &call.workflow) {
            (Some(comp), _) => (
                comp.function.clone(),
                self.compensation_input(s, u).unwrap_or(Value::Null),
            ),
            // A child's compensation: the person resolving it starts at the child.
            (None, Some(child)) => (
                Arc::from(format!("workflow:{}", child.name)),
                serde_json::json!({ "child_execution": self.child_id(s, u) }),
            ),
            (None, None) => unreachable!("only compensable units are compensated"),
        };
        let step = self.wf.steps[s].name.clone();
        let idempotency_key = idempotency::key(&self.ex.id, &step, index, TaskKind::Compensation);
        self.commands.push(Command::DeadLetter(DeadLetter {
            execution_id: self.ex.id.clone(),
            workflow: self.ex.workflow.clone(),
            step,
            index,
            function,
            input,
            idempotency_key,
            error: error.clone(),
            attempts,
            at: self.now,
            outcome_unknown: self.outcome_unknown(s, u),
        }));
        self.emit_compensation(
            LifecycleKind::CompensationFailed,
            s,
            u,
            attempts,
            Some(error),
            None,
        );
        if let Some(c) = self.ex.compensation.as_mut() {
            c.any_failed = true;
        }
    }

    /// A person redrove or discarded a dead letter. A task's changes nothing
    /// here (a redriven task comes back as a result); the event is its trace.
    /// A compensation redriven succeeded; one discarded was resolved by hand.
    /// Once no compensation of a `compensation_failed` execution is left
    /// unresolved, it ends as if none had failed.
    fn dead_letter_resolved(&mut self, dead: DeadLetterRef, redriven: bool) -> Result<(), Ignored> {
        if dead.kind == DeadLetterKind::Task {
            return Ok(());
        }
        let step = dead.step.as_deref().ok_or_else(|| Ignored::UnknownStep {
            step: "(a compensation's dead letter names no step)".into(),
        })?;
        let (s, u) = self.locate(step, dead.index)?;
        let failed = self.ex.steps[s].units[u]
            .compensation
            .as_deref()
            .and_then(|c| (c.status == UnitStatus::Failed && !c.resolved).then_some(c.attempt));
        let Some(attempt) = failed else {
            return Err(Ignored::NothingToResolve {
                step: step.to_string(),
                index: dead.index,
            });
        };
        if redriven {
            // The redrive ran one more attempt with the same idempotency key.
            self.comp(s, u, |comp| {
                comp.status = UnitStatus::Succeeded;
                comp.attempt = attempt + 1;
            });
            self.emit_compensation(
                LifecycleKind::CompensationSucceeded,
                s,
                u,
                attempt + 1,
                None,
                None,
            );
        } else {
            self.comp(s, u, |comp| comp.resolved = true);
        }
        let unresolved = self.ex.steps.iter().any(|step| {
            step.units.iter().any(|unit| {
                unit.compensation
                    .as_deref()
                    .is_some_and(|c| c.status == UnitStatus::Failed && !c.resolved)
            })
        });
        if self.ex.status == ExecutionStatus::CompensationFailed && !unresolved {
            if let Some(c) = self.ex.compensation.as_mut() {
                c.any_failed = false;
            }
            let (status, kind) = if self.ex.cancel_requested {
                (
                    ExecutionStatus::Cancelled,
                    LifecycleKind::ExecutionCancelled,
                )
            } else {
                (
                    ExecutionStatus::Compensated,
                    LifecycleKind::ExecutionCompensated,
                )
            };
            self.ex.status = status;
            let error = self.ex.failure.clone();
            self.emit(kind, None, None, None, error.clone(), None);
            self.finish(status, None, error);
        }
        Ok(())
    }

    /// Ends the execution with `status` and tells whoever waits on it: a
    /// parent's compensation that asked for the undoing, or else the parent
    /// step this child runs for.
    fn finish(&mut self, status: ExecutionStatus, output: Option<Value>, error: Option<ErrorInfo>) {
        self.commands.push(Command::Finish {
            status,
            output: output.clone(),
            error: error.clone(),
        });
        let answer = if let Some(task) = self.ex.undone_for.clone() {
            match status {
                ExecutionStatus::Compensated => Event::TaskSucceeded {
                    task,
                    output: Value::Null,
                },
                _ => Event::TaskFailed {
                    task,
                    error: ErrorInfo::new(
                        "ChildCompensationFailed",
                        format!(
                            "child execution `{}` did not undo everything it did: resolve its dead letters",
                            self.ex.id
                        ),
                        false,
                    ),
                },
            }
        } else if let Some(parent) = &self.ex.parent {
            let task = parent.task.clone();
            match (status, output) {
                (ExecutionStatus::Succeeded, Some(output)) => Event::TaskSucceeded { task, output },
                _ => {
                    let cause = error.unwrap_or_else(|| ErrorInfo::new("ChildFailed", "", false));
                    Event::TaskFailed {
                        task,
                        error: ErrorInfo::new(
                            cause.name,
                            format!(
                                "child execution `{}` {}: {}",
                                self.ex.id,
                                status.as_str(),
                                cause.message
                            ),
                            // Retries belong to the child's own steps.
                            false,
                        ),
                    }
                }
            }
        } else {
            return;
        };
        let parent = self
            .ex
            .parent
            .as_ref()
            .map(|p| p.execution_id.clone())
            .expect("only a child is undone for a parent");
        self.commands.push(Command::SendEvent {
            execution_id: parent,
            event: Box::new(answer),
            undeliverable: None,
        });
    }

    /// The parent is undoing the step this (succeeded) child ran for: undo
    /// everything this execution did, then answer `task`. Asked again (a
    /// redelivery, or a retry of the parent's), a finished child answers
    /// again with how its undoing ended.
    fn undo_for_parent(&mut self, task: TaskRef) -> Result<(), Ignored> {
        match self.ex.status {
            ExecutionStatus::Succeeded if self.ex.parent.is_some() => {
                self.ex.status = ExecutionStatus::Compensating;
                self.ex.undone_for = Some(task);
                self.ex.finished_at = None;
                let parent = self.ex.parent.as_ref().map(|p| p.execution_id.clone());
                self.ex.failure = Some(ErrorInfo::new(
                    "UndoneByParent",
                    format!(
                        "the parent execution `{}` is undoing the step this one ran for",
                        parent.as_deref().unwrap_or_default()
                    ),
                    false,
                ));
                Ok(())
            }
            ExecutionStatus::Compensated | ExecutionStatus::CompensationFailed
                if self.ex.undone_for.is_some() =>
            {
                self.ex.undone_for = Some(task);
                let (status, error) = (self.ex.status, self.ex.failure.clone());
                self.finish(status, None, error);
                Ok(())
            }
            status => Err(Ignored::NotCompensable { status }),
        }
    }

    fn timer_fired(&mut self, timer: TimerId) -> Result<(), Ignored> {
        if timer.kind == TimerKind::ExecutionTimeout {
            return self.execution_timed_out();
        }
        let s = self
            .wf
            .step_index(&timer.step)
            .ok_or_else(|| Ignored::UnknownStep {
                step: timer.step.to_string(),
            })?;
        let task = |kind| TaskRef {
            step: timer.step.clone(),
            index: timer.index,
            attempt: timer.attempt,
            kind,
        };
        match timer.kind {
            TimerKind::Timeout => {
                let (_, u) = self
                    .locate(&timer.step, timer.index)
                    .map_err(|_| Ignored::StaleTimer)?;
                let unit = &self.ex.steps[s].units[u];
                let target = match timer.task_kind {
                    TaskKind::Step => Some(unit),
                    TaskKind::Compensation => unit.compensation.as_deref(),
                };
                match target {
                    Some(t) if t.status == UnitStatus::Running && t.attempt == timer.attempt => {
                        self.task_failed(task(timer.task_kind), timeout_error(timer.attempt), true)
                    }
                    _ => Err(Ignored::StaleTimer),
                }
            }
            TimerKind::Retry => {
                let (_, u) = self
                    .locate(&timer.step, timer.index)
                    .map_err(|_| Ignored::StaleTimer)?;
                let unit = &self.ex.steps[s].units[u];
                let target = match timer.task_kind {
                    TaskKind::Step => Some(unit),
                    TaskKind::Compensation => unit.compensation.as_deref(),
                };
                match target {
                    Some(t)
                        if t.status == UnitStatus::BackingOff
                            && t.attempt.checked_add(1) == Some(timer.attempt) =>
                    {
                        match timer.task_kind {
                            TaskKind::Step => self.dispatch_unit(s, u),
                            TaskKind::Compensation => self.dispatch_compensation(s, u),
                        }
                        Ok(())
                    }
                    _ => Err(Ignored::StaleTimer),
                }
            }
            TimerKind::Wait => {
                let waiting = self.ex.steps[s].status == StepStatus::Waiting
                    && matches!(
                        self.wf.steps[s].action,
                        Action::Wait { .. } | Action::WaitUntil(_)
                    );
                if !waiting {
                    return Err(Ignored::StaleTimer);
                }
                self.finish_wait(s, Value::Null);
                Ok(())
            }
            TimerKind::SignalTimeout => {
                let waiting = self.ex.steps[s].status == StepStatus::Waiting
                    && matches!(self.wf.steps[s].action, Action::WaitFor { .. });
                if !waiting {
                    return Err(Ignored::StaleTimer);
                }
                let Action::WaitFor { signal, .. } = &self.wf.steps[s].action else {
                    unreachable!("checked above")
                };
                let error = ErrorInfo::new(
                    "SignalTimeout",
                    format!("no `{signal}` signal arrived in time"),
                    false,
                );
                self.fail_step(s, error);
                Ok(())
            }
            TimerKind::ExecutionTimeout => unreachable!("handled before the step lookup"),
        }
    }

    fn signal(&mut self, name: String, payload: Value, id: Option<String>) -> Result<(), Ignored> {
        let waited_for = self
            .wf
            .steps
            .iter()
            .any(|s| matches!(&s.action, Action::WaitFor { signal, .. } if *signal == name));
        if !waited_for {
            return Err(Ignored::UnknownSignal { name });
        }
        if let Some(id) = id.as_ref().filter(|id| self.ex.signal_ids.contains(*id)) {
            return Err(Ignored::DuplicateSignal { id: id.clone() });
        }
        if self.ex.signals_taken >= limits::MAX_SIGNALS {
            return Err(Ignored::TooManySignals {
                limit: limits::MAX_SIGNALS,
            });
        }
        self.take_signal(name, payload)?;
        self.ex.signals_taken += 1;
        if let Some(id) = id {
            self.ex.signal_ids.insert(id);
        }
        Ok(())
    }

    fn take_signal(&mut self, name: String, payload: Value) -> Result<(), Ignored> {
        let waiter = (0..self.wf.steps.len()).find(|&s| {
            self.ex.steps[s].status == StepStatus::Waiting
                && matches!(&self.wf.steps[s].action, Action::WaitFor { signal, .. } if *signal == name)
        });
        if let Some(s) = waiter {
            self.finish_wait(s, payload);
            return Ok(());
        }
        if self.ex.status != ExecutionStatus::Running {
            return Err(Ignored::SignalNotExpected);
        }
        // Kept until a step waits for it, so an early signal is not lost.
        self.ex.signals.entry(name).or_default().push_back(payload);
        Ok(())
    }

    fn finish_wait(&mut self, s: usize, output: Value) {
        let step = &mut self.ex.steps[s];
        step.status = StepStatus::Succeeded;
        step.wake_at = None;
        step.output = Some(Arc::new(output));
        self.emit(
            LifecycleKind::StepSucceeded,
            Some(s),
            None,
            None,
            None,
            None,
        );
    }

    /// The execution's deadline passed: it fails as a step failing would
    /// fail it, undoing what it did. Once it is already stopping, the
    /// deadline changes nothing.
    fn execution_timed_out(&mut self) -> Result<(), Ignored> {
        if self.ex.status != ExecutionStatus::Running {
            return Err(Ignored::StaleTimer);
        }
        let ran = self.now.saturating_sub(self.ex.started_at);
        self.stop(ErrorInfo::new(
            EXECUTION_TIMED_OUT,
            format!(
                "the execution ran for {}, past its timeout",
                crate::duration::format_millis(ran)
            ),
            false,
        ));
        Ok(())
    }

    /// Runs a failed execution again from where it stopped. Succeeded and
    /// skipped steps stay as they are; every other step starts over where it
    /// was: its units that did not succeed get fresh attempts (retries count
    /// anew) under their own idempotency keys, and a step that never started
    /// waits for its needs again. The execution's timeout no longer applies.
    fn redrive(&mut self) -> Result<(), Ignored> {
        if self.ex.status != ExecutionStatus::Failed {
            return Err(Ignored::NotRedrivable {
                status: self.ex.status,
            });
        }
        self.ex.status = ExecutionStatus::Running;
        self.ex.failure = None;
        self.ex.finished_at = None;
        self.ex.compensation = None;
        self.ex.deadline = None;
        self.emit(
            LifecycleKind::ExecutionStarted,
            None,
            None,
            None,
            None,
            None,
        );
        for s in 0..self.wf.steps.len() {
            if matches!(
                self.ex.steps[s].status,
                StepStatus::Succeeded | StepStatus::Skipped
            ) {
                continue;
            }
            let started = self.wf.steps[s].call().is_some() && !self.ex.steps[s].units.is_empty();
            if !started {
                let step = &mut self.ex.steps[s];
                step.status = StepStatus::Pending;
                step.error = None;
                step.wake_at = None;
                continue;
            }
            let again: Vec<usize> = self.ex.steps[s]
                .units
                .iter()
                .enumerate()
                .filter(|(_, unit)| unit.status != UnitStatus::Succeeded)
                .map(|(u, _)| u)
                .collect();
            for &u in &again {
                self.unit(s, u, |unit| {
                    unit.status = UnitStatus::Pending;
                    unit.due = None;
                    unit.error = None;
                    unit.iteration_after = unit.attempt;
                });
            }
            let step = &mut self.ex.steps[s];
            step.status = StepStatus::Running;
            step.error = None;
            if self.is_for_each(s) {
                // The cursor goes over the list again, passing what succeeded.
                self.ex.steps[s].next_item = 0;
                self.for_each_progress(s);
            } else {
                self.dispatch_unit(s, 0);
            }
        }
        Ok(())
    }

    /// Stops new work; compensation follows once nothing is in flight.
    fn stop(&mut self, cause: ErrorInfo) {
        self.ex.status = ExecutionStatus::Compensating;
        let reason = format!(
            "the parent execution `{}` is stopping: {}",
            self.ex.id, cause.message
        );
        self.ex.failure = Some(cause);
        for s in 0..self.ex.steps.len() {
            self.cancel_waiting_units(s);
            self.cancel_children(s, &reason);
            let step = &mut self.ex.steps[s];
            match step.status {
                StepStatus::Pending | StepStatus::Waiting => {
                    step.status = StepStatus::Cancelled;
                    step.wake_at = None;
                }
                _ => {}
            }
        }
    }

    fn advance(&mut self) {
        loop {
            let progressed = match self.ex.status {
                ExecutionStatus::Running => self.run_ready(),
                ExecutionStatus::Compensating => self.compensate(),
                _ => false,
            };
            if !progressed {
                break;
            }
        }
    }

    fn settled(&self, s: usize) -> bool {
        match self.ex.steps[s].status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => self.wf.steps[s].continue_on_failure,
            _ => false,
        }
    }

    /// Starts or skips every step whose needs are settled. Returns whether anything changed.
    fn run_ready(&mut self) -> bool {
        let mut changed = false;
        for s in 0..self.wf.steps.len() {
            if self.ex.steps[s].status != StepStatus::Pending {
                continue;
            }
            let needs = &self.wf.steps[s].needs;
            if !needs.iter().all(|&n| self.settled(n)) {
                continue;
            }
            changed = true;
            let all_skipped = !needs.is_empty()
                && needs
                    .iter()
                    .all(|&n| self.ex.steps[n].status == StepStatus::Skipped);
            if all_skipped {
                self.skip(s);
            } else {
                self.start_step(s);
            }
            if self.ex.status != ExecutionStatus::Running {
                return true;
            }
        }
        if (0..self.wf.steps.len()).all(|s| self.settled(s)) {
            self.finish_success();
            return true;
        }
        changed
    }

    fn skip(&mut self, s: usize) {
        self.ex.steps[s].status = StepStatus::Skipped;
        self.emit(LifecycleKind::StepSkipped, Some(s), None, None, None, None);
    }

    fn scope<'v>(
        &'v self,
        view: &'v View<'v>,
        item: Option<&'v Value>,
        index: Option<u32>,
    ) -> Scope<'v> {
        Scope {
            input: &self.ex.input,
            execution_id: &self.ex.id,
            workflow: &self.ex.workflow,
            steps: view,
            item,
            index,
        }
    }

    fn start_step(&mut self, s: usize) {
        let wf = self.wf;
        let step = &wf.steps[s];
        if let Some(condition) = &step.condition {
            let view = View {
                wf,
                ex: self.ex,
                own: None,
            };
            match condition.eval(&self.scope(&view, None, None)) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return self.skip(s),
                Ok(other) => {
                    let error = ErrorInfo::new(
                        "ConditionError",
                        format!("`if` gave {other}, not true or false"),
                        false,
                    );
                    return self.fail_step(s, error);
                }
                Err(e) => {
                    return self
                        .fail_step(s, ErrorInfo::new("ConditionError", e.to_string(), false));
                }
            }
        }
        match &step.action {
            Action::Call(call) => {
                self.ex.steps[s].status = StepStatus::Running;
                match &call.for_each {
                    None => {
                        self.ex.steps[s].units = Units::pending(1);
                        self.dispatch_unit(s, 0);
                    }
                    Some(list) => {
                        let view = View {
                            wf,
                            ex: self.ex,
                            own: None,
                        };
                        let items = match list.eval(&self.scope(&view, None, None)) {
                            Ok(Value::Array(items)) => items,
                            Ok(other) => {
                                let error = ErrorInfo::new(
                                    "ForEachError",
                                    format!("`for_each` gave {}, not a list", type_name(&other)),
                                    false,
                                );
                                return self.fail_step(s, error);
                            }
                            Err(e) => {
                                return self.fail_step(
                                    s,
                                    ErrorInfo::new("ForEachError", e.to_string(), false),
                                );
                            }
                        };
                        if let Err(e) = limits::check_for_each_len(&step.name, items.len()) {
                            let error = ErrorInfo::new("ForEachTooLarge", e.to_string(), false);
                            return self.fail_step(s, error);
                        }
                        let state = &mut self.ex.steps[s];
                        state.units = Units::pending(items.len());
                        state.items = Some(items.into());
                        self.emit(LifecycleKind::StepStarted, Some(s), None, None, None, None);
                        self.for_each_progress(s);
                    }
                }
            }
            Action::Wait { millis } => {
                let at = later(self.now, *millis);
                self.begin_wait(s, at);
            }
            Action::WaitUntil(expr) => {
                let view = View {
                    wf,
                    ex: self.ex,
                    own: None,
                };
                let error = match expr.eval(&self.scope(&view, None, None)) {
                    Ok(value) => match wait_until_instant(&value, self.now) {
                        Ok(at) => return self.begin_wait(s, at),
                        Err(message) => ErrorInfo::new("InvalidWaitUntil", message, false),
                    },
                    Err(e) => ErrorInfo::new("WaitUntilError", e.to_string(), false),
                };
                self.fail_step(s, error);
            }
            Action::WaitFor { signal, timeout_ms } => {
                self.emit(LifecycleKind::StepStarted, Some(s), None, None, None, None);
                let buffered = self.ex.signals.get_mut(signal).and_then(|q| q.pop_front());
                if self.ex.signals.get(signal).is_some_and(|q| q.is_empty()) {
                    self.ex.signals.remove(signal);
                }
                match buffered {
                    Some(payload) => self.finish_wait(s, payload),
                    None => {
                        let state = &mut self.ex.steps[s];
                        state.status = StepStatus::Waiting;
                        state.wake_at = timeout_ms.map(|t| later(self.now, t));
                        self.emit(LifecycleKind::StepWaiting, Some(s), None, None, None, None);
                        if let Some(at) = self.ex.steps[s].wake_at {
                            self.timer(TimerKind::SignalTimeout, TaskKind::Step, s, None, 1, at);
                        }
                    }
                }
            }
        }
    }

    fn begin_wait(&mut self, s: usize, at: Timestamp) {
        self.emit(LifecycleKind::StepStarted, Some(s), None, None, None, None);
        if at <= self.now {
            return self.finish_wait(s, Value::Null);
        }
        let state = &mut self.ex.steps[s];
        state.status = StepStatus::Waiting;
        state.wake_at = Some(at);
        self.emit(LifecycleKind::StepWaiting, Some(s), None, None, None, None);
        self.timer(TimerKind::Wait, TaskKind::Step, s, None, 1, at);
    }

    /// After an element of a `for_each` settles: finish the step, or start more elements.
    fn for_each_progress(&mut self, s: usize) {
        if self.ex.steps[s].status != StepStatus::Running {
            return;
        }
        let state = &self.ex.steps[s];
        // Failed elements count here only while the step tolerates them.
        if state.units.succeeded() + state.units.failed() == state.units.len() {
            let outputs = state
                .units
                .iter()
                .map(|u| u.output.as_deref().cloned().unwrap_or(Value::Null))
                .collect();
            let state = &mut self.ex.steps[s];
            state.output = Some(Arc::new(Value::Array(outputs)));
            state.status = StepStatus::Succeeded;
            self.emit(
                LifecycleKind::StepSucceeded,
                Some(s),
                None,
                None,
                None,
                None,
            );
            return;
        }
        if self.ex.status != ExecutionStatus::Running {
            return;
        }
        let limit = self.call(s).max_concurrency as usize;
        loop {
            let state = &self.ex.steps[s];
            let active = state.units.active();
            let next = state.next_item as usize;
            if active >= limit || next >= state.units.len() || state.status != StepStatus::Running {
                break;
            }
            // Passed over when a redrive sends the cursor round again.
            let done = state.units[next].status == UnitStatus::Succeeded;
            self.ex.steps[s].next_item += 1;
            if done {
                continue;
            }
            self.dispatch_unit(s, next);
        }
    }

    fn step_input(&self, s: usize, u: usize) -> Result<Value, String> {
        let call = self.call(s);
        let state = &self.ex.steps[s];
        let item = state.items.as_ref().and_then(|items| items.get(u));
        let index = call.for_each.as_ref().map(|_| u as u32);
        let view = View {
            wf: self.wf,
            ex: self.ex,
            own: None,
        };
        call.input
            .eval(&self.scope(&view, item, index))
            .map_err(|e| e.to_string())
    }

    /// The input of unit `u`'s compensation. For a unit whose outcome is
    /// unknown there is no output: a compensation input that reads the step
    /// (`steps.NAME`) is replaced by `{outcome_unknown, step_input,
    /// step_idempotency_key}`, what the step was given and the key it carried,
    /// so the compensation can find whatever the step did.
    fn compensation_input(&self, s: usize, u: usize) -> Result<Value, String> {
        let call = self.call(s);
        let Some(comp) = &call.compensation else {
            return Ok(Value::Null);
        };
        let state = &self.ex.steps[s];
        let for_each = call.for_each.is_some();
        let name = &self.wf.steps[s].name;
        let reads_own_step = || {
            comp.input.exprs().iter().any(|e| match e.step_refs() {
                StepRefs::All => true,
                StepRefs::Named(names) => names.iter().any(|n| **n == **name),
            })
        };
        if self.outcome_unknown(s, u) && reads_own_step() {
            let index = for_each.then_some(u as u32);
            let mut replaced = serde_json::Map::new();
            replaced.insert("outcome_unknown".into(), Value::Bool(true));
            replaced.insert("step_input".into(), self.step_input(s, u)?);
            replaced.insert(
                "step_idempotency_key".into(),
                Value::String(idempotency::key(&self.ex.id, name, index, TaskKind::Step)),
            );
            return Ok(Value::Object(replaced));
        }
        let item = state.items.as_ref().and_then(|items| items.get(u));
        let own = if for_each {
            state.units[u].output.as_deref().unwrap_or(&NULL)
        } else {
            state.output.as_deref().unwrap_or(&NULL)
        };
        let view = View {
            wf: self.wf,
            ex: self.ex,
            own: Some((s, own)),
        };
        comp.input
            .eval(&self.scope(&view, item, for_each.then_some(u as u32)))
            .map_err(|e| e.to_string())
    }

    /// Starts the next attempt of a unit.
    fn dispatch_unit(&mut self, s: usize, u: usize) {
        let index = self.is_for_each(s).then_some(u as u32);
        let input = self.step_input(s, u);
        let attempt = self.unit(s, u, |unit| {
            unit.attempt = unit.attempt.saturating_add(1);
            unit.status = UnitStatus::Running;
            unit.error = None;
            unit.attempt
        });
        let input = match input {
            Ok(v) => v,
            Err(message) => {
                let error = ErrorInfo::new("InputError", message, false);
                return self.unit_failed_for_good(s, u, error);
            }
        };
        if self.call(s).compensable() && !self.ex.steps[s].units[u].outcome_unknown {
            let mark = StartMark {
                after: u32::try_from(self.ex.completed.len()).unwrap_or(u32::MAX),
                seq: self.ex.attempts_started,
            };
            self.ex.attempts_started = self.ex.attempts_started.saturating_add(1);
            self.unit(s, u, |unit| unit.started = Some(mark));
        }
        if self.call(s).workflow.is_some() {
            return self.start_child(s, u, index, attempt, input);
        }
        let call = self.call(s);
        let deadline = later(self.now, call.timeout_ms);
        let dispatch = Dispatch {
            execution_id: self.ex.id.clone(),
            workflow: self.ex.workflow.clone(),
            task: TaskRef {
                step: self.wf.steps[s].name.clone(),
                index,
                attempt,
                kind: TaskKind::Step,
            },
            function: call.function.clone(),
            input,
            idempotency_key: idempotency::iteration_key(
                &self.ex.id,
                &self.wf.steps[s].name,
                index,
                self.ex.steps[s].units[u].iteration,
            ),
            timeout_ms: call.timeout_ms,
            deadline,
        };
        self.unit(s, u, |unit| unit.due = Some(deadline));
        self.emit(
            LifecycleKind::StepStarted,
            Some(s),
            index,
            Some(attempt),
            None,
            None,
        );
        self.commands.push(Command::Dispatch(dispatch));
        self.timer(
            TimerKind::Timeout,
            TaskKind::Step,
            s,
            index,
            attempt,
            deadline,
        );
    }

    fn dispatch_compensation(&mut self, s: usize, u: usize) {
        let index = self.is_for_each(s).then_some(u as u32);
        let input = self.compensation_input(s, u);
        let attempt = self.comp(s, u, |comp| {
            comp.attempt = comp.attempt.saturating_add(1);
            comp.status = UnitStatus::Running;
            comp.attempt
        });
        let input = match input {
            Ok(v) => v,
            Err(message) => {
                return self.compensation_failed_for_good(
                    s,
                    u,
                    ErrorInfo::new("InputError", message, false),
                );
            }
        };
        let Some(compensation) = self.call(s).compensation.as_ref() else {
            return self.undo_child(s, u, index, attempt);
        };
        let deadline = later(self.now, compensation.timeout_ms);
        let dispatch = Dispatch {
            execution_id: self.ex.id.clone(),
            workflow: self.ex.workflow.clone(),
            task: TaskRef {
                step: self.wf.steps[s].name.clone(),
                index,
                attempt,
                kind: TaskKind::Compensation,
            },
            function: compensation.function.clone(),
            input,
            idempotency_key: idempotency::key(
                &self.ex.id,
                &self.wf.steps[s].name,
                index,
                TaskKind::Compensation,
            ),
            timeout_ms: compensation.timeout_ms,
            deadline,
        };
        self.comp(s, u, |comp| comp.due = Some(deadline));
        self.emit_compensation(
            LifecycleKind::CompensationStarted,
            s,
            u,
            attempt,
            None,
            None,
        );
        self.commands.push(Command::Dispatch(dispatch));
        self.timer(
            TimerKind::Timeout,
            TaskKind::Compensation,
            s,
            index,
            attempt,
            deadline,
        );
    }

    /// The id of the child execution unit `u` of step `s` runs in its current attempt.
    fn child_id(&self, s: usize, u: usize) -> String {
        let index = self.is_for_each(s).then_some(u as u32);
        let attempt = self.ex.steps[s].units[u].attempt;
        idempotency::child_execution_id(&self.ex.id, &self.wf.steps[s].name, index, attempt)
    }

    /// One attempt of a `workflow:` step's unit: a child execution. No
    /// attempt timeout: the child always ends, and its end is the result.
    fn start_child(&mut self, s: usize, u: usize, index: Option<u32>, attempt: u32, input: Value) {
        let depth = self.ex.parent.as_ref().map_or(0, |p| p.depth) + 1;
        if depth > MAX_CHILD_DEPTH {
            let error = ErrorInfo::new(
                "ChildTooDeep",
                format!(
                    "the child would be {depth} executions deep, more than the {MAX_CHILD_DEPTH} allowed (does a workflow run itself?)"
                ),
                false,
            );
            return self.unit_failed_for_good(s, u, error);
        }
        let child = self.call(s).workflow.as_ref().expect("a `workflow:` step");
        let start = ChildStart {
            execution_id: Arc::from(self.child_id(s, u)),
            workflow: child.name.clone(),
            version: child.version,
            input,
            timeout_ms: child.timeout_ms,
            parent: ParentRef {
                execution_id: self.ex.id.clone(),
                task: TaskRef {
                    step: self.wf.steps[s].name.clone(),
                    index,
                    attempt,
                    kind: TaskKind::Step,
                },
                depth,
            },
        };
        self.unit(s, u, |unit| unit.due = None);
        self.emit(
            LifecycleKind::StepStarted,
            Some(s),
            index,
            Some(attempt),
            None,
            None,
        );
        self.commands.push(Command::StartChild(start));
    }

    /// Asks the children that step `s`'s running units run to cancel; each
    /// answers, as a failure, once it has undone what it did.
    fn cancel_children(&mut self, s: usize, reason: &str) {
        if self.wf.steps[s].call().is_none_or(|c| c.workflow.is_none()) {
            return;
        }
        let for_each = self.is_for_each(s);
        let running: Vec<(usize, u32)> = self.ex.steps[s]
            .units
            .iter()
            .enumerate()
            .filter(|(_, unit)| unit.status == UnitStatus::Running)
            .map(|(u, unit)| (u, unit.attempt))
            .collect();
        for (u, attempt) in running {
            let task = TaskRef {
                step: self.wf.steps[s].name.clone(),
                index: for_each.then_some(u as u32),
                attempt,
                kind: TaskKind::Step,
            };
            self.commands.push(Command::SendEvent {
                execution_id: Arc::from(self.child_id(s, u)),
                event: Box::new(Event::CancelRequested {
                    reason: Some(reason.to_string()),
                }),
                undeliverable: Some(Box::new(Event::TaskFailed {
                    task,
                    error: ErrorInfo::new(
                        "ChildNotFound",
                        "the child execution does not exist",
                        false,
                    ),
                })),
            });
        }
    }

    /// Undoes a succeeded child by asking it to run its own compensations.
    fn undo_child(&mut self, s: usize, u: usize, index: Option<u32>, attempt: u32) {
        let task = TaskRef {
            step: self.wf.steps[s].name.clone(),
            index,
            attempt,
            kind: TaskKind::Compensation,
        };
        self.comp(s, u, |comp| comp.due = None);
        self.emit_compensation(
            LifecycleKind::CompensationStarted,
            s,
            u,
            attempt,
            None,
            None,
        );
        let child = self.child_id(s, u);
        self.commands.push(Command::SendEvent {
            execution_id: Arc::from(child.as_str()),
            event: Box::new(Event::CompensationRequested { task: task.clone() }),
            undeliverable: Some(Box::new(Event::TaskFailed {
                task,
                error: ErrorInfo::new(
                    "ChildNotFound",
                    format!("child execution `{child}` does not exist (its records expired?)"),
                    false,
                ),
            })),
        });
    }

    fn finish_success(&mut self) {
        let view = View {
            wf: self.wf,
            ex: self.ex,
            own: None,
        };
        match self.wf.output.eval(&self.scope(&view, None, None)) {
            Ok(output) => {
                self.ex.status = ExecutionStatus::Succeeded;
                self.ex.finished_at = Some(self.now);
                self.ex.output = Some(output.clone());
                self.emit(
                    LifecycleKind::ExecutionSucceeded,
                    None,
                    None,
                    None,
                    None,
                    None,
                );
                self.finish(ExecutionStatus::Succeeded, Some(output), None);
            }
            Err(e) => self.stop(ErrorInfo::new("OutputError", e.to_string(), false)),
        }
    }

    /// The units to undo, newest first: each succeeded unit with a compensation
    /// by when it succeeded, and each unit whose outcome is unknown by when the
    /// attempt that left it unknown started (after the units that had
    /// succeeded by then, and after the attempts started before it).
    fn undo_order(&self) -> Vector<UnitRef> {
        let mut keyed: Vec<(StartMark, bool, UnitRef)> = self
            .ex
            .completed
            .iter()
            .enumerate()
            .map(|(i, unit)| {
                // Completion `i` comes after every attempt started while `i` units had succeeded.
                let mark = StartMark {
                    after: u32::try_from(i).unwrap_or(u32::MAX),
                    seq: u64::MAX,
                };
                (mark, true, *unit)
            })
            .collect();
        for (s, step) in self.ex.steps.iter().enumerate() {
            if self.wf.steps[s].call().is_none_or(|c| !c.compensable()) {
                continue;
            }
            let for_each = self.is_for_each(s);
            for (u, unit) in step.units.iter().enumerate() {
                if self.outcome_unknown(s, u) {
                    // Without a mark (an attempt started before marks were kept) it counts as the newest.
                    let mark = unit.started.unwrap_or(StartMark {
                        after: u32::MAX,
                        seq: u64::MAX,
                    });
                    let unit = UnitRef {
                        step: s as u32,
                        index: for_each.then_some(u as u32),
                    };
                    keyed.push((mark, false, unit));
                }
            }
        }
        keyed.sort_by_key(|(mark, completion, _)| (*mark, *completion));
        keyed.into_iter().rev().map(|(_, _, unit)| unit).collect()
    }

    /// Drives compensation: waits for in-flight attempts, then undoes one unit at a time.
    fn compensate(&mut self) -> bool {
        let mut in_flight = false;
        for step in &mut self.ex.steps {
            let active = step.units.running() > 0;
            in_flight |= active;
            if step.status == StepStatus::Running && !active {
                step.status = StepStatus::Cancelled;
            }
        }
        if in_flight {
            return false;
        }
        if self.ex.compensation.is_none() {
            let queue = self.undo_order();
            self.ex.compensation = Some(CompensationState {
                queue,
                position: 0,
                any_failed: false,
            });
        }
        let compensation = self.ex.compensation.as_mut().expect("set above");
        // One move per call; `advance` calls again while something changes.
        if let Some(&next) = compensation.queue.get(compensation.position as usize) {
            let s = next.step as usize;
            let u = next.index.unwrap_or(0) as usize;
            match self.ex.steps[s].units[u]
                .compensation
                .as_deref()
                .map(|c| c.status)
            {
                None => {
                    self.dispatch_compensation(s, u);
                    return true;
                }
                Some(UnitStatus::Running | UnitStatus::BackingOff | UnitStatus::Pending) => {
                    return false;
                }
                Some(UnitStatus::Succeeded | UnitStatus::Failed | UnitStatus::Cancelled) => {
                    let compensation = self.ex.compensation.as_mut().expect("set above");
                    compensation.position += 1;
                    return true;
                }
            }
        }
        let nothing_to_undo = compensation.queue.is_empty();
        let status = if compensation.any_failed {
            ExecutionStatus::CompensationFailed
        } else if self.ex.cancel_requested {
            ExecutionStatus::Cancelled
        } else if nothing_to_undo && self.ex.undone_for.is_none() {
            ExecutionStatus::Failed
        } else {
            ExecutionStatus::Compensated
        };
        let kind = match status {
            ExecutionStatus::CompensationFailed => LifecycleKind::ExecutionCompensationFailed,
            ExecutionStatus::Cancelled => LifecycleKind::ExecutionCancelled,
            ExecutionStatus::Failed => LifecycleKind::ExecutionFailed,
            _ => LifecycleKind::ExecutionCompensated,
        };
        self.ex.status = status;
        self.ex.finished_at = Some(self.now);
        let error = self.ex.failure.clone();
        self.emit(kind, None, None, None, error.clone(), None);
        self.finish(status, None, error);
        true
    }
}
