//! The fault-injection tier on the AWS backend (moto server).
//!
//! Sagas run end to end through the coordinator queue, as on AWS: the
//! harness plays the coordinator's event source mapping (receive a batch,
//! `process_coordinator_batch`, delete all but the failed), and steps run
//! in-process behind Lambda's asynchronous contract (`LocalInvoker` over the
//! example handlers and their ledger). The coordinator's backend is
//! `FaultyBackend<AwsBackend>`: each seed draws a plan that fails a fraction
//! of every operation the coordinator calls with every transient class
//! (throttled, access denied, a timeout after the write landed, a version
//! conflict on commit) and a few calls with permanent ones (not found,
//! validation). The harness also delivers some messages twice and "crashes"
//! the coordinator: it drops a batch midway, or processes it and deletes
//! nothing, so the batch comes back.
//!
//! Then, with faults off, a person's part: every dead-lettered message is
//! listed (with its execution and reason) and redriven, and every execution
//! runs to its end. The invariants are checked per execution
//! (`baton_runtime::faults::audit`) and per message: each message the harness
//! sent or received was applied, had rightly lost its purpose, or is in the
//! dead letters. A step's timeout is an anomaly unless its result was
//! dead-lettered or handed over only after the timeout: on a loaded machine
//! the single-threaded emulator can leave a result queued past a step's
//! timeout, which is lateness the engine handles, not loss.
//!
//! Sizes: `BATON_FAULT_EXECUTIONS` (default 200), `BATON_FAULT_SEED` (the
//! first seed; each run of `BATON_FAULT_PER_SEED` executions, default 50,
//! takes the next), `BATON_FAULT_RATE` (default 0.05), `BATON_FAULT_PARALLEL`
//! (seed runs at once, default 4), `BATON_FAULT_SERVERS` (moto servers,
//! default 2). `tests/faults.sh` runs a larger size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use baton_aws::CoordinatorMessage;
use baton_aws::bootstrap::{Plan, bootstrap};
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::LocalInvoker;
use baton_aws::testing::fresh_backend;
use baton_aws::testing::{endpoint, sdk_config, unique_prefix};
use baton_aws::{AwsBackend, AwsSettings, RequestCounter};
use baton_core::definition::Format;
use baton_core::engine::TaskRef;
use baton_core::{Event, EventDetail, ExecutionStatus, Workflow, WorkflowDefinition};
use baton_examples::{HandlerEnv, Ledger, register_all_with};
use baton_runtime::faults::audit::{self, Accounted, Effect, Expected};
use baton_runtime::faults::{
    FaultClass, FaultCounts, FaultPlan, FaultyBackend, Op, SplitMix64, sagas,
};
use baton_runtime::ports::{
    DeadLetterKind, DeadLetterRecord, DeadLetterStore, ExecutionStore, StoreError, WorkflowStore,
};
use baton_runtime::step::Registry;
use baton_runtime::{Clock, Coordinator, CoordinatorError, SystemClock};
use futures::StreamExt;
use serde_json::{Value, json};

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

/// Visibility timeout of a received batch: failed messages return this quickly.
const VISIBILITY_S: i32 = 2;
/// Coordinator pollers per seed run, as the event source mapping's concurrency.
const POLLERS: usize = 2;
/// Starts in flight at once.
const STARTING: usize = 6;
/// A batch crashes (half midway, half after processing) with this probability.
const CRASH: f64 = 0.05;
/// A received message is sent again with this probability.
const DUPLICATE: f64 = 0.05;

struct Planned {
    id: String,
    workflow: &'static str,
    input: Value,
    expect: ExecutionStatus,
    /// Started by a message on the coordinator queue (as a schedule does)
    /// rather than by a call (as the API does).
    by_message: bool,
}

/// One message the harness sent or received.
#[derive(Default)]
struct Tracked {
    body: String,
    sent_by_harness: bool,
    received: u32,
    deleted: bool,
    /// When a processing that led to its deletion ended (epoch ms).
    deleted_at: Option<u64>,
    /// What happened to it, for a report.
    log: Vec<String>,
}

#[derive(Default, Clone)]
struct Stats {
    batches: u64,
    received: u64,
    left_for_redelivery: u64,
    duplicates: u64,
    crashed_midway: u64,
    crashed_after: u64,
    start_retries: u64,
    starts_refused: u64,
    dead_letters: u64,
    redriven: u64,
    redrive_misses: u64,
    /// Results handed over only after their attempt had timed out.
    late_results: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.batches += o.batches;
        self.received += o.received;
        self.left_for_redelivery += o.left_for_redelivery;
        self.duplicates += o.duplicates;
        self.crashed_midway += o.crashed_midway;
        self.crashed_after += o.crashed_after;
        self.start_retries += o.start_retries;
        self.starts_refused += o.starts_refused;
        self.dead_letters += o.dead_letters;
        self.redriven += o.redriven;
        self.redrive_misses += o.redrive_misses;
        self.late_results += o.late_results;
    }
}

