//! Shared set-up (backend, targets, input parsing) and the short commands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use baton_core::definition::Format;
use baton_core::engine::{Ignored, Outcome};
use baton_core::limits;
use baton_core::{Event, ExecutionStatus, Workflow};
use baton_embedded::{SqliteBackend, SqliteOptions, Worker, WorkerOptions};
use baton_examples::Ledger;
use baton_runtime::coordinator::describe_ignored;
use baton_runtime::ports::{Backend, ListCursor, ListQuery, StoreError, WorkflowStore};
use baton_runtime::step::Registry;
use baton_runtime::targets::{Targets, TargetsConfig};
use baton_runtime::{Clock, Coordinator, CoordinatorError, SystemClock};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::display::{self, errln, out, outln};

/// An error in what the user gave us; exits with code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

pub fn bad(message: impl Into<String>) -> anyhow::Error {
    BadInput(message.into()).into()
}

/// Logs go to stderr, so stdout holds only the command's output, with colour
/// only when stderr is a terminal (a log file or pipe gets plain text);
/// `BATON_LOG` sets the filter, `BATON_LOG_FORMAT=json` the format.
pub fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("BATON_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn load_workflow(file: &Path) -> anyhow::Result<Workflow> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
    Workflow::from_text(&text, Format::from_path(&file.to_string_lossy())).map_err(|errors| {
        bad(format!(
            "{}: {}",
            file.display(),
            errors.to_string().trim_end()
        ))
    })
}

/// Reads `--input`/`--data`: JSON text, or `@path` to a JSON file. Text
/// nested deeper than [`limits::MAX_JSON_DEPTH`] is refused before it is parsed.
pub fn parse_json_arg(what: &str, text: &str) -> anyhow::Result<Value> {
    let (source, body) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {what} file {path}: {e}")))?,
        ),
        None => ("the command line".to_string(), text.to_string()),
    };
    limits::check_json_text_depth(body.as_bytes(), &format!("{what} from {source}"))
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&body)
        .map_err(|e| bad(format!("{what} from {source} is not valid JSON: {e}")))
}

/// Checks an `--id` given on the command line against the one rule for
/// execution ids, before anything is opened or written.
pub fn check_id(id: Option<&str>) -> anyhow::Result<()> {
    match id {
        Some(id) => limits::check_execution_id(id).map_err(|e| bad(e.to_string())),
        None => Ok(()),
    }
}

/// Backend options, with `BATON_MAX_RECEIVES` and `BATON_VISIBILITY_MS` overriding the defaults.
fn backend_options() -> anyhow::Result<SqliteOptions> {
    let mut options = SqliteOptions::default();
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("{name} must be a whole number, not `{v}`"))),
            Err(_) => Ok(None),
        }
    };
    if let Some(n) = number("BATON_MAX_RECEIVES")? {
        options.max_receives = n.max(1) as u32;
    }
    if let Some(n) = number("BATON_VISIBILITY_MS")? {
        options.visibility_ms = n.max(1);
    }
    Ok(options)
}

pub fn open_backend(db: &Path) -> anyhow::Result<Arc<SqliteBackend>> {
    let backend = SqliteBackend::open(db, backend_options()?)
        .with_context(|| format!("opening database {}", db.display()))?;
    Ok(Arc::new(backend))
}

pub fn coordinator(backend: Arc<SqliteBackend>) -> Arc<Coordinator<SqliteBackend>> {
    Arc::new(Coordinator::new(backend, Arc::new(SystemClock)))
}

/// The ledger of the example handlers: `BATON_LEDGER`, or `ledger.db` beside the database.
fn ledger_path(db: &Path) -> PathBuf {
    match std::env::var_os("BATON_LEDGER") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => db.with_file_name("ledger.db"),
    }
}

pub fn targets(db: &Path, config: &Path) -> anyhow::Result<Arc<Targets>> {
    let ledger = Ledger::open(ledger_path(db)).context("opening the example handlers' ledger")?;
    let mut registry = Registry::new();
    baton_examples::register_all(&mut registry, Arc::new(ledger));
    let config = if config.exists() {
        TargetsConfig::load(config).map_err(|e| bad(e.to_string()))?
    } else {
        TargetsConfig::default()
    };
    // `lambda = "name"` targets are invoked through the Lambda API with the
    // caller's credentials (or on the target's own endpoint).
    let lambda = Arc::new(baton_aws::lambda_target::LambdaTarget::new());
    Ok(Arc::new(Targets::new(registry, config).with_lambda(lambda)))
}

