//! `baton ui`: the web console, served on 127.0.0.1 by the `baton` binary.
//!
//! This module owns the console's server: the static assets under `cli/ui/`
//! (compiled into the binary, so installing needs no front-end build), the
//! HTTP API of `baton_api` mounted under `/api` (the same handler `baton dev`
//! serves), and the few console-only routes under `/ui/` for what the API
//! does not give:
//!
//! - `GET /ui/workflows/{name}/graph[?version=N]`: the workflow's nodes and
//!   edges (steps, maps, waits, branches, compensations), laid out in the
//!   browser;
//! - `GET /ui/executions/{id}/detail`: the graph of the execution's version,
//!   each started step's evaluated input, the order compensations ran in, and
//!   the lifecycle events (embedded backend only; on AWS they go to
//!   EventBridge and are not read back);
//! - `GET /ui/counts[?workflow=&since=&until=]`: executions per status;
//! - `GET /ui/dead-letters` and `POST /ui/dead-letters/{id}/redrive`, which
//!   runs `baton dlq redrive` so the console and the command act the same.
//!
//! The server has no authentication: it listens on loopback only, and on AWS
//! it acts with the credentials of the user who started it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use baton_api::routes::{percent_decode, query_pairs};
use baton_api::{Api, ApiOptions};
use baton_core::engine::{Execution, StepStatus, TaskKind};
use baton_core::expr::{Scope, StepLookup, StepView};
use baton_core::workflow::{Action, Workflow};
use baton_core::{Event, ExecutionStatus, Timestamp};
use baton_embedded::SqliteBackend;
use baton_runtime::ports::{Backend, ExecutionRecord, ListQuery};
use baton_runtime::{Coordinator, SystemClock};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::app;

/// A status is counted up to this many executions; beyond, the console shows "10000+".
const COUNT_CAP: usize = 10_000;
const COUNT_PAGE: usize = 1_000;
/// A `for_each` step shows the inputs of at most this many elements.
const MAX_ELEMENT_INPUTS: usize = 50;

