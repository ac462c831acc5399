//! Fault injection for tests (feature `testkit`).
//!
//! [`FaultyBackend`] wraps any backend and implements every port by
//! forwarding each call to it, unless its [`FaultPlan`] says to fail that
//! call. A plan is a list of rules, each naming an operation ([`Op`]), when it
//! fires ([`Trigger`]: the Nth call, or a seeded random fraction of calls) and
//! how it fails ([`FaultClass`]: throttled, access denied, not found,
//! validation, a timeout after the write succeeded, a version conflict).
//! Every fault injected is counted and logged with the execution it hit.
//!
//! Random decisions are a pure function of the plan's seed, the operation,
//! the rule and the call's number for that operation ([`splitmix64`]), so
//! the same seed makes the same decisions for the same sequence of calls.
//!
//! The tiers that use it (`shared/aws/tests/faults.rs`,
//! `shared/embedded/tests/faults.rs`) share [`sagas`], the workflows and
//! inputs they run, and [`audit`], the invariants they check afterwards.
//!
//! ```ignore
//! let plan = FaultPlan::new(seed)
//!     .fraction(Op::Commit, 0.05, FaultClass::TimeoutAfterWrite)
//!     .nth(Op::Load, 40, FaultClass::NotFound);
//! let backend = Arc::new(FaultyBackend::new(Arc::new(inner), plan));
//! let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
//! // ... drive executions ...
//! println!("{}", backend.counts());
//! backend.set_enabled(false); // then redrive and finish with faults off
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use baton_core::engine::Dispatch;
use baton_core::{Command, LifecycleEvent, TimerId, Timestamp, WorkflowDefinition};

use crate::ports::{
    Backend, Created, DeadLetterRecord, DeadLetterStore, EventSink, ExecutionPage, ExecutionRecord,
    ExecutionStore, HistoryEntry, LeasedTask, ListQuery, OutboxEntry, ScheduledTimer, StoreError,
    StoreResult, StoredWorkflow, TaskDispatcher, TaskQueue, TimerService, WorkflowStore,
};

/// One operation of the ports, as a plan names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    Load,
    Commit,
    PendingOutbox,
    ClearOutbox,
    History,
    List,
    PutWorkflow,
    GetWorkflow,
    ListWorkflows,
    Send,
    CheckFunctions,
    Receive,
    Ack,
    Schedule,
    Publish,
    PutDeadLetter,
    DeadLetterMessage,
    ListDeadLetters,
    GetDeadLetter,
    RemoveDeadLetter,
    RedriveDeadLetter,
}

impl Op {
    pub const ALL: [Op; 22] = [
        Op::Create,
        Op::Load,
        Op::Commit,
        Op::PendingOutbox,
        Op::ClearOutbox,
        Op::History,
        Op::List,
        Op::PutWorkflow,
        Op::GetWorkflow,
        Op::ListWorkflows,
        Op::Send,
        Op::CheckFunctions,
        Op::Receive,
        Op::Ack,
        Op::Schedule,
        Op::Publish,
        Op::PutDeadLetter,
        Op::DeadLetterMessage,
        Op::ListDeadLetters,
        Op::GetDeadLetter,
        Op::RemoveDeadLetter,
        Op::RedriveDeadLetter,
    ];

