//! Timers on SQS, against moto server: a fan-out's attempt timeouts leave in
//! one `SendMessageBatch`, not one request each, and every timer arrives.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_aws::testing::fresh_recording_backend;
use baton_aws::{AwsBackend, CoordinatorMessage};
use baton_core::definition::{Format, WorkflowDefinition};
use baton_runtime::ports::WorkflowStore;
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::json;

/// `root`, then ten branches at once, each with an attempt timeout.
fn fan_out() -> WorkflowDefinition {
    let mut text = String::from(
        "name: wide\ndefaults: { timeout: 1s, retry: { max_attempts: 1 } }\nsteps:\n  root: { function: fn-root, mutates: false }\n",
    );
    for i in 0..10 {
        text.push_str(&format!(
            "  b{i}: {{ function: fn-branch, mutates: false, needs: [root] }}\n"
        ));
    }
    WorkflowDefinition::parse(&text, Format::Yaml).expect("parses")
}

/// The timer messages on the coordinator queue once their second-long
/// delay is over, by step and kind.
async fn queued_timers(backend: &AwsBackend) -> BTreeSet<String> {
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut found = BTreeSet::new();
    for _ in 0..5 {
        let out = backend
            .clients()
            .sqs
            .receive_message()
            .queue_url(&backend.settings().coordinator_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        for message in out.messages() {
            match CoordinatorMessage::decode(message.body().unwrap_or_default()) {
                Ok(CoordinatorMessage::Timer { timer, .. }) => {
                    assert!(
                        found.insert(format!("{}/{:?}", timer.step, timer.kind)),
                        "{timer:?} arrived twice"
                    );
                }
                other => panic!("only timers are queued: {other:?}"),
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_outs_attempt_timeouts_are_sent_in_one_request() {
    let (backend, invoker) = fresh_recording_backend("timer-batch", 3).await;
    backend
        .put_workflow(&fan_out(), SystemClock.now())
        .await
        .unwrap();
    let backend = Arc::new(backend);
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    coordinator
        .start("wide", None, "wide-1", json!({}))
        .await
        .unwrap();
    let root = invoker.take("fn-root").pop().expect("root dispatched");
    assert_eq!(queued_timers(&backend).await.len(), 1, "root's timeout");

    backend.counter().reset();
    coordinator
        .handle(
            "wide-1",
            baton_core::Event::TaskSucceeded {
                task: root.baton.task_ref(),
                output: json!({"ok": true}),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        invoker.take("fn-branch").len(),
        10,
        "ten branches dispatched"
    );
    let requests = backend.counter().snapshot();
    assert_eq!(
        requests.get("SQS.SendMessageBatch"),
        Some(&1),
        "ten timeouts, one request: {requests:?}"
    );
    assert_eq!(requests.get("SQS.SendMessage"), None, "{requests:?}");
    let timers = queued_timers(&backend).await;
    assert_eq!(
        timers.len(),
        10,
        "every branch's timeout is queued: {timers:?}"
    );
}
