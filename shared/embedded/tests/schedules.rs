//! Schedules on the embedded backend, driven by a clock the tests move:
//! several workers over one database start each instant once; first sight,
//! catch-up, overlap and disabling behave as documented.

use baton_runtime::ports::ListQuery;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use baton_core::definition::Format;
use baton_core::schedule::{execution_id, parse_scheduled_time};
use baton_core::{Event, ExecutionStatus, Workflow};
use baton_embedded::schedules::{Fired, fire_due, positions, tick};
use baton_embedded::{SqliteBackend, SqliteOptions, Worker, WorkerOptions};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::step::Registry;
use baton_runtime::targets::{Targets, TargetsConfig};
use baton_runtime::{Coordinator, ManualClock};

const MINUTE: u64 = 60_000;

fn at(text: &str) -> u64 {
    parse_scheduled_time(text).expect("RFC 3339")
}

/// A workflow that waits an hour, so its executions stay running.
fn definition(name: &str, schedules: &str) -> String {
    format!("name: {name}\nsteps:\n  pause: {{ wait: 1h }}\nschedules:\n{schedules}")
}

struct Node {
    coordinator: Arc<Coordinator<SqliteBackend>>,
}

fn node(path: &Path, clock: &Arc<ManualClock>) -> Node {
    let backend = SqliteBackend::open(path, SqliteOptions::default()).expect("open");
    Node {
        coordinator: Arc::new(Coordinator::new(Arc::new(backend), clock.clone())),
    }
}

async fn deploy(node: &Node, text: &str, now: u64) {
    let workflow = Workflow::from_text(text, Format::Yaml).expect("a valid definition");
    node.coordinator
        .backend()
        .put_workflow(&workflow.definition, now)
        .await
        .expect("stored");
}

async fn ids(node: &Node) -> BTreeSet<String> {
    node.coordinator
        .backend()
        .list(&ListQuery::newest(10_000))
        .await
        .expect("list")
        .executions
        .into_iter()
        .map(|e| e.id)
        .collect()
}

