//! A `for_each` at the largest size allowed: it runs to the end through the
//! pure engine, its work per event does not grow with the number of
//! elements, and a longer list fails its step with a named error.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use baton_core::definition::Format;
use baton_core::engine::{
    Command, Dispatch, Event, Execution, ExecutionStatus, StepStatus, TaskKind, Transition,
    UnitStatus, apply,
};
use baton_core::limits::MAX_FOR_EACH_ITEMS;
use baton_core::{ErrorInfo, Workflow};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;
const CONCURRENCY: usize = 64;

/// A map over `input.items`, 64 at a time, whose output is the list of outputs.
const MAP: &str = r#"
name: big-map
defaults: { retry: { max_attempts: 2, backoff: fixed, delay: 1s } }
steps:
  each:
    function: work
    mutates: false
    for_each: "${ input.items }"
    max_concurrency: 64
    input: { item: "${ item }", index: "${ index }" }
output: "${ steps.each.output }"
"#;

/// Every element has a compensation, and the step after the map fails, so
/// every element is undone.
const SAGA: &str = r#"
name: big-saga
defaults: { retry: { max_attempts: 1 } }
steps:
  each:
    function: reserve
    for_each: "${ input.items }"
    max_concurrency: 64
    input: "${ item }"
    compensate: { function: release, input: "${ steps.each.output }" }
  charge: { needs: [each], function: charge, mutates: false }
"#;

/// Held by each test here: they are heavy, and the timing test must not
/// share the machine with the others.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn workflow(yaml: &str) -> Workflow {
    Workflow::from_text(yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn items(n: usize) -> Value {
    json!({ "items": (0..n).collect::<Vec<_>>() })
}

/// Drives one execution the way the coordinator does: every event is applied
/// to a copy of the stored state, which replaces it once applied.
struct Driver<'w> {
    wf: &'w Workflow,
    ex: Execution,
    now: u64,
    /// Dispatches not answered yet.
    pending: VecDeque<Dispatch>,
    /// Whether to check every transition (off when timing).
    check: bool,
    events: usize,
    most_in_flight: usize,
}

impl<'w> Driver<'w> {
    fn new(wf: &'w Workflow, check: bool) -> Driver<'w> {
        Driver {
            wf,
            ex: Execution::new(wf, "ex-scale"),
            now: T0,
            pending: VecDeque::new(),
            check,
            events: 0,
            most_in_flight: 0,
        }
    }

    fn apply(&mut self, event: Event) -> Transition {
        let mut state = self.ex.clone();
        let t = apply(self.wf, &mut state, event, self.now);
        assert!(t.is_applied(), "{:?}", t.outcome);
        self.ex = state;
        self.events += 1;
        self.now += 1;
        for c in &t.commands {
            if let Command::Dispatch(d) = c {
                self.pending.push_back(d.clone());
            }
        }
        self.most_in_flight = self.most_in_flight.max(self.pending.len());
        if self.check {
            self.check_transition(&t);
        }
        t
    }

    /// What the engine says about the units matches what the shell sees.
    fn check_transition(&self, t: &Transition) {
        let each = &self.ex.steps[0];
        // Rebuilding the counts looks at every unit: now and then is enough.
        if self.events.is_multiple_of(500) || self.ex.status.is_terminal() {
            assert!(each.units.is_consistent());
        }
        let elements_in_flight = self
            .pending
            .iter()
            .filter(|d| d.task.step.as_ref() == "each" && d.task.kind == TaskKind::Step)
            .count();
        if each.status == StepStatus::Running && self.ex.status == ExecutionStatus::Running {
            assert_eq!(each.units.active(), elements_in_flight);
        }
        let earliest_deadline = self.pending.iter().map(|d| d.deadline).min();
        if !self.ex.status.is_terminal() {
            assert_eq!(t.next_wakeup, earliest_deadline);
        } else {
            assert_eq!(t.next_wakeup, None);
        }
    }

    /// Answers the oldest and the newest outstanding dispatch in turn, so
    /// results come back out of order.
    fn next_dispatch(&mut self) -> Option<Dispatch> {
        if self.events.is_multiple_of(2) {
            self.pending.pop_back()
        } else {
            self.pending.pop_front()
        }
    }

    fn succeed(&mut self, d: &Dispatch, output: Value) -> Transition {
        self.apply(Event::TaskSucceeded {
            task: d.task.clone(),
            output,
        })
    }

    fn finish(&self) -> Option<(ExecutionStatus, Option<Value>, Option<ErrorInfo>)> {
        self.ex.status.is_terminal().then(|| {
            (
                self.ex.status,
                self.ex.output.clone(),
                self.ex.failure.clone(),
            )
        })
    }
}

fn element_output(d: &Dispatch) -> Value {
    json!({ "done": d.input["item"].clone() })
}

/// Runs the map over `n` elements, every element answered with success.
fn run_map(wf: &Workflow, n: usize, check: bool) -> Driver<'_> {
    let mut driver = Driver::new(wf, check);
    driver.apply(Event::Started {
        input: items(n),
        timeout_ms: None,
        parent: None,
    });
    while let Some(d) = driver.next_dispatch() {
        let output = element_output(&d);
        driver.succeed(&d, output);
    }
    driver
}

