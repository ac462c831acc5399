//! `baton emit`: an event starts each deployed workflow whose trigger matches
//! it, once per event id, and a worker runs what it started to the end.

mod common;

use std::time::Duration;

use common::{Sandbox, path_arg, repo_file, wait_until};

fn emit(sb: &Sandbox, id: &str, detail: &str) -> common::Outcome {
    sb.baton(&[
        "emit",
        "--source",
        "shop.orders",
        "--detail-type",
        "Order Placed",
        "--detail",
        detail,
        "--id",
        id,
    ])
}

#[test]
fn an_event_starts_the_matching_workflow_once_and_it_runs() {
    let mut sb = Sandbox::new();
    let file = path_arg(&repo_file("workflows/order-placed.yaml"));
    sb.baton(&["deploy", &file]).expect_code(0);
    // Another workflow, whose trigger this event does not match.
    let other = sb.path().join("returns.yaml");
    std::fs::write(
        &other,
        "name: returns\ntriggers:\n  - name: returned\n    pattern: { source: [shop.returns] }\nsteps:\n  pause: { wait: 1h }\n",
    )
    .unwrap();
    sb.baton(&["deploy", &path_arg(&other)]).expect_code(0);

    let first = emit(&sb, "evt-1", r#"{"orderId":"o-9","total":42}"#);
    first.expect_code(0);
    assert_eq!(
        first.stdout,
        "started order-placed:placed:evt-1 (workflow `order-placed` version 1, trigger `placed`)\n"
    );
    // The same event again (a retry, a redelivery) starts nothing new.
    let again = emit(&sb, "evt-1", r#"{"orderId":"o-9","total":42}"#);
    again.expect_code(0);
    assert_eq!(
        again.stdout,
        "order-placed:placed:evt-1 already started by event evt-1 (workflow `order-placed`, trigger `placed`)\n"
    );
    assert_eq!(sb.count("SELECT COUNT(*) FROM executions"), 1);

    // The pattern decides: a test order and an order of nothing match nothing.
    let test_order = emit(
        &sb,
        "evt-2",
        r#"{"orderId":"o-10","total":5,"channel":"test"}"#,
    );
    test_order.expect_code(0);
    assert_eq!(test_order.stdout, "event evt-2 matched no trigger\n");
    emit(&sb, "evt-3", r#"{"orderId":"o-11","total":0}"#).expect_code(0);
    assert_eq!(sb.count("SELECT COUNT(*) FROM executions"), 1);

    // Machines read one JSON object; the trigger's input read the event.
    let json = sb.baton(&[
        "emit",
        "--source",
        "shop.orders",
        "--detail-type",
        "Order Placed",
        "--detail",
        r#"{"orderId":"o-12","total":7,"channel":"web"}"#,
        "--id",
        "evt-4",
        "--json",
    ]);
    json.expect_code(0);
    let out = json.json();
    assert_eq!(out["event"], "evt-4");
    assert_eq!(out["started"][0]["id"], "order-placed:placed:evt-4");
    assert_eq!(out["started"][0]["created"], true);
    assert_eq!(out["failed"], serde_json::json!([]));
    let status = sb.baton(&["status", "order-placed:placed:evt-4", "--json"]);
    status.expect_code(0);
    assert_eq!(
        status.json()["state"]["input"],
        serde_json::json!({"orderId": "o-12", "eventId": "evt-4"}),
        "{}",
        status.stdout
    );

    // A worker runs what the events started.
    let _worker = sb.worker(&[]);
    for id in ["order-placed:placed:evt-1", "order-placed:placed:evt-4"] {
        let done = wait_until(id, Duration::from_secs(30), || {
            sb.status(id).filter(|s| s == "succeeded")
        });
        assert!(done.is_some(), "{id}: {:?}", sb.status(id));
    }
}

#[test]
fn a_bad_event_is_refused_and_an_id_is_not_pretended_on_aws() {
    let sb = Sandbox::new();
    let not_an_object = emit(&sb, "evt-1", "[1,2]");
    not_an_object.expect_code(2);
    assert!(
        not_an_object
            .stderr
            .contains("the detail must be a JSON object"),
        "{}",
        not_an_object.stderr
    );
    emit(&sb, "evt-1", "{not json").expect_code(2);
    // On AWS EventBridge names the event; an id asked for is refused, not dropped.
    let aws = sb.baton(&[
        "--aws",
        "emit",
        "--source",
        "s",
        "--detail-type",
        "t",
        "--id",
        "e",
    ]);
    aws.expect_code(2);
    assert!(
        aws.stderr.contains("EventBridge gives the event its id"),
        "{}",
        aws.stderr
    );
}
