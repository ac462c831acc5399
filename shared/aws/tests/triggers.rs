//! Event triggers on AWS, against moto server: deploying a workflow makes one
//! EventBridge rule per trigger on the settings' bus, with the trigger's
//! pattern and the coordinator queue as its target; an event put on the bus
//! reaches the queue (moto delivers to SQS targets through the input
//! transformer, as EventBridge does) and the coordinator batch starts the
//! execution once, however often the message comes; redeploying replaces
//! and removes rules; malformed events are dead-lettered.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::rules::{input_template, rule_name};
use baton_aws::testing::{drain_coordinator_queue, fresh_recording_backend};
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::definition::{Format, WorkflowDefinition};
use baton_runtime::ports::{DeadLetterStore, ExecutionStore, ListQuery, WorkflowStore};
use baton_runtime::{Coordinator, SystemClock};
use serde_json::{Value, json};

fn definition(text: &str) -> WorkflowDefinition {
    let definition = WorkflowDefinition::parse(text, Format::Yaml).expect("parses");
    baton_core::Workflow::from_definition(definition.clone()).expect("validates");
    definition
}

const STEPS: &str = "defaults: { retry: { max_attempts: 2 } }\nsteps:\n  reserve: { function: reserve, mutates: false }\n";

/// A rule as the bus holds it.
#[derive(Debug)]
struct Rule {
    pattern: Value,
    state: String,
    targets: Vec<(String, String, String)>,
}

