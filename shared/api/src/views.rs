//! The JSON bodies the API returns, built from the runtime's records so the
//! stored representation can change without changing the API.

use baton_core::engine::{StepState, StepStatus, UnitStatus};
use baton_core::{ErrorInfo, ExecutionStatus, Timestamp};
use baton_runtime::ports::{ExecutionPage, ExecutionRecord, ExecutionSummary, StoredWorkflow};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    // Every view is plain data; should one ever fail to serialise, say so
    // rather than send a half-written body.
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": format!("the response could not be encoded: {e}") })
                .to_string()
                .into_bytes(),
        ),
    };
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The answer to starting an execution.
#[derive(Debug, Serialize)]
pub struct StartedView {
    pub id: String,
    pub workflow: String,
    pub version: u32,
    pub status: ExecutionStatus,
    /// False when an execution with this id already existed.
    pub created: bool,
}

impl StartedView {
    pub fn new(record: &ExecutionRecord, created: bool) -> StartedView {
        StartedView {
            id: record.id.clone(),
            workflow: record.workflow.clone(),
            version: record.workflow_version,
            status: record.status(),
            created,
        }
    }
}

/// One execution in full.
#[derive(Debug, Serialize)]
pub struct ExecutionView {
    pub id: String,
    pub workflow: String,
    /// The workflow version it runs.
    pub version: u32,
    pub status: ExecutionStatus,
    pub input: Value,
    pub steps: Vec<StepView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it stopped: the first failure, or the cancel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub cancel_requested: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When it times out, if it has a `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// For a child execution: the parent's step it runs for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentView>,
}

/// The step of a parent execution a child runs for.
#[derive(Debug, Serialize)]
pub struct ParentView {
    pub execution_id: String,
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub name: String,
    pub status: StepStatus,
    /// Attempts made, over every element of a `for_each` step.
    pub attempts: u32,
    /// Elements of a `for_each` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elements: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationView>,
}

/// How undoing a step went, over all its elements.
#[derive(Debug, Serialize)]
pub struct CompensationView {
    pub status: UnitStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl ExecutionView {
    pub fn new(record: &ExecutionRecord) -> ExecutionView {
        let state = &record.state;
        ExecutionView {
            id: record.id.clone(),
            workflow: record.workflow.clone(),
            version: record.workflow_version,
            status: state.status,
            input: Value::clone(&state.input),
            steps: state.steps.iter().map(StepView::new).collect(),
            output: state.output.clone(),
            error: state.failure.clone(),
            cancel_requested: state.cancel_requested,
            created_at: record.created_at,
            updated_at: record.updated_at,
            finished_at: state.finished_at,
            deadline: state.deadline,
            parent: state.parent.as_ref().map(|p| ParentView {
                execution_id: p.execution_id.to_string(),
                step: p.task.step.to_string(),
                index: p.task.index,
            }),
        }
    }
}

impl StepView {
    fn new(step: &StepState) -> StepView {
        let compensations: Vec<_> = step
            .units
            .iter()
            .filter_map(|u| u.compensation.as_deref())
            .collect();
        let compensation = (!compensations.is_empty()).then(|| {
            let all = |s: UnitStatus| compensations.iter().all(|c| c.status == s);
            let any = |s: UnitStatus| compensations.iter().any(|c| c.status == s);
            let status = if any(UnitStatus::Failed) {
                UnitStatus::Failed
            } else if all(UnitStatus::Succeeded) {
                UnitStatus::Succeeded
            } else if any(UnitStatus::Running) {
                UnitStatus::Running
            } else if any(UnitStatus::BackingOff) {
                UnitStatus::BackingOff
            } else {
                UnitStatus::Pending
            };
            CompensationView {
                status,
                attempts: compensations.iter().map(|c| c.attempt).sum(),
                error: compensations.iter().find_map(|c| c.error.clone()),
            }
        });
        StepView {
            name: step.name.to_string(),
            status: step.status,
            attempts: step.units.iter().map(|u| u.attempt).sum(),
            elements: step.items.as_ref().map(|items| items.len()),
            output: step.output.as_deref().cloned(),
            error: step.error.clone(),
            compensation,
        }
    }
}

/// One row of the execution list.
#[derive(Debug, Serialize)]
pub struct ExecutionSummaryView {
    pub id: String,
    pub workflow: String,
    pub version: u32,
    pub status: ExecutionStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A page of executions; `next`, when present, is passed as `after` for the
/// page that follows.
#[derive(Debug, Serialize)]
pub struct ExecutionPageView {
    pub executions: Vec<ExecutionSummaryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl From<ExecutionPage> for ExecutionPageView {
    fn from(page: ExecutionPage) -> Self {
        ExecutionPageView {
            executions: page.executions.into_iter().map(Into::into).collect(),
            next: page.next.map(|c| c.key()),
        }
    }
}

impl From<ExecutionSummary> for ExecutionSummaryView {
    fn from(s: ExecutionSummary) -> Self {
        ExecutionSummaryView {
            id: s.id,
            workflow: s.workflow,
            version: s.workflow_version,
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The latest version of a workflow.
#[derive(Debug, Serialize)]
pub struct WorkflowView {
    pub name: String,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How many steps it has.
    pub steps: usize,
    pub created_at: Timestamp,
    /// The definition as stored (only when one workflow is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

impl WorkflowView {
    pub fn new(stored: &StoredWorkflow, with_definition: bool) -> WorkflowView {
        WorkflowView {
            name: stored.name.clone(),
            version: stored.version,
            description: stored.definition.description.clone(),
            steps: stored.definition.steps.len(),
            created_at: stored.created_at,
            definition: with_definition.then(|| stored.definition.to_json()),
        }
    }
}

/// The answer to deploying a definition.
#[derive(Debug, Serialize)]
pub struct DeployedView {
    pub name: String,
    pub version: u32,
    /// False when the definition equals the latest version, which is kept.
    pub created: bool,
}

/// What became of a cancel or a signal.
#[derive(Debug, Serialize)]
pub struct OutcomeView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `applied` or `ignored`.
    pub outcome: &'static str,
    /// Why it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The execution's status afterwards, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecutionStatus>,
}
