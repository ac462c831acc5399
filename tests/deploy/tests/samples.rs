//! Every `events/` sample through the entry point of the function it is for,
//! on moto server, so the samples keep matching what the functions accept:
//! the API Gateway requests through `baton_api::lambda::handle_lambda`, the
//! step event through the optional step SDK (`baton_lambda::step::handle`),
//! the coordinator's SQS batches (Baton's own messages and step functions'
//! Lambda destination records) through `baton_lambda::coordinator::handle`.

use baton_runtime::ports::ListQuery;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_api::lambda::handle_lambda;
use baton_api::{Api, ApiOptions};
use baton_aws::AwsBackend;
use baton_aws::dispatch::LocalInvoker;
use baton_aws::testing::{RecordingInvoker, fresh_backend, fresh_recording_backend};
use baton_core::definition::Format;
use baton_core::engine::{StepStatus, UnitStatus};
use baton_core::{Event, WorkflowDefinition};
use baton_deploy_tests::repo_path;
use baton_examples::{HandlerEnv, Ledger, register_all_with};
use baton_runtime::ports::{DeadLetterKind, DeadLetterStore, ExecutionStore, WorkflowStore};
use baton_runtime::step::{Registry, StepEvent, StepHandler};
use baton_runtime::{Clock, Coordinator, SystemClock};
use lambda_http::Body;
use serde_json::{Value, json};

fn sample(name: &str) -> String {
    let path = repo_path(&format!("events/{name}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sqs_sample(name: &str) -> SqsEvent {
    serde_json::from_str(&sample(name)).unwrap_or_else(|e| panic!("{name} is no SQS event: {e}"))
}

/// The body of a sample's first record, decoded.
fn first_body(event: &SqsEvent) -> Value {
    let body = event.records[0].body.as_deref().expect("a body");
    serde_json::from_str(body).expect("a JSON body")
}

fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// A backend with the order saga deployed, whose dispatched steps the
/// returned invoker records.
async fn saga_backend(name: &str) -> (AwsBackend, Arc<RecordingInvoker>) {
    let (backend, invoker) = fresh_recording_backend(name, 5).await;
    deploy_saga(&backend).await;
    (backend, invoker)
}

async fn deploy_saga(backend: &AwsBackend) {
    let text = std::fs::read_to_string(repo_path("workflows/order-saga.yaml")).expect("the saga");
    let definition = WorkflowDefinition::parse(&text, Format::Yaml).expect("the saga parses");
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .expect("deploy the saga");
}

fn coordinator(backend: &AwsBackend) -> Coordinator<AwsBackend> {
    Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock))
}

/// The steps dispatched to `function` since the last look.
fn dispatched(invoker: &RecordingInvoker, function: &str) -> Vec<StepEvent> {
    invoker.take(function)
}

/// One API Gateway sample through the API function's entry point.
async fn call_api(api: &Api<AwsBackend>, name: &str) -> (u16, lambda_http::http::HeaderMap, Value) {
    let request = lambda_http::request::from_str(&sample(name))
        .unwrap_or_else(|e| panic!("{name} is no API Gateway request: {e}"));
    let response = match handle_lambda(api, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).expect("a JSON body"),
        other => panic!("{name}: expected a text body, got {other:?}"),
    };
    (status, response.headers().clone(), body)
}

#[tokio::test]
async fn api_samples_start_read_and_signal_an_execution() {
    let (backend, invoker) = saga_backend("api-samples").await;
    // As functions/api builds it: no base path behind the `$default` stage.
    let api = Api::with_options(
        Arc::new(coordinator(&backend)),
        ApiOptions::default().base_path(""),
    );

    let (status, headers, body) = call_api(&api, "api-start-execution.json").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "order-1001");
    assert_eq!(body["workflow"], "order-processing");
    assert_eq!(body["created"], true);
    assert_eq!(headers["location"], "/executions/order-1001");
    // A retried request (same id) starts nothing new.
    let (status, _, body) = call_api(&api, "api-start-execution.json").await;
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
    let tasks = dispatched(&invoker, "validate-order");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].input["orderId"], "o-1001");

    let (status, _, body) = call_api(&api, "api-get-execution.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "order-1001");
    assert_eq!(body["status"], "running");
    assert_eq!(body["input"]["items"][0]["sku"], "SKU-7");

    // No step of the saga waits for `approval`: the signal is refused,
    // naming the signals it does wait for, and nothing is stored.
    let (status, _, body) = call_api(&api, "api-signal-approval.json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "no step of workflow `order-processing` waits for a `approval` signal; it waits for none"
    );
    let history = backend.history("order-1001").await.expect("history");
    assert!(
        !history
            .iter()
            .any(|h| matches!(&h.event, Event::SignalReceived { .. })),
        "{history:?}"
    );
}

