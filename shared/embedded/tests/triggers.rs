//! Event triggers on the embedded backend: an event starts one execution per
//! matching trigger of every workflow, with the id derived from the event's
//! id, so sending it again starts nothing new.

use std::sync::Arc;

use baton_core::definition::Format;
use baton_core::{ExecutionStatus, Workflow};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::triggers::{TriggerError, start_matching, start_triggered};
use baton_runtime::{Coordinator, CoordinatorError, ManualClock};
use serde_json::{Value, json};

const ORDERS: &str = r#"
name: orders
triggers:
  - name: placed
    pattern: { source: [shop], detail-type: [Order Placed] }
  - name: big
    pattern: { source: [shop], detail: { total: [{ numeric: [">=", 100] }] } }
    input: { order: "${ event.detail.id }", from: "${ event.source }" }
  - name: strict
    pattern: { source: [shop], detail-type: [Strict] }
    input: "${ event.detail.must.exist }"
steps:
  pause: { wait: 1h }
"#;

const AUDIT: &str = r#"
name: audit
triggers:
  - name: everything
    pattern: { source: [{ prefix: "" }] }
steps:
  pause: { wait: 1h }
"#;

const PLAIN: &str = "name: plain\nsteps:\n  pause: { wait: 1h }\n";

async fn coordinator() -> (tempfile::TempDir, Coordinator<SqliteBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        SqliteBackend::open(&dir.path().join("b.db"), SqliteOptions::default()).expect("open");
    let coordinator = Coordinator::new(Arc::new(backend), Arc::new(ManualClock::new(1_000)));
    for text in [ORDERS, AUDIT, PLAIN] {
        let workflow = Workflow::from_text(text, Format::Yaml).expect("valid");
        coordinator
            .backend()
            .put_workflow(&workflow.definition, 1_000)
            .await
            .expect("stored");
    }
    (dir, coordinator)
}

fn event(id: &str, detail_type: &str, detail: Value) -> Value {
    json!({
        "version": "0", "id": id, "source": "shop", "detail-type": detail_type,
        "time": "2026-01-01T00:00:00Z", "account": "", "region": "", "resources": [],
        "detail": detail
    })
}

fn started(outcome: &baton_runtime::triggers::EventOutcome) -> Vec<(String, bool)> {
    let mut found: Vec<(String, bool)> = outcome
        .started
        .iter()
        .map(|s| (s.execution_id.clone(), s.created))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn an_event_starts_every_matching_trigger_once() {
    let (_dir, coordinator) = coordinator().await;
    let placed = event("e-1", "Order Placed", json!({"id": "o-1", "total": 250}));
    let outcome = start_matching(&coordinator, &placed)
        .await
        .expect("handled");
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(
        started(&outcome),
        [
            ("audit:everything:e-1".to_string(), true),
            ("orders:big:e-1".to_string(), true),
            ("orders:placed:e-1".to_string(), true),
        ]
    );
    let store = coordinator.backend();
    let placed_execution = store
        .load("orders:placed:e-1")
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(placed_execution.status(), ExecutionStatus::Running);
    // The default input is the event's detail; a template reads the event.
    assert_eq!(
        *placed_execution.state.input,
        json!({"id": "o-1", "total": 250})
    );
    let big = store.load("orders:big:e-1").await.unwrap().expect("exists");
    assert_eq!(*big.state.input, json!({"order": "o-1", "from": "shop"}));

    // The same event again (a redelivery) starts nothing new.
    let again = start_matching(&coordinator, &placed)
        .await
        .expect("handled");
    assert_eq!(
        started(&again),
        [
            ("audit:everything:e-1".to_string(), false),
            ("orders:big:e-1".to_string(), false),
            ("orders:placed:e-1".to_string(), false),
        ]
    );

    // Another event id is another execution; a small order is not `big`.
    let small = event("e-2", "Order Placed", json!({"id": "o-2", "total": 5}));
    let outcome = start_matching(&coordinator, &small).await.expect("handled");
    assert_eq!(
        started(&outcome),
        [
            ("audit:everything:e-2".to_string(), true),
            ("orders:placed:e-2".to_string(), true),
        ]
    );
}

#[tokio::test]
async fn an_input_that_fails_is_reported_and_the_rest_still_start() {
    let (_dir, coordinator) = coordinator().await;
    let strict = event("e-3", "Strict", json!({"id": "o-3"}));
    let outcome = start_matching(&coordinator, &strict)
        .await
        .expect("handled");
    assert_eq!(
        started(&outcome),
        [("audit:everything:e-3".to_string(), true)]
    );
    assert!(
        matches!(&outcome.failed[..], [TriggerError::Input { workflow, trigger, .. }] if workflow == "orders" && trigger == "strict"),
        "{:?}",
        outcome.failed
    );
    assert!(!outcome.is_retryable());
    assert!(
        coordinator
            .backend()
            .load("orders:strict:e-3")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn malformed_events_are_refused() {
    let (_dir, coordinator) = coordinator().await;
    let mut no_id = event("x", "Order Placed", json!({}));
    no_id.as_object_mut().unwrap().remove("id");
    for bad in [no_id, json!("text"), event("e", "T", json!([1]))] {
        match start_matching(&coordinator, &bad).await {
            Err(e @ TriggerError::Malformed(_)) => assert!(!e.is_retryable()),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_named_trigger_starts_only_itself_and_only_on_a_match() {
    let (_dir, coordinator) = coordinator().await;
    let placed = event("e-4", "Order Placed", json!({"id": "o-4", "total": 500}));
    let outcome = start_triggered(&coordinator, "orders", "placed", &placed)
        .await
        .expect("handled");
    assert_eq!(started(&outcome), [("orders:placed:e-4".to_string(), true)]);
    // A trigger the workflow no longer has, or whose pattern the event no
    // longer matches, starts nothing.
    let gone = start_triggered(&coordinator, "orders", "removed", &placed)
        .await
        .expect("handled");
    assert!(gone.started.is_empty() && gone.failed.is_empty());
    let other = event("e-5", "Order Shipped", json!({"id": "o-5"}));
    let miss = start_triggered(&coordinator, "orders", "placed", &other)
        .await
        .expect("handled");
    assert!(miss.started.is_empty() && miss.failed.is_empty());
    match start_triggered(&coordinator, "nowhere", "placed", &placed).await {
        Err(TriggerError::Start {
            error: CoordinatorError::UnknownWorkflow { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