/// Runs the saga over `n` elements: every element succeeds, `charge` fails,
/// every compensation succeeds. Returns the driver and the elements in the
/// order they succeeded, then in the order they were undone.
fn run_saga(wf: &Workflow, n: usize, check: bool) -> (Driver<'_>, Vec<u32>, Vec<u32>) {
    let mut driver = Driver::new(wf, check);
    let mut succeeded = Vec::with_capacity(n);
    let mut undone = Vec::with_capacity(n);
    driver.apply(Event::Started {
        input: items(n),
        timeout_ms: None,
        parent: None,
    });
    while let Some(d) = driver.next_dispatch() {
        match (d.task.step.as_ref(), d.task.kind) {
            ("each", TaskKind::Step) => {
                succeeded.push(d.task.index.expect("an element"));
                let output = json!({ "reservation": d.input.clone() });
                driver.succeed(&d, output);
            }
            ("each", TaskKind::Compensation) => {
                undone.push(d.task.index.expect("an element"));
                driver.succeed(&d, Value::Null);
            }
            _ => {
                driver.apply(Event::TaskFailed {
                    task: d.task.clone(),
                    error: ErrorInfo::new("Declined", "the card was declined", false),
                });
            }
        }
    }
    (driver, succeeded, undone)
}

#[test]
fn a_for_each_of_the_most_elements_allowed_runs_to_success_64_at_a_time() {
    let _alone = heavy();
    let wf = workflow(MAP);
    let n = MAX_FOR_EACH_ITEMS;
    let mut driver = Driver::new(&wf, true);
    let t = driver.apply(Event::Started {
        input: items(n),
        timeout_ms: None,
        parent: None,
    });
    let first: Vec<u32> = t
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Dispatch(d) => d.task.index,
            _ => None,
        })
        .collect();
    assert_eq!(first, (0..CONCURRENCY as u32).collect::<Vec<_>>());
    let mut reloaded = false;
    while let Some(d) = driver.next_dispatch() {
        let i = d.task.index.expect("an element");
        assert_eq!(d.input, json!({ "item": i, "index": i }));
        let output = element_output(&d);
        driver.succeed(&d, output);
        let each = &driver.ex.steps[0];
        assert!(each.units.active() <= CONCURRENCY);
        if !reloaded && each.units.succeeded() == n / 2 {
            // A stored state reads back as the same state, with its counts
            // rebuilt, and the run goes on from it.
            reloaded = true;
            let text = serde_json::to_string(&driver.ex).expect("the state serialises");
            let stored: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(
                stored["steps"][0]["units"].as_array().map(Vec::len),
                Some(n)
            );
            assert_eq!(
                stored["steps"][0]["items"].as_array().map(Vec::len),
                Some(n)
            );
            let back: Execution = serde_json::from_str(&text).expect("the state reads back");
            assert_eq!(back, driver.ex);
            let (live, read) = (&driver.ex.steps[0].units, &back.steps[0].units);
            assert_eq!(
                (
                    live.succeeded(),
                    live.running(),
                    live.active(),
                    live.next_due()
                ),
                (
                    read.succeeded(),
                    read.running(),
                    read.active(),
                    read.next_due()
                )
            );
            driver.ex = back;
        }
    }
    assert!(reloaded);
    assert_eq!(driver.most_in_flight, CONCURRENCY);
    assert_eq!(driver.events, n + 1);
    let expected: Vec<Value> = (0..n).map(|i| json!({ "done": i })).collect();
    assert_eq!(
        driver.finish(),
        Some((
            ExecutionStatus::Succeeded,
            Some(Value::Array(expected)),
            None
        ))
    );
    let each = &driver.ex.steps[0];
    assert_eq!(each.status, StepStatus::Succeeded);
    assert_eq!(each.units.succeeded(), n);
    assert!(each.units.iter().all(|u| u.status == UnitStatus::Succeeded));
}