type Faulty = FaultyBackend<AwsBackend>;

struct Run {
    seed: u64,
    inner: Arc<AwsBackend>,
    faulty: Arc<Faulty>,
    coordinator: Arc<Coordinator<Faulty>>,
    ledger: Arc<Ledger>,
    ledger_path: PathBuf,
    workflows: BTreeMap<String, Arc<Workflow>>,
    planned: Vec<Planned>,
    rng: Mutex<SplitMix64>,
    chaos: AtomicBool,
    stop: AtomicBool,
    last_received: Mutex<Instant>,
    messages: Mutex<BTreeMap<String, Tracked>>,
    dead_letters: Mutex<BTreeMap<String, DeadLetterRecord>>,
    stats: Mutex<Stats>,
    anomalies: Mutex<Vec<String>>,
    finished: Mutex<BTreeSet<String>>,
    redriven: Mutex<BTreeSet<String>>,
    began: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Run {
    fn note(&self, ids: &[String], what: &str) {
        let at = self.began.elapsed().as_secs_f64();
        let mut tracked = lock(&self.messages);
        for id in ids {
            if let Some(t) = tracked.get_mut(id) {
                t.log.push(format!("{at:.1}s {what}"));
            }
        }
    }

    fn flag(&self, what: String) {
        lock(&self.anomalies).push(format!("seed {:#x}: {what}", self.seed));
    }

    fn chance(&self, p: f64) -> bool {
        lock(&self.rng).chance(p)
    }

    fn url(&self) -> &str {
        &self.inner.settings().coordinator_queue_url
    }

    /// Sends a body to the coordinator queue and tracks it.
    async fn send(&self, body: String) -> bool {
        let sent = self
            .inner
            .clients()
            .sqs
            .send_message()
            .queue_url(self.url())
            .message_body(&body)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let id = out.message_id().unwrap_or_default().to_string();
                lock(&self.messages).insert(
                    id,
                    Tracked {
                        body,
                        sent_by_harness: true,
                        ..Tracked::default()
                    },
                );
                true
            }
            Err(_) => false,
        }
    }
}

/// Every operation the coordinator calls fails a `rate` fraction of the
/// time with each transient class; one store call fails for good, and one
/// delivery of a timer or of lifecycle events is refused for good (their
/// messages are dead-lettered), and one dispatch is refused for good (a
/// function not found) besides those denied now and then.
fn plan_for(seed: u64, count: usize, rate: f64, rng: &mut SplitMix64) -> FaultPlan {
    let mut plan = FaultPlan::random(seed, &Op::COORDINATOR, rate, 1, (count * 8) as u64);
    let calls = (count * 4) as u64;
    plan = if rng.chance(0.5) {
        plan.nth(Op::Schedule, 1 + rng.below(calls), FaultClass::Validation)
    } else {
        plan.nth(Op::Publish, 1 + rng.below(calls), FaultClass::NotFound)
    };
    plan.nth(Op::Send, 1 + rng.below(calls), FaultClass::NotFound)
}

/// Extra moto servers, so seed runs spread over the machine's cores (moto
/// serves one request at a time): `BATON_FAULT_SERVERS` in all, default 2.
fn servers() -> &'static [String] {
    static SERVERS: OnceLock<Vec<String>> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let wanted: usize = env_number("BATON_FAULT_SERVERS", 2).max(1);
        let mut urls = vec![endpoint()];
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/moto-server.py");
        for _ in 1..wanted {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port");
            let spawned = std::process::Command::new("python3")
                .args([script, &port.to_string(), &std::process::id().to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if spawned.is_err() {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "moto server did not start on {port}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        urls
    })
}

/// SDK settings for a busy emulator: moto serves one request at a time, so
/// under load a connection may wait longer than the SDK's default 3.1 s to
/// be accepted. Without this, a step's result that the in-process invoker
/// could not send would be dropped and only its attempt's timeout would end
/// it.
async fn patient_config(url: &str) -> aws_config::SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let base = sdk_config(url).await;
    base.into_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(6))
        .build()
}

