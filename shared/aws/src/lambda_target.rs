//! `lambda = "name"` step targets of the embedded backend: a synchronous
//! Lambda `Invoke` (RequestResponse) per attempt.
//!
//! The payload is the same [`StepEvent`] the AWS coordinator sends, so one
//! function serves both backends. The function's return value is the step's
//! output; an error it throws (`FunctionError` set, the payload
//! `{"errorType", "errorMessage"}`) is named and classed by
//! [`error_from_function`], as on AWS. `cargo lambda watch` answers a
//! function error with HTTP 500 and the same body, which is read the same way.
//! Lambda itself failing (network, throttling, a function being updated) is a
//! retryable `LambdaUnavailable`; a function that does not exist is a
//! permanent `LambdaFunctionNotFound`.
//!
//! The SDK's own retries are off: Baton retries the step by its policy, and
//! an SDK retry of an invocation that failed inside the function would run
//! the function again behind the policy's back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_lambda::config::Credentials;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use baton_runtime::step::{StepContext, StepError, StepEvent, StepFuture, error_from_function};
use baton_runtime::targets::LambdaInvoker;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

/// Why one synchronous invocation did not give the step an output.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LambdaTargetError {
    /// The function ran and threw: its own error type and message.
    #[error("{error_type}: {message}")]
    Function { error_type: String, message: String },
    #[error("Lambda function `{function}` does not exist: {message}")]
    NotFound { function: String, message: String },
    /// Lambda could not run the function now; a later attempt may.
    #[error("Lambda did not invoke `{function}`: {message}")]
    Unavailable { function: String, message: String },
    /// Lambda refused the request for a reason a retry cannot change
    /// (permissions, an oversized payload, a misconfigured function).
    #[error("Lambda refused to invoke `{function}` ({code}): {message}")]
    Refused {
        function: String,
        code: String,
        message: String,
    },
    #[error("Lambda function `{function}` returned something that is not JSON: {message}")]
    InvalidOutput { function: String, message: String },
}

impl From<LambdaTargetError> for StepError {
    fn from(error: LambdaTargetError) -> StepError {
        match error {
            LambdaTargetError::Function {
                error_type,
                message,
            } => {
                let info = error_from_function(&error_type, &message);
                StepError {
                    name: info.name,
                    message: info.message,
                    retryable: info.retryable,
                }
            }
            e @ LambdaTargetError::NotFound { .. } => {
                StepError::permanent("LambdaFunctionNotFound", e.to_string())
            }
            e @ LambdaTargetError::Unavailable { .. } => {
                StepError::retryable("LambdaUnavailable", e.to_string())
            }
            e @ LambdaTargetError::Refused { .. } => {
                StepError::permanent("LambdaInvokeRefused", e.to_string())
            }
            e @ LambdaTargetError::InvalidOutput { .. } => {
                StepError::permanent("InvalidOutput", e.to_string())
            }
        }
    }
}

/// Invokes `lambda = "name"` targets, one client per endpoint. Clones
/// share the clients.
#[derive(Clone, Default)]
pub struct LambdaTarget {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The standard AWS configuration, loaded on first use so that building
    /// targets stays synchronous and costs nothing when no target is a Lambda.
    shared: OnceCell<SdkConfig>,
    clients: Mutex<HashMap<Option<String>, aws_sdk_lambda::Client>>,
}

impl LambdaTarget {
    pub fn new() -> LambdaTarget {
        LambdaTarget::default()
    }

    async fn client(&self, endpoint: Option<&str>) -> aws_sdk_lambda::Client {
        let key = endpoint.map(str::to_string);
        if let Some(client) = self.lock_clients().get(&key) {
            return client.clone();
        }
        let shared = self
            .inner
            .shared
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await;
        let mut config =
            aws_sdk_lambda::config::Builder::from(shared).retry_config(RetryConfig::disabled());
        if let Some(url) = endpoint {
            // A target's own endpoint is usually a local emulator or `cargo
            // lambda watch`, which accept any signature: stand in for a
            // region and credentials where the environment names none (the
            // rule `baton --endpoint` follows), rather than let the default
            // chain probe the instance metadata service on every call.
            config = config.endpoint_url(url);
            if shared.region().is_none() {
                config = config.region(Region::new("us-east-1"));
            }
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
                && std::env::var_os("AWS_PROFILE").is_none()
            {
                config = config.credentials_provider(Credentials::new(
                    "test",
                    "test",
                    None,
                    None,
                    "baton-lambda-target",
                ));
            }
        }
        let client = aws_sdk_lambda::Client::from_conf(config.build());
        self.lock_clients().insert(key, client.clone());
        client
    }

