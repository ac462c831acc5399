//! The API on the AWS backend (moto server): deploy, start, read, cancel.

mod common;

use std::sync::Arc;

use baton_api::{Api, ApiOptions};
use baton_runtime::{Coordinator, SystemClock};
use common::*;
use http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn deploy_start_read_and_cancel_on_aws() {
    let (backend, _) = baton_aws::testing::fresh_recording_backend("api", 5).await;
    let coordinator = Arc::new(Coordinator::new(Arc::new(backend), Arc::new(SystemClock)));
    let api = Api::with_options(coordinator, ApiOptions::default().ids(fixed_ids()));

    let r = call(
        &api,
        Method::PUT,
        "/workflows/approval",
        &[("content-type", "application/yaml")],
        APPROVAL_YAML,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["version"], 1);

    let key = [("idempotency-key", "aws-1")];
    let body = r#"{"input": {"orderId": "o-1"}}"#;
    let r = call(
        &api,
        Method::POST,
        "/workflows/approval/executions",
        &key,
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "aws-1");
    let r = call(
        &api,
        Method::POST,
        "/workflows/approval/executions",
        &key,
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["created"], false);

    let r = get(&api, "/executions/aws-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["input"], json!({"orderId": "o-1"}));
    assert_eq!(r.body["steps"][0]["status"], "running");

    let r = post(&api, "/executions/aws-1/cancel", r#"{"reason": "test"}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    // The reservation is still in flight: its result is awaited before undoing it.
    assert_eq!(r.body["status"], "compensating");

    let r = get(&api, "/executions/aws-1/history").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let types: Vec<&str> = r
        .body
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["event"]["type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(types, ["started", "cancel_requested"]);

    let r = get(&api, "/executions/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&api, "/workflows").await;
    assert_eq!(r.body[0]["name"], "approval");
}

/// Payloads the table cannot hold go to the payload bucket: a 200 KB input
/// and a 200 KB signal on top of it (a state of 400 KB, more than a DynamoDB
/// item holds) are both accepted and read back whole. A body over the API's
/// limit is refused with 413 and the limit, nothing stored, not a 500.
#[tokio::test]
async fn payloads_the_table_cannot_hold_go_to_the_bucket() {
    let (backend, _) = baton_aws::testing::fresh_recording_backend("api-big", 5).await;
    let coordinator = Arc::new(Coordinator::new(Arc::new(backend), Arc::new(SystemClock)));
    let api = Api::with_options(coordinator, ApiOptions::default().ids(fixed_ids()));
    let r = deploy(&api, "approval", APPROVAL_YAML).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let big = "x".repeat(200 * 1024);
    let body = json!({ "id": "big-input", "input": { "blob": big } }).to_string();
    let r = post(&api, "/workflows/approval/executions", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let r = post(
        &api,
        "/executions/big-input/signals/approval",
        &json!({ "blob": big }).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = get(&api, "/executions/big-input").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["input"]["blob"].as_str().map(str::len),
        Some(big.len())
    );
    let r = get(&api, "/executions/big-input/history").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.body);

    let too_big = "x".repeat(300 * 1024);
    let r = post(
        &api,
        "/executions/big-input/signals/approval",
        &json!({ "blob": too_big }).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.error());
    assert!(r.error().contains("byte limit"), "{}", r.error());
    assert!(r.body["limit"].is_u64(), "{}", r.body);
    let r = get(&api, "/executions/big-input/history").await;
    assert_eq!(
        r.body.as_array().map(Vec::len),
        Some(2),
        "the refused signal left no trace: {}",
        r.body
    );
}
