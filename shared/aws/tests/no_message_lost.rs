//! Nothing the coordinator is handed is silently lost (moto server): a
//! message is applied, left for redelivery, or dead-lettered for a person; a
//! dispatch that fails for good becomes a failed attempt; one that may pass
//! later keeps the outbox, and the commands behind it still go out; a
//! repeated start delivers what the first one left.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::{DestinationRecord, StepInvoker};
use baton_aws::testing::{RecordingInvoker, endpoint, fresh_recording_backend, sdk_config};
use baton_aws::{AwsBackend, RequestCounter};
use baton_core::definition::Format;
use baton_core::{ExecutionStatus, WorkflowDefinition};
use baton_runtime::ports::{
    DeadLetterKind, DeadLetterStore, ExecutionStore, StoreError, StoreResult, WorkflowStore,
};
use baton_runtime::step::StepEvent;
use baton_runtime::{Clock, Coordinator, SystemClock};
use futures::future::BoxFuture;
use serde_json::json;

const PARALLEL: &str = r#"
name: parallel
defaults: { retry: { max_attempts: 2, backoff: fixed, delay: 100ms }, timeout: 1m }
steps:
  a: { function: fn-a, mutates: false }
  b: { function: fn-b, mutates: false }
"#;

/// Fails the functions it is told to, with the error it is told; records the rest.
struct FlakyInvoker {
    recorded: Arc<RecordingInvoker>,
    failing: Mutex<BTreeMap<String, StoreError>>,
}

impl FlakyInvoker {
    fn new(recorded: Arc<RecordingInvoker>) -> FlakyInvoker {
        FlakyInvoker {
            recorded,
            failing: Mutex::new(BTreeMap::new()),
        }
    }

    fn fail(&self, function: &str, error: Option<StoreError>) {
        let mut failing = self.failing.lock().unwrap();
        match error {
            Some(e) => failing.insert(function.to_string(), e),
            None => failing.remove(function),
        };
    }
}

impl StepInvoker for FlakyInvoker {
    fn invoke<'a>(&'a self, event: &'a StepEvent) -> BoxFuture<'a, StoreResult<()>> {
        let failure = self
            .failing
            .lock()
            .unwrap()
            .get(&event.baton.function)
            .cloned();
        match failure {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.recorded.invoke(event),
        }
    }

    fn check<'a>(&'a self, functions: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.recorded.check(functions)
    }
}

