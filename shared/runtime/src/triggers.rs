//! Starting executions from events: the one place both backends turn an
//! EventBridge-style event into the executions its triggers start.
//!
//! [`start_matching`] looks at every workflow's newest version (the embedded
//! `baton emit`, and an event that reaches the AWS coordinator without
//! naming its workflow); [`start_triggered`] at one named trigger (what the
//! EventBridge rule Baton deploys per trigger sends). Either way each match
//! starts one execution with the id [`baton_core::trigger::execution_id`]
//! derives from the event's `id`, so an event delivered again starts nothing
//! new ([`Coordinator::start`] is idempotent for the same id and input).

use baton_core::expr::EvalError;
use baton_core::trigger::{self, Trigger};
use serde_json::Value;
use thiserror::Error;
use tracing::{info, warn};

use crate::coordinator::{Coordinator, CoordinatorError};
use crate::ports::{Backend, StoredWorkflow};

/// Why an event did not start (all of) what it matches.
#[derive(Debug, Error)]
pub enum TriggerError {
    /// The event is not one Baton can start from; sending it again will not
    /// help: fix the sender.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A matching trigger's input does not evaluate on this event: fix the
    /// trigger's `input` or the event.
    #[error("trigger `{trigger}` of workflow `{workflow}` matches, but its input fails: {error}")]
    Input {
        workflow: String,
        trigger: String,
        error: EvalError,
    },
    /// The start itself failed; [`TriggerError::is_retryable`] says whether
    /// the event may be tried again.
    #[error("trigger `{trigger}` of workflow `{workflow}`: {error}")]
    Start {
        workflow: String,
        trigger: String,
        error: CoordinatorError,
    },
}

impl TriggerError {
    /// Whether handling the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TriggerError::Start { error, .. } => error.is_retryable(),
            TriggerError::Malformed(_) | TriggerError::Input { .. } => false,
        }
    }
}

/// One execution an event started, or found it had started before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerStart {
    pub workflow: String,
    pub version: u32,
    pub trigger: String,
    pub execution_id: String,
    /// False when the event had already started it (a redelivery).
    pub created: bool,
}

/// What one event did: every start, and every trigger it matched but could
/// not start. Starts are independent, so one failing does not hold up the
/// others, and handling the event again redoes only what failed.
#[derive(Debug, Default)]
pub struct EventOutcome {
    pub started: Vec<TriggerStart>,
    pub failed: Vec<TriggerError>,
}

impl EventOutcome {
    /// Whether handling the event again may start what failed.
    pub fn is_retryable(&self) -> bool {
        self.failed.iter().any(TriggerError::is_retryable)
    }
}

/// Starts an execution for every trigger, of every workflow's newest
/// version, that `event` matches.
pub async fn start_matching<B: Backend>(
    coordinator: &Coordinator<B>,
    event: &Value,
) -> Result<EventOutcome, TriggerError> {
    trigger::event_id(event).map_err(TriggerError::Malformed)?;
    let workflows =
        coordinator
            .backend()
            .list_workflows()
            .await
            .map_err(|e| TriggerError::Start {
                workflow: "*".into(),
                trigger: "*".into(),
                error: e.into(),
            })?;
    let mut outcome = EventOutcome::default();
    for stored in workflows
        .iter()
        .filter(|w| !w.definition.triggers.is_empty())
    {
        for definition in &stored.definition.triggers {
            let Ok(compiled) = Trigger::compile(definition) else {
                // Stored definitions were validated; one that no longer
                // compiles starts nothing rather than stopping the others.
                warn!(workflow.name = %stored.name, workflow.version = stored.version, trigger = %definition.name, "stored trigger does not compile; skipped");
                continue;
            };
            if compiled.matches(event) {
                start_one(coordinator, stored, &compiled, event, &mut outcome).await;
            }
        }
    }
    Ok(outcome)
}

/// Starts the execution trigger `trigger` of `workflow` (its newest version)
/// starts for `event`. Nothing starts if the trigger is gone or no longer
/// matches (the rule that sent the event is older than the definition).
pub async fn start_triggered<B: Backend>(
    coordinator: &Coordinator<B>,
    workflow: &str,
    trigger_name: &str,
    event: &Value,
) -> Result<EventOutcome, TriggerError> {
    let event_id = trigger::event_id(event).map_err(TriggerError::Malformed)?;
    let start_error = |error: CoordinatorError| TriggerError::Start {
        workflow: workflow.to_string(),
        trigger: trigger_name.to_string(),
        error,
    };
    let stored = coordinator
        .backend()
        .get_workflow(workflow, None)
        .await
        .map_err(|e| start_error(e.into()))?
        .ok_or_else(|| {
            start_error(CoordinatorError::UnknownWorkflow {
                name: workflow.to_string(),
                version: None,
            })
        })?;
    let mut outcome = EventOutcome::default();
    let Some(definition) = stored
        .definition
        .triggers
        .iter()
        .find(|t| t.name == trigger_name)
    else {
        warn!(workflow.name = %workflow, workflow.version = stored.version, trigger = %trigger_name, event.id = %event_id, "the workflow has no such trigger any more; the event starts nothing");
        return Ok(outcome);
    };
    let compiled = Trigger::compile(definition).map_err(|problems| {
        start_error(CoordinatorError::InvalidStoredWorkflow {
            name: workflow.to_string(),
            version: stored.version,
            errors: baton_core::ValidationErrors {
                problems: problems
                    .into_iter()
                    .map(|p| baton_core::Problem {
                        step: None,
                        field: Some(format!("triggers.{trigger_name}.{}", p.field)),
                        message: p.message,
                        line: None,
                    })
                    .collect(),
            },
        })
    })?;
    if !compiled.matches(event) {
        warn!(workflow.name = %workflow, workflow.version = stored.version, trigger = %trigger_name, event.id = %event_id, "the event does not match the trigger's current pattern; it starts nothing");
        return Ok(outcome);
    }
    start_one(coordinator, &stored, &compiled, event, &mut outcome).await;
    Ok(outcome)
}

async fn start_one<B: Backend>(
    coordinator: &Coordinator<B>,
    stored: &StoredWorkflow,
    compiled: &Trigger,
    event: &Value,
    outcome: &mut EventOutcome,
) {
    let event_id = trigger::event_id(event).unwrap_or_default();
    let input = match compiled.input(event) {
        Ok(input) => input,
        Err(error) => {
            outcome.failed.push(TriggerError::Input {
                workflow: stored.name.clone(),
                trigger: compiled.name.clone(),
                error,
            });
            return;
        }
    };
    let execution_id = trigger::execution_id(&stored.name, &compiled.name, event_id);
    match coordinator
        .start(&stored.name, Some(stored.version), &execution_id, input)
        .await
    {
        Ok(started) => {
            info!(workflow.name = %stored.name, workflow.version = stored.version, trigger = %compiled.name, event.id = %event_id, workflow.execution.id = %execution_id, created = started.created, "event trigger matched");
            outcome.started.push(TriggerStart {
                workflow: stored.name.clone(),
                version: started.record.workflow_version,
                trigger: compiled.name.clone(),
                execution_id,
                created: started.created,
            });
        }
        Err(error) => outcome.failed.push(TriggerError::Start {
            workflow: stored.name.clone(),
            trigger: compiled.name.clone(),
            error,
        }),
    }
}