#[test]
fn a_saga_over_the_most_elements_allowed_undoes_each_newest_first() {
    let _alone = heavy();
    let wf = workflow(SAGA);
    let n = MAX_FOR_EACH_ITEMS;
    let (driver, succeeded, undone) = run_saga(&wf, n, true);
    assert_eq!(driver.most_in_flight, CONCURRENCY);
    assert_eq!(succeeded.len(), n);
    let newest_first: Vec<u32> = succeeded.iter().rev().copied().collect();
    assert_eq!(undone, newest_first);
    let (status, _, error) = driver.finish().expect("finished");
    assert_eq!(status, ExecutionStatus::Compensated);
    assert_eq!(error.expect("a cause").name, "Declined");
    assert_eq!(driver.ex.steps[0].units.running(), 0);
}

#[test]
fn a_for_each_over_more_elements_than_allowed_fails_its_step_with_a_named_error() {
    let _alone = heavy();
    let wf = workflow(MAP);
    let n = MAX_FOR_EACH_ITEMS + 1;
    let mut driver = Driver::new(&wf, true);
    let t = driver.apply(Event::Started {
        input: items(n),
        timeout_ms: None,
        parent: None,
    });
    assert!(driver.pending.is_empty(), "no element starts");
    let each = &driver.ex.steps[0];
    assert_eq!(each.status, StepStatus::Failed);
    assert!(each.units.is_empty() && each.items.is_none());
    let error = each.error.clone().expect("the step's error");
    assert_eq!(error.name, "ForEachTooLarge");
    assert!(!error.retryable);
    assert_eq!(
        error.message,
        "`for_each` of step `each` gave 10001 elements, more than the limit of 10000"
    );
    let failed = t.commands.iter().any(|c| {
        matches!(c, Command::Emit(e) if e.kind.as_str() == "step.failed"
            && e.error.as_ref().is_some_and(|e| e.name == "ForEachTooLarge"))
    });
    assert!(failed, "step.failed names the error: {:?}", t.commands);
    let (status, _, cause) = driver.finish().expect("finished");
    assert_eq!(status, ExecutionStatus::Failed);
    assert_eq!(cause.expect("a cause").name, "ForEachTooLarge");
}

/// How long `run` takes over `n` elements, `times` times in a row, and how
/// many events each run applied.
#[allow(
    clippy::disallowed_methods,
    reason = "times the engine from the outside; the engine itself reads no clock"
)]
fn timed(run: &impl Fn(usize) -> usize, n: usize, times: u32) -> (Duration, usize) {
    let started = Instant::now();
    let mut events = 0;
    for _ in 0..times {
        events = run(n);
    }
    (started.elapsed() / times, events)
}

/// Checks that `run` over 10,000 elements takes less than 20 times as long
/// as over 1,000. Linear total work makes it 10 times; work per event that
/// grows with the number of elements, 100 times. The small size runs ten
/// times in a row so that both sizes are timed over the same stretch of a
/// busy machine's load, and each keeps its fastest of three rounds.
fn assert_work_per_event_is_flat(name: &str, run: impl Fn(usize) -> usize) {
    const SMALL: usize = 1_000;
    const LARGE: usize = 10_000;
    const BOUND: f64 = 20.0;
    let (mut small, mut large) = ((Duration::MAX, 0), (Duration::MAX, 0));
    for _ in 0..3 {
        small = small.min(timed(&run, SMALL, 10));
        large = large.min(timed(&run, LARGE, 1));
    }
    let ratio = large.0.as_secs_f64() / small.0.as_secs_f64();
    let per_event = |(d, events): (Duration, usize)| d.as_secs_f64() * 1e6 / events as f64;
    println!(
        "{name}: {SMALL} elements, {} events in {:?} ({:.1} µs/event); \
         {LARGE} elements, {} events in {:?} ({:.1} µs/event); ratio {ratio:.1}",
        small.1,
        small.0,
        per_event(small),
        large.1,
        large.0,
        per_event(large),
    );
    assert!(
        ratio < BOUND,
        "{name}: {LARGE} elements took {ratio:.1} times as long as {SMALL} (bound {BOUND})"
    );
}

#[test]
fn work_per_event_does_not_grow_with_the_number_of_elements() {
    let _alone = heavy();
    let map = workflow(MAP);
    assert_work_per_event_is_flat("map", |n| run_map(&map, n, false).events);
    let saga = workflow(SAGA);
    assert_work_per_event_is_flat("saga", |n| run_saga(&saga, n, false).0.events);
}
