//! The order saga's step handlers (see `workflows/order-saga.yaml`) and
//! [`register_all`], which puts them in a [`Registry`].
//!
//! Each side-effecting handler behaves like a well-behaved outside service:
//! its ids derive from the idempotency key, and it records its effect in the
//! [`Ledger`] under that key, returning the stored effect when the key was
//! seen before. Retries and redeliveries therefore never double-charge, and
//! a broken deduplication anywhere upstream shows up as a second row.
//!
//! Every handler except `noop` honours the failure switches of
//! [`crate::failure`] and records each invocation in the ledger's `calls`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_runtime::step::{Registry, StepContext, StepError, StepHandler, handler_fn};
use serde_json::{Map, Number, Value, json};
use tracing::{error, info, trace, warn};

use crate::failure::{self, FAIL_ENV, FailureSwitch};
use crate::ledger::{CallOutcome, Ledger, LedgerError};

pub const VALIDATE_ORDER: &str = "validate-order";
pub const RESERVE_INVENTORY: &str = "reserve-inventory";
pub const RELEASE_INVENTORY: &str = "release-inventory";
pub const PROCESS_PAYMENT: &str = "process-payment";
pub const REFUND_PAYMENT: &str = "refund-payment";
pub const SHIP_ORDER: &str = "ship-order";
pub const CANCEL_SHIPMENT: &str = "cancel-shipment";
pub const NOTIFY_CUSTOMER: &str = "notify-customer";
pub const NOOP: &str = "noop";

/// Every function name [`register_all`] registers.
pub const FUNCTIONS: [&str; 9] = [
    VALIDATE_ORDER,
    RESERVE_INVENTORY,
    RELEASE_INVENTORY,
    PROCESS_PAYMENT,
    REFUND_PAYMENT,
    SHIP_ORDER,
    CANCEL_SHIPMENT,
    NOTIFY_CUSTOMER,
    NOOP,
];

/// What the handlers share: the ledger, and the fallback switch table.
#[derive(Debug, Clone)]
pub struct HandlerEnv {
    pub ledger: Arc<Ledger>,
    /// Raw JSON of the fallback switch table (normally `$BATON_FAIL`). Kept
    /// as text and parsed on each call, so a malformed value fails steps
    /// with a clear `InvalidInput` instead of being ignored.
    pub fallback_fail: Option<String>,
}

impl HandlerEnv {
    /// No fallback switches: only the input's `fail` field applies.
    pub fn new(ledger: Arc<Ledger>) -> HandlerEnv {
        HandlerEnv {
            ledger,
            fallback_fail: None,
        }
    }

    /// Takes the fallback switch table from `$BATON_FAIL`, read once here.
    pub fn from_env(ledger: Arc<Ledger>) -> HandlerEnv {
        HandlerEnv {
            ledger,
            fallback_fail: std::env::var_os(FAIL_ENV)
                .map(|value| value.to_string_lossy().into_owned()),
        }
    }

    pub fn with_fallback_fail(mut self, table: impl Into<String>) -> HandlerEnv {
        self.fallback_fail = Some(table.into());
        self
    }
}

/// Registers every example function, with `$BATON_FAIL` as the fallback
/// switch table.
pub fn register_all(registry: &mut Registry, ledger: Arc<Ledger>) {
    register_all_with(registry, HandlerEnv::from_env(ledger));
}

/// Registers every example function sharing `env`.
pub fn register_all_with(registry: &mut Registry, env: HandlerEnv) {
    registry
        .register(VALIDATE_ORDER, bind(&env, validate_order))
        .register(RESERVE_INVENTORY, bind(&env, reserve_inventory))
        .register(RELEASE_INVENTORY, bind(&env, release_inventory))
        .register(PROCESS_PAYMENT, bind(&env, process_payment))
        .register(REFUND_PAYMENT, bind(&env, refund_payment))
        .register(SHIP_ORDER, bind(&env, ship_order))
        .register(CANCEL_SHIPMENT, bind(&env, cancel_shipment))
        .register(NOTIFY_CUSTOMER, bind(&env, notify_customer))
        .register(NOOP, handler_fn(noop));
}