pub fn check_functions(workflow: &Workflow, targets: &Targets) -> anyhow::Result<()> {
    let missing = targets.missing(workflow.functions());
    if missing.is_empty() {
        return Ok(());
    }
    Err(bad(format!(
        "workflow `{}` calls {} that nothing runs: {} (register a handler or map it in baton.toml)",
        workflow.name,
        if missing.len() == 1 {
            "a function"
        } else {
            "functions"
        },
        missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

pub fn check_size(what: &str, value: &Value, limit: usize) -> anyhow::Result<()> {
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(bad(format!(
            "{what} is {size} bytes, more than the {limit}-byte limit"
        )));
    }
    Ok(())
}

/// A fresh execution id: workflow name, time and process, unique enough for
/// one machine. A long workflow name is cut so the id stays within
/// [`limits::MAX_EXECUTION_ID_LEN`].
pub fn new_execution_id(workflow: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = SystemClock.now();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = workflow.chars().take(64).collect();
    format!("{name}-{now:x}-{:x}{n:x}", std::process::id())
}

pub fn map_coordinator_error(e: CoordinatorError) -> anyhow::Error {
    match e {
        CoordinatorError::PayloadTooLarge { .. }
        | CoordinatorError::Store(StoreError::TooLarge { .. })
        | CoordinatorError::UnknownWorkflow { .. }
        | CoordinatorError::ExecutionExists { .. }
        | CoordinatorError::Limit(_)
        | CoordinatorError::InvalidRetention(_)
        | CoordinatorError::InvalidTimeout(_)
        | CoordinatorError::UnknownSignal { .. }
        | CoordinatorError::NotFound(_) => bad(e.to_string()),
        other => anyhow!(other),
    }
}

pub fn validate(file: &Path, json: bool) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
    match Workflow::from_text(&text, Format::from_path(&file.to_string_lossy())) {
        Ok(workflow) => {
            let warnings = baton_core::lint::warnings(&workflow.definition);
            if json {
                let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
                outln!(
                    "{}",
                    serde_json::json!({ "valid": true, "workflow": &*workflow.name, "steps": workflow.steps.len(), "warnings": warnings })
                );
            } else {
                for warning in &warnings {
                    errln!("{}: warning: {warning}", file.display());
                }
                outln!(
                    "{}: workflow `{}` is valid ({} steps)",
                    file.display(),
                    workflow.name,
                    workflow.steps.len()
                );
            }
            Ok(0)
        }
        Err(errors) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "valid": false, "problems": errors.problems })
                );
            } else {
                errln!("{}: {}", file.display(), errors.to_string().trim_end());
            }
            Ok(2)
        }
    }
}

/// A request refused before anything was stored, with each problem on its own line.
fn refused(what: &str, problems: &[String]) -> anyhow::Error {
    let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    bad(format!("{what}:\n{}", lines.join("\n")))
}

pub async fn deploy<B: WorkflowStore>(backend: &B, file: &Path) -> anyhow::Result<u8> {
    let workflow = load_workflow(file)?;
    let stored = match baton_runtime::children::check_children(backend, &workflow).await {
        Ok(()) => {
            backend
                .put_workflow(&workflow.definition, SystemClock.now())
                .await
        }
        Err(e) => Err(e),
    };
    let version = match stored {
        Ok(version) => version,
        // Nothing was stored: the definition names what must change.
        Err(StoreError::Refused { what, problems }) => return Err(refused(&what, &problems)),
        Err(e) => return Err(e.into()),
    };
    outln!("workflow `{}` version {version}", workflow.name);
    for schedule in &workflow.schedules {
        outln!(
            "  schedule `{}`: `{}` in {}{}",
            schedule.name,
            schedule.cron,
            schedule.timezone.name(),
            if schedule.enabled { "" } else { " (disabled)" }
        );
    }
    Ok(0)
}

