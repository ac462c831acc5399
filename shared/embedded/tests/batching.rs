//! Results for one execution that arrive together are applied together: one
//! load, one commit, a history entry each, the same state and commands as
//! applying them one by one.

use std::sync::Arc;

use baton_core::definition::Format;
use baton_core::engine::TaskKind;
use baton_core::{Event, ExecutionStatus, Outcome, TaskRef, WorkflowDefinition};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::faults::{FaultPlan, FaultyBackend, Op};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Clock, Coordinator, ManualClock};
use serde_json::json;

const BRANCHES: usize = 10;

fn fan_out() -> String {
    let mut text = String::from(
        "name: fan\ndefaults: { retry: { max_attempts: 1 }, timeout: 1m }\nsteps:\n  root: { function: f, mutates: false }\n",
    );
    for b in 0..BRANCHES {
        text.push_str(&format!(
            "  b{b}: {{ function: f, mutates: false, needs: [root] }}\n"
        ));
    }
    let all: Vec<String> = (0..BRANCHES).map(|b| format!("b{b}")).collect();
    text.push_str(&format!(
        "  join: {{ function: f, mutates: false, needs: [{}] }}\n",
        all.join(", ")
    ));
    text
}

fn succeeded(step: &str) -> Event {
    Event::TaskSucceeded {
        task: TaskRef {
            step: step.into(),
            index: None,
            attempt: 1,
            kind: TaskKind::Step,
        },
        output: json!({ "from": step }),
    }
}

type Node = Coordinator<FaultyBackend<SqliteBackend>>;