fn bind<F, Fut>(env: &HandlerEnv, handler: F) -> Arc<dyn StepHandler>
where
    F: Fn(HandlerEnv, StepContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, StepError>> + Send + 'static,
{
    let env = env.clone();
    handler_fn(move |context, input| handler(env.clone(), context, input))
}

/// `validate-order`: checks the order and prices it; no side effect.
///
/// Output `{valid, orderId, items, total, customerId}` (plus `reason` when
/// not valid). Valid unless `orderId` is empty or starts with `"bad"`; an
/// empty `items` becomes one `SKU-1` at 25. Malformed items are a permanent
/// `InvalidInput`.
pub async fn validate_order(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    pure_step(&env, VALIDATE_ORDER, context, input, |input| {
        let order_id = optional_string(input, "orderId")?.unwrap_or_default();
        let items = order_items(input)?;
        let total = order_total(&items)?;
        let customer_id =
            optional_string(input, "customerId")?.unwrap_or_else(|| format!("cust-{order_id}"));
        let reason = if order_id.trim().is_empty() {
            Some("orderId is empty")
        } else if order_id.starts_with("bad") {
            Some("orderId starts with \"bad\"")
        } else {
            None
        };
        let mut output = json!({
            "valid": reason.is_none(),
            "orderId": order_id,
            "items": items,
            "total": total,
            "customerId": customer_id,
        });
        if let (Some(reason), Some(fields)) = (reason, output.as_object_mut()) {
            fields.insert("reason".to_owned(), json!(reason));
        }
        Ok(output)
    })
    .await
}

/// `reserve-inventory`: output `{reservationId}`.
pub async fn reserve_inventory(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, RESERVE_INVENTORY, context, input, |_, tail| {
        Ok(json!({ "reservationId": format!("res-{tail}") }))
    })
    .await
}

/// `release-inventory` (compensates `reserve-inventory`): input `{reservationId}`.
pub async fn release_inventory(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, RELEASE_INVENTORY, context, input, |input, _| {
        let reservation_id = undo_id(input, "reservationId", "res")?;
        Ok(json!({ "reservationId": reservation_id, "released": true }))
    })
    .await
}

/// `process-payment`: input `{orderId, amount}`, output `{paymentId, amount}`.
pub async fn process_payment(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, PROCESS_PAYMENT, context, input, |input, tail| {
        let amount = required_amount(input)?;
        Ok(json!({ "paymentId": format!("pay-{tail}"), "amount": amount }))
    })
    .await
}

/// `refund-payment` (compensates `process-payment`): input `{paymentId}`.
pub async fn refund_payment(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, REFUND_PAYMENT, context, input, |input, tail| {
        let payment_id = undo_id(input, "paymentId", "pay")?;
        Ok(json!({ "refundId": format!("ref-{tail}"), "paymentId": payment_id }))
    })
    .await
}

/// `ship-order`: input `{orderId, reservationId}`, output `{shipmentId, trackingNumber}`.
pub async fn ship_order(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, SHIP_ORDER, context, input, |input, tail| {
        // A shipment picks reserved stock; without a reservation there is nothing to ship.
        required_id(input, "reservationId")?;
        Ok(json!({
            "shipmentId": format!("shp-{tail}"),
            "trackingNumber": format!("TRK{}", tail.to_uppercase()),
        }))
    })
    .await
}

/// `cancel-shipment` (compensates `ship-order`): input `{shipmentId}`.
pub async fn cancel_shipment(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, CANCEL_SHIPMENT, context, input, |input, _| {
        let shipment_id = undo_id(input, "shipmentId", "shp")?;
        Ok(json!({ "shipmentId": shipment_id, "cancelled": true }))
    })
    .await
}

/// `notify-customer`: output `{notified: true}`. Sending the e-mail is the
/// side effect, recorded so a duplicate e-mail would be visible.
pub async fn notify_customer(
    env: HandlerEnv,
    context: StepContext,
    input: Value,
) -> Result<Value, StepError> {
    effect_step(&env, NOTIFY_CUSTOMER, context, input, |_, _| {
        Ok(json!({ "notified": true }))
    })
    .await
}

/// `noop`: returns its input. No ledger, no switches, nothing else, so
/// benchmarks measure the runtime rather than the handler.
pub async fn noop(_context: StepContext, input: Value) -> Result<Value, StepError> {
    Ok(input)
}

/// Runs a side-effecting handler: switches, then input checks, then the
/// deduplicated effect. `build` gets the input and the id suffix derived
/// from the idempotency key.
async fn effect_step(
    env: &HandlerEnv,
    function: &'static str,
    context: StepContext,
    input: Value,
    build: impl FnOnce(&Value, &str) -> Result<Value, StepError>,
) -> Result<Value, StepError> {
    trace!(function, execution_id = %context.execution_id, step = %context.step, attempt = context.attempt, %input, "step input");
    let result = async {
        inject_failure(env, function, &context, &input).await?;
        let tail = id_tail(&context.idempotency_key)?;
        let effect = build(&input, &tail)?;
        let recorded = {
            let context = context.clone();
            with_ledger(env, move |ledger| ledger.record_effect(function, &context, &effect)).await?
        };
        info!(
            execution_id = %context.execution_id,
            step = %context.step,
            index = context.index,
            attempt = context.attempt,
            function,
            idempotency_key = %context.idempotency_key,
            effect_row = recorded.effect.id,
            replayed = recorded.replayed,
            "{}",
            if recorded.replayed { "side effect replayed" } else { "side effect recorded" }
        );
        trace!(function, idempotency_key = %context.idempotency_key, effect = %recorded.effect.effect, "effect");
        Ok(recorded.effect.effect)
    }
    .await;
    finish(env, function, &context, result).await
}

