//! The step SDK's batch handling on moto server: duplicates run once,
//! failures report and retry, malformed messages are dead-lettered, a result
//! that cannot be reported comes back, and deadlines are enforced.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use baton_aws::CoordinatorMessage;
use baton_aws::testing::fresh_backend;
use baton_core::{ErrorInfo, Event};
use baton_examples::{HandlerEnv, Ledger, register_all_with};
use baton_lambda::step::{handle, process_step_batch};
use baton_runtime::ports::{DeadLetterKind, DeadLetterStore};
use baton_runtime::step::{Registry, StepError, StepHandler, handler_fn};
use common::{Counting, drain_coordinator, message, task};
use serde_json::{Value, json};

/// `process-payment` from the examples, with its ledger.
fn payment_handler() -> (tempfile::TempDir, Arc<Ledger>, Counting) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db")).expect("open ledger"));
    let mut registry = Registry::new();
    register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));
    let handler = registry.get("process-payment").expect("process-payment");
    (dir, ledger, Counting::new(handler))
}

fn outcome(message: &CoordinatorMessage) -> &Event {
    match message {
        CoordinatorMessage::Event { event, .. } => event,
        other => panic!("expected a task result, got {other:?}"),
    }
}

fn succeeded_output(message: &CoordinatorMessage) -> Value {
    match outcome(message) {
        Event::TaskSucceeded { output, .. } => output.clone(),
        other => panic!("expected TaskSucceeded, got {other:?}"),
    }
}

fn failure(message: &CoordinatorMessage) -> ErrorInfo {
    match outcome(message) {
        Event::TaskFailed { error, .. } => error.clone(),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redelivered_task_runs_once_and_reports_twice() {
    let backend = fresh_backend("redelivered", &["process-payment"], 5).await;
    let (_dir, ledger, handler) = payment_handler();
    let charge = task(
        "ex-1",
        "charge",
        "process-payment",
        1,
        30_000,
        json!({"orderId": "o-1", "amount": 25}),
    );

    // Delivered, then delivered again (the lease ran out before the delete).
    for id in ["m-1", "m-1"] {
        let failed = process_step_batch(&backend, &handler, vec![message(id, &charge)]).await;
        assert!(failed.is_empty(), "{failed:?}");
    }

    assert_eq!(handler.calls(), 1);
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 2, "{reports:?}");
    let first = succeeded_output(&reports[0]);
    assert_eq!(first, succeeded_output(&reports[1]));
    assert!(first["paymentId"].is_string(), "{first}");
    assert_eq!(
        backend
            .store()
            .step_result(&charge.idempotency_key)
            .await
            .unwrap(),
        Some(first)
    );
    let effects = ledger.effects().unwrap();
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0].idempotency_key, charge.idempotency_key);
}

#[tokio::test]
async fn copies_in_one_batch_run_once() {
    let backend = fresh_backend("copies", &["process-payment"], 5).await;
    let (_dir, ledger, handler) = payment_handler();
    let charge = task(
        "ex-2",
        "charge",
        "process-payment",
        1,
        30_000,
        json!({"orderId": "o-2", "amount": 10}),
    );
    let other = task(
        "ex-3",
        "charge",
        "process-payment",
        1,
        30_000,
        json!({"orderId": "o-3", "amount": 10}),
    );
    let batch = vec![
        message("m-1", &charge),
        message("m-2", &other),
        message("m-3", &charge),
    ];

    let failed = process_step_batch(&backend, &handler, batch).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(handler.calls(), 2);
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| matches!(outcome(r), Event::TaskSucceeded { .. }))
    );
    assert_eq!(ledger.effects().unwrap().len(), 2);
}

#[tokio::test]
async fn failures_are_reported_and_a_retry_runs_again() {
    let backend = fresh_backend("failures", &["flaky"], 5).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = handler_fn(move |context, input| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if input["permanent"] == json!(true) {
                Err(StepError::permanent("CardDeclined", "no funds"))
            } else if call == 0 {
                Err(StepError::retryable("Throttled", "try later"))
            } else {
                Ok(json!({"attempt": context.attempt}))
            }
        }
    });

    let attempt_1 = task("ex-4", "charge", "flaky", 1, 30_000, json!({}));
    let failed =
        process_step_batch(&backend, handler.as_ref(), vec![message("m-1", &attempt_1)]).await;
    assert!(failed.is_empty(), "{failed:?}");
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(
        failure(&reports[0]),
        ErrorInfo::new("Throttled", "try later", true)
    );
    assert_eq!(
        backend
            .store()
            .step_result(&attempt_1.idempotency_key)
            .await
            .unwrap(),
        None,
        "a failure is not recorded"
    );

    // The engine's retry: same idempotency key, next attempt.
    let attempt_2 = task("ex-4", "charge", "flaky", 2, 30_000, json!({}));
    assert_eq!(attempt_2.idempotency_key, attempt_1.idempotency_key);
    let failed =
        process_step_batch(&backend, handler.as_ref(), vec![message("m-2", &attempt_2)]).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(succeeded_output(&reports[0]), json!({"attempt": 2}));

    let declined = task(
        "ex-5",
        "charge",
        "flaky",
        1,
        30_000,
        json!({"permanent": true}),
    );
    process_step_batch(&backend, handler.as_ref(), vec![message("m-3", &declined)]).await;
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(
        failure(&reports[0]),
        ErrorInfo::new("CardDeclined", "no funds", false)
    );
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_not_retried() {
    let backend = fresh_backend("malformed", &["noop"], 5).await;
    let handler = Counting::new(handler_fn(|_, input| async move { Ok(input) }));
    let good = task("ex-6", "s", "noop", 1, 30_000, json!({"n": 1}));
    let batch = vec![
        baton_aws::coordinator_batch::QueueMessage {
            id: "bad-1".into(),
            body: "not json".into(),
        },
        baton_aws::coordinator_batch::QueueMessage {
            id: "bad-2".into(),
            body: r#"{"execution_id": "ex-6"}"#.into(),
        },
        message("good", &good),
    ];

    let failed = process_step_batch(&backend, &handler, batch).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(handler.calls(), 1);
    let dead = backend.list_dead_letters().await.unwrap();
    let malformed: Vec<_> = dead
        .iter()
        .filter(|d| d.kind == DeadLetterKind::Malformed)
        .collect();
    assert_eq!(malformed.len(), 2, "{dead:?}");
    let bad_1 = malformed
        .iter()
        .find(|d| d.id == "malformed-bad-1")
        .expect("the first malformed message");
    assert_eq!(bad_1.body, json!("not json"));
    assert_eq!(drain_coordinator(&backend).await.len(), 1);
}

