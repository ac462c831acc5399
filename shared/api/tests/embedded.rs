//! Every route and error case of the API, against the embedded SQLite backend.

mod common;

use baton_runtime::ports::ListQuery;
use std::sync::Arc;

use baton_api::ApiOptions;
use baton_core::{Event, TaskKind, TaskRef};
use baton_embedded::SqliteOptions;
use baton_runtime::ports::ExecutionStore;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// Reports that the `reserve` step's first attempt succeeded, as a worker would.
async fn finish_reserve(h: &Harness, id: &str) {
    let event = Event::TaskSucceeded {
        task: TaskRef {
            step: Arc::from("reserve"),
            index: None,
            attempt: 1,
            kind: TaskKind::Step,
        },
        output: json!({"reservationId": "r-1"}),
    };
    h.api
        .coordinator()
        .handle(id, event)
        .await
        .expect("the result is applied");
}

#[tokio::test]
async fn deploys_new_versions_and_lists_the_latest() {
    let h = harness();
    let api = &h.api;

    let r = call(
        api,
        Method::PUT,
        "/workflows/approval",
        &[("content-type", "application/yaml")],
        APPROVAL_YAML,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"name": "approval", "version": 1, "created": true})
    );
    assert_eq!(r.headers["location"], "/workflows/approval");

    // The same definition again keeps its version.
    let r = deploy(api, "approval", APPROVAL_YAML).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"name": "approval", "version": 1, "created": false})
    );

    // A changed definition, as JSON (sniffed without a Content-Type).
    let changed = APPROVAL_YAML.replace("max_attempts: 2", "max_attempts: 3");
    let as_json = serde_json::to_string(
        &baton_core::Workflow::from_text(&changed, baton_core::definition::Format::Yaml)
            .expect("valid")
            .definition
            .to_json(),
    )
    .expect("JSON");
    let r = deploy(api, "approval", &as_json).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["version"], 2);

    let r = call(
        api,
        Method::PUT,
        "/workflows/waiter",
        &[("content-type", "application/json; charset=utf-8")],
        WAIT_JSON,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let r = get(api, "/workflows").await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.body.as_array().expect("a list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "approval");
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["description"], "Reserve, then wait for approval.");
    assert_eq!(list[0]["steps"], 2);
    assert_eq!(list[1]["name"], "waiter");
    assert!(list[1].get("description").is_none());

    let r = get(api, "/workflows/approval?version=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["definition"]["defaults"]["retry"]["max_attempts"], 2);
    let r = get(api, "/workflows/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no workflow `nope` is deployed");
}

#[tokio::test]
async fn an_invalid_definition_gets_422_with_every_problem() {
    let h = harness();
    let invalid = r#"
name: broken
steps:
  first:
    function: f
    mutates: false
    timeout: soon
    retry: { max_attempts: 1 }
  second:
    needs: [missing]
    function: g
    mutates: false
    retry: { max_attempts: 1 }
"#;
    let r = deploy(&h.api, "broken", invalid).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let problems = r.body["problems"].as_array().expect("problems");
    assert!(problems.len() >= 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p["step"] == "first" && p["field"] == "timeout"),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p["step"] == "second"
            && p["message"].as_str().is_some_and(|m| m.contains("missing"))),
        "{problems:?}"
    );
    assert!(
        r.error().starts_with("the definition is invalid:"),
        "{}",
        r.error()
    );

    // A shape problem (an unknown field) is a validation problem too.
    let r = deploy(&h.api, "waiter", r#"{"name": "waiter", "stepz": {}}"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.error().contains("stepz"), "{}", r.error());

    // Nothing was stored.
    let r = get(&h.api, "/workflows").await;
    assert_eq!(r.body, json!([]));
}

