//! Commands that act on other executions (starting a child, sending an
//! event) are written to the outbox with the transition that produced them,
//! returned to the coordinator to deliver once committed, and kept until
//! cleared; a worker delivers those a process left behind when it died
//! between committing and delivering.

mod common;

use std::time::Duration;

use baton_core::{Command, Event, ExecutionStatus, engine};
use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::ports::{ExecutionRecord, ExecutionStore, HistoryEntry, OutboxEntry};
use baton_runtime::step::Registry;
use common::{Node, deploy, eventually, open, raw, run_worker, status};
use serde_json::json;

const CHILD: &str = "name: child
steps:
  nap: { wait: 1h }
";

const PARENT: &str = "name: parent
steps:
  sub: { workflow: child }
";

fn outbox_rows(path: &std::path::Path, id: &str) -> i64 {
    raw(path)
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE execution_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

/// Starts a parent whose one step runs a child that waits an hour; returns
/// the child's id once the start delivered its `StartChild`.
async fn parent_with_child(node: &Node, parent: &str) -> String {
    deploy(node, CHILD).await;
    deploy(node, PARENT).await;
    node.start("parent", None, parent, json!({})).await.unwrap();
    assert!(
        node.backend()
            .pending_outbox(parent)
            .await
            .unwrap()
            .is_empty(),
        "the start's StartChild was delivered and cleared"
    );
    let page = node
        .backend()
        .list(&baton_runtime::ports::ListQuery::newest(10))
        .await
        .unwrap();
    let child = page
        .executions
        .iter()
        .find(|e| e.workflow == "child")
        .expect("the child was started")
        .id
        .clone();
    assert_eq!(status(node, &child).await, Some(ExecutionStatus::Running));
    child
}

/// Cancels `parent` as the coordinator would, up to the commit, and no
/// further: the process "dies" before delivering. Returns what the commit
/// left to deliver.
async fn cancel_without_delivering(node: &Node, parent: &str) -> Vec<OutboxEntry> {
    let record = node.backend().load(parent).await.unwrap().unwrap();
    let (_, workflow) = node
        .workflow(&record.workflow, Some(record.workflow_version))
        .await
        .unwrap();
    let now = node.now().max(record.updated_at);
    let mut state = record.state.clone();
    let event = Event::CancelRequested {
        reason: Some("test".into()),
    };
    let transition = engine::apply(&workflow, &mut state, event.clone(), now);
    let history = [HistoryEntry {
        seq: record.version + 1,
        at: now,
        event,
    }];
    let next = ExecutionRecord {
        version: record.version + 1,
        state,
        updated_at: now,
        ..record.clone()
    };
    let entries = node
        .backend()
        .commit(&next, record.version, &history, &transition.commands)
        .await
        .unwrap();
    // Every command that acts on another execution, and nothing else, at
    // its place among the transition's commands.
    let expected: Vec<OutboxEntry> = transition
        .commands
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Command::StartChild(_) | Command::SendEvent { .. }))
        .map(|(position, command)| OutboxEntry {
            execution_id: parent.to_string(),
            seq: next.version,
            position: position as u32,
            command: command.clone(),
        })
        .collect();
    assert_eq!(entries, expected, "commit returns the transition's outbox");
    entries
}

