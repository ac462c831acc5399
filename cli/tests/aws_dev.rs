//! The AWS backend end to end on moto server: `baton dev` serves the API,
//! polls the coordinator queue and runs the example handlers behind Lambda's
//! asynchronous contract; a client drives it over HTTP only.

mod common;

use common::dev::{compensations, request, start_dev, wait_finished};
use common::{Sandbox, path_arg, repo_file};
use serde_json::json;

#[test]
fn order_saga_through_the_api_on_moto() {
    let sb = Sandbox::new();
    let prefix = baton_aws::testing::unique_prefix("dev");
    let dev = start_dev(
        &sb,
        &baton_aws::testing::endpoint(),
        &[
            "--prefix",
            &prefix,
            &path_arg(&repo_file("workflows/order-saga.yaml")),
        ],
    );

    let (code, started) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(&json!({"id": "aws-ok", "input": {"orderId": "o-1"}})),
    );
    assert_eq!(code, 201, "{started}");
    // The same request again starts nothing new; the same id with another
    // input is refused rather than silently answered with the first.
    let (code, again) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(&json!({"id": "aws-ok", "input": {"orderId": "o-1"}})),
    );
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["created"], false);
    let (code, other) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(&json!({"id": "aws-ok", "input": {"orderId": "o-other"}})),
    );
    assert_eq!(code, 409, "{other}");
    assert!(
        other["error"].as_str().unwrap().contains("different input"),
        "{other}"
    );

    let done = wait_finished(dev.port, "aws-ok");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        done["output"]["trackingNumber"]
            .as_str()
            .unwrap()
            .starts_with("TRK")
    );
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["succeeded"; 5]);
    let (_, history) = request(dev.port, "GET", "/executions/aws-ok/history", None);
    let history = history.as_array().unwrap();
    assert_eq!(history[0]["event"]["type"], "started");
    let seqs: Vec<u64> = history.iter().map(|h| h["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "history is gapless and ordered"
    );

    // A shipment that fails for good: refund, then release, in reverse order of completion.
    let (code, _) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(
            &json!({"id": "aws-ship-fails", "input": {"orderId": "o-2", "fail": {"ship-order": "permanent"}}}),
        ),
    );
    assert_eq!(code, 201);
    let done = wait_finished(dev.port, "aws-ship-fails");
    assert_eq!(done["status"], "compensated", "{done:#}");
    assert_eq!(
        compensations(dev.port, "aws-ship-fails"),
        ["charge", "reserve"]
    );

    // A payment that always fails: retried to its limit, then only the reservation is undone.
    let (code, _) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(
            &json!({"id": "aws-pay-fails", "input": {"orderId": "o-3", "fail": {"process-payment": "always"}}}),
        ),
    );
    assert_eq!(code, 201);
    let done = wait_finished(dev.port, "aws-pay-fails");
    assert_eq!(done["status"], "compensated", "{done:#}");
    let charge = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "charge")
        .unwrap();
    assert_eq!(charge["attempts"], 5, "{charge:#}");
    assert_eq!(compensations(dev.port, "aws-pay-fails"), ["reserve"]);

    // The operator's view of the same executions, through the command.
    let listed = sb.baton_env(&["list"], &[("BATON_AWS", "1")]);
    let listed = listed.expect_code(0);
    for id in ["aws-ok", "aws-ship-fails", "aws-pay-fails"] {
        assert!(listed.stdout.contains(id), "{}", listed.stdout);
    }
}
