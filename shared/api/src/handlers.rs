//! What each route does: [`handle`] resolves the route, runs its handler
//! through the coordinator or the backend, and logs the outcome.

use std::time::Instant;

use baton_core::definition::Format;
use baton_core::engine::Ignored;
use baton_core::limits::{self, LimitError, MAX_JSON_DEPTH};
use baton_core::trigger::{self, Trigger};
use baton_core::{Event, ExecutionStatus, Outcome, Timestamp, Workflow};
use baton_runtime::coordinator::describe_ignored;
use baton_runtime::ports::{Backend, ExecutionRecord, ListCursor, ListQuery};
use baton_runtime::triggers::{TriggerError, start_matching};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{Instrument, Span, error, info, trace};

use crate::api::Api;
use crate::error::ApiError;
use crate::routes::{Route, query_pairs, resolve};
use crate::views::{
    DeployedView, ExecutionPageView, ExecutionView, OutcomeView, StartedView, WorkflowView,
    json_response,
};

/// The OpenAPI document of every route, served at `GET /openapi.json`. It is
/// the checked-in file itself, so what is reviewed is what is served.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// How many executions `GET /executions` returns unless `limit` says otherwise.
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;

/// Answers one request. Never fails: every error becomes a JSON response
/// with its status code.
pub async fn handle<B: Backend>(api: &Api<B>, request: Request<Bytes>) -> Response<Bytes> {
    let span = tracing::info_span!(
        "http.request",
        http.method = %request.method(),
        http.path = %request.uri().path(),
        workflow.execution.id = tracing::field::Empty,
    );
    respond(api, request).instrument(span).await
}

async fn respond<B: Backend>(api: &Api<B>, request: Request<Bytes>) -> Response<Bytes> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut execution = None;
    let result = dispatch(api, request, &mut execution).await;
    finish(&method, &path, execution.as_deref(), started, result)
}

/// Turns a result into the response and logs it; also used by the server for
/// requests refused before they reach the router.
pub(crate) fn finish(
    method: &Method,
    path: &str,
    execution: Option<&str>,
    started: Instant,
    result: Result<Response<Bytes>, ApiError>,
) -> Response<Bytes> {
    let (response, message) = match result {
        Ok(response) => (response, None),
        Err(e) => {
            let message = e.to_string();
            (e.into_response(), Some(message))
        }
    };
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let error = message.as_deref();
    if response.status().is_server_error() {
        error!(http.method = %method, http.path = %path, status, elapsed_ms, workflow.execution.id = execution, error, "request failed");
    } else if response.status().is_client_error() {
        info!(http.method = %method, http.path = %path, status, elapsed_ms, workflow.execution.id = execution, error, "request refused");
    } else {
        info!(http.method = %method, http.path = %path, status, elapsed_ms, workflow.execution.id = execution, "request served");
    }
    response
}

async fn dispatch<B: Backend>(
    api: &Api<B>,
    request: Request<Bytes>,
    execution: &mut Option<String>,
) -> Result<Response<Bytes>, ApiError> {
    let (parts, body) = request.into_parts();
    let limit = api.options().body_limit;
    if body.len() > limit {
        return Err(ApiError::BodyTooLarge {
            size: Some(body.len()),
            limit,
        });
    }
    let route = resolve(
        &parts.method,
        parts.uri.path(),
        api.options().base_path.as_deref(),
    )?;
    if let Some(id) = route.execution_id() {
        note_execution(execution, id);
    }
    trace!(body = %String::from_utf8_lossy(&body), "request body");
    let query = parts.uri.query();
    match route {
        Route::ListWorkflows => list_workflows(api).await,
        Route::GetWorkflow { name } => get_workflow(api, &name, query).await,
        Route::PutWorkflow { name } => put_workflow(api, &name, &parts.headers, &body).await,
        Route::StartExecution { workflow } => {
            start_execution(api, &workflow, &parts.headers, &body, execution).await
        }
        Route::ListExecutions => list_executions(api, query).await,
        Route::GetExecution { id } => get_execution(api, &id).await,
        Route::History { id } => history(api, &id, query).await,
        Route::Cancel { id } => cancel(api, &id, &body).await,
        Route::Redrive { id } => redrive(api, &id, &body).await,
        Route::Signal { id, name } => signal(api, &id, &name, &parts.headers, &body).await,
        Route::PostEvent => post_event(api, &body).await,
        Route::OpenApi => Ok(openapi()),
    }
}

fn note_execution(execution: &mut Option<String>, id: &str) {
    Span::current().record("workflow.execution.id", id);
    *execution = Some(id.to_string());
}

