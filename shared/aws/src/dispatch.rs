//! Steps on AWS are Lambda functions, in any runtime, invoked directly.
//!
//! The coordinator hands each attempt to its function with Lambda's
//! asynchronous `Invoke` (a [`StepEvent`] as the payload). The function's
//! event-invoke config — no Lambda-side retries, since Baton owns retries,
//! and OnSuccess and OnFailure destinations on the coordinator queue — brings
//! the result back as a Lambda destination record, which
//! [`DestinationRecord::into_message`] turns into the engine's event. No Baton
//! code runs in the step and no Lambda time is billed while a step waits.
//!
//! - [`StepInvoker`]: how a backend hands attempts over and checks, before a
//!   workflow is stored, that its functions can run;
//! - [`LambdaInvoker`]: the Lambda API, on AWS or an emulator;
//! - [`LocalInvoker`]: in-process handlers behind the same asynchronous
//!   contract (`baton dev`, tests): the handler runs in a task and its result
//!   reaches the coordinator queue as the same destination record.

use std::sync::Arc;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use baton_core::{ErrorInfo, Event};
use baton_runtime::ports::{StoreError, StoreResult};
use baton_runtime::step::{StepEvent, StepHandler, error_from_function};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::warn;

use crate::messages::CoordinatorMessage;
use crate::payloads::PayloadStore;
use crate::queues::Queues;
use crate::store::sdk_error;

/// Hands attempts to step functions.
pub trait StepInvoker: Send + Sync {
    /// Starts one attempt; its result arrives later on the coordinator queue.
    fn invoke<'a>(&'a self, event: &'a StepEvent) -> BoxFuture<'a, StoreResult<()>>;

    /// What stops these functions from running as steps, one line each
    /// naming the function; empty when all can run.
    fn check<'a>(&'a self, functions: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<String>>>;
}

/// A function as a workflow names it: a name, a full ARN, either with a
/// version or alias qualifier (`orders-charge:live`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The name or unqualified ARN, as the Lambda API takes it.
    pub function: String,
    /// The bare function name.
    pub name: String,
    pub qualifier: Option<String>,
}

impl FunctionRef {
    pub fn parse(text: &str) -> FunctionRef {
        let parts: Vec<&str> = text.split(':').collect();
        if text.starts_with("arn:") && parts.len() >= 7 {
            return FunctionRef {
                function: parts[..7].join(":"),
                name: parts[6].to_string(),
                qualifier: parts.get(7).map(|q| q.to_string()),
            };
        }
        match text.split_once(':') {
            Some((name, qualifier)) => FunctionRef {
                function: name.to_string(),
                name: name.to_string(),
                qualifier: Some(qualifier.to_string()),
            },
            None => FunctionRef {
                function: text.to_string(),
                name: text.to_string(),
                qualifier: None,
            },
        }
    }
}

/// Invokes step functions through the Lambda API.
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    /// Only functions whose names start with it may be invoked (`BATON_STEP_FUNCTION_PREFIX`).
    prefix: Option<String>,
    /// Where every function's results must be sent.
    coordinator_queue_arn: Option<String>,
}

impl LambdaInvoker {
    pub fn new(
        client: aws_sdk_lambda::Client,
        prefix: Option<String>,
        coordinator_queue_arn: Option<String>,
    ) -> LambdaInvoker {
        LambdaInvoker {
            client,
            prefix,
            coordinator_queue_arn,
        }
    }

    async fn check_one(&self, function: &str) -> StoreResult<Option<String>> {
        let target = FunctionRef::parse(function);
        if let Some(prefix) = &self.prefix
            && !target.name.starts_with(prefix.as_str())
        {
            return Ok(Some(format!(
                "function `{function}` is outside BATON_STEP_FUNCTION_PREFIX `{prefix}`: Baton may not invoke it"
            )));
        }
        let found = self
            .client
            .get_function()
            .function_name(&target.function)
            .set_qualifier(target.qualifier.clone())
            .send()
            .await;
        match found {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                return Ok(Some(format!("function `{function}` does not exist")));
            }
            Err(e) => return Err(sdk_error(e)),
        }
        let config = self
            .client
            .get_function_event_invoke_config()
            .function_name(&target.function)
            .set_qualifier(target.qualifier.clone())
            .send()
            .await;
        let config = match config {
            Ok(config) => config,
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                return Ok(Some(format!(
                    "function `{function}` has no event-invoke config: its results would never reach Baton (set MaximumRetryAttempts 0 and OnSuccess and OnFailure destinations to the coordinator queue)"
                )));
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let mut wrong = Vec::new();
        if config.maximum_retry_attempts() != Some(0) {
            wrong.push(format!(
                "MaximumRetryAttempts is {} (Baton retries; it must be 0)",
                config
                    .maximum_retry_attempts()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "unset".into())
            ));
        }
        let destinations = config.destination_config();
        let on_success = destinations
            .and_then(|d| d.on_success())
            .and_then(|d| d.destination());
        let on_failure = destinations
            .and_then(|d| d.on_failure())
            .and_then(|d| d.destination());
        let want = self.coordinator_queue_arn.as_deref();
        for (which, got) in [("OnSuccess", on_success), ("OnFailure", on_failure)] {
            match (got, want) {
                (None, _) => wrong.push(format!("no {which} destination")),
                (Some(got), Some(want)) if got != want => wrong.push(format!(
                    "its {which} destination is `{got}`, not the coordinator queue `{want}`"
                )),
                _ => {}
            }
        }
        Ok((!wrong.is_empty()).then(|| format!("function `{function}`: {}", wrong.join(", "))))
    }
}

