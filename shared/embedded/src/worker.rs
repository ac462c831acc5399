//! The embedded worker: one loop that fires due timers, leases tasks, runs
//! them on their targets and reports each result through the coordinator.
//!
//! Any number of workers, in one process or many, may share a database:
//! transitions are versioned, timers fire at least once and a stale firing is
//! ignored by the engine, and a task is leased to one worker at a time.
//!
//! A task that a transition of this process dispatches is leased to this
//! worker in that transition's own transaction when it has room (see
//! [`crate::local`]), and the slot that reported the result runs it next:
//! one transaction per step instead of a result and a receive.

use std::sync::Arc;
use std::time::Duration;

use baton_core::engine::Outcome;
use baton_core::{ErrorInfo, Event, TaskKind, Timestamp};
use baton_runtime::coordinator::{describe_ignored, task_is_current};
use baton_runtime::ports::{ExecutionStore, LeasedTask, TaskQueue};
use baton_runtime::step::StepContext;
use baton_runtime::targets::Targets;
use baton_runtime::{Coordinator, CoordinatorError};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, debug, error, info_span, warn};

use crate::local::LocalQueue;
use crate::store::SqliteBackend;

/// Tasks this worker may hold leased in memory, in multiples of its concurrency.
const LOCAL_ROUNDS: usize = 4;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Tasks run at once by this worker.
    pub concurrency: usize,
    /// Pause between polls when there is nothing to do.
    pub poll_interval: Duration,
    /// Only run these functions (all when empty).
    pub functions: Vec<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 16,
            poll_interval: Duration::from_millis(20),
            functions: Vec::new(),
        }
    }
}

pub struct Worker {
    coordinator: Arc<Coordinator<SqliteBackend>>,
    targets: Arc<Targets>,
    options: WorkerOptions,
    slots: Arc<Semaphore>,
    /// Woken when a task of ours reports, since its transition usually queued more work.
    wake: Notify,
    /// Tasks leased to this worker by the transitions that created them.
    local: Arc<LocalQueue>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.local.close();
    }
}

/// A task's place in the worker's local capacity, freed once its handler has
/// finished (so the transition recording its result can lease the next task
/// to this worker) or when the task is given up.
struct Place<'a> {
    local: &'a LocalQueue,
    held: bool,
}

impl Place<'_> {
    fn free(&mut self) {
        if std::mem::take(&mut self.held) {
            self.local.done();
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.free();
    }
}

impl Worker {
    pub fn new(
        coordinator: Arc<Coordinator<SqliteBackend>>,
        targets: Arc<Targets>,
        options: WorkerOptions,
    ) -> Worker {
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        // Tasks waiting here for a slot cost only memory, and their leases
        // are renewed if they wait long: take a few rounds' worth.
        let local = coordinator.backend().attach_local(
            options.functions.clone(),
            options.concurrency.max(1) * LOCAL_ROUNDS,
        );
        Worker {
            coordinator,
            targets,
            options,
            slots,
            wake: Notify::new(),
            local,
        }
    }

    fn backend(&self) -> &SqliteBackend {
        self.coordinator.backend()
    }

