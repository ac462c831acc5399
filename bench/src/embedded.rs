//! The embedded backend end to end: executions of the two workloads driven by
//! in-process `baton-embedded` workers on a SQLite file with durable commits
//! (`synchronous=FULL`, the default), every step the in-process `noop`.
//!
//! Orchestration overhead per step is read off the handler itself: the bench
//! wraps `noop` and notes when each call starts and ends. The gap between a
//! step's handler returning and the next step's handler being called is
//! everything Baton does in between: recording the result durably (the
//! transition's commit), handing the next task to a worker and calling it.
//! For a fan-out, each branch is measured from the root's end and the join
//! from the last branch's end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::ExecutionStatus;
use baton_embedded::{SqliteBackend, SqliteOptions, Worker, WorkerOptions};
use baton_runtime::ports::{ExecutionStore, ListQuery, WorkflowStore};
use baton_runtime::step::{Registry, StepContext, handler_fn};
use baton_runtime::targets::{Targets, TargetsConfig};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::sys::{self, Percentiles};
use crate::workloads::{self, Shape};

#[derive(Debug, Clone, clap::Args)]
pub struct EmbeddedArgs {
    /// Executions per workload.
    #[arg(long, default_value_t = 2000)]
    pub executions: usize,
    /// Executions kept running at once by the driver (closed loop); a list runs each.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    pub in_flight: Vec<usize>,
    /// Workers sharing the database, in this process.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Executions of the unloaded run (one at a time), for overhead without queueing.
    #[arg(long, default_value_t = 200)]
    pub unloaded_executions: usize,
    /// Where the SQLite files go (a fresh temporary directory inside it).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub workload: String,
    pub backend: String,
    pub executions: usize,
    pub steps_per_execution: usize,
    pub in_flight: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub executions_per_s: f64,
    pub steps_per_s: f64,
    /// Milliseconds from a step's handler returning to the next step's handler starting.
    pub overhead_ms: Percentiles,
    /// Commits the store refused because the execution's version had moved
    /// (read from the backend's own counter), over the run and per execution.
    pub version_conflicts: u64,
    pub conflicts_per_execution: f64,
    pub peak_rss_mb: f64,
    pub load_before: f64,
    pub load_after: f64,
}

impl WorkloadResult {
    pub fn print(&self) {
        println!(
            "  {:<12} {:>6} executions, {:>3} in flight: {:>8.1} executions/s {:>9.0} steps/s  {:.3} conflicts/execution  overhead/step p50 {:.3} ms p99 {:.3} ms (max {:.1})  peak RSS {:.1} MB  load {:.2}->{:.2}",
            self.workload,
            self.executions,
            self.in_flight,
            self.executions_per_s,
            self.steps_per_s,
            self.conflicts_per_execution,
            self.overhead_ms.p50,
            self.overhead_ms.p99,
            self.overhead_ms.max,
            self.peak_rss_mb,
            self.load_before,
            self.load_after,
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    execution: u32,
    step: u16,
    start_ns: u64,
    end_ns: u64,
}

/// Start and end of every handler call.
struct Recorder {
    origin: Instant,
    shape: Shape,
    spans: Mutex<Vec<Span>>,
}

impl Recorder {
    fn new(shape: Shape, capacity: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            origin: Instant::now(),
            shape,
            spans: Mutex::new(Vec::with_capacity(capacity)),
        })
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn record(&self, context: &StepContext, start_ns: u64, end_ns: u64) {
        let execution = context
            .execution_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok());
        let step = self.shape.step_index(&context.step);
        if let (Some(execution), Some(step)) = (execution, step) {
            self.spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Span {
                    execution,
                    step: step as u16,
                    start_ns,
                    end_ns,
                });
        }
    }

    /// Overhead samples in milliseconds (see the module's notes).
    fn overheads_ms(&self) -> Vec<f64> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_execution: HashMap<u32, Vec<Span>> = HashMap::new();
        for span in spans.iter() {
            by_execution.entry(span.execution).or_default().push(*span);
        }
        let gap = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
        let mut samples = Vec::new();
        for spans in by_execution.values() {
            let mut by_step: HashMap<u16, Span> = HashMap::new();
            for s in spans {
                // A step run twice (a redelivery) keeps its last run.
                by_step.insert(s.step, *s);
            }
            match self.shape {
                Shape::Sequence => {
                    for i in 1..workloads::SEQUENCE_STEPS as u16 {
                        if let (Some(prev), Some(next)) = (by_step.get(&(i - 1)), by_step.get(&i)) {
                            samples.push(gap(prev.end_ns, next.start_ns));
                        }
                    }
                }
                Shape::FanOut => {
                    let join = (workloads::FAN_OUT_STEPS - 1) as u16;
                    let Some(root) = by_step.get(&0) else {
                        continue;
                    };
                    let mut last_branch = None::<u64>;
                    for b in 1..join {
                        if let Some(branch) = by_step.get(&b) {
                            samples.push(gap(root.end_ns, branch.start_ns));
                            last_branch =
                                Some(last_branch.map_or(branch.end_ns, |l| l.max(branch.end_ns)));
                        }
                    }
                    if let (Some(last), Some(join)) = (last_branch, by_step.get(&join)) {
                        samples.push(gap(last, join.start_ns));
                    }
                }
            }
        }
        samples
    }
}