    fn lock_clients(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Option<String>, aws_sdk_lambda::Client>> {
        // The map only caches clients; a panic while holding it leaves it usable.
        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One synchronous invocation of `function` with `event` as its payload.
    pub async fn invoke_event(
        &self,
        function: &str,
        endpoint: Option<&str>,
        event: &StepEvent,
    ) -> Result<Value, LambdaTargetError> {
        let payload = serde_json::to_vec(event).map_err(|e| LambdaTargetError::Refused {
            function: function.to_string(),
            code: "UnserializableEvent".into(),
            message: e.to_string(),
        })?;
        let client = self.client(endpoint).await;
        debug!(
            lambda.function = function,
            lambda.endpoint = endpoint.unwrap_or("default"),
            workflow.execution.id = %event.baton.execution_id,
            step = %event.baton.step,
            attempt = event.baton.attempt,
            "invoking Lambda target"
        );
        let result = client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send()
            .await;
        let outcome = match result {
            Ok(output) => reply(function, &output),
            Err(error) => Err(invoke_error(function, error)),
        };
        if let Err(LambdaTargetError::Unavailable { message, .. }) = &outcome {
            warn!(lambda.function = function, error = %message, "Lambda target unavailable");
        }
        outcome
    }
}

impl LambdaInvoker for LambdaTarget {
    fn invoke(
        &self,
        function: &str,
        endpoint: Option<&str>,
        context: &StepContext,
        input: &Value,
    ) -> StepFuture {
        let event = StepEvent {
            input: input.clone(),
            baton: context.clone(),
        };
        let function = function.to_string();
        let endpoint = endpoint.map(str::to_string);
        // The future outlives this call, so it owns a handle on the clients.
        let target = self.clone();
        Box::pin(async move {
            target
                .invoke_event(&function, endpoint.as_deref(), &event)
                .await
                .map_err(StepError::from)
        })
    }
}

/// A completed invocation: the output, or the error the function threw.
fn reply(function: &str, output: &InvokeOutput) -> Result<Value, LambdaTargetError> {
    let payload = output.payload().map(Blob::as_ref).unwrap_or_default();
    match output.function_error() {
        Some(kind) => Err(function_error(kind, payload)),
        None => parse_output(function, payload),
    }
}

fn parse_output(function: &str, payload: &[u8]) -> Result<Value, LambdaTargetError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(payload).map_err(|e| LambdaTargetError::InvalidOutput {
        function: function.to_string(),
        message: e.to_string(),
    })
}

/// The function's error from its payload; `kind` (`Unhandled`, `Handled`)
/// names it when the payload carries no type (a crash, a timeout).
fn function_error(kind: &str, payload: &[u8]) -> LambdaTargetError {
    match error_payload(payload) {
        Some(error) => error,
        None => LambdaTargetError::Function {
            error_type: format!("Lambda.{kind}"),
            message: String::from_utf8_lossy(payload).trim().to_string(),
        },
    }
}

/// `{"errorType": ..., "errorMessage": ...}`, as every Lambda runtime reports a thrown error.
fn error_payload(payload: &[u8]) -> Option<LambdaTargetError> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    let error_type = body.get("errorType")?.as_str()?.to_string();
    let message = body
        .get("errorMessage")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some(LambdaTargetError::Function {
        error_type,
        message,
    })
}