fn sends_cancel_to(entries: &[OutboxEntry], child: &str) -> bool {
    entries.iter().any(|e| {
        matches!(
            &e.command,
            Command::SendEvent { execution_id, event, .. }
                if &**execution_id == child && matches!(**event, Event::CancelRequested { .. })
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_returns_the_outbox_and_keeps_it_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    let child = parent_with_child(&node, "p1").await;

    let entries = cancel_without_delivering(&node, "p1").await;
    assert!(
        sends_cancel_to(&entries, &child),
        "cancelling the parent asks its child to cancel: {entries:?}"
    );
    assert_eq!(
        node.backend().pending_outbox("p1").await.unwrap(),
        entries,
        "pending until cleared"
    );
    assert_eq!(outbox_rows(&path, "p1"), entries.len() as i64);

    // On disk: a process opening the file later finds them.
    let later = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(later.pending_outbox("p1").await.unwrap(), entries);
    drop(later);

    // Clearing some leaves the rest.
    node.backend().clear_outbox(&entries[..1]).await.unwrap();
    assert_eq!(
        node.backend().pending_outbox("p1").await.unwrap(),
        entries[1..].to_vec()
    );
    node.backend().clear_outbox(&entries).await.unwrap();
    assert!(
        node.backend()
            .pending_outbox("p1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(outbox_rows(&path, "p1"), 0);
    // Nothing was delivered: the child still runs.
    assert_eq!(status(&node, &child).await, Some(ExecutionStatus::Running));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_delivers_what_a_dead_process_left_in_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    let child = parent_with_child(&node, "p2").await;
    let entries = cancel_without_delivering(&node, "p2").await;
    assert!(sends_cancel_to(&entries, &child));

    // Another process (a fresh coordinator on the same file) runs a worker.
    let other = open(&path, SqliteOptions::default());
    let worker = run_worker(&other, Registry::new());
    // Entries younger than a few seconds are left to the process delivering them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&other, &child).await, Some(ExecutionStatus::Running));
    let cancelled = eventually(Duration::from_secs(30), || async {
        status(&other, &child).await == Some(ExecutionStatus::Cancelled)
    })
    .await;
    let cleared = eventually(Duration::from_secs(10), || async {
        other
            .backend()
            .pending_outbox("p2")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // The child's answer reaches the parent, which ends cancelled too.
    let parent_done = eventually(Duration::from_secs(10), || async {
        status(&other, "p2").await.is_some_and(|s| s.is_terminal())
    })
    .await;
    worker.stop().await;
    assert!(cancelled, "the worker delivered the child's cancel");
    assert!(cleared, "and cleared the parent's outbox");
    assert!(
        parent_done,
        "the parent finished: {:?}",
        status(&other, "p2").await
    );
    assert_eq!(outbox_rows(&path, "p2"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_sweeps_an_expired_executions_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    let _child = parent_with_child(&node, "p3").await;
    cancel_without_delivering(&node, "p3").await;
    assert!(outbox_rows(&path, "p3") > 0);
    raw(&path)
        .execute("UPDATE executions SET expires_at = 1 WHERE id = 'p3'", [])
        .unwrap();
    let swept = node.backend().sweep_expired(node.now()).await.unwrap();
    assert_eq!(swept.executions, 1);
    assert_eq!(outbox_rows(&path, "p3"), 0);
}

#[test]
fn a_database_made_before_the_outbox_gets_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    raw(&path).execute_batch("DROP TABLE outbox").unwrap();
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    let columns: Vec<String> = raw(&path)
        .prepare("SELECT name FROM pragma_table_info('outbox') ORDER BY cid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        ["execution_id", "seq", "position", "command", "created_at"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_transition_delivers_what_an_earlier_one_left_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let node = open(&path, SqliteOptions::default());
    let child = parent_with_child(&node, "p4").await;
    let left = cancel_without_delivering(&node, "p4").await;
    assert!(sends_cancel_to(&left, &child));
    // The next transition of the parent (its child's result arriving) goes
    // through the coordinator: the cancel left behind is delivered with it.
    let record = node.backend().load("p4").await.unwrap().unwrap();
    let task = baton_core::TaskRef {
        step: "sub".into(),
        index: None,
        attempt: record.state.steps[0].units[0].attempt,
        kind: baton_core::TaskKind::Step,
    };
    let error = baton_core::ErrorInfo::new("Gone", "the child went away", false);
    let outcome = node
        .handle("p4", Event::TaskFailed { task, error })
        .await
        .unwrap();
    assert_eq!(outcome, baton_core::Outcome::Applied);
    assert_eq!(
        status(&node, &child).await,
        Some(ExecutionStatus::Cancelled)
    );
    assert_eq!(
        outbox_rows(&path, "p4"),
        0,
        "everything delivered and cleared"
    );
}
