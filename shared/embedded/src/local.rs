//! Tasks a worker leases to itself in the transaction that creates them.
//!
//! When a transition committed by this process dispatches a task that a
//! worker of this process runs and has room for, the task is written already
//! leased to that worker (as a receive would lease it) and handed over in
//! memory once the transaction has committed. The worker runs it at once
//! instead of finding it on its next poll, which saves a transaction and a
//! disk sync per step. The lease is in the database, so if the process dies
//! the task comes back to any worker when the lease runs out, exactly like a
//! received task.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use baton_core::Timestamp;
use baton_runtime::ports::LeasedTask;
use tokio::sync::Notify;

pub struct LocalQueue {
    /// The worker's functions (all when empty).
    functions: Vec<String>,
    capacity: usize,
    /// Tasks reserved, waiting or running their handler here.
    load: AtomicUsize,
    /// Tasks for this worker were left in the database for want of room:
    /// lease nothing here until a receive has taken them, so newer tasks do
    /// not overtake them.
    backlog: AtomicBool,
    closed: AtomicBool,
    /// Each with the time its lease runs out.
    waiting: Mutex<VecDeque<(LeasedTask, Timestamp)>>,
    ready: Notify,
}

impl LocalQueue {
    pub(crate) fn new(functions: Vec<String>, capacity: usize) -> LocalQueue {
        LocalQueue {
            functions,
            capacity: capacity.max(1),
            load: AtomicUsize::new(0),
            backlog: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waiting: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
        }
    }

    pub(crate) fn serves(&self, function: &str) -> bool {
        self.functions.is_empty() || self.functions.iter().any(|f| f == function)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes a place for a task about to be created, if there is room.
    pub(crate) fn try_reserve(&self) -> bool {
        if self.is_closed() || self.backlog.load(Ordering::Acquire) {
            return false;
        }
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load < self.capacity).then_some(load + 1)
            })
            .is_ok()
    }

    /// A task this worker runs was left in the database.
    pub(crate) fn left_behind(&self) {
        self.backlog.store(true, Ordering::Release);
    }

    /// A receive found fewer tasks than it had room for: nothing waits in the database any more.
    pub fn caught_up(&self) {
        self.backlog.store(false, Ordering::Release);
    }

    /// Gives back places that were reserved or held.
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                Some(load.saturating_sub(n))
            });
    }

    /// A task leased to this worker in a committed transaction, until
    /// `lease_until`: it holds a place until it has run.
    pub(crate) fn accept(&self, task: LeasedTask, lease_until: Timestamp) {
        self.load.fetch_add(1, Ordering::AcqRel);
        self.lock().push_back((task, lease_until));
        self.ready.notify_one();
    }

    /// The next task leased here, with the time its lease runs out.
    pub fn pop(&self) -> Option<(LeasedTask, Timestamp)> {
        self.lock().pop_front()
    }

    /// A task received from the database starts here: it holds a place.
    pub fn hold(&self) {
        self.load.fetch_add(1, Ordering::AcqRel);
    }

    /// A task's handler has finished: its place is free for the task its result dispatches.
    pub fn done(&self) {
        self.release(1);
    }

    /// Stops new tasks from being leased here (the worker is stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Resolves when a task was handed over.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(LeasedTask, Timestamp)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