/// One embedded asset: request path, content type, bytes.
type Asset = (&'static str, &'static str, &'static [u8]);

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const ASSETS: &[Asset] = &[
    ("/", HTML, include_bytes!("../ui/index.html")),
    ("/index.html", HTML, include_bytes!("../ui/index.html")),
    ("/assets/style.css", CSS, include_bytes!("../ui/style.css")),
    ("/assets/app.js", JS, include_bytes!("../ui/js/app.js")),
    ("/assets/api.js", JS, include_bytes!("../ui/js/api.js")),
    ("/assets/util.js", JS, include_bytes!("../ui/js/util.js")),
    ("/assets/graph.js", JS, include_bytes!("../ui/js/graph.js")),
    (
        "/assets/timeline.js",
        JS,
        include_bytes!("../ui/js/timeline.js"),
    ),
    (
        "/assets/executions.js",
        JS,
        include_bytes!("../ui/js/executions.js"),
    ),
    (
        "/assets/execution.js",
        JS,
        include_bytes!("../ui/js/execution.js"),
    ),
    (
        "/assets/workflows.js",
        JS,
        include_bytes!("../ui/js/workflows.js"),
    ),
    (
        "/assets/dead-letters.js",
        JS,
        include_bytes!("../ui/js/dead-letters.js"),
    ),
    (
        "/assets/vendor/dagre.esm.js",
        JS,
        include_bytes!("../ui/vendor/dagre/dagre.esm.js"),
    ),
    (
        "/assets/vendor/dagre.LICENSE",
        TEXT,
        include_bytes!("../ui/vendor/dagre/LICENSE"),
    ),
];

/// How the console's redrive runs `baton dlq redrive`: the same database,
/// targets file and backend as the console itself.
#[derive(Debug, Clone)]
pub struct Redrive {
    pub db: PathBuf,
    pub config: PathBuf,
    pub aws: bool,
    pub endpoint: Option<String>,
}

impl Redrive {
    fn args(&self, id: &str) -> Vec<String> {
        let mut args = vec![
            "--db".to_string(),
            self.db.to_string_lossy().into_owned(),
            "--config".to_string(),
            self.config.to_string_lossy().into_owned(),
        ];
        if self.aws {
            args.push("--aws".into());
        }
        if let Some(endpoint) = &self.endpoint {
            args.push("--endpoint".into());
            args.push(endpoint.clone());
        }
        args.extend(["dlq".into(), "redrive".into(), id.to_string()]);
        args
    }
}

struct Console<B> {
    api: Api<B>,
    /// Where lifecycle events can be read back (the embedded database).
    lifecycle: Option<Arc<SqliteBackend>>,
    redrive: Redrive,
    /// What the console runs on, shown in its header.
    backend_label: String,
}

/// What a console route can fail with; each becomes a JSON `{"error": ...}`.
#[derive(Debug, Error)]
enum UiError {
    #[error("no route {0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no execution `{0}`")]
    UnknownExecution(String),
    #[error("no workflow `{0}`")]
    UnknownWorkflow(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::NotFound(_) | UiError::UnknownExecution(_) | UiError::UnknownWorkflow(_) => {
                StatusCode::NOT_FOUND
            }
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Serves the console over `backend` on 127.0.0.1:`port` until Ctrl-C or SIGTERM.
pub async fn ui<B: Backend + 'static>(
    backend: Arc<B>,
    lifecycle: Option<Arc<SqliteBackend>>,
    redrive: Redrive,
    port: u16,
) -> anyhow::Result<u8> {
    let backend_label = if redrive.aws {
        format!(
            "AWS{}",
            redrive
                .endpoint
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    } else {
        format!("embedded ({})", redrive.db.display())
    };
    let coordinator = Arc::new(Coordinator::new(backend, Arc::new(SystemClock)));
    let api = Api::with_options(coordinator, ApiOptions::default().base_path("/api"));
    let console = Arc::new(Console {
        api,
        lifecycle,
        redrive,
        backend_label,
    });
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    println!(
        "baton ui: console on http://{addr}/ over {}; Ctrl-C stops",
        console.backend_label
    );
    info!(http.address = %addr, "serving the console");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(app::shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let console = console.clone();
                    let service = service_fn(move |request| {
                        let console = console.clone();
                        async move { Ok::<_, Infallible>(respond(&console, request).await) }
                    });
                    let connection = graceful.watch(
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                    );
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            debug!(client.address = %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // The browser polls with keep-alive connections; do not wait on them long.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
    Ok(0)
}

async fn respond<B: Backend>(
    console: &Console<B>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let response = if path == "/api" || path.starts_with("/api/") {
        api(console, request).await
    } else if let Some(rest) = path.strip_prefix("/ui/") {
        let method = request.method().clone();
        let query = request.uri().query().map(str::to_string);
        match console_route(console, &method, rest, query.as_deref()).await {
            Ok(body) => json(StatusCode::OK, &body),
            Err(e) => {
                if e.status().is_server_error() {
                    warn!(http.path = %path, error = %e, "console request failed");
                }
                json(e.status(), &json!({ "error": e.to_string() }))
            }
        }
    } else {
        asset(&path)
    };
    response.map(Full::new)
}

/// Hands an `/api/...` request to the API, with its body read up to the API's limit.
async fn api<B: Backend>(console: &Console<B>, request: Request<Incoming>) -> Response<Bytes> {
    let limit = console.api.options().body_limit;
    let (parts, body) = request.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let request = Request::from_parts(parts, collected.to_bytes());
            baton_api::handle(&console.api, request).await
        }
        Err(e) => json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({ "error": format!("the request body could not be read (at most {limit} bytes): {e}") }),
        ),
    }
}

fn asset(path: &str) -> Response<Bytes> {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => {
            let mut response = Response::new(Bytes::from_static(bytes));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            // Assets change with the binary; a stale cached page would call routes that moved.
            headers.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            response
        }
        None => {
            let mut response = Response::new(Bytes::from(format!("no page {path}\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|e| {
        format!("{{\"error\":\"the response could not be encoded: {e}\"}}").into_bytes()
    });
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn console_route<B: Backend>(
    console: &Console<B>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Result<Value, UiError> {
    let segments = path
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UiError::BadRequest)?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = query_pairs(query).map_err(|e| UiError::BadRequest(e.to_string()))?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let backend = console.api.backend().as_ref();
    match (method, s.as_slice()) {
        (&Method::GET, ["info"]) => Ok(json!({
            "backend": console.backend_label,
            "lifecycle_events": console.lifecycle.is_some(),
        })),
        (&Method::GET, ["workflows", name, "graph"]) => {
            let version = param("version")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        UiError::BadRequest(format!("`version` must be a whole number, not `{v}`"))
                    })
                })
                .transpose()?;
            let workflow = compiled(backend, name, version).await?;
            Ok(serde_json::to_value(graph(&workflow)).map_err(anyhow::Error::from)?)
        }
        (&Method::GET, ["executions", id, "detail"]) => detail(console, id).await,
        (&Method::GET, ["counts"]) => {
            let time = |name: &str| {
                param(name)
                    .map(|v| {
                        v.parse::<Timestamp>().map_err(|_| {
                            UiError::BadRequest(format!(
                                "`{name}` must be epoch milliseconds, not `{v}`"
                            ))
                        })
                    })
                    .transpose()
            };
            let mut base = ListQuery::newest(COUNT_PAGE);
            base.workflow = param("workflow").map(str::to_string);
            base.since = time("since")?;
            base.until = time("until")?;
            counts(backend, base).await
        }
        (&Method::GET, ["dead-letters"]) => {
            let records = backend
                .list_dead_letters()
                .await
                .map_err(anyhow::Error::from)?;
            Ok(serde_json::to_value(records).map_err(anyhow::Error::from)?)
        }
        (&Method::POST, ["dead-letters", id, "redrive"]) => redrive(&console.redrive, id).await,
        _ => Err(UiError::NotFound(format!("{method} /ui/{path}"))),
    }
}

async fn compiled<B: Backend>(
    backend: &B,
    name: &str,
    version: Option<u32>,
) -> Result<Workflow, UiError> {
    let stored = backend
        .get_workflow(name, version)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| UiError::UnknownWorkflow(name.to_string()))?;
    Workflow::from_definition(stored.definition).map_err(|e| {
        UiError::Internal(anyhow::anyhow!(
            "the stored definition of `{name}` no longer validates: {e}"
        ))
    })
}

