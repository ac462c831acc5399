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
//!
//! Nothing is dropped unapplied. A timer firing or a task result that fails
//! to apply for a reason a retry may fix (a busy database, I/O, executions
//! changing under us) is tried again, after a pause that grows and is
//! jittered so competing workers spread out: a timer stays due, and a result
//! is reported again while the task's lease is kept (so the step is not run
//! twice). One that no retry can fix (its execution is gone, its workflow or
//! state does not load) is moved to the dead letters with the error, the
//! execution and the timer or task (with the result it produced), for a
//! person to resolve and redrive.
//!
//! Commands a transition leaves for other executions (starting a child,
//! sending an event) are delivered by the process that committed it, right
//! after the commit. If that process died first they stay in the outbox:
//! every second or so a worker looks for entries older than a few seconds
//! and delivers them through [`Coordinator::recover`]; delivering twice is
//! harmless, and one that fails is tried again on the next pass.
//!
//! A lease extension that fails for a while does not stop the step: it is
//! retried. Only a lease that is truly lost (another worker received the
//! task) makes this worker give up the task, and even then its handler is
//! left to finish; its result is dropped, since the task's new owner reports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::engine::Outcome;
use baton_core::{ErrorInfo, Event, TaskKind, TimerId, Timestamp};
use baton_runtime::coordinator::{describe_ignored, task_is_current};
use baton_runtime::ports::{ExecutionStore, LeasedTask, StoreError, TaskQueue};
use baton_runtime::step::StepContext;
use baton_runtime::targets::Targets;
use baton_runtime::{Coordinator, CoordinatorError};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::local::LocalQueue;
use crate::store::SqliteBackend;

/// Tasks this worker may hold leased in memory, in multiples of its concurrency.
const LOCAL_ROUNDS: usize = 4;

/// Timers looked at in one round.
const TIMERS_PER_ROUND: usize = 256;

/// The first pause before trying a write again; it doubles on each failure.
const RETRY_FIRST: Duration = Duration::from_millis(20);

/// The longest pause between two tries of the same write.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a stopping worker keeps trying to record a result before it
/// leaves the task to be delivered again once its lease runs out.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A pause before try `attempt` (from 1) of something that failed: `first`
/// doubled on each failure up to [`RETRY_MAX`], half of it random, so that
/// workers retrying the same thing do not retry in step.
pub(crate) fn backoff(attempt: u32, first: Duration) -> Duration {
    let capped = doubled(attempt, first, RETRY_MAX);
    let half = capped / 2;
    half + random_below(capped - half)
}

/// `first` doubled on each failure before try `attempt` (from 1), at most `max`.
fn doubled(attempt: u32, first: Duration, max: Duration) -> Duration {
    first
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max)
}

/// Things that failed for a reason a retry may fix, by key: how many times
/// in a row, and when the next try may start.
#[derive(Default)]
struct Retries(Mutex<HashMap<String, (u32, Instant)>>);

impl Retries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        // The map only paces retries; a panic elsewhere cannot corrupt it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` failed and its pause has not passed yet.
    fn waiting(&self, key: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|(_, not_before)| Instant::now() < *not_before)
    }

    fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Counts one more failure of `key` and sets its pause from the count;
    /// returns the count and the pause.
    fn failed(&self, key: &str, pause: impl FnOnce(u32) -> Duration) -> (u32, Duration) {
        let mut retries = self.lock();
        let entry = retries
            .entry(key.to_string())
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        let pause = pause(entry.0);
        entry.1 = Instant::now() + pause;
        (entry.0, pause)
    }

    /// Forgets every key but those `keep` holds (the rest were done elsewhere, or are gone).
    fn keep_only(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|key, _| keep(key));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Whether the `n`th failure in a row is logged: the first, then every tenth.
fn noteworthy(n: u32) -> bool {
    n == 1 || n.is_multiple_of(10)
}