#[tokio::test]
async fn an_unreported_result_is_retried_without_running_again() {
    let backend = fresh_backend("unreported", &["noop"], 5).await;
    let handler = Counting::new(handler_fn(|_, input| async move { Ok(input) }));
    let url = backend.settings().coordinator_queue_url.clone();
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let sqs = &backend.clients().sqs;
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let work = task("ex-7", "s", "noop", 1, 30_000, json!({"n": 7}));

    let failed = process_step_batch(&backend, &handler, vec![message("m-1", &work)]).await;

    assert_eq!(failed, vec!["m-1".to_string()]);
    assert_eq!(handler.calls(), 1);
    assert_eq!(
        backend
            .store()
            .step_result(&work.idempotency_key)
            .await
            .unwrap(),
        Some(json!({"n": 7}))
    );

    // The queue is back; the redelivered message reports the recorded result.
    let recreated = sqs.create_queue().queue_name(&name).send().await.unwrap();
    assert_eq!(recreated.queue_url(), Some(url.as_str()));
    let failed = process_step_batch(&backend, &handler, vec![message("m-1", &work)]).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(handler.calls(), 1);
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(succeeded_output(&reports[0]), json!({"n": 7}));
}

#[tokio::test]
async fn a_handler_past_its_deadline_reports_a_timeout() {
    let backend = fresh_backend("timeout", &["slow"], 5).await;
    let handler = Counting::new(handler_fn(|_, input| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(input)
    }));
    let slow = task("ex-8", "s", "slow", 1, 300, json!({}));
    let mut late = task("ex-9", "s", "slow", 1, 0, json!({}));
    late.deadline -= 1_000;

    let started = Instant::now();
    let failed = process_step_batch(
        &backend,
        &handler,
        vec![message("m-1", &slow), message("m-2", &late)],
    )
    .await;

    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        handler.calls(),
        1,
        "a task already past its deadline is not run"
    );
    let reports = drain_coordinator(&backend).await;
    assert_eq!(reports.len(), 2);
    for report in &reports {
        assert!(
            matches!(outcome(report), Event::TaskTimedOut { .. }),
            "{report:?}"
        );
    }
    assert_eq!(
        backend
            .store()
            .step_result(&slow.idempotency_key)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_superseded_task_is_acknowledged_without_running() {
    let backend = fresh_backend("superseded", &["noop"], 5).await;
    let handler = Counting::new(handler_fn(|_, input| async move { Ok(input) }));
    let coordinator = baton_runtime::Coordinator::new(
        Arc::new(backend.clone()),
        Arc::new(baton_runtime::SystemClock),
    );
    let definition = baton_core::WorkflowDefinition::parse(
        "name: one\nsteps:\n  s:\n    function: noop\n    mutates: false\n    retry: { max_attempts: 1 }\n    timeout: 1m\n",
        baton_core::definition::Format::Yaml,
    )
    .unwrap();
    baton_runtime::ports::WorkflowStore::put_workflow(&backend, &definition, 0)
        .await
        .unwrap();
    coordinator
        .start("one", None, "ex-10", json!({}))
        .await
        .unwrap();
    // Attempt 2 of a step whose attempt 1 is the one running.
    let stale = task("ex-10", "s", "noop", 2, 30_000, json!({}));

    let failed = process_step_batch(&backend, &handler, vec![message("m-1", &stale)]).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(handler.calls(), 0);
    assert!(drain_coordinator(&backend).await.is_empty());
}

#[tokio::test]
async fn sqs_events_become_partial_batch_failures() {
    let backend = fresh_backend("sqs-event", &["noop"], 5).await;
    let handler = handler_fn(|_, input| async move { Ok(input) });
    backend
        .clients()
        .sqs
        .delete_queue()
        .queue_url(&backend.settings().coordinator_queue_url)
        .send()
        .await
        .unwrap();
    let work = task("ex-11", "s", "noop", 1, 30_000, json!({}));
    let mut record = SqsMessage::default();
    record.message_id = Some("m-1".into());
    record.body = Some(serde_json::to_string(&work).unwrap());
    let mut event = SqsEvent::default();
    event.records = vec![record];

    let response = handle(&backend, handler.as_ref() as &dyn StepHandler, event).await;

    let ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(ids, ["m-1"]);
}
