//! The order saga's shipping steps, written with Baton's optional Rust step
//! SDK: [`baton_lambda::step::run`] decodes the step event, enforces its
//! deadline and reports a [`StepError`] with the error type Baton reads
//! (a permanent error's type starts with `Permanent.`).
//!
//! Ids derive from the step's idempotency key, the same on every retry and
//! redelivery, so a retry returns the tracking id the first attempt did.
//! `input.fail` makes a step fail on purpose, keyed by function name:
//! `{"ship-order": "always"}` (retryable), `{"ship-order": "permanent"}`, or
//! `{"ship-order": {"first": N}}` (fails attempts 1..=N, then succeeds).

use baton_runtime::step::{StepContext, StepError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `ship-order`: input `{orderId, reservationId}`, output `{trackingId}`.
pub async fn ship_order(context: StepContext, input: Value) -> Result<Value, StepError> {
    inject_failure("ship-order", &context, &input)?;
    required(&input, "reservationId")?;
    Ok(json!({ "trackingId": format!("trk-{}", id_from(&context)?) }))
}

/// `cancel-shipment` (undoes `ship-order`): input `{trackingId}`, output
/// `{trackingId, cancelled}`.
pub async fn cancel_shipment(context: StepContext, input: Value) -> Result<Value, StepError> {
    inject_failure("cancel-shipment", &context, &input)?;
    // The shipment's outcome is unknown (its attempt timed out): cancel the id
    // it would have made from its key; cancelling nothing is harmless.
    let tracking_id = if input["outcome_unknown"] == true {
        let key = input["step_idempotency_key"].as_str().unwrap_or_default();
        format!("trk-{}", hash(key)?)
    } else {
        required(&input, "trackingId")?
    };
    Ok(json!({ "trackingId": tracking_id, "cancelled": true }))
}

fn inject_failure(function: &str, context: &StepContext, input: &Value) -> Result<(), StepError> {
    let switch = &input["fail"][function];
    let first = switch["first"].as_u64().unwrap_or(0);
    if switch == "always" || u64::from(context.attempt) <= first {
        return Err(StepError::retryable(
            "InjectedFailure",
            format!("{function} fails attempt {} (input.fail)", context.attempt),
        ));
    }
    if switch == "permanent" {
        return Err(StepError::permanent(
            "InjectedFailure",
            format!("{function} fails for good (input.fail)"),
        ));
    }
    Ok(())
}

/// 12 hex digits of the step's idempotency key: the same on every retry.
fn id_from(context: &StepContext) -> Result<String, StepError> {
    hash(&context.idempotency_key)
}

fn hash(key: &str) -> Result<String, StepError> {
    if key.is_empty() {
        return Err(invalid("no idempotency key to derive the id from"));
    }
    let digest = Sha256::digest(key.as_bytes());
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

fn required(input: &Value, field: &str) -> Result<String, StepError> {
    match input[field].as_str() {
        Some(value) if !value.trim().is_empty() => Ok(value.to_string()),
        _ => Err(invalid(&format!("{field} is missing"))),
    }
}

fn invalid(message: &str) -> StepError {
    StepError::permanent("InvalidInput", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_lambda::step::handle;
    use baton_runtime::step::{StepEvent, handler_fn};

    fn event(input: Value, key: &str, attempt: u32) -> StepEvent {
        serde_json::from_value(json!({
            "input": input,
            "baton": {"execution_id": "order-1", "workflow": "order-processing", "step": "ship",
                      "attempt": attempt, "kind": "step", "function": "orders-ship-order",
                      "idempotency_key": key, "deadline": 2_000}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_retry_ships_under_the_same_tracking_id() {
        let ship = handler_fn(ship_order);
        let input = json!({"orderId": "o-1", "reservationId": "res-1"});
        let first = handle(ship.as_ref(), event(input.clone(), "bk-1", 1), 1_000).await;
        let retry = handle(ship.as_ref(), event(input.clone(), "bk-1", 2), 1_000).await;
        let other = handle(ship.as_ref(), event(input, "bk-2", 1), 1_000).await;
        // The Python and Node steps derive their ids the same way.
        assert_eq!(first, Ok(json!({"trackingId": "trk-40d9b17c3201"})));
        assert_eq!(first, retry);
        assert_ne!(first, other);
    }

    #[tokio::test]
    async fn the_failure_switch_reports_the_error_types_baton_reads() {
        let ship = handler_fn(ship_order);
        let failing = |switch: Value| json!({"reservationId": "r", "fail": {"ship-order": switch}});
        let error =
            |result: Result<Value, lambda_runtime::Diagnostic>| result.unwrap_err().error_type;
        let run = |input, attempt| handle(ship.as_ref(), event(input, "bk-1", attempt), 1_000);
        assert_eq!(
            error(run(failing(json!("always")), 1).await),
            "InjectedFailure"
        );
        assert_eq!(
            error(run(failing(json!("permanent")), 1).await),
            "Permanent.InjectedFailure"
        );
        assert_eq!(
            error(run(failing(json!({"first": 1})), 1).await),
            "InjectedFailure"
        );
        assert!(run(failing(json!({"first": 1})), 2).await.is_ok());
        let cancel = handler_fn(cancel_shipment);
        let cancelled = handle(
            cancel.as_ref(),
            event(json!({"trackingId": "trk-1"}), "bk-3", 1),
            1_000,
        )
        .await;
        assert_eq!(
            cancelled,
            Ok(json!({"trackingId": "trk-1", "cancelled": true}))
        );
        let missing = handle(cancel.as_ref(), event(json!({}), "bk-3", 1), 1_000).await;
        assert_eq!(error(missing), "Permanent.InvalidInput");
    }
}