/// A random duration in `[0, limit)`.
fn random_below(limit: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let nanos = limit.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    // Each `RandomState` is seeded afresh: enough randomness for spreading retries.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    Duration::from_nanos(hasher.finish() % nanos)
}

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
    /// Set once the worker is asked to stop: retries give up after [`STOP_GRACE`].
    stopping: AtomicBool,
    /// Timers whose firing failed for a reason a retry may fix, by
    /// `execution/timer key`: how many times, and when to try again.
    timer_retries: Retries,
    /// When this worker last swept expired executions.
    swept_at: Mutex<Option<Instant>>,
    /// When this worker last looked for outbox entries left behind.
    outbox_at: Mutex<Option<Instant>>,
    /// Set while a delivery of outbox entries left behind runs.
    outbox_busy: Arc<AtomicBool>,
    /// Executions whose outbox entries failed to deliver: how many passes
    /// in a row, and when to try again (so they do not crowd out the rest).
    outbox_retries: Retries,
}

/// How often a worker sweeps executions whose retention has passed.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How often a worker looks for outbox entries left by a process that died
/// between committing a transition and delivering its commands.
const OUTBOX_EVERY: Duration = Duration::from_secs(1);

/// How old (milliseconds) an outbox entry is before a worker delivers it:
/// younger, the process that committed it is most likely delivering it.
const OUTBOX_AGE_MS: u64 = 5_000;

/// Executions whose outbox entries one pass delivers.
const OUTBOX_PER_PASS: usize = 16;

/// The longest pause before delivering an execution's outbox again after failures.
const OUTBOX_RETRY_MAX: Duration = Duration::from_secs(300);

/// Clears a flag when dropped, however the task holding it ends.
struct Clears(Arc<AtomicBool>);

impl Drop for Clears {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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

/// The lease of a task this worker runs, and whether it was lost: another
/// worker received the task once it ran out, and owns it now.
struct Lease<'a> {
    leased: &'a LeasedTask,
    lost: AtomicBool,
}

impl Lease<'_> {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }
}

/// What became of a due timer this round.
enum TimerFate {
    /// Applied, stale and removed, or dead-lettered.
    Done,
    /// Left due; the next round looks at it again.
    Stays,
    /// Left due after a failure a retry may fix: tried again after a backoff.
    Retry { unavailable: bool },
}