impl StepInvoker for LambdaInvoker {
    fn invoke<'a>(&'a self, event: &'a StepEvent) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let payload = serde_json::to_vec(event).map_err(|e| StoreError::Corrupt {
                what: "step event".into(),
                message: e.to_string(),
            })?;
            self.client
                .invoke()
                .function_name(&event.baton.function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload))
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(())
        })
    }

    fn check<'a>(&'a self, functions: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        Box::pin(async move {
            let mut problems = Vec::new();
            for function in functions {
                problems.extend(self.check_one(function).await?);
            }
            Ok(problems)
        })
    }
}

/// Finds the in-process handler of a function.
pub type HandlerLookup = dyn Fn(&str) -> Option<Arc<dyn StepHandler>> + Send + Sync;

/// Runs step functions in this process with Lambda's asynchronous contract:
/// `invoke` returns at once, the handler runs in a task until the attempt's
/// deadline, and its result is sent to the coordinator queue as the
/// destination record Lambda would send.
pub struct LocalInvoker {
    handlers: Arc<HandlerLookup>,
    queues: Arc<Queues>,
    /// The payload bucket, for inputs and outputs passed by reference as
    /// Baton's step SDK passes them.
    payloads: Option<Arc<PayloadStore>>,
}

impl LocalInvoker {
    pub fn new(handlers: Arc<HandlerLookup>, queues: Arc<Queues>) -> LocalInvoker {
        let payloads = queues
            .settings()
            .payload_bucket
            .as_ref()
            .map(|bucket| Arc::new(PayloadStore::new(queues.clients().s3.clone(), bucket)));
        LocalInvoker {
            handlers,
            queues,
            payloads,
        }
    }
}

/// A handler's call with payload references read and written at its edges.
async fn call_with_payloads(
    handler: &dyn StepHandler,
    payloads: Option<&PayloadStore>,
    event: &StepEvent,
) -> Result<Value, baton_runtime::step::StepError> {
    use baton_runtime::step::StepError;
    let unavailable = |e: StoreError| StepError::retryable("PayloadUnavailable", e.to_string());
    let Some(payloads) = payloads else {
        return handler.call(event.baton.clone(), event.input.clone()).await;
    };
    let input = payloads
        .function_input(event.input.clone())
        .await
        .map_err(unavailable)?;
    let output = handler.call(event.baton.clone(), input).await?;
    payloads
        .function_output(&event.baton.execution_id, output)
        .await
        .map_err(unavailable)
}

impl StepInvoker for LocalInvoker {
    fn invoke<'a>(&'a self, event: &'a StepEvent) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let Some(handler) = (self.handlers)(&event.baton.function) else {
                return Err(StoreError::Refused {
                    what: "invoke".into(),
                    problems: vec![format!(
                        "no local handler for function `{}`",
                        event.baton.function
                    )],
                });
            };
            let event = event.clone();
            let queues = self.queues.clone();
            let payloads = self.payloads.clone();
            tokio::spawn(async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let budget = std::time::Duration::from_millis(
                    event.baton.deadline.saturating_sub(now).max(1),
                );
                let call = call_with_payloads(handler.as_ref(), payloads.as_deref(), &event);
                let record = match tokio::time::timeout(budget, call).await {
                    Ok(Ok(output)) => DestinationRecord::success(&event, output),
                    Ok(Err(error)) => DestinationRecord::failure(
                        &event,
                        &error.function_error_type(),
                        &error.message,
                    ),
                    // Lambda stops a function at its timeout and reports it as unhandled.
                    Err(_) => DestinationRecord::failure(
                        &event,
                        LAMBDA_TIMEOUT,
                        "Task timed out before the attempt's deadline",
                    ),
                };
                let body = serde_json::to_string(&record).unwrap_or_default();
                if let Err(e) = queues.send_raw_to_coordinator(&body, 0).await {
                    // The attempt's timeout timer still ends the attempt.
                    warn!(error = %e, function = %event.baton.function, "result not delivered");
                }
            });
            Ok(())
        })
    }

    fn check<'a>(&'a self, functions: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        Box::pin(async move {
            Ok(functions
                .iter()
                .filter(|f| (self.handlers)(f).is_none())
                .map(|f| format!("no local handler serves function `{f}` (baton.toml or an in-process handler)"))
                .collect())
        })
    }
}