async fn look(node: &Node, now: u64) -> Fired {
    fire_due(&node.coordinator, now)
        .await
        .expect("schedules fire")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_fire_each_instant_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let start = at("2026-01-01T00:00:30Z");
    let clock = Arc::new(ManualClock::new(start));
    let nodes: Vec<Node> = (0..4).map(|_| node(&path, &clock)).collect();
    deploy(
        &nodes[0],
        &definition(
            "sync",
            "  every-minute: { cron: '* * * * *', overlap: allow }\n  quarter: { cron: '*/15 * * * *', overlap: allow, catch_up: all }\n",
        ),
        start,
    )
    .await;

    let mut started = Vec::new();
    // Each minute, every worker looks at once; some rounds at the same
    // instant, some a few seconds apart.
    for minute in 0..=45u64 {
        let now = start + minute * MINUTE;
        let looks = nodes.iter().enumerate().map(|(i, n)| {
            let jitter = if minute % 2 == 0 { 0 } else { i as u64 * 1_000 };
            fire_due(&n.coordinator, now + jitter)
        });
        for fired in futures::future::join_all(looks).await {
            started.extend(fired.expect("schedules fire").started);
        }
    }
    let expected: BTreeSet<String> = (1..=45u64)
        .map(|m| execution_id("sync", "every-minute", start - 30_000 + m * MINUTE))
        .chain([15, 30, 45].map(|m| execution_id("sync", "quarter", start - 30_000 + m * MINUTE)))
        .collect();
    assert_eq!(ids(&nodes[0]).await, expected);
    // Every start reported once, by the worker that created it.
    assert_eq!(started.len(), expected.len(), "{started:#?}");
    assert!(expected.contains("sync-every-minute-2026-01-01T00:01:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_rounds_check_once_a_second_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let start = at("2026-01-01T00:00:30Z");
    let clock = Arc::new(ManualClock::new(start));
    let nodes: Vec<Node> = (0..3).map(|_| node(&path, &clock)).collect();
    deploy(
        &nodes[0],
        &definition("sync", "  m: { cron: '* * * * *', overlap: allow }\n"),
        start,
    )
    .await;
    let mut started = 0;
    for _ in 0..3 {
        for n in &nodes {
            started += tick(&n.coordinator).await;
        }
    }
    assert_eq!(started, 0, "first sight fires nothing");
    assert_eq!(positions(nodes[0].coordinator.backend()).unwrap().len(), 1);
    clock.advance(MINUTE);
    for _ in 0..3 {
        for n in &nodes {
            started += tick(&n.coordinator).await;
        }
    }
    assert_eq!(started, 1);

    // The real worker loop runs the same hook.
    clock.advance(MINUTE);
    let targets = Arc::new(Targets::new(Registry::new(), TargetsConfig::default()));
    let worker = Arc::new(Worker::new(
        nodes[1].coordinator.clone(),
        targets,
        WorkerOptions::default(),
    ));
    assert!(worker.poll_once().await.expect("a round"));
    assert!(ids(&nodes[0]).await.contains("sync-m-2026-01-01T00:02:00Z"));
}

#[tokio::test]
async fn first_sight_starts_from_now() {
    let dir = tempfile::tempdir().unwrap();
    let start = at("2026-01-01T09:00:10Z");
    let clock = Arc::new(ManualClock::new(start));
    let n = node(&dir.path().join("baton.db"), &clock);
    // Deployed long ago: the 09:00 instant (10 s ago) and earlier are not fired.
    deploy(
        &n,
        &definition("report", "  hourly: { cron: '0 * * * *', catch_up: all }\n"),
        start - 100 * MINUTE,
    )
    .await;
    assert_eq!(look(&n, start).await, Fired::default());
    assert_eq!(look(&n, start + 50 * MINUTE).await, Fired::default());
    let fired = look(&n, start + 60 * MINUTE).await;
    assert_eq!(fired.started, ["report-hourly-2026-01-01T10:00:00Z"]);
}

#[tokio::test]
async fn catch_up_after_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let start = at("2026-01-01T00:00:30Z");
    let clock = Arc::new(ManualClock::new(start));
    let n = node(&dir.path().join("baton.db"), &clock);
    deploy(
        &n,
        &definition(
            "c",
            "  latest: { cron: '* * * * *', overlap: allow }\n  all: { cron: '* * * * *', overlap: allow, catch_up: all, max_catch_up: 3 }\n  none: { cron: '* * * * *', overlap: allow, catch_up: none }\n",
        ),
        start,
    )
    .await;
    look(&n, start).await;
    // Down for ten minutes; the last instant is 30 s late, past the grace of `none`.
    let fired = look(&n, start + 10 * MINUTE).await;
    let minute = |m: u64| schedule_time(start - 30_000 + m * MINUTE);
    let expected: BTreeSet<String> = [
        format!("c-latest-{}", minute(10)),
        format!("c-all-{}", minute(8)),
        format!("c-all-{}", minute(9)),
        format!("c-all-{}", minute(10)),
    ]
    .into();
    assert_eq!(fired.started.into_iter().collect::<BTreeSet<_>>(), expected);
    // Back on time, all three run again.
    let fired = look(&n, start + 11 * MINUTE - 25_000).await;
    assert_eq!(fired.started.len(), 3, "{fired:?}");
}

fn schedule_time(instant: u64) -> String {
    baton_core::schedule::scheduled_time(instant)
}

#[tokio::test]
async fn overlap_skip_waits_for_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let start = at("2026-01-01T00:00:30Z");
    let clock = Arc::new(ManualClock::new(start));
    let n = node(&dir.path().join("baton.db"), &clock);
    deploy(&n, &definition("o", "  m: { cron: '* * * * *' }\n"), start).await;
    look(&n, start).await;
    let first = look(&n, start + MINUTE).await;
    assert_eq!(first.started, ["o-m-2026-01-01T00:01:00Z"]);
    // The first still waits: the next two instants are skipped.
    let second = look(&n, start + 2 * MINUTE).await;
    assert_eq!(second.started, Vec::<String>::new());
    assert_eq!(second.skipped, ["o-m-2026-01-01T00:02:00Z"]);
    look(&n, start + 3 * MINUTE).await;
    let state = &positions(n.coordinator.backend()).unwrap()[0];
    assert_eq!(state.skipped, 2);
    assert_eq!(
        state.last_execution.as_deref(),
        Some("o-m-2026-01-01T00:01:00Z")
    );
    // Once it has finished, the next instant starts.
    n.coordinator
        .handle(
            "o-m-2026-01-01T00:01:00Z",
            Event::CancelRequested { reason: None },
        )
        .await
        .expect("cancelled");
    let record = n
        .coordinator
        .backend()
        .load("o-m-2026-01-01T00:01:00Z")
        .await
        .unwrap()
        .unwrap();
    assert!(record.status().is_terminal(), "{:?}", record.status());
    let fourth = look(&n, start + 4 * MINUTE).await;
    assert_eq!(fourth.started, ["o-m-2026-01-01T00:04:00Z"]);
    assert_eq!(ids(&n).await.len(), 2);
    let status = n
        .coordinator
        .backend()
        .load("o-m-2026-01-01T00:04:00Z")
        .await
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(status, ExecutionStatus::Running);
}

#[tokio::test]
async fn disabled_schedules_do_not_fire_and_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let start = at("2026-01-01T00:00:30Z");
    let clock = Arc::new(ManualClock::new(start));
    let n = node(&dir.path().join("baton.db"), &clock);
    let on = definition("d", "  m: { cron: '* * * * *', overlap: allow }\n");
    let off = definition(
        "d",
        "  m: { cron: '* * * * *', overlap: allow, enabled: false }\n",
    );
    deploy(&n, &on, start).await;
    look(&n, start).await;
    deploy(&n, &off, start).await;
    assert_eq!(look(&n, start + 5 * MINUTE).await, Fired::default());
    assert!(positions(n.coordinator.backend()).unwrap().is_empty());
    // Enabled again: from then on, not the minutes it was off.
    deploy(&n, &on, start).await;
    assert_eq!(look(&n, start + 10 * MINUTE).await, Fired::default());
    let fired = look(&n, start + 11 * MINUTE).await;
    assert_eq!(fired.started, ["d-m-2026-01-01T00:11:00Z"]);
}