/// Runs a handler without a side effect: switches, then `build`.
async fn pure_step(
    env: &HandlerEnv,
    function: &'static str,
    context: StepContext,
    input: Value,
    build: impl FnOnce(&Value) -> Result<Value, StepError>,
) -> Result<Value, StepError> {
    trace!(function, execution_id = %context.execution_id, step = %context.step, attempt = context.attempt, %input, "step input");
    let result = async {
        inject_failure(env, function, &context, &input).await?;
        let output = build(&input)?;
        let call_context = context.clone();
        with_ledger(env, move |ledger| {
            ledger.record_call(function, &call_context, CallOutcome::Succeeded, None)
        })
        .await?;
        trace!(function, idempotency_key = %context.idempotency_key, %output, "step output");
        Ok(output)
    }
    .await;
    finish(env, function, &context, result).await
}

/// Records a failed call, so `calls` shows every attempt, not only the
/// successful ones.
async fn finish(
    env: &HandlerEnv,
    function: &'static str,
    context: &StepContext,
    result: Result<Value, StepError>,
) -> Result<Value, StepError> {
    if let Err(step_error) = &result {
        info!(
            execution_id = %context.execution_id,
            step = %context.step,
            index = context.index,
            attempt = context.attempt,
            function,
            idempotency_key = %context.idempotency_key,
            error = %step_error,
            retryable = step_error.retryable,
            "step failed"
        );
        let message = step_error.to_string();
        let call_context = context.clone();
        let recorded = with_ledger(env, move |ledger| {
            ledger.record_call(function, &call_context, CallOutcome::Failed, Some(&message))
        })
        .await;
        if let Err(ledger_error) = recorded {
            warn!(function, idempotency_key = %context.idempotency_key, error = %ledger_error, "could not record the failed call");
        }
    }
    result
}

/// Applies this function's failure switch, if any, before any work is done.
async fn inject_failure(
    env: &HandlerEnv,
    function: &'static str,
    context: &StepContext,
    input: &Value,
) -> Result<(), StepError> {
    let Some(switch) = failure::resolve(function, input, env.fallback_fail.as_deref())? else {
        return Ok(());
    };
    match switch {
        FailureSwitch::SlowMs(ms) => {
            info!(execution_id = %context.execution_id, step = %context.step, attempt = context.attempt, function, idempotency_key = %context.idempotency_key, slow_ms = ms, "injected delay");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        FailureSwitch::Crash => {
            error!(execution_id = %context.execution_id, step = %context.step, attempt = context.attempt, function, idempotency_key = %context.idempotency_key, "injected crash: aborting the process");
            let call_context = context.clone();
            // Best effort: the row lets a test see the crash happened.
            let recorded = with_ledger(env, move |ledger| {
                ledger.record_call(function, &call_context, CallOutcome::Crashed, None)
            })
            .await;
            if let Err(ledger_error) = recorded {
                warn!(function, error = %ledger_error, "could not record the crash");
            }
            std::process::abort();
        }
        other => match other.error_for(function, context.attempt) {
            Some(injected) => Err(injected),
            None => Ok(()),
        },
    }
}

/// Runs a ledger operation off the async threads: it may wait seconds on
/// another process's write lock.
async fn with_ledger<T: Send + 'static>(
    env: &HandlerEnv,
    op: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, StepError> {
    let ledger = Arc::clone(&env.ledger);
    match tokio::task::spawn_blocking(move || op(&ledger)).await {
        Ok(Ok(value)) => Ok(value),
        // Busy or I/O trouble may pass; let the engine retry.
        Ok(Err(ledger_error)) => Err(StepError::retryable(
            "LedgerUnavailable",
            ledger_error.to_string(),
        )),
        Err(join_error) => Err(StepError::retryable(
            "LedgerUnavailable",
            format!("ledger task failed: {join_error}"),
        )),
    }
}

fn invalid(message: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", message)
}

/// The part of an id that comes from the idempotency key: 12 hex digits of
/// a `bk_` key, or a whole key of another shape, so the same key always
/// yields the same id.
fn id_tail(key: &str) -> Result<String, StepError> {
    if key.trim().is_empty() {
        return Err(invalid(
            "the idempotency key is empty: the side effect could not be deduplicated",
        ));
    }
    Ok(match key.strip_prefix("bk_") {
        Some(rest) if !rest.is_empty() => rest.chars().take(12).collect(),
        _ => key.to_owned(),
    })
}

/// The id a compensation undoes: the step's output names it, or, when the
/// step's outcome is unknown (its attempt timed out, so there is no output),
/// it is the id the step derives from its idempotency key (`{prefix}-{tail}`),
/// which the engine passes as `step_idempotency_key`. Undoing an effect that
/// never happened is then a no-op in a real service.
fn undo_id(input: &Value, field: &str, prefix: &str) -> Result<String, StepError> {
    if input.get("outcome_unknown") == Some(&Value::Bool(true)) {
        let key = input
            .get("step_idempotency_key")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("an unknown outcome without the step's idempotency key"))?;
        return Ok(format!("{prefix}-{}", id_tail(key)?));
    }
    required_id(input, field)
}

