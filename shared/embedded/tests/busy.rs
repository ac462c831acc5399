//! The worker against a database another connection keeps locked for a
//! while (another process in a long write): a result is recorded once the
//! lock goes, a lease extension that meets the lock does not stop the step,
//! and the async runtime keeps running other tasks meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_core::{Event, ExecutionStatus};
use baton_embedded::SqliteOptions;
use baton_runtime::ports::{DeadLetterStore, ExecutionStore, WorkflowStore};
use baton_runtime::step::{Registry, handler_fn};
use common::{deploy, eventually, lock_database, open, run_worker, status};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

const ONE_STEP: &str = "name: one-step
defaults:
  retry: { max_attempts: 1 }
  timeout: 1m
steps:
  work: { function: work, mutates: false }
";

/// Statements give up on a lock after this long, so the lock's holder
/// makes them fail as busy rather than wait it out.
fn impatient(visibility_ms: u64) -> SqliteOptions {
    SqliteOptions {
        busy_timeout_ms: 50,
        visibility_ms,
        ..SqliteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_blocked_by_a_locked_database_is_recorded_once_the_lock_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    // A long lease: a result left for redelivery would not come back within the test.
    let node = open(&path, impatient(60_000));
    deploy(&node, ONE_STEP).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (finishing, mut finished) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let mut registry = Registry::new();
    let (counted, release) = (calls.clone(), go.clone());
    registry.register(
        "work",
        handler_fn(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            let finishing = finishing.clone();
            let release = release.clone();
            async move {
                let _ = finishing.send(());
                release.notified().await;
                Ok(json!({ "charged": true }))
            }
        }),
    );
    let worker = run_worker(&node, registry);
    node.start("one-step", None, "b-1", json!({}))
        .await
        .expect("started");
    finished.recv().await.expect("the step runs");
    // The step returns while another connection holds the write lock.
    let holder = lock_database(&path, Duration::from_millis(1_500));
    go.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&node, "b-1").await,
        Some(ExecutionStatus::Running),
        "nothing can be written while the lock is held"
    );
    let done = eventually(Duration::from_secs(10), || async {
        status(&node, "b-1").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    holder.join().unwrap();
    worker.stop().await;
    assert!(done, "the result was not recorded after the lock went");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the step ran once");
    let history = node.backend().history("b-1").await.unwrap();
    assert!(
        history.iter().any(|entry| matches!(
            &entry.event,
            Event::TaskSucceeded { output, .. } if output == &json!({ "charged": true })
        )),
        "{history:#?}"
    );
    assert!(node.backend().list_dead_letters().await.unwrap().is_empty());
    assert_eq!(node.backend().queue_depths().unwrap(), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_extension_that_meets_a_locked_database_does_not_stop_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    // The lease is extended every 500 ms.
    let node = open(&path, impatient(1_500));
    deploy(&node, ONE_STEP).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (started, mut running) = mpsc::unbounded_channel();
    let mut registry = Registry::new();
    let (counted, ended) = (calls.clone(), finished.clone());
    registry.register(
        "work",
        handler_fn(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            let started = started.clone();
            let ended = ended.clone();
            async move {
                let _ = started.send(());
                // Past several extensions, the first ones while the lock is held.
                tokio::time::sleep(Duration::from_millis(2_000)).await;
                ended.fetch_add(1, Ordering::SeqCst);
                Ok(json!({ "shipped": true }))
            }
        }),
    );
    let worker = run_worker(&node, registry);
    node.start("one-step", None, "l-1", json!({}))
        .await
        .expect("started");
    running.recv().await.expect("the step runs");
    let holder = lock_database(&path, Duration::from_millis(800));
    let done = eventually(Duration::from_secs(10), || async {
        status(&node, "l-1").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    holder.join().unwrap();
    worker.stop().await;
    assert!(done, "the execution did not finish");
    assert_eq!(
        (
            calls.load(Ordering::SeqCst),
            finished.load(Ordering::SeqCst)
        ),
        (1, 1),
        "the step ran once, to its end"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_runtime_keeps_running_while_the_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    // The default busy timeout: writes wait the lock out.
    let node = open(&path, SqliteOptions::default());
    deploy(&node, ONE_STEP).await;
    let mut registry = Registry::new();
    registry.register("work", handler_fn(|_, _| async { Ok(json!({})) }));
    let worker = run_worker(&node, registry);

    let ticks = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                ticks.lock().unwrap().push(Instant::now());
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hold = Duration::from_millis(1_000);
    let locked_at = Instant::now();
    let holder = lock_database(&path, hold);
    // Writes that must wait for the lock: a start, a deploy, the worker's rounds.
    let start = {
        let node = node.clone();
        tokio::spawn(async move { node.start("one-step", None, "t-1", json!({})).await })
    };
    let redeploy = {
        let node = node.clone();
        tokio::spawn(async move {
            let workflow = baton_core::Workflow::from_text(
                &ONE_STEP.replace("one-step", "other"),
                baton_core::definition::Format::Yaml,
            )
            .unwrap();
            node.backend()
                .put_workflow(&workflow.definition, node.now())
                .await
        })
    };
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    let started = start.await.unwrap().expect("started once the lock went");
    redeploy
        .await
        .unwrap()
        .expect("deployed once the lock went");
    assert!(started.created);
    let done = eventually(Duration::from_secs(10), || async {
        status(&node, "t-1").await == Some(ExecutionStatus::Succeeded)
    })
    .await;
    ticker.abort();
    // Joined off the runtime's thread, which must not block.
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    worker.stop().await;
    assert!(done);

    let ticks = ticks.lock().unwrap();
    let during: Vec<&Instant> = ticks
        .iter()
        .filter(|t| **t >= locked_at && **t <= locked_at + hold)
        .collect();
    let longest = ticks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        during.len() >= 20 && longest < Duration::from_millis(500),
        "the ticker ran {} times in the {hold:?} the lock was held; its longest pause was {longest:?}",
        during.len()
    );
}
