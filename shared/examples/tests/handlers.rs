//! The saga's handlers as the runtime sees them: idempotent replays,
//! deterministic ids, failure switches and compensations' input checks.

mod common;

use std::time::Duration;

use baton_examples::handlers::{self, FUNCTIONS};
use baton_examples::{CallOutcome, HandlerEnv, Ledger, register_all, register_all_with};
use baton_runtime::step::{Registry, StepContext, StepError};
use common::{assert_child_passed, compensation, is_child, run_child, step, temp_ledger};
use serde_json::{Value, json};

fn registry(env: HandlerEnv) -> Registry {
    let mut registry = Registry::new();
    register_all_with(&mut registry, env);
    registry
}

async fn call(
    registry: &Registry,
    context: &StepContext,
    input: Value,
) -> Result<Value, StepError> {
    let handler = registry
        .get(&context.function)
        .expect("function is registered");
    handler.call(context.clone(), input).await
}

fn assert_injected(result: &Result<Value, StepError>, retryable: bool) {
    match result {
        Err(error) => {
            assert_eq!(error.name, "InjectedFailure", "{error}");
            assert_eq!(error.retryable, retryable, "{error}");
        }
        Ok(output) => panic!("expected an injected failure, got {output}"),
    }
}

fn assert_invalid_input(result: &Result<Value, StepError>) {
    match result {
        Err(error) => {
            assert_eq!(error.name, "InvalidInput", "{error}");
            assert!(!error.retryable, "{error}");
        }
        Ok(output) => panic!("expected InvalidInput, got {output}"),
    }
}

#[test]
fn register_all_registers_every_saga_function() {
    let (_dir, ledger) = temp_ledger();
    let mut registry = Registry::new();
    register_all(&mut registry, ledger);
    let mut expected = FUNCTIONS.to_vec();
    expected.sort_unstable();
    assert_eq!(registry.functions().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn a_repeated_call_replays_the_same_effect() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "amount": 50});

    let first = call(
        &registry,
        &step("ex-1", "charge", "process-payment", 1),
        input.clone(),
    )
    .await;
    // A retry (or a redelivery) carries the same idempotency key.
    let again = call(
        &registry,
        &step("ex-1", "charge", "process-payment", 2),
        input,
    )
    .await;

    let first = first.expect("first charge");
    assert_eq!(again.expect("second charge"), first);
    assert!(
        first["paymentId"]
            .as_str()
            .is_some_and(|id| id.starts_with("pay-") && id.len() == 16)
    );
    assert_eq!(first["amount"], json!(50));

    let effects = ledger.effects().expect("effects");
    assert_eq!(effects.len(), 1);
    assert_eq!(
        effects[0].attempt, 1,
        "a replay keeps the effect of the first attempt"
    );
    assert_eq!(effects[0].execution_id, "ex-1");
    let calls = ledger.calls().expect("calls");
    let outcomes: Vec<_> = calls.iter().map(|c| (c.attempt, c.outcome)).collect();
    assert_eq!(
        outcomes,
        [(1, CallOutcome::Recorded), (2, CallOutcome::Replayed)]
    );
    assert!(
        ledger
            .effect_counts()
            .expect("counts")
            .values()
            .all(|&n| n == 1)
    );
}

#[tokio::test]
async fn different_keys_give_different_ids() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "amount": 50});
    let a = call(
        &registry,
        &step("ex-1", "charge", "process-payment", 1),
        input.clone(),
    )
    .await
    .expect("a");
    let b = call(
        &registry,
        &step("ex-2", "charge", "process-payment", 1),
        input,
    )
    .await
    .expect("b");
    assert_ne!(a["paymentId"], b["paymentId"]);
    assert_eq!(ledger.effects().expect("effects").len(), 2);
}