/// Refuses a JSON body that nests deeper than [`MAX_JSON_DEPTH`] before it
/// is parsed: `value` names what is limited, and `wrapper` is how many
/// levels the request's own object adds around it (`{"input": ...}` adds one).
fn check_body_depth(body: &[u8], value: &str, wrapper: usize) -> Result<(), ApiError> {
    let allowed = MAX_JSON_DEPTH + wrapper;
    if limits::json_text_depth(body, allowed + 1) > allowed {
        return Err(LimitError::JsonTooDeep {
            what: value.to_string(),
            limit: MAX_JSON_DEPTH,
        }
        .into());
    }
    Ok(())
}

/// Parses a JSON body, telling a syntax error (where it is) from a body of the wrong shape.
fn parse_json<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::BadRequest(format!("{what} has the wrong shape: {e}"))
        } else {
            ApiError::Malformed {
                what,
                format: "JSON",
                message: e.to_string(),
            }
        }
    })
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

fn with_location(mut response: Response<Bytes>, location: &str) -> Response<Bytes> {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn load<B: Backend>(api: &Api<B>, id: &str) -> Result<ExecutionRecord, ApiError> {
    api.backend()
        .load(id)
        .await?
        .ok_or_else(|| ApiError::UnknownExecution(id.to_string()))
}

fn openapi() -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(OPENAPI_JSON.as_bytes()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// ---- workflows ----

async fn list_workflows<B: Backend>(api: &Api<B>) -> Result<Response<Bytes>, ApiError> {
    let mut workflows = api.backend().list_workflows().await?;
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    let views: Vec<WorkflowView> = workflows
        .iter()
        .map(|w| WorkflowView::new(w, false))
        .collect();
    Ok(json_response(StatusCode::OK, &views))
}

async fn get_workflow<B: Backend>(
    api: &Api<B>,
    name: &str,
    query: Option<&str>,
) -> Result<Response<Bytes>, ApiError> {
    let mut version = None;
    for (key, value) in query_pairs(query)? {
        if key == "version" {
            version = Some(value.parse::<u32>().map_err(|_| {
                ApiError::BadRequest(format!("`version` must be a whole number, not `{value}`"))
            })?);
        }
    }
    let stored = api
        .backend()
        .get_workflow(name, version)
        .await?
        .ok_or_else(|| ApiError::UnknownWorkflow {
            name: name.to_string(),
            version,
        })?;
    Ok(json_response(
        StatusCode::OK,
        &WorkflowView::new(&stored, true),
    ))
}

/// The definition format a `Content-Type` names, if it names one.
fn declared_format(headers: &HeaderMap) -> Option<Format> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = value.split(';').next()?.trim().to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Some(Format::Json)
    } else if matches!(
        mime.as_str(),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    ) || mime.ends_with("+yaml")
    {
        Some(Format::Yaml)
    } else {
        None
    }
}

fn json_syntax(text: &str) -> Result<(), String> {
    match serde_json::from_str::<IgnoredAny>(text) {
        Err(e) if e.is_syntax() || e.is_eof() => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// A YAML syntax error, or the definition nested deeper than the limit
/// (which the YAML parser stops at).
fn yaml_syntax(text: &str) -> Result<(), ApiError> {
    // Repeated keys are left to validation, which names a repeated step.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        budget: serde_saphyr::budget! { max_depth: MAX_JSON_DEPTH },
    };
    let too_deep = || -> ApiError {
        LimitError::JsonTooDeep {
            what: "the definition".into(),
            limit: MAX_JSON_DEPTH,
        }
        .into()
    };
    match serde_saphyr::from_str_with_options::<IgnoredAny>(text, options) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.without_snippet(),
                serde_saphyr::Error::Budget {
                    breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
                    ..
                }
            ) =>
        {
            Err(too_deep())
        }
        // Far deeper than the budget, the parser stops on its own limit first.
        Err(_) if limits::json_text_depth(text.as_bytes(), MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH => {
            Err(too_deep())
        }
        Err(e) => Err(ApiError::Malformed {
            what: "the definition",
            format: "YAML",
            message: e.to_string(),
        }),
    }
}