#[tokio::test]
async fn an_unreadable_or_misnamed_definition_gets_400() {
    let h = harness();
    let api = &h.api;

    let r = call(
        api,
        Method::PUT,
        "/workflows/waiter",
        &[("content-type", "application/json")],
        "{\"name\": \"waiter\",\n \"steps\": }",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.error().starts_with("the definition is not valid JSON"),
        "{}",
        r.error()
    );
    assert!(r.error().contains("line 2 column"), "{}", r.error());

    let r = call(
        api,
        Method::PUT,
        "/workflows/waiter",
        &[("content-type", "text/yaml")],
        "name: waiter\nsteps: [unclosed\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.error().starts_with("the definition is not valid YAML"),
        "{}",
        r.error()
    );

    // Without a Content-Type, YAML is tried after JSON.
    let r = deploy(api, "other", WAIT_JSON).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.error(),
        "the definition names workflow `waiter` but the path names `other`"
    );

    let r = deploy(api, "waiter", "  \n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("empty"), "{}", r.error());

    let r = call(api, Method::PUT, "/workflows/waiter", &[], vec![0xff, 0xfe]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("UTF-8"), "{}", r.error());
}

#[tokio::test]
async fn starting_twice_with_an_idempotency_key_starts_one_execution() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;

    let key = [("idempotency-key", "order-7")];
    let body = r#"{"input": {"orderId": "o-7"}}"#;
    let first = call(
        api,
        Method::POST,
        "/workflows/waiter/executions",
        &key,
        body,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        first.body,
        json!({"id": "order-7", "workflow": "waiter", "version": 1, "status": "running", "created": true})
    );
    assert_eq!(first.headers["location"], "/executions/order-7");

    let again = call(
        api,
        Method::POST,
        "/workflows/waiter/executions",
        &key,
        body,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], "order-7");
    assert_eq!(again.body["created"], false);

    let all = h
        .api
        .backend()
        .list(&ListQuery::newest(100))
        .await
        .expect("list")
        .executions;
    assert_eq!(all.len(), 1);
    let r = get(api, "/executions").await;
    assert_eq!(r.body["executions"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["executions"][0]["id"], "order-7");
}