#[tokio::test]
async fn the_whole_saga_and_its_compensations_record_each_effect_once() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let ex = "ex-saga";

    let validated = call(
        &registry,
        &step(ex, "validate", "validate-order", 1),
        json!({"orderId": "o-9", "items": [], "fail": {}}),
    )
    .await
    .expect("validate");
    assert_eq!(validated["valid"], json!(true));
    let reserved = call(
        &registry,
        &step(ex, "reserve", "reserve-inventory", 1),
        json!({"orderId": "o-9", "items": validated["items"], "fail": {}}),
    )
    .await
    .expect("reserve");
    let charged = call(
        &registry,
        &step(ex, "charge", "process-payment", 1),
        json!({"orderId": "o-9", "amount": validated["total"], "fail": {}}),
    )
    .await
    .expect("charge");
    assert_eq!(charged["amount"], json!(25));
    let shipped = call(
        &registry,
        &step(ex, "ship", "ship-order", 1),
        json!({"orderId": "o-9", "reservationId": reserved["reservationId"], "fail": {}}),
    )
    .await
    .expect("ship");
    assert!(
        shipped["trackingNumber"]
            .as_str()
            .is_some_and(|t| t.starts_with("TRK"))
    );
    let notified = call(
        &registry,
        &step(ex, "notify", "notify-customer", 1),
        json!({"orderId": "o-9", "trackingNumber": shipped["trackingNumber"], "fail": {}}),
    )
    .await
    .expect("notify");
    assert_eq!(notified, json!({"notified": true}));

    // Undo in reverse, as the engine would, each twice to show replays.
    for _ in 0..2 {
        let cancelled = call(
            &registry,
            &compensation(ex, "ship", "cancel-shipment", 1),
            json!({"shipmentId": shipped["shipmentId"]}),
        )
        .await
        .expect("cancel");
        assert_eq!(cancelled["shipmentId"], shipped["shipmentId"]);
        let refunded = call(
            &registry,
            &compensation(ex, "charge", "refund-payment", 1),
            json!({"paymentId": charged["paymentId"]}),
        )
        .await
        .expect("refund");
        assert_eq!(refunded["paymentId"], charged["paymentId"]);
        let released = call(
            &registry,
            &compensation(ex, "reserve", "release-inventory", 1),
            json!({"reservationId": reserved["reservationId"]}),
        )
        .await
        .expect("release");
        assert_eq!(released["reservationId"], reserved["reservationId"]);
    }

    let counts = ledger.effect_counts().expect("counts");
    let mut functions: Vec<_> = counts
        .keys()
        .map(|(_, function)| function.as_str())
        .collect();
    functions.sort_unstable();
    assert_eq!(
        functions,
        [
            "cancel-shipment",
            "notify-customer",
            "process-payment",
            "refund-payment",
            "release-inventory",
            "reserve-inventory",
            "ship-order"
        ]
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // validate-order has no effect but its call is on record.
    let calls = ledger.calls().expect("calls");
    assert!(
        calls
            .iter()
            .any(|c| c.function == "validate-order" && c.outcome == CallOutcome::Succeeded)
    );
    assert_eq!(calls.len(), 1 + 4 + 6);
}

#[tokio::test]
async fn validate_order_prices_orders_and_rejects_bad_ids() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let ctx = step("ex-v", "validate", "validate-order", 1);

    let default = call(&registry, &ctx, json!({"orderId": "o-1", "items": []}))
        .await
        .expect("default");
    assert_eq!(default["valid"], json!(true));
    assert_eq!(default["orderId"], json!("o-1"));
    assert_eq!(
        default["items"],
        json!([{"sku": "SKU-1", "qty": 1, "price": 25}])
    );
    assert_eq!(default["total"], json!(25));
    assert!(default["customerId"].is_string());

    let priced = call(
        &registry,
        &ctx,
        json!({"orderId": "o-2", "items": [{"sku": "A", "qty": 2, "price": 10}, {"sku": "B", "qty": 3, "price": 1.5}]}),
    )
    .await
    .expect("priced");
    assert_eq!(priced["total"], json!(24.5));

    for order_id in ["", "bad-1", "bad"] {
        let output = call(&registry, &ctx, json!({"orderId": order_id, "items": []}))
            .await
            .expect("invalid order");
        assert_eq!(output["valid"], json!(false), "orderId {order_id:?}");
        assert!(output["reason"].is_string());
    }
    let missing = call(&registry, &ctx, json!({})).await.expect("no orderId");
    assert_eq!(missing["valid"], json!(false));

    let malformed = call(
        &registry,
        &ctx,
        json!({"orderId": "o-3", "items": [{"sku": "A", "qty": -1, "price": 1}]}),
    )
    .await;
    assert_invalid_input(&malformed);
    assert!(
        ledger.effects().expect("effects").is_empty(),
        "validation has no side effect"
    );
}