/// Reads the definition's format: what `Content-Type` says, else JSON if it
/// parses as JSON, else YAML. A body that does not parse at all is a 400;
/// one that parses but is not a valid definition is left to validation (422).
fn definition_format(headers: &HeaderMap, text: &str) -> Result<Format, ApiError> {
    let malformed = |format, message| ApiError::Malformed {
        what: "the definition",
        format,
        message,
    };
    match declared_format(headers) {
        Some(Format::Json) => json_syntax(text)
            .map(|()| Format::Json)
            .map_err(|m| malformed("JSON", m)),
        Some(Format::Yaml) => yaml_syntax(text).map(|()| Format::Yaml),
        None => match json_syntax(text) {
            Ok(()) => Ok(Format::Json),
            Err(json) => match yaml_syntax(text) {
                Ok(()) => Ok(Format::Yaml),
                Err(ApiError::Malformed { message: yaml, .. }) => Err(malformed(
                    "JSON or YAML",
                    format!("as JSON: {json}; as YAML: {yaml}"),
                )),
                Err(other) => Err(other),
            },
        },
    }
}

async fn put_workflow<B: Backend>(
    api: &Api<B>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Bytes>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("the definition is not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty: send the workflow definition as JSON or YAML".into(),
        ));
    }
    // YAML's own parser stops at the same depth; JSON's only at 128, with a
    // message that does not name the limit.
    if text.trim_start().starts_with(['{', '[']) {
        check_body_depth(body, "the definition", 0)?;
    }
    let format = definition_format(headers, text)?;
    let workflow = Workflow::from_text(text, format).map_err(ApiError::Invalid)?;
    if workflow.name.as_ref() != name {
        return Err(ApiError::NameMismatch {
            body: workflow.name.to_string(),
            path: name.to_string(),
        });
    }
    let backend = api.backend();
    baton_runtime::children::check_children(&**backend, &workflow).await?;
    let definition = workflow.definition;
    let latest = backend.get_workflow(name, None).await?.map(|w| w.version);
    let version = backend
        .put_workflow(&definition, api.coordinator().now())
        .await?;
    // Storing the latest definition again keeps its version.
    let created = latest.is_none_or(|latest| version > latest);
    info!(workflow.name = %name, workflow.version = version, created, "workflow deployed");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = DeployedView {
        name: name.to_string(),
        version,
        created,
    };
    Ok(with_location(
        json_response(status, &view),
        &format!("/workflows/{name}"),
    ))
}

// ---- executions ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    id: Option<String>,
    /// A workflow version; the latest when absent.
    #[serde(default)]
    version: Option<u32>,
    /// How long to keep the finished execution (`90d`); the workflow's
    /// retention when absent.
    #[serde(default)]
    retention: Option<String>,
    /// The longest the execution may run (`1h`); the workflow's `timeout`
    /// when absent.
    #[serde(default)]
    timeout: Option<String>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The execution id: the body's `id`, else the `Idempotency-Key` header, else a new one.
fn execution_id<B: Backend>(
    api: &Api<B>,
    from_body: Option<String>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let from_header = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str().map(|s| s.trim().to_string()).map_err(|_| {
                ApiError::BadRequest("the Idempotency-Key header is not visible ASCII".into())
            })
        })
        .transpose()?;
    let id = match (from_body, from_header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::BadRequest(format!(
                "the body's id `{body}` and the Idempotency-Key header `{header}` differ; send one, or the same in both"
            )));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => api.options().ids.next_id(),
    };
    limits::check_execution_id(&id)?;
    Ok(id)
}

async fn start_execution<B: Backend>(
    api: &Api<B>,
    workflow: &str,
    headers: &HeaderMap,
    body: &[u8],
    execution: &mut Option<String>,
) -> Result<Response<Bytes>, ApiError> {
    let request: StartRequest = if is_blank(body) {
        StartRequest::default()
    } else {
        check_body_depth(body, "the input", 1)?;
        parse_json("the start request", body)?
    };
    let id = execution_id(api, request.id, headers)?;
    note_execution(execution, &id);
    let millis = |field: &str, text: Option<&str>| {
        text.map(|text| {
            baton_core::duration::parse_millis(text)
                .map_err(|e| ApiError::BadRequest(format!("`{field}`: {e}")))
        })
        .transpose()
    };
    let options = baton_runtime::StartOptions {
        retention_ms: millis("retention", request.retention.as_deref())?,
        timeout_ms: millis("timeout", request.timeout.as_deref())?,
        parent: None,
    };
    let started = api
        .coordinator()
        .start_with(workflow, request.version, &id, request.input, options)
        .await?;
    if !started.created && started.record.workflow != workflow {
        return Err(ApiError::IdInUse {
            id,
            workflow: started.record.workflow,
        });
    }
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = StartedView::new(&started.record, started.created);
    Ok(with_location(
        json_response(status, &view),
        &format!("/executions/{id}"),
    ))
}

