//! The fault-injection tier on the embedded backend (SQLite).
//!
//! The same sagas as the AWS tier (`baton_runtime::faults::sagas`), driven by
//! a small worker loop of the test's own over
//! `Coordinator<FaultyBackend<SqliteBackend>>`: tasks are received from the
//! inner backend's task queue and run by the example handlers, and each
//! result is reported through `coordinator.handle`. Applied or ignored, the
//! task is acknowledged; refused for good, it is dead-lettered with its
//! result; failed in a way a retry may fix, it stays leased and comes back
//! when its lease runs out, as an SQS message would. Due timers go the same
//! way (`due_timers`, `delete_timer`, `dead_letter_timer`). The harness also
//! reports some results and fires some timers twice, and "crashes": it drops
//! a result unreported, or abandons the call that records it midway.
//!
//! Then, with faults off, every dead letter is listed and redriven and every
//! execution runs to its end; the invariants are those of the AWS tier
//! (`baton_runtime::faults::audit`). Sizes: `BATON_FAULT_EXECUTIONS`
//! (default 300), `BATON_FAULT_SEED`, `BATON_FAULT_PER_SEED` (default 100),
//! `BATON_FAULT_RATE` (default 0.05). Workers killed with `kill -9` are
//! covered by `cli/tests/crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::definition::Format;
use baton_core::engine::{Outcome, TaskRef};
use baton_core::{Event, ExecutionStatus, Workflow, WorkflowDefinition};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_examples::{HandlerEnv, Ledger, register_all_with};
use baton_runtime::faults::audit::{self, Accounted, Effect, Expected};
use baton_runtime::faults::{FaultCounts, FaultPlan, FaultyBackend, Op, SplitMix64, sagas};
use baton_runtime::ports::{
    DeadLetterKind, DeadLetterRecord, DeadLetterStore, ExecutionStore, LeasedTask, StoreError,
    TaskQueue, WorkflowStore,
};
use baton_runtime::step::{Registry, StepContext};
use baton_runtime::{Clock, Coordinator, CoordinatorError, SystemClock};
use futures::StreamExt;
use serde_json::Value;

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_seed() -> u64 {
    match std::env::var("BATON_FAULT_SEED") {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            v.strip_prefix("0x")
                .map(|hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|| v.parse())
                .expect("BATON_FAULT_SEED is a number")
        }
        _ => 0x0bad_5eed,
    }
}

/// How long a received task stays leased: a result left unreported comes back this soon.
const VISIBILITY_MS: u64 = 500;
/// Worker loops per seed run.
const WORKERS: usize = 3;
/// Tasks one worker loop receives at once.
const BATCH: usize = 4;
/// Starts in flight at once.
const STARTING: usize = 8;
/// A result is dropped unreported (a worker crash) with this probability,
/// and the call recording it is abandoned midway with the same.
const CRASH: f64 = 0.03;
/// A result is reported, or a timer fired, twice with this probability.
const DUPLICATE: f64 = 0.05;

type Faulty = FaultyBackend<SqliteBackend>;

struct Planned {
    id: String,
    workflow: &'static str,
    input: Value,
    expect: ExecutionStatus,
}

/// An event the harness handed to the coordinator, and what became of it.
struct Delivered {
    execution_id: String,
    event: Event,
    /// Dead-lettered (as a task with its result, or a timer), under this id.
    dead_letter: Option<String>,
    /// Left for redelivery (a transient failure, a crash): it comes back.
    left: bool,
    /// When the coordinator's answer came (epoch ms).
    at: u64,
}

#[derive(Default, Clone)]
struct Stats {
    tasks: u64,
    timers: u64,
    left_for_redelivery: u64,
    duplicates: u64,
    crashed: u64,
    abandoned: u64,
    start_retries: u64,
    starts_refused: u64,
    dead_letters: u64,
    redriven: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.tasks += o.tasks;
        self.timers += o.timers;
        self.left_for_redelivery += o.left_for_redelivery;
        self.duplicates += o.duplicates;
        self.crashed += o.crashed;
        self.abandoned += o.abandoned;
        self.start_retries += o.start_retries;
        self.starts_refused += o.starts_refused;
        self.dead_letters += o.dead_letters;
        self.redriven += o.redriven;
    }
}

