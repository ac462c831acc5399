//! `baton dlq`: see what was dead-lettered, put it back, or drop it.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use baton_core::engine::{DeadLetterRef, Outcome};
use baton_core::{Event, ExecutionStatus};
use baton_runtime::coordinator::describe_ignored;
use baton_runtime::ports::{Backend, DeadLetterKind, DeadLetterRecord};
use baton_runtime::step::{Registry, StepContext};
use baton_runtime::targets::{FunctionConfig, Targets, TargetsConfig};
use baton_runtime::{Clock, SystemClock};
use baton_runtime::{Coordinator, CoordinatorError};
use clap::Subcommand;

use crate::app::{self, bad};
use crate::display::{errln, outln};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its full context.
    Show { id: String },
    /// Put a dead-lettered task back on its queue, or run a failed compensation again.
    Redrive { id: String },
    /// Delete a dead letter after resolving it by hand.
    Discard { id: String },
}

/// Where a redriven compensation runs.
pub enum Runner<'a> {
    /// The embedded backend's targets (`baton.toml`, in-process handlers).
    Local { db: &'a Path, config: &'a Path },
    /// On AWS, the compensation's Lambda function itself.
    Lambda { endpoint: Option<String> },
}

impl Runner<'_> {
    fn targets(&self, function: &str) -> anyhow::Result<Arc<Targets>> {
        match self {
            Runner::Local { db, config } => app::targets(db, config),
            Runner::Lambda { endpoint } => {
                let mut config = TargetsConfig::default();
                config.functions.insert(
                    function.to_string(),
                    FunctionConfig {
                        lambda: Some(function.to_string()),
                        endpoint: endpoint.clone(),
                        ..FunctionConfig::default()
                    },
                );
                let lambda = Arc::new(baton_aws::lambda_target::LambdaTarget::new());
                Ok(Arc::new(
                    Targets::new(Registry::new(), config).with_lambda(lambda),
                ))
            }
        }
    }
}