    /// Runs until `shutdown` turns true, then waits for tasks in flight.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), CoordinatorError> {
        loop {
            if *shutdown.borrow() {
                break;
            }
            // A transient error (a busy database) must not stop the worker:
            // log it and try again after the poll interval.
            let busy = match self.clone().poll_once().await {
                Ok(busy) => busy,
                Err(e) => {
                    error!(error = %e, "worker round failed; retrying");
                    false
                }
            };
            if !busy {
                let until = tokio::time::Instant::now() + self.options.poll_interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = self.wake.notified() => break,
                        _ = shutdown.changed() => break,
                        // Tasks handed over need only a slot, not a whole round.
                        _ = self.local.ready() => {
                            self.clone().start_local();
                        }
                    }
                }
            }
        }
        // Lease nothing more; run what is already leased here rather than
        // leave it to wait out its lease.
        self.local.close();
        while let Some((task, until)) = self.local.pop() {
            let permit = self.slot().await;
            self.clone().spawn_run(task, Some(until), permit);
        }
        // Every slot back means every task in flight has reported.
        let _all = self
            .slots
            .acquire_many(self.options.concurrency.max(1) as u32)
            .await;
        Ok(())
    }

    /// Runs a task in its own slot, then whatever its result leased to this
    /// worker, until nothing is left for the slot.
    fn spawn_run(
        self: Arc<Self>,
        task: LeasedTask,
        leased_here: Option<Timestamp>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        tokio::spawn(async move {
            let mut next = Some((task, leased_here));
            while let Some((task, leased_here)) = next.take() {
                self.run_task(task, leased_here).await;
                next = self.local.pop().map(|(t, until)| (t, Some(until)));
            }
            drop(permit);
            self.wake.notify_one();
        });
    }

    /// One round: fire due timers and start as many tasks as there are free
    /// slots. Returns whether it found any work.
    pub async fn poll_once(self: Arc<Self>) -> Result<bool, CoordinatorError> {
        let fired = self.fire_timers().await? + crate::schedules::tick(&self.coordinator).await;
        // Tasks already leased here first: they wait for nothing but a slot.
        let mut started = self.clone().start_local();
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(fired > 0 || started > 0);
        }
        let now = self.coordinator.now();
        let leased = self
            .backend()
            .receive(&self.options.functions, free, 0, now)
            .await?;
        started += leased.len();
        if leased.len() < free {
            self.local.caught_up();
        }
        for task in leased {
            let permit = self.slot().await;
            self.local.hold();
            self.clone().spawn_run(task, None, permit);
        }
        Ok(fired > 0 || started > 0)
    }

    /// A task slot, once one is free.
    async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the worker never closes its semaphore")
    }

    /// Starts tasks leased here while there are free slots; returns how many.
    fn start_local(self: Arc<Self>) -> usize {
        let mut started = 0;
        while let Ok(permit) = self.slots.clone().try_acquire_owned() {
            let Some((task, until)) = self.local.pop() else {
                break;
            };
            self.clone().spawn_run(task, Some(until), permit);
            started += 1;
        }
        started
    }

    async fn fire_timers(&self) -> Result<usize, CoordinatorError> {
        let now = self.coordinator.now();
        let due = self.backend().due_timers(now, 256)?;
        for (execution_id, timer) in &due {
            match self
                .coordinator
                .handle(
                    execution_id,
                    Event::TimerFired {
                        timer: timer.clone(),
                    },
                )
                .await
            {
                // The transition that applied the firing deleted the timer row.
                Ok(Outcome::Applied) => continue,
                Ok(Outcome::Ignored(_)) => {}
                Err(CoordinatorError::NotFound(_)) => {}
                Err(e) if e.is_retryable() => {
                    // Leave the timer; the next round fires it again.
                    warn!(workflow.execution.id = %execution_id, error = %e, "timer not fired yet");
                    continue;
                }
                Err(e) => {
                    error!(workflow.execution.id = %execution_id, error = %e, "timer could not be applied; dropping it")
                }
            }
            self.backend().delete_timer(execution_id, timer)?;
        }
        Ok(due.len())
    }

    /// Runs one task; `leased_here` is its lease's end when this worker
    /// leased it in the transaction that created it.
    async fn run_task(&self, leased: LeasedTask, leased_here: Option<Timestamp>) {
        let task = &leased.task;
        let span = info_span!(
            "task",
            workflow.execution.id = %task.execution_id,
            workflow.step = %task.task.step,
            workflow.attempt = task.task.attempt,
            function = %task.function,
        );
        async {
            let mut place = Place {
                local: &self.local,
                held: true,
            };
            if let Err(e) = self.run_task_inner(&leased, leased_here, &mut place).await {
                warn!(error = %e, "task left for redelivery");
            }
        }
        .instrument(span)
        .await
    }

    /// Runs `work` while extending the task's lease, so a slow task is not
    /// handed to another worker; only a worker that dies lets its lease run out.
    async fn keeping_lease<T>(
        &self,
        leased: &LeasedTask,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, CoordinatorError> {
        let every = Duration::from_millis((self.backend().options().visibility_ms / 3).max(10));
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return Ok(result),
                _ = tokio::time::sleep(every) => {
                    if !self.backend().extend_lease(&leased.receipt, self.coordinator.now())? {
                        warn!("lease lost while the task ran; another worker may run it too");
                    }
                }
            }
        }
    }

    async fn run_task_inner(
        &self,
        leased: &LeasedTask,
        leased_here: Option<Timestamp>,
        place: &mut Place<'_>,
    ) -> Result<(), CoordinatorError> {
        let task = &leased.task;
        if leased.receive_count > 1 {
            warn!(
                receive_count = leased.receive_count,
                "task received again: an earlier receive did not finish (its worker may have died)"
            );
        }
        let current = match leased_here {
            // Created by a transition just committed, so current; unless it
            // waited here long enough for its lease to need renewing.
            Some(until) => {
                let now = self.coordinator.now();
                if now + self.backend().options().visibility_ms / 2 >= until
                    && !self.backend().extend_lease(&leased.receipt, now)?
                {
                    debug!("lease ran out while the task waited; another worker has it");
                    return Ok(());
                }
                true
            }
            None => self
                .backend()
                .load(&task.execution_id)
                .await?
                .is_some_and(|record| task_is_current(&record.state, &task.task)),
        };
        if !current {
            debug!("task superseded or already reported; dropping it");
            self.backend().ack(leased).await?;
            return Ok(());
        }
        let context = StepContext::of(task);
        let remaining = task.deadline.saturating_sub(self.coordinator.now()).max(1);
        let work = self.targets.invoke(
            context,
            task.input.clone(),
            Duration::from_millis(remaining),
        );
        let result = self.keeping_lease(leased, work).await?;
        place.free();
        let event = match result {
            Ok(output) => {
                let size = serde_json::to_vec(&output)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                let limit = self.coordinator.backend().options().payload_limit;
                if size > limit {
                    Event::TaskFailed {
                        task: task.task.clone(),
                        error: ErrorInfo::new(
                            "PayloadTooLarge",
                            format!("the output is {size} bytes, more than the {limit}-byte limit"),
                            false,
                        ),
                    }
                } else {
                    Event::TaskSucceeded {
                        task: task.task.clone(),
                        output,
                    }
                }
            }
            Err(e) if e.name == "Timeout" => Event::TaskTimedOut {
                task: task.task.clone(),
            },
            Err(e) => Event::TaskFailed {
                task: task.task.clone(),
                error: e.into_error_info(),
            },
        };
        if let Event::TaskFailed { error, .. } = &event {
            let what = match task.task.kind {
                TaskKind::Step => "step attempt failed",
                TaskKind::Compensation => "compensation attempt failed",
            };
            warn!(error.name = %error.name, error.message = %error.message, retryable = error.retryable, "{what}");
        }
        match self.coordinator.handle(&task.execution_id, event).await {
            Ok(Outcome::Ignored(reason)) => {
                debug!(reason = %describe_ignored(&reason), "result ignored")
            }
            // The transition that recorded the result deleted the task row.
            Ok(Outcome::Applied) => return Ok(()),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => error!(error = %e, "result could not be recorded"),
        }
        self.backend().ack(leased).await?;
        Ok(())
    }
}