#[tokio::test]
async fn noop_returns_its_input_and_touches_nothing() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"anything": [1, 2, 3], "fail": {"noop": "always"}});
    let output = call(&registry, &step("ex-n", "bench", "noop", 1), input.clone())
        .await
        .expect("noop");
    assert_eq!(output, input);
    assert!(ledger.calls().expect("calls").is_empty());
}

#[tokio::test]
async fn always_fails_every_attempt_retryably_and_records_nothing() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "amount": 5, "fail": {"process-payment": "always"}});
    for attempt in 1..=4 {
        let result = call(
            &registry,
            &step("ex-a", "charge", "process-payment", attempt),
            input.clone(),
        )
        .await;
        assert_injected(&result, true);
    }
    assert!(ledger.effects().expect("effects").is_empty());
    let calls = ledger.calls().expect("calls");
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| {
        c.outcome == CallOutcome::Failed
            && c.error
                .as_deref()
                .is_some_and(|e| e.starts_with("InjectedFailure"))
    }));
}

#[tokio::test]
async fn permanent_fails_without_retry() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input =
        json!({"orderId": "o-1", "reservationId": "res-1", "fail": {"ship-order": "permanent"}});
    let result = call(&registry, &step("ex-p", "ship", "ship-order", 1), input).await;
    assert_injected(&result, false);
    assert!(ledger.effects().expect("effects").is_empty());
}

#[tokio::test]
async fn first_n_fails_attempts_one_to_n_then_succeeds() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "items": [], "fail": {"reserve-inventory": {"first": 2}}});
    for attempt in 1..=2 {
        let result = call(
            &registry,
            &step("ex-f", "reserve", "reserve-inventory", attempt),
            input.clone(),
        )
        .await;
        assert_injected(&result, true);
        assert!(
            ledger.effects().expect("effects").is_empty(),
            "no effect on failed attempt {attempt}"
        );
    }
    let third = call(
        &registry,
        &step("ex-f", "reserve", "reserve-inventory", 3),
        input,
    )
    .await
    .expect("attempt 3");
    assert!(third["reservationId"].is_string());
    let effects = ledger.effects().expect("effects");
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].attempt, 3);
    let outcomes: Vec<_> = ledger
        .calls()
        .expect("calls")
        .iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            CallOutcome::Failed,
            CallOutcome::Failed,
            CallOutcome::Recorded
        ]
    );
}

#[tokio::test]
async fn a_switch_for_another_function_changes_nothing() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "amount": 5, "fail": {"ship-order": "always"}});
    call(
        &registry,
        &step("ex-o", "charge", "process-payment", 1),
        input,
    )
    .await
    .expect("charge");
}

#[tokio::test]
async fn slow_ms_delays_the_work_so_a_short_timeout_fires() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o-1", "trackingNumber": "TRK1", "fail": {"notify-customer": {"slow_ms": 400}}});
    let ctx = step("ex-s", "notify", "notify-customer", 1);

    let timed_out = tokio::time::timeout(
        Duration::from_millis(50),
        call(&registry, &ctx, input.clone()),
    )
    .await;
    assert!(timed_out.is_err(), "the handler should still be sleeping");
    assert!(
        ledger.effects().expect("effects").is_empty(),
        "the delay comes before the effect"
    );

    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(10), call(&registry, &ctx, input)).await;
    assert_eq!(
        output.expect("in time").expect("notify"),
        json!({"notified": true})
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(ledger.effects().expect("effects").len(), 1);
}