async fn rules(backend: &AwsBackend) -> BTreeMap<String, Rule> {
    let client = &backend.clients().eventbridge;
    let bus = &backend.settings().event_bus;
    let list = client
        .list_rules()
        .event_bus_name(bus)
        .send()
        .await
        .expect("list rules");
    let mut out = BTreeMap::new();
    for rule in list.rules() {
        let name = rule.name().unwrap_or_default().to_string();
        let described = client
            .describe_rule()
            .name(&name)
            .event_bus_name(bus)
            .send()
            .await
            .expect("describe rule");
        let targets = client
            .list_targets_by_rule()
            .rule(&name)
            .event_bus_name(bus)
            .send()
            .await
            .expect("list targets");
        out.insert(
            name,
            Rule {
                pattern: serde_json::from_str(described.event_pattern().unwrap_or("null"))
                    .expect("a JSON pattern"),
                state: described
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                targets: targets
                    .targets()
                    .iter()
                    .map(|t| {
                        (
                            t.id().to_string(),
                            t.arn().to_string(),
                            t.input_transformer()
                                .map(|i| i.input_template().to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect(),
            },
        );
    }
    out
}

/// Puts one event on the bus; its id.
async fn put_event(backend: &AwsBackend, source: &str, detail_type: &str, detail: Value) -> String {
    let out = backend
        .clients()
        .eventbridge
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .event_bus_name(&backend.settings().event_bus)
                .source(source)
                .detail_type(detail_type)
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await
        .expect("put events");
    assert_eq!(out.failed_entry_count(), 0, "{out:?}");
    out.entries()[0]
        .event_id()
        .expect("an event id")
        .to_string()
}

async fn execution_ids(backend: &AwsBackend) -> Vec<String> {
    let mut ids: Vec<String> = backend
        .list(&ListQuery::newest(100))
        .await
        .expect("list")
        .executions
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_makes_rules_and_a_matching_event_starts_once() {
    let (backend, invoker) = fresh_recording_backend("triggers", 5).await;
    let queue = backend
        .settings()
        .coordinator_queue_arn
        .clone()
        .expect("queue ARN");
    let v1 = definition(&format!(
        "name: orders\n{STEPS}triggers:\n  - name: placed\n    pattern: {{ source: [shop], detail-type: [Order Placed], detail: {{ total: [{{ numeric: ['>', 0] }}] }} }}\n    input: {{ order: '${{ event.detail.id }}' }}\n  - name: big\n    pattern: {{ source: [shop], detail: {{ total: [{{ numeric: ['>=', 1000] }}] }} }}\n"
    ));
    // Another workflow whose name starts the same: its rule is its own.
    let other = definition(&format!(
        "name: orders-2\n{STEPS}triggers:\n  - name: placed\n    pattern: {{ source: [elsewhere] }}\n"
    ));
    backend
        .put_workflow(&other, 0)
        .await
        .expect("deploy orders-2");
    assert_eq!(backend.put_workflow(&v1, 0).await.expect("deploy"), 1);

    let found = rules(&backend).await;
    let placed = rule_name(&queue, "orders", "placed");
    let big = rule_name(&queue, "orders", "big");
    let other_rule = rule_name(&queue, "orders-2", "placed");
    let mut expected = vec![placed.clone(), big.clone(), other_rule.clone()];
    expected.sort();
    assert_eq!(found.keys().cloned().collect::<Vec<_>>(), expected);
    let rule = &found[&placed];
    assert_eq!(
        rule.pattern,
        json!({"source": ["shop"], "detail-type": ["Order Placed"], "detail": {"total": [{"numeric": [">", 0]}]}})
    );
    assert_eq!(rule.state, "ENABLED");
    assert_eq!(
        rule.targets,
        [(
            "baton-coordinator".to_string(),
            queue.clone(),
            input_template("orders", "placed")
        )]
    );

    // An order placed: EventBridge (moto) matches both rules of `orders`
    // and sends each its trigger message.
    let event_id = put_event(
        &backend,
        "shop",
        "Order Placed",
        json!({"id": "o-1", "total": 5}),
    )
    .await;
    let delivered = drain_coordinator_queue(&backend).await;
    let decoded: Vec<CoordinatorMessage> = delivered
        .iter()
        .map(|m| CoordinatorMessage::decode(&m.body).expect("a trigger message"))
        .collect();
    assert_eq!(
        decoded.len(),
        1,
        "only `placed` matches a total of 5: {decoded:?}"
    );
    let id = format!("orders:placed:{event_id}");
    match &decoded[0] {
        CoordinatorMessage::Trigger {
            workflow,
            trigger,
            event,
            execution_id,
        } => {
            assert_eq!((workflow.as_str(), trigger.as_str()), ("orders", "placed"));
            assert_eq!(event["id"], event_id.as_str());
            assert_eq!(event["detail"], json!({"id": "o-1", "total": 5}));
            assert_eq!(execution_id, &id);
        }
        other => panic!("{other:?}"),
    }

    let coordinator = Coordinator::new(
        std::sync::Arc::new(backend.clone()),
        std::sync::Arc::new(SystemClock),
    );
    assert!(
        process_coordinator_batch(&coordinator, delivered.clone())
            .await
            .is_empty()
    );
    let record = backend.load(&id).await.expect("load").expect("started");
    assert_eq!(*record.state.input, json!({"order": "o-1"}));
    assert_eq!(
        invoker.take("reserve").len(),
        1,
        "its first step was dispatched"
    );
    // Delivered again (SQS is at-least-once): nothing new starts or runs.
    let again: Vec<QueueMessage> = delivered
        .iter()
        .map(|m| QueueMessage {
            id: format!("{}-again", m.id),
            body: m.body.clone(),
        })
        .collect();
    assert!(
        process_coordinator_batch(&coordinator, again)
            .await
            .is_empty()
    );
    assert_eq!(execution_ids(&backend).await, std::slice::from_ref(&id));
    assert!(invoker.take("reserve").is_empty());

    // A big order matches both triggers: two executions, one per trigger.
    let big_id = put_event(
        &backend,
        "shop",
        "Order Placed",
        json!({"id": "o-2", "total": 5000}),
    )
    .await;
    let delivered = drain_coordinator_queue(&backend).await;
    assert_eq!(delivered.len(), 2);
    assert!(
        process_coordinator_batch(&coordinator, delivered)
            .await
            .is_empty()
    );
    let mut want = vec![
        id.clone(),
        format!("orders:placed:{big_id}"),
        format!("orders:big:{big_id}"),
    ];
    want.sort();
    assert_eq!(execution_ids(&backend).await, want);
    // The default input is the event's detail.
    let big_record = backend
        .load(&format!("orders:big:{big_id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*big_record.state.input, json!({"id": "o-2", "total": 5000}));

    // Redeployed: `placed` takes another pattern, `big` is gone.
    let v2 = definition(&format!(
        "name: orders\n{STEPS}triggers:\n  - name: placed\n    pattern: {{ source: [shop], detail-type: [Order Confirmed] }}\n"
    ));
    assert_eq!(backend.put_workflow(&v2, 0).await.expect("redeploy"), 2);
    let found = rules(&backend).await;
    let mut expected = vec![placed.clone(), other_rule.clone()];
    expected.sort();
    assert_eq!(found.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(
        found[&placed].pattern,
        json!({"source": ["shop"], "detail-type": ["Order Confirmed"]})
    );
    // No triggers left: no rules left, but the other workflow's.
    let v3 = definition(&format!("name: orders\n{STEPS}"));
    backend.put_workflow(&v3, 0).await.expect("redeploy");
    assert_eq!(
        rules(&backend).await.keys().cloned().collect::<Vec<_>>(),
        [other_rule]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_events_match_every_workflow_and_bad_ones_are_dead_lettered() {
    let (backend, _invoker) = fresh_recording_backend("trigger-events", 5).await;
    let v1 = definition(&format!(
        "name: shipping\n{STEPS}triggers:\n  - name: paid\n    pattern: {{ source: [billing] }}\n  - name: strict\n    pattern: {{ source: [strict] }}\n    input: '${{ event.detail.must.exist }}'\n"
    ));
    backend.put_workflow(&v1, 0).await.expect("deploy");
    let coordinator = Coordinator::new(
        std::sync::Arc::new(backend.clone()),
        std::sync::Arc::new(SystemClock),
    );
    let event = |id: &str, source: &str| {
        json!({
            "version": "0", "id": id, "detail-type": "Paid", "source": source,
            "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [], "detail": {"invoice": "i-1"}
        })
        .to_string()
    };
    let messages = vec![
        // A bare event, as a rule made by hand would send it.
        QueueMessage { id: "m-1".into(), body: event("ev-1", "billing") },
        // No id: not an EventBridge event Baton can start from.
        QueueMessage {
            id: "m-2".into(),
            body: json!({"detail-type": "Paid", "source": "billing", "detail": {}}).to_string(),
        },
        // A trigger message whose event has no detail.
        QueueMessage {
            id: "m-3".into(),
            body: json!({"kind": "trigger", "workflow": "shipping", "trigger": "paid", "event": {"id": "ev-3", "source": "billing", "detail-type": "Paid"}}).to_string(),
        },
        // It matches, but the trigger's input fails on it.
        QueueMessage { id: "m-4".into(), body: event("ev-4", "strict") },
    ];
    assert!(
        process_coordinator_batch(&coordinator, messages)
            .await
            .is_empty()
    );
    assert_eq!(execution_ids(&backend).await, ["shipping:paid:ev-1"]);
    let dead = backend.list_dead_letters().await.expect("dead letters");
    let mut reasons: Vec<String> = dead.iter().map(|d| d.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("malformed EventBridge event: the event has no `id`")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains(
            "malformed event for trigger `paid` of workflow `shipping`: the event has no `detail`"
        )),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r
                .contains("trigger `strict` of workflow `shipping` matches, but its input fails")),
        "{reasons:#?}"
    );
}