async fn node(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
) -> (Arc<Node>, Arc<FaultyBackend<SqliteBackend>>) {
    let backend = SqliteBackend::open(&dir.join("baton.db"), SqliteOptions::default()).unwrap();
    let definition = WorkflowDefinition::parse(&fan_out(), Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, clock.now())
        .await
        .unwrap();
    // No faults: the wrapper only counts the calls.
    let counted = Arc::new(FaultyBackend::new(Arc::new(backend), FaultPlan::new(0)));
    (Arc::new(Coordinator::new(counted.clone(), clock)), counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_results_arriving_together_are_one_transition_and_equal_one_by_one() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let together_dir = tempfile::tempdir().unwrap();
    let apart_dir = tempfile::tempdir().unwrap();
    let (together, together_calls) = node(together_dir.path(), clock.clone()).await;
    let (apart, _) = node(apart_dir.path(), clock.clone()).await;
    for n in [&together, &apart] {
        n.start("fan", None, "x", json!({})).await.unwrap();
        n.handle("x", succeeded("root")).await.unwrap();
    }

    let commits_before = together_calls.calls(Op::Commit);
    let loads_before = together_calls.calls(Op::Load);
    let answers = futures::future::join_all((0..BRANCHES).map(|b| {
        let together = together.clone();
        async move { together.handle("x", succeeded(&format!("b{b}"))).await }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.expect("applied"), Outcome::Applied);
    }
    let commits = together_calls.calls(Op::Commit) - commits_before;
    let loads = together_calls.calls(Op::Load) - loads_before;
    println!("{BRANCHES} branch results at once: {commits} commits, {loads} loads");
    assert!(
        commits <= 3,
        "{BRANCHES} results arriving together took {commits} commits (one each, and conflicts, \
         before they were applied together)"
    );
    assert_eq!(
        together_calls.counts().total(),
        0,
        "nothing was injected: a commit counted is a real one"
    );

    for b in 0..BRANCHES {
        apart
            .handle("x", succeeded(&format!("b{b}")))
            .await
            .unwrap();
    }
    let a = together.backend().load("x").await.unwrap().unwrap();
    let b = apart.backend().load("x").await.unwrap().unwrap();
    assert_eq!(
        a.version, b.version,
        "one version per applied event either way"
    );
    assert_eq!(a.state, b.state, "the same state as one by one");
    assert_eq!(
        a.state.step("join").unwrap().status,
        baton_core::engine::StepStatus::Running,
        "the join was dispatched once all branches succeeded"
    );
    let events = |h: Vec<baton_runtime::ports::HistoryEntry>| {
        let mut events: Vec<String> = h.iter().map(|e| format!("{:?}", e.event)).collect();
        events.sort();
        events
    };
    assert_eq!(
        events(together.backend().history("x").await.unwrap()),
        events(apart.backend().history("x").await.unwrap()),
        "a history entry per event"
    );
    assert_eq!(a.status(), ExecutionStatus::Running);
}

// ---------------------------------------------------------------------------
// The same property over random workflows and random event orders: events
// applied in batches of random sizes (`Coordinator::handle_all`, one load,
// `apply` folded with one `now`, one commit) leave the same state, the same
// history and the same delivered commands (task rows, timers, lifecycle
// events, dead letters) as the same events applied one at a time. The events
// are whatever reaches an execution: results of outstanding tasks (success,
// failure, timeout), timers firing, signals, a cancel, and duplicates and
// stale results among them, in any order and within one batch too.

use std::path::{Path, PathBuf};

use baton_core::ErrorInfo;
use baton_core::engine::{Dispatch, TimerId};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Function,
    /// `wait: 50ms`.
    Wait,
    /// `wait_for` signal `sig<i>`, for at most 200 ms.
    Signal,
}

#[derive(Debug, Clone)]
struct StepSpec {
    /// Bit `j`: the step needs step `j` (only earlier steps count).
    needs_mask: u8,
    kind: Kind,
    max_attempts: u32,
    /// Elements and max_concurrency.
    for_each: Option<(usize, u32)>,
    /// A mutating step with a compensation (else `mutates: false`).
    compensate: bool,
    continue_on_failure: bool,
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    (
        any::<u8>(),
        prop_oneof![
            6 => Just(Kind::Function),
            1 => Just(Kind::Wait),
            1 => Just(Kind::Signal),
        ],
        1u32..=3,
        prop::option::weighted(0.3, (0usize..=3, 1u32..=2)),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(needs_mask, kind, max_attempts, for_each, compensate, continue_on_failure)| {
                StepSpec {
                    needs_mask,
                    kind,
                    max_attempts,
                    for_each,
                    compensate,
                    continue_on_failure,
                }
            },
        )
}

fn yaml(steps: &[StepSpec]) -> String {
    let mut out = String::from(
        "name: random\ndefaults:\n  timeout: 1s\n  compensation_retry: { max_attempts: 2, backoff: fixed, delay: 10ms, jitter: none }\nsteps:\n",
    );
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!("  s{i}:\n"));
        match s.kind {
            Kind::Function => out.push_str(&format!("    function: f{i}\n")),
            Kind::Wait => out.push_str("    wait: 50ms\n"),
            Kind::Signal => out.push_str(&format!(
                "    wait_for: {{ signal: sig{i}, timeout: 200ms }}\n"
            )),
        }
        let needs: Vec<String> = (0..i)
            .filter(|j| s.needs_mask & (1 << j) != 0)
            .map(|j| format!("s{j}"))
            .collect();
        if !needs.is_empty() {
            out.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        if s.continue_on_failure {
            out.push_str("    continue_on_failure: true\n");
        }
        if !matches!(s.kind, Kind::Function) {
            continue;
        }
        if s.compensate {
            out.push_str(&format!(
                "    compensate: {{ function: undo{i}, input: {{ output: \"${{ steps.s{i}.output }}\" }} }}\n"
            ));
        } else {
            out.push_str("    mutates: false\n");
        }
        out.push_str(&format!(
            "    retry: {{ max_attempts: {}, backoff: fixed, delay: 10ms, jitter: none }}\n",
            s.max_attempts
        ));
        match s.for_each {
            Some((_, concurrency)) => out.push_str(&format!(
                "    for_each: \"${{ input.lists.s{i} }}\"\n    max_concurrency: {concurrency}\n    input: {{ item: \"${{ item }}\" }}\n"
            )),
            None => out.push_str(&format!("    input: {{ step: s{i} }}\n")),
        }
    }
    out
}

fn input(steps: &[StepSpec]) -> serde_json::Value {
    let lists: serde_json::Map<String, serde_json::Value> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.for_each
                .map(|(n, _)| (format!("s{i}"), json!((0..n).collect::<Vec<_>>())))
        })
        .collect();
    json!({ "lists": lists })
}

/// Random choices read from a tape; once it runs out every choice is 0,
/// which answers the oldest task with success, so every run moves on.
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

/// One execution `x` on its own database; commits are not synced (the
/// property is about what is written, not when it reaches the disk).
struct Side {
    _dir: tempfile::TempDir,
    db: PathBuf,
    coordinator: Coordinator<SqliteBackend>,
}