/// What Lambda sends to a destination after an asynchronous invocation
/// (its "invocation record").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub request_context: RequestContext,
    pub request_payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_context: Option<ResponseContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    /// `Success`, `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_invoke_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_version: Option<String>,
    /// Set when the function failed (`Unhandled`, `Handled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_error: Option<String>,
}

impl DestinationRecord {
    pub fn success(event: &StepEvent, output: Value) -> DestinationRecord {
        DestinationRecord {
            version: Some("1.0".into()),
            timestamp: None,
            request_context: RequestContext {
                request_id: None,
                function_arn: None,
                condition: "Success".into(),
                approximate_invoke_count: Some(1),
            },
            request_payload: serde_json::to_value(event).unwrap_or(Value::Null),
            response_context: Some(ResponseContext {
                status_code: Some(200),
                executed_version: Some("$LATEST".into()),
                function_error: None,
            }),
            response_payload: Some(output),
        }
    }

    pub fn failure(event: &StepEvent, error_type: &str, message: &str) -> DestinationRecord {
        DestinationRecord {
            request_context: RequestContext {
                condition: "RetriesExhausted".into(),
                ..DestinationRecord::success(event, Value::Null).request_context
            },
            response_context: Some(ResponseContext {
                status_code: Some(200),
                executed_version: Some("$LATEST".into()),
                function_error: Some("Unhandled".into()),
            }),
            response_payload: Some(json!({"errorType": error_type, "errorMessage": message})),
            ..DestinationRecord::success(event, Value::Null)
        }
    }

    /// The engine event this record reports, for the execution it names.
    pub fn into_message(self) -> Result<CoordinatorMessage, String> {
        let event: StepEvent = serde_json::from_value(self.request_payload).map_err(|e| {
            format!("a Lambda destination record whose request is not a Baton step event: {e}")
        })?;
        let task = event.baton.task_ref();
        let function_error = self
            .response_context
            .as_ref()
            .and_then(|c| c.function_error.clone());
        let engine_event =
            if self.request_context.condition == "Success" && function_error.is_none() {
                Event::TaskSucceeded {
                    task,
                    output: self.response_payload.unwrap_or(Value::Null),
                }
            } else {
                Event::TaskFailed {
                    task,
                    error: failure_of(
                        &self.request_context.condition,
                        function_error.as_deref(),
                        self.response_payload.as_ref(),
                    ),
                }
            };
        Ok(CoordinatorMessage::Event {
            execution_id: event.baton.execution_id,
            event: engine_event,
        })
    }
}

/// Lambda's error type for a function stopped at its timeout.
const LAMBDA_TIMEOUT: &str = "Sandbox.Timedout";

/// A failed invocation as the engine records it: the function's own error
/// type when it reported one, else what Lambda says went wrong (a crash, a
/// timeout, an event that waited too long to run), which a retry may fix.
/// A function stopped by a timeout or a crash may have had its effect: its
/// outcome is unknown, so a saga undoes it too. One that never ran (its
/// event expired) did nothing.
fn failure_of(condition: &str, function_error: Option<&str>, payload: Option<&Value>) -> ErrorInfo {
    let text = |key: &str| payload.and_then(|p| p.get(key)).and_then(Value::as_str);
    let message = text("errorMessage").unwrap_or("").to_string();
    if let Some(error_type) = text("errorType") {
        let error = error_from_function(error_type, &message);
        return if error_type == LAMBDA_TIMEOUT {
            error.with_outcome_unknown()
        } else {
            error
        };
    }
    let name = match (condition, function_error) {
        ("EventAgeExceeded", _) => "Lambda.EventAgeExceeded".to_string(),
        (_, Some(kind)) => format!("Lambda.{kind}"),
        (other, None) => format!("Lambda.{other}"),
    };
    let message = if message.is_empty() {
        format!("the invocation ended with condition {condition}")
    } else {
        message
    };
    let error = ErrorInfo::new(name, message, true);
    if condition == "EventAgeExceeded" {
        error
    } else {
        error.with_outcome_unknown()
    }
}

