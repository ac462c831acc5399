//! Four workers race for the tasks of 200 executions in one database:
//! nothing may be lost, stuck, run twice, or finished twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Sandbox, test_workflow};
use serde_json::{Value, json};

const EXECUTIONS: usize = 200;
const WORKERS: usize = 4;
const STARTERS: usize = 4;

/// Every eighth execution is the order saga, so the ledger sees side effects;
/// the rest are three noop steps.
fn is_saga(i: usize) -> bool {
    i.is_multiple_of(8)
}

#[test]
fn four_workers_run_200_executions_exactly_once() {
    let mut sb = Sandbox::new();
    // The first start creates the database; the workers open it afterwards.
    let noop = test_workflow("noop-chain.yaml");
    let saga = test_workflow("saga-short.yaml");
    let jobs: Vec<(String, &std::path::Path, Value)> = (0..EXECUTIONS)
        .map(|i| {
            if is_saga(i) {
                (
                    format!("race-{i:03}"),
                    saga.as_path(),
                    json!({"orderId": format!("o-race-{i}")}),
                )
            } else {
                (format!("race-{i:03}"), noop.as_path(), json!({"n": i}))
            }
        })
        .collect();
    let ids: Vec<String> = jobs.iter().map(|(id, _, _)| id.clone()).collect();
    let (first, rest) = jobs.split_first().unwrap();
    sb.start(first.1, &first.0, &first.2);

    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS).map(|_| sb.worker(&[])).collect();
    // Executions keep arriving while the workers run, from several processes at once.
    std::thread::scope(|scope| {
        for chunk in rest.chunks(rest.len().div_ceil(STARTERS)) {
            let sb = &sb;
            scope.spawn(move || {
                for (id, workflow, input) in chunk {
                    sb.start(workflow, id, input);
                }
            });
        }
    });
    let statuses = sb.wait_terminal(&ids, Duration::from_secs(120));
    eprintln!(
        "{EXECUTIONS} executions finished in {:?}",
        started.elapsed()
    );

    let not_succeeded: Vec<_> = statuses.iter().filter(|(_, s)| *s != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:?}");
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM executions"),
        EXECUTIONS as i64
    );

    let finishes = sb.finish_event_counts();
    let twice: Vec<_> = ids
        .iter()
        .filter(|id| finishes.get(*id) != Some(&1))
        .collect();
    assert!(
        twice.is_empty(),
        "executions not finished exactly once: {twice:?}"
    );

    // Each step's result was applied once, however many workers saw its task.
    let conn = sb.db();
    let mut stmt = conn
        .prepare(
            "SELECT execution_id, json_extract(body, '$.step'), COUNT(*) FROM events
             WHERE kind = 'step.succeeded' GROUP BY execution_id, json_extract(body, '$.step')",
        )
        .unwrap();
    let succeeded: BTreeMap<(String, String), i64> = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let repeated: Vec<_> = succeeded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "steps that succeeded more than once: {repeated:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let steps = succeeded.keys().filter(|(e, _)| e == id).count();
        assert_eq!(steps, if is_saga(i) { 5 } else { 3 }, "steps of {id}");
    }

    // Each execution got its own results (the stored state is a snapshot
    // and the history after it, so it is read through the backend).
    let backend = baton_embedded::SqliteBackend::open(
        &sb.db_path(),
        baton_embedded::SqliteOptions::default(),
    )
    .expect("open the database");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outputs: BTreeMap<String, String> = ids
        .iter()
        .map(|id| {
            let record = runtime
                .block_on(baton_runtime::ports::ExecutionStore::load(&backend, id))
                .unwrap()
                .unwrap();
            let output = record.state.output.clone().unwrap_or(Value::Null);
            (id.clone(), output.to_string())
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let output: Value = serde_json::from_str(&outputs[id]).unwrap();
        if is_saga(i) {
            assert_eq!(output["orderId"], format!("o-race-{i}"), "{id}: {output}");
        } else {
            assert_eq!(output, json!({"n": i, "steps": 3}), "{id}");
        }
    }

    assert_eq!(
        sb.duplicate_effects(),
        [],
        "a side effect happened more than once"
    );
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| is_saga(*i)) {
        assert_eq!(
            sb.effects(id),
            [
                "reserve-inventory",
                "process-payment",
                "ship-order",
                "notify-customer"
            ],
            "side effects of {id} (execution {i})"
        );
    }
    assert_eq!(
        sb.count("SELECT COUNT(*) FROM dead_letters"),
        0,
        "a task was dead-lettered"
    );
    let drained = common::wait_until("the task queue to drain", Duration::from_secs(10), || {
        (sb.count("SELECT COUNT(*) FROM tasks") == 0).then_some(())
    });
    assert!(drained.is_some(), "tasks are left in the queue");

    // The work was shared: several workers finished executions.
    let finished_by: Vec<usize> = workers
        .iter()
        .map(|w| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .matches("execution finished")
                .count()
        })
        .collect();
    eprintln!("executions finished by each worker: {finished_by:?}");
    assert!(
        finished_by.iter().filter(|n| **n > 0).count() >= 2,
        "{finished_by:?}"
    );
}
