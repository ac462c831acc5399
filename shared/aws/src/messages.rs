//! Messages on the coordinator queue: what step functions (through their
//! Lambda destinations), timers, schedules and trigger rules send to move or
//! start an execution.

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
    /// An event a trigger's EventBridge rule matched, wrapped by the rule's
    /// input transformer with the workflow and trigger (see [`crate::rules`]).
    Trigger {
        workflow: String,
        trigger: String,
        event: Value,
        /// The execution the event starts, derived by [`CoordinatorMessage::decode`]
        /// from the event's id; never sent.
        #[serde(skip)]
        execution_id: String,
    },
    /// A bare EventBridge event (a rule made by hand targeting the queue):
    /// matched against every workflow's triggers.
    BusEvent {
        event: Value,
        /// `event:{id}`, to group the batch by; never sent.
        #[serde(skip)]
        key: String,
    },
}

impl CoordinatorMessage {
    /// The execution the message is about, used to group a batch.
    pub fn execution_id(&self) -> &str {
        match self {
            CoordinatorMessage::Event { execution_id, .. }
            | CoordinatorMessage::Timer { execution_id, .. }
            | CoordinatorMessage::Start { execution_id, .. }
            | CoordinatorMessage::Trigger { execution_id, .. } => execution_id,
            CoordinatorMessage::BusEvent { key, .. } => key,
        }
    }

    /// A message as it arrives on the coordinator queue: Baton's own (timers,
    /// starts, signals, cancels, events its trigger rules matched), a Lambda
    /// destination record carrying a step function's result, or a bare
    /// EventBridge event. An event without an id, source, detail type or
    /// detail is refused here, so it is dead-lettered, not dropped.
    pub fn decode(body: &str) -> Result<CoordinatorMessage, String> {
        let value: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
        if value.get("requestContext").is_some() {
            let record: crate::dispatch::DestinationRecord =
                serde_json::from_value(value).map_err(|e| e.to_string())?;
            return record.into_message();
        }
        if value.get("kind").is_none() && value.get("detail-type").is_some() {
            let id = baton_core::trigger::event_id(&value)
                .map_err(|e| format!("malformed EventBridge event: {e}"))?;
            let key = format!("event:{id}");
            return Ok(CoordinatorMessage::BusEvent { event: value, key });
        }
        match serde_json::from_value(value).map_err(|e| e.to_string())? {
            CoordinatorMessage::Trigger {
                workflow,
                trigger,
                event,
                ..
            } => {
                let id = baton_core::trigger::event_id(&event).map_err(|e| {
                    format!("malformed event for trigger `{trigger}` of workflow `{workflow}`: {e}")
                })?;
                let execution_id = baton_core::trigger::execution_id(&workflow, &trigger, id);
                Ok(CoordinatorMessage::Trigger {
                    workflow,
                    trigger,
                    event,
                    execution_id,
                })
            }
            CoordinatorMessage::BusEvent { .. } => {
                Err("a bare event is sent as the event itself, not as `bus_event`".into())
            }
            other => Ok(other),
        }
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