/// `baton schedules`: each schedule's next fire times, in its zone and in UTC.
pub fn schedules(file: &Path, next: usize, after: Option<&str>) -> anyhow::Result<u8> {
    use baton_core::schedule;
    let workflow = load_workflow(file)?;
    let after = match after {
        Some(text) => schedule::parse_scheduled_time(text)
            .ok_or_else(|| bad(format!("--after `{text}` is not an RFC 3339 time")))?,
        None => SystemClock.now(),
    };
    if workflow.schedules.is_empty() {
        outln!("workflow `{}` has no schedules", workflow.name);
        return Ok(0);
    }
    for (i, s) in workflow.schedules.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        let eventbridge = s
            .eventbridge_expression()
            .unwrap_or_else(|e| format!("not expressible: {e}"));
        outln!(
            "{}: `{}` in {} (EventBridge: {eventbridge}), overlap {:?}, catch-up {:?}{}",
            s.name,
            s.cron,
            s.timezone.name(),
            s.overlap,
            s.catch_up,
            if s.enabled { "" } else { ", disabled" }
        );
        for instant in s.upcoming(after, next) {
            outln!(
                "  {}  {}  {}",
                s.local_time(instant),
                schedule::scheduled_time(instant),
                s.execution_id(&workflow.name, instant)
            );
        }
    }
    Ok(0)
}

/// Resolves a definition file or a deployed workflow name; registers a file's definition.
pub async fn prepare_workflow(
    backend: &SqliteBackend,
    targets: &Targets,
    workflow: &str,
) -> anyhow::Result<(String, u32, Workflow)> {
    let path = Path::new(workflow);
    let compiled = if path.exists() {
        load_workflow(path)?
    } else {
        let stored = backend.get_workflow(workflow, None).await?.ok_or_else(|| {
            bad(format!(
                "`{workflow}` is neither a definition file nor a deployed workflow"
            ))
        })?;
        Workflow::from_definition(stored.definition).map_err(|e| bad(e.to_string()))?
    };
    check_functions(&compiled, targets)?;
    match baton_runtime::children::check_children(backend, &compiled).await {
        Ok(()) => {}
        Err(StoreError::Refused { what, problems }) => return Err(refused(&what, &problems)),
        Err(e) => return Err(e.into()),
    }
    let version = backend
        .put_workflow(&compiled.definition, SystemClock.now())
        .await?;
    Ok((compiled.name.to_string(), version, compiled))
}

pub async fn start(
    db: &Path,
    config: &Path,
    workflow: &str,
    input: &str,
    id: Option<String>,
    settings: StartSettings<'_>,
    json: bool,
) -> anyhow::Result<u8> {
    let input = parse_json_arg("the input", input)?;
    check_id(id.as_deref())?;
    let options = settings.options()?;
    let targets = targets(db, config)?;
    let backend = open_backend(db)?;
    check_size("the input", &input, backend.options().payload_limit)?;
    let (name, version, _) = prepare_workflow(&backend, &targets, workflow).await?;
    let id = id.unwrap_or_else(|| new_execution_id(&name));
    let coordinator = coordinator(backend);
    let started = coordinator
        .start_with(&name, Some(version), &id, input, options)
        .await
        .map_err(map_coordinator_error)?;
    print_started(&id, &name, version, &started, json)?;
    Ok(0)
}

/// What `baton start` changes of the workflow's settings for one execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartSettings<'a> {
    /// `--retention 90d`.
    pub retention: Option<&'a str>,
    /// `--timeout 1h`.
    pub timeout: Option<&'a str>,
}

impl StartSettings<'_> {
    /// In milliseconds, checked before anything is stored.
    fn options(&self) -> anyhow::Result<baton_runtime::StartOptions> {
        let parse = |flag: &str, text: Option<&str>, check: fn(u64) -> Result<u64, String>| {
            text.map(|text| {
                baton_core::duration::parse_millis(text)
                    .map_err(|e| e.to_string())
                    .and_then(check)
                    .map_err(|e| bad(format!("{flag} {e}")))
            })
            .transpose()
        };
        Ok(baton_runtime::StartOptions {
            retention_ms: parse(
                "--retention",
                self.retention,
                baton_core::workflow::check_retention,
            )?,
            timeout_ms: parse(
                "--timeout",
                self.timeout,
                baton_core::workflow::check_execution_timeout,
            )?,
            parent: None,
        })
    }
}

/// What `start` prints, the same on both backends.
fn print_started(
    id: &str,
    name: &str,
    version: u32,
    started: &baton_runtime::coordinator::Started,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        outln!(
            "{}",
            serde_json::json!({ "id": id, "created": started.created, "status": started.record.status().as_str() })
        );
    } else if started.created {
        outln!("started {id} (workflow `{name}` version {version})");
    } else {
        outln!("{id} already exists ({})", started.record.status().as_str());
    }
    Ok(())
}