async fn side(definition: &WorkflowDefinition, clock: Arc<ManualClock>) -> Side {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("baton.db");
    let options = SqliteOptions {
        synchronous_full: false,
        ..SqliteOptions::default()
    };
    let backend = SqliteBackend::open(&db, options).unwrap();
    backend.put_workflow(definition, clock.now()).await.unwrap();
    Side {
        _dir: dir,
        db,
        coordinator: Coordinator::new(Arc::new(backend), clock),
    }
}

/// What the transitions delivered, as the store holds it: tasks, timers,
/// lifecycle events and dead letters. Answered tasks and fired timers are
/// deleted by the transition that consumes them, but never in the round
/// that created them (a round's events are chosen before it is applied), so
/// comparing after every round compares every command.
///
/// Bodies are compared as JSON values: an input evaluated from an
/// expression may list an object's keys in another order each time.
#[derive(Debug, PartialEq)]
struct Delivered {
    tasks: Vec<(String, serde_json::Value, i64)>,
    timers: Vec<(String, serde_json::Value, i64)>,
    events: Vec<(String, i64, serde_json::Value)>,
    dead_letters: Vec<(String, String, serde_json::Value)>,
}

fn value(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap()
}

fn delivered(db: &Path) -> Delivered {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows3 = |sql: &str| -> Vec<(String, String, i64)> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tasks = rows3("SELECT dedup_key, body, available_at FROM tasks ORDER BY dedup_key")
        .into_iter()
        .map(|(key, body, at)| (key, value(body), at))
        .collect();
    let timers = rows3("SELECT timer_key, timer, fire_at FROM timers ORDER BY timer_key")
        .into_iter()
        .map(|(key, timer, at)| (key, value(timer), at))
        .collect();
    let events = rows3("SELECT kind, body, at FROM events ORDER BY id")
        .into_iter()
        .map(|(kind, body, at)| (kind, at, value(body)))
        .collect();
    let dead_letters = {
        let mut stmt = conn
            .prepare("SELECT id, reason, body FROM dead_letters ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))
            .unwrap()
            .map(|row| row.map(|(id, reason, body)| (id, reason, value(body))))
            .collect::<Result<_, _>>()
            .unwrap()
    };
    Delivered {
        tasks,
        timers,
        events,
        dead_letters,
    }
}

/// The tasks and timers outstanding, read from what was delivered.
fn outstanding(d: &Delivered) -> (Vec<Dispatch>, Vec<(TimerId, u64)>) {
    let tasks = d
        .tasks
        .iter()
        .map(|(_, body, _)| serde_json::from_value(body.clone()).unwrap())
        .collect();
    let timers = d
        .timers
        .iter()
        .map(|(_, timer, at)| (serde_json::from_value(timer.clone()).unwrap(), *at as u64))
        .collect();
    (tasks, timers)
}

/// A batch of events for the round, and the time it is applied at.
fn next_batch(
    tape: &mut Tape,
    tasks: &[Dispatch],
    timers: &[(TimerId, u64)],
    seen: &[Event],
    signals: &[String],
    now: u64,
) -> (Vec<Event>, u64) {
    let size = 1 + tape.pick(8);
    let mut at = now + tape.pick(20) as u64;
    let mut batch = Vec::with_capacity(size);
    for _ in 0..size {
        let answer = |tape: &mut Tape| {
            let task = tasks[tape.pick(tasks.len())].task.clone();
            match tape.pick(10) {
                0..=5 => Event::TaskSucceeded {
                    output: json!({ "from": &*task.step, "index": task.index }),
                    task,
                },
                6 => Event::TaskFailed {
                    task,
                    error: ErrorInfo::new("Flaky", "try again", true),
                },
                7 => Event::TaskFailed {
                    task,
                    error: ErrorInfo::new("Broken", "give up", false),
                },
                8 => Event::TaskFailed {
                    task,
                    error: ErrorInfo::new("Lambda.Unhandled", "died", true).with_outcome_unknown(),
                },
                _ => Event::TaskTimedOut { task },
            }
        };
        let event = match tape.pick(20) {
            0..=9 if !tasks.is_empty() => answer(tape),
            10..=12 if !timers.is_empty() => {
                let (timer, fire_at) = timers[tape.pick(timers.len())].clone();
                at = at.max(fire_at);
                Event::TimerFired { timer }
            }
            // A duplicate of anything sent before, applied or not.
            13..=14 if !seen.is_empty() => seen[tape.pick(seen.len())].clone(),
            // A result for an attempt that is not running.
            15..=16 if !tasks.is_empty() => {
                let mut task = tasks[tape.pick(tasks.len())].task.clone();
                task.attempt += 1 + tape.pick(2) as u32;
                Event::TaskSucceeded {
                    task,
                    output: json!("stale"),
                }
            }
            17 if !signals.is_empty() => Event::SignalReceived {
                name: signals[tape.pick(signals.len())].clone(),
                payload: json!({ "signalled": true }),
                id: None,
            },
            18 if tape.pick(4) == 0 => Event::CancelRequested {
                reason: Some("random".into()),
            },
            _ if !tasks.is_empty() => answer(tape),
            _ if !timers.is_empty() => {
                let (timer, fire_at) = timers[tape.pick(timers.len())].clone();
                at = at.max(fire_at);
                Event::TimerFired { timer }
            }
            _ if !seen.is_empty() => seen[tape.pick(seen.len())].clone(),
            _ => Event::CancelRequested { reason: None },
        };
        batch.push(event);
    }
    (batch, at)
}

/// Rounds at most: enough for most runs to end.
const MAX_ROUNDS: usize = 80;

async fn batches_equal_one_by_one(steps: Vec<StepSpec>, choices: Vec<u32>) {
    let text = yaml(&steps);
    let definition =
        WorkflowDefinition::parse(&text, Format::Yaml).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let batched = side(&definition, clock.clone()).await;
    let single = side(&definition, clock.clone()).await;
    for s in [&batched, &single] {
        s.coordinator
            .start("random", None, "x", input(&steps))
            .await
            .unwrap();
    }
    let signals: Vec<String> = (0..steps.len())
        .filter(|&i| matches!(steps[i].kind, Kind::Signal))
        .map(|i| format!("sig{i}"))
        .collect();
    let mut tape = Tape { choices, at: 0 };
    let mut seen: Vec<Event> = Vec::new();
    for round in 0..MAX_ROUNDS {
        let before = delivered(&batched.db);
        let (tasks, timers) = outstanding(&before);
        let record = batched
            .coordinator
            .backend()
            .load("x")
            .await
            .unwrap()
            .unwrap();
        if record.status().is_terminal() || (tasks.is_empty() && timers.is_empty()) {
            break;
        }
        let (batch, at) = next_batch(&mut tape, &tasks, &timers, &seen, &signals, clock.now());
        clock.set(at);

        let together: Vec<Outcome> = batched
            .coordinator
            .handle_all("x", batch.clone())
            .await
            .into_iter()
            .map(|r| r.expect("applied or ignored"))
            .collect();
        let mut apart = Vec::with_capacity(batch.len());
        for event in &batch {
            apart.push(single.coordinator.handle("x", event.clone()).await.unwrap());
        }
        let context = || format!("round {round}, batch {batch:#?}\n{text}");
        assert_eq!(together, apart, "the same outcomes: {}", context());
        let a = batched
            .coordinator
            .backend()
            .load("x")
            .await
            .unwrap()
            .unwrap();
        let b = single
            .coordinator
            .backend()
            .load("x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a, b, "the same record (state, version): {}", context());
        assert_eq!(
            batched.coordinator.backend().history("x").await.unwrap(),
            single.coordinator.backend().history("x").await.unwrap(),
            "the same history: {}",
            context()
        );
        let (a, b) = (delivered(&batched.db), delivered(&single.db));
        assert_eq!(a.tasks, b.tasks, "the same tasks: {}", context());
        assert_eq!(a.timers, b.timers, "the same timers: {}", context());
        assert_eq!(
            a.events,
            b.events,
            "the same lifecycle events: {}",
            context()
        );
        assert_eq!(
            a.dead_letters,
            b.dead_letters,
            "the same dead letters: {}",
            context()
        );
        seen.extend(batch);
    }
    for s in [&batched, &single] {
        assert_eq!(
            s.coordinator.backend().version_conflicts(),
            0,
            "one writer, no conflicts"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=1000 searches deeper.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn events_applied_in_random_batches_equal_one_by_one(
        steps in prop::collection::vec(step_spec(), 1..=6),
        choices in prop::collection::vec(any::<u32>(), 0..400),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(batches_equal_one_by_one(steps, choices));
    }
}
