//! On DynamoDB a transition rewrites the execution item's version, status
//! and tail, not the state: the state is in a snapshot item written now and
//! then, and a coordinator with nothing in memory rebuilds the same record
//! from it and the history after it (moto server).

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::store::DynamoStore;
use baton_aws::testing::{endpoint, fresh_recording_backend, sdk_config};
use baton_aws::{AwsBackend, RequestCounter};
use baton_core::definition::Format;
use baton_core::{Event, ExecutionStatus, WorkflowDefinition};
use baton_runtime::checkpoint::SNAPSHOT_EVERY;
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::json;

const MAP: &str = r#"
name: map
defaults: { retry: { max_attempts: 1 }, timeout: 1m }
steps:
  each:
    for_each: "${ input.items }"
    function: fn-double
    input: "${ item }"
    mutates: false
    max_concurrency: 1
  after: { needs: [each], wait: 10m }
"#;

/// An item's attributes as stored, by sort key.
async fn item(store: &DynamoStore, id: &str, sk: &str) -> Option<Vec<String>> {
    let out = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(format!("X#{id}")))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read an item");
    out.item.map(|item| {
        let mut names: Vec<String> = item.keys().cloned().collect();
        names.sort();
        names
    })
}

async fn snapshot_version(store: &DynamoStore, id: &str) -> u64 {
    let out = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(format!("X#{id}")))
        .key("sk", AttributeValue::S("C".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read the snapshot");
    match out.item.as_ref().and_then(|i| i.get("version")) {
        Some(AttributeValue::N(v)) => v.parse().unwrap(),
        other => panic!("no snapshot version: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_nothing_cached_rebuilds_the_record_from_the_snapshot_and_history() {
    let (backend, invoker) = fresh_recording_backend("checkpoints", 3).await;
    let definition = WorkflowDefinition::parse(MAP, Format::Yaml).unwrap();
    backend
        .put_workflow(&definition, SystemClock.now())
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    let items: Vec<i64> = (0..150).collect();
    coordinator
        .start("map", None, "m-1", json!({ "items": items }))
        .await
        .expect("started");
    // Play the step function: answer each attempt as it is dispatched.
    let mut answered = 0;
    while answered < 150 {
        let attempts = invoker.take("fn-double");
        assert!(
            !attempts.is_empty(),
            "an element is dispatched after {answered}"
        );
        for attempt in attempts {
            let doubled = attempt.input.as_i64().unwrap() * 2;
            coordinator
                .handle(
                    "m-1",
                    Event::TaskSucceeded {
                        task: attempt.baton.task_ref(),
                        output: json!(doubled),
                    },
                )
                .await
                .expect("result applied");
            answered += 1;
        }
    }

    let store = backend.store();
    let here = store.load("m-1").await.unwrap().unwrap();
    assert!(
        here.version > 2 * SNAPSHOT_EVERY,
        "150 elements make over {} transitions: {}",
        2 * SNAPSHOT_EVERY,
        here.version
    );
    let head = item(store, "m-1", "S").await.expect("the execution item");
    assert!(
        !head.contains(&"state".to_string()),
        "the execution item does not hold the state: {head:?}"
    );
    let snapshot = snapshot_version(store, "m-1").await;
    assert!(
        snapshot.is_multiple_of(SNAPSHOT_EVERY) && snapshot < here.version,
        "the snapshot is written every {SNAPSHOT_EVERY} transitions: at {snapshot} of {}",
        here.version
    );

    // Another coordinator: same table, its own clients and caches.
    let elsewhere = AwsBackend::with_config(
        &sdk_config(&endpoint()).await,
        backend.settings().clone(),
        RequestCounter::new(),
    )
    .with_invoker(invoker.clone());
    let rebuilt = elsewhere.load("m-1").await.unwrap().unwrap();
    assert_eq!(rebuilt, here, "a fresh coordinator loads the same record");
    let doubled: Vec<i64> = (0..150).map(|i| i * 2).collect();
    assert_eq!(
        rebuilt.state.step("each").unwrap().output.as_deref(),
        Some(&json!(doubled))
    );

    // Another coordinator moves it on; this one catches up from the history.
    let other = Coordinator::new(Arc::new(elsewhere), Arc::new(SystemClock));
    other
        .handle(
            "m-1",
            Event::CancelRequested {
                reason: Some("done waiting".into()),
            },
        )
        .await
        .expect("cancelled");
    let caught_up = store.load("m-1").await.unwrap().unwrap();
    assert_eq!(caught_up.status(), ExecutionStatus::Cancelled);
    assert_eq!(caught_up.version, here.version + 1);
    assert!(
        snapshot_version(store, "m-1").await < caught_up.version,
        "the end writes no snapshot (it would write every output again)"
    );
}
