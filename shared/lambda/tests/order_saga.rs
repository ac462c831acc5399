//! The order saga end to end on moto server, without Lambda: this test plays
//! the SQS event source mappings, receiving from the step queues into
//! `process_step_batch` and from the coordinator queue into
//! `process_coordinator_batch`, deleting what they acknowledge, until the
//! execution finishes.
//!
//! `tests/order-saga-fast.yaml` is the saga with millisecond retry delays.
//! Run with `--nocapture` to see the AWS requests one order costs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_aws::AwsBackend;
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::testing::fresh_backend;
use baton_core::definition::Format;
use baton_core::engine::{StepStatus, UnitStatus};
use baton_core::{ExecutionStatus, Workflow, WorkflowDefinition};
use baton_examples::{CallOutcome, HandlerEnv, Ledger, register_all_with};
use baton_lambda::step::process_step_batch;
use baton_runtime::ports::{ExecutionRecord, LeasedTask, TaskQueue, WorkflowStore};
use baton_runtime::step::Registry;
use baton_runtime::{Clock, Coordinator, SystemClock};
use serde_json::{Value, json};

const SAGA: &str = include_str!("order-saga-fast.yaml");

const FUNCTIONS: [&str; 8] = [
    "validate-order",
    "reserve-inventory",
    "release-inventory",
    "process-payment",
    "refund-payment",
    "ship-order",
    "cancel-shipment",
    "notify-customer",
];

type Counts = BTreeMap<String, u64>;

/// Queues, coordinator and handlers of one test, and the requests the test
/// itself made while playing the event source mappings and watching the
/// execution.
struct Harness {
    backend: AwsBackend,
    coordinator: Coordinator<AwsBackend>,
    registry: Registry,
    ledger: Arc<Ledger>,
    _dir: tempfile::TempDir,
    functions: Vec<String>,
    polling: Counts,
}

impl Harness {
    async fn new(name: &str) -> Harness {
        let backend = fresh_backend(name, &FUNCTIONS, 5).await;
        let definition = WorkflowDefinition::parse(SAGA, Format::Yaml).expect("the saga parses");
        Workflow::from_definition(definition.clone()).expect("the saga validates");
        backend
            .put_workflow(&definition, SystemClock.now())
            .await
            .expect("deploy the saga");
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Arc::new(Ledger::open(dir.path().join("ledger.db")).expect("ledger"));
        let mut registry = Registry::new();
        register_all_with(&mut registry, HandlerEnv::new(ledger.clone()));
        backend.counter().reset();
        Harness {
            coordinator: Coordinator::new(Arc::new(backend.clone()), Arc::new(SystemClock)),
            backend,
            registry,
            ledger,
            _dir: dir,
            functions: FUNCTIONS.iter().map(|f| f.to_string()).collect(),
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
            let busy = self.step_round().await | self.coordinator_round().await;
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

    /// Receives tasks from every step queue and runs them; true if there were any.
    async fn step_round(&mut self) -> bool {
        let before = self.backend.counter().snapshot();
        let leased = self
            .backend
            .receive(&self.functions, 10, 30_000, SystemClock.now())
            .await
            .expect("receive tasks");
        self.charge_polling(&before);
        let mut by_function: BTreeMap<String, Vec<LeasedTask>> = BTreeMap::new();
        for lease in &leased {
            by_function
                .entry(lease.task.function.to_string())
                .or_default()
                .push(lease.clone());
        }
        for (function, leases) in by_function {
            let handler = self.registry.get(&function).expect("an example handler");
            let messages = leases
                .iter()
                .map(|l| QueueMessage {
                    id: l.receipt.clone(),
                    body: serde_json::to_string(&l.task).expect("a task serialises"),
                })
                .collect();
            let failed = process_step_batch(&self.backend, handler.as_ref(), messages).await;
            assert!(failed.is_empty(), "{function}: {failed:?}");
            let before = self.backend.counter().snapshot();
            for lease in &leases {
                self.backend.ack(lease).await.expect("delete a task");
            }
            self.charge_polling(&before);
        }
        !leased.is_empty()
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
async fn the_order_saga_succeeds_through_the_queues() {
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
        "AWS requests by Baton's coordinator and step functions",
        &work,
    );
    print_counts(
        "AWS requests by the test (standing in for the SQS event source mappings, and polling the status)",
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
