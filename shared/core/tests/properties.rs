//! Properties of the engine over random workflows and random event orders.
//!
//! A random DAG (functions with retries, compensations, conditions,
//! `for_each` and `continue_on_failure`, plus some waits, signal waits and
//! `wait_until`s in and out of range) is written as YAML, then a random shell
//! runs it: it answers outstanding dispatches in any order with success,
//! failure, a crash or a timeout, fires timers in any order, sends signals,
//! sometimes cancels, and keeps injecting duplicates and late results of
//! timed-out attempts. The random choices come from a proptest-generated
//! tape, so failures shrink to short runs. A second shell sends nonsense too:
//! events for unknown steps, elements and attempts, arbitrary payloads and
//! clocks that jump anywhere, on the same workflows with some read-only steps
//! made to `repeat` and an execution timeout, with signal ids, redrives and
//! the execution's own deadline among its events; its history must replay to
//! the same transitions.

use std::collections::{BTreeMap, HashMap, HashSet};

use baton_core::definition::Format;
use baton_core::engine::{
    Command, Dispatch, Event, Execution, ExecutionStatus, LifecycleKind, MAX_TIMESTAMP,
    MAX_WAIT_AHEAD_MS, Outcome, ParentRef, StepStatus, TaskKind, TaskRef, TimerId, TimerKind,
    Transition, UnitStatus, apply,
};
use baton_core::{ErrorInfo, Workflow};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

const FLAGS: usize = 3;
/// More events than any run can need: each unit has at most 4 attempts, each
/// giving at most a result, a timeout and a retry timer.
const MAX_EVENTS: usize = 5_000;

#[derive(Debug, Clone)]
struct StepSpec {
    /// Bit `j` set: the step needs step `j` (only earlier steps count).
    needs_mask: u32,
    mutates: bool,
    /// For a mutating step: a compensation, or `compensate: none`.
    compensate: bool,
    max_attempts: u32,
    delay_ms: u64,
    backoff: &'static str,
    full_jitter: bool,
    /// Run only if input flag `.0` equals `.1`.
    condition: Option<(usize, bool)>,
    continue_on_failure: bool,
    /// Element count and max_concurrency.
    for_each: Option<(usize, u32)>,
    /// Instead of a function, a wait.
    wait: Option<Wait>,
    /// Whether the compensation's input reads the step's own output.
    compensation_reads_output: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `wait: 50ms`.
    Duration,
    /// Signal `sig<i>`, for at most 200ms.
    Signal,
    /// `wait_until` the input's `until.s<i>`: [`until_value`] of this.
    Until(usize),
}

/// The runs start at 1_000_000 ms; which of these are times a step may wait until.
const UNTIL_VALID: [bool; 10] = [
    true, true, true, true, false, false, false, false, false, false,
];

fn until_value(i: usize) -> Value {
    match i {
        0 => json!(1_000_050),
        1 => json!(500),
        2 => json!("1970-01-01T00:16:40.030Z"),
        3 => json!(1_000_000 + 86_400_000),
        4 => json!(-1),
        5 => json!(u64::MAX),
        6 => json!("275000-01-01T00:00:00Z"),
        7 => json!("tomorrow"),
        8 => json!(1e300),
        // Twenty years ahead: no run's clock moves far enough for it to come in range.
        _ => json!(1_000_000 + 2 * MAX_WAIT_AHEAD_MS),
    }
}

#[derive(Debug, Clone)]
struct Spec {
    steps: Vec<StepSpec>,
    flags: Vec<bool>,
    compensation_attempts: u32,
}

impl StepSpec {
    fn needs(&self, i: usize) -> Vec<usize> {
        (0..i).filter(|j| self.needs_mask & (1 << j) != 0).collect()
    }
}

