//! The AWS cost model: workloads run end to end on moto server, the way
//! `shared/lambda/tests/order_saga.rs` runs the order saga. Steps are Lambda
//! functions invoked asynchronously; moto cannot run them, so the harness
//! records each dispatched attempt, runs the example handler in this process
//! and sends its result to the coordinator queue as the Lambda destination
//! record AWS would send (a billed SQS request, metered like any other). It
//! plays the coordinator's SQS event source mapping (receiving into
//! `process_coordinator_batch`, deleting what it acknowledges); executions
//! start as the API starts them (`Coordinator::start`).
//!
//! Counted: Baton's own requests made inside `start` and
//! `process_coordinator_batch`, measured as the difference around each call
//! (the harness runs them one at a time); the destinations' SendMessage; and
//! one `Lambda.Invoke` per dispatched attempt, counted from the dispatches
//! since no request reaches moto. The invocations themselves are the steps'
//! own Lambda cost, as with any orchestrator, and are left out. The
//! harness's receives and deletes stand in for the event source mapping,
//! whose requests AWS bills too: they are modelled from the number of
//! messages sent, for batches of 1 (a quiet system) and of 10 (a busy one).
//!
//! Step timeouts are set to 20 s so each attempt's timeout timer (an SQS
//! delayed message, as for any timeout up to 15 minutes) comes back to the
//! coordinator within the run and is paid for like in production, while no
//! attempt actually times out on a slow emulator (the run checks that every
//! task sent was an attempt the workload plans).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use baton_aws::bootstrap::{Plan, bootstrap};
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::{DestinationRecord, LocalInvoker};
use baton_aws::testing::RecordingInvoker;
use baton_aws::{AwsBackend, AwsSettings, RequestCounter};
use baton_core::{EventDetail, ExecutionStatus, WorkflowDefinition};
use baton_examples::{HandlerEnv, Ledger, register_all_with};
use baton_runtime::ports::WorkflowStore;
use baton_runtime::step::{Registry, handler_fn};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::meter::{Meter, Snapshot};
use crate::sys;
use crate::workloads::Shape;

const TIMEOUT: &str = "20s";
const TIMEOUT_MS: u64 = 20_000;