struct Run {
    seed: u64,
    inner: Arc<SqliteBackend>,
    faulty: Arc<Faulty>,
    coordinator: Arc<Coordinator<Faulty>>,
    registry: Registry,
    ledger: Arc<Ledger>,
    workflows: BTreeMap<String, Arc<Workflow>>,
    planned: Vec<Planned>,
    rng: Mutex<SplitMix64>,
    chaos: AtomicBool,
    stop: AtomicBool,
    last_activity: Mutex<Instant>,
    delivered: Mutex<Vec<Delivered>>,
    dead_letters: Mutex<BTreeMap<String, DeadLetterRecord>>,
    redriven: Mutex<BTreeSet<String>>,
    finished: Mutex<BTreeSet<String>>,
    stats: Mutex<Stats>,
    anomalies: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Run {
    fn flag(&self, what: String) {
        lock(&self.anomalies).push(format!("seed {:#x}: {what}", self.seed));
    }

    fn chance(&self, p: f64) -> bool {
        self.chaos.load(Ordering::SeqCst) && lock(&self.rng).chance(p)
    }

    fn touch(&self) {
        *lock(&self.last_activity) = Instant::now();
    }

    fn record(&self, execution_id: &str, event: &Event, dead_letter: Option<String>, left: bool) {
        lock(&self.delivered).push(Delivered {
            execution_id: execution_id.to_string(),
            event: event.clone(),
            dead_letter,
            left,
            at: SystemClock.now(),
        });
    }
}

/// Every coordinator operation fails a `rate` fraction of the time with each
/// transient class, and one store call fails for good (its task or timer is
/// dead-lettered). The embedded backend carries out commands in the
/// transaction that commits them, so delivery operations are never called.
fn plan_for(seed: u64, count: usize, rate: f64) -> FaultPlan {
    FaultPlan::random(seed, &Op::COORDINATOR, rate, 2, (count * 10) as u64)
}

async fn setup(dir: &Path, seed: u64, count: usize, rate: f64) -> Arc<Run> {
    let inner = Arc::new(
        SqliteBackend::open(
            &dir.join(format!("faults-{seed:x}.db")),
            SqliteOptions {
                max_receives: 10,
                visibility_ms: VISIBILITY_MS,
                synchronous_full: false,
                ..SqliteOptions::default()
            },
        )
        .expect("the database opens"),
    );
    let ledger =
        Arc::new(Ledger::open(dir.join(format!("ledger-{seed:x}.db"))).expect("the ledger opens"));
    let mut registry = Registry::new();
    register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));

    let mut workflows = BTreeMap::new();
    let order = sagas::fast_order_saga(include_str!("../../../workflows/order-saga.yaml"));
    for text in [
        order,
        sagas::FAN_OUT.to_string(),
        sagas::FOR_EACH.to_string(),
    ] {
        let definition = WorkflowDefinition::parse(&text, Format::Yaml).expect("the saga parses");
        inner
            .put_workflow(&definition, SystemClock.now())
            .await
            .expect("the saga is stored");
        let compiled = Workflow::from_definition(definition).expect("the saga is valid");
        workflows.insert(compiled.name.to_string(), Arc::new(compiled));
    }

    let mut rng = SplitMix64::new(seed);
    let scenarios = sagas::scenarios();
    let planned = (0..count)
        .map(|i| {
            let scenario = &scenarios[rng.below(scenarios.len() as u64) as usize];
            let id = format!("e{seed:x}-{i}");
            Planned {
                input: scenario.input(&id, &mut rng),
                id,
                workflow: scenario.workflow,
                expect: scenario.expect,
            }
        })
        .collect();
    let faulty = Arc::new(FaultyBackend::new(
        inner.clone(),
        plan_for(seed, count, rate),
    ));
    let coordinator = Arc::new(Coordinator::new(faulty.clone(), Arc::new(SystemClock)));
    Arc::new(Run {
        seed,
        inner,
        faulty,
        coordinator,
        registry,
        ledger,
        workflows,
        planned,
        rng: Mutex::new(rng),
        chaos: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        last_activity: Mutex::new(Instant::now()),
        delivered: Mutex::new(Vec::new()),
        dead_letters: Mutex::new(BTreeMap::new()),
        redriven: Mutex::new(BTreeSet::new()),
        finished: Mutex::new(BTreeSet::new()),
        stats: Mutex::new(Stats::default()),
        anomalies: Mutex::new(Vec::new()),
    })
}