impl Spec {
    fn yaml(&self) -> String {
        let mut out = format!(
            "name: random\ndefaults:\n  timeout: 1s\n  compensation_retry: {{ max_attempts: {}, backoff: fixed, delay: 10ms, jitter: none }}\nsteps:\n",
            self.compensation_attempts
        );
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("  s{i}:\n"));
            match s.wait {
                None => out.push_str(&format!("    function: f{i}\n")),
                Some(Wait::Duration) => out.push_str("    wait: 50ms\n"),
                Some(Wait::Signal) => out.push_str(&format!(
                    "    wait_for: {{ signal: sig{i}, timeout: 200ms }}\n"
                )),
                Some(Wait::Until(_)) => {
                    out.push_str(&format!("    wait_until: \"${{ input.until.s{i} }}\"\n"))
                }
            }
            let needs = s.needs(i);
            if !needs.is_empty() {
                let names: Vec<String> = needs.iter().map(|j| format!("s{j}")).collect();
                out.push_str(&format!("    needs: [{}]\n", names.join(", ")));
            }
            if let Some((flag, value)) = s.condition {
                let not = if value { "" } else { "!" };
                out.push_str(&format!("    if: \"${{ {not}input.flags.f{flag} }}\"\n"));
            }
            if s.continue_on_failure {
                out.push_str("    continue_on_failure: true\n");
            }
            if s.wait.is_some() {
                continue;
            }
            if !s.mutates {
                out.push_str("    mutates: false\n");
            } else if s.compensate && s.compensation_reads_output {
                out.push_str(&format!(
                    "    compensate: {{ function: undo{i}, input: {{ output: \"${{ steps.s{i}.output }}\" }} }}\n"
                ));
            } else if s.compensate {
                out.push_str(&format!(
                    "    compensate: {{ function: undo{i}, input: {{ undo: s{i}, flag: \"${{ input.flags.f0 }}\" }} }}\n"
                ));
            } else {
                out.push_str("    compensate: none\n    reason: cannot be undone\n");
            }
            let jitter = if s.full_jitter { "full" } else { "none" };
            out.push_str(&format!(
                "    retry: {{ max_attempts: {}, backoff: {}, delay: {}ms, max_delay: 1s, jitter: {jitter} }}\n",
                s.max_attempts, s.backoff, s.delay_ms
            ));
            match s.for_each {
                Some((_, concurrency)) => {
                    out.push_str(&format!(
                        "    for_each: \"${{ input.lists.s{i} }}\"\n    max_concurrency: {concurrency}\n    input: {{ item: \"${{ item }}\", index: \"${{ index }}\" }}\n"
                    ));
                }
                None => out.push_str(&format!("    input: {{ step: s{i} }}\n")),
            }
        }
        out
    }

    fn input(&self) -> Value {
        let flags: serde_json::Map<String, Value> = self
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("f{i}"), json!(f)))
            .collect();
        let lists: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.for_each
                    .filter(|_| s.wait.is_none())
                    .map(|(n, _)| (format!("s{i}"), json!((0..n).collect::<Vec<_>>())))
            })
            .collect();
        let until: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.wait {
                Some(Wait::Until(v)) => Some((format!("s{i}"), until_value(v))),
                _ => None,
            })
            .collect();
        json!({ "flags": flags, "lists": lists, "until": until })
    }

    /// Steps that must be skipped: a false condition, or every need skipped.
    fn skipped(&self) -> Vec<bool> {
        let mut skipped = vec![false; self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            let needs = s.needs(i);
            let all_needs_skipped = !needs.is_empty() && needs.iter().all(|&j| skipped[j]);
            let condition_false = s
                .condition
                .is_some_and(|(flag, value)| self.flags[flag] != value);
            skipped[i] = all_needs_skipped || condition_false;
        }
        skipped
    }
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    (
        any::<u32>(),
        any::<bool>(),
        prop::bool::weighted(0.8),
        1u32..=4,
        prop::sample::select(vec![0u64, 10, 100]),
        prop::sample::select(vec!["fixed", "linear", "exponential"]),
        any::<bool>(),
        prop::option::weighted(0.3, (0..FLAGS, any::<bool>())),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.25, (0usize..=3, 1u32..=2)),
        prop::option::weighted(
            0.2,
            prop_oneof![
                Just(Wait::Duration),
                Just(Wait::Signal),
                (0..UNTIL_VALID.len()).prop_map(Wait::Until),
            ],
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                needs_mask,
                mutates,
                compensate,
                max_attempts,
                delay_ms,
                backoff,
                full_jitter,
                condition,
                continue_on_failure,
                for_each,
                wait,
                compensation_reads_output,
            )| StepSpec {
                needs_mask,
                mutates,
                compensate,
                max_attempts,
                delay_ms,
                backoff,
                full_jitter,
                condition,
                continue_on_failure,
                for_each,
                wait,
                compensation_reads_output,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(step_spec(), 1..=8),
        prop::collection::vec(any::<bool>(), FLAGS),
        1u32..=3,
    )
        .prop_map(|(steps, flags, compensation_attempts)| Spec {
            steps,
            flags,
            compensation_attempts,
        })
}

/// Random choices read from a tape; when it runs out every choice is 0,
/// which answers the oldest dispatch with success, so every run can end.
struct Tape {
    choices: Vec<u32>,
    at: usize,
}

impl Tape {
    fn pick(&mut self, n: usize) -> usize {
        let c = self.choices.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        c as usize % n.max(1)
    }
}

type UnitKey = (String, Option<u32>, TaskKind);

/// The earliest timer of an execution, found by looking at every unit.
fn next_wakeup_by_scan(ex: &Execution) -> Option<u64> {
    if ex.status.is_terminal() {
        return None;
    }
    let in_flight = |s: UnitStatus| matches!(s, UnitStatus::Running | UnitStatus::BackingOff);
    let mut dues = Vec::new();
    for step in &ex.steps {
        if step.status == StepStatus::Waiting {
            dues.extend(step.wake_at);
        }
        for unit in &step.units {
            if in_flight(unit.status) {
                dues.extend(unit.due);
            }
            if let Some(comp) = unit.compensation.as_deref()
                && in_flight(comp.status)
            {
                dues.extend(comp.due);
            }
        }
    }
    dues.into_iter().min()
}

/// The counts the engine keeps of each step's units match the units, and the
/// next wakeup taken from them is the one a scan of every unit finds.
fn assert_counts_kept(ex: &Execution, t: &Transition) {
    for step in &ex.steps {
        assert!(
            step.units.is_consistent(),
            "the counts of `{}` do not match its units",
            step.name
        );
    }
    assert_eq!(t.next_wakeup, next_wakeup_by_scan(ex));
}

fn unit_key(task: &TaskRef) -> UnitKey {
    (task.step.to_string(), task.index, task.kind)
}

/// A step's unit: step name and element index.
type UnitId = (String, Option<u32>);

fn unit_id(task: &TaskRef) -> UnitId {
    (task.step.to_string(), task.index)
}

/// What orders compensations, as the shell saw it happen.
#[derive(Debug)]
enum SagaEntry {
    /// An attempt of a unit with a compensation was dispatched.
    Started(UnitId, u32),
    /// A unit with a compensation succeeded.
    Succeeded(UnitId),
}