#[tokio::test]
async fn compensations_refuse_a_missing_id() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let cases = [
        ("reserve", "release-inventory", "reservationId"),
        ("charge", "refund-payment", "paymentId"),
        ("ship", "cancel-shipment", "shipmentId"),
    ];
    for (step_name, function, field) in cases {
        let ctx = compensation("ex-c", step_name, function, 1);
        for input in [
            json!({}),
            json!({field: ""}),
            json!({field: null}),
            json!({field: 7}),
            json!(null),
        ] {
            let result = call(&registry, &ctx, input.clone()).await;
            assert_invalid_input(&result);
            let message = result.err().map(|e| e.message).unwrap_or_default();
            assert!(message.contains(field), "{function} {input}: {message}");
        }
    }
    assert!(ledger.effects().expect("effects").is_empty());
    assert!(
        ledger
            .calls()
            .expect("calls")
            .iter()
            .all(|c| c.outcome == CallOutcome::Failed)
    );
}

#[tokio::test]
async fn compensations_take_switches_from_the_fallback_table() {
    let (_dir, ledger) = temp_ledger();
    let env = HandlerEnv::new(ledger.clone())
        .with_fallback_fail(r#"{"refund-payment": "always", "cancel-shipment": {"first": 1}}"#);
    let registry = registry(env);

    let refund = compensation("ex-e", "charge", "refund-payment", 1);
    let result = call(&registry, &refund, json!({"paymentId": "pay-1"})).await;
    assert_injected(&result, true);

    // The input's entry wins: null turns the fallback's switch off.
    let output = call(
        &registry,
        &refund,
        json!({"paymentId": "pay-1", "fail": {"refund-payment": null}}),
    )
    .await
    .expect("refund with the switch turned off");
    assert_eq!(output["paymentId"], json!("pay-1"));

    let cancel = |attempt| compensation("ex-e", "ship", "cancel-shipment", attempt);
    assert_injected(
        &call(&registry, &cancel(1), json!({"shipmentId": "shp-1"})).await,
        true,
    );
    call(&registry, &cancel(2), json!({"shipmentId": "shp-1"}))
        .await
        .expect("second attempt");
}

#[tokio::test]
async fn a_malformed_switch_is_invalid_input_not_silently_ignored() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()).with_fallback_fail("{oops"));
    let result = call(
        &registry,
        &compensation("ex-m", "ship", "cancel-shipment", 1),
        json!({"shipmentId": "s"}),
    )
    .await;
    assert_invalid_input(&result);

    let registry = self::registry(HandlerEnv::new(ledger.clone()));
    let input = json!({"orderId": "o", "amount": 1, "fail": {"process-payment": "sometimes"}});
    assert_invalid_input(
        &call(
            &registry,
            &step("ex-m", "charge", "process-payment", 1),
            input,
        )
        .await,
    );
    assert!(ledger.effects().expect("effects").is_empty());
}

#[tokio::test]
async fn handlers_can_be_called_directly() {
    let (_dir, ledger) = temp_ledger();
    let env = HandlerEnv::new(ledger.clone());
    let ctx = step("ex-d", "reserve", "reserve-inventory", 1);
    let a = handlers::reserve_inventory(env.clone(), ctx.clone(), json!({}))
        .await
        .expect("reserve");
    let b = handlers::reserve_inventory(env, ctx, json!({}))
        .await
        .expect("replay");
    assert_eq!(a, b);
}

// ---- child processes ----

