//! The optional Rust step SDK on step events, without the Lambda runtime:
//! what a handler sees, and the `errorType` Lambda would report for each way
//! an attempt can end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_core::{TaskKind, Timestamp};
use baton_lambda::step::{decode_event, handle};
use baton_runtime::step::{
    StepContext, StepError, StepEvent, StepHandler, error_from_function, handler_fn,
};
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};

const NOW: Timestamp = 1_764_500_000_000;

fn event(input: Value, deadline: Timestamp) -> StepEvent {
    serde_json::from_value(json!({
        "input": input,
        "baton": {
            "execution_id": "order-1", "workflow": "order-processing", "step": "charge",
            "index": 3, "attempt": 2, "kind": "compensation",
            "function": "orders-process-payment", "idempotency_key": "bk-0123456789abcdef",
            "deadline": deadline
        }
    }))
    .expect("a step event")
}

async fn run(handler: Arc<dyn StepHandler>, input: Value) -> Result<Value, Diagnostic> {
    handle(handler.as_ref(), event(input, NOW + 60_000), NOW).await
}

fn failing(error: StepError) -> Arc<dyn StepHandler> {
    handler_fn(move |_, _| {
        let error = error.clone();
        async move { Err(error) }
    })
}

#[tokio::test]
async fn the_output_is_the_handlers_return_value() {
    let handler = handler_fn(|_, input: Value| async move {
        Ok(json!({"chargeId": format!("ch-{}", input["orderId"].as_str().unwrap_or("?"))}))
    });
    let output = run(handler, json!({"orderId": "o-1"})).await;
    assert_eq!(output, Ok(json!({"chargeId": "ch-o-1"})));
}

#[tokio::test]
async fn the_context_and_input_reach_the_handler_apart() {
    let handler = handler_fn(|context: StepContext, input| async move {
        Ok(json!({"context": context, "input": input}))
    });
    let output = run(handler, json!({"orderId": "o-1", "baton": "mine"}))
        .await
        .expect("succeeds");
    assert_eq!(output["input"], json!({"orderId": "o-1", "baton": "mine"}));
    let context: StepContext = serde_json::from_value(output["context"].clone()).unwrap();
    assert_eq!(
        context,
        StepContext {
            execution_id: "order-1".into(),
            workflow: "order-processing".into(),
            step: "charge".into(),
            index: Some(3),
            attempt: 2,
            kind: TaskKind::Compensation,
            function: "orders-process-payment".into(),
            idempotency_key: "bk-0123456789abcdef".into(),
            deadline: NOW + 60_000,
        }
    );
}

#[tokio::test]
async fn a_permanent_error_reports_a_type_baton_never_retries() {
    let declined = failing(StepError::permanent("CardDeclined", "no funds"));
    let error = run(declined, json!({})).await.expect_err("fails");
    assert_eq!(error.error_type, "Permanent.CardDeclined");
    assert_eq!(error.error_message, "no funds");
    assert!(!error_from_function(&error.error_type, &error.error_message).retryable);

    let prefixed = failing(StepError::permanent("PermanentRefusal", "no"));
    let error = run(prefixed, json!({})).await.expect_err("fails");
    assert_eq!(error.error_type, "PermanentRefusal");
}

#[tokio::test]
async fn a_retryable_error_keeps_its_name() {
    let throttled = failing(StepError::retryable("Throttled", "slow down"));
    let error = run(throttled, json!({})).await.expect_err("fails");
    assert_eq!(
        (error.error_type.as_str(), error.error_message.as_str()),
        ("Throttled", "slow down")
    );
    assert!(error_from_function(&error.error_type, &error.error_message).retryable);
}

#[tokio::test]
async fn a_panic_fails_the_attempt_as_retryable() {
    let handler = handler_fn(|_, input: Value| async move {
        if input["boom"] == json!(true) {
            panic!("the card reader exploded");
        }
        Ok(input)
    });
    let error = run(handler.clone(), json!({"boom": true}))
        .await
        .expect_err("fails");
    assert_eq!(error.error_type, "HandlerPanicked");
    assert_eq!(error.error_message, "the card reader exploded");
    assert!(error_from_function(&error.error_type, "").retryable);
    // The same handler still serves the next event.
    assert_eq!(
        run(handler, json!({"boom": false})).await,
        Ok(json!({"boom": false}))
    );
}

#[tokio::test]
async fn a_task_past_its_deadline_does_not_run() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn(move |_, input| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(input) }
    });
    for deadline in [NOW, NOW - 1] {
        let error = handle(handler.as_ref(), event(json!({}), deadline), NOW)
            .await
            .expect_err("fails");
        assert_eq!(error.error_type, "DeadlineExceeded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_handler_still_running_at_the_deadline_times_out() {
    let handler = handler_fn(|_, input| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(input)
    });
    let started = std::time::Instant::now();
    let error = handle(handler.as_ref(), event(json!({}), NOW + 50), NOW)
        .await
        .expect_err("fails");
    assert_eq!(error.error_type, "Timeout");
    assert!(error_from_function(&error.error_type, "").retryable);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_event_that_is_not_a_step_event_is_refused_for_good() {
    let error = decode_event(json!({"orderId": "o-1"})).expect_err("refused");
    assert_eq!(error.error_type, "Permanent.InvalidEvent");
    assert!(!error_from_function(&error.error_type, &error.error_message).retryable);
    let event = decode_event(serde_json::to_value(event(json!({"a": 1}), NOW)).unwrap())
        .expect("a step event decodes");
    assert_eq!(event.input, json!({"a": 1}));
}
