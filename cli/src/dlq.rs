//! `baton dlq`: see what was dead-lettered, put it back, or drop it.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use baton_runtime::ports::{Backend, DeadLetterKind};
use baton_runtime::step::{Registry, StepContext};
use baton_runtime::targets::{FunctionConfig, Targets, TargetsConfig};
use baton_runtime::{Clock, SystemClock};
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
    backend: &B,
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
            if backend.remove_dead_letter(&id).await? {
                outln!("discarded {id}");
                Ok(0)
            } else {
                Err(bad(format!("no dead letter `{id}`")))
            }
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
                            backend.remove_dead_letter(&id).await?;
                            outln!(
                                "compensation `{}` of step `{}` succeeded: {output}",
                                dead.function,
                                dead.step
                            );
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
