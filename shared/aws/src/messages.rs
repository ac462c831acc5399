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