/// Fresh resources for one seed run on one of the servers.
async fn fresh_on(url: &str, name: &str) -> AwsBackend {
    if url == endpoint() {
        return fresh_backend(name, 10).await;
    }
    let config = sdk_config(url).await;
    let mut plan = Plan::new(unique_prefix(name));
    plan.max_receives = 10;
    plan.visibility_timeout_s = VISIBILITY_S as u32;
    let placeholder: BTreeMap<String, String> = [
        ("BATON_TABLE", "unused"),
        ("BATON_COORDINATOR_QUEUE_URL", "http://unused/0/unused"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let throwaway = AwsBackend::with_config(
        &config,
        AwsSettings::from_map(&placeholder).expect("placeholder settings"),
        RequestCounter::new(),
    );
    let settings = bootstrap(throwaway.clients(), &plan)
        .await
        .expect("bootstrap on the emulator");
    AwsBackend::with_config(&config, settings, RequestCounter::new())
}

async fn setup(seed: u64, count: usize, rate: f64, url: &str) -> Arc<Run> {
    let fresh = fresh_on(url, &format!("faults-{seed:x}")).await;
    // Executions' starts, ends and failures only: every lifecycle event is
    // still published through the faulty port, fewer reach the emulator.
    let mut settings = fresh.settings().clone();
    settings.events = EventDetail::Executions;
    let backend =
        AwsBackend::with_config(&patient_config(url).await, settings, RequestCounter::new());
    let ledger_path =
        std::env::temp_dir().join(format!("baton-faults-{}-{seed:x}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger_path.display()));
    }
    let ledger = Arc::new(Ledger::open(&ledger_path).expect("the ledger opens"));
    let mut registry = Registry::new();
    register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));
    let registry = Arc::new(registry);
    let lookup = move |function: &str| registry.get(function);
    let invoker = LocalInvoker::new(Arc::new(lookup), backend.queues_handle());
    let inner = Arc::new(backend.with_invoker(Arc::new(invoker)));

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
            .expect("the saga deploys");
        let compiled = Workflow::from_definition(definition).expect("the saga is valid");
        workflows.insert(compiled.name.to_string(), Arc::new(compiled));
    }

    let mut rng = SplitMix64::new(seed);
    let scenarios = sagas::scenarios();
    let planned = (0..count)
        .map(|i| {
            let scenario = &scenarios[rng.below(scenarios.len() as u64) as usize];
            let id = format!("x{seed:x}-{i}");
            Planned {
                input: scenario.input(&id, &mut rng),
                id,
                workflow: scenario.workflow,
                expect: scenario.expect,
                by_message: rng.chance(0.3),
            }
        })
        .collect();

    let plan = plan_for(seed, count, rate, &mut rng);
    let faulty = Arc::new(FaultyBackend::new(inner.clone(), plan));
    let coordinator = Arc::new(Coordinator::new(faulty.clone(), Arc::new(SystemClock)));
    Arc::new(Run {
        seed,
        inner,
        faulty,
        coordinator,
        ledger,
        ledger_path,
        workflows,
        planned,
        rng: Mutex::new(rng),
        chaos: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        last_received: Mutex::new(Instant::now()),
        messages: Mutex::new(BTreeMap::new()),
        dead_letters: Mutex::new(BTreeMap::new()),
        stats: Mutex::new(Stats::default()),
        anomalies: Mutex::new(Vec::new()),
        finished: Mutex::new(BTreeSet::new()),
        redriven: Mutex::new(BTreeSet::new()),
        began: Instant::now(),
    })
}

enum Crash {
    None,
    Midway(Duration),
    AfterProcessing,
}

/// One receive, as the event source mapping does it; returns how many
/// messages came.
async fn poll_once(run: &Run) -> usize {
    let received = run
        .inner
        .clients()
        .sqs
        .receive_message()
        .queue_url(run.url())
        .max_number_of_messages(10)
        .visibility_timeout(VISIBILITY_S)
        .send()
        .await;
    let messages = match received {
        Ok(out) => out.messages().to_vec(),
        Err(_) => return 0,
    };
    if messages.is_empty() {
        return 0;
    }
    *lock(&run.last_received) = Instant::now();
    {
        let mut tracked = lock(&run.messages);
        for m in &messages {
            let entry = tracked
                .entry(m.message_id().unwrap_or_default().to_string())
                .or_default();
            entry.body = m.body().unwrap_or_default().to_string();
            entry.received += 1;
        }
    }
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.message_id().unwrap_or_default().to_string())
        .collect();
    run.note(&ids, "received");
    let chaos = run.chaos.load(Ordering::SeqCst);
    let mut duplicates = Vec::new();
    let crash = if chaos {
        for m in &messages {
            if run.chance(DUPLICATE) {
                duplicates.push(m.body().unwrap_or_default().to_string());
            }
        }
        if run.chance(CRASH) {
            if run.chance(0.5) {
                Crash::Midway(Duration::from_millis(lock(&run.rng).below(60)))
            } else {
                Crash::AfterProcessing
            }
        } else {
            Crash::None
        }
    } else {
        Crash::None
    };
    for body in duplicates {
        if run.send(body).await {
            lock(&run.stats).duplicates += 1;
        }
    }
    let batch: Vec<QueueMessage> = messages.iter().map(QueueMessage::from).collect();
    let failed = match crash {
        Crash::None => Some(process_coordinator_batch(&run.coordinator, batch).await),
        Crash::Midway(after) => {
            let _ = tokio::time::timeout(after, process_coordinator_batch(&run.coordinator, batch))
                .await;
            lock(&run.stats).crashed_midway += 1;
            run.note(
                &ids,
                &format!("crashed midway after {} ms", after.as_millis()),
            );
            None
        }
        Crash::AfterProcessing => {
            process_coordinator_batch(&run.coordinator, batch).await;
            lock(&run.stats).crashed_after += 1;
            run.note(&ids, "processed, then crashed before deleting");
            None
        }
    };
    let processed_at = SystemClock.now();
    if let Some(failed) = &failed {
        run.note(failed, "left for redelivery");
    }
    {
        let mut stats = lock(&run.stats);
        stats.batches += 1;
        stats.received += messages.len() as u64;
        stats.left_for_redelivery += failed.as_ref().map_or(0, |f| f.len() as u64);
    }
    let Some(failed) = failed else {
        return messages.len();
    };
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| {
            !failed
                .iter()
                .any(|f| f == m.message_id().unwrap_or_default())
        })
        .filter_map(|m| {
            DeleteMessageBatchRequestEntry::builder()
                .id(m.message_id().unwrap_or_default())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return messages.len();
    }
    let deleted = run
        .inner
        .clients()
        .sqs
        .delete_message_batch()
        .queue_url(run.url())
        .set_entries(Some(entries))
        .send()
        .await;
    if let Ok(out) = deleted {
        let ok: Vec<String> = out
            .successful()
            .iter()
            .map(|e| e.id().to_string())
            .collect();
        run.note(&ok, "deleted");
        let mut tracked = lock(&run.messages);
        for id in ok {
            if let Some(t) = tracked.get_mut(&id) {
                t.deleted = true;
                t.deleted_at.get_or_insert(processed_at);
            }
        }
    }
    messages.len()
}