struct Run {
    wf: Workflow,
    ex: Execution,
    now: u64,
    tape: Tape,
    pending: Vec<Dispatch>,
    /// Dispatches whose attempt timed out: whatever they report now is stale.
    lost: Vec<Dispatch>,
    timers: Vec<(u64, TimerId)>,
    /// Results and timers that were applied, for re-delivery as duplicates.
    delivered: Vec<Event>,
    history: Vec<(Event, u64)>,
    transitions: Vec<Transition>,
    commands: Vec<Command>,
    /// Starts and successes of units with a compensation, in the order applied.
    saga_log: Vec<SagaEntry>,
    /// Attempts that ended without a result: timed out, or crashed.
    unknown: HashSet<(UnitId, u32)>,
    /// Every attempt of this step times out.
    victim: Option<String>,
    /// Every attempt of this step fails for good.
    doomed: Option<String>,
    cancelled: bool,
    /// Steps reported failed (`step.failed` without an element index).
    failed_steps: Vec<String>,
    /// Signals some `wait_for` step waits for.
    signals: Vec<String>,
    events: usize,
}

impl Run {
    fn apply(&mut self, event: Event) -> Transition {
        self.events += 1;
        let before = self.ex.clone();
        let was_terminal = self.ex.status.is_terminal();
        let t = apply(&self.wf, &mut self.ex, event.clone(), self.now);
        assert_counts_kept(&self.ex, &t);
        if let Outcome::Ignored(reason) = &t.outcome {
            assert!(
                t.commands.is_empty(),
                "ignored ({reason:?}) with commands {:?}",
                t.commands
            );
            assert_eq!(
                before, self.ex,
                "ignored ({reason:?}) yet the state changed"
            );
        }
        assert!(
            !was_terminal || !t.is_applied(),
            "an event applied after the end"
        );
        let finishes = t
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Finish { .. }))
            .count();
        assert_eq!(finishes == 1, self.ex.status.is_terminal() && !was_terminal);
        let stopping = before.status == ExecutionStatus::Compensating;
        for c in &t.commands {
            match c {
                Command::Emit(e) if e.kind == LifecycleKind::StepFailed && e.index.is_none() => {
                    let step = e.step.as_deref().expect("a step").to_string();
                    self.failed_steps.push(step);
                }
                Command::Dispatch(d) if d.task.kind == TaskKind::Step => {
                    // Once stopping, or once its step failed, nothing of a step starts again.
                    assert!(
                        !stopping,
                        "{} dispatched while compensating",
                        label(&d.task)
                    );
                    assert!(
                        !self.failed_steps.iter().any(|s| **s == *d.task.step),
                        "{} dispatched after its step failed",
                        label(&d.task)
                    );
                    self.pending.push(d.clone());
                }
                Command::Dispatch(d) => self.pending.push(d.clone()),
                Command::StartTimer { timer, fire_at } => {
                    assert!(*fire_at > self.now, "{timer:?} is due already");
                    self.timers.push((*fire_at, timer.clone()))
                }
                _ => {}
            }
        }
        if t.is_applied() {
            match &event {
                Event::TaskSucceeded { .. }
                | Event::TaskFailed { .. }
                | Event::TaskTimedOut { .. }
                | Event::TimerFired { .. } => self.delivered.push(event.clone()),
                Event::CancelRequested { .. } => self.cancelled = true,
                _ => {}
            }
            self.record_saga(&event, &t);
        }
        self.commands.extend(t.commands.iter().cloned());
        self.history.push((event, self.now));
        self.transitions.push(t.clone());
        self.check_concurrency();
        self.reconcile();
        // With nothing in flight, only a timer can move the execution on: a
        // shell that sleeps until `next_wakeup` must be woken.
        if self.pending.is_empty() && !self.ex.status.is_terminal() {
            assert!(t.next_wakeup.is_some(), "nothing in flight and no wake-up");
        }
        t
    }

    fn compensable(&self, step: &str) -> bool {
        self.wf
            .step(step)
            .and_then(|s| s.call())
            .is_some_and(|c| c.compensation.is_some())
    }

    /// Notes what decides which units are undone, and in what order.
    fn record_saga(&mut self, event: &Event, t: &Transition) {
        match event {
            Event::TaskSucceeded { task, .. }
                if task.kind == TaskKind::Step && self.compensable(&task.step) =>
            {
                self.saga_log.push(SagaEntry::Succeeded(unit_id(task)));
            }
            Event::TaskTimedOut { task } if task.kind == TaskKind::Step => {
                self.unknown.insert((unit_id(task), task.attempt));
            }
            Event::TaskFailed { task, error }
                if task.kind == TaskKind::Step && error.outcome_unknown =>
            {
                self.unknown.insert((unit_id(task), task.attempt));
            }
            Event::TimerFired { timer }
                if timer.kind == TimerKind::Timeout && timer.task_kind == TaskKind::Step =>
            {
                let unit = (timer.step.to_string(), timer.index);
                self.unknown.insert((unit, timer.attempt));
            }
            _ => {}
        }
        for c in &t.commands {
            if let Command::Dispatch(d) = c
                && d.task.kind == TaskKind::Step
                && self.compensable(&d.task.step)
            {
                let entry = SagaEntry::Started(unit_id(&d.task), d.task.attempt);
                self.saga_log.push(entry);
            }
        }
    }

    /// The units the engine must undo, newest first, and whether each one's
    /// outcome is unknown: a unit that succeeded goes by when it succeeded; one
    /// that never did but had an attempt end without a result, by when the
    /// first such attempt started.
    fn expected_undo(&self) -> Vec<(UnitId, bool)> {
        let succeeded: HashSet<&UnitId> = self
            .saga_log
            .iter()
            .filter_map(|e| match e {
                SagaEntry::Succeeded(unit) => Some(unit),
                SagaEntry::Started(..) => None,
            })
            .collect();
        let mut placed = HashSet::new();
        let mut order = Vec::new();
        for entry in &self.saga_log {
            match entry {
                SagaEntry::Succeeded(unit) => order.push((unit.clone(), false)),
                SagaEntry::Started(unit, attempt)
                    if !succeeded.contains(unit)
                        && self.unknown.contains(&(unit.clone(), *attempt))
                        && placed.insert(unit.clone()) =>
                {
                    order.push((unit.clone(), true));
                }
                SagaEntry::Started(..) => {}
            }
        }
        order.reverse();
        order
    }

    /// Moves dispatches whose attempt is no longer running to `lost`.
    fn reconcile(&mut self) {
        let ex = &self.ex;
        let (live, ended): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|d| {
            let Some(step) = ex.step(&d.task.step) else {
                return false;
            };
            let Some(unit) = step.units.get(d.task.index.unwrap_or(0) as usize) else {
                return false;
            };
            let unit = match d.task.kind {
                TaskKind::Step => Some(unit),
                TaskKind::Compensation => unit.compensation.as_deref(),
            };
            unit.is_some_and(|u| u.status == UnitStatus::Running && u.attempt == d.task.attempt)
        });
        self.pending = live;
        self.lost.extend(ended);
    }

    fn check_concurrency(&self) {
        for (step, state) in self.wf.steps.iter().zip(&self.ex.steps) {
            if let Some(call) = step.call().filter(|c| c.for_each.is_some()) {
                let active = state
                    .units
                    .iter()
                    .filter(|u| matches!(u.status, UnitStatus::Running | UnitStatus::BackingOff))
                    .count();
                assert!(
                    active <= call.max_concurrency as usize,
                    "{} runs {active} elements",
                    step.name
                );
            }
        }
    }

    fn answer(&mut self) {
        let d = self.pending.remove(self.tape.pick(self.pending.len()));
        self.now += self.tape.pick(20) as u64;
        let task = d.task.clone();
        let mut choice = self.tape.pick(21);
        if task.kind == TaskKind::Step {
            if self.victim.as_deref() == Some(&*task.step) {
                choice = 18 + self.tape.pick(2);
            } else if self.doomed.as_deref() == Some(&*task.step) {
                choice = 17;
            }
        }
        let event = match choice {
            0..=13 => Event::TaskSucceeded {
                task,
                output: json!({ "from": label(&d.task) }),
            },
            14..=16 => Event::TaskFailed {
                task,
                error: ErrorInfo::new("Flaky", "try again", true),
            },
            17 => Event::TaskFailed {
                task,
                error: ErrorInfo::new("Broken", "give up", false),
            },
            18 => {
                self.lost.push(d.clone());
                Event::TaskTimedOut { task }
            }
            20 => Event::TaskFailed {
                task,
                error: ErrorInfo::new("Lambda.Unhandled", "the worker died", true)
                    .with_outcome_unknown(),
            },
            _ => {
                // The attempt's own timeout timer fires; the function may still answer later.
                let timer = self.timers.iter().position(|(_, t)| {
                    t.kind == TimerKind::Timeout
                        && t.task_kind == task.kind
                        && *t.step == *task.step
                        && t.index == task.index
                        && t.attempt == task.attempt
                });
                let (fire_at, timer) = self
                    .timers
                    .remove(timer.expect("every attempt has a timeout timer"));
                self.now = self.now.max(fire_at);
                self.lost.push(d.clone());
                Event::TimerFired { timer }
            }
        };
        let t = self.apply(event);
        assert!(
            t.is_applied(),
            "the result of a running attempt was ignored: {:?}",
            t.outcome
        );
    }

    fn fire_timer(&mut self) {
        let (fire_at, timer) = self.timers.remove(self.tape.pick(self.timers.len()));
        self.now = self.now.max(fire_at);
        self.apply(Event::TimerFired { timer });
    }

    fn inject_duplicate(&mut self) {
        let event = self.delivered[self.tape.pick(self.delivered.len())].clone();
        let t = self.apply(event);
        assert!(!t.is_applied(), "a duplicate was applied");
    }

    fn inject_stale(&mut self) {
        let event = if self.lost.is_empty() {
            let d = &self.pending[self.tape.pick(self.pending.len())];
            Event::TaskSucceeded {
                task: TaskRef {
                    attempt: d.task.attempt + 10,
                    ..d.task.clone()
                },
                output: json!("from the future"),
            }
        } else {
            let d = &self.lost[self.tape.pick(self.lost.len())];
            if self.tape.pick(2) == 0 {
                Event::TaskSucceeded {
                    task: d.task.clone(),
                    output: json!("late"),
                }
            } else {
                Event::TaskFailed {
                    task: d.task.clone(),
                    error: ErrorInfo::new("Late", "late", true),
                }
            }
        };
        let t = self.apply(event);
        assert!(!t.is_applied(), "a stale result was applied");
    }

    fn drive(&mut self) {
        while !self.ex.status.is_terminal() {
            assert!(self.events < MAX_EVENTS, "no end after {MAX_EVENTS} events");
            let choice = self.tape.pick(43);
            match choice {
                0..=23 if !self.pending.is_empty() => self.answer(),
                24..=33 if !self.timers.is_empty() => self.fire_timer(),
                34..=35 if !self.delivered.is_empty() => self.inject_duplicate(),
                36..=38 if !self.lost.is_empty() || !self.pending.is_empty() => self.inject_stale(),
                39 => {
                    let running = self.ex.status == ExecutionStatus::Running;
                    let t = self.apply(Event::CancelRequested { reason: None });
                    assert_eq!(t.is_applied(), running, "{:?}", t.outcome);
                }
                // Signals, possibly before their step waits or after it gave up.
                40..=42 if !self.signals.is_empty() => {
                    let name = self.signals[self.tape.pick(self.signals.len())].clone();
                    self.now += 1;
                    self.apply(Event::SignalReceived {
                        name,
                        payload: json!({ "signalled": true }),
                        id: None,
                    });
                }
                _ if !self.pending.is_empty() => self.answer(),
                _ if !self.timers.is_empty() => self.fire_timer(),
                _ => panic!(
                    "stuck in {:?}: nothing outstanding\n{}",
                    self.ex.status,
                    serde_json::to_string_pretty(&self.ex).unwrap_or_default()
                ),
            }
        }
    }
}