/// Whether the failure may pass by itself (the message is then left for redelivery).
fn may_pass(e: &CoordinatorError) -> bool {
    e.is_retryable() || matches!(e, CoordinatorError::Store(StoreError::Denied(_)))
}

/// Runs one leased task and reports its result.
async fn run_task(run: &Run, leased: LeasedTask) {
    let task = &leased.task;
    lock(&run.stats).tasks += 1;
    let Some(handler) = run.registry.get(&task.function) else {
        run.flag(format!("no handler for `{}`", task.function));
        return;
    };
    let remaining = task.deadline.saturating_sub(SystemClock.now()).max(1);
    let call = handler.call(StepContext::of(task), task.input.clone());
    let event = match tokio::time::timeout(Duration::from_millis(remaining), call).await {
        Ok(Ok(output)) => Event::TaskSucceeded {
            task: task.task.clone(),
            output,
        },
        Ok(Err(error)) => Event::TaskFailed {
            task: task.task.clone(),
            error: error.into_error_info(),
        },
        Err(_) => Event::TaskTimedOut {
            task: task.task.clone(),
        },
    };
    if run.chance(CRASH) {
        // The worker died before it reported: the lease runs out, the task comes back.
        lock(&run.stats).crashed += 1;
        run.record(&task.execution_id, &event, None, true);
        return;
    }
    let times = if run.chance(DUPLICATE) { 2 } else { 1 };
    for _ in 0..times {
        report(run, &leased, &event).await;
    }
    if times == 2 {
        lock(&run.stats).duplicates += 1;
    }
}

async fn report(run: &Run, leased: &LeasedTask, event: &Event) {
    let id = &*leased.task.execution_id;
    if run.chance(CRASH) {
        let after = Duration::from_millis(lock(&run.rng).below(5));
        let _ = tokio::time::timeout(after, run.coordinator.handle(id, event.clone())).await;
        lock(&run.stats).abandoned += 1;
        run.record(id, event, None, true);
        return;
    }
    match run.coordinator.handle(id, event.clone()).await {
        Ok(_) => {
            run.record(id, event, None, false);
            // Applying the result deleted the task with it; an ignored one is acknowledged.
            if let Err(e) = run.inner.ack(leased).await {
                run.flag(format!("task of `{id}` not acknowledged: {e}"));
            }
        }
        Err(e) if may_pass(&e) => {
            lock(&run.stats).left_for_redelivery += 1;
            run.record(id, event, None, true);
        }
        Err(e) => {
            let reason = format!(
                "the result of step `{}` attempt {} of execution `{id}` cannot be recorded: {e}",
                leased.task.task.step, leased.task.task.attempt
            );
            let receipt = leased.receipt.split(':').next().unwrap_or_default();
            match run
                .inner
                .dead_letter_task(leased, reason, Some(event), SystemClock.now())
                .await
            {
                Ok(moved) => {
                    run.record(id, event, moved.then(|| format!("task-{receipt}")), !moved)
                }
                Err(_) => run.record(id, event, None, true),
            }
        }
    }
}