/// One node of a workflow's graph, as the console draws it.
#[derive(Debug, Serialize)]
struct Node {
    id: String,
    /// The step this node belongs to (a compensation's is the step it undoes).
    step: String,
    /// `step`, `map` (`for_each`), `branch` (a plain step with `if`),
    /// `workflow` (a child workflow), `wait`, `signal` (`wait_for`) or
    /// `compensation`.
    kind: &'static str,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<String>,
    /// The workflow a `workflow:` step runs as a child.
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
}

#[derive(Debug, Serialize)]
struct Edge {
    from: String,
    to: String,
    /// `needs` (runs after) or `compensation` (undone by).
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct Graph {
    workflow: String,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

/// The workflow's graph: one node per step with an edge from each of its
/// `needs`, and one node per compensation with an edge from its step.
fn graph(workflow: &Workflow) -> Graph {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for step in &workflow.steps {
        let condition = step.condition.as_ref().map(|c| c.source().to_string());
        let child = step
            .call()
            .and_then(|c| c.workflow.as_ref())
            .map(|w| w.name.to_string());
        let (kind, detail, function) = match &step.action {
            Action::Call(call) if call.workflow.is_some() => {
                let name = child.as_deref().unwrap_or_default();
                match call.for_each {
                    Some(_) => ("map", format!("workflow {name} (for each)"), None),
                    None => ("workflow", format!("workflow {name}"), None),
                }
            }
            Action::Call(call) if call.for_each.is_some() => (
                "map",
                format!("{} (for each)", call.function),
                Some(call.function.to_string()),
            ),
            Action::Call(call) => (
                if condition.is_some() {
                    "branch"
                } else {
                    "step"
                },
                call.function.to_string(),
                Some(call.function.to_string()),
            ),
            Action::Wait { millis } => (
                "wait",
                format!("wait {}", baton_core::duration::format_millis(*millis)),
                None,
            ),
            Action::WaitUntil(_) => ("wait", "wait until".to_string(), None),
            Action::WaitFor { signal, .. } => ("signal", format!("signal {signal}"), None),
        };
        let id = format!("step:{}", step.name);
        nodes.push(Node {
            id: id.clone(),
            step: step.name.to_string(),
            kind,
            label: format!("{}\n{detail}", step.name),
            function,
            workflow: child.clone(),
            condition,
        });
        for &n in &step.needs {
            edges.push(Edge {
                from: format!("step:{}", workflow.steps[n].name),
                to: id.clone(),
                kind: "needs",
            });
        }
        let undo_by = step
            .call()
            .and_then(|c| match (&c.compensation, &c.workflow) {
                (Some(compensation), _) => Some((
                    compensation.function.to_string(),
                    Some(compensation.function.to_string()),
                )),
                (None, Some(child)) if child.compensate => {
                    Some((format!("{}'s own compensations", child.name), None))
                }
                _ => None,
            });
        if let Some((by, function)) = undo_by {
            let undo = format!("undo:{}", step.name);
            nodes.push(Node {
                id: undo.clone(),
                step: step.name.to_string(),
                kind: "compensation",
                label: format!("undo {}\n{by}", step.name),
                function,
                workflow: None,
                condition: None,
            });
            edges.push(Edge {
                from: id,
                to: undo,
                kind: "compensation",
            });
        }
    }
    Graph {
        workflow: workflow.name.to_string(),
        nodes,
        edges,
    }
}

static NULL: Value = Value::Null;

/// Step outputs as expressions see them, read from an execution's state.
struct Steps<'a> {
    workflow: &'a Workflow,
    execution: &'a Execution,
}

impl StepLookup for Steps<'_> {
    fn view(&self, name: &str) -> Option<StepView<'_>> {
        let state = &self.execution.steps[self.workflow.step_index(name)?];
        Some(StepView {
            status: state.status.as_str(),
            output: state.output.as_deref().unwrap_or(&NULL),
        })
    }

    fn names(&self) -> Vec<String> {
        self.workflow
            .steps
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }
}

