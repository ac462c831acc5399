//! A finished execution is kept for its retention, then swept with its
//! history and lifecycle events; a running one is never swept.

mod common;

use std::time::Duration;

use baton_core::ExecutionStatus;
use baton_embedded::SqliteOptions;
use baton_runtime::ports::{ExecutionStore, ListQuery};
use baton_runtime::step::{Registry, handler_fn};
use common::{deploy, eventually, open, raw, run_worker, status};
use serde_json::{Value, json};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

const QUICK: &str = "name: quick
retention: 1d
steps:
  only: { function: ok, mutates: false, retry: { max_attempts: 1 } }
";

const SLOW: &str = "name: slow
steps:
  nap: { wait: 1h }
";

fn rows(path: &std::path::Path, table: &str, id: &str) -> i64 {
    raw(path)
        .query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE execution_id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_execution_is_swept_once_its_retention_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    deploy(&node, QUICK).await;
    deploy(&node, SLOW).await;
    node.start("quick", None, "done", json!({})).await.unwrap();
    node.start_retained("slow", None, "napping", json!({}), Some(2 * DAY_MS))
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register("ok", handler_fn(|_, _: Value| async { Ok(json!(true)) }));
    let worker = run_worker(&node, registry);
    let finished = eventually(Duration::from_secs(20), || async {
        status(&node, "done").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    worker.stop().await;
    assert!(finished, "the quick execution finished");

    let done = node.backend().load("done").await.unwrap().unwrap();
    let (expires, retention): (Option<i64>, i64) = raw(&path)
        .query_row(
            "SELECT expires_at, retention_ms FROM executions WHERE id = 'done'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(retention as u64, DAY_MS, "the workflow's retention");
    assert_eq!(expires, Some((done.updated_at + DAY_MS) as i64));
    let napping: (Option<i64>, i64) = raw(&path)
        .query_row(
            "SELECT expires_at, retention_ms FROM executions WHERE id = 'napping'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        napping,
        (None, (2 * DAY_MS) as i64),
        "running: no expiry yet; the start's retention"
    );
    assert!(rows(&path, "history", "done") >= 2);
    assert!(
        rows(&path, "events", "done") > 0,
        "lifecycle events recorded"
    );

    let backend = node.backend();
    let early = backend
        .sweep_expired(done.updated_at + DAY_MS - 1)
        .await
        .unwrap();
    assert_eq!(early.executions, 0, "kept until its retention has passed");
    assert!(backend.load("done").await.unwrap().is_some());

    let swept = backend
        .sweep_expired(done.updated_at + 3 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(swept.executions, 1, "only the finished one: {swept:?}");
    assert!(swept.history >= 2, "{swept:?}");
    assert!(backend.load("done").await.unwrap().is_none(), "gone");
    assert_eq!(rows(&path, "history", "done"), 0);
    assert_eq!(rows(&path, "events", "done"), 0);
    let left: Vec<String> = backend
        .list(&ListQuery::newest(10))
        .await
        .unwrap()
        .executions
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec!["napping"], "a running execution is never swept");

    // The id may be used again, and the new execution is not mistaken for
    // the swept one.
    node.start("quick", None, "done", json!({"again": true}))
        .await
        .expect("a swept id starts afresh");
    let again = node.backend().load("done").await.unwrap().unwrap();
    assert_eq!(*again.state.input, json!({"again": true}));
}
