//! Group commit: transitions from every task of the process are written by
//! one thread, as many as are waiting in one transaction, so a burst of
//! results costs one disk sync instead of one each.
//!
//! A write may refuse (a version conflict) before it has written anything:
//! the others still commit. A write that fails on SQLite itself
//! ([`StoreError::Unavailable`], perhaps after some of its rows) rolls the
//! whole group back, and every caller in it gets an error it may retry. No
//! caller hears back before the transaction holding its write has committed
//! (with `synchronous=FULL`, reached the disk). Savepoints per write would
//! isolate failures further, but cost a statement journal on every page.
//!
//! Every write of the process goes through this thread, so no task of the
//! async runtime ever waits on SQLite itself (a busy database, a disk sync):
//! it waits, asynchronously, for its answer. The queue is bounded: when it is
//! full, callers wait for room instead of piling up writes without limit.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use baton_runtime::ports::{StoreError, StoreResult};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

/// Most writes one transaction takes, so a long queue still commits in steps.
const MAX_GROUP: usize = 256;

/// Writes that may wait for the writer; more make their callers wait for room.
const QUEUE_LIMIT: usize = 4 * MAX_GROUP;

/// One caller's write, waiting for a group.
pub(crate) trait GroupWrite: Send {
    /// Runs inside the group's transaction; false if SQLite failed under it.
    fn apply(&mut self, tx: &Transaction<'_>) -> bool;
    /// Answers the caller once the group's transaction committed or failed.
    fn finish(self: Box<Self>, committed: StoreResult<()>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> GroupWrite for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send,
{
    fn apply(&mut self, tx: &Transaction<'_>) -> bool {
        let result = match self.work.take() {
            Some(work) => work(tx),
            None => Err(StoreError::Unavailable("a write was applied twice".into())),
        };
        let ok = !matches!(result, Err(StoreError::Unavailable(_)));
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: StoreResult<()>) {
        let answer = match (self.result, committed) {
            // Its own failure stands whatever became of the others.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Unavailable("a write was not applied".into())),
        };
        // The caller may have gone (its future dropped); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// The handle callers queue writes on; the writer thread ends when it is dropped.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn GroupWrite>>,
    /// Dropped with the writer, which stops the checkpointer.
    _checkpoints: std_mpsc::Sender<()>,
}

/// How often the checkpointer copies committed pages from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

fn stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

impl Writer {
    /// Starts the writer on `conn` and a checkpointer on `checkpointer`, a
    /// second connection to the same file. Checkpoints run beside the
    /// writer instead of inside one of its commits (SQLite's automatic
    /// checkpoint), where copying pages and syncing the database file
    /// would hold up every transition waiting behind that commit.
    pub(crate) fn start(mut conn: Connection, checkpointer: Connection) -> StoreResult<Writer> {
        let cannot = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot start the database writer: {e}"))
        };
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(unavailable)?;
        let (jobs, mut queue) = mpsc::channel::<Box<dyn GroupWrite>>(QUEUE_LIMIT);
        std::thread::Builder::new()
            .name("baton-sqlite-writer".into())
            .spawn(move || run(&mut conn, &mut queue))
            .map_err(cannot)?;
        let (checkpoints, stop) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("baton-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    stop.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE never waits for the writer; what it cannot copy now, a later round will.
                    if let Err(e) =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "checkpoint skipped");
                    }
                }
            })
            .map_err(cannot)?;
        Ok(Writer {
            jobs,
            _checkpoints: checkpoints,
        })
    }

    /// Runs `work` in the next group's transaction and waits for it to
    /// commit. `work` must return any error but [`StoreError::Unavailable`]
    /// before it writes anything; `Unavailable` fails the whole group. Waits
    /// (asynchronously) for room when the queue is full.
    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Pending {
                work: Some(work),
                result: None,
                reply,
            }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(conn: &mut Connection, queue: &mut mpsc::Receiver<Box<dyn GroupWrite>>) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(job) = queue.try_recv()
        {
            group.push(job);
        }
        let committed = write_group(conn, &mut group);
        for job in group {
            job.finish(committed.clone());
        }
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn write_group(conn: &mut Connection, group: &mut [Box<dyn GroupWrite>]) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    for job in group.iter_mut() {
        // A panicking write fails its group instead of taking the writer thread down.
        let applied =
            std::panic::catch_unwind(AssertUnwindSafe(|| job.apply(&tx))).unwrap_or(false);
        if !applied {
            // Dropping the transaction rolls it back.
            return Err(StoreError::Unavailable(
                "a write failed in the database; its group was rolled back".into(),
            ));
        }
    }
    tx.commit().map_err(unavailable)
}