/// The input each started step was given, evaluated again from the
/// definition and the state, as the engine does when it dispatches (inputs
/// are not stored). A `for_each` step gives a list, one per started element.
fn step_inputs(workflow: &Workflow, execution: &Execution) -> serde_json::Map<String, Value> {
    let lookup = Steps {
        workflow,
        execution,
    };
    let mut inputs = serde_json::Map::new();
    for (step, state) in workflow.steps.iter().zip(&execution.steps) {
        let Some(call) = step.call() else { continue };
        if matches!(state.status, StepStatus::Pending | StepStatus::Skipped) {
            continue;
        }
        let eval = |item: Option<&Value>, index: Option<u32>| {
            let scope = Scope {
                input: &execution.input,
                execution_id: &execution.id,
                workflow: &execution.workflow,
                steps: &lookup,
                item,
                index,
            };
            call.input.eval(&scope).unwrap_or_else(
                |e| json!({ "error": format!("the input could not be evaluated: {e}") }),
            )
        };
        let value = match &state.items {
            Some(items) => Value::Array(
                items
                    .iter()
                    .take((state.next_item as usize).min(MAX_ELEMENT_INPUTS))
                    .enumerate()
                    .map(|(i, item)| eval(Some(item), Some(i as u32)))
                    .collect(),
            ),
            None => eval(None, None),
        };
        inputs.insert(step.name.to_string(), value);
    }
    inputs
}

/// The child executions each `workflow:` step started, by step: one per
/// started element, its latest attempt's.
fn children(workflow: &Workflow, execution: &Execution) -> BTreeMap<String, Vec<String>> {
    let mut children = BTreeMap::new();
    for (step, state) in workflow.steps.iter().zip(&execution.steps) {
        let Some(call) = step.call().filter(|c| c.workflow.is_some()) else {
            continue;
        };
        let for_each = call.for_each.is_some();
        let ids: Vec<String> = state
            .units
            .iter()
            .enumerate()
            .filter(|(_, unit)| unit.attempt > 0)
            .map(|(u, unit)| {
                baton_core::idempotency::child_execution_id(
                    &execution.id,
                    &step.name,
                    for_each.then_some(u as u32),
                    unit.attempt,
                )
            })
            .collect();
        if !ids.is_empty() {
            children.insert(step.name.to_string(), ids);
        }
    }
    children
}

/// The steps whose compensations ran, in the order they ran: by their first
/// result in the history (compensations run one at a time), then the one
/// running now.
fn compensation_order(
    record: &ExecutionRecord,
    history: &[baton_runtime::ports::HistoryEntry],
) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for entry in history {
        let task = match &entry.event {
            Event::TaskSucceeded { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskTimedOut { task } => task,
            _ => continue,
        };
        if task.kind == TaskKind::Compensation && !order.iter().any(|s| **s == *task.step) {
            order.push(task.step.to_string());
        }
    }
    for state in &record.state.steps {
        let running = state.units.iter().any(|u| {
            u.compensation.as_deref().is_some_and(|c| {
                matches!(
                    c.status,
                    baton_core::engine::UnitStatus::Running
                        | baton_core::engine::UnitStatus::BackingOff
                )
            })
        });
        if running && !order.iter().any(|s| **s == *state.name) {
            order.push(state.name.to_string());
        }
    }
    order
}

