//! The router behind API Gateway: events as Lambda receives them, through `handle_lambda`.

#![cfg(feature = "lambda")]

mod common;

use baton_api::ApiOptions;
use baton_api::lambda::handle_lambda;
use baton_embedded::SqliteOptions;
use common::*;
use lambda_http::Body;
use serde_json::{Value, json};

/// An API Gateway HTTP API (payload 2.0) event.
fn http_api_event(stage: &str, method: &str, raw_path: &str, body: Option<&str>) -> String {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": stage,
            "time": "01/Jan/2025:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

async fn send(h: &Harness, event: String) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event).expect("an API Gateway event");
    let response = match handle_lambda(&h.api, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).expect("JSON"),
        other => panic!("expected a text body, got {other:?}"),
    };
    (status, body)
}

#[tokio::test]
async fn routes_api_gateway_events_by_their_raw_path() {
    let h = harness();
    let (status, body) = send(
        &h,
        http_api_event("$default", "PUT", "/workflows/waiter", Some(WAIT_JSON)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let start = r#"{"id": "l-1", "input": {"a": 1}}"#;
    let (status, body) = send(
        &h,
        http_api_event(
            "$default",
            "POST",
            "/workflows/waiter/executions",
            Some(start),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        &h,
        http_api_event("$default", "GET", "/executions/l-1", None),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["input"], json!({"a": 1}));
}

#[tokio::test]
async fn a_named_stage_is_stripped_only_when_configured() {
    let h = harness_with(
        SqliteOptions::default(),
        ApiOptions::default().base_path("/prod"),
    );
    let (status, body) = send(&h, http_api_event("prod", "GET", "/prod/workflows", None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([]));

    let h = harness();
    let (status, body) = send(&h, http_api_event("prod", "GET", "/prod/workflows", None)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "no route for GET /prod/workflows");
}
