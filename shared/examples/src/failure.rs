//! Failure switches: how a user or a test makes an example handler fail on
//! purpose, to watch retries, timeouts, compensations and dead letters.
//!
//! A switch table is a JSON object keyed by function name:
//!
//! ```json
//! {"process-payment": "always", "ship-order": {"first": 2}, "refund-payment": "permanent"}
//! ```
//!
//! | value             | effect                                                              |
//! |-------------------|---------------------------------------------------------------------|
//! | `"always"`        | retryable `InjectedFailure` on every attempt                        |
//! | `"permanent"`     | non-retryable `InjectedFailure`                                     |
//! | `{"first": N}`    | retryable `InjectedFailure` on attempts `1..=N`, then normal work   |
//! | `{"slow_ms": N}`  | sleeps `N` ms before the work, so a short step timeout fires        |
//! | `"crash"`         | aborts the whole process (`std::process::abort`): a poison pill     |
//! | `null`            | no switch (lets the input turn off one set in `BATON_FAIL`)         |
//!
//! A table comes from the step input's `fail` field or from the `BATON_FAIL`
//! environment variable. Compensations need the variable because their input
//! is only the id to undo. For each function the input's entry, when
//! present, takes precedence over the variable's.
//!
//! `"crash"` kills the worker (or Lambda) process mid-attempt, with no
//! result reported; it exists to test lease expiry and redelivery, and will
//! take down every other task running in the same process.
//!
//! Injected failures happen before the handler records its effect, so a
//! failed attempt never leaves a side effect behind.

use baton_runtime::step::StepError;
use serde_json::Value;

/// Environment variable holding a fallback switch table (same JSON shape as
/// the input's `fail` field).
pub const FAIL_ENV: &str = "BATON_FAIL";

/// One function's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSwitch {
    /// `"always"`: a retryable failure on every attempt.
    Always,
    /// `"permanent"`: a failure no retry can fix.
    Permanent,
    /// `{"first": N}`: retryable failures on attempts 1..=N.
    First(u32),
    /// `{"slow_ms": N}`: a delay of N milliseconds before the work.
    SlowMs(u64),
    /// `"crash"`: aborts the process.
    Crash,
}

impl FailureSwitch {
    /// Parses one entry of a switch table; `null` means "no switch".
    pub fn parse(value: &Value) -> Result<Option<FailureSwitch>, String> {
        match value {
            Value::Null => Ok(None),
            Value::String(name) => match name.as_str() {
                "always" => Ok(Some(FailureSwitch::Always)),
                "permanent" => Ok(Some(FailureSwitch::Permanent)),
                "crash" => Ok(Some(FailureSwitch::Crash)),
                other => Err(format!(
                    "unknown failure switch {other:?} (expected \"always\", \"permanent\", \"crash\", {{\"first\": N}} or {{\"slow_ms\": N}})"
                )),
            },
            Value::Object(map) if map.len() == 1 => {
                let (name, n) = map
                    .iter()
                    .next()
                    .ok_or_else(|| "empty failure switch".to_owned())?;
                let count = n.as_u64().ok_or_else(|| {
                    format!("failure switch {name:?} needs a non-negative integer, got {n}")
                })?;
                match name.as_str() {
                    "first" => u32::try_from(count)
                        .map(|n| Some(FailureSwitch::First(n)))
                        .map_err(|_| format!("\"first\" is too large: {count}")),
                    "slow_ms" => Ok(Some(FailureSwitch::SlowMs(count))),
                    other => Err(format!(
                        "unknown failure switch {{{other:?}: ...}} (expected \"first\" or \"slow_ms\")"
                    )),
                }
            }
            other => Err(format!("malformed failure switch {other}")),
        }
    }

    /// Whether this switch fails the given attempt with an error, and which.
    pub fn error_for(self, function: &str, attempt: u32) -> Option<StepError> {
        let message =
            |what: &str| format!("{function}: injected failure ({what}) on attempt {attempt}");
        match self {
            FailureSwitch::Always => {
                Some(StepError::retryable("InjectedFailure", message("always")))
            }
            FailureSwitch::Permanent => Some(StepError::permanent(
                "InjectedFailure",
                message("permanent"),
            )),
            FailureSwitch::First(n) if attempt <= n => Some(StepError::retryable(
                "InjectedFailure",
                message(&format!("first {n}")),
            )),
            FailureSwitch::First(_) | FailureSwitch::SlowMs(_) | FailureSwitch::Crash => None,
        }
    }
}