async fn flaky_backend(name: &str) -> (AwsBackend, Arc<FlakyInvoker>, Arc<RecordingInvoker>) {
    let (backend, _) = fresh_recording_backend(name, 3).await;
    let recorded = Arc::new(RecordingInvoker::default());
    let flaky = Arc::new(FlakyInvoker::new(recorded.clone()));
    let backend = backend.with_invoker(flaky.clone());
    let definition = WorkflowDefinition::parse(PARALLEL, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    (backend, flaky, recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_send_does_not_hold_back_the_rest_and_a_repeated_start_delivers_it() {
    let (backend, flaky, recorded) = flaky_backend("failed-send").await;
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    flaky.fail("fn-a", Some(StoreError::Unavailable("throttled".into())));

    let first = coordinator
        .start("parallel", None, "ex-send", json!({"n": 1}))
        .await;
    assert!(
        matches!(&first, Err(e) if e.is_retryable()),
        "the start reports a failure worth retrying: {first:?}"
    );
    assert_eq!(
        recorded.take("fn-b").len(),
        1,
        "the command behind the failed one went out"
    );
    assert!(
        !backend.pending_outbox("ex-send").await.unwrap().is_empty(),
        "the outbox is kept"
    );

    // The client retries its start once the throttling has passed.
    flaky.fail("fn-a", None);
    let again = coordinator
        .start("parallel", None, "ex-send", json!({"n": 1}))
        .await
        .expect("the repeated start succeeds");
    assert!(!again.created);
    assert_eq!(
        recorded.take("fn-a").len(),
        1,
        "the repeated start delivered what the first could not"
    );
    assert!(backend.pending_outbox("ex-send").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_refused_for_good_fails_the_attempt_and_the_execution_ends() {
    let (backend, flaky, recorded) = flaky_backend("refused-send").await;
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    flaky.fail(
        "fn-a",
        Some(StoreError::Rejected {
            code: "ResourceNotFoundException".into(),
            message: "Function not found: fn-a".into(),
        }),
    );

    coordinator
        .start("parallel", None, "ex-gone", json!({}))
        .await
        .expect("the start itself succeeds");
    let record = backend.load("ex-gone").await.unwrap().unwrap();
    let a = record.state.step("a").unwrap();
    let error = a.units[0].error.clone().expect("the attempt failed");
    assert_eq!(error.name, "DispatchFailed");
    assert!(error.message.contains("Function not found"), "{error:?}");
    // Not retryable: the step fails at once, and the execution can end.
    let b = recorded.take("fn-b");
    assert_eq!(b.len(), 1);
    let done = DestinationRecord::success(&b[0], json!({}));
    let message = QueueMessage {
        id: "m-b".into(),
        body: serde_json::to_string(&done).unwrap(),
    };
    assert!(
        process_coordinator_batch(&coordinator, vec![message])
            .await
            .is_empty()
    );
    let record = backend.load("ex-gone").await.unwrap().unwrap();
    assert_eq!(
        record.status(),
        ExecutionStatus::Failed,
        "{:?}",
        record.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_permission_fails_the_attempt_as_retryable() {
    let (backend, flaky, recorded) = flaky_backend("denied-send").await;
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    flaky.fail(
        "fn-a",
        Some(StoreError::Denied(
            "AccessDeniedException: not authorized".into(),
        )),
    );
    coordinator
        .start("parallel", None, "ex-denied", json!({}))
        .await
        .unwrap();
    let record = backend.load("ex-denied").await.unwrap().unwrap();
    let a = &record.state.step("a").unwrap().units[0];
    assert_eq!(
        a.error.as_ref().map(|e| (e.name.as_str(), e.retryable)),
        Some(("DispatchDenied", true))
    );
    assert_eq!(
        a.status,
        baton_core::engine::UnitStatus::BackingOff,
        "the step's own retry policy tries again"
    );
    assert_eq!(recorded.take("fn-b").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_retry_can_apply_is_dead_lettered_with_its_reason() {
    let (backend, _) = fresh_recording_backend("orphan", 3).await;
    let coordinator = Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock));
    // A step's result for an execution that does not exist.
    let (other, invoker) = fresh_recording_backend("orphan-source", 3).await;
    let definition = WorkflowDefinition::parse(PARALLEL, Format::Yaml).unwrap();
    other.put_workflow(&definition, 0).await.unwrap();
    Coordinator::new(Arc::new(other), Arc::new(SystemClock))
        .start("parallel", None, "ex-elsewhere", json!({}))
        .await
        .unwrap();
    let event = invoker.take("fn-a").remove(0);
    let body = serde_json::to_string(&DestinationRecord::success(&event, json!(1))).unwrap();
    let message = QueueMessage {
        id: "m-orphan".into(),
        body: body.clone(),
    };

    let failed = process_coordinator_batch(&coordinator, vec![message]).await;

    assert!(failed.is_empty(), "not looped: {failed:?}");
    let dead = backend.list_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "kept for a person, not dropped: {dead:?}");
    assert_eq!(dead[0].kind, DeadLetterKind::Task);
    assert_eq!(dead[0].execution_id.as_deref(), Some("ex-elsewhere"));
    assert!(
        dead[0].reason.contains("no execution `ex-elsewhere`"),
        "{dead:?}"
    );
    // On the coordinator's DLQ, where its alarm sees it, redrivable as sent.
    assert!(dead[0].id.starts_with("sqs:"), "{dead:?}");
    assert_eq!(
        dead[0].body["message"],
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_deleted_after_deploy_fails_its_step_through_the_lambda_api() {
    // Deployed while the function existed (the recording invoker stands in
    // for the check), then the coordinator's real invoke finds it gone.
    let (deployed, _) = fresh_recording_backend("deleted-fn", 3).await;
    let definition = WorkflowDefinition::parse(PARALLEL, Format::Yaml).unwrap();
    deployed.put_workflow(&definition, 0).await.unwrap();
    let live = Arc::new(AwsBackend::with_config(
        &sdk_config(&endpoint()).await,
        deployed.settings().clone(),
        RequestCounter::new(),
    ));
    let coordinator = Coordinator::new(live.clone(), Arc::new(SystemClock));
    coordinator
        .start("parallel", None, "ex-deleted", json!({}))
        .await
        .expect("the start succeeds; its dispatches fail as attempts");
    let record = live.load("ex-deleted").await.unwrap().unwrap();
    assert_eq!(
        record.status(),
        ExecutionStatus::Failed,
        "{:?}",
        record.state
    );
    let a = &record.state.step("a").unwrap().units[0];
    let error = a.error.as_ref().expect("a failed attempt");
    assert_eq!(error.name, "DispatchFailed", "{error:?}");
    assert!(
        error.message.contains("ResourceNotFoundException"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_to_keep_fails_its_step_instead_of_vanishing() {
    let (fresh, _) = fresh_recording_backend("too-large", 3).await;
    let mut settings = fresh.settings().clone();
    settings.payload_limit = 1_000;
    let recorded = Arc::new(RecordingInvoker::default());
    let backend = Arc::new(
        AwsBackend::with_config(
            &sdk_config(&endpoint()).await,
            settings,
            RequestCounter::new(),
        )
        .with_invoker(recorded.clone()),
    );
    let definition = WorkflowDefinition::parse(PARALLEL, Format::Yaml).unwrap();
    backend.put_workflow(&definition, 0).await.unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("parallel", None, "ex-big", json!({}))
        .await
        .unwrap();
    let a = recorded.take("fn-a").remove(0);
    let big = DestinationRecord::success(&a, json!({ "blob": "x".repeat(2_000) }));
    let message = QueueMessage {
        id: "m-big".into(),
        body: serde_json::to_string(&big).unwrap(),
    };

    let failed = process_coordinator_batch(&coordinator, vec![message]).await;

    assert!(failed.is_empty(), "{failed:?}");
    let record = backend.load("ex-big").await.unwrap().unwrap();
    let unit = &record.state.step("a").unwrap().units[0];
    let error = unit.error.as_ref().expect("the attempt failed");
    assert_eq!(
        (error.name.as_str(), error.retryable),
        ("PayloadTooLarge", false)
    );
    assert!(error.message.contains("step `a`'s output"), "{error:?}");
    assert!(backend.list_dead_letters().await.unwrap().is_empty());
}