    /// What the coordinator calls while it moves executions (starts,
    /// events, delivery, recovery, dead-lettering a message): the operations
    /// a fault plan for a running system targets.
    pub const COORDINATOR: [Op; 11] = [
        Op::Create,
        Op::Load,
        Op::Commit,
        Op::PendingOutbox,
        Op::ClearOutbox,
        Op::GetWorkflow,
        Op::Send,
        Op::Schedule,
        Op::Publish,
        Op::PutDeadLetter,
        Op::DeadLetterMessage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Load => "load",
            Op::Commit => "commit",
            Op::PendingOutbox => "pending_outbox",
            Op::ClearOutbox => "clear_outbox",
            Op::History => "history",
            Op::List => "list",
            Op::PutWorkflow => "put_workflow",
            Op::GetWorkflow => "get_workflow",
            Op::ListWorkflows => "list_workflows",
            Op::Send => "send",
            Op::CheckFunctions => "check_functions",
            Op::Receive => "receive",
            Op::Ack => "ack",
            Op::Schedule => "schedule",
            Op::Publish => "publish",
            Op::PutDeadLetter => "put_dead_letter",
            Op::DeadLetterMessage => "dead_letter_message",
            Op::ListDeadLetters => "list_dead_letters",
            Op::GetDeadLetter => "get_dead_letter",
            Op::RemoveDeadLetter => "remove_dead_letter",
            Op::RedriveDeadLetter => "redrive_dead_letter",
        }
    }

    fn index(self) -> usize {
        Op::ALL
            .iter()
            .position(|&op| op == self)
            .expect("every op is in Op::ALL")
    }

    /// Whether the operation reads and writes nothing but the store's own
    /// records (so a missing resource or a refused request is permanent for
    /// the message that needed it), as opposed to delivering a command.
    pub fn is_store(self) -> bool {
        matches!(
            self,
            Op::Create
                | Op::Load
                | Op::Commit
                | Op::PendingOutbox
                | Op::ClearOutbox
                | Op::History
                | Op::List
                | Op::PutWorkflow
                | Op::GetWorkflow
                | Op::ListWorkflows
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an injected fault fails the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultClass {
    /// The service is busy: [`StoreError::Unavailable`]; the call did nothing.
    Throttled,
    /// The caller lacks permission: [`StoreError::Denied`]; the call did nothing.
    Denied,
    /// A resource is missing: [`StoreError::Rejected`] with code `ResourceNotFoundException`.
    NotFound,
    /// The request is refused as made: [`StoreError::Rejected`] with code `ValidationException`.
    Validation,
    /// The call is forwarded and succeeds, then the caller hears
    /// [`StoreError::Unavailable`] (a timeout after the write landed).
    TimeoutAfterWrite,
    /// Someone else committed first: [`StoreError::VersionConflict`] (on commit only).
    VersionConflict,
}

impl FaultClass {
    pub const ALL: [FaultClass; 6] = [
        FaultClass::Throttled,
        FaultClass::Denied,
        FaultClass::NotFound,
        FaultClass::Validation,
        FaultClass::TimeoutAfterWrite,
        FaultClass::VersionConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultClass::Throttled => "throttled",
            FaultClass::Denied => "denied",
            FaultClass::NotFound => "not_found",
            FaultClass::Validation => "validation",
            FaultClass::TimeoutAfterWrite => "timeout_after_write",
            FaultClass::VersionConflict => "version_conflict",
        }
    }

    /// Whether no retry of the same call can pass (the error is `Rejected`).
    pub fn is_permanent(self) -> bool {
        matches!(self, FaultClass::NotFound | FaultClass::Validation)
    }

    /// Whether the call is forwarded before the fault is reported.
    pub fn forwards(self) -> bool {
        self == FaultClass::TimeoutAfterWrite
    }

    /// The error this class reports for a call of `op` (on execution `id`).
    pub fn error(self, op: Op, id: Option<&str>) -> StoreError {
        let on = match id {
            Some(id) => format!("{op} of `{id}`"),
            None => op.to_string(),
        };
        match self {
            FaultClass::Throttled => StoreError::Unavailable(format!(
                "injected fault: ThrottlingException: rate of requests exceeded ({on})"
            )),
            FaultClass::Denied => StoreError::Denied(format!(
                "injected fault: AccessDeniedException: not authorized to perform {on}"
            )),
            FaultClass::NotFound => StoreError::Rejected {
                code: "ResourceNotFoundException".into(),
                message: format!("injected fault: requested resource not found ({on})"),
            },
            FaultClass::Validation => StoreError::Rejected {
                code: "ValidationException".into(),
                message: format!(
                    "injected fault: one or more parameter values were invalid ({on})"
                ),
            },
            FaultClass::TimeoutAfterWrite => StoreError::Unavailable(format!(
                "injected fault: timed out waiting for the response; the request was carried out ({on})"
            )),
            FaultClass::VersionConflict => StoreError::VersionConflict {
                id: id.unwrap_or_default().to_string(),
                expected: 0,
            },
        }
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// The Nth call of the operation (1 is the first), counted while the
    /// backend is enabled.
    Nth(u64),
    /// Each call with this probability (0.0 to 1.0), drawn from the plan's seed.
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub op: Op,
    pub trigger: Trigger,
    pub class: FaultClass,
    /// At most this many faults from this rule.
    pub limit: Option<u64>,
}

/// Which calls to fail and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    pub seed: u64,
    pub rules: Vec<Rule>,
}

impl FaultPlan {
    /// A plan with no rules: every call is forwarded.
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan {
            seed,
            rules: Vec::new(),
        }
    }

    /// Fails the `n`th call of `op` (1-based) with `class`.
    pub fn nth(self, op: Op, n: u64, class: FaultClass) -> FaultPlan {
        self.rule(op, Trigger::Nth(n), class)
    }

    /// Fails a seeded random `fraction` of the calls of `op` with `class`.
    pub fn fraction(self, op: Op, fraction: f64, class: FaultClass) -> FaultPlan {
        self.rule(op, Trigger::Fraction(fraction), class)
    }

    /// Adds a rule. Panics on a version conflict anywhere but commit, which
    /// no backend can report.
    pub fn rule(mut self, op: Op, trigger: Trigger, class: FaultClass) -> FaultPlan {
        assert!(
            class != FaultClass::VersionConflict || op == Op::Commit,
            "a version conflict is injected on commit only, not on {op}"
        );
        self.rules.push(Rule {
            op,
            trigger,
            class,
            limit: None,
        });
        self
    }

    /// Caps the number of faults the last rule added may inject.
    pub fn limit(mut self, max: u64) -> FaultPlan {
        if let Some(rule) = self.rules.last_mut() {
            rule.limit = Some(max);
        }
        self
    }

    /// A plan drawn from `seed`: every operation in `ops` fails a `rate`
    /// fraction of its calls, spread over the transient classes that fit it
    /// (throttled, denied, a timeout after the write, and a version conflict
    /// on commit); then `permanent` single faults (not found or validation)
    /// hit the Nth call of store operations in `ops`, with N drawn below
    /// `within`. Transient faults make messages come back; permanent ones make
    /// them dead-lettered.
    pub fn random(seed: u64, ops: &[Op], rate: f64, permanent: usize, within: u64) -> FaultPlan {
        let mut rng = SplitMix64::new(seed);
        let mut plan = FaultPlan::new(seed);
        for &op in ops {
            let mut classes = vec![
                FaultClass::Throttled,
                FaultClass::Denied,
                FaultClass::TimeoutAfterWrite,
            ];
            if op == Op::Commit {
                classes.push(FaultClass::VersionConflict);
            }
            let share = rate / classes.len() as f64;
            for class in classes {
                plan = plan.fraction(op, share, class);
            }
        }
        let store: Vec<Op> = ops.iter().copied().filter(|op| op.is_store()).collect();
        for _ in 0..permanent {
            if store.is_empty() {
                break;
            }
            let op = store[rng.below(store.len() as u64) as usize];
            let class = if rng.below(2) == 0 {
                FaultClass::NotFound
            } else {
                FaultClass::Validation
            };
            let n = 1 + rng.below(within.max(1));
            plan = plan.nth(op, n, class);
        }
        plan
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {:#018x}", self.seed)?;
        for rule in &self.rules {
            let when = match rule.trigger {
                Trigger::Nth(n) => format!("call {n}"),
                Trigger::Fraction(p) => format!("{:.1}%", p * 100.0),
            };
            write!(f, "; {} {} {}", rule.op, when, rule.class)?;
            if let Some(limit) = rule.limit {
                write!(f, " (at most {limit})")?;
            }
        }
        Ok(())
    }
}

/// The splitmix64 finaliser: a well-mixed 64-bit hash of `x`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator (splitmix64) for seeded test choices.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// One fault injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    pub op: Op,
    pub class: FaultClass,
    /// The call's number for its operation.
    pub call: u64,
    /// The execution the call was about, when it names one.
    pub execution_id: Option<String>,
}