fn label(task: &TaskRef) -> String {
    match task.index {
        Some(i) => format!("{}[{i}]", task.step),
        None => task.step.to_string(),
    }
}

fn run(spec: &Spec, choices: Vec<u32>) -> Run {
    run_with(spec, choices, None, None)
}

fn run_with(spec: &Spec, choices: Vec<u32>, victim: Option<String>, doomed: Option<String>) -> Run {
    let yaml = spec.yaml();
    let wf = Workflow::from_text(&yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let ex = Execution::new(&wf, "ex-prop");
    let mut run = Run {
        wf,
        ex,
        now: 1_000_000,
        tape: Tape { choices, at: 0 },
        pending: Vec::new(),
        lost: Vec::new(),
        timers: Vec::new(),
        delivered: Vec::new(),
        history: Vec::new(),
        transitions: Vec::new(),
        commands: Vec::new(),
        saga_log: Vec::new(),
        unknown: HashSet::new(),
        victim,
        doomed,
        cancelled: false,
        failed_steps: Vec::new(),
        signals: (0..spec.steps.len())
            .filter(|&i| spec.steps[i].wait == Some(Wait::Signal))
            .map(|i| format!("sig{i}"))
            .collect(),
        events: 0,
    };
    run.apply(Event::Started {
        input: spec.input(),
        timeout_ms: None,
        parent: None,
    });
    run.drive();
    run
}

fn dispatches(run: &Run) -> Vec<&Dispatch> {
    run.commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn check(spec: &Spec, run: &Run) {
    let status = run.ex.status;
    assert!(status.is_terminal());
    let all = dispatches(run);

    // Attempts: numbered 1, 2, ... and never more than the policy allows.
    let mut attempts: BTreeMap<UnitKey, Vec<u32>> = BTreeMap::new();
    for d in &all {
        attempts
            .entry(unit_key(&d.task))
            .or_default()
            .push(d.task.attempt);
    }
    for ((step, index, kind), seen) in &attempts {
        let i: usize = step[1..].parse().expect("steps are named s<i>");
        let limit = match kind {
            TaskKind::Step => spec.steps[i].max_attempts,
            TaskKind::Compensation => spec.compensation_attempts,
        };
        let expected: Vec<u32> = (1..=seen.len() as u32).collect();
        assert_eq!(seen, &expected, "{step} {index:?} {kind:?}");
        assert!(
            seen.len() as u32 <= limit,
            "{step} {index:?} {kind:?}: {} attempts > {limit}",
            seen.len()
        );
    }

    // Compensations: the succeeded units that have one, and those whose
    // outcome is unknown, newest first.
    let compensated: Vec<UnitId> = all
        .iter()
        .filter(|d| d.task.kind == TaskKind::Compensation && d.task.attempt == 1)
        .map(|d| unit_id(&d.task))
        .collect();
    let expected: Vec<(UnitId, bool)> = if status == ExecutionStatus::Succeeded {
        Vec::new()
    } else {
        run.expected_undo()
    };
    let expected_units: Vec<UnitId> = expected.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(compensated, expected_units);
    // Each says whether it undoes an unknown outcome, and one that would read
    // the missing output gets the step's input and key instead.
    let started: HashMap<UnitId, bool> = run
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Emit(e)
                if e.kind == LifecycleKind::CompensationStarted && e.attempt == Some(1) =>
            {
                let step = e.step.as_deref().expect("a step").to_string();
                Some(((step, e.index), e.outcome_unknown))
            }
            _ => None,
        })
        .collect();
    for (unit, unknown) in &expected {
        assert_eq!(started.get(unit), Some(unknown), "{unit:?}");
        let undo = all
            .iter()
            .find(|d| d.task.kind == TaskKind::Compensation && unit_id(&d.task) == *unit)
            .expect("dispatched");
        let step = all
            .iter()
            .rev()
            .find(|d| d.task.kind == TaskKind::Step && unit_id(&d.task) == *unit)
            .expect("the step ran");
        let i: usize = unit.0[1..].parse().expect("steps are named s<i>");
        let expected_input = match (unknown, spec.steps[i].compensation_reads_output) {
            (true, true) => json!({
                "outcome_unknown": true,
                "step_input": step.input,
                "step_idempotency_key": step.idempotency_key,
            }),
            (false, true) => {
                let output = json!({ "from": label(&step.task) });
                json!({ "output": output })
            }
            (_, false) => json!({ "undo": unit.0, "flag": spec.flags[0] }),
        };
        assert_eq!(undo.input, expected_input, "{unit:?}");
        let state = &run.ex.step(&unit.0).expect("a step").units[unit.1.unwrap_or(0) as usize];
        assert_eq!(state.outcome_unknown, *unknown, "{unit:?}");
    }

    // `wait_until`: a time in range waits (or passes at once); any other value fails the step.
    for (i, s) in spec.steps.iter().enumerate() {
        if let Some(Wait::Until(v)) = s.wait {
            let state = &run.ex.steps[i];
            match state.status {
                StepStatus::Succeeded => {
                    assert!(UNTIL_VALID[v], "s{i} waited until {}", until_value(v))
                }
                StepStatus::Failed => {
                    assert!(!UNTIL_VALID[v], "s{i} failed on {}", until_value(v));
                    let error = state.error.as_ref().expect("an error");
                    assert_eq!(error.name, "InvalidWaitUntil");
                    assert!(!error.retryable);
                }
                _ => {}
            }
        }
    }

    // Idempotency keys: one per unit, across attempts; no two units share one.
    let mut keys: HashMap<UnitKey, &str> = HashMap::new();
    let mut owners: HashMap<&str, UnitKey> = HashMap::new();
    for d in &all {
        let unit = unit_key(&d.task);
        let key = d.idempotency_key.as_str();
        assert_eq!(
            *keys.entry(unit.clone()).or_insert(key),
            key,
            "{unit:?} changed key"
        );
        assert_eq!(
            *owners.entry(key).or_insert(unit.clone()),
            unit,
            "two units share {key}"
        );
    }

    // Skips: a false condition or all needs skipped means never dispatched.
    let skipped = spec.skipped();
    for (i, skip) in skipped.iter().enumerate() {
        if *skip {
            let name = format!("s{i}");
            assert!(
                !all.iter().any(|d| *d.task.step == *name),
                "{name} should be skipped"
            );
        }
    }

    // The final status agrees with what happened.
    let dead_letters = run
        .commands
        .iter()
        .filter(|c| matches!(c, Command::DeadLetter(_)))
        .count();
    assert_eq!(
        dead_letters > 0,
        status == ExecutionStatus::CompensationFailed,
        "{status:?}"
    );
    match status {
        ExecutionStatus::Succeeded => {
            assert!(!run.cancelled);
            for (i, state) in run.ex.steps.iter().enumerate() {
                let ok = match state.status {
                    StepStatus::Succeeded => !skipped[i],
                    StepStatus::Skipped => skipped[i],
                    StepStatus::Failed => spec.steps[i].continue_on_failure,
                    _ => false,
                };
                assert!(ok, "s{i} ended {:?} in a succeeded execution", state.status);
            }
        }
        ExecutionStatus::Cancelled => assert!(run.cancelled),
        ExecutionStatus::Failed => {
            assert!(!run.cancelled);
            assert!(compensated.is_empty());
        }
        ExecutionStatus::Compensated => {
            assert!(!run.cancelled);
            assert!(!compensated.is_empty());
        }
        ExecutionStatus::CompensationFailed => {}
        other => panic!("not terminal: {other:?}"),
    }
    if run.cancelled {
        assert!(matches!(
            status,
            ExecutionStatus::Cancelled | ExecutionStatus::CompensationFailed
        ));
    }

    // Replay: the same events on a fresh execution give the same everything.
    let mut fresh = Execution::new(&run.wf, run.ex.id.clone());
    for ((event, now), original) in run.history.iter().zip(&run.transitions) {
        let t = apply(&run.wf, &mut fresh, event.clone(), *now);
        assert_eq!(&t, original, "replay diverged at {event:?}");
    }
    assert_eq!(
        serde_json::to_value(&fresh).expect("state serialises"),
        serde_json::to_value(&run.ex).expect("state serialises")
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=20000 searches deeper.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workflows_under_random_event_orders(
        spec in spec(),
        choices in prop::collection::vec(any::<u32>(), 0..600),
    ) {
        let run = run(&spec, choices);
        check(&spec, &run);
    }

    /// A mutating step whose every attempt times out, then a later step that
    /// fails for good: whatever else happens, in whatever order, each of its
    /// units that started is undone as an unknown outcome.
    #[test]
    fn a_timed_out_mutating_step_is_undone_when_a_later_step_fails(
        spec in spec(),
        victim in any::<prop::sample::Index>(),
        elements in prop::option::of((1usize..=3, 1u32..=2)),
        choices in prop::collection::vec(any::<u32>(), 0..600),
    ) {
        let mut spec = spec;
        let k = victim.index(spec.steps.len());
        let v = &mut spec.steps[k];
        v.needs_mask = 0;
        v.condition = None;
        v.wait = None;
        v.mutates = true;
        v.compensate = true;
        v.continue_on_failure = true;
        v.for_each = elements;
        let doomed = spec.steps.len();
        spec.steps.push(StepSpec {
            needs_mask: 1 << k,
            mutates: false,
            compensate: false,
            max_attempts: 1,
            delay_ms: 0,
            backoff: "fixed",
            full_jitter: false,
            condition: None,
            continue_on_failure: false,
            for_each: None,
            wait: None,
            compensation_reads_output: false,
        });
        let victim = format!("s{k}");
        let run = run_with(&spec, choices, Some(victim.clone()), Some(format!("s{doomed}")));
        check(&spec, &run);
        prop_assert_ne!(run.ex.status, ExecutionStatus::Succeeded);
        let all = dispatches(&run);
        let units = |kind: TaskKind| -> Vec<Option<u32>> {
            let mut units: Vec<Option<u32>> = all
                .iter()
                .filter(|d| *d.task.step == *victim && d.task.kind == kind && d.task.attempt == 1)
                .map(|d| d.task.index)
                .collect();
            units.sort();
            units
        };
        // (None started if a step before it failed at once.)
        prop_assert_eq!(units(TaskKind::Step), units(TaskKind::Compensation));
        for unit in &run.ex.step(&victim).expect("the victim").units {
            prop_assert_ne!(unit.status, UnitStatus::Succeeded);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case checks a serialisation round trip after every event, so fewer by default.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Nonsense in any order: `apply` never panics, every state it leaves
    /// serialises and reads back the same, and replay gives the same again.
    #[test]
    fn arbitrary_events_never_break_the_engine(
        spec in spec(),
        choices in prop::collection::vec(any::<u32>(), 0..1_200),
    ) {
        chaos(&spec, choices);
    }
}

/// A shell that sends anything: results for tasks it was given and for
/// tasks it made up, timers real and invented, signals, cancels, restarts,
/// arbitrary payloads, and a clock that jumps anywhere, backwards included.
struct Chaos {
    wf: Workflow,
    ex: Execution,
    now: u64,
    tape: Tape,
    tasks: Vec<TaskRef>,
    timers: Vec<TimerId>,
    history: Vec<(Event, u64)>,
    transitions: Vec<Transition>,
}

const INDEXES: [Option<u32>; 5] = [None, Some(0), Some(1), Some(3), Some(u32::MAX)];
const ATTEMPTS: [u32; 5] = [0, 1, 2, 4, u32::MAX];

impl Chaos {
    fn value(&mut self) -> Value {
        match self.tape.pick(16) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(-1),
            3 => json!(u64::MAX),
            4 => json!(i64::MIN),
            5 => json!(1.5),
            6 => json!(-1e300),
            7 => json!(""),
            8 => json!("2030-01-01T00:00:00Z"),
            9 => json!("275000-01-01T00:00:00Z"),
            10 => json!([1, "two", null, [[]]]),
            11 => json!({ "flags": { "f0": "yes" }, "lists": { "s0": 7, "s1": null } }),
            12 => json!({
                "flags": {},
                "lists": { "s0": [1, 2], "s1": "x", "s2": [[], {}] },
                "until": { "s0": -5, "s1": u64::MAX, "s2": "nope", "s3": 1e300 },
            }),
            13 => json!("\u{0}\u{ffff}\"\\ÿ"),
            14 => json!({ "reservationId": { "deep": [1] } }),
            _ => json!({ "from": "chaos" }),
        }
    }

    fn tick(&mut self) {
        self.now = match self.tape.pick(24) {
            0 => 0,
            1 => u64::MAX,
            2 => i64::MAX as u64,
            3 => MAX_TIMESTAMP,
            4 => self.now.saturating_sub(5_000),
            _ => self.now.saturating_add(self.tape.pick(3_000) as u64),
        };
    }

    fn step_name(&mut self) -> std::sync::Arc<str> {
        let n = self.wf.steps.len();
        match self.tape.pick(n + 1) {
            i if i < n => self.wf.steps[i].name.clone(),
            _ => "nope".into(),
        }
    }

    fn kind(&mut self) -> TaskKind {
        if self.tape.pick(3) == 0 {
            TaskKind::Compensation
        } else {
            TaskKind::Step
        }
    }

    fn result(&mut self, task: TaskRef) -> Event {
        match self.tape.pick(5) {
            0 | 1 => Event::TaskSucceeded {
                task,
                output: self.value(),
            },
            2 => {
                let name = ["Flaky", "Timeout", "", "Lambda.Unhandled"][self.tape.pick(4)];
                let mut error = ErrorInfo::new(name, "chaos", self.tape.pick(2) == 0);
                if self.tape.pick(3) == 0 {
                    error = error.with_outcome_unknown();
                }
                Event::TaskFailed { task, error }
            }
            _ => Event::TaskTimedOut { task },
        }
    }

    fn event(&mut self, input: &Value) -> Event {
        match self.tape.pick(19) {
            0 => {
                let input = if self.tape.pick(3) == 0 {
                    self.value()
                } else {
                    input.clone()
                };
                let timeout_ms = [None, Some(1_000), Some(u64::MAX)][self.tape.pick(3)];
                // Sometimes a child, so its end is sent to a parent.
                let parent = (self.tape.pick(2) == 0).then(|| ParentRef {
                    execution_id: "ex-parent".into(),
                    task: TaskRef {
                        step: "run".into(),
                        index: None,
                        attempt: 1,
                        kind: TaskKind::Step,
                    },
                    depth: 1,
                });
                Event::Started {
                    input,
                    timeout_ms,
                    parent,
                }
            }
            1..=5 if !self.tasks.is_empty() => {
                let i = self.tape.pick(self.tasks.len());
                let task = self.tasks[i].clone();
                self.result(task)
            }
            6 => {
                let task = TaskRef {
                    step: self.step_name(),
                    index: INDEXES[self.tape.pick(INDEXES.len())],
                    attempt: ATTEMPTS[self.tape.pick(ATTEMPTS.len())],
                    kind: self.kind(),
                };
                self.result(task)
            }
            7..=9 if !self.timers.is_empty() => {
                let i = self.tape.pick(self.timers.len());
                Event::TimerFired {
                    timer: self.timers[i].clone(),
                }
            }
            10 => {
                let kinds = [
                    TimerKind::Timeout,
                    TimerKind::Retry,
                    TimerKind::Wait,
                    TimerKind::SignalTimeout,
                    TimerKind::ExecutionTimeout,
                ];
                Event::TimerFired {
                    timer: TimerId {
                        kind: kinds[self.tape.pick(kinds.len())],
                        task_kind: self.kind(),
                        step: self.step_name(),
                        index: INDEXES[self.tape.pick(INDEXES.len())],
                        attempt: ATTEMPTS[self.tape.pick(ATTEMPTS.len())],
                    },
                }
            }
            11 | 12 => Event::SignalReceived {
                name: ["sig0", "sig1", "sig2", "other", ""][self.tape.pick(5)].to_string(),
                payload: self.value(),
                id: [None, Some("a"), Some("b")][self.tape.pick(3)].map(str::to_string),
            },
            13 => Event::CancelRequested {
                reason: (self.tape.pick(2) == 0).then(|| "chaos".to_string()),
            },
            14 => Event::RedriveRequested {
                reason: (self.tape.pick(2) == 0).then(|| "chaos".to_string()),
            },
            15 => Event::CompensationRequested {
                task: TaskRef {
                    step: "run".into(),
                    index: None,
                    attempt: ATTEMPTS[self.tape.pick(ATTEMPTS.len())],
                    kind: TaskKind::Compensation,
                },
            },
            _ => match self.tasks.last().cloned() {
                Some(task) => self.result(task),
                None => Event::Started {
                    input: input.clone(),
                    timeout_ms: None,
                    parent: None,
                },
            },
        }
    }

    fn apply(&mut self, event: Event) {
        let before = self.ex.clone();
        let t = apply(&self.wf, &mut self.ex, event.clone(), self.now);
        assert_counts_kept(&self.ex, &t);
        if let Outcome::Ignored(reason) = &t.outcome {
            assert!(t.commands.is_empty(), "ignored ({reason:?}) with commands");
            assert_eq!(
                before, self.ex,
                "ignored ({reason:?}) yet the state changed"
            );
        }
        let text = serde_json::to_string(&self.ex).expect("the state serialises");
        let back: Execution = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the state does not read back: {e}\n{text}"));
        assert_eq!(back, self.ex, "the state reads back different\n{text}");
        for c in &t.commands {
            let text = serde_json::to_string(c).expect("a command serialises");
            let back: Command = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("a command does not read back: {e}\n{text}"));
            assert_eq!(&back, c);
            let latest = MAX_TIMESTAMP.max(self.now);
            match c {
                Command::Dispatch(d) => {
                    assert!(d.deadline <= latest, "{c:?}");
                    self.tasks.push(d.task.clone());
                }
                // A child's end comes back as a result of the task it runs for.
                Command::StartChild(child) => self.tasks.push(child.parent.task.clone()),
                Command::SendEvent { event, .. } => {
                    if let Event::CompensationRequested { task } = &**event {
                        self.tasks.push(task.clone());
                    }
                }
                Command::StartTimer { timer, fire_at } => {
                    assert!(*fire_at <= latest, "{c:?}");
                    self.timers.push(timer.clone());
                }
                _ => {}
            }
        }
        self.history.push((event, self.now));
        self.transitions.push(t);
    }
}

/// The spec's workflow with some read-only steps repeating until their
/// output is `true`, some steps running a child workflow instead of a
/// function, some `for_each` steps tolerating failures, and an execution
/// timeout when the first flag is set.
fn chaos_workflow(spec: &Spec) -> Workflow {
    let yaml = spec.yaml();
    let mut definition = baton_core::WorkflowDefinition::parse(&yaml, Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    for (i, (name, step)) in definition.steps.0.iter_mut().enumerate() {
        let mask = spec.steps[i].needs_mask;
        if step.function.is_some() && mask % 5 == 1 {
            step.function = None;
            step.workflow = Some("child".into());
            step.retry = None;
            if mask % 10 == 1 {
                // Undone by the child's own compensations.
                step.compensate = None;
                step.reason = None;
            }
        }
        if step.for_each.is_some() {
            match mask % 4 {
                0 => step.tolerated_failures = Some(1),
                1 => step.tolerated_failure_percent = Some(50),
                _ => {}
            }
        }
        let reads_only =
            step.function.is_some() && step.mutates == Some(false) && step.for_each.is_none();
        if reads_only && mask.is_multiple_of(3) {
            step.repeat = Some(baton_core::definition::RepeatDefinition {
                until: format!("${{ steps.{name}.output == true }}"),
                max_iterations: 3,
                delay: spec.steps[i]
                    .needs_mask
                    .is_multiple_of(2)
                    .then(|| "10ms".to_string()),
            });
        }
    }
    if spec.flags[0] {
        definition.timeout = Some("1m".into());
    }
    Workflow::from_definition(definition.clone())
        .unwrap_or_else(|e| panic!("{e}\n{:#}", definition.to_json()))
}

fn chaos(spec: &Spec, choices: Vec<u32>) {
    let wf = chaos_workflow(spec);
    let ex = Execution::new(&wf, "ex-chaos");
    let events = choices.len() / 4;
    let mut chaos = Chaos {
        wf,
        ex,
        now: 1_000_000,
        tape: Tape { choices, at: 0 },
        tasks: Vec::new(),
        timers: Vec::new(),
        history: Vec::new(),
        transitions: Vec::new(),
    };
    let input = spec.input();
    for _ in 0..events {
        chaos.tick();
        let event = chaos.event(&input);
        chaos.apply(event);
    }
    let mut fresh = Execution::new(&chaos.wf, chaos.ex.id.clone());
    for ((event, now), original) in chaos.history.iter().zip(&chaos.transitions) {
        let t = apply(&chaos.wf, &mut fresh, event.clone(), *now);
        assert_eq!(&t, original, "replay diverged at {event:?}");
    }
    assert_eq!(fresh, chaos.ex);
}

/// The harness itself must be able to reach every kind of ending, or the
/// property above would check less than it claims.
#[test]
fn random_runs_reach_every_ending() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (spec(), prop::collection::vec(any::<u32>(), 0..600));
    let mut seen = BTreeMap::new();
    for _ in 0..400 {
        let (spec, choices) = strategy.new_tree(&mut runner).expect("a case").current();
        let run = run(&spec, choices);
        *seen.entry(run.ex.status.as_str()).or_insert(0) += 1;
        let undoes_unknown = run.commands.iter().any(|c| {
            matches!(c, Command::Emit(e) if e.kind == LifecycleKind::CompensationStarted && e.outcome_unknown)
        });
        if undoes_unknown {
            *seen.entry("an unknown outcome undone").or_insert(0) += 1;
        }
        if run.ex.steps.iter().any(|s| {
            s.error
                .as_ref()
                .is_some_and(|e| e.name == "InvalidWaitUntil")
        }) {
            *seen.entry("an invalid wait_until").or_insert(0) += 1;
        }
    }
    for status in [
        "succeeded",
        "failed",
        "compensated",
        "compensation_failed",
        "cancelled",
        "an unknown outcome undone",
        "an invalid wait_until",
    ] {
        assert!(seen.contains_key(status), "no run saw {status}: {seen:?}");
    }
}