/// The deployed workflow `workflow` names: a deployed name, or a definition
/// file whose `name` is deployed. Nothing is registered: on AWS, deploying
/// is its own step (`baton --aws deploy`), which checks the functions.
async fn deployed_workflow<B: WorkflowStore>(
    backend: &B,
    workflow: &str,
) -> anyhow::Result<(String, u32)> {
    let path = Path::new(workflow);
    if !path.exists() {
        let stored = backend.get_workflow(workflow, None).await?.ok_or_else(|| {
            bad(format!(
                "`{workflow}` is neither a definition file nor a workflow deployed on AWS"
            ))
        })?;
        return Ok((workflow.to_string(), stored.version));
    }
    let compiled = load_workflow(path)?;
    let name = compiled.name.to_string();
    let stored = backend.get_workflow(&name, None).await?.ok_or_else(|| {
        bad(format!(
            "workflow `{name}` ({}) is not deployed on AWS: run `baton --aws deploy {}` first",
            path.display(),
            path.display()
        ))
    })?;
    if stored.definition != compiled.definition {
        errln!(
            "note: {} differs from the deployed version {} of `{name}`, which is the one started (`baton --aws deploy {}` deploys the file)",
            path.display(),
            stored.version,
            path.display()
        );
    }
    Ok((name, stored.version))
}

/// `baton --aws start`: the coordinator's start on the AWS backend, which
/// dispatches the first steps (asynchronous Lambda invokes) from here.
pub async fn start_aws(
    backend: Arc<baton_aws::AwsBackend>,
    workflow: &str,
    input: &str,
    id: Option<String>,
    settings: StartSettings<'_>,
    json: bool,
) -> anyhow::Result<u8> {
    let input = parse_json_arg("the input", input)?;
    check_id(id.as_deref())?;
    let options = settings.options()?;
    check_size("the input", &input, backend.payload_limit())?;
    let (name, version) = deployed_workflow(backend.as_ref(), workflow).await?;
    let id = id.unwrap_or_else(|| new_execution_id(&name));
    let coordinator = Coordinator::new(backend, Arc::new(SystemClock));
    let started = coordinator
        .start_with(&name, Some(version), &id, input, options)
        .await
        .map_err(map_coordinator_error)?;
    print_started(&id, &name, version, &started, json)?;
    Ok(0)
}