#[tokio::test]
async fn step_event_sample_runs_a_rust_step_through_the_step_sdk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db")).expect("ledger"));
    let mut registry = Registry::new();
    register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));
    let handler: Arc<dyn StepHandler> = registry.get("process-payment").expect("process-payment");
    let payload: Value = serde_json::from_str(&sample("step-event.json")).expect("JSON");
    let event = baton_lambda::step::decode_event(payload).expect("a step event");
    assert_eq!(event.baton.function, "process-payment");
    assert_eq!(event.input["amount"], 50);

    // Invoked twice (an asynchronous invoke is delivered at least once): the
    // handler's idempotency key makes the effect happen once, same output.
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let output = baton_lambda::step::handle(handler.as_ref(), event.clone(), SystemClock.now())
            .await
            .expect("the payment succeeds");
        outputs.push(output);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0]["paymentId"].is_string(), "{}", outputs[0]);
    assert_eq!(outputs[0]["amount"], 50);
    let effects = ledger.effects().expect("effects");
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0].idempotency_key, event.baton.idempotency_key);
}

/// Starts the execution the API start sample creates.
async fn start_order_1001(coordinator: &Coordinator<AwsBackend>) {
    let start: Value = serde_json::from_str(
        serde_json::from_str::<Value>(&sample("api-start-execution.json")).unwrap()["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    coordinator
        .start(
            "order-processing",
            None,
            "order-1001",
            start["input"].clone(),
        )
        .await
        .expect("start");
}

#[tokio::test]
async fn step_succeeded_sample_moves_the_execution_to_its_next_step() {
    let (backend, invoker) = saga_backend("result-sample").await;
    let coordinator = coordinator(&backend);
    start_order_1001(&coordinator).await;

    let response = baton_lambda::coordinator::handle(
        &coordinator,
        sqs_sample("sqs-coordinator-step-succeeded.json"),
    )
    .await;
    assert_eq!(failures(&response), Vec::<String>::new());

    let record = backend
        .load("order-1001")
        .await
        .unwrap()
        .expect("the execution");
    let status = |step: &str| record.state.step(step).map(|s| s.status);
    assert_eq!(status("validate"), Some(StepStatus::Succeeded));
    let reserve = record.state.step("reserve").expect("reserve");
    assert_eq!(reserve.units[0].status, UnitStatus::Running);
    let tasks = dispatched(&invoker, "reserve-inventory");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        tasks[0].input["items"],
        json!([{"sku": "SKU-7", "qty": 2, "price": 25}])
    );
}

#[tokio::test]
async fn step_failed_sample_is_a_failed_attempt_named_by_the_functions_error_type() {
    let (backend, _) = saga_backend("failed-sample").await;
    let coordinator = coordinator(&backend);
    start_order_1001(&coordinator).await;

    let response = baton_lambda::coordinator::handle(
        &coordinator,
        sqs_sample("sqs-coordinator-step-failed.json"),
    )
    .await;
    assert_eq!(failures(&response), Vec::<String>::new());

    let history = backend.history("order-1001").await.expect("history");
    let failed = history
        .iter()
        .find_map(|h| match &h.event {
            Event::TaskFailed { task, error } => Some((task.clone(), error.clone())),
            _ => None,
        })
        .expect("the failure is applied");
    assert_eq!((&*failed.0.step, failed.0.attempt), ("validate", 1));
    assert_eq!(failed.1.name, "InventoryUnavailable");
    assert!(
        failed.1.retryable,
        "an error type without `Permanent` may be retried"
    );
    let record = backend
        .load("order-1001")
        .await
        .unwrap()
        .expect("the execution");
    let validate = record.state.step("validate").expect("validate");
    assert_eq!(validate.units[0].status, UnitStatus::BackingOff);
}

#[tokio::test]
async fn malformed_sample_is_dead_lettered_and_not_retried() {
    let backend = fresh_backend("malformed-sample", 5).await;
    let event = sqs_sample("sqs-malformed.json");
    assert!(serde_json::from_str::<Value>(event.records[0].body.as_deref().unwrap()).is_err());

    let response = baton_lambda::coordinator::handle(&coordinator(&backend), event.clone()).await;
    assert_eq!(
        failures(&response),
        Vec::<String>::new(),
        "a retry cannot fix it"
    );
    // Kept on the coordinator's DLQ, where its alarm sees it, with the reason.
    let dead = backend.list_dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].id.starts_with("sqs:"), "{dead:?}");
    assert_eq!(dead[0].kind, DeadLetterKind::Malformed);
    assert!(dead[0].reason.contains("does not decode"), "{dead:?}");
    assert_eq!(
        dead[0].body["message"].as_str(),
        event.records[0].body.as_deref()
    );
}