/// Polls until stopped; an empty queue is polled again after a growing
/// pause (moto serves one request at a time, so idle polls slow the rest).
async fn poller(run: Arc<Run>) {
    let mut idle = 0u64;
    while !run.stop.load(Ordering::SeqCst) {
        if poll_once(&run).await == 0 {
            idle = (idle + 1).min(6);
            tokio::time::sleep(Duration::from_millis(40 * idle)).await;
        } else {
            idle = 0;
        }
    }
}

/// Starts one execution as a client would: a call retried while it may
/// pass, or a start message on the coordinator queue. Returns false when the
/// call was refused for good (the client tries again once a person fixed it).
async fn start_one(run: &Run, planned: &Planned) -> bool {
    if planned.by_message {
        let message = CoordinatorMessage::Start {
            workflow: planned.workflow.to_string(),
            version: None,
            execution_id: planned.id.clone(),
            input: planned.input.clone(),
        };
        for _ in 0..20 {
            if run.send(message.to_json()).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return false;
    }
    for attempt in 0..40u64 {
        let started = run
            .coordinator
            .start(planned.workflow, None, &planned.id, planned.input.clone())
            .await;
        match started {
            Ok(_) => return true,
            Err(e) if e.is_retryable() || is_denied(&e) => {
                lock(&run.stats).start_retries += 1;
                tokio::time::sleep(Duration::from_millis(20 * (attempt + 1).min(10))).await;
            }
            Err(_) => {
                lock(&run.stats).starts_refused += 1;
                return false;
            }
        }
    }
    false
}

fn is_denied(e: &CoordinatorError) -> bool {
    matches!(e, CoordinatorError::Store(StoreError::Denied(_)))
}

/// The planned executions that have not ended yet (read past the faults).
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

/// Waits until every execution ended, or nothing arrived for `quiet` (the
/// rest are stalled), or `limit` passed; returns the unfinished.
async fn settle(run: &Run, quiet: Duration, limit: Duration) -> Vec<String> {
    let began = Instant::now();
    let mut checked = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = lock(&run.last_received).elapsed();
        if idle < quiet && began.elapsed() < limit && checked.elapsed() < Duration::from_secs(8) {
            continue;
        }
        checked = Instant::now();
        let pending = unfinished(run).await;
        if pending.is_empty() || idle >= quiet || began.elapsed() >= limit {
            return pending;
        }
    }
}

