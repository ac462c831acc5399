//! A `for_each` of the most elements allowed runs to the end on DynamoDB
//! (moto server), results arriving ten at a time as an SQS batch brings
//! them, and no item written comes near DynamoDB's 400 KB item limit: the
//! state, larger than an item, is snapshotted in parts.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::testing::{endpoint, fresh_recording_backend, sdk_config};
use baton_aws::{AwsBackend, RequestCounter};
use baton_core::definition::Format;
use baton_core::limits::MAX_FOR_EACH_ITEMS;
use baton_core::{Event, ExecutionStatus, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::{Value, json};

mod common;

const MAP: &str = r#"
name: big-map
defaults: { retry: { max_attempts: 1 }, timeout: 5m }
steps:
  each:
    for_each: "${ input.items }"
    function: fn-element
    input: "${ item }"
    mutates: false
    max_concurrency: 64
output: "${ steps.each.output }"
"#;

/// The size DynamoDB bills an item at: each attribute's name and value.
fn item_bytes(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len(),
                    other => format!("{other:?}").len(),
                }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_each_of_ten_thousand_elements_finishes_with_every_item_far_below_the_limit() {
    let (backend, invoker) = fresh_recording_backend("big-map", 3).await;
    let definition = WorkflowDefinition::parse(MAP, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    let n = MAX_FOR_EACH_ITEMS;
    let began = std::time::Instant::now();
    let items_in: Vec<usize> = (0..n).collect();
    coordinator
        .start("big-map", None, "big", json!({ "items": items_in }))
        .await
        .expect("started");

    let mut answered = 0;
    while answered < n {
        let attempts = invoker.take("fn-element");
        assert!(
            !attempts.is_empty(),
            "more elements are dispatched after {answered}"
        );
        assert!(
            attempts.len() <= 64,
            "max_concurrency holds: {}",
            attempts.len()
        );
        // An SQS batch brings the coordinator up to ten results at once.
        for batch in attempts.chunks(10) {
            let events: Vec<Event> = batch
                .iter()
                .map(|a| Event::TaskSucceeded {
                    task: a.baton.task_ref(),
                    output: json!({ "n": a.input }),
                })
                .collect();
            for result in coordinator.handle_all("big", events).await {
                result.expect("a result is applied");
            }
            answered += batch.len();
        }
        // Each attempt's timeout timer waits on the coordinator queue; they
        // would be ignored when they fire, their attempts having succeeded.
        // moto's SendMessage slows with the queue's length, so the test
        // drops them as it goes.
        if answered % 1000 < 64 {
            backend
                .clients()
                .sqs
                .purge_queue()
                .queue_url(&backend.settings().coordinator_queue_url)
                .send()
                .await
                .expect("purge the timers");
        }
    }

    eprintln!(
        "{n} elements in {:.1} s; requests: {:?}",
        began.elapsed().as_secs_f64(),
        backend.counter().snapshot()
    );
    let done = backend.load("big").await.unwrap().unwrap();
    assert_eq!(done.status(), ExecutionStatus::Succeeded);
    let expected: Vec<Value> = (0..n).map(|i| json!({ "n": i })).collect();
    assert_eq!(done.state.output, Some(Value::Array(expected)));

    let stored: Vec<(String, usize)> = common::partition(&backend, "big")
        .await
        .into_iter()
        .map(|(sk, item)| (sk, item_bytes(&item)))
        .collect();
    let (largest_sk, largest) = stored
        .iter()
        .max_by_key(|(_, bytes)| *bytes)
        .cloned()
        .expect("items");
    assert!(
        largest < 360 * 1024,
        "the largest item, {largest_sk}, is {largest} bytes"
    );
    assert!(
        stored.iter().any(|(sk, _)| sk.starts_with("C#")),
        "the state outgrew an item and was snapshotted in parts"
    );

    // A coordinator with nothing cached reads the parts and the history
    // after them and rebuilds the same record.
    let elsewhere = AwsBackend::with_config(
        &sdk_config(&endpoint()).await,
        backend.settings().clone(),
        RequestCounter::new(),
    );
    let rebuilt = elsewhere.load("big").await.unwrap().unwrap();
    assert_eq!(rebuilt, done);
}