/// One worker loop: receive, run, report, as `baton worker` does.
async fn worker(run: Arc<Run>) {
    let mut idle = 0u64;
    while !run.stop.load(Ordering::SeqCst) {
        let leased = run
            .inner
            .receive(&[], BATCH, VISIBILITY_MS, SystemClock.now())
            .await
            .unwrap_or_default();
        if leased.is_empty() {
            idle = (idle + 1).min(5);
            tokio::time::sleep(Duration::from_millis(5 * idle)).await;
            continue;
        }
        idle = 0;
        run.touch();
        futures::future::join_all(leased.into_iter().map(|t| run_task(&run, t))).await;
    }
}

/// Fires due timers, as the embedded worker does.
async fn timers(run: Arc<Run>) {
    while !run.stop.load(Ordering::SeqCst) {
        let due = run
            .inner
            .due_timers(SystemClock.now(), 64)
            .await
            .unwrap_or_default();
        if due.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        run.touch();
        for (execution_id, timer) in due {
            lock(&run.stats).timers += 1;
            let event = Event::TimerFired {
                timer: timer.clone(),
            };
            let times = if run.chance(DUPLICATE) { 2 } else { 1 };
            for _ in 0..times {
                match run.coordinator.handle(&execution_id, event.clone()).await {
                    Ok(Outcome::Applied) => run.record(&execution_id, &event, None, false),
                    Ok(Outcome::Ignored(_)) => {
                        run.record(&execution_id, &event, None, false);
                        let _ = run.inner.delete_timer(&execution_id, &timer).await;
                    }
                    Err(e) if may_pass(&e) => {
                        lock(&run.stats).left_for_redelivery += 1;
                        run.record(&execution_id, &event, None, true);
                    }
                    Err(e) => {
                        let reason = format!(
                            "timer `{}` of execution `{execution_id}` cannot be applied: {e}",
                            timer.key()
                        );
                        let dead = run
                            .inner
                            .dead_letter_timer(&execution_id, &timer, reason, SystemClock.now())
                            .await
                            .is_ok();
                        let id = format!("timer-{execution_id}-{}", timer.key());
                        run.record(&execution_id, &event, dead.then_some(id), !dead);
                    }
                }
            }
            if times == 2 {
                lock(&run.stats).duplicates += 1;
            }
        }
    }
}

/// Starts one execution as a client would: retried while it may pass;
/// false when refused for good (tried again once faults are off).
async fn start_one(run: &Run, planned: &Planned) -> bool {
    for attempt in 0..40u64 {
        let started = run
            .coordinator
            .start(planned.workflow, None, &planned.id, planned.input.clone())
            .await;
        match started {
            Ok(_) => return true,
            Err(e) if may_pass(&e) => {
                lock(&run.stats).start_retries += 1;
                tokio::time::sleep(Duration::from_millis(5 * (attempt + 1).min(10))).await;
            }
            Err(_) => {
                lock(&run.stats).starts_refused += 1;
                return false;
            }
        }
    }
    false
}

async fn unfinished(run: &Run) -> Vec<String> {
    let mut pending = Vec::new();
    for planned in &run.planned {
        if lock(&run.finished).contains(&planned.id) {
            continue;
        }
        match run.inner.load(&planned.id).await {
            Ok(Some(record)) if record.status().is_terminal() => {
                lock(&run.finished).insert(planned.id.clone());
            }
            _ => pending.push(planned.id.clone()),
        }
    }
    pending
}

/// Waits until every execution ended, or nothing happened for `quiet`, or
/// `limit` passed; returns the unfinished.
async fn settle(run: &Run, quiet: Duration, limit: Duration) -> Vec<String> {
    let began = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pending = unfinished(run).await;
        let idle = lock(&run.last_activity).elapsed();
        if pending.is_empty() || idle >= quiet || began.elapsed() >= limit {
            return pending;
        }
    }
}