/// Why a write was not carried out.
enum Stop {
    /// The lease was lost, or the worker is stopping: the task is left to
    /// whoever receives it next.
    GaveUp,
    /// No retry can fix this.
    Failed(CoordinatorError),
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
            stopping: AtomicBool::new(false),
            timer_retries: Retries::default(),
            swept_at: Mutex::new(None),
            outbox_at: Mutex::new(None),
            outbox_busy: Arc::new(AtomicBool::new(false)),
            outbox_retries: Retries::default(),
        }
    }

    fn backend(&self) -> &SqliteBackend {
        self.coordinator.backend()
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Runs until `shutdown` turns true, then waits for tasks in flight.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), CoordinatorError> {
        let mut failures = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // A transient error (a busy database) must not stop the worker:
            // log it and try again after a pause that grows while it lasts.
            let busy = match self.clone().poll_once().await {
                Ok(busy) => {
                    failures = 0;
                    busy
                }
                Err(e) => {
                    failures += 1;
                    error!(error = %e, "worker round failed; retrying");
                    false
                }
            };
            if !busy {
                let pause = match failures {
                    0 => self.options.poll_interval,
                    n => backoff(n, self.options.poll_interval.max(RETRY_FIRST)),
                };
                let until = tokio::time::Instant::now() + pause;
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
        self.stopping.store(true, Ordering::Release);
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

    /// Deletes expired executions on the first round and every
    /// [`SWEEP_EVERY`] after, beside the rounds rather than in them (a
    /// large backlog would otherwise hold up the first one); a failure waits
    /// for the next time.
    fn sweep_now_and_then(self: &Arc<Self>) {
        {
            let mut swept_at = self.swept_at.lock().unwrap_or_else(|p| p.into_inner());
            if swept_at.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *swept_at = Some(Instant::now());
        }
        let worker = self.clone();
        tokio::spawn(async move {
            match worker
                .backend()
                .sweep_expired(worker.coordinator.now())
                .await
            {
                Ok(swept) if swept.executions > 0 => {
                    info!(
                        executions = swept.executions,
                        history = swept.history,
                        "expired executions swept"
                    );
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "expired executions not swept; trying again later"),
            }
        });
    }

    /// Delivers outbox entries left behind (see [`OUTBOX_AGE_MS`]) every
    /// [`OUTBOX_EVERY`], beside the rounds rather than in them (a delivery
    /// writes other executions, and may wait on a busy database); one pass
    /// at a time. What fails stays in the outbox for the next pass.
    fn deliver_outbox_now_and_then(self: &Arc<Self>) {
        {
            let mut outbox_at = self.outbox_at.lock().unwrap_or_else(|p| p.into_inner());
            if outbox_at.is_some_and(|at| at.elapsed() < OUTBOX_EVERY) {
                return;
            }
            if self.outbox_busy.swap(true, Ordering::AcqRel) {
                return;
            }
            *outbox_at = Some(Instant::now());
        }
        let busy = Clears(self.outbox_busy.clone());
        let worker = self.clone();
        tokio::spawn(async move {
            let _busy = busy;
            worker.deliver_left_outbox().await;
        });
    }

    /// One pass over the outbox entries left behind, oldest first; returns
    /// how many it delivered. An execution whose delivery failed is tried
    /// again on a later pass, after a pause that grows while it keeps
    /// failing, so that a few that cannot be delivered yet do not hold up
    /// the others.
    async fn deliver_left_outbox(&self) -> usize {
        let before = self.coordinator.now().saturating_sub(OUTBOX_AGE_MS);
        let waiting = self.outbox_retries.len();
        let ids = match self
            .backend()
            .stale_outbox(before, OUTBOX_PER_PASS + waiting)
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "outbox not read; trying again on the next pass");
                return 0;
            }
        };
        // Forget executions whose entries are gone (delivered by another process, or swept).
        self.outbox_retries
            .keep_only(|id| ids.iter().any(|i| i == id));
        let mut delivered = 0;
        let mut tried = 0;
        for id in ids {
            if tried == OUTBOX_PER_PASS {
                break;
            }
            if self.outbox_retries.waiting(&id) {
                continue;
            }
            tried += 1;
            match self.coordinator.recover(&id).await {
                Ok(entries) => {
                    self.outbox_retries.succeeded(&id);
                    debug!(workflow.execution.id = %id, entries, "outbox entries left behind delivered");
                    delivered += entries;
                }
                Err(e) => {
                    let (failures, pause) = self
                        .outbox_retries
                        .failed(&id, |n| doubled(n, OUTBOX_EVERY, OUTBOX_RETRY_MAX));
                    if noteworthy(failures) {
                        warn!(
                            workflow.execution.id = %id,
                            error = %e,
                            retryable = e.is_retryable(),
                            failures,
                            retry_in_ms = pause.as_millis() as u64,
                            "outbox entries left behind not delivered; trying again later"
                        );
                    }
                }
            }
        }
        delivered
    }

    /// One round: fire due timers and start as many tasks as there are free
    /// slots. Returns whether it found any work.
    pub async fn poll_once(self: Arc<Self>) -> Result<bool, CoordinatorError> {
        let fired = self.fire_timers().await? + crate::schedules::tick(&self.coordinator).await;
        self.sweep_now_and_then();
        self.deliver_outbox_now_and_then();
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

    /// Fires the due timers; returns how many it applied, found stale or
    /// dead-lettered. A timer whose firing failed for a reason a retry may
    /// fix stays due and is tried again after its backoff.
    async fn fire_timers(&self) -> Result<usize, CoordinatorError> {
        let now = self.coordinator.now();
        let due = self.backend().due_timers(now, TIMERS_PER_ROUND).await?;
        let keys: Vec<String> = due
            .iter()
            .map(|(execution_id, timer)| format!("{execution_id}/{}", timer.key()))
            .collect();
        let mut done = 0;
        for ((execution_id, timer), key) in due.iter().zip(&keys) {
            if self.timer_retries.waiting(key) {
                continue;
            }
            let span =
                info_span!("timer", workflow.execution.id = %execution_id, timer = %timer.key());
            match self
                .fire_timer(execution_id, timer, now)
                .instrument(span)
                .await
            {
                TimerFate::Done => {
                    self.timer_retries.succeeded(key);
                    done += 1;
                }
                TimerFate::Stays => {}
                TimerFate::Retry { unavailable } => {
                    self.timer_retries.failed(key, |n| backoff(n, RETRY_FIRST));
                    if unavailable {
                        // The database is not answering: leave the rest for the next round.
                        break;
                    }
                }
            }
        }
        // Forget timers no longer due (fired by another worker, or gone).
        let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
        self.timer_retries.keep_only(|key| keys.contains(key));
        Ok(done)
    }

    async fn fire_timer(&self, execution_id: &str, timer: &TimerId, now: Timestamp) -> TimerFate {
        let fired = self
            .coordinator
            .handle(
                execution_id,
                Event::TimerFired {
                    timer: timer.clone(),
                },
            )
            .await;
        match fired {
            // The transition that applied the firing deleted the timer row.
            Ok(Outcome::Applied) => TimerFate::Done,
            // The firing no longer matters: the timer has done its work.
            Ok(Outcome::Ignored(reason)) => {
                debug!(reason = %describe_ignored(&reason), "timer ignored");
                match self.backend().delete_timer(execution_id, timer).await {
                    Ok(()) => TimerFate::Done,
                    Err(e) => {
                        // It fires again next round, and is ignored again.
                        warn!(error = %e, "stale timer not removed yet");
                        TimerFate::Stays
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "timer not fired yet; it stays due and is tried again");
                TimerFate::Retry {
                    unavailable: matches!(e, CoordinatorError::Store(StoreError::Unavailable(_))),
                }
            }
            Err(e) => {
                let reason = format!(
                    "timer `{}` of execution `{execution_id}` cannot be applied: {e}",
                    timer.key()
                );
                match self
                    .backend()
                    .dead_letter_timer(execution_id, timer, reason, now)
                    .await
                {
                    Ok(()) => {
                        error!(error = %e, "timer cannot be applied; dead-lettered for a person to resolve");
                        TimerFate::Done
                    }
                    Err(dead) => {
                        warn!(error = %e, dead_letter_error = %dead, "timer cannot be applied and is not dead-lettered yet; it stays due");
                        TimerFate::Retry {
                            unavailable: matches!(dead, StoreError::Unavailable(_)),
                        }
                    }
                }
            }
        }
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
            let lease = Lease {
                leased: &leased,
                lost: AtomicBool::new(false),
            };
            self.run_task_inner(&lease, leased_here, &mut place).await;
        }
        .instrument(span)
        .await
    }

    /// How often a running task's lease is extended.
    fn extend_every(&self) -> Duration {
        Duration::from_millis((self.backend().options().visibility_ms / 3).max(10))
    }

    /// Runs `work` while extending the task's lease, so a slow task is not
    /// handed to another worker; only a worker that dies lets its lease run
    /// out. `work` always runs to the end: a lease that cannot be extended
    /// for a while is retried, and one that is lost is marked so.
    async fn keeping_lease<T>(
        &self,
        lease: &Lease<'_>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let keep = self.keep_lease(lease);
        tokio::pin!(work);
        tokio::pin!(keep);
        tokio::select! {
            biased;
            result = &mut work => result,
            never = &mut keep => match never {},
        }
    }

    /// Extends the lease every [`Self::extend_every`], retrying an
    /// extension that fails after a short backoff, until it is lost.
    async fn keep_lease(&self, lease: &Lease<'_>) -> std::convert::Infallible {
        let every = self.extend_every();
        let mut failures = 0;
        loop {
            let pause = match failures {
                0 => every,
                n => backoff(n, RETRY_FIRST).min(every),
            };
            tokio::time::sleep(pause).await;
            let now = self.coordinator.now();
            match self
                .backend()
                .extend_lease(&lease.leased.receipt, now)
                .await
            {
                Ok(true) => failures = 0,
                Ok(false) => {
                    lease.lose();
                    warn!(
                        "lease lost while the task ran: another worker received it and owns its result"
                    );
                    return std::future::pending().await;
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    if noteworthy(failures) {
                        warn!(error = %e, failures, "lease not extended yet; retrying while the task runs");
                    }
                }
                Err(e) => {
                    lease.lose();
                    error!(error = %e, "lease cannot be extended; the task will be delivered again");
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Runs `op` until it succeeds or fails for good, pausing (with backoff)
    /// after each failure a retry may fix. Gives up when the lease is lost,
    /// or once the worker is stopping and [`STOP_GRACE`] has passed.
    async fn persist<T, F, Fut>(&self, lease: &Lease<'_>, what: &str, mut op: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CoordinatorError>>,
    {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            if lease.is_lost() {
                return Err(Stop::GaveUp);
            }
            match op().await {
                Ok(value) => {
                    if tries > 0 {
                        info!(tries = tries + 1, "{what}: done after retrying");
                    }
                    return Ok(value);
                }
                Err(e) if e.is_retryable() => {
                    tries += 1;
                    if self.is_stopping() && started.elapsed() >= STOP_GRACE {
                        warn!(error = %e, tries, "{what}: the worker is stopping; the task will be delivered again once its lease runs out");
                        return Err(Stop::GaveUp);
                    }
                    let pause = backoff(tries, RETRY_FIRST);
                    if noteworthy(tries) {
                        warn!(error = %e, tries, retry_in_ms = pause.as_millis() as u64, "{what}: not done yet; retrying");
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(Stop::Failed(e)),
            }
        }
    }

    /// Renews the lease of a task that waited here for a slot; false if it
    /// was lost meanwhile (or could not be renewed before the worker stopped).
    async fn renew(&self, lease: &Lease<'_>) -> bool {
        let backend = self.backend();
        let receipt = &lease.leased.receipt;
        let coordinator = &self.coordinator;
        let renewed = self
            .persist(lease, "renewing the task's lease", move || async move {
                Ok(backend.extend_lease(receipt, coordinator.now()).await?)
            })
            .await;
        match renewed {
            Ok(kept) => kept,
            Err(Stop::GaveUp) => false,
            Err(Stop::Failed(e)) => {
                error!(error = %e, "lease cannot be renewed; the task will be delivered again");
                false
            }
        }
    }

    async fn run_task_inner(
        &self,
        lease: &Lease<'_>,
        leased_here: Option<Timestamp>,
        place: &mut Place<'_>,
    ) {
        let leased = lease.leased;
        let task = &leased.task;
        if leased.receive_count > 1 {
            warn!(
                receive_count = leased.receive_count,
                "task received again: an earlier receive did not finish (its worker may have died)"
            );
        }
        match leased_here {
            // Created by a transition just committed, so current; unless it
            // waited here long enough for its lease to need renewing.
            Some(until) => {
                let now = self.coordinator.now();
                if now + self.backend().options().visibility_ms / 2 >= until
                    && !self.renew(lease).await
                {
                    debug!("lease ran out while the task waited; another worker has it");
                    return;
                }
            }
            None => {
                let backend = self.backend();
                let id = &*task.execution_id;
                let loaded = self
                    .keeping_lease(
                        lease,
                        self.persist(lease, "loading the task's execution", move || async move {
                            Ok(backend.load(id).await?)
                        }),
                    )
                    .await;
                match loaded {
                    Ok(Some(record)) if task_is_current(&record.state, &task.task) => {}
                    Ok(Some(_)) => {
                        debug!("task superseded or already reported; dropping it");
                        self.ack(lease).await;
                        return;
                    }
                    Ok(None) => {
                        let reason = format!(
                            "task for step `{}` of execution `{}`: the execution does not exist",
                            task.task.step, task.execution_id
                        );
                        self.dead_letter(lease, reason, None).await;
                        return;
                    }
                    Err(Stop::GaveUp) => return,
                    Err(Stop::Failed(e)) => {
                        let reason = format!(
                            "task for step `{}` of execution `{}` cannot be run: {e}",
                            task.task.step, task.execution_id
                        );
                        self.dead_letter(lease, reason, None).await;
                        return;
                    }
                }
            }
        }
        let context = StepContext::of(task);
        let remaining = task.deadline.saturating_sub(self.coordinator.now()).max(1);
        let work = self.targets.invoke(
            context,
            task.input.clone(),
            Duration::from_millis(remaining),
        );
        let result = self.keeping_lease(lease, work).await;
        place.free();
        if lease.is_lost() {
            warn!(
                "the task finished after its lease was lost; its result is dropped, as the worker that received it reports"
            );
            return;
        }
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
        self.keeping_lease(lease, self.report(lease, event)).await;
    }

    /// Records a task's result, retrying while a retry may help; the
    /// transition that records it removes the task. A result the execution
    /// ignores (a duplicate, a superseded attempt) acks the task; one that
    /// cannot ever be recorded dead-letters it, with the result.
    async fn report(&self, lease: &Lease<'_>, event: Event) {
        let coordinator = &self.coordinator;
        let id = &*lease.leased.task.execution_id;
        let result = &event;
        let recorded = self
            .persist(lease, "recording the task's result", move || {
                coordinator.handle(id, result.clone())
            })
            .await;
        match recorded {
            // The transition that recorded the result deleted the task row.
            Ok(Outcome::Applied) => {}
            Ok(Outcome::Ignored(reason)) => {
                debug!(reason = %describe_ignored(&reason), "result ignored");
                self.ack(lease).await;
            }
            Err(Stop::GaveUp) => {}
            Err(Stop::Failed(e)) => {
                let task = &lease.leased.task;
                let reason = format!(
                    "the result of step `{}` attempt {} of execution `{}` cannot be recorded: {e}",
                    task.task.step, task.task.attempt, task.execution_id
                );
                self.dead_letter(lease, reason, Some(&event)).await;
            }
        }
    }

    /// Deletes a task that has nothing left to do.
    async fn ack(&self, lease: &Lease<'_>) {
        let backend = self.backend();
        let leased = lease.leased;
        let acked = self
            .persist(lease, "acknowledging the task", move || async move {
                Ok(backend.ack(leased).await?)
            })
            .await;
        if let Err(Stop::Failed(e)) = acked {
            warn!(error = %e, "task not acknowledged; it is delivered again once its lease runs out, and dropped then");
        }
    }

    /// Moves a task that cannot be applied to the dead letters.
    async fn dead_letter(&self, lease: &Lease<'_>, reason: String, result: Option<&Event>) {
        let backend = self.backend();
        let leased = lease.leased;
        let now = self.coordinator.now();
        let reason = &reason;
        let moved = self
            .persist(lease, "dead-lettering the task", move || async move {
                Ok(backend
                    .dead_letter_task(leased, reason.clone(), result, now)
                    .await?)
            })
            .await;
        match moved {
            Ok(true) => {
                error!(reason = %reason, "task cannot be applied; dead-lettered for a person to resolve")
            }
            Ok(false) => debug!("task dead-lettered or taken by another worker meanwhile"),
            Err(Stop::GaveUp) => {}
            Err(Stop::Failed(e)) => {
                error!(error = %e, reason = %reason, "task cannot be applied nor dead-lettered; it is delivered again once its lease runs out")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let first = Duration::from_millis(20);
        for attempt in 1..40 {
            let full = first
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(RETRY_MAX);
            let pause = backoff(attempt, first);
            assert!(
                pause >= full / 2 && pause <= full,
                "{attempt}: {pause:?} of {full:?}"
            );
        }
        let pauses: HashSet<Duration> = (0..20).map(|_| backoff(6, first)).collect();
        assert!(pauses.len() > 1, "retries are spread out");
    }
}
