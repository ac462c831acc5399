//! The order saga end to end on moto server, without Lambda: the example
//! handlers run in this process behind Lambda's asynchronous contract
//! (`LocalInvoker`: each result reaches the coordinator queue as the
//! destination record Lambda sends), and this test plays the coordinator's
//! SQS event source mapping, receiving from the coordinator queue into
//! `process_coordinator_batch` and deleting what it acknowledges, until the
//! execution finishes. `tests/ministack_saga.rs` runs real function code.
//!
//! `tests/order-saga-fast.yaml` is the saga with millisecond retry delays.
//! Run with `--nocapture` to see the AWS requests one order costs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_aws::AwsBackend;
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::LocalInvoker;
use baton_aws::testing::fresh_backend;
use baton_core::definition::Format;
use baton_core::engine::{StepStatus, UnitStatus};
use baton_core::{ExecutionStatus, Workflow, WorkflowDefinition};
use baton_examples::{CallOutcome, HandlerEnv, Ledger, register_all_with};
use baton_runtime::ports::{ExecutionRecord, WorkflowStore};
use baton_runtime::step::Registry;
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::{Value, json};

const SAGA: &str = include_str!("order-saga-fast.yaml");

type Counts = BTreeMap<String, u64>;

/// Queues, coordinator and handlers of one test, and the requests the test
/// itself made while playing the event source mappings and watching the
/// execution.
struct Harness {
    backend: AwsBackend,
    coordinator: Coordinator<AwsBackend>,
    ledger: Arc<Ledger>,
    _dir: tempfile::TempDir,
    polling: Counts,
}

impl Harness {
    async fn new(name: &str) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db")).expect("ledger"));
        let mut registry = Registry::new();
        register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));
        let backend = fresh_backend(name, 5).await;
        let lookup = move |function: &str| registry.get(function);
        let invoker = LocalInvoker::new(Arc::new(lookup), backend.queues_handle());
        let backend = backend.with_invoker(Arc::new(invoker));
        let definition = WorkflowDefinition::parse(SAGA, Format::Yaml).expect("the saga parses");
        Workflow::from_definition(definition.clone()).expect("the saga validates");
        backend
            .put_workflow(&definition, SystemClock.now())
            .await
            .expect("deploy the saga");
        backend.counter().reset();
        Harness {
            coordinator: Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock)),
            backend,
            ledger,
            _dir: dir,
            polling: Counts::new(),
        }
    }

    /// Adds the requests made since `before` to the harness's own.
    fn charge_polling(&mut self, before: &Counts) {
        for (operation, count) in self.backend.counter().snapshot() {
            let delta = count - before.get(&operation).copied().unwrap_or(0);
            if delta > 0 {
                *self.polling.entry(operation).or_default() += delta;
            }
        }
    }

    /// Runs one execution to its end.
    async fn run(&mut self, id: &str, input: Value) -> ExecutionRecord {
        self.coordinator
            .start("order-processing", None, id, input)
            .await
            .expect("start");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let busy = self.coordinator_round().await;
            let before = self.backend.counter().snapshot();
            let record = self
                .backend
                .store()
                .load(id)
                .await
                .expect("load")
                .expect("the execution exists");
            self.charge_polling(&before);
            if record.status().is_terminal() {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} did not finish: {:?}",
                record.state
            );
            if !busy {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Receives one batch from the coordinator queue and applies it; true if there was one.
    async fn coordinator_round(&mut self) -> bool {
        let sqs = self.backend.clients().sqs.clone();
        let url = self.backend.settings().coordinator_queue_url.clone();
        let before = self.backend.counter().snapshot();
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .await
            .expect("receive coordinator messages");
        self.charge_polling(&before);
        let received = out.messages();
        if received.is_empty() {
            return false;
        }
        let batch = received.iter().map(QueueMessage::from).collect();
        let failed = process_coordinator_batch(&self.coordinator, batch).await;
        assert!(failed.is_empty(), "coordinator: {failed:?}");
        let before = self.backend.counter().snapshot();
        for m in received {
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete a coordinator message");
        }
        self.charge_polling(&before);
        true
    }

    fn effects_of(&self, execution: &str) -> Vec<String> {
        self.ledger
            .effects()
            .expect("effects")
            .into_iter()
            .filter(|e| e.execution_id == execution)
            .map(|e| e.function)
            .collect()
    }
}

fn print_counts(title: &str, counts: &Counts) {
    println!("{title}: {} requests", counts.values().sum::<u64>());
    for (operation, count) in counts {
        println!("  {operation:<32} {count}");
    }
}

#[tokio::test]
async fn the_order_saga_succeeds_through_the_coordinator_queue() {
    let mut harness = Harness::new("saga-ok").await;
    let started = Instant::now();

    let record = harness.run("order-1", json!({"orderId": "o-1"})).await;

    assert_eq!(
        record.status(),
        ExecutionStatus::Succeeded,
        "{:?}",
        record.state
    );
    let output = record.state.output.clone().expect("an output");
    assert_eq!(output["orderId"], json!("o-1"));
    assert!(output["trackingNumber"].is_string(), "{output}");
    assert_eq!(
        harness.effects_of("order-1"),
        [
            "reserve-inventory",
            "process-payment",
            "ship-order",
            "notify-customer"
        ]
    );
    let all = harness.backend.counter().snapshot();
    let mut work = all.clone();
    for (operation, count) in &harness.polling {
        if let Some(total) = work.get_mut(operation) {
            *total -= count;
        }
    }
    work.retain(|_, count| *count > 0);
    println!(
        "one order saga (5 steps) took {:?} against moto server",
        started.elapsed()
    );
    print_counts(
        "AWS requests by Baton's coordinator and the step results' destinations (plus, on AWS, one Lambda Invoke per attempt)",
        &work,
    );
    print_counts(
        "AWS requests by the test (standing in for the coordinator's event source mapping, and polling the status)",
        &harness.polling,
    );
    print_counts("all AWS requests", &all);
}

#[tokio::test]
async fn a_failing_payment_is_compensated_by_releasing_the_reservation() {
    let mut harness = Harness::new("saga-fail").await;

    let record = harness
        .run(
            "order-2",
            json!({"orderId": "o-2", "fail": {"process-payment": "always"}}),
        )
        .await;

    assert_eq!(
        record.status(),
        ExecutionStatus::Compensated,
        "{:?}",
        record.state
    );
    assert_eq!(
        harness.effects_of("order-2"),
        ["reserve-inventory", "release-inventory"]
    );
    let charge = record.state.step("charge").expect("charge");
    assert_eq!(charge.status, StepStatus::Failed);
    assert_eq!(charge.units[0].attempt, 5);
    let reserve = record.state.step("reserve").expect("reserve");
    let release = reserve.units[0]
        .compensation
        .as_ref()
        .expect("reserve was compensated");
    assert_eq!(release.status, UnitStatus::Succeeded);
    let ship = record.state.step("ship").expect("ship");
    assert!(ship.units.iter().all(|u| u.attempt == 0), "{ship:?}");
    let payment_calls: Vec<_> = harness
        .ledger
        .calls()
        .expect("calls")
        .into_iter()
        .filter(|c| c.execution_id == "order-2" && c.function == "process-payment")
        .map(|c| (c.attempt, c.outcome))
        .collect();
    assert_eq!(
        payment_calls,
        (1..=5)
            .map(|a| (a, CallOutcome::Failed))
            .collect::<Vec<_>>()
    );
}
