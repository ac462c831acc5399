//! The contract every backend must pass, run by each backend's tests.
//!
//! ```ignore
//! baton_runtime::contract::run_all(|| async { make_backend() }).await;
//! // a backend whose workers lease tasks:
//! baton_runtime::contract::run_task_queue(&ContractConfig { max_receives: 3 }, || async { make_backend() }).await;
//! ```
//!
//! Each check gets a fresh backend from the factory. Task redelivery is
//! checked with real waits, since queues such as SQS keep real time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_core::definition::Format;
use baton_core::engine::{self, Dispatch, TaskKind, TaskRef};
use baton_core::{Event, Execution, ExecutionStatus, Workflow, WorkflowDefinition};
use serde_json::json;

use crate::clock::{Clock, SystemClock};
use crate::coordinator::Coordinator;
use crate::ports::{
    Backend, Created, DeadLetterKind, DeadLetterRecord, ExecutionPage, ExecutionRecord,
    HistoryEntry, ListQuery, StoreError, TaskQueue,
};

pub struct ContractConfig {
    /// The backend's redrive limit: a task received this many times is dead-lettered on the next receive.
    pub max_receives: u32,
}

const WAITING_WORKFLOW: &str = r#"
name: contract
steps:
  hold:
    wait_for: { signal: go }
  work:
    needs: [hold]
    function: contract-fn
    mutates: false
    retry: { max_attempts: 2 }
    timeout: 1s
  # Never reached by the contract's executions: it names the signal the
  # racing coordinators send, which is kept until a step waits for it.
  later:
    needs: [work]
    wait_for: { signal: ping }
"#;

fn definition() -> WorkflowDefinition {
    WorkflowDefinition::parse(WAITING_WORKFLOW, Format::Yaml).expect("contract workflow parses")
}

fn workflow() -> Workflow {
    Workflow::from_definition(definition()).expect("contract workflow is valid")
}

fn record(id: &str, now: u64) -> (ExecutionRecord, Vec<HistoryEntry>, Vec<baton_core::Command>) {
    let wf = workflow();
    let mut state = Execution::new(&wf, id);
    let event = Event::Started {
        input: json!({"n": 1}),
        timeout_ms: None,
        parent: None,
    };
    let t = engine::apply(&wf, &mut state, event.clone(), now);
    (
        ExecutionRecord {
            id: id.to_string(),
            workflow: "contract".into(),
            workflow_version: 1,
            version: 1,
            state,
            created_at: now,
            updated_at: now,
            retention_ms: wf.retention_ms,
        },
        vec![HistoryEntry {
            seq: 1,
            at: now,
            event,
        }],
        t.commands,
    )
}

fn task(execution: &str, attempt: u32, now: u64) -> Dispatch {
    Dispatch {
        execution_id: execution.into(),
        workflow: "contract".into(),
        task: TaskRef {
            step: "work".into(),
            index: None,
            attempt,
            kind: TaskKind::Step,
        },
        function: "contract-fn".into(),
        input: json!({"x": 1}),
        idempotency_key: "bk_contract".into(),
        timeout_ms: 100,
        deadline: now + 100,
    }
}

/// Runs every check; panics with the name of the first that fails.
pub async fn run_all<B, F, Fut>(make: F)
where
    B: Backend + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    create_is_idempotent(make().await).await;
    commit_checks_the_version(make().await).await;
    history_in_order_and_list_by_status(make().await).await;
    outbox_until_cleared(make().await).await;
    workflow_versions(make().await).await;
    dead_letters(make().await).await;
    racing_coordinators_lose_nothing(make().await).await;
    idempotent_start(make().await).await;
}

pub async fn create_is_idempotent<B: Backend>(backend: B) {
    let now = SystemClock.now();
    let (rec, history, outbox) = record("ex-create", now);
    assert!(
        matches!(
            backend.create(&rec, &history, &outbox).await.unwrap(),
            Created::New(_)
        ),
        "create: first create stores"
    );
    let loaded = backend
        .load("ex-create")
        .await
        .unwrap()
        .expect("create: load after create");
    assert_eq!(loaded, rec, "create: load returns what was stored");
    let mut other = rec.clone();
    other.state.input = json!({"n": 2}).into();
    match backend.create(&other, &history, &outbox).await.unwrap() {
        Created::Existing(existing) => {
            assert_eq!(*existing, rec, "create: second create returns the first")
        }
        Created::New(_) => panic!("create: a second create with the same id must not store"),
    }
    assert_eq!(
        backend.load("ex-create").await.unwrap().unwrap(),
        rec,
        "create: second create changed nothing"
    );
    assert_eq!(
        backend.load("nope").await.unwrap(),
        None,
        "create: unknown id loads as None"
    );
}