/// An id a compensation must undo; refusing a missing one keeps a broken
/// saga from looking compensated when nothing was undone.
fn required_id(input: &Value, field: &str) -> Result<String, StepError> {
    match input.get(field) {
        Some(Value::String(id)) if !id.trim().is_empty() => Ok(id.clone()),
        Some(Value::String(_)) => Err(invalid(format!("{field} is empty"))),
        None | Some(Value::Null) => Err(invalid(format!("{field} is missing"))),
        Some(other) => Err(invalid(format!("{field} must be a string, got {other}"))),
    }
}

fn optional_string(input: &Value, field: &str) -> Result<Option<String>, StepError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(invalid(format!("{field} must be a string, got {other}"))),
    }
}

fn required_amount(input: &Value) -> Result<Number, StepError> {
    match input.get("amount") {
        Some(Value::Number(amount))
            if amount.as_f64().is_some_and(|a| a.is_finite() && a >= 0.0) =>
        {
            Ok(amount.clone())
        }
        None | Some(Value::Null) => Err(invalid("amount is missing")),
        Some(other) => Err(invalid(format!(
            "amount must be a non-negative number, got {other}"
        ))),
    }
}

fn order_items(input: &Value) -> Result<Vec<Value>, StepError> {
    let items = match input.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => return Err(invalid(format!("items must be an array, got {other}"))),
    };
    if items.is_empty() {
        return Ok(vec![json!({ "sku": "SKU-1", "qty": 1, "price": 25 })]);
    }
    for (i, item) in items.iter().enumerate() {
        let fields = item
            .as_object()
            .ok_or_else(|| invalid(format!("items[{i}] must be an object, got {item}")))?;
        check_item(i, fields)?;
    }
    Ok(items)
}

fn check_item(i: usize, item: &Map<String, Value>) -> Result<(), StepError> {
    match item.get("sku") {
        Some(Value::String(sku)) if !sku.is_empty() => {}
        _ => {
            return Err(invalid(format!(
                "items[{i}].sku must be a non-empty string"
            )));
        }
    }
    match item.get("qty").and_then(Value::as_u64) {
        Some(qty) if qty > 0 => {}
        _ => {
            return Err(invalid(format!(
                "items[{i}].qty must be a positive integer"
            )));
        }
    }
    match item.get("price").and_then(Value::as_f64) {
        Some(price) if price.is_finite() && price >= 0.0 => Ok(()),
        _ => Err(invalid(format!(
            "items[{i}].price must be a non-negative number"
        ))),
    }
}

/// Sum of qty * price: an integer when every price is one (so 25 stays 25,
/// not 25.0), a float otherwise.
fn order_total(items: &[Value]) -> Result<Value, StepError> {
    let qty = |item: &Value| item.get("qty").and_then(Value::as_u64).unwrap_or(0);
    let integral: Option<u64> = items.iter().try_fold(0u64, |sum, item| {
        let price = item.get("price").and_then(Value::as_u64)?;
        sum.checked_add(qty(item).checked_mul(price)?)
    });
    if let Some(total) = integral {
        return Ok(json!(total));
    }
    let total: f64 = items
        .iter()
        .map(|item| qty(item) as f64 * item.get("price").and_then(Value::as_f64).unwrap_or(0.0))
        .sum();
    Number::from_f64(total)
        .map(Value::Number)
        .ok_or_else(|| invalid("the order total is not a finite number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_take_twelve_hex_digits_of_a_baton_key() {
        assert_eq!(
            id_tail("bk_0123456789abcdef0123"),
            Ok("0123456789ab".to_owned())
        );
        assert_eq!(id_tail("order-7"), Ok("order-7".to_owned()));
        assert!(id_tail("  ").is_err());
    }

    #[test]
    fn totals_stay_integers_when_prices_are() {
        let items = [
            json!({"sku": "a", "qty": 2, "price": 25}),
            json!({"sku": "b", "qty": 1, "price": 10}),
        ];
        assert_eq!(order_total(&items), Ok(json!(60)));
        let items = [json!({"sku": "a", "qty": 3, "price": 2.5})];
        assert_eq!(order_total(&items), Ok(json!(7.5)));
    }
}