#[tokio::test]
async fn execution_ids_come_from_the_body_the_header_or_the_generator() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    let path = "/workflows/waiter/executions";

    let r = post(api, path, "").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "fixed-0");

    let r = post(api, path, r#"{"id": "mine", "input": 1}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "mine");
    let r = post(api, path, r#"{"id": "mine", "input": 1}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["created"], false);
    // The same id with another input: refused, not the first execution's answer.
    let r = post(api, path, r#"{"id": "mine", "input": 2}"#).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("`mine`"),
        "{}",
        r.body
    );

    let r = call(
        api,
        Method::POST,
        path,
        &[("idempotency-key", "b")],
        r#"{"id": "a"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("differ"), "{}", r.error());

    let r = post(api, path, r#"{"id": "has/slash"}"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.error().contains("execution id `has/slash` contains `/`"),
        "{}",
        r.error()
    );

    // The same id under another workflow is a conflict, not that execution.
    deploy(api, "approval", APPROVAL_YAML).await;
    let r = post(api, "/workflows/approval/executions", r#"{"id": "mine"}"#).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        r.error(),
        "execution id `mine` is already used by workflow `waiter`"
    );
}

#[tokio::test]
async fn bad_start_requests_say_what_is_wrong() {
    let h = harness_with(
        SqliteOptions {
            payload_limit: 1024,
            ..SqliteOptions::default()
        },
        ApiOptions::default().body_limit(4096),
    );
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    let path = "/workflows/waiter/executions";

    let r = post(api, "/workflows/nope/executions", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no workflow `nope` is deployed");

    let r = post(api, path, r#"{"input": {"version": 2}, "version": 9}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no workflow `waiter` version 9 is deployed");

    let r = post(api, path, "{\"input\": {\"a\": 1,}}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error().starts_with("the start request is not valid JSON"),
        "{}",
        r.error()
    );
    assert!(r.error().contains("line 1 column"), "{}", r.error());

    let r = post(api, path, r#"{"orderId": "o-1"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error().contains("unknown field `orderId`"),
        "{}",
        r.error()
    );

    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(2000));
    let r = post(api, path, &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.error().contains("1024-byte limit"), "{}", r.error());
    assert_eq!(r.body["limit"], 1024);

    let huge = format!(r#"{{"input": "{}"}}"#, "x".repeat(5000));
    let r = post(api, path, &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.error().contains("4096-byte limit"), "{}", r.error());
    assert_eq!(r.body["limit"], 4096);

    assert_eq!(
        h.api
            .backend()
            .list(&ListQuery::newest(10))
            .await
            .expect("list")
            .executions
            .len(),
        0
    );
}

#[tokio::test]
async fn the_default_body_limit_is_256_kib() {
    let h = harness();
    deploy(&h.api, "waiter", WAIT_JSON).await;
    let huge = format!(r#"{{"input": "{}"}}"#, "x".repeat(256 * 1024));
    let r = post(&h.api, "/workflows/waiter/executions", &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.error().contains("262144-byte limit"), "{}", r.error());
}

#[tokio::test]
async fn status_and_history_of_an_execution() {
    let h = harness();
    let api = &h.api;
    deploy(api, "approval", APPROVAL_YAML).await;
    post(
        api,
        "/workflows/approval/executions",
        r#"{"id": "e1", "input": {"n": 1}}"#,
    )
    .await;

    let r = get(api, "/executions/e1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], "e1");
    assert_eq!(r.body["workflow"], "approval");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["input"], json!({"n": 1}));
    assert_eq!(r.body["steps"][0]["name"], "reserve");
    assert_eq!(r.body["steps"][0]["status"], "running");
    assert_eq!(r.body["steps"][0]["attempts"], 1);
    assert_eq!(r.body["steps"][1]["name"], "approve");
    assert_eq!(r.body["steps"][1]["status"], "pending");
    assert_eq!(r.body["steps"][1]["attempts"], 0);

    finish_reserve(&h, "e1").await;
    let r = get(api, "/executions/e1").await;
    assert_eq!(r.body["steps"][0]["status"], "succeeded");
    assert_eq!(
        r.body["steps"][0]["output"],
        json!({"reservationId": "r-1"})
    );
    assert_eq!(r.body["steps"][1]["status"], "waiting");

    let r = get(api, "/executions/e1/history").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let history = r.body.as_array().expect("a list");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["seq"], 1);
    assert_eq!(history[0]["event"]["type"], "started");
    assert!(history[0]["at"].is_u64());
    assert_eq!(history[1]["seq"], 2);
    assert_eq!(history[1]["event"]["type"], "task_succeeded");

    let r = get(api, "/executions/e1/history?view=lifecycle").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("lifecycle"), "{}", r.error());

    for path in ["/executions/ghost", "/executions/ghost/history"] {
        let r = get(api, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error(), "no execution `ghost`");
    }

    let r = get(api, "/executions?status=succeeded").await;
    assert_eq!(r.body, json!({"executions": []}));
    let r = get(api, "/executions?status=running&limit=1").await;
    assert_eq!(r.body["executions"][0]["id"], "e1");
    let r = get(api, "/executions?workflow=no-such&since=0").await;
    assert_eq!(r.body, json!({"executions": []}));
    let r = get(api, "/executions?after=yesterday").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("`after`"), "{}", r.error());
    let r = get(api, "/executions?status=done").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("unknown status `done`"), "{}", r.error());
    let r = get(api, "/executions?limit=0").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn signals_reach_the_execution_until_it_finishes() {
    let h = harness();
    let api = &h.api;
    deploy(api, "approval", APPROVAL_YAML).await;
    post(api, "/workflows/approval/executions", r#"{"id": "s1"}"#).await;

    // Sent before the step waits: kept for it.
    let r = post(api, "/executions/s1/signals/approval", r#"{"by": "ann"}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"id": "s1", "signal": "approval", "outcome": "applied", "status": "running"})
    );

    finish_reserve(&h, "s1").await;
    let r = get(api, "/executions/s1").await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["output"], json!({"approved": {"by": "ann"}}));

    let r = post(api, "/executions/s1/signals/approval", "true").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "execution `s1` already finished (succeeded)");
    assert_eq!(r.body["status"], "succeeded");

    let r = post(api, "/executions/ghost/signals/approval", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no execution `ghost`");

    post(api, "/workflows/approval/executions", r#"{"id": "s2"}"#).await;
    let r = post(api, "/executions/s2/signals/approval", "{\"by\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error()
            .starts_with("the signal payload is not valid JSON"),
        "{}",
        r.error()
    );

    // A signal no step waits for is refused, naming those it waits for.
    let r = post(api, "/executions/s2/signals/other", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.error(),
        "no step of workflow `approval` waits for a `other` signal; it waits for `approval`"
    );

    // An empty body is a null payload; the Idempotency-Key names the signal,
    // so a client's retry is recognised rather than taken twice.
    let key = [("idempotency-key", "approve-s2")];
    let r = call(
        api,
        Method::POST,
        "/executions/s2/signals/approval",
        &key,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    let r = call(
        api,
        Method::POST,
        "/executions/s2/signals/approval",
        &key,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "ignored");
    assert_eq!(
        r.body["reason"],
        "the execution took the signal with id `approve-s2` already"
    );
}

#[tokio::test]
async fn cancel_applies_once_then_reports_why_not() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    deploy(api, "approval", APPROVAL_YAML).await;

    // Nothing to undo: cancelled at once; a second cancel finds it finished.
    post(api, "/workflows/waiter/executions", r#"{"id": "c1"}"#).await;
    let r = post(
        api,
        "/executions/c1/cancel",
        r#"{"reason": "changed my mind"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"id": "c1", "outcome": "applied", "status": "cancelled"})
    );
    let r = get(api, "/executions/c1").await;
    assert_eq!(r.body["cancel_requested"], true);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("changed my mind")),
        "{}",
        r.body
    );
    let r = post(api, "/executions/c1/cancel", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "execution `c1` already finished (cancelled)");

    // A finished step to undo: compensating; a second cancel is ignored, with the reason.
    post(api, "/workflows/approval/executions", r#"{"id": "c2"}"#).await;
    finish_reserve(&h, "c2").await;
    let r = post(api, "/executions/c2/cancel", "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    assert_eq!(r.body["status"], "compensating");
    let r = post(api, "/executions/c2/cancel", "{}").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "ignored");
    assert_eq!(
        r.body["reason"],
        baton_runtime::coordinator::describe_ignored(&baton_core::engine::Ignored::AlreadyStopping)
    );

    let r = post(api, "/executions/ghost/cancel", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(api, "/executions/c2/cancel", r#"{"because": "x"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.error().contains("unknown field `because`"),
        "{}",
        r.error()
    );
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405() {
    let h = harness();
    let api = &h.api;
    let r = get(api, "/nothing/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "no route for GET /nothing/here");

    let r = call(api, Method::DELETE, "/executions/e1", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(r.body["allowed"], json!(["GET"]));
    assert!(r.error().contains("DELETE is not allowed"), "{}", r.error());

    let r = get(api, "/workflows/w/executions").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");

    let r = post(api, "/workflows/w", "{}").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, PUT");
}

#[tokio::test]
async fn a_configured_base_path_is_stripped() {
    let h = harness_with(
        SqliteOptions::default(),
        ApiOptions::default().base_path("/prod"),
    );
    let r = get(&h.api, "/prod/workflows").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!([]));
    let r = get(&h.api, "/workflows").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn storage_failures_are_503_when_retryable_else_500() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    post(api, "/workflows/waiter/executions", r#"{"id": "bad"}"#).await;

    let db = rusqlite::Connection::open(h.db_path()).expect("open the database");
    // Another process's transition that does not decode.
    db.execute_batch(
        "INSERT INTO history (execution_id, seq, at, event)
           SELECT id, version + 1, updated_at, 'not json' FROM executions WHERE id = 'bad';
         UPDATE executions SET version = version + 1 WHERE id = 'bad';",
    )
    .expect("corrupt a row");
    let r = get(api, "/executions/bad").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(r.error().contains("corrupt"), "{}", r.error());

    db.execute_batch("DROP TABLE executions")
        .expect("drop a table");
    let r = get(api, "/executions/bad").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(
        r.error().starts_with("storage unavailable"),
        "{}",
        r.error()
    );
    assert_eq!(r.headers["retry-after"], "1");
}

#[tokio::test]
async fn responses_parse_as_the_documented_shapes() {
    // A guard against accidental renames: the fields clients read.
    let h = harness();
    deploy(&h.api, "waiter", WAIT_JSON).await;
    post(&h.api, "/workflows/waiter/executions", r#"{"id": "x"}"#).await;
    let r = get(&h.api, "/executions/x").await;
    let keys: Vec<&str> = r
        .body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for key in [
        "id",
        "workflow",
        "version",
        "status",
        "steps",
        "input",
        "created_at",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let step = &r.body["steps"][0];
    for key in ["name", "status", "attempts"] {
        assert!(step.get(key).is_some(), "{key} missing from {step}");
    }
    assert_eq!(step["status"], Value::from("waiting"));
}

/// `depth` arrays around `1`.
fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

/// JSON text of `depth` arrays around `1`, for depths no JSON value here could hold.
fn nested_text(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn input_nested_too_deep_gets_422_and_nothing_is_stored() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    let path = "/workflows/waiter/executions";
    let too_deep = "the input nests arrays and objects deeper than the limit of 64 levels";

    let body = json!({ "id": "deep", "input": nested(65) }).to_string();
    let r = post(api, path, &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.error(), too_deep);
    assert_eq!(r.body["limit"], 64);

    // Deeper than JSON readers go: the same answer, not a parse error.
    let body = format!(r#"{{"id": "deeper", "input": {}}}"#, nested_text(100_000));
    let r = post(api, path, &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.error(), too_deep);
    assert_eq!(
        h.api
            .backend()
            .list(&ListQuery::newest(10))
            .await
            .expect("list")
            .executions
            .len(),
        0
    );

    // At the limit it starts, and stays readable.
    let body = json!({ "id": "at-limit", "input": nested(64) }).to_string();
    let r = post(api, path, &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = get(api, "/executions/at-limit").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["input"], nested(64));
    let r = get(api, "/executions/at-limit/history").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = post(api, "/executions/at-limit/cancel", "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

#[tokio::test]
async fn a_signal_nested_too_deep_gets_422_and_changes_nothing() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    post(api, "/workflows/waiter/executions", r#"{"id": "w"}"#).await;

    for body in [nested(65).to_string(), nested_text(100_000)] {
        let r = post(api, "/executions/w/signals/go", &body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(
            r.error(),
            "the signal payload nests arrays and objects deeper than the limit of 64 levels"
        );
    }
    let r = get(api, "/executions/w").await;
    assert_eq!(r.body["status"], "running", "{}", r.body);
    let r = get(api, "/executions/w/history").await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.body);

    let r = post(api, "/executions/w/signals/go", &nested(64).to_string()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = get(api, "/executions/w").await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.body["output"], Value::Null, "{}", r.body);
}

#[tokio::test]
async fn definitions_nested_too_deep_get_422() {
    let h = harness();
    let api = &h.api;

    // A JSON body deeper than the limit, refused before it is parsed.
    let body = format!(r#"{{"name": "waiter", "steps": {}}}"#, nested_text(100_000));
    let r = deploy(api, "waiter", &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        r.error(),
        "the definition nests arrays and objects deeper than the limit of 64 levels"
    );

    // YAML nested past the limit, in blocks or in brackets.
    let mut blocks = String::from("name: deep\nsteps:\n  hold:\n    wait: 1s\n    input:\n");
    for level in 0..70 {
        blocks.push_str(&format!("{}k{level}:\n", "  ".repeat(level + 3)));
    }
    let brackets = format!(
        "name: deep\nsteps:\n  hold:\n    wait: 1s\n    input: {}\n",
        nested_text(100_000)
    );
    for yaml in [blocks, brackets] {
        for headers in [&[("content-type", "application/yaml")][..], &[]] {
            let r = call(api, Method::PUT, "/workflows/deep", headers, yaml.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            assert_eq!(
                r.error(),
                "the definition nests arrays and objects deeper than the limit of 64 levels"
            );
        }
    }

    // An expression 10,000 levels deep: a validation problem naming its step and field.
    let depth = 10_000;
    let definition = json!({
        "name": "nested",
        "steps": { "hold": {
            "wait_until": format!("${{ {}1{} }}", "(".repeat(depth), ")".repeat(depth)),
        }},
    });
    let r = deploy(api, "nested", &definition.to_string()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["problems"][0]["step"], "hold");
    assert_eq!(r.body["problems"][0]["field"], "wait_until");
    let message = r.body["problems"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("nests deeper than the limit of 24 levels"),
        "{message}"
    );

    // Ten levels, which used to bring the server down.
    let yaml = format!(
        "name: nested\nsteps:\n  hold:\n    wait_until: \"${{ {}1{} }}\"\n",
        "(".repeat(10),
        ")".repeat(10)
    );
    let r = deploy(api, "nested", &yaml).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let r = get(api, "/workflows").await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.body);
}

#[tokio::test]
async fn execution_ids_follow_one_rule() {
    let h = harness();
    let api = &h.api;
    deploy(api, "waiter", WAIT_JSON).await;
    let path = "/workflows/waiter/executions";
    let long = format!("{}../x", "a".repeat(306));
    for (id, message) in [
        ("", "the execution id is empty"),
        (
            long.as_str(),
            "is 310 characters long, more than the limit of 128",
        ),
        ("..", "execution id `..` is a path segment"),
        ("a b", "execution id `a b` contains ' '"),
    ] {
        let r = post(api, path, &json!({ "id": id }).to_string()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{id}: {}",
            r.body
        );
        assert!(r.error().contains(message), "{id}: {}", r.error());
    }
    let r = call(
        api,
        Method::POST,
        path,
        &[("idempotency-key", "../../x")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(
        h.api
            .backend()
            .list(&ListQuery::newest(10))
            .await
            .expect("list")
            .executions
            .len(),
        0
    );

    for id in [
        "order-1001",
        "waiter-nightly-2026-03-08T05:00:00Z",
        "a.b_c:d",
    ] {
        let r = post(api, path, &json!({ "id": id }).to_string()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
        let r = get(api, &format!("/executions/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.body);
    }
}

#[tokio::test]
async fn an_execution_grown_past_what_is_stored_gets_413_not_500() {
    // The state is stored up to four times the payload limit: signals
    // queued before the step that takes them pile up in it.
    let h = harness_with(
        SqliteOptions {
            payload_limit: 1024,
            ..SqliteOptions::default()
        },
        ApiOptions::default(),
    );
    let api = &h.api;
    deploy(api, "approval", APPROVAL_YAML).await;
    post(api, "/workflows/approval/executions", r#"{"id": "grow"}"#).await;
    let payload = json!("x".repeat(1000)).to_string();
    let mut refused = None;
    for _ in 0..10 {
        let r = post(api, "/executions/grow/signals/approval", &payload).await;
        if r.status != StatusCode::ACCEPTED {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the state outgrows the store's limit");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(
        r.error().contains("the execution state is") && r.error().contains("4096-byte limit"),
        "{}",
        r.error()
    );
    assert_eq!(r.body["limit"], 4096);
    let r = get(api, "/executions/grow").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "running");
}

/// Two triggers on one bus: `placed` reads the customer's id from the event,
/// `audit` takes the detail as it is.
const TRIGGERED_YAML: &str = r#"
name: orders
triggers:
  - name: placed
    pattern: { source: [shop], detail-type: [Order Placed] }
    input: { customer: "${ event.detail.customer.id }", eventId: "${ event.id }" }
  - name: audit
    pattern: { source: [shop] }
steps:
  hold: { wait_for: { signal: go } }
"#;

async fn post_event(h: &Harness, event: Value) -> Reply {
    post(&h.api, "/events", &event.to_string()).await
}

async fn execution_count(h: &Harness) -> usize {
    h.api
        .backend()
        .list(&ListQuery::newest(100))
        .await
        .expect("list")
        .executions
        .len()
}

#[tokio::test]
async fn an_event_starts_each_matching_trigger_once() {
    let h = harness();
    let r = call(
        &h.api,
        Method::PUT,
        "/workflows/orders",
        &[("content-type", "application/yaml")],
        TRIGGERED_YAML,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let event = json!({
        "id": "evt-1",
        "source": "shop",
        "detail-type": "Order Placed",
        "detail": {"customer": {"id": "c-7"}},
    });
    let r = post_event(&h, event.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["event"], "evt-1");
    let mut started = r.body["started"].as_array().cloned().unwrap_or_default();
    started.sort_by_key(|s| s["id"].as_str().map(String::from));
    assert_eq!(
        started,
        vec![
            json!({"id": "orders:audit:evt-1", "workflow": "orders", "version": 1, "trigger": "audit", "created": true}),
            json!({"id": "orders:placed:evt-1", "workflow": "orders", "version": 1, "trigger": "placed", "created": true}),
        ]
    );
    // The input is the trigger's template over the event; the default is the detail.
    let r = get(&h.api, "/executions/orders:placed:evt-1").await;
    assert_eq!(
        r.body["input"],
        json!({"customer": "c-7", "eventId": "evt-1"})
    );
    let r = get(&h.api, "/executions/orders:audit:evt-1").await;
    assert_eq!(r.body["input"], json!({"customer": {"id": "c-7"}}));

    // The same event again starts nothing new.
    let r = post_event(&h, event).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let created: Vec<&Value> = r.body["started"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["created"])
        .collect();
    assert_eq!(created, [&json!(false), &json!(false)], "{}", r.body);
    assert_eq!(execution_count(&h).await, 2);

    // An event no pattern matches starts nothing.
    let r = post_event(
        &h,
        json!({"id": "evt-2", "source": "warehouse", "detail-type": "Order Placed", "detail": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body, json!({"event": "evt-2", "started": []}));
    assert_eq!(execution_count(&h).await, 2);

    // Only `audit` matches another detail-type; an event without an id gets one.
    let r = post_event(
        &h,
        json!({"source": "shop", "detail-type": "Order Shipped", "detail": {"n": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["event"], "fixed-0", "{}", r.body);
    assert_eq!(r.body["started"][0]["id"], "orders:audit:fixed-0");
    assert_eq!(r.body["started"].as_array().map(Vec::len), Some(1));
    assert_eq!(execution_count(&h).await, 3);
}

#[tokio::test]
async fn a_malformed_event_or_a_failing_input_starts_nothing() {
    let h = harness();
    deploy(&h.api, "orders", TRIGGERED_YAML).await;
    for (body, says) in [
        ("", "the request body is empty"),
        ("{", "the event is not valid JSON"),
        ("[1]", "an event is a JSON object"),
        (
            r#"{"id": "e", "detail-type": "Order Placed", "detail": {}}"#,
            "the event has no `source`",
        ),
        (
            r#"{"id": "e", "source": "shop", "detail-type": "Order Placed"}"#,
            "the event has no `detail`",
        ),
        (
            r#"{"id": "e", "source": "shop", "detail-type": "Order Placed", "detail": [1]}"#,
            "`detail` must be a JSON object",
        ),
        (
            r#"{"id": 7, "source": "shop", "detail-type": "Order Placed", "detail": {}}"#,
            "`id` must be a non-empty string",
        ),
    ] {
        let r = post(&h.api, "/events", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.error().contains(says), "{body}: {}", r.body);
    }
    // `placed` matches but the event has no customer: neither trigger starts,
    // though `audit` alone could have.
    let r = post_event(
        &h,
        json!({"id": "evt-1", "source": "shop", "detail-type": "Order Placed", "detail": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.error()
            .contains("trigger `placed` of workflow `orders` matches, but its input fails"),
        "{}",
        r.body
    );
    assert_eq!(execution_count(&h).await, 0);
}