/// Lists the dead letters, checks each names its execution and reason,
/// and redrives every queued message until none is left. A redrive holds
/// the other messages its receive returned for 30 s (see
/// `redriving_listed_dead_letters_one_after_another_finds_each`), so one
/// visible message is redriven at a time and the held ones are waited for.
async fn redrive_all(run: &Run) {
    let mut outstanding: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let listed = match run.inner.list_dead_letters().await {
            Ok(listed) => listed,
            Err(e) => {
                run.flag(format!("the dead letters cannot be listed: {e}"));
                return;
            }
        };
        let mut visible = Vec::new();
        {
            let mut seen = lock(&run.dead_letters);
            for record in listed {
                if !seen.contains_key(&record.id) {
                    lock(&run.stats).dead_letters += 1;
                    check_dead_letter(run, &record);
                    seen.insert(record.id.clone(), record.clone());
                }
                if record.id.starts_with("sqs:") {
                    outstanding
                        .entry(record.id.clone())
                        .or_insert_with(Instant::now);
                    visible.push(record.id);
                }
            }
        }
        if outstanding.is_empty() {
            return;
        }
        if let Some(id) = visible.first() {
            match run.inner.redrive_dead_letter(id).await {
                Ok(true) => {
                    lock(&run.stats).redriven += 1;
                    lock(&run.redriven).insert(id.clone());
                    outstanding.remove(id);
                    continue;
                }
                Ok(false) => lock(&run.stats).redrive_misses += 1,
                Err(e) => run.flag(format!("dead letter `{id}` cannot be redriven: {e}")),
            }
        }
        let stuck: Vec<&String> = outstanding
            .iter()
            .filter(|(_, since)| since.elapsed() > Duration::from_secs(100))
            .map(|(id, _)| id)
            .collect();
        if !stuck.is_empty() {
            run.flag(format!(
                "listed dead letters could not be redriven for 100 s: {stuck:?}"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// A dead letter names its message's execution and gives a reason.
fn check_dead_letter(run: &Run, record: &DeadLetterRecord) {
    let decodes = record
        .body
        .get("message")
        .map(|m| match m {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .and_then(|body| CoordinatorMessage::decode(&body).ok());
    if record.kind != DeadLetterKind::Compensation {
        match (&record.execution_id, &decodes) {
            (Some(id), Some(message)) if message.execution_id() == id => {}
            _ => run.flag(format!(
                "dead letter `{}` does not name the execution of its message: {:?}",
                record.id, record.execution_id
            )),
        }
    }
    if record.reason.trim().is_empty() {
        run.flag(format!("dead letter `{}` gives no reason", record.id));
    }
}

/// Whether the attempt a result is for was ended by its timeout before the
/// result was handed over (`handed_at`).
fn timed_out_before(
    history: &[baton_runtime::ports::HistoryEntry],
    event: &Event,
    handed_at: Option<u64>,
) -> bool {
    let (Some(task), Some(handed_at)) = (task_of(event), handed_at) else {
        return false;
    };
    history.iter().any(|h| match &h.event {
        Event::TaskTimedOut { task: t } => *t == task && h.at <= handed_at,
        Event::TimerFired { timer } => {
            timer.kind == baton_core::engine::TimerKind::Timeout
                && task_of(&h.event).as_ref() == Some(&task)
                && h.at <= handed_at
        }
        _ => false,
    })
}

fn body_value(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

/// The event a message carries, as the coordinator would apply it.
fn event_of(message: &CoordinatorMessage) -> Event {
    match message {
        CoordinatorMessage::Event { event, .. } => event.clone(),
        CoordinatorMessage::Timer { timer, .. } => Event::TimerFired {
            timer: timer.clone(),
        },
        CoordinatorMessage::Start { input, .. } => Event::Started {
            input: input.clone(),
            timeout_ms: None,
            parent: None,
        },
        CoordinatorMessage::Trigger { .. } | CoordinatorMessage::BusEvent { .. } => {
            unreachable!("the fault tier sends no events for triggers")
        }
    }
}

fn task_of(event: &Event) -> Option<TaskRef> {
    match event {
        Event::TaskSucceeded { task, .. } | Event::TaskFailed { task, .. } => Some(task.clone()),
        Event::TimerFired { timer } => Some(TaskRef {
            step: timer.step.clone(),
            index: timer.index,
            attempt: timer.attempt,
            kind: timer.task_kind,
        }),
        _ => None,
    }
}

/// Every invariant, after the run: per execution, then per message.
async fn audit_run(run: &Run) {
    let dead: Vec<DeadLetterRecord> = lock(&run.dead_letters).values().cloned().collect();
    let dead_bodies: Vec<Value> = dead
        .iter()
        .filter_map(|d| d.body.get("message").cloned())
        .map(|m| match m {
            Value::String(s) => body_value(&s),
            other => other,
        })
        .collect();
    let dead_messages: Vec<CoordinatorMessage> = dead_bodies
        .iter()
        .filter_map(|b| CoordinatorMessage::decode(&b.to_string()).ok())
        .collect();
    // When each attempt's result was first handed over for good: the
    // processing after which the harness deleted it.
    let mut handed: HashMap<(String, TaskRef), u64> = HashMap::new();
    for t in lock(&run.messages).values() {
        let (Some(at), Ok(message)) = (t.deleted_at, CoordinatorMessage::decode(&t.body)) else {
            continue;
        };
        if let CoordinatorMessage::Event {
            execution_id,
            event: Event::TaskSucceeded { task, .. } | Event::TaskFailed { task, .. },
        } = message
        {
            let first = handed.entry((execution_id, task)).or_insert(at);
            *first = (*first).min(at);
        }
    }
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
        let explained = |task: &TaskRef, timed_out_at: u64| {
            let dead_lettered = dead_messages.iter().any(|m| {
                m.execution_id() == planned.id && task_of(&event_of(m)).as_ref() == Some(task)
            });
            let late = handed
                .get(&(planned.id.clone(), task.clone()))
                .is_some_and(|first| *first >= timed_out_at);
            if late && !dead_lettered {
                lock(&run.stats).late_results += 1;
            }
            dead_lettered || late
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
            for (id, t) in lock(&run.messages).iter() {
                let mine = CoordinatorMessage::decode(&t.body)
                    .is_ok_and(|m| m.execution_id() == planned.id);
                if mine {
                    println!(
                        "  message {id}: {} | {}",
                        t.log.join("; "),
                        t.body.chars().take(300).collect::<String>()
                    );
                }
            }
        }
        for anomaly in found {
            run.flag(anomaly);
        }
        records.insert(planned.id.clone(), (record, history));
    }

    let tracked: Vec<(String, String, bool, bool, u32, Option<u64>)> = lock(&run.messages)
        .iter()
        .map(|(id, t)| {
            (
                id.clone(),
                t.body.clone(),
                t.deleted,
                t.sent_by_harness,
                t.received,
                t.deleted_at,
            )
        })
        .collect();
    let mut checked: BTreeSet<String> = BTreeSet::new();
    for (id, body, deleted, sent, received, deleted_at) in tracked {
        let in_dlq = dead.iter().any(|d| d.id.ends_with(&format!(":{id}")))
            || dead_bodies.contains(&body_value(&body));
        if !deleted && !in_dlq {
            run.flag(format!(
                "message {id} ({}, received {received} times) was neither deleted after processing nor dead-lettered, and is no longer queued: {body}",
                if sent { "sent by the harness" } else { "sent by Baton" }
            ));
            continue;
        }
        if !checked.insert(body.clone()) {
            continue;
        }
        let message = match CoordinatorMessage::decode(&body) {
            Ok(message) => message,
            Err(e) => {
                run.flag(format!("message {id} does not decode ({e}): {body}"));
                continue;
            }
        };
        let Some((Some(record), history)) = records.get(message.execution_id()) else {
            run.flag(format!(
                "message {id} is for an execution that does not exist: {body}"
            ));
            continue;
        };
        match audit::account_for_event(record, history, &event_of(&message)) {
            Ok(Accounted::Applied | Accounted::Superseded) => {}
            Err(_) if in_dlq => {}
            // Handed over only after its attempt had timed out: late, not lost.
            Err(_) if timed_out_before(history, &event_of(&message), deleted_at) => {}
            Err(why) => run.flag(format!(
                "message {id} for `{}` was lost: {why}",
                message.execution_id()
            )),
        }
    }
}

struct Outcome {
    executions: usize,
    faults: FaultCounts,
    stats: Stats,
    anomalies: Vec<String>,
}

async fn run_seed(seed: u64, count: usize, rate: f64, url: &str) -> Outcome {
    let began = Instant::now();
    let run = setup(seed, count, rate, url).await;
    println!("seed {seed:#x}: {}", run.faulty.plan());
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| tokio::spawn(poller(run.clone())))
        .collect();

    // Faults on: start everything and let it run until it ends or stalls.
    let refused: Vec<usize> = futures::stream::iter(0..run.planned.len())
        .map(|i| {
            let run = run.clone();
            async move { (!start_one(&run, &run.planned[i]).await).then_some(i) }
        })
        .buffer_unordered(STARTING)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let started_at = began.elapsed().as_secs_f64();
    let stalled = settle(&run, Duration::from_secs(5), Duration::from_secs(150)).await;
    let settled_at = began.elapsed().as_secs_f64();

    // Faults off: a person redrives what was dead-lettered; clients retry refused starts.
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
    let redriven_at = began.elapsed().as_secs_f64();
    let mut pending = settle(&run, Duration::from_secs(4), Duration::from_secs(120)).await;
    let finished_at = began.elapsed().as_secs_f64();
    if !pending.is_empty() {
        redrive_all(&run).await;
        pending = settle(&run, Duration::from_secs(4), Duration::from_secs(60)).await;
    }
    // Drain: every message received and not yet deleted comes back within
    // its visibility timeout and is processed; then the last look at the
    // dead letters.
    let draining = Instant::now();
    while draining.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let open = lock(&run.messages).values().filter(|t| !t.deleted).count();
        if open == 0 {
            break;
        }
    }
    run.stop.store(true, Ordering::SeqCst);
    for p in pollers {
        let _ = p.await;
    }
    let listed = run.inner.list_dead_letters().await.unwrap_or_default();
    for record in listed {
        if record.id.starts_with("sqs:") {
            run.flag(format!(
                "dead letter `{}` is left after the redrive ({}): {}",
                record.id, record.reason, record.body
            ));
        }
        lock(&run.dead_letters)
            .entry(record.id.clone())
            .or_insert(record);
    }
    let unredriven: Vec<String> = lock(&run.dead_letters)
        .keys()
        .filter(|id| id.starts_with("sqs:") && !lock(&run.redriven).contains(*id))
        .cloned()
        .collect();
    for id in unredriven {
        run.flag(format!("dead letter `{id}` was listed but never redriven"));
    }
    let _ = pending;
    println!(
        "seed {seed:#x}: {} requests to moto: {:?}",
        run.inner.counter().total(),
        run.inner.counter().snapshot()
    );
    println!(
        "seed {seed:#x}: started {started_at:.1} s, stalled {settled_at:.1} s, redriven {redriven_at:.1} s, ended {finished_at:.1} s, drained {:.1} s",
        began.elapsed().as_secs_f64()
    );
    audit_run(&run).await;

    let faults = run.faulty.counts();
    let stats = lock(&run.stats).clone();
    let anomalies = lock(&run.anomalies).clone();
    println!(
        "seed {seed:#x}: {count} executions ({} stalled before redrive) in {:.0} s; {}; {} batches, {} duplicates, {} crashes, {} left for redelivery, {} dead letters, {} redriven ({} misses); anomalies {}",
        stalled.len(),
        began.elapsed().as_secs_f64(),
        faults,
        stats.batches,
        stats.duplicates,
        stats.crashed_midway + stats.crashed_after,
        stats.left_for_redelivery,
        stats.dead_letters,
        stats.redriven,
        stats.redrive_misses,
        anomalies.len()
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", run.ledger_path.display()));
    }
    Outcome {
        executions: count,
        faults,
        stats,
        anomalies,
    }
}

/// Counts what Baton logs when it drops something it could not hand on: a
/// step result the in-process invoker could not send to the queue.
mod dropped {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    pub static RESULTS_NOT_SENT: AtomicU64 = AtomicU64::new(0);

    struct Counter;

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Counter {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target().starts_with("baton_aws::dispatch")
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            if message.0.contains("result not delivered") {
                RESULTS_NOT_SENT.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    pub fn install() {
        let _ = tracing::subscriber::set_global_default(Counter);
    }
}

/// Runs the tier at the size the environment asks for; returns the anomalies.
async fn tier(name: &str) -> Vec<String> {
    let total: usize = env_number("BATON_FAULT_EXECUTIONS", 200);
    let per_seed: usize = env_number("BATON_FAULT_PER_SEED", 50).max(1);
    let parallel: usize = env_number("BATON_FAULT_PARALLEL", 4).max(1);
    let rate: f64 = env_number("BATON_FAULT_RATE", 0.05);
    let first = env_seed();
    let seeds: Vec<(u64, usize)> = (0..total.div_ceil(per_seed))
        .map(|i| {
            let count = per_seed.min(total - i * per_seed);
            (first.wrapping_add(i as u64), count)
        })
        .collect();
    println!(
        "{name}: {total} executions over {} seeds from {first:#x} (BATON_FAULT_SEED), fault rate {rate} per operation",
        seeds.len()
    );
    dropped::install();
    let began = Instant::now();
    let servers = servers();
    let outcomes: Vec<Outcome> = futures::stream::iter(seeds.into_iter().enumerate())
        .map(|(i, (seed, count))| run_seed(seed, count, rate, &servers[i % servers.len()]))
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
    let not_sent = dropped::RESULTS_NOT_SENT.load(Ordering::SeqCst);
    if not_sent > 0 {
        println!(
            "{not_sent} step results could not be sent to the coordinator queue and were dropped by the in-process invoker"
        );
    }
    println!(
        "{name} summary: {executions} executions, {} faults injected ({}), {} duplicate deliveries, {} coordinator crashes ({} midway, {} after processing), {} messages left for redelivery, {} dead letters listed, {} redriven, {} results came after their attempt's timeout, anomalies {} [{:.0} s]",
        faults.total(),
        faults.classes_line(),
        stats.duplicates,
        stats.crashed_midway + stats.crashed_after,
        stats.crashed_midway,
        stats.crashed_after,
        stats.left_for_redelivery,
        stats.dead_letters,
        stats.redriven,
        stats.late_results,
        anomalies.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        faults.total() > 0,
        "no fault was injected: the tier tested nothing"
    );
    anomalies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_under_faults_crashes_and_duplicates() {
    let anomalies = tier("fault tier (aws)").await;
    assert!(
        anomalies.is_empty(),
        "{} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
}

// Anomalies the tier found, each in its smallest form, kept so they stay
// fixed.

const ONE_STEP: &str = r#"
name: one-step
defaults: { retry: { max_attempts: 3, backoff: fixed, delay: 100ms }, timeout: 1m }
steps:
  a: { function: fn-a, mutates: false }
"#;

const UNDOABLE_STEP: &str = r#"
name: undoable
defaults: { retry: { max_attempts: 3, backoff: fixed, delay: 100ms }, timeout: 1m }
steps:
  a: { function: fn-a, compensate: { function: fn-undo } }
"#;

async fn faulty_recording(
    name: &str,
    workflow: &str,
    plan: FaultPlan,
) -> (
    Arc<AwsBackend>,
    Arc<Faulty>,
    Arc<baton_aws::testing::RecordingInvoker>,
) {
    let (backend, invoker) = baton_aws::testing::fresh_recording_backend(name, 3).await;
    let definition = WorkflowDefinition::parse(workflow, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let inner = Arc::new(backend);
    let faulty = Arc::new(FaultyBackend::new(inner.clone(), plan));
    (inner, faulty, invoker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dispatch_whose_failure_cannot_be_applied_at_once_is_not_lost() {
    // The start's dispatch is refused for good (the function is gone);
    // applying the failed attempt then meets a throttled read, so the start
    // fails with the outbox kept. The repeated start delivers it again: the
    // dispatch is refused again and its failure applied this time.
    let plan = FaultPlan::new(1)
        .nth(Op::Send, 1, FaultClass::NotFound)
        .nth(Op::Load, 2, FaultClass::Throttled)
        .nth(Op::Send, 2, FaultClass::NotFound);
    let (inner, faulty, invoker) = faulty_recording("refused-lost", ONE_STEP, plan).await;
    let coordinator = Coordinator::new(faulty.clone(), Arc::new(SystemClock));
    let first = coordinator.start("one-step", None, "ex-a", json!({})).await;
    assert!(
        matches!(&first, Err(e) if e.is_retryable()),
        "the start reports a failure worth retrying: {first:?}"
    );
    coordinator
        .start("one-step", None, "ex-a", json!({}))
        .await
        .expect("the repeated start succeeds");
    assert!(invoker.take_all().is_empty(), "nothing was invoked");
    assert_eq!(faulty.counts().total(), 3, "{}", faulty.counts());

    let record = inner.load("ex-a").await.unwrap().unwrap();
    assert_eq!(
        record.status(),
        ExecutionStatus::Failed,
        "the refused dispatch failed its step at once (not by its 1m timeout): {:?}",
        record.state.step("a").unwrap().units[0]
    );
    let history = inner.history("ex-a").await.unwrap();
    let failures = history
        .iter()
        .filter(|h| {
            matches!(&h.event, Event::TaskFailed { error, .. } if error.name == "DispatchFailed")
        })
        .count();
    assert_eq!(failures, 1, "the failure is recorded once: {history:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_refused_on_redelivery_after_it_was_invoked_is_undone() {
    // The first delivery invokes the function, then its timer cannot be
    // scheduled (throttled), so the outbox is kept; on redelivery the
    // function is refused for good (deleted meanwhile).
    let plan = FaultPlan::new(2)
        .nth(Op::Schedule, 1, FaultClass::Throttled)
        .nth(Op::Send, 2, FaultClass::NotFound);
    let (inner, faulty, invoker) = faulty_recording("refused-again", UNDOABLE_STEP, plan).await;
    let coordinator = Coordinator::new(faulty.clone(), Arc::new(SystemClock));
    let first = coordinator.start("undoable", None, "ex-b", json!({})).await;
    assert!(matches!(&first, Err(e) if e.is_retryable()), "{first:?}");
    coordinator
        .start("undoable", None, "ex-b", json!({}))
        .await
        .expect("the repeated start succeeds");
    let invoked = invoker.take("fn-a");
    assert_eq!(invoked.len(), 1, "the first delivery invoked the function");

    let record = inner.load("ex-b").await.unwrap().unwrap();
    let unit = &record.state.step("a").unwrap().units[0];
    let error = unit.error.clone().expect("the attempt failed");
    assert_eq!(error.name, "DispatchFailed");
    assert!(
        error.outcome_unknown || record.status() == ExecutionStatus::Compensating,
        "fn-a was invoked by the first delivery, so its effect may have happened, yet the \
         refusal on redelivery records the attempt as never run: the execution ends {} and \
         fn-a is never undone ({error:?})",
        record.status().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_listed_dead_letters_one_after_another_finds_each() {
    let (backend, _) = baton_aws::testing::fresh_recording_backend("redrive-many", 3).await;
    for i in 0..3 {
        let message = CoordinatorMessage::Start {
            workflow: "one-step".into(),
            version: None,
            execution_id: format!("ex-{i}"),
            input: json!({}),
        };
        backend
            .dead_letter_message(&DeadLetterRecord {
                id: format!("m-{i}"),
                kind: DeadLetterKind::Task,
                execution_id: Some(format!("ex-{i}")),
                created_at: 0,
                reason: "kept for the test".into(),
                body: Value::String(message.to_json()),
            })
            .await
            .unwrap();
    }
    let listed = backend.list_dead_letters().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for record in &listed {
        assert!(
            backend.redrive_dead_letter(&record.id).await.unwrap(),
            "dead letter `{}` was listed a moment ago, yet its redrive finds nothing: the \
             redrive before it received it too and holds it invisible for 30 s",
            record.id
        );
    }
}