pub async fn commit_checks_the_version<B: Backend>(backend: B) {
    let now = SystemClock.now();
    let (rec, history, outbox) = record("ex-commit", now);
    backend.create(&rec, &history, &outbox).await.unwrap();
    let mut next = rec.clone();
    next.version = 2;
    next.state.input = json!({"n": "second"}).into();
    let h2 = [HistoryEntry {
        seq: 2,
        at: now,
        event: Event::CancelRequested { reason: None },
    }];
    backend
        .commit(&next, 1, &h2, &[])
        .await
        .expect("commit: current version commits");
    let mut stale = rec.clone();
    stale.version = 2;
    stale.state.input = json!({"n": "lost"}).into();
    let err = backend
        .commit(&stale, 1, &h2, &[])
        .await
        .expect_err("commit: a stale version must be refused");
    assert!(
        matches!(err, StoreError::VersionConflict { .. }),
        "commit: stale write is a VersionConflict, got {err:?}"
    );
    let loaded = backend.load("ex-commit").await.unwrap().unwrap();
    assert_eq!(loaded.version, 2, "commit: version advanced once");
    assert_eq!(
        *loaded.state.input,
        json!({"n": "second"}),
        "commit: the refused write left no trace"
    );
    assert_eq!(
        backend.history("ex-commit").await.unwrap().len(),
        2,
        "commit: refused write added no history"
    );
    let mut ghost = rec.clone();
    ghost.id = "ex-ghost".into();
    ghost.version = 2;
    assert!(
        backend.commit(&ghost, 1, &[], &[]).await.is_err(),
        "commit: unknown execution is an error"
    );
}

pub async fn history_in_order_and_list_by_status<B: Backend>(backend: B) {
    let now = SystemClock.now();
    for (i, id) in ["ex-a", "ex-b", "ex-c"].iter().enumerate() {
        let (rec, history, outbox) = record(id, now + i as u64);
        backend.create(&rec, &history, &outbox).await.unwrap();
    }
    let mut rec = backend.load("ex-b").await.unwrap().unwrap();
    for seq in 2..=4u64 {
        rec.version = seq;
        if seq == 4 {
            rec.state.status = ExecutionStatus::Cancelled;
        }
        let h = [HistoryEntry {
            seq,
            at: now + seq,
            event: Event::SignalReceived {
                name: "ping".into(),
                payload: json!(seq),
                id: None,
            },
        }];
        backend.commit(&rec, seq - 1, &h, &[]).await.unwrap();
    }
    let seqs: Vec<u64> = backend
        .history("ex-b")
        .await
        .unwrap()
        .iter()
        .map(|h| h.seq)
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "history: every applied event, in order"
    );
    let ids = |page: &ExecutionPage| {
        page.executions
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>()
    };
    let all = backend.list(&ListQuery::newest(10)).await.unwrap();
    assert_eq!(
        ids(&all),
        vec!["ex-c", "ex-b", "ex-a"],
        "list: newest first"
    );
    assert_eq!(all.next, None, "list: nothing after the last page");
    let cancelled = backend
        .list(&ListQuery::newest(10).status(ExecutionStatus::Cancelled))
        .await
        .unwrap();
    assert_eq!(ids(&cancelled), vec!["ex-b"], "list: filtered by status");
    let first = backend.list(&ListQuery::newest(2)).await.unwrap();
    assert_eq!(ids(&first), vec!["ex-c", "ex-b"], "list: limit");
    let rest = backend
        .list(&ListQuery {
            after: first.next.clone(),
            ..ListQuery::newest(2)
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&rest),
        vec!["ex-a"],
        "list: the next page continues after the first"
    );
    let by_workflow = backend
        .list(&ListQuery {
            workflow: Some("no-such-workflow".into()),
            ..ListQuery::newest(10)
        })
        .await
        .unwrap();
    assert!(
        by_workflow.executions.is_empty(),
        "list: filtered by workflow"
    );
    let contract = backend
        .list(&ListQuery {
            workflow: Some("contract".into()),
            ..ListQuery::newest(10)
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&contract),
        vec!["ex-c", "ex-b", "ex-a"],
        "list: filtered by workflow"
    );
    let window = backend
        .list(&ListQuery {
            since: Some(now + 1),
            until: Some(now + 2),
            ..ListQuery::newest(10)
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&window),
        vec!["ex-b"],
        "list: filtered by creation time"
    );
}

