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
//! - Anything that does not match the current state (an old attempt, a second
//!   result, a timer whose purpose has passed) changes nothing and says why.

use serde_json::Value;

use super::state::{
    CompensationState, Execution, ExecutionStatus, StepStatus, Unit, UnitRef, UnitStatus,
};
use super::{
    Command, DeadLetter, Dispatch, ErrorInfo, Event, Ignored, LifecycleEvent, LifecycleKind,
    Outcome, TaskKind, TaskRef, TimerId, TimerKind, Transition,
};
use crate::Timestamp;
use crate::expr::{Scope, StepLookup, StepView};
use crate::idempotency;
use crate::workflow::{Action, Call, Workflow};

static NULL: Value = Value::Null;

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
            _ => state.output.as_ref().unwrap_or(&NULL),
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
        }));
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
        if let Event::Started { input } = event {
            if self.ex.status != ExecutionStatus::Pending {
                return Err(Ignored::AlreadyStarted);
            }
            self.ex.input = input;
            self.ex.status = ExecutionStatus::Running;
            self.ex.started_at = self.now;
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
        if self.ex.status.is_terminal() {
            return Err(Ignored::ExecutionFinished);
        }
        match event {
            Event::Started { .. } => unreachable!("handled above"),
            Event::TaskSucceeded { task, output } => self.task_succeeded(task, output),
            Event::TaskFailed { task, error } => self.task_failed(task, error),
            Event::TaskTimedOut { task } => {
                let error = timeout_error(task.attempt);
                self.task_failed(task, error)
            }
            Event::TimerFired { timer } => self.timer_fired(timer),
            Event::SignalReceived { name, payload } => self.signal(name, payload),
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
                let for_each = self.is_for_each(s);
                let has_compensation = self.call(s).compensation.is_some();
                let unit = &mut self.ex.steps[s].units[u];
                unit.status = UnitStatus::Succeeded;
                unit.due = None;
                unit.error = None;
                if has_compensation {
                    self.ex.completed.push(UnitRef {
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
                    self.ex.steps[s].units[u].output = Some(output);
                    self.for_each_progress(s);
                } else {
                    let step = &mut self.ex.steps[s];
                    step.output = Some(output);
                    if step.status == StepStatus::Running {
                        step.status = StepStatus::Succeeded;
                    }
                }
            }
            TaskKind::Compensation => {
                let comp = self.ex.steps[s].units[u]
                    .compensation
                    .as_deref_mut()
                    .ok_or(Ignored::NotRunning)?;
                check_running(comp, task.attempt)?;
                comp.status = UnitStatus::Succeeded;
                comp.due = None;
                comp.error = None;
                self.emit(
                    LifecycleKind::CompensationSucceeded,
                    Some(s),
                    task.index,
                    Some(task.attempt),
                    None,
                    None,
                );
            }
        }
        Ok(())
    }

    fn task_failed(&mut self, task: TaskRef, error: ErrorInfo) -> Result<(), Ignored> {
        let (s, u) = self.locate(&task.step, task.index)?;
        let running = self.ex.status == ExecutionStatus::Running;
        match task.kind {
            TaskKind::Step => {
                check_running(&self.ex.steps[s].units[u], task.attempt)?;
                // An element still in flight when its `for_each` step failed is not retried.
                let running = running && self.ex.steps[s].status == StepStatus::Running;
                let policy = &self.call(s).retry;
                if running && policy.should_retry(task.attempt, &error.name, error.retryable) {
                    let delay =
                        policy.delay_after(task.attempt, &self.ex.id, &task.step, task.index);
                    let unit = &mut self.ex.steps[s].units[u];
                    unit.status = UnitStatus::BackingOff;
                    unit.due = Some(self.now + delay);
                    unit.error = Some(error.clone());
                    self.emit(
                        LifecycleKind::StepRetrying,
                        Some(s),
                        task.index,
                        Some(task.attempt),
                        Some(error),
                        Some(delay),
                    );
                    if delay == 0 {
                        self.dispatch_unit(s, u);
                    } else {
                        self.timer(
                            TimerKind::Retry,
                            TaskKind::Step,
                            s,
                            task.index,
                            task.attempt + 1,
                            self.now + delay,
                        );
                    }
                } else {
                    let unit = &mut self.ex.steps[s].units[u];
                    unit.status = UnitStatus::Failed;
                    unit.due = None;
                    unit.error = Some(error.clone());
                    self.unit_failed_for_good(s, u, error);
                }
            }
            TaskKind::Compensation => {
                let comp = self.ex.steps[s].units[u]
                    .compensation
                    .as_deref()
                    .ok_or(Ignored::NotRunning)?;
                check_running(comp, task.attempt)?;
                let policy = &self
                    .call(s)
                    .compensation
                    .as_ref()
                    .expect("a compensation ran, so the step has one")
                    .retry;
                if policy.should_retry(task.attempt, &error.name, error.retryable) {
                    let delay =
                        policy.delay_after(task.attempt, &self.ex.id, &task.step, task.index);
                    let now = self.now;
                    let comp = self.comp_mut(s, u);
                    comp.status = UnitStatus::BackingOff;
                    comp.due = Some(now + delay);
                    comp.error = Some(error.clone());
                    self.emit(
                        LifecycleKind::CompensationRetrying,
                        Some(s),
                        task.index,
                        Some(task.attempt),
                        Some(error),
                        Some(delay),
                    );
                    if delay == 0 {
                        self.dispatch_compensation(s, u);
                    } else {
                        self.timer(
                            TimerKind::Retry,
                            TaskKind::Compensation,
                            s,
                            task.index,
                            task.attempt + 1,
                            self.now + delay,
                        );
                    }
                } else {
                    self.compensation_failed_for_good(s, u, error);
                }
            }
        }
        Ok(())
    }

    fn comp_mut(&mut self, s: usize, u: usize) -> &mut Unit {
        self.ex.steps[s].units[u]
            .compensation
            .get_or_insert_with(|| Box::new(Unit::new()))
    }

    fn unit_failed_for_good(&mut self, s: usize, u: usize, error: ErrorInfo) {
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
        for unit in &mut step.units {
            if matches!(unit.status, UnitStatus::Pending | UnitStatus::BackingOff) {
                unit.status = UnitStatus::Cancelled;
                unit.due = None;
            }
        }
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
        let comp = self.comp_mut(s, u);
        comp.status = UnitStatus::Failed;
        comp.due = None;
        comp.error = Some(error.clone());
        let attempts = comp.attempt;
        let function = self
            .call(s)
            .compensation
            .as_ref()
            .expect("compensated step has a compensation")
            .function
            .clone();
        let input = self.compensation_input(s, u).unwrap_or(Value::Null);
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
        }));
        self.emit(
            LifecycleKind::CompensationFailed,
            Some(s),
            index,
            Some(attempts),
            Some(error),
            None,
        );
        if let Some(c) = self.ex.compensation.as_mut() {
            c.any_failed = true;
        }
    }

    fn timer_fired(&mut self, timer: TimerId) -> Result<(), Ignored> {
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
                        self.task_failed(task(timer.task_kind), timeout_error(timer.attempt))
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
                        if t.status == UnitStatus::BackingOff && t.attempt + 1 == timer.attempt =>
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
        }
    }

    fn signal(&mut self, name: String, payload: Value) -> Result<(), Ignored> {
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
        step.output = Some(output);
        self.emit(
            LifecycleKind::StepSucceeded,
            Some(s),
            None,
            None,
            None,
            None,
        );
    }

    /// Stops new work; compensation follows once nothing is in flight.
    fn stop(&mut self, cause: ErrorInfo) {
        self.ex.status = ExecutionStatus::Compensating;
        self.ex.failure = Some(cause);
        for step in &mut self.ex.steps {
            for unit in &mut step.units {
                if matches!(unit.status, UnitStatus::Pending | UnitStatus::BackingOff) {
                    unit.status = UnitStatus::Cancelled;
                    unit.due = None;
                }
            }
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
                        self.ex.steps[s].units = vec![Unit::new()];
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
                        let state = &mut self.ex.steps[s];
                        state.units = vec![Unit::new(); items.len()];
                        state.items = Some(items);
                        self.emit(LifecycleKind::StepStarted, Some(s), None, None, None, None);
                        self.for_each_progress(s);
                    }
                }
            }
            Action::Wait { millis } => {
                let at = self.now.saturating_add(*millis);
                self.begin_wait(s, at);
            }
            Action::WaitUntil(expr) => {
                let view = View {
                    wf,
                    ex: self.ex,
                    own: None,
                };
                let at = expr
                    .eval(&self.scope(&view, None, None))
                    .map_err(|e| e.to_string())
                    .and_then(|v| instant(&v));
                match at {
                    Ok(at) => self.begin_wait(s, at),
                    Err(message) => {
                        self.fail_step(s, ErrorInfo::new("WaitUntilError", message, false))
                    }
                }
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
                        state.wake_at = timeout_ms.map(|t| self.now.saturating_add(t));
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
        if state
            .units
            .iter()
            .all(|u| u.status == UnitStatus::Succeeded)
        {
            let outputs = state
                .units
                .iter()
                .map(|u| u.output.clone().unwrap_or(Value::Null))
                .collect();
            let state = &mut self.ex.steps[s];
            state.output = Some(Value::Array(outputs));
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
            let active = state
                .units
                .iter()
                .filter(|u| matches!(u.status, UnitStatus::Running | UnitStatus::BackingOff))
                .count();
            let next = state.next_item as usize;
            if active >= limit || next >= state.units.len() || state.status != StepStatus::Running {
                break;
            }
            self.ex.steps[s].next_item += 1;
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

    fn compensation_input(&self, s: usize, u: usize) -> Result<Value, String> {
        let call = self.call(s);
        let Some(comp) = &call.compensation else {
            return Ok(Value::Null);
        };
        let state = &self.ex.steps[s];
        let for_each = call.for_each.is_some();
        let item = state.items.as_ref().and_then(|items| items.get(u));
        let own = if for_each {
            state.units[u].output.as_ref().unwrap_or(&NULL)
        } else {
            state.output.as_ref().unwrap_or(&NULL)
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
        let unit = &mut self.ex.steps[s].units[u];
        unit.attempt += 1;
        unit.status = UnitStatus::Running;
        unit.error = None;
        let attempt = unit.attempt;
        let input = match input {
            Ok(v) => v,
            Err(message) => {
                let error = ErrorInfo::new("InputError", message, false);
                let unit = &mut self.ex.steps[s].units[u];
                unit.status = UnitStatus::Failed;
                unit.due = None;
                unit.error = Some(error.clone());
                return self.unit_failed_for_good(s, u, error);
            }
        };
        let call = self.call(s);
        let deadline = self.now.saturating_add(call.timeout_ms);
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
            idempotency_key: idempotency::key(
                &self.ex.id,
                &self.wf.steps[s].name,
                index,
                TaskKind::Step,
            ),
            timeout_ms: call.timeout_ms,
            deadline,
        };
        self.ex.steps[s].units[u].due = Some(deadline);
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
        let comp = self.comp_mut(s, u);
        comp.attempt += 1;
        comp.status = UnitStatus::Running;
        let attempt = comp.attempt;
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
        let compensation = self
            .call(s)
            .compensation
            .as_ref()
            .expect("only compensable units are queued");
        let deadline = self.now.saturating_add(compensation.timeout_ms);
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
        self.comp_mut(s, u).due = Some(deadline);
        self.emit(
            LifecycleKind::CompensationStarted,
            Some(s),
            index,
            Some(attempt),
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
                self.commands.push(Command::Finish {
                    status: ExecutionStatus::Succeeded,
                    output: Some(output),
                    error: None,
                });
            }
            Err(e) => self.stop(ErrorInfo::new("OutputError", e.to_string(), false)),
        }
    }

    /// Drives compensation: waits for in-flight attempts, then undoes one unit at a time.
    fn compensate(&mut self) -> bool {
        let mut in_flight = false;
        for step in &mut self.ex.steps {
            let active = step.units.iter().any(|u| u.status == UnitStatus::Running);
            in_flight |= active;
            if step.status == StepStatus::Running && !active {
                step.status = StepStatus::Cancelled;
            }
        }
        if in_flight {
            return false;
        }
        let compensation = self
            .ex
            .compensation
            .get_or_insert_with(|| CompensationState {
                queue: self.ex.completed.iter().rev().copied().collect(),
                position: 0,
                any_failed: false,
            });
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
        } else if nothing_to_undo {
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
        self.commands.push(Command::Finish {
            status,
            output: None,
            error,
        });
        true
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Reads a `wait_until` result: RFC 3339 text or epoch milliseconds.
fn instant(value: &Value) -> Result<Timestamp, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            format!("`wait_until` gave {n}, not a time in milliseconds since the epoch")
        }),
        Value::String(text) => humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("`wait_until` gave `{text}`, not an RFC 3339 time: {e}"))
            .and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as Timestamp)
                    .map_err(|_| format!("`wait_until` gave `{text}`, before 1970"))
            }),
        other => Err(format!(
            "`wait_until` gave {}, not a time",
            type_name(other)
        )),
    }
}