/// Lists the dead letters, checks each, and redrives every task and timer.
async fn redrive_all(run: &Run) {
    let listed = match run.inner.list_dead_letters().await {
        Ok(listed) => listed,
        Err(e) => {
            run.flag(format!("the dead letters cannot be listed: {e}"));
            return;
        }
    };
    for record in listed {
        let fresh = lock(&run.dead_letters)
            .insert(record.id.clone(), record.clone())
            .is_none();
        if fresh {
            lock(&run.stats).dead_letters += 1;
        }
        if record.execution_id.is_none() || record.reason.trim().is_empty() {
            run.flag(format!(
                "dead letter `{}` does not name its execution and reason: {record:?}",
                record.id
            ));
        }
        if record.kind != DeadLetterKind::Task {
            continue;
        }
        match run.inner.redrive_dead_letter(&record.id).await {
            Ok(true) => {
                lock(&run.stats).redriven += 1;
                lock(&run.redriven).insert(record.id.clone());
            }
            Ok(false) => run.flag(format!(
                "dead letter `{}` was listed but its redrive finds nothing",
                record.id
            )),
            Err(e) => run.flag(format!(
                "dead letter `{}` cannot be redriven: {e}",
                record.id
            )),
        }
    }
}

/// Whether the attempt a result is for was ended by its timeout before the
/// result was handed over at `handed_at`.
fn timed_out_before(
    history: &[baton_runtime::ports::HistoryEntry],
    event: &Event,
    handed_at: u64,
) -> bool {
    if !matches!(
        event,
        Event::TaskSucceeded { .. } | Event::TaskFailed { .. }
    ) {
        return false;
    }
    let Some(task) = task_of(event) else {
        return false;
    };
    history.iter().any(|h| {
        let timeout = match &h.event {
            Event::TaskTimedOut { .. } => true,
            Event::TimerFired { timer } => timer.kind == baton_core::engine::TimerKind::Timeout,
            _ => false,
        };
        timeout && task_of(&h.event).as_ref() == Some(&task) && h.at <= handed_at
    })
}

/// The attempt an event concerns.
fn task_of(event: &Event) -> Option<TaskRef> {
    match event {
        Event::TaskSucceeded { task, .. }
        | Event::TaskFailed { task, .. }
        | Event::TaskTimedOut { task } => Some(task.clone()),
        Event::TimerFired { timer } => Some(TaskRef {
            step: timer.step.clone(),
            index: timer.index,
            attempt: timer.attempt,
            kind: timer.task_kind,
        }),
        _ => None,
    }
}