pub async fn worker(
    db: &Path,
    config: &Path,
    concurrency: usize,
    functions: Vec<String>,
) -> anyhow::Result<u8> {
    let targets = targets(db, config)?;
    let backend = open_backend(db)?;
    let coordinator = coordinator(backend);
    let worker = Arc::new(Worker::new(
        coordinator,
        targets,
        WorkerOptions {
            concurrency,
            functions,
            ..WorkerOptions::default()
        },
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    tracing::info!(db = %db.display(), pid = std::process::id(), "worker ready");
    worker.run(stopped).await?;
    tracing::info!("worker stopped");
    Ok(0)
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn status<B: Backend>(backend: &B, id: &str, json: bool) -> anyhow::Result<u8> {
    let record = backend
        .load(id)
        .await?
        .ok_or_else(|| bad(format!("no execution `{id}`")))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        out!("{}", display::status_text(&record));
    }
    Ok(0)
}

/// `lifecycle_from` is the embedded backend, whose database keeps lifecycle
/// events; on AWS they go to EventBridge and are not read back.
pub async fn history<B: Backend>(
    backend: &B,
    lifecycle_from: Option<&SqliteBackend>,
    id: &str,
    json: bool,
    lifecycle: bool,
) -> anyhow::Result<u8> {
    let record = backend
        .load(id)
        .await?
        .ok_or_else(|| bad(format!("no execution `{id}`")))?;
    if lifecycle {
        let events_db = lifecycle_from.ok_or_else(|| {
            bad("lifecycle events are published to EventBridge on AWS; read them there (or drop --lifecycle)")
        })?;
        let events = events_db.events_after(Some(id), 0, usize::MAX >> 1)?;
        for (_, event) in events {
            if json {
                outln!("{}", serde_json::to_string(&event)?);
            } else {
                outln!("{}", display::event_line(&event, record.created_at, false));
            }
        }
        return Ok(0);
    }
    for entry in backend.history(id).await? {
        if json {
            outln!("{}", serde_json::to_string(&entry)?);
        } else {
            outln!("{}", display::history_line(&entry, record.created_at));
        }
    }
    Ok(0)
}

/// What `baton list` asks for.
pub struct ListFilter {
    pub status: Option<String>,
    pub workflow: Option<String>,
    pub limit: usize,
    pub after: Option<String>,
}

pub async fn list<B: Backend>(backend: &B, filter: &ListFilter, json: bool) -> anyhow::Result<u8> {
    let status = filter
        .status
        .as_deref()
        .map(|s| {
            ExecutionStatus::parse(s).ok_or_else(|| {
                bad(format!(
                    "unknown status `{s}` (pending, running, compensating, succeeded, failed, compensated, compensation_failed, cancelled)"
                ))
            })
        })
        .transpose()?;
    let after = filter
        .after
        .as_deref()
        .map(|text| {
            ListCursor::parse(text).ok_or_else(|| {
                bad(format!(
                    "`--after {text}` is not a cursor a previous `baton list` printed"
                ))
            })
        })
        .transpose()?;
    let page = backend
        .list(&ListQuery {
            status,
            workflow: filter.workflow.clone(),
            after,
            ..ListQuery::newest(filter.limit)
        })
        .await?;
    if json {
        for row in &page.executions {
            outln!("{}", serde_json::to_string(row)?);
        }
    } else {
        out!("{}", display::list_text(&page.executions));
    }
    if let Some(next) = &page.next {
        // On stderr, so the rows stay the whole of stdout.
        errln!("more: baton list --after {}", next.key());
    }
    Ok(0)
}

pub async fn gc(backend: &SqliteBackend, json: bool) -> anyhow::Result<u8> {
    let swept = backend.sweep_expired(SystemClock.now()).await?;
    if json {
        outln!("{}", serde_json::to_string(&swept)?);
    } else {
        outln!(
            "deleted {} expired executions ({} history entries, {} lifecycle events)",
            swept.executions,
            swept.history,
            swept.events
        );
    }
    Ok(0)
}

async fn send_event<B: Backend>(
    backend: Arc<B>,
    id: &str,
    event: Event,
) -> anyhow::Result<Outcome> {
    let coordinator = Coordinator::new(backend, Arc::new(SystemClock));
    coordinator
        .handle(id, event)
        .await
        .map_err(map_coordinator_error)
}

pub async fn cancel<B: Backend>(
    backend: Arc<B>,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<u8> {
    match send_event(backend, id, Event::CancelRequested { reason }).await? {
        Outcome::Applied => {
            outln!("cancelling {id}: new work stopped; compensations run on the next worker round")
        }
        Outcome::Ignored(reason) => outln!("nothing to cancel: {}", describe_ignored(&reason)),
    }
    Ok(0)
}

pub async fn redrive<B: Backend>(
    backend: Arc<B>,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<u8> {
    let coordinator = Coordinator::new(backend, Arc::new(SystemClock));
    match coordinator
        .redrive(id, reason)
        .await
        .map_err(map_coordinator_error)?
    {
        Outcome::Applied => {
            outln!("redriving {id}: the steps that did not succeed run again");
            Ok(0)
        }
        Outcome::Ignored(reason) => {
            Err(anyhow!("{id} not redriven: {}", describe_ignored(&reason)))
        }
    }
}

pub async fn signal<B: Backend>(
    backend: Arc<B>,
    id: &str,
    name: &str,
    data: &str,
    signal_id: Option<String>,
) -> anyhow::Result<u8> {
    let payload = parse_json_arg("the signal data", data)?;
    let coordinator = Coordinator::new(backend, Arc::new(SystemClock));
    let outcome = coordinator
        .signal(id, name, payload, signal_id)
        .await
        .map_err(map_coordinator_error)?;
    match outcome {
        Outcome::Applied => {
            outln!("signal `{name}` delivered to {id}");
            Ok(0)
        }
        // Already taken under this id: what the sender wanted has happened.
        Outcome::Ignored(Ignored::DuplicateSignal { id: signal_id }) => {
            outln!("signal `{name}` with id `{signal_id}` was delivered to {id} before");
            Ok(0)
        }
        // Refused by the execution's state: a script must not go on as if
        // the step it meant to release will run.
        Outcome::Ignored(reason) => Err(anyhow!(
            "signal `{name}` not delivered to {id}: {}",
            describe_ignored(&reason)
        )),
    }
}
