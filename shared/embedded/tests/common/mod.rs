//! What the worker tests share: a backend on a file, workflows, a worker
//! running in the background, and a second connection that locks the
//! database the way another process would.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::definition::Format;
use baton_core::{ExecutionStatus, Workflow};
use baton_embedded::{SqliteBackend, SqliteOptions, Worker, WorkerOptions};
use baton_runtime::ports::{ExecutionStore, WorkflowStore};
use baton_runtime::step::Registry;
use baton_runtime::targets::{Targets, TargetsConfig};
use baton_runtime::{Coordinator, SystemClock};
use tokio::sync::watch;

pub type Node = Arc<Coordinator<SqliteBackend>>;

pub fn open(path: &Path, options: SqliteOptions) -> Node {
    let backend = SqliteBackend::open(path, options).expect("open the database");
    Arc::new(Coordinator::new(Arc::new(backend), Arc::new(SystemClock)))
}

pub async fn deploy(node: &Node, yaml: &str) {
    let workflow = Workflow::from_text(yaml, Format::Yaml).expect("a valid definition");
    node.backend()
        .put_workflow(&workflow.definition, node.now())
        .await
        .expect("stored");
}

/// A worker running on its own task until the returned sender says stop.
pub struct Running {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

pub fn run_worker(node: &Node, registry: Registry) -> Running {
    let worker = Arc::new(Worker::new(
        node.clone(),
        Arc::new(Targets::new(registry, TargetsConfig::default())),
        WorkerOptions {
            poll_interval: Duration::from_millis(10),
            ..WorkerOptions::default()
        },
    ));
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(async move {
        worker.run(stopped).await.expect("the worker stops cleanly");
    });
    Running { stop, handle }
}

/// Waits for `check` to hold, up to `limit`; false if it never did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
}

pub async fn status(node: &Node, id: &str) -> Option<ExecutionStatus> {
    node.backend()
        .load(id)
        .await
        .ok()
        .flatten()
        .map(|record| record.status())
}

/// A connection of its own, as another process would have.
pub fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open a second connection");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Takes the database's write lock on another connection, holds it for
/// `hold`, then commits. Returns once the lock is held, with the thread
/// that lets it go.
pub fn lock_database(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let (locked, is_locked) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    let holder = std::thread::spawn(move || {
        let conn = raw(&path);
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        locked.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").expect("let the write lock go");
    });
    is_locked.recv().expect("the lock was taken");
    holder
}
