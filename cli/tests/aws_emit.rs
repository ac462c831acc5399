//! `baton --aws emit` against moto server: after `baton --aws deploy` of a
//! workflow with a trigger, the event goes on the stack's bus, the rule
//! delivers it to the coordinator queue, and the coordinator (played here by
//! the test, as the stack's Lambda would) starts the execution it names.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_aws::coordinator_batch::process_coordinator_batch;
use baton_aws::testing::{drain_coordinator_queue, endpoint, sdk_config, unique_prefix};
use baton_aws::{AwsBackend, AwsSettings, CoordinatorMessage, RequestCounter};
use baton_runtime::{Coordinator, SystemClock};
use common::{Sandbox, path_arg};
use serde_json::json;

/// The `export NAME=value` lines of the sandbox's `aws.env`.
fn aws_env(sb: &Sandbox) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(sb.path().join("aws.env")).expect("aws.env was written");
    text.lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn emit(sb: &Sandbox, source: &str, detail: &str) -> common::Outcome {
    let out = sb.baton(&[
        "--aws",
        "emit",
        "--source",
        source,
        "--detail-type",
        "Order Placed",
        "--detail",
        detail,
        "--json",
    ]);
    out.expect_code(0);
    out
}

#[tokio::test]
async fn aws_emit_puts_the_event_on_the_bus_and_its_rule_starts_the_workflow() {
    let sb = Sandbox::new();
    let url = endpoint();
    let prefix = unique_prefix("emit");
    sb.baton(&["bootstrap", "--endpoint", &url, "--prefix", &prefix])
        .expect_code(0);
    let env = aws_env(&sb);
    let backend = AwsBackend::with_config(
        &sdk_config(&url).await,
        AwsSettings::from_map(&env).expect("the settings bootstrap wrote"),
        RequestCounter::new(),
    );

    let workflow = format!("{prefix}-orders");
    let file = sb.path().join("orders.yaml");
    std::fs::write(
        &file,
        format!(
            "name: {workflow}\ntriggers:\n  - name: placed\n    pattern: {{ source: [shop.orders], detail-type: [Order Placed] }}\n    input: {{ orderId: \"${{ event.detail.orderId }}\", eventId: \"${{ event.id }}\" }}\nsteps:\n  hold: {{ wait_for: {{ signal: go }} }}\n"
        ),
    )
    .unwrap();
    sb.baton(&["--aws", "deploy", &path_arg(&file)])
        .expect_code(0);

    // An event no rule matches reaches the bus, and the queue gets nothing.
    let out = emit(&sb, "shop.returns", r#"{"orderId":"o-0"}"#).json();
    assert!(
        out["event"].as_str().is_some_and(|id| !id.is_empty()),
        "{out}"
    );
    assert_eq!(out["bus"], env["BATON_EVENT_BUS"].as_str());
    assert_eq!(out["matches"], json!([]));
    assert!(drain_coordinator_queue(&backend).await.is_empty());

    // A matching one: the rule wraps it in a message naming the trigger.
    let out = emit(&sb, "shop.orders", r#"{"orderId":"o-1"}"#).json();
    let event_id = out["event"].as_str().expect("the event's id").to_string();
    let execution = format!("{workflow}:placed:{event_id}");
    assert_eq!(
        out["matches"],
        json!([{"id": execution, "workflow": workflow, "trigger": "placed"}])
    );
    let messages = drain_coordinator_queue(&backend).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    match CoordinatorMessage::decode(&messages[0].body).expect("a coordinator message") {
        CoordinatorMessage::Trigger {
            workflow: w,
            trigger,
            event,
            execution_id,
        } => {
            assert_eq!(
                (w.as_str(), trigger.as_str()),
                (workflow.as_str(), "placed")
            );
            assert_eq!(event["id"], event_id.as_str());
            assert_eq!(event["detail"], json!({"orderId": "o-1"}));
            assert_eq!(execution_id, execution);
        }
        other => panic!("not a trigger message: {other:?}"),
    }

    // The coordinator starts what the message names.
    let coordinator = Coordinator::new(Arc::new(backend), Arc::new(SystemClock));
    let failed = process_coordinator_batch(&coordinator, messages).await;
    assert!(failed.is_empty(), "{failed:?}");
    let status = sb.baton(&["--aws", "status", &execution, "--json"]);
    status.expect_code(0);
    let status = status.json();
    assert_eq!(status["state"]["status"], "running", "{status}");
    assert_eq!(
        status["state"]["input"],
        json!({"orderId": "o-1", "eventId": event_id})
    );

    // Text output names the event and what it starts.
    let out = sb.baton(&[
        "--aws",
        "emit",
        "--source",
        "shop.orders",
        "--detail-type",
        "Order Placed",
        "--detail",
        r#"{"orderId":"o-2"}"#,
    ]);
    out.expect_code(0);
    let first = out.stdout.lines().next().unwrap_or_default();
    let id = first
        .strip_prefix("put event ")
        .and_then(|rest| rest.strip_suffix(&format!(" on bus {}", env["BATON_EVENT_BUS"])))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        out.stdout.contains(&format!(
            "trigger `placed` of workflow `{workflow}` matches: it starts {workflow}:placed:{id}"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(
        drain_coordinator_queue(coordinator.backend()).await.len(),
        1
    );

    // A detail that is not an object never leaves.
    let out = sb.baton(&[
        "--aws",
        "emit",
        "--source",
        "shop.orders",
        "--detail-type",
        "Order Placed",
        "--detail",
        "[1]",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("the detail must be a JSON object"),
        "{}",
        out.stderr
    );
    assert!(
        drain_coordinator_queue(coordinator.backend())
            .await
            .is_empty()
    );

    // EventBridge refusing the entry (in a 200 answer, counted in
    // FailedEntryCount) is an error naming its code, not a printed id.
    let out = sb.baton(&[
        "--aws",
        "emit",
        "--source",
        "",
        "--detail-type",
        "Order Placed",
    ]);
    out.expect_code(1);
    assert!(out.stderr.contains("InvalidArgument"), "{}", out.stderr);
    assert!(!out.stdout.contains("put event"), "{}", out.stdout);
    // So is a bus that does not exist (the request itself refused).
    let out = sb.baton_env(
        &[
            "--aws",
            "emit",
            "--source",
            "shop.orders",
            "--detail-type",
            "Order Placed",
        ],
        &[("BATON_EVENT_BUS", "no-such-bus")],
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("ResourceNotFoundException"),
        "{}",
        out.stderr
    );
    assert!(
        drain_coordinator_queue(coordinator.backend())
            .await
            .is_empty()
    );
}