pub async fn dlq<B: Backend>(
    backend: Arc<B>,
    runner: Runner<'_>,
    command: DlqCommand,
) -> anyhow::Result<u8> {
    match command {
        DlqCommand::List { json } => {
            let records = backend.list_dead_letters().await?;
            if json {
                for r in &records {
                    outln!("{}", serde_json::to_string(r)?);
                }
            } else if records.is_empty() {
                outln!("no dead letters");
            } else {
                outln!("{:<40} {:<13} {:<36} REASON", "ID", "KIND", "EXECUTION");
                for r in &records {
                    outln!(
                        "{:<40} {:<13} {:<36} {}",
                        r.id,
                        r.kind.as_str(),
                        r.execution_id.as_deref().unwrap_or("-"),
                        r.reason
                    );
                }
            }
            Ok(0)
        }
        DlqCommand::Show { id } => {
            let record = backend
                .get_dead_letter(&id)
                .await?
                .ok_or_else(|| bad(format!("no dead letter `{id}`")))?;
            outln!("{}", serde_json::to_string_pretty(&record)?);
            Ok(0)
        }
        DlqCommand::Discard { id } => {
            let record = backend
                .get_dead_letter(&id)
                .await?
                .ok_or_else(|| bad(format!("no dead letter `{id}`")))?;
            // Recorded first: if the removal then fails, discarding again
            // removes it and the history already says so.
            let resolved = resolve(backend.clone(), &record, Resolution::Discarded).await?;
            if !backend.remove_dead_letter(&id).await? {
                return Err(bad(format!("no dead letter `{id}`")));
            }
            outln!("discarded {id}");
            report(backend.as_ref(), resolved).await?;
            Ok(0)
        }
        DlqCommand::Redrive { id } => {
            let record = backend
                .get_dead_letter(&id)
                .await?
                .ok_or_else(|| bad(format!("no dead letter `{id}`")))?;
            match record.kind {
                DeadLetterKind::Task => {
                    backend.redrive_dead_letter(&id).await?;
                    outln!("redriven: {id} is back on its queue");
                    let resolved = resolve(backend.clone(), &record, Resolution::Redriven).await?;
                    report(backend.as_ref(), resolved).await?;
                    Ok(0)
                }
                DeadLetterKind::Compensation => {
                    let dead: baton_core::engine::DeadLetter =
                        serde_json::from_value(record.body.clone()).map_err(|e| {
                            bad(format!("dead letter `{id}` holds no compensation: {e}"))
                        })?;
                    let targets = runner.targets(&dead.function)?;
                    let timeout = Duration::from_secs(60);
                    let context = StepContext {
                        execution_id: dead.execution_id.to_string(),
                        workflow: dead.workflow.to_string(),
                        step: dead.step.to_string(),
                        index: dead.index,
                        attempt: dead.attempts + 1,
                        kind: baton_core::TaskKind::Compensation,
                        function: dead.function.to_string(),
                        idempotency_key: dead.idempotency_key.clone(),
                        deadline: SystemClock.now() + timeout.as_millis() as u64,
                    };
                    // Same idempotency key as the failed attempts, so a
                    // compensation that did go through is not repeated.
                    match targets.invoke(context, dead.input.clone(), timeout).await {
                        Ok(output) => {
                            outln!(
                                "compensation `{}` of step `{}` succeeded: {output}",
                                dead.function,
                                dead.step
                            );
                            // Recorded before the dead letter goes: if recording
                            // fails, it stays, and a redrive (same key) records it.
                            let resolved = resolve(backend.clone(), &record, Resolution::Redriven)
                                .await
                                .map_err(|e| {
                                    e.context(format!(
                                        "the compensation succeeded but its execution was not told; dead letter `{id}` stays (redrive it again)"
                                    ))
                                })?;
                            backend.remove_dead_letter(&id).await?;
                            report(backend.as_ref(), resolved).await?;
                            Ok(0)
                        }
                        Err(e) => {
                            errln!(
                                "compensation `{}` failed again: {e}; the dead letter stays",
                                dead.function
                            );
                            Ok(1)
                        }
                    }
                }
                DeadLetterKind::Malformed => Err(bad(format!(
                    "dead letter `{id}` is a message that does not decode; fix it by hand and discard it"
                ))),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Resolution {
    Redriven,
    Discarded,
}

/// The execution a dead letter belonged to, once told of its resolution.
struct Resolved {
    execution_id: String,
    status: ExecutionStatus,
    /// The status changed because of this resolution.
    changed: bool,
}

/// Tells the dead letter's execution that it was redriven or discarded: the
/// engine writes it to the history and decides whether the execution's
/// status changes. `None` when the dead letter names no execution, or the
/// execution is gone.
async fn resolve<B: Backend>(
    backend: Arc<B>,
    record: &DeadLetterRecord,
    resolution: Resolution,
) -> anyhow::Result<Option<Resolved>> {
    let Some(execution_id) = record.execution_id.clone() else {
        return Ok(None);
    };
    let (kind, step, index) = match record.kind {
        DeadLetterKind::Compensation => {
            let dead: baton_core::engine::DeadLetter = serde_json::from_value(record.body.clone())
                .map_err(|e| {
                    bad(format!(
                        "dead letter `{}` holds no compensation: {e}",
                        record.id
                    ))
                })?;
            (
                baton_core::engine::DeadLetterKind::Compensation,
                Some(dead.step),
                dead.index,
            )
        }
        DeadLetterKind::Task | DeadLetterKind::Malformed => {
            let (step, index) = task_step(&record.body);
            (baton_core::engine::DeadLetterKind::Task, step, index)
        }
    };
    let dead_letter = DeadLetterRef {
        id: record.id.clone(),
        kind,
        step,
        index,
    };
    let event = match resolution {
        Resolution::Redriven => Event::DeadLetterRedriven { dead_letter },
        Resolution::Discarded => Event::DeadLetterDiscarded { dead_letter },
    };
    let before = backend.load(&execution_id).await?.map(|r| r.status());
    let coordinator = Coordinator::new(backend.clone(), Arc::new(SystemClock));
    match coordinator.handle(&execution_id, event).await {
        Ok(Outcome::Applied) => {}
        Ok(Outcome::Ignored(reason)) => {
            errln!(
                "note: execution {execution_id} recorded nothing: {}",
                describe_ignored(&reason)
            );
        }
        Err(CoordinatorError::NotFound(_)) => {
            errln!("note: execution {execution_id} no longer exists");
            return Ok(None);
        }
        Err(e) => return Err(app::map_coordinator_error(e)),
    }
    let Some(after) = backend.load(&execution_id).await? else {
        return Ok(None);
    };
    Ok(Some(Resolved {
        // The engine changes a finished execution's status only once its
        // last failed compensation is resolved.
        changed: before == Some(ExecutionStatus::CompensationFailed)
            && after.status() != ExecutionStatus::CompensationFailed,
        status: after.status(),
        execution_id,
    }))
}

/// The step (and element) a task or timer dead letter was for, as far as
/// its body says: the backends keep the task, the timer or the message.
fn task_step(body: &serde_json::Value) -> (Option<Arc<str>>, Option<u32>) {
    for at in ["/task/task", "/task", "/timer", ""] {
        if let Some(found) = body.pointer(at)
            && let Some(step) = found.get("step").and_then(|s| s.as_str())
        {
            let index = found
                .get("index")
                .and_then(|i| i.as_u64())
                .and_then(|i| u32::try_from(i).ok());
            return (Some(step.into()), index);
        }
    }
    (None, None)
}

/// Says where the execution stands now that one of its dead letters is resolved.
async fn report<B: Backend>(backend: &B, resolved: Option<Resolved>) -> anyhow::Result<()> {
    let Some(Resolved {
        execution_id,
        status,
        changed,
    }) = resolved
    else {
        return Ok(());
    };
    let left = backend
        .list_dead_letters()
        .await?
        .iter()
        .filter(|r| r.execution_id.as_deref() == Some(execution_id.as_str()))
        .count();
    let status = status.as_str();
    match (changed, left) {
        (true, _) => outln!("execution {execution_id} is now {status}: every dead letter resolved"),
        (false, 0) => outln!("execution {execution_id}: {status}"),
        (false, n) => outln!(
            "execution {execution_id}: {status}, {n} dead letter{} left (baton dlq list)",
            if n == 1 { "" } else { "s" }
        ),
    }
    Ok(())
}
