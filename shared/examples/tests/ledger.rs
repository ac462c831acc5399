//! The ledger under concurrent writers: however many threads or processes
//! record the same idempotency key at once, one effect row results.

mod common;

use std::sync::{Arc, Barrier};

use baton_examples::{CallOutcome, Ledger};
use common::{assert_child_passed, is_child, run_child, step};
use serde_json::json;

const WRITERS: usize = 8;

#[test]
fn concurrent_threads_with_their_own_handles_record_one_effect_per_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Open at the same moment too: creating the file and switching
                // it to WAL must also survive the race.
                barrier.wait();
                let ledger = Ledger::open(&path).expect("open");
                let attempt = u32::try_from(writer + 1).expect("small");
                let mut seen = Vec::new();
                for key in ["k-a", "k-b", "k-c"] {
                    let ctx = step(&format!("ex-{key}"), "charge", "process-payment", attempt);
                    let recorded = ledger
                        .record_effect(
                            "process-payment",
                            &ctx,
                            &json!({"paymentId": key, "writer": writer}),
                        )
                        .expect("record");
                    seen.push(recorded.effect);
                }
                seen
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .collect();

    // Every writer got the same stored effect for each key: the first one.
    for seen in &results {
        assert_eq!(seen, &results[0]);
    }
    let ledger = Ledger::open(&path).expect("open");
    let counts = ledger.effect_counts().expect("counts");
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let calls = ledger.calls().expect("calls");
    assert_eq!(calls.len(), 3 * WRITERS);
    for key in ["k-a", "k-b", "k-c"] {
        let recorded = calls
            .iter()
            .filter(|c| c.execution_id == format!("ex-{key}") && c.outcome == CallOutcome::Recorded)
            .count();
        assert_eq!(recorded, 1, "{key}");
    }
}

#[test]
fn concurrent_processes_record_one_effect_per_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared/ledger.db");
    let path_text = path.to_str().expect("utf-8 temp path").to_owned();
    let children: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            let path_text = path_text.clone();
            std::thread::spawn(move || {
                run_child(
                    "child_records_the_same_keys",
                    &dir,
                    &[("BATON_LEDGER", &path_text)],
                )
            })
        })
        .collect();
    for child in children {
        assert_child_passed(&child.join().expect("child thread"));
    }
    let ledger = Ledger::open(&path).expect("open");
    let counts = ledger.effect_counts().expect("counts");
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(ledger.calls().expect("calls").len(), 4 * 20);
}

#[test]
#[ignore = "entry point of a child process started by concurrent_processes_record_one_effect_per_key"]
fn child_records_the_same_keys() {
    if !is_child() {
        return;
    }
    let ledger = Ledger::open_default().expect("open");
    for n in 0..20 {
        let ctx = step(&format!("ex-{n}"), "ship", "ship-order", 1);
        let recorded = ledger
            .record_effect(
                "ship-order",
                &ctx,
                &json!({"shipmentId": n, "pid": std::process::id()}),
            )
            .expect("record");
        assert_eq!(recorded.effect.effect["shipmentId"], json!(n));
    }
}

#[test]
fn effects_keep_their_context_and_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path().join("ledger.db")).expect("open");
    let mut ctx = step("ex-1", "reserve", "reserve-inventory", 2);
    ctx.index = Some(3);
    let effect = json!({"reservationId": "res-1", "nested": {"n": [1, 2.5, null]}});
    let first = ledger
        .record_effect("reserve-inventory", &ctx, &effect)
        .expect("record");
    assert!(!first.replayed);
    let again = ledger
        .record_effect(
            "reserve-inventory",
            &ctx,
            &json!({"reservationId": "different"}),
        )
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(
        again.effect, first.effect,
        "a replay returns what was stored"
    );

    // The same key under another function is a different effect.
    let other = ledger
        .record_effect("release-inventory", &ctx, &json!({}))
        .expect("other function");
    assert!(!other.replayed);

    let effects = ledger.effects().expect("effects");
    assert_eq!(effects.len(), 2);
    let stored = &effects[0];
    assert_eq!(stored.idempotency_key, ctx.idempotency_key);
    assert_eq!(
        (stored.step.as_str(), stored.index, stored.attempt),
        ("reserve", Some(3), 2)
    );
    assert_eq!(stored.effect, effect);
    assert!(stored.recorded_at > 0);

    ledger
        .record_call(
            "validate-order",
            &ctx,
            CallOutcome::Failed,
            Some("InjectedFailure: x"),
        )
        .expect("call");
    let calls = ledger.calls().expect("calls");
    let outcomes: Vec<_> = calls.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            CallOutcome::Recorded,
            CallOutcome::Replayed,
            CallOutcome::Recorded,
            CallOutcome::Failed
        ]
    );
    assert_eq!(calls[3].error.as_deref(), Some("InjectedFailure: x"));
}
