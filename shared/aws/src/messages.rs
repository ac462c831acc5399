//! Messages on the coordinator queue: what step functions (through their
//! Lambda destinations), timers and schedules send to move an execution.

use baton_core::{Event, TimerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CoordinatorMessage {
    /// A task result, signal or cancel for an execution.
    Event { execution_id: String, event: Event },
    /// A durable timer came due (an SQS delayed message or a one-time schedule).
    Timer {
        execution_id: String,
        timer: TimerId,
    },
    /// Start an execution (a schedule's trigger); the id makes it idempotent.
    Start {
        workflow: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        execution_id: String,
        #[serde(default)]
        input: Value,
    },
}

impl CoordinatorMessage {
    /// The execution the message is about, used to group a batch.
    pub fn execution_id(&self) -> &str {
        match self {
            CoordinatorMessage::Event { execution_id, .. }
            | CoordinatorMessage::Timer { execution_id, .. }
            | CoordinatorMessage::Start { execution_id, .. } => execution_id,
        }
    }

    /// A message as it arrives on the coordinator queue: Baton's own (timers,
    /// starts, signals, cancels) or a Lambda destination record carrying a
    /// step function's result.
    pub fn decode(body: &str) -> Result<CoordinatorMessage, String> {
        let value: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
        if value.get("requestContext").is_some() {
            let record: crate::dispatch::DestinationRecord =
                serde_json::from_value(value).map_err(|e| e.to_string())?;
            return record.into_message();
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("coordinator messages always serialise")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Arbitrary JSON, nested a few levels, with keys the decoders look for.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("kind".to_string()),
                Just("requestContext".to_string()),
                Just("requestPayload".to_string()),
                Just("responsePayload".to_string()),
                Just("condition".to_string()),
                Just("baton".to_string()),
                Just("execution_id".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_bytes_decode_or_are_refused_without_a_panic(body in ".{0,200}") {
            let _ = CoordinatorMessage::decode(&body);
        }

        #[test]
        fn any_json_decodes_or_is_refused_without_a_panic(value in json_value()) {
            let _ = CoordinatorMessage::decode(&value.to_string());
        }
    }
}