#[test]
fn crash_aborts_the_process_before_the_effect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ledger.db");
    let db_text = db.to_str().expect("utf-8 temp path");
    let output = run_child(
        "child_crashes_on_a_crash_switch",
        dir.path(),
        &[("BATON_LEDGER", db_text)],
    );
    assert!(
        !output.status.success(),
        "the child should have been aborted"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(6),
            "SIGABRT expected, got {}",
            output.status
        );
    }
    let ledger = Ledger::open(&db).expect("reopen ledger");
    assert!(ledger.effects().expect("effects").is_empty());
    let outcomes: Vec<_> = ledger
        .calls()
        .expect("calls")
        .iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(outcomes, [CallOutcome::Crashed]);
}

#[tokio::test]
#[ignore = "entry point of a child process started by crash_aborts_the_process_before_the_effect"]
async fn child_crashes_on_a_crash_switch() {
    if !is_child() {
        return;
    }
    let ledger = std::sync::Arc::new(Ledger::open_default().expect("ledger"));
    let registry = registry(HandlerEnv::new(ledger));
    let input = json!({"orderId": "o-1", "amount": 5, "fail": {"process-payment": "crash"}});
    let result = call(
        &registry,
        &step("ex-x", "charge", "process-payment", 1),
        input,
    )
    .await;
    panic!("the crash switch returned instead of aborting: {result:?}");
}

#[test]
fn register_all_reads_baton_fail_and_baton_ledger_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("env/ledger.db");
    let db_text = db.to_str().expect("utf-8 temp path");
    let output = run_child(
        "child_uses_the_environment",
        dir.path(),
        &[
            ("BATON_LEDGER", db_text),
            ("BATON_FAIL", r#"{"release-inventory": "permanent"}"#),
        ],
    );
    assert_child_passed(&output);
    let ledger = Ledger::open(&db).expect("the child used BATON_LEDGER");
    let calls = ledger.calls().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].function, "release-inventory");
    assert_eq!(calls[0].outcome, CallOutcome::Failed);
}

#[tokio::test]
#[ignore = "entry point of a child process started by register_all_reads_baton_fail_and_baton_ledger_from_the_environment"]
async fn child_uses_the_environment() {
    if !is_child() {
        return;
    }
    let ledger = std::sync::Arc::new(Ledger::open_default().expect("ledger"));
    let mut registry = Registry::new();
    register_all(&mut registry, ledger);
    let result = call(
        &registry,
        &compensation("ex-env", "reserve", "release-inventory", 1),
        json!({"reservationId": "res-1"}),
    )
    .await;
    assert_injected(&result, false);
}

#[test]
fn the_default_ledger_is_under_dot_baton() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_child("child_opens_the_default_ledger", dir.path(), &[]);
    assert_child_passed(&output);
    assert!(dir.path().join(".baton/ledger.db").exists());
}

#[test]
#[ignore = "entry point of a child process started by the_default_ledger_is_under_dot_baton"]
fn child_opens_the_default_ledger() {
    if !is_child() {
        return;
    }
    assert_eq!(
        Ledger::default_path().expect("path"),
        std::path::Path::new(".baton/ledger.db")
    );
    Ledger::open_default().expect("open");
}

#[tokio::test]
async fn a_compensation_of_an_unknown_outcome_undoes_the_id_the_step_would_have_made() {
    let (_dir, ledger) = temp_ledger();
    let registry = registry(HandlerEnv::new(ledger.clone()));
    let reserve = step("ex-u", "reserve", "reserve-inventory", 1);
    let reserved = call(&registry, &reserve, json!({"orderId": "o-u"}))
        .await
        .expect("reserved");
    // The reservation's result was lost and its attempt timed out: the
    // engine hands the compensation the step's key instead of its output.
    let unknown = json!({
        "outcome_unknown": true,
        "step_input": {"orderId": "o-u"},
        "step_idempotency_key": reserve.idempotency_key,
    });
    let released = call(
        &registry,
        &compensation("ex-u", "reserve", "release-inventory", 1),
        unknown,
    )
    .await
    .expect("released");
    assert_eq!(released["reservationId"], reserved["reservationId"]);
    assert_eq!(released["released"], true);
}