fn invoke_error(function: &str, error: SdkError<InvokeError, HttpResponse>) -> LambdaTargetError {
    let message = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            rejected(
                function,
                raw.status().as_u16(),
                raw.body().bytes().unwrap_or_default(),
                service.err().is_resource_not_found_exception(),
                service.err().code(),
                service.err().message().unwrap_or(&message),
            )
        }
        // Nothing came back that says what happened to the request: the
        // network, a timeout, a response that did not parse.
        _ => LambdaTargetError::Unavailable {
            function: function.to_string(),
            message,
        },
    }
}

/// An invocation Lambda answered with an error status.
fn rejected(
    function: &str,
    status: u16,
    body: &[u8],
    not_found: bool,
    code: Option<&str>,
    message: &str,
) -> LambdaTargetError {
    if not_found {
        return LambdaTargetError::NotFound {
            function: function.to_string(),
            message: message.to_string(),
        };
    }
    // `cargo lambda watch` reports a thrown error as HTTP 500 with the
    // runtime's error body instead of 200 with `X-Amz-Function-Error`.
    if let Some(error) = error_payload(body) {
        return error;
    }
    // 429 throttled, 409 the function is being updated, 5xx Lambda's own trouble.
    if status == 429 || status == 409 || status >= 500 {
        return LambdaTargetError::Unavailable {
            function: function.to_string(),
            message: format!("HTTP {status}: {message}"),
        };
    }
    LambdaTargetError::Refused {
        function: function.to_string(),
        code: code.unwrap_or("Unknown").to_string(),
        message: format!("HTTP {status}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_without_a_function_error_is_the_output() {
        assert_eq!(
            parse_output("f", br#"{"ok": 1}"#),
            Ok(serde_json::json!({"ok": 1}))
        );
        assert_eq!(parse_output("f", b""), Ok(Value::Null));
        assert!(matches!(
            parse_output("f", b"not json"),
            Err(LambdaTargetError::InvalidOutput { .. })
        ));
    }

    #[test]
    fn a_thrown_error_keeps_its_type_and_the_permanent_rule() {
        let declined = function_error(
            "Unhandled",
            br#"{"errorType":"PermanentDeclined","errorMessage":"no funds","stackTrace":[]}"#,
        );
        let step = StepError::from(declined);
        assert_eq!(
            (step.name.as_str(), step.message.as_str(), step.retryable),
            ("PermanentDeclined", "no funds", false)
        );
        let flaky = StepError::from(function_error(
            "Unhandled",
            br#"{"errorType":"ValueError","errorMessage":"x"}"#,
        ));
        assert!(flaky.retryable);
        let crash = StepError::from(function_error("Unhandled", b"Runtime exited"));
        assert_eq!(
            (crash.name.as_str(), crash.retryable),
            ("Lambda.Unhandled", true)
        );
    }

    #[test]
    fn an_http_500_with_an_error_body_is_the_functions_error() {
        let body = br#"{"errorType":"PermanentBadInput","errorMessage":"nope"}"#;
        let step = StepError::from(rejected("f", 500, body, false, None, "unhandled"));
        assert_eq!(
            (step.name.as_str(), step.retryable),
            ("PermanentBadInput", false)
        );
    }

    #[test]
    fn lambdas_own_failures_are_classed_by_kind_and_status() {
        let missing = StepError::from(rejected(
            "f",
            404,
            br#"{"Type":"User","Message":"Function not found"}"#,
            true,
            Some("ResourceNotFoundException"),
            "Function not found",
        ));
        assert_eq!(
            (missing.name.as_str(), missing.retryable),
            ("LambdaFunctionNotFound", false)
        );
        for status in [429, 409, 500, 502] {
            let step = StepError::from(rejected("f", status, b"{}", false, None, "busy"));
            assert_eq!(
                (step.name.as_str(), step.retryable),
                ("LambdaUnavailable", true),
                "{status}"
            );
        }
        let denied = StepError::from(rejected(
            "f",
            403,
            b"{}",
            false,
            Some("AccessDeniedException"),
            "not allowed",
        ));
        assert_eq!(
            (denied.name.as_str(), denied.retryable),
            ("LambdaInvokeRefused", false)
        );
        assert!(denied.message.contains("AccessDeniedException"));
    }
}