pub async fn outbox_until_cleared<B: Backend>(backend: B) {
    let now = SystemClock.now();
    let (rec, history, outbox) = record("ex-outbox", now);
    match backend.create(&rec, &history, &outbox).await.unwrap() {
        Created::New(entries) => {
            assert_eq!(
                backend.pending_outbox("ex-outbox").await.unwrap(),
                entries,
                "outbox: create's commands are pending until cleared"
            );
            backend.clear_outbox(&entries).await.unwrap();
        }
        Created::Existing(_) => panic!("outbox: fresh id"),
    }
    let mut next = rec.clone();
    next.version = 2;
    let commands = vec![baton_core::Command::Dispatch(task("ex-outbox", 1, now))];
    let h2 = [HistoryEntry {
        seq: 2,
        at: now,
        event: Event::SignalReceived {
            name: "go".into(),
            payload: json!(null),
            id: None,
        },
    }];
    let returned = backend.commit(&next, 1, &h2, &commands).await.unwrap();
    // A backend either delivers inside the write (returns nothing) or keeps
    // every command in its outbox until cleared.
    assert!(
        returned.is_empty() || returned.len() == commands.len(),
        "outbox: all or nothing"
    );
    let pending = backend.pending_outbox("ex-outbox").await.unwrap();
    assert_eq!(
        pending, returned,
        "outbox: pending entries are the ones returned"
    );
    backend.clear_outbox(&pending).await.unwrap();
    assert!(
        backend
            .pending_outbox("ex-outbox")
            .await
            .unwrap()
            .is_empty(),
        "outbox: cleared"
    );
}