#[tokio::test]
async fn cron_trigger_sample_starts_exactly_one_execution_even_when_delivered_twice() {
    let (backend, invoker) = saga_backend("cron-sample").await;
    let coordinator = coordinator(&backend);
    let event = sqs_sample("scheduler-cron-start.json");
    let body = first_body(&event);
    let id = body["execution_id"].as_str().expect("an execution id");

    // Twice in one batch, then once more in another.
    let mut doubled = event.clone();
    let mut copy = doubled.records[0].clone();
    copy.message_id = Some("5a1d0c3e-9f2b-4c8d-a6e7-3b4c5d6e7f05".into());
    doubled.records.push(copy);
    for batch in [doubled, event] {
        let response = baton_lambda::coordinator::handle(&coordinator, batch).await;
        assert_eq!(failures(&response), Vec::<String>::new());
    }

    let executions = backend
        .list(&ListQuery::newest(100))
        .await
        .expect("list")
        .executions;
    let ids: Vec<&str> = executions.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [id]);
    assert_eq!(executions[0].workflow, "order-processing");
    let tasks = dispatched(&invoker, "validate-order");
    assert_eq!(
        tasks.len(),
        1,
        "one validate task, not one per delivery: {tasks:?}"
    );
    assert_eq!(tasks[0].baton.execution_id, id);
    assert_eq!(tasks[0].input["orderId"], body["input"]["orderId"]);
}

/// Receives up to 10 messages of a queue as the SQS event Lambda would pass,
/// with the receipt of each message by id.
async fn receive_event(backend: &AwsBackend, url: &str) -> (SqsEvent, Vec<(String, String)>) {
    let out = backend
        .clients()
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(30)
        .send()
        .await
        .expect("receive");
    let mut event = SqsEvent::default();
    let mut receipts = Vec::new();
    for m in out.messages() {
        let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
        record.message_id = m.message_id().map(str::to_string);
        record.body = m.body().map(str::to_string);
        event.records.push(record);
        receipts.push((
            m.message_id().unwrap_or_default().to_string(),
            m.receipt_handle().unwrap_or_default().to_string(),
        ));
    }
    (event, receipts)
}

/// Deletes what a batch response acknowledged, as the event source mapping does.
async fn acknowledge(
    backend: &AwsBackend,
    url: &str,
    receipts: &[(String, String)],
    response: &SqsBatchResponse,
) {
    let failed = failures(response);
    for (id, receipt) in receipts {
        if !failed.contains(id) {
            backend
                .clients()
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(receipt)
                .send()
                .await
                .expect("delete");
        }
    }
}