/// Every invariant, after the run: per execution, then per delivered event.
async fn audit_run(run: &Run) {
    let dead: Vec<DeadLetterRecord> = lock(&run.dead_letters).values().cloned().collect();
    let dead_tasks: Vec<(String, TaskRef)> = dead
        .iter()
        .filter_map(|d| {
            let execution = d.execution_id.clone()?;
            let task = if let Some(timer) = d.body.get("timer") {
                let timer: baton_core::TimerId = serde_json::from_value(timer.clone()).ok()?;
                TaskRef {
                    step: timer.step.clone(),
                    index: timer.index,
                    attempt: timer.attempt,
                    kind: timer.task_kind,
                }
            } else {
                serde_json::from_value::<baton_core::engine::Dispatch>(d.body.get("task")?.clone())
                    .ok()?
                    .task
            };
            Some((execution, task))
        })
        .collect();
    let effects = run.ledger.effects().expect("the ledger reads");
    let mut records = BTreeMap::new();
    for planned in &run.planned {
        let record = run.inner.load(&planned.id).await.expect("load");
        let history = run.inner.history(&planned.id).await.expect("history");
        let mine: Vec<Effect> = effects
            .iter()
            .filter(|e| e.execution_id == planned.id)
            .map(|e| Effect {
                row: e.id,
                execution_id: e.execution_id.clone(),
                step: e.step.clone(),
                index: e.index,
                function: e.function.clone(),
                idempotency_key: e.idempotency_key.clone(),
            })
            .collect();
        // A timeout is explained when the attempt's result was dead-lettered,
        // or was first handed over only after the timeout (late, not lost).
        let explained = |task: &TaskRef, timed_out_at: u64| {
            let dead_lettered = dead_tasks
                .iter()
                .any(|(execution, t)| *execution == planned.id && t == task);
            let first = lock(&run.delivered)
                .iter()
                .filter(|d| d.execution_id == planned.id && !d.left && d.dead_letter.is_none())
                .filter(|d| {
                    matches!(&d.event, Event::TaskSucceeded { task: t, .. } | Event::TaskFailed { task: t, .. } if t == task)
                })
                .map(|d| d.at)
                .min();
            dead_lettered || first.is_some_and(|first| first >= timed_out_at)
        };
        let expected = Expected {
            workflow: &run.workflows[planned.workflow],
            status: planned.expect,
            dead_letters: &dead,
            effects: &mine,
            timeout_explained: &explained,
        };
        let found = audit::audit_execution(&planned.id, record.as_ref(), &history, &expected);
        if !found.is_empty() && std::env::var_os("BATON_FAULT_DEBUG").is_some() {
            println!(
                "--- {} ({}, input {})",
                planned.id, planned.workflow, planned.input
            );
            for h in &history {
                println!(
                    "  #{} {} {}",
                    h.seq,
                    h.at,
                    serde_json::to_string(&h.event).unwrap_or_default()
                );
            }
            for f in run
                .faulty
                .injected()
                .iter()
                .filter(|f| f.execution_id.as_deref() == Some(&planned.id))
            {
                println!("  fault: {} call {} {}", f.op, f.call, f.class);
            }
        }
        for anomaly in found {
            run.flag(anomaly);
        }
        records.insert(planned.id.clone(), (record, history));
    }

    for d in lock(&run.delivered).iter() {
        if let Some(id) = &d.dead_letter {
            if !lock(&run.redriven).contains(id) {
                run.flag(format!(
                    "dead letter `{id}` of `{}` was never listed and redriven",
                    d.execution_id
                ));
            }
            continue;
        }
        let Some((Some(record), history)) = records.get(&d.execution_id) else {
            run.flag(format!(
                "an event for `{}`, which does not exist: {:?}",
                d.execution_id, d.event
            ));
            continue;
        };
        match audit::account_for_event(record, history, &d.event) {
            Ok(Accounted::Applied | Accounted::Superseded) => {}
            // Left for redelivery: the same result or timer came back and is accounted for then.
            Err(_) if d.left => {}
            // Handed over only after its attempt had timed out: late, not lost.
            Err(_) if timed_out_before(history, &d.event, d.at) => {}
            Err(why) => run.flag(format!(
                "an event for `{}` was lost: {why} ({:?})",
                d.execution_id,
                task_of(&d.event)
            )),
        }
    }
}

struct SeedOutcome {
    executions: usize,
    faults: FaultCounts,
    stats: Stats,
    anomalies: Vec<String>,
}