async fn list_executions<B: Backend>(
    api: &Api<B>,
    query: Option<&str>,
) -> Result<Response<Bytes>, ApiError> {
    let mut list = ListQuery::newest(DEFAULT_LIST_LIMIT);
    let time = |key: &str, value: &str| {
        value.parse::<Timestamp>().map_err(|_| {
            ApiError::BadRequest(format!(
                "`{key}` must be a time in epoch milliseconds, not `{value}`"
            ))
        })
    };
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "status" => {
                list.status = Some(ExecutionStatus::parse(&value).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "unknown status `{value}` (pending, running, compensating, succeeded, failed, compensated, compensation_failed, cancelled)"
                    ))
                })?)
            }
            "workflow" => list.workflow = Some(value),
            "since" => list.since = Some(time("since", &value)?),
            "until" => list.until = Some(time("until", &value)?),
            "after" => {
                list.after = Some(ListCursor::parse(&value).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`after` must be the `next` of a previous page, not `{value}`"
                    ))
                })?)
            }
            "limit" => {
                list.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be a number from 1 to {MAX_LIST_LIMIT}, not `{value}`"
                        ))
                    })?
            }
            _ => {}
        }
    }
    let page = api.backend().list(&list).await?;
    Ok(json_response(
        StatusCode::OK,
        &ExecutionPageView::from(page),
    ))
}

async fn get_execution<B: Backend>(api: &Api<B>, id: &str) -> Result<Response<Bytes>, ApiError> {
    let record = load(api, id).await?;
    Ok(json_response(StatusCode::OK, &ExecutionView::new(&record)))
}

