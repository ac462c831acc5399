//! Lifecycle events reach the EventBridge bus, read back through a rule that
//! forwards them to an SQS queue (as a user's rule would), against moto
//! server; `BATON_EVENTS` trims which of them are put.

use std::sync::Arc;

use baton_aws::testing::{RecordingInvoker, endpoint, fresh_recording_backend, sdk_config};
use baton_aws::{AwsBackend, RequestCounter};
use baton_core::definition::Format;
use baton_core::{Event, EventDetail, ExecutionStatus, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::{Value, json};

mod common;
use common::{TWO_STEPS, take_task};

/// A queue that receives every event with source `baton` on the backend's bus.
async fn listen(backend: &AwsBackend, name: &str) -> String {
    let clients = backend.clients();
    let queue = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap();
    let url = queue.queue_url().unwrap().to_string();
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .unwrap()
        .clone();
    let bus = &backend.settings().event_bus;
    clients
        .eventbridge
        .put_rule()
        .name(name)
        .event_bus_name(bus)
        .event_pattern(json!({"source": ["baton"]}).to_string())
        .send()
        .await
        .unwrap();
    clients
        .eventbridge
        .put_targets()
        .rule(name)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    url
}

/// The event types that arrived on `url`, in order of their time then kind.
async fn arrived(backend: &AwsBackend, url: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    loop {
        let out = backend
            .clients()
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let envelope: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(envelope["source"], "baton");
            let kind = envelope["detail-type"].as_str().unwrap().to_string();
            assert_eq!(envelope["detail"]["kind"], kind.as_str(), "{envelope}");
            kinds.push(kind);
            backend
                .clients()
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    kinds.sort();
    kinds
}

/// Runs the two-step workflow to its end on `backend`.
async fn run_two_steps(backend: Arc<AwsBackend>, invoker: &RecordingInvoker, id: &str) {
    let definition = WorkflowDefinition::parse(TWO_STEPS, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("two-steps", None, id, json!({}))
        .await
        .unwrap();
    for function in ["fn-a", "fn-b"] {
        let tasks = take_task(invoker, function);
        assert_eq!(tasks.len(), 1, "{function} was dispatched once");
        coordinator
            .handle(
                id,
                Event::TaskSucceeded {
                    task: tasks[0].baton.task_ref(),
                    output: json!({"done": function}),
                },
            )
            .await
            .unwrap();
    }
    let record = backend.load(id).await.unwrap().unwrap();
    assert_eq!(record.status(), ExecutionStatus::Succeeded);
}

fn sorted(kinds: &[&str]) -> Vec<String> {
    let mut kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    kinds.sort();
    kinds
}

/// A backend on a fresh table publishing `events`.
async fn publishing(name: &str, events: EventDetail) -> (Arc<AwsBackend>, Arc<RecordingInvoker>) {
    let (fresh, _) = fresh_recording_backend(name, 3).await;
    let mut settings = fresh.settings().clone();
    settings.events = events;
    let invoker = Arc::new(RecordingInvoker::default());
    let backend = Arc::new(
        AwsBackend::with_config(
            &sdk_config(&endpoint()).await,
            settings,
            RequestCounter::new(),
        )
        .with_invoker(invoker.clone()),
    );
    (backend, invoker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_events_all_puts_every_lifecycle_event() {
    let (backend, invoker) = publishing("events-all", EventDetail::All).await;
    let url = listen(&backend, &format!("{}-listen", backend.settings().table)).await;
    run_two_steps(backend.clone(), &invoker, "ex-events-all").await;
    assert_eq!(
        arrived(&backend, &url).await,
        sorted(&[
            "execution.started",
            "step.started",
            "step.succeeded",
            "step.started",
            "step.succeeded",
            "execution.succeeded",
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_the_start_and_end_reach_the_bus() {
    let (backend, invoker) = fresh_recording_backend("events-exec", 3).await;
    let backend = Arc::new(backend);
    assert_eq!(backend.settings().events, EventDetail::Executions);
    let url = listen(&backend, &format!("{}-listen", backend.settings().table)).await;
    run_two_steps(backend.clone(), &invoker, "ex-events-exec").await;
    assert_eq!(
        arrived(&backend, &url).await,
        sorted(&["execution.started", "execution.succeeded"])
    );
}
