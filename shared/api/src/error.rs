//! [`ApiError`]: every way a request can fail, the status code each gets,
//! and the JSON body `{"error": "...", ...}` that explains it.

use baton_core::{ExecutionStatus, LimitError, ValidationErrors};
use baton_runtime::CoordinatorError;
use baton_runtime::ports::StoreError;
use baton_runtime::triggers::TriggerError;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use thiserror::Error;

use crate::views::json_response;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    NoRoute { method: Method, path: String },
    #[error(
        "{method} is not allowed on {path}; allowed: {}",
        allowed_list(allowed)
    )]
    MethodNotAllowed {
        method: Method,
        path: String,
        allowed: Vec<Method>,
    },
    #[error("the request body is {}more than the {limit}-byte limit", size.map(|s| format!("{s} bytes, ")).unwrap_or_default())]
    BodyTooLarge { size: Option<usize>, limit: usize },
    /// A payload, or the execution it would make, is larger than the backend
    /// stores (`message` names which and both sizes); nothing was stored.
    #[error("{message}")]
    TooLarge { message: String, limit: usize },
    /// Over one of Baton's limits: nested too deep, an id it does not
    /// accept. Nothing was stored.
    #[error(transparent)]
    Limit(LimitError),
    /// The body does not parse; `message` says where (line and column).
    #[error("{what} is not valid {format}: {message}")]
    Malformed {
        what: &'static str,
        format: &'static str,
        message: String,
    },
    /// Anything else wrong with the request itself.
    #[error("{0}")]
    BadRequest(String),
    #[error("no workflow `{name}`{} is deployed", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownWorkflow { name: String, version: Option<u32> },
    #[error("no execution `{0}`")]
    UnknownExecution(String),
    #[error("execution `{id}` already finished{}", status.map(|s| format!(" ({})", s.as_str())).unwrap_or_default())]
    Finished {
        id: String,
        status: Option<ExecutionStatus>,
    },
    /// A redrive of an execution that did not fail with nothing to undo.
    #[error("execution `{id}` cannot be redriven: {reason}")]
    NotRedrivable {
        id: String,
        reason: String,
        status: ExecutionStatus,
    },
    #[error("execution id `{id}` is already used by workflow `{workflow}`")]
    IdInUse { id: String, workflow: String },
    /// The request contradicts what is stored (an execution id started with another input).
    #[error("{0}")]
    Conflict(String),
    #[error("the definition is invalid: {}", summary(.0))]
    Invalid(ValidationErrors),
    #[error("the definition names workflow `{body}` but the path names `{path}`")]
    NameMismatch { body: String, path: String },
    /// What the request asks for cannot run as given (a workflow naming
    /// functions Baton cannot invoke); nothing was stored.
    #[error("{what}: {}", problems.join("; "))]
    Refused { what: String, problems: Vec<String> },
    /// A trigger matches the event, but its input does not evaluate on it:
    /// the trigger or the event must change. Nothing was started.
    #[error(transparent)]
    TriggerInput(TriggerError),
    /// Starting what a trigger matched failed; the response is `error`'s
    /// (503 when sending the same event again may start it).
    #[error("trigger `{trigger}` of workflow `{workflow}`: {error}")]
    TriggerStart {
        workflow: String,
        trigger: String,
        error: Box<ApiError>,
    },
    #[error(transparent)]
    Coordinator(CoordinatorError),
    #[error(transparent)]
    Store(StoreError),
}

fn allowed_list(allowed: &[Method]) -> String {
    allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(errors: &ValidationErrors) -> String {
    let n = errors.problems.len();
    let first = errors
        .problems
        .first()
        .map(|p| p.to_string())
        .unwrap_or_default();
    match n {
        1 => first,
        _ => format!("{n} problems, the first: {first}"),
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        ApiError::Limit(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::UnknownExecution(id),
            StoreError::TooLarge { limit, .. } => ApiError::TooLarge {
                message: e.to_string(),
                limit,
            },
            StoreError::Refused { what, problems } => ApiError::Refused { what, problems },
            other => ApiError::Store(other),
        }
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::NotFound(id) => ApiError::UnknownExecution(id),
            CoordinatorError::UnknownWorkflow { name, version } => {
                ApiError::UnknownWorkflow { name, version }
            }
            CoordinatorError::Store(StoreError::NotFound(id)) => ApiError::UnknownExecution(id),
            CoordinatorError::Store(StoreError::Refused { what, problems }) => {
                ApiError::Refused { what, problems }
            }
            CoordinatorError::ExecutionExists { .. } => ApiError::Conflict(e.to_string()),
            CoordinatorError::InvalidRetention(_)
            | CoordinatorError::InvalidTimeout(_)
            | CoordinatorError::UnknownSignal { .. } => ApiError::BadRequest(e.to_string()),
            CoordinatorError::Limit(limit) => ApiError::Limit(limit),
            // The payload is the client's: say which limit it broke.
            CoordinatorError::PayloadTooLarge { limit, .. }
            | CoordinatorError::Store(StoreError::TooLarge { limit, .. }) => ApiError::TooLarge {
                message: e.to_string(),
                limit,
            },
            other => ApiError::Coordinator(other),
        }
    }
}

impl From<TriggerError> for ApiError {
    fn from(e: TriggerError) -> Self {
        match e {
            TriggerError::Malformed(_) => ApiError::BadRequest(e.to_string()),
            TriggerError::Input { .. } => ApiError::TriggerInput(e),
            TriggerError::Start {
                workflow,
                trigger,
                error,
            } => ApiError::TriggerStart {
                workflow,
                trigger,
                error: Box::new(error.into()),
            },
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } | ApiError::TooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Malformed { .. }
            | ApiError::BadRequest(_)
            | ApiError::NameMismatch { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownWorkflow { .. } | ApiError::UnknownExecution(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Finished { .. }
            | ApiError::NotRedrivable { .. }
            | ApiError::IdInUse { .. }
            | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_)
            | ApiError::Refused { .. }
            | ApiError::Limit(_)
            | ApiError::TriggerInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TriggerStart { error, .. } => error.status(),
            ApiError::Coordinator(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Coordinator(_) | ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: always `error`, plus what a client can act on.
    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.to_string() });
        match self {
            ApiError::TriggerStart { error, .. } => {
                // The cause's fields (`limit`, `status`), under this error's message.
                body = error.body();
                body["error"] = json!(self.to_string());
            }
            ApiError::Invalid(errors) => {
                body["problems"] = serde_json::to_value(&errors.problems).unwrap_or(Value::Null);
            }
            ApiError::Finished {
                status: Some(status),
                ..
            }
            | ApiError::NotRedrivable { status, .. } => body["status"] = json!(status.as_str()),
            ApiError::MethodNotAllowed { allowed, .. } => {
                body["allowed"] = json!(allowed.iter().map(Method::as_str).collect::<Vec<_>>());
            }
            ApiError::BodyTooLarge { limit, .. } | ApiError::TooLarge { limit, .. } => {
                body["limit"] = json!(limit)
            }
            ApiError::Limit(e) => {
                if let Some(limit) = e.limit() {
                    body["limit"] = json!(limit);
                }
            }
            ApiError::Refused { problems, .. } => body["problems"] = json!(problems),
            _ => {}
        }
        body
    }

    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status();
        let mut response = json_response(status, &self.body());
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(&allowed_list(allowed)) {
                    headers.insert(header::ALLOW, value);
                }
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