async fn detail<B: Backend>(console: &Console<B>, id: &str) -> Result<Value, UiError> {
    let backend = console.api.backend().as_ref();
    let record = backend
        .load(id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| UiError::UnknownExecution(id.to_string()))?;
    let workflow = compiled(backend, &record.workflow, Some(record.workflow_version)).await?;
    let history = backend.history(id).await.map_err(anyhow::Error::from)?;
    let events = match &console.lifecycle {
        Some(db) => Some(
            db.events_after(Some(id), 0, usize::MAX >> 1)
                .map_err(anyhow::Error::from)?
                .into_iter()
                .map(|(_, event)| event)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    Ok(json!({
        "graph": graph(&workflow),
        "children": children(&workflow, &record.state),
        "inputs": step_inputs(&workflow, &record.state),
        "compensation_order": compensation_order(&record, &history),
        "events": events,
    }))
}

async fn counts<B: Backend>(backend: &B, base: ListQuery) -> Result<Value, UiError> {
    let mut counts = serde_json::Map::new();
    for status in ExecutionStatus::ALL {
        let mut query = base.clone().status(status);
        let mut count = 0;
        let more = loop {
            let page = backend.list(&query).await.map_err(anyhow::Error::from)?;
            count += page.executions.len();
            match page.next {
                Some(next) if count < COUNT_CAP => query.after = Some(next),
                Some(_) => break true,
                None => break false,
            }
        };
        counts.insert(
            status.as_str().to_string(),
            json!({ "count": count, "more": more }),
        );
    }
    Ok(Value::Object(counts))
}

async fn redrive(redrive: &Redrive, id: &str) -> Result<Value, UiError> {
    let exe = std::env::current_exe().context("cannot find the baton binary to redrive with")?;
    let output = tokio::process::Command::new(exe)
        .args(redrive.args(id))
        .output()
        .await
        .context("cannot run `baton dlq redrive`")?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    info!(dead_letter.id = %id, ok = output.status.success(), "dead letter redriven from the console");
    Ok(json!({
        "ok": output.status.success(),
        "message": if stdout.is_empty() { stderr } else { stdout },
    }))
}

/// Paths of the assets, for the test that each is served.
#[cfg(test)]
fn asset_paths() -> Vec<&'static str> {
    ASSETS.iter().map(|(p, _, _)| *p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_child_workflow_step_is_its_own_kind_and_names_its_children() {
        let workflow = Workflow::from_text(
            "name: batch\nsteps:\n  one: { workflow: line }\n  each: { workflow: line, for_each: \"${ input }\", needs: [one], mutates: false }\n",
            baton_core::definition::Format::Yaml,
        )
        .expect("valid");
        let g = graph(&workflow);
        let one = g.nodes.iter().find(|n| n.id == "step:one").unwrap();
        assert_eq!(
            (one.kind, one.workflow.as_deref()),
            ("workflow", Some("line"))
        );
        let undo = g.nodes.iter().find(|n| n.id == "undo:one").unwrap();
        assert_eq!(undo.label, "undo one\nline's own compensations");
        assert!(
            !g.nodes.iter().any(|n| n.id == "undo:each"),
            "mutates: false"
        );
        let mut execution = Execution::new(&workflow, "b-1");
        let t = baton_core::engine::apply(
            &workflow,
            &mut execution,
            Event::Started {
                input: json!([1, 2]),
                timeout_ms: None,
                parent: None,
            },
            1,
        );
        assert!(t.is_applied());
        assert_eq!(
            children(&workflow, &execution),
            BTreeMap::from([("one".to_string(), vec!["b-1:one".to_string()])])
        );
    }

    #[test]
    fn graph_of_the_order_saga() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/order-saga.yaml");
        let workflow = app::load_workflow(&path).expect("the saga loads");
        let g = graph(&workflow);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert!(ids.contains(&"step:charge") && ids.contains(&"undo:charge"));
        // notify has `compensate: none`; validate does not mutate.
        assert!(!ids.contains(&"undo:notify") && !ids.contains(&"undo:validate"));
        let reserve = g
            .nodes
            .iter()
            .find(|n| n.id == "step:reserve")
            .expect("reserve");
        assert_eq!(reserve.kind, "branch", "reserve has an `if`");
        assert!(
            g.edges
                .iter()
                .any(|e| e.from == "step:charge" && e.to == "step:ship" && e.kind == "needs")
        );
        assert!(
            g.edges
                .iter()
                .any(|e| e.from == "step:ship" && e.to == "undo:ship" && e.kind == "compensation")
        );
    }

    #[test]
    fn every_asset_is_served_with_its_type() {
        for path in asset_paths() {
            let response = asset(path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(!response.body().is_empty(), "{path} is empty");
        }
        assert_eq!(asset("/nope").status(), StatusCode::NOT_FOUND);
    }
}