/// A writer the test's log lines go to.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The template's metric filter patterns on the coordinator's log group, by logical id.
fn coordinator_filters() -> Vec<(String, String)> {
    let t = baton_deploy_tests::Template::load();
    t.resources_of_type("AWS::Logs::MetricFilter")
        .filter(|(_, f)| {
            baton_deploy_tests::reference(&f["Properties"]["LogGroupName"])
                == Some("CoordinatorLogGroup")
        })
        .map(|(id, f)| {
            (
                id.to_string(),
                f["Properties"]["FilterPattern"]
                    .as_str()
                    .expect("a pattern")
                    .to_string(),
            )
        })
        .collect()
}

fn count_matches(pattern: &str, lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|line| {
            baton_deploy_tests::filter_matches(pattern, line).expect("a readable pattern")
        })
        .count()
}

/// A compensation that fails for good, through the Lambda entry points with
/// the coordinator's JSON log format: the template's metric filters count
/// what the coordinator really logs.
#[tokio::test]
async fn compensation_failure_metric_filters_match_the_coordinators_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The format of baton_lambda::telemetry::init_tracing, into a buffer.
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db")).expect("ledger"));
    let mut registry = Registry::new();
    register_all_with(&mut registry, HandlerEnv::new(ledger));
    registry.register(
        "refund-payment",
        baton_runtime::step::handler_fn(|_, _| async {
            Err(baton_runtime::step::StepError::permanent(
                "RefundRejected",
                "the card is closed",
            ))
        }),
    );
    // The example handlers run in this process behind Lambda's asynchronous
    // contract; their results reach the coordinator queue as destination records.
    let backend = fresh_backend("compensation-logs", 5).await;
    let lookup = move |function: &str| registry.get(function);
    let invoker = LocalInvoker::new(Arc::new(lookup), backend.queues_handle());
    let backend = backend.with_invoker(Arc::new(invoker));
    deploy_saga(&backend).await;
    let coordinator = coordinator(&backend);
    coordinator
        .start(
            "order-processing",
            None,
            "order-2001",
            json!({"orderId": "o-2001", "fail": {"ship-order": "permanent"}}),
        )
        .await
        .expect("start");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut busy = false;
        let url = backend.settings().coordinator_queue_url.clone();
        let (event, receipts) = receive_event(&backend, &url).await;
        if !receipts.is_empty() {
            busy = true;
            let response = baton_lambda::coordinator::handle(&coordinator, event).await;
            acknowledge(&backend, &url, &receipts, &response).await;
        }
        let record = backend
            .load("order-2001")
            .await
            .unwrap()
            .expect("the execution");
        if record.status().is_terminal() {
            assert_eq!(record.status().as_str(), "compensation_failed");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not finish: {:?}",
            record.state
        );
        if !busy {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let dead = backend.store().dead_letters().await.expect("dead letters");
    let compensations = dead
        .iter()
        .filter(|d| d.kind == DeadLetterKind::Compensation)
        .count();
    assert_eq!(compensations, 1, "{dead:?}");

    let lines = captured.lines();
    let filters = coordinator_filters();
    let pattern = |id: &str| {
        filters
            .iter()
            .find(|(f, _)| f == id)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no metric filter {id}"))
    };
    let executions = pattern("ExecutionCompensationFailedMetricFilter");
    assert_eq!(count_matches(&executions, &lines), 1, "{lines:#?}");
    let compensation = pattern("CompensationFailedMetricFilter");
    // The coordinator's line for a compensation dead-lettered for good, once
    // it logs one, must be what the filter counts.
    let logged = lines
        .iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["fields"]["event"] == "compensation.failed")
        })
        .count();
    if logged > 0 {
        assert_eq!(logged, compensations, "{lines:#?}");
    }
    assert_eq!(count_matches(&compensation, &lines), logged);
    // And the filter reads that line as the formatter writes it.
    tracing::error!(
        event = "compensation.failed",
        workflow.execution.id = "order-2001",
        workflow.step = "charge",
        function = "refund-payment",
        attempts = 1,
        error.name = "RefundRejected",
        "compensation failed for good; dead-lettered"
    );
    let lines = captured.lines();
    let last = lines.last().expect("the line just logged");
    assert_eq!(
        baton_deploy_tests::filter_matches(&compensation, last),
        Ok(true),
        "{last}"
    );
    assert_eq!(
        baton_deploy_tests::filter_matches(&executions, last),
        Ok(false),
        "{last}"
    );
}
