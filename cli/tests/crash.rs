//! Two workers share one database while one of them is SIGKILLed at random
//! moments and restarted. Every execution must still finish, exactly once,
//! and every side effect must happen exactly once.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::{Rng, Sandbox, now_ms, test_workflow};
use serde_json::{Value, json};

const EXECUTIONS: usize = 20;
const KILLS: usize = 6;

/// What execution `i` is asked to do, and the status it must end with.
fn plan(i: usize) -> (Value, &'static str) {
    let order = format!("o-crash-{i}");
    // Slow steps keep tasks in flight long enough for a kill to land mid-task.
    let slow = json!({"slow_ms": 300});
    let mut fail = serde_json::Map::new();
    if i.is_multiple_of(2) {
        for function in [
            "validate-order",
            "reserve-inventory",
            "process-payment",
            "ship-order",
        ] {
            fail.insert(function.into(), slow.clone());
        }
    }
    let expected = if i % 5 == 4 {
        fail.insert("ship-order".into(), json!("permanent"));
        "compensated"
    } else {
        "succeeded"
    };
    (json!({"orderId": order, "fail": fail}), expected)
}

#[test]
fn executions_survive_workers_killed_at_random_moments() {
    let mut rng = Rng::from_env("crash test");
    let mut sb = Sandbox::new();
    let workflow = test_workflow("saga-short.yaml");
    let ids: Vec<String> = (0..EXECUTIONS).map(|i| format!("crash-{i:02}")).collect();

    let mut workers = [sb.worker(&[]), sb.worker(&[])];
    // Executions arrive in waves between kills, so there is always work in flight.
    let per_wave = EXECUTIONS.div_ceil(KILLS - 1);
    let mut kills_with_work_in_flight = 0;
    for kill in 0..KILLS {
        for i in (kill * per_wave..(kill + 1) * per_wave).filter(|i| *i < EXECUTIONS) {
            sb.start(&workflow, &ids[i], &plan(i).0);
        }
        sleep(Duration::from_millis(rng.range(200, 900)));
        let victim = rng.range(0, 2) as usize;
        let leased = sb.count(&format!(
            "SELECT COUNT(*) FROM tasks WHERE lease_until > {}",
            now_ms()
        ));
        workers[victim].kill();
        if leased > 0 {
            kills_with_work_in_flight += 1;
        }
        eprintln!("kill {kill}: worker {victim} with {leased} leased tasks in the database");
        sleep(Duration::from_millis(rng.range(0, 300)));
        workers[victim] = sb.worker(&[]);
    }
    assert!(
        kills_with_work_in_flight >= KILLS / 2,
        "only {kills_with_work_in_flight} of {KILLS} kills found tasks leased; the test did not exercise crashes"
    );

    let statuses = sb.wait_terminal(&ids, Duration::from_secs(90));
    // A task lost with its worker is received again once its lease runs out
    // (the receiving worker logs it), or, if that comes too late, shows up
    // as an attempt that timed out.
    let received_again: usize = std::fs::read_dir(sb.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("task received again")
                .count()
        })
        .sum();
    let timed_out = ids
        .iter()
        .flat_map(|id| sb.events(id))
        .filter(|e| e["kind"] == "step.retrying" && e["error"]["name"] == "Timeout")
        .count();
    eprintln!(
        "{received_again} tasks were received again after a kill; {timed_out} attempts timed out"
    );
    assert!(
        received_again > 0 || timed_out > 0,
        "no kill interrupted a running task"
    );
    for (i, id) in ids.iter().enumerate() {
        let (_, expected) = plan(i);
        assert_eq!(
            statuses[id],
            expected,
            "{id} ended {}: {:#?}",
            statuses[id],
            sb.events(id)
        );
    }

    let finishes = sb.finish_event_counts();
    for id in &ids {
        assert_eq!(
            finishes.get(id),
            Some(&1),
            "{id} finished {:?} times",
            finishes.get(id)
        );
    }

    assert_eq!(
        sb.duplicate_effects(),
        [],
        "a side effect happened more than once"
    );
    for (i, id) in ids.iter().enumerate() {
        let effects = sb.effects(id);
        let expected: &[&str] = match plan(i).1 {
            "succeeded" => &[
                "reserve-inventory",
                "process-payment",
                "ship-order",
                "notify-customer",
            ],
            _ => &[
                "reserve-inventory",
                "process-payment",
                "refund-payment",
                "release-inventory",
            ],
        };
        assert_eq!(effects, expected, "side effects of {id}");
    }
}
