//! Retention and listing on DynamoDB (moto server): a finished execution's
//! items carry `expires` (its retention after it finished; each history
//! item its retention after it was written), a running execution's own item
//! does not; and executions are listed, filtered and paged through the
//! status index, never a Scan.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::AwsBackend;
use baton_aws::testing::fresh_recording_backend;
use baton_core::definition::Format;
use baton_core::{Event, ExecutionStatus, WorkflowDefinition};
use baton_runtime::ports::{ExecutionStore, ListQuery, WorkflowStore};
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::json;

mod common;

const DAY_S: u64 = 24 * 60 * 60;

fn two_steps(name: &str, retention: &str) -> WorkflowDefinition {
    let text = common::TWO_STEPS.replace(
        "name: two-steps",
        &format!("name: {name}\nretention: {retention}"),
    );
    WorkflowDefinition::parse(&text, Format::Yaml).expect("a valid definition")
}

/// Every item of an execution's partition: sort key and `expires`, if any.
async fn partition(backend: &AwsBackend, id: &str) -> Vec<(String, Option<u64>)> {
    common::partition(backend, id)
        .await
        .into_iter()
        .map(|(sk, item)| {
            let expires = match item.get("expires") {
                Some(AttributeValue::N(n)) => Some(n.parse().expect("a number")),
                None => None,
                other => panic!("`expires` is not a number: {other:?}"),
            };
            (sk, expires)
        })
        .collect()
}

/// Answers the attempts dispatched to `function` for `ids` with success;
/// the others dispatched to it stay unanswered (their executions keep
/// running).
async fn succeed(
    coordinator: &Coordinator<AwsBackend>,
    invoker: &baton_aws::testing::RecordingInvoker,
    function: &str,
    ids: &[&str],
) {
    let attempts: Vec<_> = common::take_task(invoker, function)
        .into_iter()
        .filter(|a| ids.contains(&a.baton.execution_id.as_str()))
        .collect();
    assert_eq!(
        attempts.len(),
        ids.len(),
        "one attempt of {function} for each of {ids:?}"
    );
    for attempt in attempts {
        coordinator
            .handle(
                &attempt.baton.execution_id,
                Event::TaskSucceeded {
                    task: attempt.baton.task_ref(),
                    output: json!({"ok": true}),
                },
            )
            .await
            .expect("result applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_executions_items_expire_after_its_retention_and_a_running_ones_item_does_not() {
    let (backend, invoker) = fresh_recording_backend("retention", 3).await;
    backend
        .put_workflow(&two_steps("kept", "2d"), SystemClock.now())
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("kept", None, "done", json!({}))
        .await
        .unwrap();
    succeed(&coordinator, &invoker, "fn-a", &["done"]).await;
    succeed(&coordinator, &invoker, "fn-b", &["done"]).await;
    coordinator
        .start_retained("kept", None, "running", json!({}), Some(5 * DAY_S * 1000))
        .await
        .unwrap();
    succeed(&coordinator, &invoker, "fn-a", &["running"]).await;

    let done = backend.load("done").await.unwrap().unwrap();
    assert_eq!(done.status(), ExecutionStatus::Succeeded);
    let finished_s = done.updated_at.div_ceil(1000);
    let items = partition(&backend, "done").await;
    assert!(
        items.iter().filter(|(sk, _)| sk.starts_with("H#")).count() >= 3,
        "history items written: {items:?}"
    );
    for (sk, expires) in &items {
        let expires =
            expires.unwrap_or_else(|| panic!("{sk} of a finished execution has no `expires`"));
        if sk == "S" {
            assert_eq!(
                expires,
                finished_s + 2 * DAY_S,
                "the execution item: 2 days after it finished"
            );
        } else {
            assert!(
                expires <= finished_s + 2 * DAY_S && expires + 60 >= finished_s + 2 * DAY_S,
                "{sk}: 2 days after it was written ({expires} vs {finished_s})"
            );
        }
    }

    let running = partition(&backend, "running").await;
    let head = running.iter().find(|(sk, _)| sk == "S").expect("its item");
    assert_eq!(head.1, None, "a running execution's item does not expire");
    let now_s = SystemClock.now() / 1000;
    for (sk, expires) in running.iter().filter(|(sk, _)| sk.starts_with("H#")) {
        let expires = expires.unwrap_or_else(|| panic!("{sk} has no `expires`"));
        assert!(
            expires > now_s + 5 * DAY_S - 60 && expires <= now_s + 5 * DAY_S + 1,
            "{sk}: the start's retention of 5 days ({expires} vs {now_s})"
        );
    }

    let refused = coordinator
        .start_retained("kept", None, "too-short", json!({}), Some(60_000))
        .await
        .expect_err("a one-minute retention is refused");
    assert!(refused.to_string().contains("1 day"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_pages_through_the_index_without_a_scan() {
    let (backend, invoker) = fresh_recording_backend("listing", 3).await;
    for name in ["alpha", "beta"] {
        backend
            .put_workflow(&two_steps(name, "30d"), SystemClock.now())
            .await
            .unwrap();
    }
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    let mut started = Vec::new();
    for i in 0..9 {
        let (workflow, id) = match i % 3 {
            2 => ("beta", format!("b-{i}")),
            _ => ("alpha", format!("a-{i}")),
        };
        coordinator
            .start(workflow, None, &id, json!({}))
            .await
            .unwrap();
        started.push(id);
    }
    // Three alpha executions finish; the rest keep running.
    let finished = ["a-0", "a-3", "a-6"];
    succeed(&coordinator, &invoker, "fn-a", &finished).await;
    succeed(&coordinator, &invoker, "fn-b", &finished).await;
    backend.counter().reset();

    let mut running = Vec::new();
    let mut query = ListQuery::newest(2).status(ExecutionStatus::Running);
    let mut pages = 0;
    loop {
        let page = backend.list(&query).await.unwrap();
        assert!(page.executions.len() <= 2, "a page holds at most its limit");
        pages += 1;
        running.extend(page.executions.into_iter().map(|e| {
            assert_eq!(e.status, ExecutionStatus::Running);
            e.id
        }));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<String> = started
        .iter()
        .rev()
        .filter(|id| !["a-0", "a-3", "a-6"].contains(&id.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        running, expected,
        "every running execution once, newest first"
    );
    assert!(pages >= 3, "six executions in pages of two: {pages} pages");

    let alpha = backend
        .list(&ListQuery {
            workflow: Some("alpha".into()),
            ..ListQuery::newest(100)
        })
        .await
        .unwrap();
    expected = started
        .iter()
        .rev()
        .filter(|id| id.starts_with("a-"))
        .cloned()
        .collect();
    assert_eq!(
        alpha
            .executions
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        expected,
        "every status merged, one workflow"
    );
    assert_eq!(alpha.next, None);

    let workflows: Vec<String> = backend
        .list_workflows()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(workflows, vec!["alpha", "beta"], "workflows are listed too");

    let requests = backend.counter().snapshot();
    assert!(
        !requests.keys().any(|k| k.ends_with(".Scan")),
        "no Scan: {requests:?}"
    );
    assert!(
        requests.get("DynamoDB.Query").copied().unwrap_or(0) > 0,
        "the index is queried: {requests:?}"
    );
}
