//! What the API tests share: definitions, an embedded backend on a temporary
//! database, and a way to send one request through the router.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use baton_api::{Api, ApiOptions, handle};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::ports::Backend;
use baton_runtime::{Coordinator, SystemClock};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// Reserves inventory (a task nobody runs unless the test reports its
/// result), then waits for an `approval` signal.
pub const APPROVAL_YAML: &str = r#"
name: approval
description: Reserve, then wait for approval.
defaults:
  retry: { max_attempts: 2 }
steps:
  reserve:
    function: reserve-inventory
    compensate: { function: release-inventory }
  approve:
    needs: [reserve]
    wait_for: { signal: approval, timeout: 1h }
output: { approved: "${ steps.approve.output }" }
"#;

/// One step that waits for a `go` signal: nothing to run, nothing to undo.
pub const WAIT_JSON: &str =
    r#"{"name": "waiter", "steps": {"hold": {"wait_for": {"signal": "go"}}}}"#;

pub struct Harness {
    pub api: Api<SqliteBackend>,
    pub dir: TempDir,
}

impl Harness {
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("baton.db")
    }
}

/// Ids `fixed-0`, `fixed-1`, ... for executions started without one.
pub fn fixed_ids() -> impl Fn() -> String + Send + Sync + 'static {
    let n = AtomicU32::new(0);
    move || format!("fixed-{}", n.fetch_add(1, Ordering::SeqCst))
}

pub fn harness() -> Harness {
    harness_with(SqliteOptions::default(), ApiOptions::default())
}

pub fn harness_with(sqlite: SqliteOptions, options: ApiOptions) -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = SqliteBackend::open(&dir.path().join("baton.db"), sqlite).expect("a database");
    let coordinator = Arc::new(Coordinator::new(Arc::new(backend), Arc::new(SystemClock)));
    let api = Api::with_options(coordinator, options.ids(fixed_ids()));
    Harness { api, dir }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

pub async fn call<B: Backend>(
    api: &Api<B>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.into()).expect("a valid test request");
    let response = handle(api, request).await;
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "every response is JSON"
    );
    let status = response.status();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(response.body()).expect("a JSON body");
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get<B: Backend>(api: &Api<B>, path: &str) -> Reply {
    call(api, Method::GET, path, &[], Bytes::new()).await
}

pub async fn post<B: Backend>(api: &Api<B>, path: &str, body: &str) -> Reply {
    call(api, Method::POST, path, &[], body.to_string()).await
}

pub async fn deploy<B: Backend>(api: &Api<B>, name: &str, definition: &str) -> Reply {
    call(
        api,
        Method::PUT,
        &format!("/workflows/{name}"),
        &[],
        definition.to_string(),
    )
    .await
}