/// `noop` from the example handlers, timed.
fn registry(recorder: &Arc<Recorder>) -> Registry {
    let mut registry = Registry::new();
    let recorder = recorder.clone();
    registry.register(
        baton_examples::handlers::NOOP,
        handler_fn(move |context: StepContext, input| {
            let recorder = recorder.clone();
            async move {
                let start = recorder.now_ns();
                let output = baton_examples::handlers::noop(context.clone(), input).await;
                recorder.record(&context, start, recorder.now_ns());
                output
            }
        }),
    );
    registry
}

pub fn open(path: &Path) -> anyhow::Result<Arc<SqliteBackend>> {
    let options = SqliteOptions::default();
    assert!(
        options.synchronous_full,
        "the benchmark measures durable commits"
    );
    Ok(Arc::new(
        SqliteBackend::open(path, options)
            .with_context(|| format!("opening {}", path.display()))?,
    ))
}

/// Runs `executions` of one shape with `in_flight` at a time; returns the figures.
pub async fn run_workload(
    shape: Shape,
    dir: &Path,
    executions: usize,
    in_flight: usize,
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<WorkloadResult> {
    let db = dir.join(format!("{}-{}.db", shape.name(), in_flight));
    let backend = open(&db)?;
    let coordinator = Arc::new(Coordinator::new(backend.clone(), Arc::new(SystemClock)));
    backend
        .put_workflow(
            &shape.definition(baton_examples::handlers::NOOP, "30s"),
            SystemClock.now(),
        )
        .await?;
    let recorder = Recorder::new(shape, executions * shape.steps());
    let targets = Arc::new(Targets::new(registry(&recorder), TargetsConfig::default()));
    let (stop, stopped) = watch::channel(false);
    let mut running = Vec::new();
    for _ in 0..workers {
        let worker = Arc::new(Worker::new(
            coordinator.clone(),
            targets.clone(),
            WorkerOptions {
                concurrency,
                ..WorkerOptions::default()
            },
        ));
        running.push(tokio::spawn(worker.run(stopped.clone())));
    }

    sys::reset_peak_rss();
    let load_before = sys::load_average();
    let conflicts_before = backend.version_conflicts();
    let started_at = Instant::now();
    let mut started = 0;
    loop {
        let open = backend.unfinished()?.len();
        if started == executions && open == 0 {
            break;
        }
        let room = in_flight.saturating_sub(open).min(executions - started);
        for _ in 0..room {
            coordinator
                .start(
                    shape.name(),
                    None,
                    &format!("ex-{started:07}"),
                    json!({"n": started}),
                )
                .await?;
            started += 1;
        }
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if started_at.elapsed() > Duration::from_secs(600) {
            bail!("{}: not finished after 10 minutes", shape.name());
        }
    }
    let seconds = started_at.elapsed().as_secs_f64();
    let load_after = sys::load_average();
    let version_conflicts = backend.version_conflicts() - conflicts_before;
    stop.send(true).ok();
    for worker in running {
        worker.await??;
    }

    let succeeded = backend
        .list(&ListQuery::newest(executions + 1).status(ExecutionStatus::Succeeded))
        .await?
        .executions
        .len();
    if succeeded != executions {
        bail!(
            "{}: {succeeded} of {executions} executions succeeded",
            shape.name()
        );
    }
    Ok(WorkloadResult {
        workload: shape.name().to_string(),
        backend: "baton-embedded (SQLite WAL, synchronous=FULL)".into(),
        executions,
        steps_per_execution: shape.steps(),
        in_flight,
        workers,
        concurrency,
        seconds,
        executions_per_s: executions as f64 / seconds,
        steps_per_s: (executions * shape.steps()) as f64 / seconds,
        overhead_ms: Percentiles::of(recorder.overheads_ms()),
        version_conflicts,
        conflicts_per_execution: version_conflicts as f64 / executions as f64,
        peak_rss_mb: sys::peak_rss_mb(),
        load_before,
        load_after,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedReport {
    pub machine: sys::Machine,
    /// What the disk allowed just before the runs.
    pub commit_rates: crate::disk::CommitRates,
    pub loaded: Vec<WorkloadResult>,
    pub unloaded: Vec<WorkloadResult>,
}

pub async fn run(args: &EmbeddedArgs) -> anyhow::Result<EmbeddedReport> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    println!(
        "embedded backend, durable commits (WAL, synchronous=FULL); {} worker(s) x {} tasks; files in {}",
        args.workers,
        args.concurrency,
        dir.path().display()
    );
    let commit_rates = crate::disk::commit_rates(dir.path(), 1.0)?;
    commit_rates.print();
    let mut loaded = Vec::new();
    let mut unloaded = Vec::new();
    for shape in [Shape::Sequence, Shape::FanOut] {
        for &in_flight in &args.in_flight {
            if args.executions == 0 {
                break;
            }
            let result = run_workload(
                shape,
                dir.path(),
                args.executions,
                in_flight,
                args.workers,
                args.concurrency,
            )
            .await?;
            result.print();
            loaded.push(result);
        }
    }
    if args.unloaded_executions > 0 {
        println!("unloaded (one execution at a time):");
        for shape in [Shape::Sequence, Shape::FanOut] {
            let result = run_workload(
                shape,
                dir.path(),
                args.unloaded_executions,
                1,
                args.workers,
                args.concurrency,
            )
            .await?;
            result.print();
            unloaded.push(result);
        }
    }
    let report = EmbeddedReport {
        machine: sys::machine(),
        commit_rates,
        loaded,
        unloaded,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

#[derive(Debug, Clone, clap::Args)]
pub struct TimersArgs {
    /// Executions left waiting on a one-hour timer.
    #[arg(long, default_value_t = 10_000)]
    pub executions: usize,
    /// How long the worker runs over them before its memory is read.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerMemory {
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub timers: u64,
    pub seconds: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimersReport {
    pub executions: usize,
    pub start_seconds: f64,
    pub starts_per_s: f64,
    pub worker: WorkerMemory,
    pub database_mb: f64,
}

/// Starts executions that wait an hour, then runs a worker over them in its
/// own process and reads that process's memory.
pub async fn timers(args: &TimersArgs) -> anyhow::Result<TimersReport> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    let db = dir.path().join("waiting.db");
    let backend = open(&db)?;
    let coordinator = Arc::new(Coordinator::new(backend.clone(), Arc::new(SystemClock)));
    backend
        .put_workflow(
            &workloads::waiting(baton_examples::handlers::NOOP),
            SystemClock.now(),
        )
        .await?;
    let started_at = Instant::now();
    // Started 64 at a time, as concurrent clients would.
    for chunk in (0..args.executions).collect::<Vec<_>>().chunks(64) {
        let mut starts = tokio::task::JoinSet::new();
        for &i in chunk {
            let coordinator = coordinator.clone();
            starts.spawn(async move {
                coordinator
                    .start("wait-1h", None, &format!("wait-{i:07}"), json!({}))
                    .await
            });
        }
        while let Some(started) = starts.join_next().await {
            started??;
        }
    }
    let start_seconds = started_at.elapsed().as_secs_f64();
    drop(coordinator);
    drop(backend);
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["worker-memory", "--db"])
        .arg(&db)
        .args(["--seconds", &args.seconds.to_string()])
        .output()
        .context("running the worker process")?;
    if !output.status.success() {
        bail!(
            "worker process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let worker: WorkerMemory = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("worker output: {}", String::from_utf8_lossy(&output.stdout)))?;
    let database_mb = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / 1024.0
        / 1024.0;
    let report = TimersReport {
        executions: args.executions,
        start_seconds,
        starts_per_s: args.executions as f64 / start_seconds,
        worker,
        database_mb,
    };
    println!(
        "worker over {} executions waiting on timers ({} timers): RSS {:.1} MB, peak {:.1} MB after {} s; database {:.1} MB; started at {:.0}/s",
        report.executions,
        report.worker.timers,
        report.worker.rss_mb,
        report.worker.peak_rss_mb,
        report.worker.seconds,
        report.database_mb,
        report.starts_per_s
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerMemoryArgs {
    #[arg(long)]
    pub db: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// A plain worker on an existing database for a while; prints its memory as JSON.
pub async fn worker_memory(args: &WorkerMemoryArgs) -> anyhow::Result<()> {
    let backend = open(&args.db)?;
    let coordinator = Arc::new(Coordinator::new(backend.clone(), Arc::new(SystemClock)));
    let mut registry = Registry::new();
    registry.register(
        baton_examples::handlers::NOOP,
        handler_fn(baton_examples::handlers::noop),
    );
    let targets = Arc::new(Targets::new(registry, TargetsConfig::default()));
    let worker = Arc::new(Worker::new(coordinator, targets, WorkerOptions::default()));
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let memory = WorkerMemory {
        rss_mb: sys::rss_mb(),
        peak_rss_mb: sys::peak_rss_mb(),
        timers: backend.queue_depths()?.1,
        seconds: args.seconds,
    };
    stop.send(true).ok();
    running.await??;
    println!("{}", serde_json::to_string(&memory)?);
    Ok(())
}