#[cfg(test)]
mod tests {
    use baton_core::TaskKind;
    use baton_runtime::step::StepContext;

    use super::*;

    fn event() -> StepEvent {
        StepEvent {
            input: json!({"orderId": "o-1"}),
            baton: StepContext {
                execution_id: "ex-1".into(),
                workflow: "orders".into(),
                step: "charge".into(),
                index: Some(2),
                attempt: 3,
                kind: TaskKind::Step,
                function: "orders-charge".into(),
                idempotency_key: "bk-1".into(),
                deadline: 10,
            },
        }
    }

    fn decode(body: Value) -> Event {
        let record: DestinationRecord = serde_json::from_value(body).unwrap();
        match record.into_message().unwrap() {
            CoordinatorMessage::Event {
                execution_id,
                event,
            } => {
                assert_eq!(execution_id, "ex-1");
                event
            }
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn function_refs_keep_their_qualifier_apart() {
        let arn =
            FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:orders-x:live");
        assert_eq!(
            arn.function,
            "arn:aws:lambda:us-east-1:123456789012:function:orders-x"
        );
        assert_eq!(arn.name, "orders-x");
        assert_eq!(arn.qualifier.as_deref(), Some("live"));
        let named = FunctionRef::parse("orders-x:7");
        assert_eq!(
            (named.function.as_str(), named.qualifier.as_deref()),
            ("orders-x", Some("7"))
        );
        assert_eq!(FunctionRef::parse("orders-x").qualifier, None);
    }

    #[test]
    fn a_success_record_as_lambda_sends_it_is_the_steps_output() {
        // The shape of AWS's documented invocation record.
        let body = json!({
            "version": "1.0",
            "timestamp": "2026-11-30T12:00:00.000Z",
            "requestContext": {
                "requestId": "e4b46cbf",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders-charge:$LATEST",
                "condition": "Success",
                "approximateInvokeCount": 1
            },
            "requestPayload": serde_json::to_value(event()).unwrap(),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "responsePayload": {"chargeId": "c-1"}
        });
        let Event::TaskSucceeded { task, output } = decode(body) else {
            panic!("not a success")
        };
        assert_eq!(output, json!({"chargeId": "c-1"}));
        assert_eq!(
            (task.step.as_ref(), task.index, task.attempt),
            ("charge", Some(2), 3)
        );
    }

    #[test]
    fn a_thrown_error_is_a_failed_attempt_named_by_its_type() {
        let body = json!({
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 1},
            "requestPayload": serde_json::to_value(event()).unwrap(),
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorType": "PermanentCardDeclined", "errorMessage": "no funds", "stackTrace": []}
        });
        let Event::TaskFailed { error, .. } = decode(body) else {
            panic!("not a failure")
        };
        assert_eq!(error.name, "PermanentCardDeclined");
        assert_eq!(error.message, "no funds");
        assert!(!error.retryable);
    }

    #[test]
    fn a_crash_or_an_expired_event_is_a_retryable_failure() {
        let crash = json!({
            "requestContext": {"condition": "RetriesExhausted"},
            "requestPayload": serde_json::to_value(event()).unwrap(),
            "responseContext": {"functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "Task timed out after 3.00 seconds"}
        });
        let Event::TaskFailed { error, .. } = decode(crash) else {
            panic!("not a failure")
        };
        assert_eq!(
            (error.name.as_str(), error.retryable),
            ("Lambda.Unhandled", true)
        );
        let expired = json!({
            "requestContext": {"condition": "EventAgeExceeded"},
            "requestPayload": serde_json::to_value(event()).unwrap()
        });
        let Event::TaskFailed { error, .. } = decode(expired) else {
            panic!("not a failure")
        };
        assert_eq!(error.name, "Lambda.EventAgeExceeded");
        assert!(!error.outcome_unknown, "an expired event never ran");
    }

    #[test]
    fn a_record_of_something_else_is_refused_with_a_reason() {
        let record: DestinationRecord = serde_json::from_value(json!({
            "requestContext": {"condition": "Success"},
            "requestPayload": {"unrelated": true}
        }))
        .unwrap();
        assert!(
            record
                .into_message()
                .unwrap_err()
                .contains("not a Baton step event")
        );
    }

    #[test]
    fn local_records_decode_to_what_the_handler_said() {
        let ok = serde_json::to_value(DestinationRecord::success(&event(), json!(7))).unwrap();
        assert!(matches!(decode(ok), Event::TaskSucceeded { output, .. } if output == json!(7)));
        let failed =
            serde_json::to_value(DestinationRecord::failure(&event(), "Permanent.X", "m")).unwrap();
        assert!(matches!(decode(failed), Event::TaskFailed { error, .. } if !error.retryable));
    }
}