/// Faults injected, per operation and class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts(pub BTreeMap<(Op, FaultClass), u64>);

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn by_class(&self) -> BTreeMap<FaultClass, u64> {
        let mut classes = BTreeMap::new();
        for (&(_, class), &n) in &self.0 {
            *classes.entry(class).or_default() += n;
        }
        classes
    }

    pub fn of_class(&self, class: FaultClass) -> u64 {
        self.by_class().get(&class).copied().unwrap_or(0)
    }

    /// Adds another count into this one.
    pub fn add(&mut self, other: &FaultCounts) {
        for (&key, &n) in &other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    /// `throttled 12, denied 9, ...`, every class listed.
    pub fn classes_line(&self) -> String {
        let by_class = self.by_class();
        FaultClass::ALL
            .iter()
            .map(|c| format!("{c} {}", by_class.get(c).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} faults ({})", self.total(), self.classes_line())?;
        for ((op, class), n) in &self.0 {
            write!(f, "\n  {op:<20} {class:<20} {n}")?;
        }
        Ok(())
    }
}

/// A backend that fails the calls its plan names and forwards the rest.
pub struct FaultyBackend<B> {
    inner: Arc<B>,
    plan: Mutex<FaultPlan>,
    enabled: AtomicBool,
    calls: [AtomicU64; Op::ALL.len()],
    fired: Mutex<Vec<u64>>,
    log: Mutex<Vec<InjectedFault>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B> FaultyBackend<B> {
    pub fn new(inner: Arc<B>, plan: FaultPlan) -> FaultyBackend<B> {
        let fired = vec![0; plan.rules.len()];
        FaultyBackend {
            inner,
            plan: Mutex::new(plan),
            enabled: AtomicBool::new(true),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            fired: Mutex::new(fired),
            log: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped backend, to look at what was really stored.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    pub fn plan(&self) -> FaultPlan {
        lock(&self.plan).clone()
    }

    /// Replaces the plan; counts of calls and faults so far are kept.
    pub fn set_plan(&self, plan: FaultPlan) {
        *lock(&self.fired) = vec![0; plan.rules.len()];
        *lock(&self.plan) = plan;
    }

    /// With faults off every call is forwarded (and not counted).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<InjectedFault> {
        lock(&self.log).clone()
    }

    pub fn counts(&self) -> FaultCounts {
        let mut counts = FaultCounts::default();
        for fault in lock(&self.log).iter() {
            *counts.0.entry((fault.op, fault.class)).or_default() += 1;
        }
        counts
    }

    /// Calls of `op` made while faults were on.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op.index()].load(Ordering::SeqCst)
    }

    /// The fault this call gets, if any.
    fn decide(&self, op: Op) -> Option<(FaultClass, u64)> {
        if !self.is_enabled() {
            return None;
        }
        let n = self.calls[op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        let plan = lock(&self.plan);
        let mut fired = lock(&self.fired);
        for (i, rule) in plan.rules.iter().enumerate() {
            if rule.op != op || rule.limit.is_some_and(|max| fired[i] >= max) {
                continue;
            }
            let fires = match rule.trigger {
                Trigger::Nth(k) => n == k,
                Trigger::Fraction(p) => {
                    // A stream per seed and rule, so that nearby seeds draw unrelated faults.
                    let stream = splitmix64(
                        splitmix64(plan.seed) ^ ((op.index() as u64 + 1) << 40 | (i as u64) << 8),
                    );
                    let draw = splitmix64(stream ^ n);
                    ((draw >> 11) as f64 / (1u64 << 53) as f64) < p
                }
            };
            if fires {
                fired[i] += 1;
                return Some((rule.class, n));
            }
        }
        None
    }

    fn record(&self, op: Op, class: FaultClass, call: u64, id: Option<&str>) {
        lock(&self.log).push(InjectedFault {
            op,
            class,
            call,
            execution_id: id.map(str::to_string),
        });
    }

    /// Runs `call` through the plan: forwarded, failed instead, or
    /// forwarded and then failed (a timeout after the write).
    async fn run<T>(
        &self,
        op: Op,
        id: Option<&str>,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let Some((class, n)) = self.decide(op) else {
            return call.await;
        };
        if class.forwards() {
            call.await?;
        }
        self.record(op, class, n, id);
        Err(class.error(op, id))
    }
}

impl<B: ExecutionStore> ExecutionStore for FaultyBackend<B> {
    async fn create(
        &self,
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Created> {
        let call = self.inner.create(record, history, outbox);
        self.run(Op::Create, Some(&record.id), call).await
    }

    async fn load(&self, id: &str) -> StoreResult<Option<ExecutionRecord>> {
        self.run(Op::Load, Some(id), self.inner.load(id)).await
    }

    async fn commit(
        &self,
        record: &ExecutionRecord,
        expected_version: u64,
        history: &[HistoryEntry],
        outbox: &[Command],
    ) -> StoreResult<Vec<OutboxEntry>> {
        let call = self.inner.commit(record, expected_version, history, outbox);
        match self.run(Op::Commit, Some(&record.id), call).await {
            Err(StoreError::VersionConflict { id, .. }) => Err(StoreError::VersionConflict {
                id,
                expected: expected_version,
            }),
            other => other,
        }
    }

    async fn pending_outbox(&self, id: &str) -> StoreResult<Vec<OutboxEntry>> {
        let call = self.inner.pending_outbox(id);
        self.run(Op::PendingOutbox, Some(id), call).await
    }

    async fn clear_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<()> {
        let id = entries.first().map(|e| e.execution_id.as_str());
        let call = self.inner.clear_outbox(entries);
        self.run(Op::ClearOutbox, id, call).await
    }

    async fn history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.run(Op::History, Some(id), self.inner.history(id))
            .await
    }

    async fn list(&self, query: &ListQuery) -> StoreResult<ExecutionPage> {
        self.run(Op::List, None, self.inner.list(query)).await
    }
}

impl<B: WorkflowStore> WorkflowStore for FaultyBackend<B> {
    async fn put_workflow(
        &self,
        definition: &WorkflowDefinition,
        now: Timestamp,
    ) -> StoreResult<u32> {
        let call = self.inner.put_workflow(definition, now);
        self.run(Op::PutWorkflow, None, call).await
    }

    async fn get_workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<StoredWorkflow>> {
        let call = self.inner.get_workflow(name, version);
        self.run(Op::GetWorkflow, None, call).await
    }

    async fn list_workflows(&self) -> StoreResult<Vec<StoredWorkflow>> {
        self.run(Op::ListWorkflows, None, self.inner.list_workflows())
            .await
    }
}

impl<B: TaskDispatcher> TaskDispatcher for FaultyBackend<B> {
    async fn send(&self, task: &Dispatch, now: Timestamp) -> StoreResult<()> {
        let call = self.inner.send(task, now);
        self.run(Op::Send, Some(&task.execution_id), call).await
    }

    async fn check_functions(&self, functions: &[String]) -> StoreResult<Vec<String>> {
        let call = self.inner.check_functions(functions);
        self.run(Op::CheckFunctions, None, call).await
    }
}

impl<B: TaskQueue> TaskQueue for FaultyBackend<B> {
    async fn receive(
        &self,
        functions: &[String],
        max: usize,
        visibility_ms: u64,
        now: Timestamp,
    ) -> StoreResult<Vec<LeasedTask>> {
        let call = self.inner.receive(functions, max, visibility_ms, now);
        self.run(Op::Receive, None, call).await
    }

    async fn ack(&self, task: &LeasedTask) -> StoreResult<()> {
        let call = self.inner.ack(task);
        self.run(Op::Ack, Some(&task.task.execution_id), call).await
    }
}

impl<B: TimerService> TimerService for FaultyBackend<B> {
    async fn schedule(
        &self,
        execution_id: &str,
        timer: &TimerId,
        fire_at: Timestamp,
    ) -> StoreResult<()> {
        let call = self.inner.schedule(execution_id, timer, fire_at);
        self.run(Op::Schedule, Some(execution_id), call).await
    }

    async fn schedule_all(&self, timers: &[ScheduledTimer]) -> StoreResult<()> {
        let id = timers.first().map(|t| t.execution_id.as_str());
        self.run(Op::Schedule, id, self.inner.schedule_all(timers))
            .await
    }
}

impl<B: EventSink> EventSink for FaultyBackend<B> {
    async fn publish(&self, events: &[LifecycleEvent]) -> StoreResult<()> {
        let id = events.first().map(|e| e.execution_id.as_ref());
        self.run(Op::Publish, id, self.inner.publish(events)).await
    }
}

impl<B: DeadLetterStore> DeadLetterStore for FaultyBackend<B> {
    async fn put_dead_letter(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        let id = record.execution_id.as_deref();
        let call = self.inner.put_dead_letter(record);
        self.run(Op::PutDeadLetter, id, call).await
    }

    async fn dead_letter_message(&self, record: &DeadLetterRecord) -> StoreResult<()> {
        let id = record.execution_id.as_deref();
        let call = self.inner.dead_letter_message(record);
        self.run(Op::DeadLetterMessage, id, call).await
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetterRecord>> {
        let call = self.inner.list_dead_letters();
        self.run(Op::ListDeadLetters, None, call).await
    }

    async fn get_dead_letter(&self, id: &str) -> StoreResult<Option<DeadLetterRecord>> {
        let call = self.inner.get_dead_letter(id);
        self.run(Op::GetDeadLetter, None, call).await
    }

    async fn remove_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let call = self.inner.remove_dead_letter(id);
        self.run(Op::RemoveDeadLetter, None, call).await
    }

    async fn redrive_dead_letter(&self, id: &str) -> StoreResult<bool> {
        let call = self.inner.redrive_dead_letter(id);
        self.run(Op::RedriveDeadLetter, None, call).await
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn payload_limit(&self) -> usize {
        self.inner.payload_limit()
    }
}

/// The sagas the fault-injection tiers run, over the example handlers
/// (`baton-examples`), and the status each input implies.
pub mod sagas {
    use baton_core::ExecutionStatus;
    use serde_json::{Value, json};

    use super::SplitMix64;

    /// `workflows/order-saga.yaml` (pass its text) with retry delays cut to
    /// milliseconds. Panics if the file no longer has the delays it replaces.
    pub fn fast_order_saga(text: &str) -> String {
        let fast = text
            .replace("delay: 1s, max_delay: 30s", "delay: 10ms, max_delay: 50ms")
            .replace(
                "delay: 200ms, max_delay: 10s",
                "delay: 10ms, max_delay: 50ms",
            );
        assert_eq!(
            fast.matches("delay: 10ms, max_delay: 50ms").count(),
            2,
            "workflows/order-saga.yaml changed its retry delays; update the fault tier"
        );
        fast
    }

    /// Several mutating steps in parallel, then one that can fail.
    pub const FAN_OUT: &str = r#"
name: fan-out-saga
defaults:
  retry: { max_attempts: 3, backoff: exponential, delay: 10ms, max_delay: 50ms, jitter: full }
  timeout: 1m
steps:
  validate:
    function: validate-order
    mutates: false
    input: { orderId: "${ input.orderId }", fail: "${ input.fail }" }
  reserve_a:
    needs: [validate]
    function: reserve-inventory
    input: { orderId: "${ input.orderId }", fail: "${ input.fail }" }
    compensate: { function: release-inventory, input: { reservationId: "${ steps.reserve_a.output.reservationId }" } }
  reserve_b:
    needs: [validate]
    function: reserve-inventory
    input: { orderId: "${ input.orderId }", fail: "${ input.fail }" }
    compensate: { function: release-inventory, input: { reservationId: "${ steps.reserve_b.output.reservationId }" } }
  charge:
    needs: [validate]
    function: process-payment
    input: { orderId: "${ input.orderId }", amount: "${ steps.validate.output.total }", fail: "${ input.fail }" }
    compensate: { function: refund-payment, input: { paymentId: "${ steps.charge.output.paymentId }" } }
  ship:
    needs: [reserve_a, reserve_b, charge]
    function: ship-order
    input: { orderId: "${ input.orderId }", reservationId: "${ steps.reserve_a.output.reservationId }", fail: "${ input.fail }" }
    compensate: { function: cancel-shipment, input: { shipmentId: "${ steps.ship.output.shipmentId }" } }
  notify:
    needs: [ship]
    function: notify-customer
    input: { orderId: "${ input.orderId }", fail: "${ input.fail }" }
    compensate: none
    reason: an e-mail cannot be unsent
output: { orderId: "${ input.orderId }" }
"#;

    /// A `for_each` of mutating elements, each compensated on its own.
    pub const FOR_EACH: &str = r#"
name: for-each-saga
defaults:
  retry: { max_attempts: 3, backoff: exponential, delay: 10ms, max_delay: 50ms, jitter: full }
  timeout: 1m
steps:
  validate:
    function: validate-order
    mutates: false
    input: { orderId: "${ input.orderId }", items: "${ input.items }", fail: "${ input.fail }" }
  reserve:
    needs: [validate]
    for_each: "${ steps.validate.output.items }"
    max_concurrency: 2
    function: reserve-inventory
    input: { orderId: "${ input.orderId }", sku: "${ item.sku }", fail: "${ input.fail }" }
    compensate: { function: release-inventory, input: { reservationId: "${ steps.reserve.output.reservationId }" } }
  charge:
    needs: [reserve]
    function: process-payment
    input: { orderId: "${ input.orderId }", amount: "${ steps.validate.output.total }", fail: "${ input.fail }" }
    compensate: { function: refund-payment, input: { paymentId: "${ steps.charge.output.paymentId }" } }
  ship:
    needs: [charge]
    function: ship-order
    input: { orderId: "${ input.orderId }", reservationId: "${ steps.reserve.output[0].reservationId }", fail: "${ input.fail }" }
    compensate: { function: cancel-shipment, input: { shipmentId: "${ steps.ship.output.shipmentId }" } }
output: { orderId: "${ input.orderId }" }
"#;

    /// An input (its failure switches) and the status it implies.
    pub struct Scenario {
        pub workflow: &'static str,
        pub fail: Value,
        pub expect: ExecutionStatus,
    }

    impl Scenario {
        /// The execution's input: the order, its switches, and for the
        /// `for_each` saga two to four items drawn from `rng`.
        pub fn input(&self, id: &str, rng: &mut SplitMix64) -> Value {
            let mut input = json!({"orderId": format!("o-{id}"), "fail": self.fail});
            if self.workflow == "for-each-saga" {
                let n = 2 + rng.below(3);
                input["items"] = (0..n)
                    .map(|k| json!({"sku": format!("SKU-{k}"), "qty": 1 + k, "price": 5 + k}))
                    .collect();
            }
            input
        }
    }

    /// Inputs that succeed, retry then succeed, compensate, and fail with
    /// nothing to undo, across the three sagas.
    pub fn scenarios() -> Vec<Scenario> {
        use ExecutionStatus::{Compensated, Failed, Succeeded};
        let s = |workflow, fail: Value, expect| Scenario {
            workflow,
            fail,
            expect,
        };
        let order = "order-processing";
        let fan = "fan-out-saga";
        let each = "for-each-saga";
        vec![
            s(order, json!({}), Succeeded),
            s(
                order,
                json!({"reserve-inventory": {"first": 1}, "process-payment": {"first": 2}}),
                Succeeded,
            ),
            s(order, json!({"process-payment": "always"}), Compensated),
            s(order, json!({"ship-order": "permanent"}), Compensated),
            s(order, json!({"notify-customer": "permanent"}), Compensated),
            s(order, json!({"validate-order": "permanent"}), Failed),
            s(fan, json!({}), Succeeded),
            s(fan, json!({"ship-order": {"first": 2}}), Succeeded),
            s(fan, json!({"ship-order": "permanent"}), Compensated),
            s(fan, json!({"process-payment": "permanent"}), Compensated),
            s(fan, json!({"validate-order": "permanent"}), Failed),
            s(each, json!({}), Succeeded),
            s(each, json!({"reserve-inventory": {"first": 1}}), Succeeded),
            s(each, json!({"process-payment": "permanent"}), Compensated),
            s(each, json!({"ship-order": "permanent"}), Compensated),
            s(each, json!({"reserve-inventory": "always"}), Failed),
        ]
    }
}

/// Checks of what a run left behind, shared by the fault-injection tiers:
/// each returns the anomalies it finds as sentences naming the execution.
pub mod audit {
    use std::collections::BTreeMap;

    use baton_core::engine::{self, TaskKind, TaskRef, TimerKind, UnitStatus};
    use baton_core::{Event, Execution, ExecutionStatus, Timestamp, Workflow, idempotency};

    use crate::ports::{DeadLetterKind, DeadLetterRecord, ExecutionRecord, HistoryEntry};

    /// One side effect as the outside service recorded it (the example
    /// handlers' ledger), in the order it was recorded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Effect {
        /// Increases in recording order.
        pub row: i64,
        pub execution_id: String,
        pub step: String,
        pub index: Option<u32>,
        pub function: String,
        pub idempotency_key: String,
    }

    /// How a delivered message was accounted for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Accounted {
        /// Its event is in the history.
        Applied,
        /// Its purpose had passed before it arrived (a duplicate, a late
        /// timer, a retry of a unit the saga stopped): the engine ignores it.
        Superseded,
    }

    type Unit = (String, Option<u32>);

    /// What resolved one attempt, if anything did: its result, a failure
    /// the coordinator applied itself, or its timeout.
    fn resolutions<'h>(history: &'h [HistoryEntry], task: &TaskRef) -> Vec<&'h Event> {
        history
            .iter()
            .map(|h| &h.event)
            .filter(|event| match event {
                Event::TaskSucceeded { task: t, .. }
                | Event::TaskFailed { task: t, .. }
                | Event::TaskTimedOut { task: t } => t == task,
                Event::TimerFired { timer } => {
                    timer.kind == TimerKind::Timeout
                        && timer.task_kind == task.kind
                        && *timer.step == *task.step
                        && timer.index == task.index
                        && timer.attempt == task.attempt
                }
                _ => false,
            })
            .collect()
    }

    /// Whether a delivered message's event was applied or had rightly lost
    /// its purpose; an error says how it went missing.
    pub fn account_for_event(
        record: &ExecutionRecord,
        history: &[HistoryEntry],
        event: &Event,
    ) -> Result<Accounted, String> {
        match event {
            Event::Started { input, .. } => match history.first().map(|h| &h.event) {
                Some(Event::Started { input: first, .. }) if first == input => {
                    Ok(Accounted::Applied)
                }
                Some(Event::Started { .. }) => Ok(Accounted::Superseded),
                other => Err(format!("the history starts with {other:?}")),
            },
            Event::TaskSucceeded { task, .. } | Event::TaskFailed { task, .. } => {
                match resolutions(history, task).first() {
                    Some(resolved) if *resolved == event => Ok(Accounted::Applied),
                    // The coordinator failed the attempt itself with its
                    // outcome unknown (a refused dispatch that an earlier
                    // delivery may have invoked after all): the engine
                    // already treats the attempt as possibly done, so a
                    // result that comes anyway has lost its purpose.
                    Some(Event::TaskFailed { error, .. }) if error.outcome_unknown => {
                        Ok(Accounted::Superseded)
                    }
                    Some(resolved) => Err(format!(
                        "attempt {} of {} `{}`{} was resolved by {} instead",
                        task.attempt,
                        kind_name(task.kind),
                        task.step,
                        index_text(task.index),
                        describe(resolved)
                    )),
                    None => Err(format!(
                        "its result for attempt {} of {} `{}`{} is not in the history",
                        task.attempt,
                        kind_name(task.kind),
                        task.step,
                        index_text(task.index)
                    )),
                }
            }
            Event::TimerFired { timer } => {
                if history.iter().any(|h| h.event == *event) {
                    return Ok(Accounted::Applied);
                }
                let task = TaskRef {
                    step: timer.step.clone(),
                    index: timer.index,
                    attempt: timer.attempt,
                    kind: timer.task_kind,
                };
                let unit = record.state.step(&timer.step).and_then(|s| {
                    s.units
                        .get(timer.index.unwrap_or(0) as usize)
                        .and_then(|u| match timer.task_kind {
                            TaskKind::Step => Some(u),
                            TaskKind::Compensation => u.compensation.as_deref(),
                        })
                });
                let passed = match timer.kind {
                    TimerKind::Timeout => !resolutions(history, &task).is_empty(),
                    TimerKind::Retry => unit.is_some_and(|u| {
                        u.attempt < timer.attempt && u.status != UnitStatus::BackingOff
                    }),
                    // The execution's deadline passes once it has ended or is stopping.
                    TimerKind::Wait | TimerKind::SignalTimeout | TimerKind::ExecutionTimeout => {
                        record.status().is_terminal()
                    }
                };
                if passed {
                    Ok(Accounted::Superseded)
                } else {
                    Err(format!(
                        "its {:?} timer for attempt {} of `{}`{} was neither applied nor passed",
                        timer.kind,
                        timer.attempt,
                        timer.step,
                        index_text(timer.index)
                    ))
                }
            }
            other => Err(format!("an event the tier does not send: {other:?}")),
        }
    }

    fn kind_name(kind: TaskKind) -> &'static str {
        match kind {
            TaskKind::Step => "step",
            TaskKind::Compensation => "the compensation of",
        }
    }

    fn index_text(index: Option<u32>) -> String {
        index.map(|i| format!("[{i}]")).unwrap_or_default()
    }

    fn describe(event: &Event) -> String {
        match event {
            Event::TaskSucceeded { .. } => "a success".into(),
            Event::TaskFailed { error, .. } => format!("a failure ({})", error.name),
            Event::TaskTimedOut { .. } => "a timeout".into(),
            Event::TimerFired { .. } => "its timeout timer".into(),
            other => format!("{other:?}"),
        }
    }

    /// What an execution is checked against.
    pub struct Expected<'a> {
        pub workflow: &'a Workflow,
        /// The status its input implies.
        pub status: ExecutionStatus,
        /// Every dead letter listed during the run (compensations included).
        pub dead_letters: &'a [DeadLetterRecord],
        /// Every side effect recorded for this execution.
        pub effects: &'a [Effect],
        /// Whether the timeout of this attempt, applied at the given
        /// instant, is explained: its result was dead-lettered and waited for
        /// a person, or was first handed to the coordinator only after the
        /// timeout (a late result, not a lost one). An explained timeout may
        /// use up the step's last attempt, so the execution may then fail or
        /// compensate where its input implies success.
        pub timeout_explained: &'a dyn Fn(&TaskRef, Timestamp) -> bool,
    }

    /// Every invariant of one execution after a run: it ended, in the status
    /// its input implies (or, where a dispatch was refused, in one the
    /// saga allows); its history is gapless and replays to its state; no
    /// attempt was resolved twice and none timed out unexplained; every unit
    /// to undo was compensated exactly once, in reverse completion order;
    /// and the ledger agrees: one effect per idempotency key, each forward
    /// effect known to the workflow, each compensation's effect once.
    pub fn audit_execution(
        id: &str,
        record: Option<&ExecutionRecord>,
        history: &[HistoryEntry],
        expected: &Expected<'_>,
    ) -> Vec<String> {
        let mut anomalies = Vec::new();
        let mut flag = |what: String| anomalies.push(format!("execution `{id}`: {what}"));
        let Some(record) = record else {
            flag("not found".into());
            return anomalies;
        };
        let status = record.status();
        if !status.is_terminal() {
            flag(format!(
                "did not end: still {} at version {}",
                status.as_str(),
                record.version
            ));
        }

        let seqs: Vec<u64> = history.iter().map(|h| h.seq).collect();
        if seqs != (1..=record.version).collect::<Vec<u64>>() {
            flag(format!(
                "history is not 1..={} without gaps: {seqs:?}",
                record.version
            ));
        } else {
            let mut state = Execution::new(expected.workflow, id);
            for entry in history {
                let _ = engine::apply(expected.workflow, &mut state, entry.event.clone(), entry.at);
            }
            if state != record.state {
                flag("replaying its history does not give its stored state".into());
            }
        }

        let mut resolved: Vec<(TaskRef, Vec<&Event>, Timestamp)> = Vec::new();
        for (event, at) in history.iter().map(|h| (&h.event, h.at)) {
            let task = match event {
                Event::TaskSucceeded { task, .. }
                | Event::TaskFailed { task, .. }
                | Event::TaskTimedOut { task } => task.clone(),
                Event::TimerFired { timer } if timer.kind == TimerKind::Timeout => TaskRef {
                    step: timer.step.clone(),
                    index: timer.index,
                    attempt: timer.attempt,
                    kind: timer.task_kind,
                },
                _ => continue,
            };
            match resolved.iter_mut().find(|(t, _, _)| *t == task) {
                Some((_, events, _)) => events.push(event),
                None => resolved.push((task, vec![event], at)),
            }
        }
        let mut late = false;
        for (task, events, at) in &resolved {
            let successes = events
                .iter()
                .filter(|e| matches!(e, Event::TaskSucceeded { .. }))
                .count();
            if events.len() > 1 {
                flag(format!(
                    "attempt {} of {} `{}`{} was resolved {} times ({} successes)",
                    task.attempt,
                    kind_name(task.kind),
                    task.step,
                    index_text(task.index),
                    events.len(),
                    successes
                ));
            }
            let timed_out = events
                .iter()
                .any(|e| matches!(e, Event::TaskTimedOut { .. } | Event::TimerFired { .. }));
            if timed_out && (expected.timeout_explained)(task, *at) {
                late = true;
            } else if timed_out {
                flag(format!(
                    "attempt {} of {} `{}`{} timed out though its function answered at once, and no delivery of its result came after the timeout: its result was lost",
                    task.attempt,
                    kind_name(task.kind),
                    task.step,
                    index_text(task.index)
                ));
            }
        }

        let refused = history.iter().any(|h| {
            matches!(&h.event, Event::TaskFailed { error, .. }
                if error.name == "DispatchFailed" || error.name == "DispatchDenied")
        });
        if status.is_terminal() && status != expected.status {
            let allowed = (refused || late)
                && matches!(
                    status,
                    ExecutionStatus::Failed
                        | ExecutionStatus::Compensated
                        | ExecutionStatus::CompensationFailed
                );
            if !allowed {
                flag(format!(
                    "ended {} but its input implies {}{}",
                    status.as_str(),
                    expected.status.as_str(),
                    if refused || late {
                        " (a dispatch was refused or a result came late)"
                    } else {
                        ""
                    }
                ));
            }
        }

        // Units with a compensation, in completion order, and the compensations.
        let wf = expected.workflow;
        let compensable = |step: &str| {
            wf.step_index(step)
                .and_then(|s| wf.steps[s].call())
                .and_then(|c| c.compensation.as_ref())
                .is_some()
        };
        let completed: Vec<Unit> = history
            .iter()
            .filter_map(|h| match &h.event {
                Event::TaskSucceeded { task, .. }
                    if task.kind == TaskKind::Step && compensable(&task.step) =>
                {
                    Some((task.step.to_string(), task.index))
                }
                _ => None,
            })
            .collect();
        let undone: Vec<Unit> = history
            .iter()
            .filter_map(|h| match &h.event {
                Event::TaskSucceeded { task, .. } if task.kind == TaskKind::Compensation => {
                    Some((task.step.to_string(), task.index))
                }
                _ => None,
            })
            .collect();
        let unknown: Vec<Unit> = record
            .state
            .steps
            .iter()
            .filter(|s| compensable(&s.name))
            .flat_map(|s| {
                let for_each = wf
                    .step_index(&s.name)
                    .and_then(|i| wf.steps[i].call())
                    .is_some_and(|c| c.for_each.is_some());
                s.units
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| u.outcome_unknown && u.status != UnitStatus::Succeeded)
                    .map(move |(i, _)| (s.name.to_string(), for_each.then_some(i as u32)))
            })
            .collect();
        let mut undo_count: BTreeMap<&Unit, usize> = BTreeMap::new();
        for unit in &undone {
            *undo_count.entry(unit).or_default() += 1;
        }
        for (unit, n) in &undo_count {
            if *n > 1 {
                flag(format!(
                    "`{}`{} was compensated {n} times",
                    unit.0,
                    index_text(unit.1)
                ));
            }
        }
        let dead_lettered = |unit: &Unit| {
            let name = format!(
                "comp-{id}-{}{}",
                unit.0,
                unit.1.map(|i| format!("/{i}")).unwrap_or_default()
            );
            expected
                .dead_letters
                .iter()
                .any(|d| d.kind == DeadLetterKind::Compensation && d.id == name)
        };
        match status {
            ExecutionStatus::Succeeded if !undone.is_empty() => {
                flag(format!("succeeded yet compensated {undone:?}"));
            }
            ExecutionStatus::Failed if !completed.is_empty() || !undone.is_empty() => {
                flag(format!(
                    "ended failed (nothing to undo) though {completed:?} succeeded and {undone:?} were compensated"
                ));
            }
            ExecutionStatus::Compensated | ExecutionStatus::CompensationFailed => {
                let failed = status == ExecutionStatus::CompensationFailed;
                for unit in completed.iter().chain(&unknown) {
                    if !(undo_count.contains_key(unit) || failed && dead_lettered(unit)) {
                        flag(format!(
                            "`{}`{} succeeded (or may have) but was never compensated{}",
                            unit.0,
                            index_text(unit.1),
                            if failed { " nor dead-lettered" } else { "" }
                        ));
                    }
                }
                for unit in undo_count.keys() {
                    if !completed.contains(unit) && !unknown.contains(unit) {
                        flag(format!(
                            "`{}`{} was compensated though it never succeeded",
                            unit.0,
                            index_text(unit.1)
                        ));
                    }
                }
                let order: Vec<&Unit> = undone.iter().filter(|u| completed.contains(u)).collect();
                let reverse: Vec<&Unit> = completed
                    .iter()
                    .rev()
                    .filter(|u| undo_count.contains_key(u))
                    .collect();
                if order != reverse {
                    flag(format!(
                        "compensated in the order {order:?}, not the reverse of completion {reverse:?}"
                    ));
                }
            }
            _ => {}
        }

        // The ledger: what the outside world saw.
        let mut per_key: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for effect in expected.effects {
            *per_key
                .entry((&effect.idempotency_key, &effect.function))
                .or_default() += 1;
        }
        for ((key, function), n) in per_key {
            if n > 1 {
                flag(format!(
                    "{function} has {n} effects under idempotency key {key}"
                ));
            }
        }
        let mut compensation_rows: Vec<(i64, Unit)> = Vec::new();
        for effect in expected.effects {
            let unit: Unit = (effect.step.clone(), effect.index);
            let Some(call) = wf.step_index(&effect.step).and_then(|s| wf.steps[s].call()) else {
                flag(format!("an effect of unknown step `{}`", effect.step));
                continue;
            };
            let step_key = idempotency::key(id, &effect.step, effect.index, TaskKind::Step);
            let comp_key = idempotency::key(id, &effect.step, effect.index, TaskKind::Compensation);
            if effect.idempotency_key == step_key && *effect.function == *call.function {
                let known = history.iter().any(|h| {
                    matches!(&h.event, Event::TaskSucceeded { task, .. }
                        if task.kind == TaskKind::Step && *task.step == *effect.step && task.index == effect.index)
                });
                if !known && !unknown.contains(&unit) {
                    flag(format!(
                        "{} had its effect for `{}`{} but the workflow never learned of it",
                        effect.function,
                        effect.step,
                        index_text(effect.index)
                    ));
                }
            } else if effect.idempotency_key == comp_key
                && call
                    .compensation
                    .as_ref()
                    .is_some_and(|c| *c.function == *effect.function)
            {
                if !undo_count.contains_key(&unit) {
                    flag(format!(
                        "{} undid `{}`{} but the workflow never learned of it",
                        effect.function,
                        effect.step,
                        index_text(effect.index)
                    ));
                }
                compensation_rows.push((effect.row, unit));
            } else {
                flag(format!(
                    "{} recorded an effect under a key that is neither `{}`{}'s nor its compensation's",
                    effect.function,
                    effect.step,
                    index_text(effect.index)
                ));
            }
        }
        compensation_rows.sort();
        let ledger_order: Vec<&Unit> = compensation_rows.iter().map(|(_, u)| u).collect();
        let history_order: Vec<&Unit> = undone.iter().collect();
        if ledger_order != history_order {
            flag(format!(
                "the ledger undid {ledger_order:?}, the history says {history_order:?}"
            ));
        }
        anomalies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_a_function_of_the_seed() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            xs,
            (0..5)
                .map(|_| SplitMix64::new(8).next_u64())
                .collect::<Vec<_>>()
        );
        assert!((0..1000).all(|_| a.next_f64() < 1.0));
    }

    #[test]
    fn nth_fires_once_fractions_stay_near_their_rate_and_limits_hold() {
        let plan = FaultPlan::new(3)
            .nth(Op::Load, 2, FaultClass::NotFound)
            .fraction(Op::Commit, 0.2, FaultClass::Throttled)
            .fraction(Op::Send, 1.0, FaultClass::Denied)
            .limit(3);
        let faulty = FaultyBackend::new(Arc::new(()), plan);
        let loads: Vec<_> = (0..5).map(|_| faulty.decide(Op::Load)).collect();
        assert_eq!(loads[1], Some((FaultClass::NotFound, 2)));
        assert_eq!(loads.iter().flatten().count(), 1);
        let commits = (0..10_000)
            .filter(|_| faulty.decide(Op::Commit).is_some())
            .count();
        assert!((1_700..2_300).contains(&commits), "{commits}");
        let sends = (0..10)
            .filter(|_| faulty.decide(Op::Send).is_some())
            .count();
        assert_eq!(sends, 3);
        faulty.set_enabled(false);
        assert_eq!(faulty.decide(Op::Load), None);
        assert_eq!(faulty.calls(Op::Load), 5);
    }

    #[test]
    fn a_version_conflict_is_refused_outside_commit() {
        let refused = std::panic::catch_unwind(|| {
            FaultPlan::new(1).nth(Op::Load, 1, FaultClass::VersionConflict)
        });
        assert!(refused.is_err());
    }

    #[test]
    fn random_plans_cover_each_op_and_name_their_seed() {
        let plan = FaultPlan::random(42, &Op::COORDINATOR, 0.1, 3, 100);
        for op in Op::COORDINATOR {
            assert!(plan.rules.iter().any(|r| r.op == op), "{op} has a rule");
        }
        let permanent = plan.rules.iter().filter(|r| r.class.is_permanent()).count();
        assert_eq!(permanent, 3);
        assert!(plan.to_string().starts_with("seed 0x000000000000002a"));
        assert_eq!(plan, FaultPlan::random(42, &Op::COORDINATOR, 0.1, 3, 100));
    }
}