pub async fn workflow_versions<B: Backend>(backend: B) {
    let now = SystemClock.now();
    let def = definition();
    let v1 = backend.put_workflow(&def, now).await.unwrap();
    assert_eq!(v1, 1, "workflows: first version is 1");
    assert_eq!(
        backend.put_workflow(&def, now).await.unwrap(),
        1,
        "workflows: same definition, same version"
    );
    let mut changed = def.clone();
    changed.description = Some("changed".into());
    assert_eq!(
        backend.put_workflow(&changed, now).await.unwrap(),
        2,
        "workflows: a change is a new version"
    );
    assert_eq!(
        backend
            .get_workflow("contract", Some(1))
            .await
            .unwrap()
            .unwrap()
            .definition,
        def,
        "workflows: old version kept"
    );
    assert_eq!(
        backend
            .get_workflow("contract", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        2,
        "workflows: latest"
    );
    assert!(
        backend
            .get_workflow("missing", None)
            .await
            .unwrap()
            .is_none(),
        "workflows: unknown name"
    );
    let listed = backend.list_workflows().await.unwrap();
    assert_eq!(listed.len(), 1, "workflows: one entry per name");
    assert_eq!(listed[0].version, 2, "workflows: list shows the latest");
}

pub async fn dead_letters<B: Backend>(backend: B) {
    let record = DeadLetterRecord {
        id: "dl-1".into(),
        kind: DeadLetterKind::Compensation,
        execution_id: Some("ex-1".into()),
        created_at: SystemClock.now(),
        reason: "refund failed".into(),
        body: json!({"step": "charge", "input": {"paymentId": "p-1"}}),
    };
    backend.put_dead_letter(&record).await.unwrap();
    assert_eq!(
        backend.list_dead_letters().await.unwrap(),
        vec![record.clone()],
        "dead letters: listed with full context"
    );
    assert_eq!(
        backend.get_dead_letter("dl-1").await.unwrap(),
        Some(record),
        "dead letters: fetched by id"
    );
    assert!(
        backend.remove_dead_letter("dl-1").await.unwrap(),
        "dead letters: removed"
    );
    assert!(
        !backend.remove_dead_letter("dl-1").await.unwrap(),
        "dead letters: removing twice says so"
    );
    assert!(
        backend.list_dead_letters().await.unwrap().is_empty(),
        "dead letters: gone"
    );
}

/// The task queue of a backend whose workers lease tasks (on AWS the step
/// functions are invoked directly, and Lambda's own queue stands in).
pub async fn run_task_queue<B, F, Fut>(config: &ContractConfig, make: F)
where
    B: Backend + TaskQueue + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = B>,
{
    tasks_lease_ack_and_redrive(config, make().await).await;
}

pub async fn tasks_lease_ack_and_redrive<B: Backend + TaskQueue>(
    config: &ContractConfig,
    backend: B,
) {
    let functions = vec!["contract-fn".to_string()];
    let now = SystemClock.now();
    backend.send(&task("ex-t", 1, now), now).await.unwrap();
    let got = backend
        .receive(&functions, 10, 1_000, SystemClock.now())
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "tasks: a sent task is received");
    assert_eq!(got[0].receive_count, 1, "tasks: first receive");
    assert_eq!(got[0].task, task("ex-t", 1, now), "tasks: received as sent");
    assert!(
        backend
            .receive(&functions, 10, 1_000, SystemClock.now())
            .await
            .unwrap()
            .is_empty(),
        "tasks: leased task is invisible"
    );
    backend.ack(&got[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(
        backend
            .receive(&functions, 10, 1_000, SystemClock.now())
            .await
            .unwrap()
            .is_empty(),
        "tasks: acked task is gone"
    );

    // Never acked: redelivered after each lease, then dead-lettered.
    backend.send(&task("ex-p", 1, now), now).await.unwrap();
    for expected in 1..=config.max_receives {
        let got = receive_within(&backend, &functions, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "tasks: redelivered after the lease ran out");
        assert_eq!(got[0].receive_count, expected, "tasks: receive count grows");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            backend
                .receive(&functions, 10, 1_000, SystemClock.now())
                .await
                .unwrap()
                .is_empty(),
            "tasks: not delivered past the limit"
        );
        let dead = backend.list_dead_letters().await.unwrap();
        if let Some(d) = dead.iter().find(|d| d.kind == DeadLetterKind::Task) {
            assert_eq!(
                d.execution_id.as_deref(),
                Some("ex-p"),
                "tasks: dead letter names its execution"
            );
            assert!(
                backend.redrive_dead_letter(&d.id).await.unwrap(),
                "tasks: redrive finds the dead letter"
            );
            let back = receive_within(&backend, &functions, Duration::from_secs(5)).await;
            assert_eq!(back.len(), 1, "tasks: a redriven task is delivered again");
            assert_eq!(
                back[0].task.execution_id.as_ref(),
                "ex-p",
                "tasks: the same task comes back"
            );
            assert!(
                backend
                    .list_dead_letters()
                    .await
                    .unwrap()
                    .iter()
                    .all(|x| x.id != d.id),
                "tasks: a redriven dead letter is no longer listed"
            );
            assert!(
                !backend.redrive_dead_letter(&d.id).await.unwrap(),
                "tasks: redriving twice says so"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks: a task over its receive limit is dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn receive_within<B: Backend + TaskQueue>(
    backend: &B,
    functions: &[String],
    limit: Duration,
) -> Vec<crate::ports::LeasedTask> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let got = backend
            .receive(functions, 10, 1_000, SystemClock.now())
            .await
            .unwrap();
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Many coordinators applying events to one execution at once: every event
/// lands exactly once and the version counts them all.
pub async fn racing_coordinators_lose_nothing<B: Backend + 'static>(backend: B) {
    let backend = Arc::new(backend);
    backend
        .put_workflow(&definition(), SystemClock.now())
        .await
        .unwrap();
    let first = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    first
        .start("contract", None, "ex-race", json!({}))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..16 {
        let backend = backend.clone();
        handles.push(tokio::spawn(async move {
            let coordinator = Coordinator::new(backend, Arc::new(SystemClock));
            let event = Event::SignalReceived {
                name: "ping".into(),
                payload: json!(i),
                id: None,
            };
            coordinator.handle("ex-race", event).await
        }));
    }
    for h in handles {
        let outcome = h
            .await
            .expect("coordinator task")
            .expect("racing coordinators: every event is applied");
        assert_eq!(outcome, baton_core::Outcome::Applied);
    }
    let record = backend.load("ex-race").await.unwrap().unwrap();
    assert_eq!(
        record.version, 17,
        "racing coordinators: one version per event"
    );
    assert_eq!(
        record.state.signals.get("ping").map(|kept| kept.len()),
        Some(16),
        "racing coordinators: no event lost"
    );
    assert_eq!(
        backend.history("ex-race").await.unwrap().len(),
        17,
        "racing coordinators: history has each event once"
    );
}

pub async fn idempotent_start<B: Backend + 'static>(backend: B) {
    let backend = Arc::new(backend);
    backend
        .put_workflow(&definition(), SystemClock.now())
        .await
        .unwrap();
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    let a = coordinator
        .start("contract", None, "ex-once", json!({"n": 1}))
        .await
        .unwrap();
    let b = coordinator
        .start("contract", None, "ex-once", json!({"n": 1}))
        .await
        .unwrap();
    assert!(
        a.created && !b.created,
        "start: the second start with one id creates nothing"
    );
    let other = coordinator
        .start("contract", None, "ex-once", json!({"n": 2}))
        .await;
    assert!(
        matches!(&other, Err(crate::CoordinatorError::ExecutionExists { id, .. }) if id == "ex-once"),
        "start: the same id with another input is refused: {other:?}"
    );
    assert_eq!(
        *backend.load("ex-once").await.unwrap().unwrap().state.input,
        json!({"n": 1}),
        "start: the first input stands"
    );
    assert_eq!(
        backend.history("ex-once").await.unwrap().len(),
        1,
        "start: started once"
    );
}
