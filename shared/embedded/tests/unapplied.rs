//! Timers and task results that can never be applied (their execution is
//! gone, their workflow or state does not load) are dead-lettered with the
//! error, the execution and the timer or task, not deleted; a redrive puts
//! them back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_core::ExecutionStatus;
use baton_embedded::SqliteOptions;
use baton_runtime::ports::{DeadLetterKind, DeadLetterRecord, DeadLetterStore};
use baton_runtime::step::{Registry, handler_fn};
use common::{Node, deploy, eventually, open, raw, run_worker, status};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

const WAITER: &str = "name: waiter\nsteps:\n  pause: { wait: 300ms }\n";

const ONE_STEP: &str = "name: one-step
defaults:
  retry: { max_attempts: 1 }
  timeout: 1m
steps:
  work: { function: work, mutates: false }
";

async fn dead_letters(node: &Node) -> Vec<DeadLetterRecord> {
    node.backend()
        .list_dead_letters()
        .await
        .expect("dead letters")
}

/// `(tasks, timers, dead letters)` as stored.
fn depths(node: &Node) -> (u64, u64, u64) {
    node.backend().queue_depths().expect("depths")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_whose_workflow_does_not_load_is_dead_lettered_and_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let starter = open(&path, SqliteOptions::default());
    deploy(&starter, WAITER).await;
    starter
        .start("waiter", None, "w-1", json!({}))
        .await
        .expect("started");
    assert_eq!(depths(&starter).1, 1, "the wait's timer is pending");

    // The stored definition stops decoding (a bad manual edit, a downgrade).
    let db = raw(&path);
    let definition: String = db
        .query_row(
            "SELECT definition FROM workflows WHERE name = 'waiter'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute("UPDATE workflows SET definition = 'not a workflow'", [])
        .unwrap();

    // A fresh process, so no compiled workflow is cached.
    let node = open(&path, SqliteOptions::default());
    let worker = run_worker(&node, Registry::new());
    let dead = eventually(Duration::from_secs(10), || async {
        !dead_letters(&node).await.is_empty()
    })
    .await;
    worker.stop().await;
    assert!(dead, "the timer was not dead-lettered");
    let records = dead_letters(&node).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record.kind, DeadLetterKind::Task);
    assert_eq!(record.execution_id.as_deref(), Some("w-1"));
    assert!(record.body.get("timer").is_some(), "{record:#?}");
    assert!(
        record.reason.contains("workflow definition"),
        "the reason names the error: {}",
        record.reason
    );
    assert_eq!(depths(&node).1, 0, "the timer moved to the dead letters");
    assert_eq!(status(&node, "w-1").await, Some(ExecutionStatus::Running));

    // Once the definition is repaired, a redrive fires the timer again.
    db.execute("UPDATE workflows SET definition = ?1", [&definition])
        .unwrap();
    let node = open(&path, SqliteOptions::default());
    assert!(
        node.backend()
            .redrive_dead_letter(&record.id)
            .await
            .expect("redriven")
    );
    assert_eq!(depths(&node), (0, 1, 0));
    let worker = run_worker(&node, Registry::new());
    let done = eventually(Duration::from_secs(10), || async {
        status(&node, "w-1").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    worker.stop().await;
    assert!(done, "the redriven timer finished the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_row_that_does_not_decode_is_dead_lettered_and_the_others_still_fire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    deploy(&node, WAITER).await;
    raw(&path)
        .execute(
            "INSERT INTO timers (execution_id, timer_key, timer, fire_at) VALUES ('gone', 'k', 'not a timer', 0)",
            [],
        )
        .unwrap();
    node.start("waiter", None, "w-2", json!({}))
        .await
        .expect("started");
    let worker = run_worker(&node, Registry::new());
    let done = eventually(Duration::from_secs(10), || async {
        status(&node, "w-2").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    worker.stop().await;
    assert!(done, "a malformed timer must not hold up the others");
    let records = dead_letters(&node).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].kind, DeadLetterKind::Malformed);
    assert_eq!(records[0].execution_id.as_deref(), Some("gone"));
    assert_eq!(records[0].body["timer"], "not a timer");
    assert_eq!(depths(&node).1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_recorded_is_dead_lettered_with_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    deploy(&node, ONE_STEP).await;
    let (started, mut running) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let mut registry = Registry::new();
    let release = go.clone();
    registry.register(
        "work",
        handler_fn(move |_, _| {
            let started = started.clone();
            let release = release.clone();
            async move {
                let _ = started.send(());
                release.notified().await;
                Ok(json!({ "answer": 42 }))
            }
        }),
    );
    let worker = run_worker(&node, registry);
    node.start("one-step", None, "r-1", json!({}))
        .await
        .expect("started");
    running.recv().await.expect("the step runs");
    // While the step runs, another process commits a transition that does
    // not decode: the execution cannot be loaded any more.
    raw(&path)
        .execute_batch(
            "INSERT INTO history (execution_id, seq, at, event)
               SELECT id, version + 1, updated_at, 'garbage' FROM executions WHERE id = 'r-1';
             UPDATE executions SET version = version + 1 WHERE id = 'r-1';",
        )
        .unwrap();
    go.notify_one();
    let dead = eventually(Duration::from_secs(10), || async {
        !dead_letters(&node).await.is_empty()
    })
    .await;
    worker.stop().await;
    assert!(dead, "the task was acked with its result lost");
    let records = dead_letters(&node).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record.kind, DeadLetterKind::Task);
    assert_eq!(record.execution_id.as_deref(), Some("r-1"));
    assert_eq!(record.body["task"]["task"]["step"], "work");
    assert_eq!(record.body["result"]["type"], "task_succeeded");
    assert_eq!(record.body["result"]["output"], json!({ "answer": 42 }));
    assert!(
        record.reason.contains("history event"),
        "the reason names the error: {}",
        record.reason
    );
    assert_eq!(depths(&node).0, 0, "the task moved to the dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_execution_is_gone_is_dead_lettered_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    // Started by a process without a worker, so the task waits in the database.
    let starter = open(&path, SqliteOptions::default());
    deploy(&starter, ONE_STEP).await;
    starter
        .start("one-step", None, "g-1", json!({}))
        .await
        .expect("started");
    raw(&path)
        .execute("DELETE FROM executions WHERE id = 'g-1'", [])
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counted = calls.clone();
    registry.register(
        "work",
        handler_fn(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(json!({})) }
        }),
    );
    let node = open(&path, SqliteOptions::default());
    let worker = run_worker(&node, registry);
    let dead = eventually(Duration::from_secs(10), || async {
        !dead_letters(&node).await.is_empty()
    })
    .await;
    worker.stop().await;
    assert!(dead, "the task was dropped");
    let records = dead_letters(&node).await;
    assert_eq!(records[0].kind, DeadLetterKind::Task);
    assert_eq!(records[0].execution_id.as_deref(), Some("g-1"));
    assert_eq!(records[0].body["task"]["task"]["step"], "work");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing to run it for");
    assert_eq!(depths(&node).0, 0);
}