/// The switch for `function`: the entry in `input.fail` if there is one,
/// else the entry in `fallback` (the raw text of `BATON_FAIL`), else none.
/// A malformed table or entry is a permanent `InvalidInput` error, so a typo
/// does not silently turn a failure test into a success.
pub fn resolve(
    function: &str,
    input: &Value,
    fallback: Option<&str>,
) -> Result<Option<FailureSwitch>, StepError> {
    let invalid = |message: String| StepError::permanent("InvalidInput", message);
    match input.get("fail") {
        None | Some(Value::Null) => {}
        Some(Value::Object(table)) => {
            if let Some(entry) = table.get(function) {
                return FailureSwitch::parse(entry)
                    .map_err(|e| invalid(format!("input.fail[{function:?}]: {e}")));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "input.fail must be an object keyed by function, got {other}"
            )));
        }
    }
    let Some(text) = fallback.filter(|text| !text.trim().is_empty()) else {
        return Ok(None);
    };
    let table: Value = serde_json::from_str(text)
        .map_err(|e| invalid(format!("{FAIL_ENV} is not valid JSON: {e}")))?;
    let Value::Object(table) = table else {
        return Err(invalid(format!(
            "{FAIL_ENV} must be a JSON object keyed by function"
        )));
    };
    match table.get(function) {
        Some(entry) => FailureSwitch::parse(entry)
            .map_err(|e| invalid(format!("{FAIL_ENV}[{function:?}]: {e}"))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(
            FailureSwitch::parse(&json!("always")),
            Ok(Some(FailureSwitch::Always))
        );
        assert_eq!(
            FailureSwitch::parse(&json!("permanent")),
            Ok(Some(FailureSwitch::Permanent))
        );
        assert_eq!(
            FailureSwitch::parse(&json!("crash")),
            Ok(Some(FailureSwitch::Crash))
        );
        assert_eq!(
            FailureSwitch::parse(&json!({"first": 2})),
            Ok(Some(FailureSwitch::First(2)))
        );
        assert_eq!(
            FailureSwitch::parse(&json!({"slow_ms": 50})),
            Ok(Some(FailureSwitch::SlowMs(50)))
        );
        assert_eq!(FailureSwitch::parse(&json!(null)), Ok(None));
        assert!(FailureSwitch::parse(&json!("sometimes")).is_err());
        assert!(FailureSwitch::parse(&json!({"first": -1})).is_err());
        assert!(FailureSwitch::parse(&json!({"first": 1, "slow_ms": 2})).is_err());
        assert!(FailureSwitch::parse(&json!(3)).is_err());
    }

    #[test]
    fn the_input_entry_wins_over_the_environment_per_function() {
        let env = Some(r#"{"refund-payment": "always", "process-payment": "permanent"}"#);
        let input = json!({"fail": {"process-payment": {"first": 1}}});
        assert_eq!(
            resolve("process-payment", &input, env),
            Ok(Some(FailureSwitch::First(1)))
        );
        assert_eq!(
            resolve("refund-payment", &input, env),
            Ok(Some(FailureSwitch::Always))
        );
        assert_eq!(resolve("ship-order", &input, env), Ok(None));
        let off = json!({"fail": {"refund-payment": null}});
        assert_eq!(resolve("refund-payment", &off, env), Ok(None));
    }

    #[test]
    fn malformed_tables_are_invalid_input() {
        let not_object = resolve("ship-order", &json!({"fail": "always"}), None);
        assert!(matches!(not_object, Err(ref e) if e.name == "InvalidInput" && !e.retryable));
        let bad_env = resolve("ship-order", &json!({}), Some("{not json"));
        assert!(matches!(bad_env, Err(ref e) if e.name == "InvalidInput" && !e.retryable));
        assert_eq!(resolve("ship-order", &json!({}), Some("  ")), Ok(None));
    }
}