async fn run_seed(dir: &Path, seed: u64, count: usize, rate: f64) -> SeedOutcome {
    let began = Instant::now();
    let run = setup(dir, seed, count, rate).await;
    println!("seed {seed:#x}: {}", run.faulty.plan());
    let mut loops: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(run.clone())))
        .collect();
    loops.push(tokio::spawn(timers(run.clone())));

    let refused: Vec<usize> = futures::stream::iter(0..run.planned.len())
        .map(|i| {
            let run = run.clone();
            async move { (!start_one(&run, &run.planned[i]).await).then_some(i) }
        })
        .buffer_unordered(STARTING)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let stalled = settle(&run, Duration::from_secs(3), Duration::from_secs(120)).await;

    // Faults off: a person redrives the dead letters; clients retry refused starts.
    run.faulty.set_enabled(false);
    run.chaos.store(false, Ordering::SeqCst);
    for i in refused {
        if !start_one(&run, &run.planned[i]).await {
            run.flag(format!(
                "execution `{}` cannot be started even with faults off",
                run.planned[i].id
            ));
        }
    }
    redrive_all(&run).await;
    let mut pending = settle(&run, Duration::from_secs(3), Duration::from_secs(90)).await;
    if !pending.is_empty() {
        redrive_all(&run).await;
        pending = settle(&run, Duration::from_secs(3), Duration::from_secs(60)).await;
    }
    // Drain: tasks left leased come back after their lease and are reported.
    let draining = Instant::now();
    while draining.elapsed() < Duration::from_secs(20) {
        let (tasks, _, _) = run.inner.queue_depths().unwrap_or((1, 0, 0));
        if tasks == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.await;
    }
    let _ = pending;
    let (tasks, _, _) = run.inner.queue_depths().unwrap_or_default();
    if tasks > 0 {
        run.flag(format!(
            "{tasks} tasks are still queued after every execution ended"
        ));
    }
    for record in run.inner.list_dead_letters().await.unwrap_or_default() {
        if record.kind == DeadLetterKind::Task {
            run.flag(format!(
                "dead letter `{}` is left after the redrive ({})",
                record.id, record.reason
            ));
        }
        lock(&run.dead_letters)
            .entry(record.id.clone())
            .or_insert(record);
    }
    audit_run(&run).await;

    let faults = run.faulty.counts();
    let stats = lock(&run.stats).clone();
    let anomalies = lock(&run.anomalies).clone();
    println!(
        "seed {seed:#x}: {count} executions ({} stalled before redrive) in {:.1} s; {}; {} tasks run, {} timers fired, {} duplicates, {} crashes ({} abandoned midway), {} left for redelivery, {} dead letters, {} redriven; anomalies {}",
        stalled.len(),
        began.elapsed().as_secs_f64(),
        faults,
        stats.tasks,
        stats.timers,
        stats.duplicates,
        stats.crashed + stats.abandoned,
        stats.abandoned,
        stats.left_for_redelivery,
        stats.dead_letters,
        stats.redriven,
        anomalies.len()
    );
    SeedOutcome {
        executions: count,
        faults,
        stats,
        anomalies,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_under_faults_crashes_and_duplicates() {
    let total: usize = env_number("BATON_FAULT_EXECUTIONS", 300);
    let per_seed: usize = env_number("BATON_FAULT_PER_SEED", 100).max(1);
    let parallel: usize = env_number("BATON_FAULT_PARALLEL", 3).max(1);
    let rate: f64 = env_number("BATON_FAULT_RATE", 0.05);
    let first = env_seed();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let seeds: Vec<(u64, usize)> = (0..total.div_ceil(per_seed))
        .map(|i| {
            let count = per_seed.min(total - i * per_seed);
            (first.wrapping_add(i as u64), count)
        })
        .collect();
    println!(
        "fault tier (embedded): {total} executions over {} seeds from {first:#x} (BATON_FAULT_SEED), fault rate {rate} per operation",
        seeds.len()
    );
    let began = Instant::now();
    let outcomes: Vec<SeedOutcome> = futures::stream::iter(seeds)
        .map(|(seed, count)| run_seed(dir.path(), seed, count, rate))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut faults = FaultCounts::default();
    let mut stats = Stats::default();
    let mut anomalies = Vec::new();
    let mut executions = 0;
    for outcome in &outcomes {
        faults.add(&outcome.faults);
        stats.add(&outcome.stats);
        anomalies.extend(outcome.anomalies.iter().cloned());
        executions += outcome.executions;
    }
    println!("faults injected per operation and class: {faults}");
    println!(
        "fault tier (embedded) summary: {executions} executions, {} faults injected ({}), {} duplicate deliveries, {} worker crashes ({} midway), {} results and timers left for redelivery, {} dead letters listed, {} redriven, anomalies {} [{:.0} s]",
        faults.total(),
        faults.classes_line(),
        stats.duplicates,
        stats.crashed + stats.abandoned,
        stats.abandoned,
        stats.left_for_redelivery,
        stats.dead_letters,
        stats.redriven,
        anomalies.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(faults.total() > 0, "no fault was injected");
    assert!(
        anomalies.is_empty(),
        "{} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
}
