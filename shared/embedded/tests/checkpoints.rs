//! A transition writes its history row and, only now and then, the whole
//! state: another process (with nothing in memory) rebuilds the same state
//! from the newest snapshot and the history after it.

mod common;

use std::time::Duration;

use baton_core::{Event, ExecutionStatus};
use baton_embedded::SqliteOptions;
use baton_runtime::checkpoint::SNAPSHOT_EVERY;
use baton_runtime::ports::ExecutionStore;
use baton_runtime::step::{Registry, handler_fn};
use common::{deploy, eventually, open, raw, run_worker, status};
use serde_json::{Value, json};

const MAP: &str = "name: map
defaults:
  retry: { max_attempts: 1 }
  timeout: 1m
steps:
  each:
    for_each: \"${ input.items }\"
    function: double
    input: \"${ item }\"
    mutates: false
    max_concurrency: 4
  after:
    needs: [each]
    wait: 10m
";

fn doubling() -> Registry {
    let mut registry = Registry::new();
    registry.register(
        "double",
        handler_fn(|_, input: Value| async move { Ok(json!(input.as_i64().unwrap_or(0) * 2)) }),
    );
    registry
}

/// `(version, state_version)` of an execution as stored.
fn versions(path: &std::path::Path, id: &str) -> (u64, u64) {
    raw(path)
        .query_row(
            "SELECT version, state_version FROM executions WHERE id = ?1",
            [id],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_rebuilds_the_state_from_the_snapshot_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    deploy(&node, MAP).await;
    let items: Vec<i64> = (0..200).collect();
    node.start("map", None, "m-1", json!({ "items": items }))
        .await
        .expect("started");
    let worker = run_worker(&node, doubling());
    let waiting = eventually(Duration::from_secs(30), || async {
        node.backend()
            .load("m-1")
            .await
            .unwrap()
            .and_then(|r| r.state.step("after").map(|s| s.wake_at.is_some()))
            .unwrap_or(false)
    })
    .await;
    worker.stop().await;
    assert!(waiting, "the map ran and the wait began");

    let (version, state_version) = versions(&path, "m-1");
    assert!(
        version > 2 * SNAPSHOT_EVERY,
        "200 elements make over {} transitions: {version}",
        2 * SNAPSHOT_EVERY
    );
    // Results that arrive together are applied in one transition, which may
    // step over a multiple of the interval: the snapshot is then taken there.
    assert!(
        state_version >= SNAPSHOT_EVERY && state_version < version,
        "the state is written now and then, not by every transition: \
         version {version}, snapshot at {state_version}"
    );

    let here = node.backend().load("m-1").await.unwrap().unwrap();
    let elsewhere = open(&path, SqliteOptions::default());
    let rebuilt = elsewhere.backend().load("m-1").await.unwrap().unwrap();
    assert_eq!(
        rebuilt, here,
        "a process with nothing cached loads the same record"
    );
    let doubled: Vec<i64> = (0..200).map(|i| i * 2).collect();
    assert_eq!(
        rebuilt.state.step("each").unwrap().output.as_deref(),
        Some(&json!(doubled))
    );

    // The other process moves it on; this one sees the change.
    elsewhere
        .handle(
            "m-1",
            Event::CancelRequested {
                reason: Some("done waiting".into()),
            },
        )
        .await
        .expect("cancelled");
    let cancelled = eventually(Duration::from_secs(10), || async {
        status(&node, "m-1").await == Some(ExecutionStatus::Cancelled)
    })
    .await;
    assert!(cancelled, "a transition by another process is seen here");
    let (version, state_version) = versions(&path, "m-1");
    assert!(
        state_version < version,
        "the end writes no snapshot (it would write every output again)"
    );
    let ended = node.backend().load("m-1").await.unwrap().unwrap();
    let fresh = open(&path, SqliteOptions::default());
    assert_eq!(
        fresh.backend().load("m-1").await.unwrap().unwrap(),
        ended,
        "the ended execution loads the same anywhere"
    );
}