async fn history<B: Backend>(
    api: &Api<B>,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Bytes>, ApiError> {
    for (key, value) in query_pairs(query)? {
        if key == "view" && value != "events" {
            return Err(ApiError::BadRequest(format!(
                "unknown history view `{value}`: this API serves `events` (the applied events)"
            )));
        }
    }
    // An unknown execution has no history either; say it does not exist.
    load(api, id).await?;
    let entries = api.backend().history(id).await?;
    Ok(json_response(StatusCode::OK, &entries))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// A cancel's or redrive's body: empty, or `{"reason": ...}` kept in the history.
fn reason_request(body: &[u8], what: &'static str) -> Result<CancelRequest, ApiError> {
    if is_blank(body) {
        return Ok(CancelRequest::default());
    }
    check_body_depth(body, what, 0)?;
    parse_json(what, body)
}

async fn cancel<B: Backend>(
    api: &Api<B>,
    id: &str,
    body: &[u8],
) -> Result<Response<Bytes>, ApiError> {
    let request = reason_request(body, "the cancel request")?;
    refuse_if_finished(&load(api, id).await?)?;
    let outcome = api
        .coordinator()
        .handle(
            id,
            Event::CancelRequested {
                reason: request.reason,
            },
        )
        .await?;
    outcome_response(api, id, None, outcome).await
}

/// 202 once the execution runs again; 409 with its status when it is not
/// one that failed with nothing to undo.
async fn redrive<B: Backend>(
    api: &Api<B>,
    id: &str,
    body: &[u8],
) -> Result<Response<Bytes>, ApiError> {
    let request = reason_request(body, "the redrive request")?;
    load(api, id).await?;
    match api.coordinator().redrive(id, request.reason).await? {
        Outcome::Ignored(reason @ Ignored::NotRedrivable { status }) => {
            Err(ApiError::NotRedrivable {
                id: id.to_string(),
                reason: describe_ignored(&reason),
                status,
            })
        }
        outcome => outcome_response(api, id, None, outcome).await,
    }
}

async fn signal<B: Backend>(
    api: &Api<B>,
    id: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Bytes>, ApiError> {
    let payload: Value = if is_blank(body) {
        Value::Null
    } else {
        check_body_depth(body, "the signal payload", 0)?;
        parse_json("the signal payload", body)?
    };
    // The Idempotency-Key header names the signal, so a client's retry is
    // taken once.
    let signal_id = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str().map(|s| s.trim().to_string()).map_err(|_| {
                ApiError::BadRequest("the Idempotency-Key header is not visible ASCII".into())
            })
        })
        .transpose()?;
    // A finished execution is refused (409) by the outcome, after a repeat
    // of a signal it took is recognised as one.
    let outcome = api
        .coordinator()
        .signal(id, name, payload, signal_id)
        .await?;
    outcome_response(api, id, Some(name), outcome).await
}

fn refuse_if_finished(record: &ExecutionRecord) -> Result<(), ApiError> {
    if record.status().is_terminal() {
        return Err(ApiError::Finished {
            id: record.id.clone(),
            status: Some(record.status()),
        });
    }
    Ok(())
}

/// 202 with what the event did; 409 if the execution finished meanwhile.
async fn outcome_response<B: Backend>(
    api: &Api<B>,
    id: &str,
    signal: Option<&str>,
    outcome: Outcome,
) -> Result<Response<Bytes>, ApiError> {
    // The status afterwards is a courtesy: the event is already applied, so
    // failing to read it back must not turn success into an error.
    let status = api
        .backend()
        .load(id)
        .await
        .ok()
        .flatten()
        .map(|r| r.status());
    let (outcome, reason) = match outcome {
        Outcome::Applied => ("applied", None),
        Outcome::Ignored(Ignored::ExecutionFinished) => {
            return Err(ApiError::Finished {
                id: id.to_string(),
                status,
            });
        }
        Outcome::Ignored(reason) => ("ignored", Some(describe_ignored(&reason))),
    };
    let view = OutcomeView {
        id: id.to_string(),
        signal: signal.map(str::to_string),
        outcome,
        reason,
        status,
    };
    Ok(json_response(StatusCode::ACCEPTED, &view))
}

// ---- events ----

/// One execution an event's trigger started, or had started before.
#[derive(Debug, Serialize)]
struct TriggeredView {
    id: String,
    workflow: String,
    version: u32,
    trigger: String,
    /// False when this event (its id) had already started it.
    created: bool,
}

/// The answer to an event: its id (the one given, or the one made for it)
/// and what its triggers started.
#[derive(Debug, Serialize)]
struct EventOutcomeView {
    event: String,
    started: Vec<TriggeredView>,
}

/// The event as EventBridge delivers it: what the body leaves out of the
/// envelope is filled in, so patterns and input templates see the same
/// fields on both backends. A missing `id` gets a new one.
fn complete_event<B: Backend>(api: &Api<B>, event: &mut Value) -> Result<(), ApiError> {
    let Value::Object(fields) = event else {
        return Err(ApiError::BadRequest(format!(
            "malformed event: an event is a JSON object, not `{event}`"
        )));
    };
    if !fields.contains_key("id") {
        fields.insert("id".into(), Value::String(api.options().ids.next_id()));
    }
    let time = baton_core::schedule::scheduled_time(api.coordinator().now());
    for (name, value) in [
        ("version", Value::from("0")),
        ("account", Value::from("")),
        ("time", Value::from(time)),
        ("region", Value::from("")),
        ("resources", Value::Array(Vec::new())),
    ] {
        fields.entry(name).or_insert(value);
    }
    Ok(())
}

/// Refuses the event if any trigger it matches cannot make its input from
/// it, before anything starts: otherwise the triggers before the failing one
/// would have started and the client would see an error for a half-handled
/// event.
async fn check_trigger_inputs<B: Backend>(api: &Api<B>, event: &Value) -> Result<(), ApiError> {
    for stored in api.backend().list_workflows().await? {
        for definition in &stored.definition.triggers {
            // One that does not compile is skipped by the start too.
            let Ok(compiled) = Trigger::compile(definition) else {
                continue;
            };
            if compiled.matches(event)
                && let Err(error) = compiled.input(event)
            {
                return Err(ApiError::TriggerInput(TriggerError::Input {
                    workflow: stored.name.clone(),
                    trigger: compiled.name.clone(),
                    error,
                }));
            }
        }
    }
    Ok(())
}

async fn post_event<B: Backend>(api: &Api<B>, body: &[u8]) -> Result<Response<Bytes>, ApiError> {
    if is_blank(body) {
        return Err(ApiError::BadRequest(
            "the request body is empty: send an event with `source`, `detail-type` and `detail`"
                .into(),
        ));
    }
    // The event wraps its detail, which is what a trigger's input is made of.
    check_body_depth(body, "the event", 1)?;
    let mut event: Value = parse_json("the event", body)?;
    complete_event(api, &mut event)?;
    let event_id = trigger::event_id(&event)
        .map_err(|m| ApiError::from(TriggerError::Malformed(m)))?
        .to_string();
    check_trigger_inputs(api, &event).await?;
    let outcome = start_matching(api.coordinator(), &event).await?;
    // Each start is independent and idempotent: sending the event again
    // redoes only what failed, so the first failure answers for the event.
    if let Some(failed) = outcome.failed.into_iter().next() {
        return Err(failed.into());
    }
    info!(event.id = %event_id, started = outcome.started.len(), "event handled");
    let view = EventOutcomeView {
        event: event_id,
        started: outcome
            .started
            .into_iter()
            .map(|s| TriggeredView {
                id: s.execution_id,
                workflow: s.workflow,
                version: s.version,
                trigger: s.trigger,
                created: s.created,
            })
            .collect(),
    };
    Ok(json_response(StatusCode::ACCEPTED, &view))
}
