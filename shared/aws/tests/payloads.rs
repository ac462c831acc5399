//! Large payloads on AWS (moto server): a step's 1 MiB output, stored by its
//! function in the payload bucket, reaches the next step's input through an
//! expression with no item near DynamoDB's limit; an output over the
//! payload limit fails its step at once and the saga compensates.

mod common;

use std::sync::Arc;

use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::DestinationRecord;
use baton_aws::payloads::{self, execution_prefix};
use baton_aws::testing::{RecordingInvoker, fresh_recording_backend};
use baton_aws::{AwsBackend, RequestCounter};
use baton_core::definition::Format;
use baton_core::{ExecutionStatus, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::step::StepEvent;
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::{Value, json};

/// `reserve` (undone by `release`), `produce`, then `consume`, whose input
/// is a field of `produce`'s output.
const PIPELINE: &str = r#"
name: pipeline
defaults: { retry: { max_attempts: 3, backoff: fixed, delay: 100ms }, timeout: 1m }
steps:
  reserve:
    function: fn-reserve
    compensate: { function: fn-release }
  produce: { function: fn-produce, mutates: false, needs: [reserve] }
  consume:
    function: fn-consume
    mutates: false
    needs: [produce]
    input: { rows: "${ steps.produce.output.rows }", count: "${ size(steps.produce.output.rows) }" }
"#;

const MIB: usize = 1024 * 1024;

async fn setup(
    name: &str,
) -> (
    Arc<AwsBackend>,
    Arc<RecordingInvoker>,
    Coordinator<AwsBackend>,
) {
    let (backend, invoker) = fresh_recording_backend(name, 3).await;
    backend
        .put_workflow(
            &WorkflowDefinition::parse(PIPELINE, Format::Yaml).unwrap(),
            SystemClock.now(),
        )
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    (backend, invoker, coordinator)
}

/// Plays the function of the one attempt dispatched to `function`: its
/// result arrives as the destination record Lambda would send.
async fn finish(
    coordinator: &Coordinator<AwsBackend>,
    invoker: &RecordingInvoker,
    function: &str,
    output: Value,
) -> StepEvent {
    let mut attempts = invoker.take(function);
    assert_eq!(attempts.len(), 1, "one attempt of {function}");
    let attempt = attempts.remove(0);
    let record = DestinationRecord::success(&attempt, output);
    let failed = process_coordinator_batch(
        coordinator,
        vec![QueueMessage {
            id: format!("m-{function}"),
            body: serde_json::to_string(&record).unwrap(),
        }],
    )
    .await;
    assert!(failed.is_empty(), "{failed:?}");
    attempt
}

/// What a function does with an output too large for its destination
/// record: puts it under its execution's prefix and returns the reference.
async fn put_as_function(backend: &AwsBackend, execution_id: &str, text: String) -> Value {
    let key = format!("{}out-{}", execution_prefix(execution_id), text.len());
    backend
        .clients()
        .s3
        .put_object()
        .bucket(backend.settings().payload_bucket.as_deref().unwrap())
        .key(&key)
        .body(text.into_bytes().into())
        .send()
        .await
        .unwrap();
    payloads::reference(&key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_output_reaches_the_next_step_through_an_expression() {
    let (backend, invoker, coordinator) = setup("payload-1mib").await;
    coordinator
        .start("pipeline", None, "big-1", json!({}))
        .await
        .unwrap();
    finish(&coordinator, &invoker, "fn-reserve", json!({"id": "r-1"})).await;

    let rows: Vec<Value> = (0..8_000)
        .map(|i| json!({"row": i, "text": "x".repeat(110)}))
        .collect();
    let output = json!({ "rows": rows });
    let text = output.to_string();
    assert!(text.len() >= MIB, "{} bytes", text.len());
    let reference = put_as_function(&backend, "big-1", text).await;
    finish(&coordinator, &invoker, "fn-produce", reference).await;

    let consume = invoker.take("fn-consume");
    assert_eq!(consume.len(), 1, "consume dispatched");
    let input = &consume[0].input;
    let key =
        payloads::referenced_key(input).expect("an input over the invoke limit is a reference");
    assert!(key.starts_with(&execution_prefix("big-1")), "{key}");
    let payloads = backend.store().payloads().unwrap().clone();
    let input = payloads.resolve(input.clone()).await.unwrap();
    assert_eq!(
        input["rows"],
        json!(rows),
        "the rows, through the expression"
    );
    assert_eq!(input["count"], json!(8_000));

    let largest = common::partition(&backend, "big-1")
        .await
        .into_iter()
        .map(|(sk, item)| (item_bytes(&item), sk))
        .max()
        .unwrap();
    assert!(
        largest.0 < 16 * 1024,
        "no item holds the payload: the largest is {largest:?}"
    );

    // A coordinator with nothing cached reads the same output back.
    let fresh = AwsBackend::with_config(
        &baton_aws::testing::sdk_config(&baton_aws::testing::endpoint()).await,
        backend.settings().clone(),
        RequestCounter::new(),
    );
    let record = fresh.load("big-1").await.unwrap().unwrap();
    let produced = record.state.step("produce").unwrap().output.clone();
    assert_eq!(
        produced,
        Some(Arc::new(output)),
        "the output as the function returned it"
    );
    let history = fresh.history("big-1").await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| serde_json::to_string(&e.event).unwrap().len() > MIB),
        "the history holds the output itself, not its reference"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_limit_fails_its_step_at_once_and_compensates() {
    let (backend, invoker, coordinator) = setup("payload-20mib").await;
    coordinator
        .start("pipeline", None, "huge-1", json!({}))
        .await
        .unwrap();
    finish(&coordinator, &invoker, "fn-reserve", json!({"id": "r-1"})).await;

    let text = format!("{{\"blob\":\"{}\"}}", "y".repeat(20 * MIB));
    let reference = put_as_function(&backend, "huge-1", text).await;
    backend.counter().reset();
    finish(&coordinator, &invoker, "fn-produce", reference).await;
    let requests = backend.counter().snapshot();
    assert_eq!(
        (requests.get("S3.HeadObject"), requests.get("S3.GetObject")),
        (Some(&1), None),
        "a 20 MiB object is refused from its size, not read: {requests:?}"
    );

    let record = backend.load("huge-1").await.unwrap().unwrap();
    let unit = &record.state.step("produce").unwrap().units[0];
    let error = unit.error.as_ref().expect("the attempt failed");
    assert_eq!(
        (error.name.as_str(), error.retryable),
        ("PayloadTooLarge", false)
    );
    assert!(
        error.message.contains("step `produce`") && error.message.contains("20971"),
        "names the step and the size: {error:?}"
    );
    assert_eq!(unit.attempt, 1, "not retried");
    assert!(invoker.take("fn-produce").is_empty(), "no second attempt");
    // The reservation is released: its compensation was dispatched once.
    finish(&coordinator, &invoker, "fn-release", json!({})).await;
    let record = backend.load("huge-1").await.unwrap().unwrap();
    assert_eq!(record.status(), ExecutionStatus::Compensated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_outside_its_execution_fails_the_step() {
    let (backend, invoker, coordinator) = setup("payload-outside").await;
    coordinator
        .start("pipeline", None, "mine", json!({}))
        .await
        .unwrap();
    finish(&coordinator, &invoker, "fn-reserve", json!({})).await;
    let theirs = put_as_function(&backend, "theirs", "{\"secret\":1}".into()).await;
    finish(&coordinator, &invoker, "fn-produce", theirs).await;
    let record = backend.load("mine").await.unwrap().unwrap();
    let error = record.state.step("produce").unwrap().units[0]
        .error
        .clone()
        .unwrap();
    assert_eq!(error.name, "PayloadOutsideExecution", "{error:?}");
}

/// An item's size as DynamoDB counts it, near enough: names and values.
fn item_bytes(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue;
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    other => format!("{other:?}").len(),
                }
        })
        .sum()
}

/// `produce` returns 1 MiB; `consume` is handed its rows and counts them.
fn handlers() -> Arc<baton_aws::dispatch::HandlerLookup> {
    use baton_runtime::step::handler_fn;
    let produce = handler_fn(|_, _| async {
        let rows: Vec<Value> = (0..8_000)
            .map(|i| json!({"row": i, "text": "x".repeat(110)}))
            .collect();
        Ok(json!({ "rows": rows }))
    });
    let consume = handler_fn(|_, input: Value| async move {
        Ok(
            json!({ "counted": input["rows"].as_array().map_or(0, Vec::len), "count": input["count"] }),
        )
    });
    let other = handler_fn(|_, _| async { Ok(json!({})) });
    Arc::new(move |function: &str| match function {
        "fn-produce" => Some(produce.clone()),
        "fn-consume" => Some(consume.clone()),
        _ => Some(other.clone()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_pass_large_payloads_by_reference_through_the_queue() {
    let (fresh, _) = fresh_recording_backend("payload-local", 3).await;
    let invoker = baton_aws::dispatch::LocalInvoker::new(handlers(), fresh.queues_handle());
    let backend = Arc::new(fresh.with_invoker(Arc::new(invoker)));
    backend
        .put_workflow(
            &WorkflowDefinition::parse(PIPELINE, Format::Yaml).unwrap(),
            SystemClock.now(),
        )
        .await
        .unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("pipeline", None, "local-1", json!({}))
        .await
        .unwrap();
    let url = backend.settings().coordinator_queue_url.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let record = loop {
        let record = backend.load("local-1").await.unwrap().unwrap();
        if record.status().is_terminal() || std::time::Instant::now() > deadline {
            break record;
        }
        let received = backend
            .clients()
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages: Vec<QueueMessage> =
            received.messages().iter().map(QueueMessage::from).collect();
        let failed = process_coordinator_batch(&coordinator, messages).await;
        for message in received.messages() {
            if !failed
                .iter()
                .any(|id| Some(id.as_str()) == message.message_id())
            {
                backend
                    .clients()
                    .sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    assert_eq!(
        record.status(),
        ExecutionStatus::Succeeded,
        "{:?}",
        record.state
    );
    let consumed = record
        .state
        .step("consume")
        .unwrap()
        .output
        .clone()
        .unwrap();
    assert_eq!(*consumed, json!({"counted": 8_000, "count": 8_000}));
}
