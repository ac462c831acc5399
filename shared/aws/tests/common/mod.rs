//! What the AWS backend's integration tests share: a two-step workflow, the
//! attempts a backend dispatched to its functions, and the items stored for
//! an execution.

#![allow(dead_code)]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::AwsBackend;
use baton_aws::testing::RecordingInvoker;
use baton_runtime::step::StepEvent;

/// `first` on `fn-a`, then `second` on `fn-b`; no retries.
pub const TWO_STEPS: &str = r#"
name: two-steps
steps:
  first:
    function: fn-a
    mutates: false
    retry: { max_attempts: 1 }
  second:
    needs: [first]
    function: fn-b
    mutates: false
    retry: { max_attempts: 1 }
"#;

/// Every attempt dispatched to `function` since the last look.
pub fn take_task(invoker: &RecordingInvoker, function: &str) -> Vec<StepEvent> {
    invoker.take(function)
}

/// Every item of an execution's partition, each with its sort key, as
/// stored now (consistent reads, every page).
pub async fn partition(
    backend: &AwsBackend,
    id: &str,
) -> Vec<(String, HashMap<String, AttributeValue>)> {
    let store = backend.store();
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let out = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("X#{id}")))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("query the partition");
        for item in out.items() {
            let sk = match item.get("sk") {
                Some(AttributeValue::S(sk)) => sk.clone(),
                other => panic!("no sort key: {other:?}"),
            };
            found.push((sk, item.clone()));
        }
        match out.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return found,
        }
    }
}

/// One round of the coordinator's event source: receives up to ten messages
/// (waiting a second for them), applies them as a batch, expects none to
/// fail and deletes them. Returns how many there were.
pub async fn coordinator_round<B: baton_runtime::ports::Backend>(
    backend: &AwsBackend,
    coordinator: &baton_runtime::Coordinator<B>,
) -> usize {
    let (handled, failed) = event_source_round(backend, coordinator).await;
    assert!(failed.is_empty(), "messages failed: {failed:?}");
    handled
}

/// One round of the coordinator's event source as on AWS: receives up to
/// ten messages (waiting a second for them), applies them as a batch,
/// deletes those that did not fail and leaves the others for redelivery.
/// Returns how many there were, and the ids of those that failed.
pub async fn event_source_round<B: baton_runtime::ports::Backend>(
    backend: &AwsBackend,
    coordinator: &baton_runtime::Coordinator<B>,
) -> (usize, Vec<String>) {
    let sqs = &backend.clients().sqs;
    let url = &backend.settings().coordinator_queue_url;
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the coordinator queue");
    let messages = out.messages.unwrap_or_default();
    let batch = messages
        .iter()
        .map(baton_aws::coordinator_batch::QueueMessage::from)
        .collect();
    let failed = baton_aws::coordinator_batch::process_coordinator_batch(coordinator, batch).await;
    for m in &messages {
        if failed.iter().any(|id| Some(id.as_str()) == m.message_id()) {
            continue;
        }
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
            .send()
            .await
            .expect("delete a handled message");
    }
    (messages.len(), failed)
}

/// Sends a step's result to the coordinator queue, as its function's Lambda
/// destination would.
pub async fn send_record(backend: &AwsBackend, record: &baton_aws::dispatch::DestinationRecord) {
    backend
        .clients()
        .sqs
        .send_message()
        .queue_url(&backend.settings().coordinator_queue_url)
        .message_body(serde_json::to_string(record).expect("a record serialises"))
        .send()
        .await
        .expect("send a destination record");
}

/// Deploys the YAML definition `text` and returns a coordinator over `backend`.
pub async fn deployed(
    backend: &std::sync::Arc<AwsBackend>,
    text: &str,
) -> baton_runtime::Coordinator<AwsBackend> {
    use baton_runtime::Clock;
    use baton_runtime::ports::WorkflowStore;
    let definition =
        baton_core::WorkflowDefinition::parse(text, baton_core::definition::Format::Yaml)
            .expect("the definition parses");
    backend
        .put_workflow(&definition, baton_runtime::SystemClock.now())
        .await
        .expect("deploy");
    baton_runtime::Coordinator::new(
        backend.clone(),
        std::sync::Arc::new(baton_runtime::SystemClock),
    )
}