#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// Executions of each workload (0 measures only the coordinator's memory).
    #[arg(long, default_value_t = 10)]
    pub executions: usize,
    /// The price table (default: bench/prices.toml).
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Executions in flight while the coordinator's memory is measured (0 skips it).
    #[arg(long, default_value_t = 50)]
    pub memory_executions: usize,
    /// Lifecycle events published (`BATON_EVENTS`): all, outcomes, executions or none.
    #[arg(long, default_value = "executions", value_parser = parse_event_detail)]
    pub events: EventDetail,
    /// Pads every step's output to about this many bytes (0: the handlers' own, a few bytes).
    #[arg(long, default_value_t = 0)]
    pub output_bytes: usize,
    /// Coordinators taking batches in turn, each with its own caches, as
    /// concurrent coordinator Lambdas do.
    #[arg(long, default_value_t = 3)]
    pub coordinators: usize,
    /// Only these workloads (comma-separated names; default all).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_event_detail(text: &str) -> Result<EventDetail, String> {
    EventDetail::parse(text)
        .ok_or_else(|| format!("expected one of {}", EventDetail::NAMES.join(", ")))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Prices {
    pub sqs: SqsPrices,
    pub dynamodb: DynamoPrices,
    pub eventbridge: EventBridgePrices,
    pub s3: S3Prices,
    pub scheduler: SchedulerPrices,
    pub lambda: LambdaPrices,
    pub step_functions: StepFunctionsPrices,
    pub lambda_durable: DurablePrices,
    pub cloudwatch_logs: LogPrices,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogPrices {
    pub usd_per_gb_ingested: f64,
    /// Lambda's own lines per invocation (START, END, REPORT).
    pub platform_bytes_per_invocation: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SqsPrices {
    pub usd_per_million_requests: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DynamoPrices {
    pub usd_per_million_write_units: f64,
    pub usd_per_million_read_units: f64,
    pub usd_per_gb_month: f64,
    /// Bytes DynamoDB adds to each item for storage.
    pub storage_overhead_bytes_per_item: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventBridgePrices {
    pub usd_per_million_events: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct S3Prices {
    /// PUT, COPY, POST and LIST requests.
    pub usd_per_million_put_requests: f64,
    /// GET, SELECT, HEAD and every other request.
    pub usd_per_million_get_requests: f64,
    pub usd_per_gb_month: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SchedulerPrices {
    pub usd_per_million_invocations: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LambdaPrices {
    pub usd_per_million_requests: f64,
    pub usd_per_gb_second: f64,
    pub memory_mb: f64,
    pub ms_per_request: f64,
    pub ms_per_message: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepFunctionsPrices {
    pub usd_per_million_standard_transitions: f64,
    pub usd_per_million_express_requests: f64,
    pub usd_per_express_gb_second: f64,
    pub express_memory_mb: f64,
    pub express_ms_per_task: f64,
}
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DurablePrices {
    pub usd_per_million_operations: f64,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn load_prices(path: Option<&Path>) -> anyhow::Result<Prices> {
    let path = path.map_or_else(|| repo_root().join("bench/prices.toml"), Path::to_path_buf);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One workload of the cost model, with what its peers would count for it.
struct Workload {
    name: &'static str,
    definition: WorkflowDefinition,
    input: Box<dyn Fn(usize) -> Value>,
    /// Steps that run in one execution (retries not counted).
    steps: usize,
    /// Step attempts, retries counted.
    attempts: usize,
    /// Step Functions Standard: states entered, retries included.
    sfn_transitions: usize,
    /// Step Functions Express: Task states one after another, and waits between retries.
    sfn_sequential_tasks: usize,
    sfn_retry_wait_ms: f64,
    /// Lambda durable functions: checkpointed operations (steps, retried attempts).
    durable_operations: usize,
    /// Run when no workloads are named.
    by_default: bool,
}

fn order_saga() -> anyhow::Result<WorkflowDefinition> {
    let path = repo_root().join("workflows/order-saga.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if !text.contains("timeout: 1m") {
        bail!(
            "{} no longer sets `timeout: 1m`; update the cost model",
            path.display()
        );
    }
    let text = text.replace("timeout: 1m", &format!("timeout: {TIMEOUT}"));
    WorkflowDefinition::parse(&text, baton_core::definition::Format::Yaml)
        .map_err(|e| anyhow!("{e}"))
}

fn workloads() -> anyhow::Result<Vec<Workload>> {
    Ok(vec![
        Workload {
            name: "order-saga",
            definition: order_saga()?,
            input: Box::new(|i| json!({"orderId": format!("o-{i}")})),
            steps: 5,
            attempts: 5,
            // Five Task states and the Choice that `reserve`'s `if` needs.
            sfn_transitions: 6,
            sfn_sequential_tasks: 5,
            sfn_retry_wait_ms: 0.0,
            durable_operations: 5,
            by_default: true,
        },
        Workload {
            name: "order-saga-retry",
            definition: order_saga()?,
            input: Box::new(
                |i| json!({"orderId": format!("o-{i}"), "fail": {"process-payment": {"first": 1}}}),
            ),
            steps: 5,
            attempts: 6,
            sfn_transitions: 7,
            sfn_sequential_tasks: 6,
            // Step Functions' default retry interval.
            sfn_retry_wait_ms: 1000.0,
            durable_operations: 6,
            by_default: true,
        },
        Workload {
            name: "sequence-10",
            definition: Shape::Sequence.definition(baton_examples::handlers::NOOP, TIMEOUT),
            input: Box::new(|i| json!({"n": i})),
            steps: 10,
            attempts: 10,
            sfn_transitions: 10,
            sfn_sequential_tasks: 10,
            sfn_retry_wait_ms: 0.0,
            durable_operations: 10,
            by_default: true,
        },
        Workload {
            name: "fan-out-10",
            definition: Shape::FanOut.definition(baton_examples::handlers::NOOP, TIMEOUT),
            input: Box::new(|i| json!({"n": i})),
            steps: 12,
            attempts: 12,
            // Root, a Parallel state, ten branch Tasks, the join.
            sfn_transitions: 13,
            sfn_sequential_tasks: 3,
            sfn_retry_wait_ms: 0.0,
            durable_operations: 12,
            by_default: true,
        },
        map_workload("map-1000", 1_000, true)?,
        // Ten times the elements: about an hour on moto, so only when named.
        map_workload("map-10000", 10_000, false)?,
    ])
}

fn map_workload(name: &'static str, elements: usize, by_default: bool) -> anyhow::Result<Workload> {
    Ok(Workload {
        name,
        definition: map(elements)?,
        input: Box::new(move |_| json!({ "items": (0..elements).collect::<Vec<_>>() })),
        steps: elements,
        attempts: elements,
        // Each iteration's Task state, the Map state and its end.
        sfn_transitions: elements + 2,
        sfn_sequential_tasks: elements.div_ceil(MAP_CONCURRENCY),
        sfn_retry_wait_ms: 0.0,
        durable_operations: elements,
        by_default,
    })
}

/// Elements of a map workload that run at once.
const MAP_CONCURRENCY: usize = 64;

/// A `for_each` of `n` no-op elements: an element costs what a step does,
/// if the map scales.
fn map(n: usize) -> anyhow::Result<WorkflowDefinition> {
    let text = format!(
        "name: map-{n}\ndefaults: {{ retry: {{ max_attempts: 3, backoff: exponential, delay: 1s }}, timeout: {TIMEOUT} }}\nsteps:\n  each: {{ for_each: \"${{ input.items }}\", function: {}, mutates: false, max_concurrency: {MAP_CONCURRENCY} }}\n",
        baton_examples::handlers::NOOP
    );
    WorkflowDefinition::parse(&text, baton_core::definition::Format::Yaml)
        .map_err(|e| anyhow!("{e}"))
}

/// A step's output grown to about `bytes` bytes (a realistic payload),
/// keeping what the handler returned. The padding starts with `unique` (the
/// attempt's idempotency key): payloads kept by reference are stored by
/// their content, and identical ones would be stored once.
fn padded(output: Value, bytes: usize, unique: &str) -> Value {
    if bytes == 0 {
        return output;
    }
    let padding = bytes.saturating_sub(output.to_string().len() + 24 + unique.len());
    json!({ "result": output, "padding": format!("{unique}{}", "x".repeat(padding)) })
}

fn placeholder_settings() -> anyhow::Result<AwsSettings> {
    let vars = [
        ("BATON_TABLE", "unused"),
        ("BATON_COORDINATOR_QUEUE_URL", "http://unused/0/unused"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Ok(AwsSettings::from_map(&vars)?)
}

/// SDK configuration for the emulator whose requests also go through `meter`.
async fn metered_config(endpoint: &str, meter: &Meter) -> anyhow::Result<aws_config::SdkConfig> {
    let base = baton_aws::testing::sdk_config(endpoint).await;
    // The emulator speaks plain HTTP.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    Ok(base.to_builder().http_client(meter.client(inner)).build())
}

/// Fresh resources whose requests are counted and metered: the SDK
/// configuration, settings and counter each backend over them is built from.
async fn fresh_resources(
    name: &str,
    meter: &Meter,
    events: EventDetail,
) -> anyhow::Result<(aws_config::SdkConfig, AwsSettings, RequestCounter)> {
    let config = metered_config(&baton_aws::testing::endpoint(), meter).await?;
    let counter = RequestCounter::new();
    let mut plan = Plan::new(baton_aws::testing::unique_prefix(name));
    plan.visibility_timeout_s = 30;
    let throwaway = AwsBackend::with_config(&config, placeholder_settings()?, counter.clone());
    let mut settings = bootstrap(throwaway.clients(), &plan).await?;
    settings.events = events;
    Ok((config, settings, counter))
}

type Counts = BTreeMap<String, u64>;

fn counts_since(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(op, n)| {
            let d = n - before.get(op).copied().unwrap_or(0);
            (d > 0).then(|| (op.clone(), d))
        })
        .collect()
}

fn add_counts(into: &mut Counts, more: &Counts) {
    for (op, n) in more {
        *into.entry(op.clone()).or_default() += n;
    }
}

/// Baton's own usage, by who made it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Roles {
    /// The API starting executions.
    pub start: (Counts, Snapshot),
    /// The coordinator Lambda.
    pub coordinator: (Counts, Snapshot),
    /// Lambda delivering the steps' results to the coordinator queue, and
    /// the step SDK putting outputs too large for it in the payload bucket.
    pub destinations: (Counts, Snapshot),
}

struct Harness {
    /// Sends the destination records and watches the executions; its
    /// requests are not charged to any role.
    backend: AwsBackend,
    /// Coordinators taking batches in turn, each over its own backend (its
    /// own caches), as separate coordinator Lambdas.
    coordinators: Vec<Coordinator<AwsBackend>>,
    next_coordinator: usize,
    /// Bytes logged by the start path and the coordinators.
    log_bytes: u64,
    registry: Registry,
    dispatched: Arc<RecordingInvoker>,
    meter: Meter,
    roles: Roles,
    coordinator_messages: u64,
    coordinator_batches: u64,
    step_invocations: u64,
    output_bytes: usize,
    _dir: tempfile::TempDir,
}

/// Where the counters stood before a charged call.
struct Mark {
    counts: Counts,
    usage: Snapshot,
    log_bytes: u64,
}

enum Role {
    Start,
    Coordinator,
    Destinations,
}

impl Harness {
    async fn new(
        workload: &Workload,
        events: EventDetail,
        output_bytes: usize,
        coordinators: usize,
    ) -> anyhow::Result<Harness> {
        let meter = Meter::new();
        let dispatched = Arc::new(RecordingInvoker::default());
        let (config, settings, counter) = fresh_resources(workload.name, &meter, events).await?;
        let backend_over = || {
            AwsBackend::with_config(&config, settings.clone(), counter.clone())
                .with_invoker(dispatched.clone())
        };
        let backend = backend_over();
        backend
            .put_workflow(&workload.definition, SystemClock.now())
            .await?;
        let dir = tempfile::tempdir()?;
        let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db"))?);
        let mut registry = Registry::new();
        register_all_with(&mut registry, HandlerEnv::new(ledger));
        Ok(Harness {
            coordinators: (0..coordinators.max(1))
                .map(|_| Coordinator::new(Arc::new(backend_over()), Arc::new(SystemClock)))
                .collect(),
            next_coordinator: 0,
            log_bytes: 0,
            backend,
            registry,
            dispatched,
            meter,
            roles: Roles::default(),
            coordinator_messages: 0,
            coordinator_batches: 0,
            step_invocations: 0,
            output_bytes,
            _dir: dir,
        })
    }

    fn mark(&self) -> Mark {
        Mark {
            counts: self.backend.counter().snapshot(),
            usage: self.meter.snapshot(),
            log_bytes: crate::logs::bytes(),
        }
    }

    fn charge(&mut self, role: Role, before: Mark) {
        let counts = counts_since(&self.backend.counter().snapshot(), &before.counts);
        let usage = self.meter.snapshot().since(&before.usage);
        if !matches!(role, Role::Destinations) {
            self.log_bytes += crate::logs::bytes() - before.log_bytes;
        }
        let into = match role {
            Role::Start => &mut self.roles.start,
            Role::Coordinator => &mut self.roles.coordinator,
            Role::Destinations => &mut self.roles.destinations,
        };
        add_counts(&mut into.0, &counts);
        into.1.add(&usage);
    }

    async fn start(&mut self, workload: &Workload, i: usize) -> anyhow::Result<String> {
        let id = format!("{}-{i:05}", workload.name);
        let before = self.mark();
        let started = self.coordinators[i % self.coordinators.len()]
            .start(&workload.definition.name, None, &id, (workload.input)(i))
            .await;
        self.charge(Role::Start, before);
        started?;
        Ok(id)
    }

    /// Runs every attempt dispatched so far, as Lambda would, and sends each
    /// result to the coordinator queue as its destination record; true if
    /// there were any.
    async fn step_round(&mut self) -> anyhow::Result<bool> {
        let events = self.dispatched.take_all();
        for event in &events {
            let handler = self
                .registry
                .get(&event.baton.function)
                .ok_or_else(|| anyhow!("no handler for {}", event.baton.function))?;
            let before = self.mark();
            let record = match handler.call(event.baton.clone(), event.input.clone()).await {
                Ok(output) => {
                    let output = padded(output, self.output_bytes, &event.baton.idempotency_key);
                    // As the step SDK returns an output too large for the
                    // destination record: put in the bucket, by reference.
                    let output = match self.backend.store().payloads() {
                        Some(payloads) => {
                            payloads
                                .function_output(&event.baton.execution_id, output)
                                .await?
                        }
                        None => output,
                    };
                    DestinationRecord::success(event, output)
                }
                Err(e) => DestinationRecord::failure(event, &e.function_error_type(), &e.message),
            };
            let body = serde_json::to_string(&record)?;
            self.backend
                .queues()
                .send_raw_to_coordinator(&body, 0)
                .await?;
            self.charge(Role::Destinations, before);
            self.step_invocations += 1;
        }
        Ok(!events.is_empty())
    }

    /// Receives one batch from the coordinator queue and applies it; true if there was one.
    async fn coordinator_round(&mut self) -> anyhow::Result<bool> {
        let sqs = self.backend.clients().sqs.clone();
        let url = self.backend.settings().coordinator_queue_url.clone();
        let received = receive_coordinator_batch(&sqs, &url).await?;
        if received.is_empty() {
            return Ok(false);
        }
        let batch = received.iter().map(QueueMessage::from).collect();
        let before = self.mark();
        let coordinator = &self.coordinators[self.next_coordinator % self.coordinators.len()];
        self.next_coordinator += 1;
        let failed = process_coordinator_batch(coordinator, batch).await;
        self.charge(Role::Coordinator, before);
        self.coordinator_batches += 1;
        self.coordinator_messages += received.len() as u64;
        delete_handled(&sqs, &url, &received, &failed).await?;
        Ok(true)
    }

    /// Runs rounds until every execution has ended and every timer sent for
    /// them has come back and been applied.
    async fn run(&mut self, ids: &[String], steps: usize) -> anyhow::Result<BTreeMap<String, u64>> {
        // moto serves one request at a time: allow for the steps to run.
        let allowed = Duration::from_millis(200 * (steps * ids.len()) as u64);
        let deadline = Instant::now() + Duration::from_secs(300).max(allowed);
        let mut open: Vec<String> = ids.to_vec();
        let mut statuses = BTreeMap::new();
        let mut quiet_since: Option<Instant> = None;
        loop {
            let busy = self.step_round().await? | self.coordinator_round().await?;
            let mut still_open = Vec::new();
            for id in open {
                match self.backend.store().load(&id).await? {
                    Some(record) if record.status().is_terminal() => {
                        *statuses
                            .entry(record.status().as_str().to_string())
                            .or_default() += 1;
                    }
                    _ => still_open.push(id),
                }
            }
            open = still_open;
            if open.is_empty() {
                // Timers (retries, timeouts) keep arriving for a while after the end.
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if busy {
                    quiet_since = Some(Instant::now());
                } else if since.elapsed() > Duration::from_millis(TIMEOUT_MS + 2_500) {
                    return Ok(statuses);
                }
            }
            if Instant::now() > deadline {
                bail!("{} executions did not finish: {:?}", open.len(), open);
            }
            if !busy {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Figures for one workload, per execution unless said otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadCost {
    pub workload: String,
    /// The lifecycle events published.
    pub events: EventDetail,
    pub executions: usize,
    pub statuses: BTreeMap<String, u64>,
    pub steps: usize,
    pub attempts: usize,
    /// Baton's own requests per execution by `Service.Operation`, all roles.
    pub requests: BTreeMap<String, f64>,
    /// DynamoDB write and read units per execution by operation.
    pub units: BTreeMap<String, (f64, f64)>,
    pub requests_by_role: BTreeMap<String, f64>,
    pub coordinator_messages: f64,
    /// Asynchronous invokes of step functions (attempts).
    pub step_invocations: f64,
    pub dynamodb_write_units: f64,
    pub dynamodb_read_units: f64,
    pub sqs_billed_requests: f64,
    pub eventbridge_events: f64,
    pub scheduler_schedules: f64,
    /// Log bytes ingested per step: the start path's and coordinators' own
    /// lines, measured, and Lambda's lines per coordinator invocation.
    pub log_bytes_per_step: f64,
    /// Bytes the table holds per step once the executions have ended, with
    /// DynamoDB's per-item overhead, kept for the workflow's retention.
    pub dynamodb_stored_bytes_per_step: f64,
    /// Bytes of payload objects put per step, kept for the bucket's lifecycle.
    pub s3_stored_bytes_per_step: f64,
    /// Orchestration cost per million steps, for event source mapping batches of 1 and 10.
    pub usd_per_million_steps_batch_1: Breakdown,
    pub usd_per_million_steps_batch_10: Breakdown,
    pub step_functions_standard_per_million_steps: f64,
    pub step_functions_express_per_million_steps: f64,
    pub lambda_durable_per_million_steps: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Breakdown {
    pub sqs: f64,
    pub sqs_event_source_polling: f64,
    pub dynamodb: f64,
    /// S3 requests for payloads kept by reference (their storage is in `storage`).
    pub s3: f64,
    pub eventbridge: f64,
    pub scheduler: f64,
    pub lambda_requests: f64,
    pub lambda_duration: f64,
    /// CloudWatch Logs ingestion.
    pub logs: f64,
    /// DynamoDB and S3 storage for as long as an execution's records are kept.
    pub storage: f64,
    pub total: f64,
}

fn per_execution(n: u64, executions: usize) -> f64 {
    n as f64 / executions as f64
}

fn cost(
    workload: &Workload,
    h: &Harness,
    statuses: BTreeMap<String, u64>,
    n: usize,
    prices: &Prices,
) -> WorkloadCost {
    let roles = &h.roles;
    let mut all_counts = Counts::new();
    let mut usage = Snapshot::default();
    let mut by_role = BTreeMap::new();
    for (name, (counts, snapshot)) in [
        ("start (API)", &roles.start),
        ("coordinator", &roles.coordinator),
        ("result destinations", &roles.destinations),
    ] {
        add_counts(&mut all_counts, counts);
        usage.add(snapshot);
        by_role.insert(name.to_string(), per_execution(counts.values().sum(), n));
    }
    // The asynchronous Invoke of each attempt, which moto cannot take: made
    // by the API for the first step and by the coordinator for the rest.
    all_counts.insert("Lambda.Invoke".into(), h.step_invocations);
    *by_role.entry("coordinator".into()).or_default() += per_execution(h.step_invocations, n);
    let total = usage.total();
    let sum_ops = |prefix: &str, f: fn(&crate::meter::Usage) -> u64| -> u64 {
        usage
            .operations
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, u)| f(u))
            .sum()
    };
    let sqs_billed = per_execution(sum_ops("SQS.", |u| u.billed), n);
    let events = per_execution(sum_ops("EventBridge.", |u| u.billed), n);
    // S3 bills requests at two prices. Calls on the bucket itself
    // (`S3.Other`, made when it is set up) are priced as PUTs, the dearer.
    let s3_requests = |ops: &[&str]| {
        let requests = ops
            .iter()
            .filter_map(|op| usage.operations.get(*op))
            .map(|u| u.requests)
            .sum();
        per_execution(requests, n)
    };
    let s3_puts = s3_requests(&["S3.PutObject", "S3.Other"]);
    let s3_gets = s3_requests(&["S3.GetObject", "S3.HeadObject"]);
    let schedules = per_execution(
        all_counts
            .get("Scheduler.CreateSchedule")
            .copied()
            .unwrap_or(0),
        n,
    );
    let wu = per_execution(total.write_units, n);
    let ru = total.read_units / n as f64;
    let coordinator_queue = h
        .backend
        .settings()
        .coordinator_queue_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let messages_to_coordinator: u64 = usage
        .messages_by_queue
        .get(&coordinator_queue)
        .copied()
        .unwrap_or(0);
    let coordinator_requests: u64 = roles.coordinator.0.values().sum::<u64>() + h.step_invocations;
    let start_requests: u64 = roles.start.0.values().sum();

    let steps = workload.steps as f64;
    let (items, item_bytes) = h.meter.stored_items();
    let dynamodb_stored = per_execution(item_bytes, n)
        + per_execution(items, n) * prices.dynamodb.storage_overhead_bytes_per_item;
    let s3_stored = per_execution(
        usage.operations.get("S3.PutObject").map_or(0, |u| u.bytes),
        n,
    );
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    const DAYS_PER_MONTH: f64 = 365.25 / 12.0;
    let retention_months =
        baton_core::workflow::DEFAULT_RETENTION_MS as f64 / 86_400_000.0 / DAYS_PER_MONTH;
    let lifecycle_months = Plan::new("unused").payload_retention_days as f64 / DAYS_PER_MONTH;
    // Per execution; divided by the steps below like every other figure.
    let storage = dynamodb_stored / GB * retention_months * prices.dynamodb.usd_per_gb_month
        + s3_stored / GB * lifecycle_months * prices.s3.usd_per_gb_month;
    let measured_log_bytes = per_execution(h.log_bytes, n);

    let breakdown = |batch: f64| -> Breakdown {
        let per_exec = |m: u64| m as f64 / n as f64;
        // Each batch a mapping delivers costs a receive, and a delete of the batch.
        let polling = 2.0 * per_exec(messages_to_coordinator) / batch;
        let invocations = per_exec(messages_to_coordinator) / batch + 1.0;
        let ms = per_exec(coordinator_requests + start_requests) * prices.lambda.ms_per_request
            + (per_exec(h.coordinator_messages) + 1.0) * prices.lambda.ms_per_message;
        let gb_seconds = prices.lambda.memory_mb / 1024.0 * ms / 1000.0;
        let mut b = Breakdown {
            sqs: sqs_billed * prices.sqs.usd_per_million_requests,
            sqs_event_source_polling: polling * prices.sqs.usd_per_million_requests,
            dynamodb: wu * prices.dynamodb.usd_per_million_write_units
                + ru * prices.dynamodb.usd_per_million_read_units,
            // Requests only: storage is paid per month for as long as the
            // lifecycle rule keeps a payload, which no count of steps gives.
            s3: s3_puts * prices.s3.usd_per_million_put_requests
                + s3_gets * prices.s3.usd_per_million_get_requests,
            eventbridge: events * prices.eventbridge.usd_per_million_events,
            scheduler: schedules * prices.scheduler.usd_per_million_invocations,
            lambda_requests: invocations * prices.lambda.usd_per_million_requests,
            lambda_duration: gb_seconds * prices.lambda.usd_per_gb_second * 1e6,
            logs: (measured_log_bytes
                + invocations * prices.cloudwatch_logs.platform_bytes_per_invocation)
                / GB
                * prices.cloudwatch_logs.usd_per_gb_ingested
                * 1e6,
            storage: storage * 1e6,
            total: 0.0,
        };
        // Per execution so far (in millionths of a dollar = dollars per million executions); per million steps:
        for v in [
            &mut b.sqs,
            &mut b.sqs_event_source_polling,
            &mut b.dynamodb,
            &mut b.s3,
            &mut b.eventbridge,
            &mut b.scheduler,
            &mut b.lambda_requests,
            &mut b.lambda_duration,
            &mut b.logs,
            &mut b.storage,
        ] {
            *v /= steps;
        }
        b.total = b.sqs
            + b.sqs_event_source_polling
            + b.dynamodb
            + b.s3
            + b.eventbridge
            + b.scheduler
            + b.lambda_requests
            + b.lambda_duration
            + b.logs
            + b.storage;
        b
    };
    let sf = &prices.step_functions;
    let express_ms =
        workload.sfn_sequential_tasks as f64 * sf.express_ms_per_task + workload.sfn_retry_wait_ms;
    let express_billed_s = (express_ms / 100.0).ceil() * 0.1;
    let express = sf.usd_per_million_express_requests
        + express_billed_s * sf.express_memory_mb / 1024.0 * sf.usd_per_express_gb_second * 1e6;
    WorkloadCost {
        events: h.backend.settings().events,
        workload: workload.name.to_string(),
        executions: n,
        statuses,
        steps: workload.steps,
        attempts: workload.attempts,
        units: usage
            .operations
            .iter()
            .filter(|(op, _)| op.starts_with("DynamoDB."))
            .map(|(op, u)| {
                (
                    op.clone(),
                    (per_execution(u.write_units, n), u.read_units / n as f64),
                )
            })
            .collect(),
        requests: all_counts
            .iter()
            .map(|(op, c)| (op.clone(), per_execution(*c, n)))
            .collect(),
        requests_by_role: by_role,
        coordinator_messages: per_execution(h.coordinator_messages, n),
        step_invocations: per_execution(h.step_invocations, n),
        dynamodb_write_units: wu,
        dynamodb_read_units: ru,
        sqs_billed_requests: sqs_billed,
        eventbridge_events: events,
        scheduler_schedules: schedules,
        log_bytes_per_step: (measured_log_bytes
            + (per_execution(messages_to_coordinator, n) / 10.0 + 1.0)
                * prices.cloudwatch_logs.platform_bytes_per_invocation)
            / steps,
        dynamodb_stored_bytes_per_step: dynamodb_stored / steps,
        s3_stored_bytes_per_step: s3_stored / steps,
        usd_per_million_steps_batch_1: breakdown(1.0),
        usd_per_million_steps_batch_10: breakdown(10.0),
        step_functions_standard_per_million_steps: workload.sfn_transitions as f64
            * sf.usd_per_million_standard_transitions
            / workload.steps as f64,
        step_functions_express_per_million_steps: express / workload.steps as f64,
        lambda_durable_per_million_steps: workload.durable_operations as f64
            * prices.lambda_durable.usd_per_million_operations
            / workload.steps as f64,
    }
}

fn print_cost(c: &WorkloadCost) {
    println!(
        "\n{} ({} executions: {:?}; {} steps, {} attempts each; BATON_EVENTS={})",
        c.workload,
        c.executions,
        c.statuses,
        c.steps,
        c.attempts,
        c.events.as_str()
    );
    let total: f64 = c.requests.values().sum();
    println!(
        "  Baton's AWS requests per execution: {total:.1} ({:.2} per step); by role: {}",
        total / c.steps as f64,
        c.requests_by_role
            .iter()
            .map(|(r, n)| format!("{r} {n:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let steps = c.steps as f64;
    for (op, n) in &c.requests {
        let units = match c.units.get(op) {
            Some((wu, ru)) => format!(
                "  ({:.2} write units, {:.2} read units)",
                wu / steps,
                ru / steps
            ),
            None => String::new(),
        };
        println!("    {op:<32} {:>6.2} per step{units}", n / steps);
    }
    println!(
        "  per step: {:.2} DynamoDB write units, {:.2} read units, {:.2} SQS billed requests (+ event source polling), {:.2} EventBridge events; messages per execution: {:.1} to the coordinator; {:.1} step invocations",
        c.dynamodb_write_units / c.steps as f64,
        c.dynamodb_read_units / c.steps as f64,
        c.sqs_billed_requests / c.steps as f64,
        c.eventbridge_events / c.steps as f64,
        c.coordinator_messages,
        c.step_invocations,
    );
    println!(
        "  per step: {:.0} log bytes (busy), {:.0} bytes kept in DynamoDB for the retention, {:.0} bytes in S3 for the bucket's lifecycle",
        c.log_bytes_per_step, c.dynamodb_stored_bytes_per_step, c.s3_stored_bytes_per_step
    );
    for (label, b) in [
        ("batches of 1 (quiet)", &c.usd_per_million_steps_batch_1),
        ("batches of 10 (busy)", &c.usd_per_million_steps_batch_10),
    ] {
        println!(
            "  Baton, {label}: ${:.2} per million steps = SQS {:.2} + polling {:.2} + DynamoDB {:.2} + EventBridge {:.2} + Scheduler {:.2} + Lambda requests {:.2} + coordinator time {:.2} + S3 {:.2} + logs {:.2} + storage {:.2}",
            b.total,
            b.sqs,
            b.sqs_event_source_polling,
            b.dynamodb,
            b.eventbridge,
            b.scheduler,
            b.lambda_requests,
            b.lambda_duration,
            b.s3,
            b.logs,
            b.storage
        );
    }
    println!(
        "  Step Functions Standard ${:.2}, Express ${:.2}, Lambda durable functions ${:.2} per million steps",
        c.step_functions_standard_per_million_steps,
        c.step_functions_express_per_million_steps,
        c.lambda_durable_per_million_steps
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordinatorMemory {
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
    pub batches: u64,
    pub messages: u64,
    pub largest_batch: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    pub prices: Prices,
    pub workloads: Vec<WorkloadCost>,
    pub coordinator_memory: Option<CoordinatorMemory>,
}

pub async fn run(args: &CostArgs) -> anyhow::Result<CostReport> {
    let prices = load_prices(args.prices.as_deref())?;
    println!(
        "AWS cost model on moto server at {} ({} executions per workload, BATON_EVENTS={}, step outputs of {})",
        baton_aws::testing::endpoint(),
        args.executions,
        args.events.as_str(),
        match args.output_bytes {
            0 => "a few bytes".to_string(),
            n => format!("about {n} bytes"),
        }
    );
    let mut results = Vec::new();
    for workload in workloads()? {
        if args.executions == 0 {
            break;
        }
        let chosen = if args.workloads.is_empty() {
            workload.by_default
        } else {
            args.workloads.iter().any(|w| w == workload.name)
        };
        if !chosen {
            continue;
        }
        let mut harness =
            Harness::new(&workload, args.events, args.output_bytes, args.coordinators).await?;
        let mut ids = Vec::new();
        for i in 0..args.executions {
            ids.push(harness.start(&workload, i).await?);
        }
        let statuses = harness.run(&ids, workload.steps).await?;
        if statuses.get("succeeded").copied().unwrap_or(0) != args.executions as u64 {
            bail!("{}: executions ended {:?}", workload.name, statuses);
        }
        let planned = (workload.attempts * args.executions) as u64;
        if harness.step_invocations != planned {
            bail!(
                "{}: {} tasks ran where {planned} were planned (timeouts or redeliveries would distort the counts)",
                workload.name,
                harness.step_invocations
            );
        }
        let result = cost(&workload, &harness, statuses, args.executions, &prices);
        print_cost(&result);
        results.push(result);
    }
    let coordinator_memory = if args.memory_executions > 0 {
        let memory = coordinator_memory(args.memory_executions).await?;
        println!(
            "\ncoordinator process over {} batches ({} messages, up to {} a batch): peak RSS {:.1} MB (target: fits a 128 MB Lambda)",
            memory.batches, memory.messages, memory.largest_batch, memory.peak_rss_mb
        );
        Some(memory)
    } else {
        None
    };
    let report = CostReport {
        prices,
        workloads: results,
        coordinator_memory,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

/// Runs `executions` of the 10-step workload at once with the coordinator in
/// its own process (as in its Lambda), and returns that process's memory.
async fn coordinator_memory(executions: usize) -> anyhow::Result<CoordinatorMemory> {
    let workload = workloads()?
        .into_iter()
        .find(|w| w.name == "sequence-10")
        .ok_or_else(|| anyhow!("no sequence workload"))?;
    let mut harness = Harness::new(&workload, EventDetail::All, 0, 1).await?;
    let endpoint = baton_aws::testing::endpoint();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["coordinator-memory", "--endpoint", &endpoint])
        .envs(harness.backend.settings().to_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the coordinator process")?;
    let mut ids = Vec::new();
    for i in 0..executions {
        ids.push(harness.start(&workload, i).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut open = ids;
    while !open.is_empty() {
        // Idle: count the finished, stopping at the first still running.
        while let Some(id) = open.last() {
            let done = harness
                .backend
                .store()
                .load(id)
                .await?
                .is_some_and(|r| r.status() == ExecutionStatus::Succeeded);
            if !done {
                break;
            }
            open.pop();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{} executions did not finish", open.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("the coordinator process failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorMemoryArgs {
    #[arg(long)]
    pub endpoint: String,
}

/// The coordinator alone: polls its queue and applies batches, as its Lambda
/// would, until standard input closes; prints its memory as JSON.
pub async fn coordinator_process(args: &CoordinatorMemoryArgs) -> anyhow::Result<()> {
    let settings = AwsSettings::from_env()?;
    let config = baton_aws::testing::sdk_config(&args.endpoint).await;
    let backend = AwsBackend::with_config(&config, settings, RequestCounter::new());
    // The workload's no-op steps run here behind Lambda's asynchronous
    // contract (moto cannot run functions); they add next to nothing.
    let noop = handler_fn(baton_examples::handlers::noop);
    let lookup =
        move |function: &str| (function == baton_examples::handlers::NOOP).then(|| noop.clone());
    let invoker = LocalInvoker::new(Arc::new(lookup), backend.queues_handle());
    let backend = backend.with_invoker(Arc::new(invoker));
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    let (closed_tx, mut closed) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed_tx.send(true);
    });
    let sqs = backend.clients().sqs.clone();
    let url = backend.settings().coordinator_queue_url.clone();
    let mut memory = CoordinatorMemory {
        peak_rss_mb: 0.0,
        rss_mb: 0.0,
        batches: 0,
        messages: 0,
        largest_batch: 0,
    };
    while !*closed.borrow() {
        // No long polling: the emulator serves one request at a time.
        let received = receive_coordinator_batch(&sqs, &url).await?;
        if received.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = closed.changed() => {}
            }
            continue;
        }
        let batch = received.iter().map(QueueMessage::from).collect();
        let failed = process_coordinator_batch(&coordinator, batch).await;
        memory.batches += 1;
        memory.messages += received.len() as u64;
        memory.largest_batch = memory.largest_batch.max(received.len() as u64);
        delete_handled(&sqs, &url, &received, &failed).await?;
    }
    memory.peak_rss_mb = sys::peak_rss_mb();
    memory.rss_mb = sys::rss_mb();
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}

/// One receive from the coordinator queue, as its event source mapping makes it.
async fn receive_coordinator_batch(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(30)
        .send()
        .await?;
    Ok(out.messages.unwrap_or_default())
}

/// Deletes the messages of a batch that did not fail, as the event source
/// mapping does with partial batch failures.
async fn delete_handled(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    received: &[aws_sdk_sqs::types::Message],
    failed: &[String],
) -> anyhow::Result<()> {
    for m in received {
        if failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
            continue;
        }
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap_or_default())
            .send()
            .await?;
    }
    Ok(())
}
