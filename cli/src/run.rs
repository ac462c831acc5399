//! `baton run`: start an execution, work it in this process, and follow it.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_core::ExecutionStatus;
use baton_embedded::{Worker, WorkerOptions};
use baton_runtime::ports::ExecutionStore;

use crate::app::{self, check_size, map_coordinator_error, parse_json_arg};
use crate::display::{self, errln, outln};

/// Exit code for each way an execution ends.
pub fn exit_code(status: ExecutionStatus) -> u8 {
    match status {
        ExecutionStatus::Succeeded => 0,
        ExecutionStatus::Failed => 3,
        ExecutionStatus::Compensated => 4,
        ExecutionStatus::CompensationFailed => 5,
        ExecutionStatus::Cancelled => 6,
        ExecutionStatus::Pending | ExecutionStatus::Running | ExecutionStatus::Compensating => 1,
    }
}

pub async fn run(
    db: &Path,
    config: &Path,
    file: &Path,
    input: &str,
    id: Option<String>,
    json: bool,
    workers: usize,
) -> anyhow::Result<u8> {
    // Everything the user gave is checked before anything is written.
    let workflow = app::load_workflow(file)?;
    let input = parse_json_arg("the input", input)?;
    app::check_id(id.as_deref())?;
    let targets = app::targets(db, config)?;
    app::check_functions(&workflow, &targets)?;
    let backend = app::open_backend(db)?;
    check_size("the input", &input, backend.options().payload_limit)?;

    let (name, version, _) =
        app::prepare_workflow(&backend, &targets, &file.to_string_lossy()).await?;
    let id = id.unwrap_or_else(|| app::new_execution_id(&name));
    let coordinator = app::coordinator(backend.clone());
    let started = coordinator
        .start(&name, Some(version), &id, input)
        .await
        .map_err(map_coordinator_error)?;
    let color = !json && std::io::stdout().is_terminal();
    if !json {
        let verb = if started.created {
            "started"
        } else {
            "resuming"
        };
        outln!("{verb} {id} (workflow `{name}` version {version})");
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let worker = Arc::new(Worker::new(
            coordinator.clone(),
            targets.clone(),
            WorkerOptions::default(),
        ));
        handles.push(tokio::spawn(worker.run(stopped.clone())));
    }

    let start = started.record.created_at;
    let mut last_event = 0i64;
    let interrupted = loop {
        for (row, event) in backend.events_after(Some(&id), last_event, 1000)? {
            last_event = row;
            if json {
                outln!("{}", serde_json::to_string(&event)?);
            } else {
                outln!("{}", display::event_line(&event, start, color));
            }
        }
        let record = backend
            .load(&id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("execution {id} vanished"))?;
        if record.status().is_terminal() {
            // Print events committed with the final transition.
            for (_, event) in backend.events_after(Some(&id), last_event, 1000)? {
                if json {
                    outln!("{}", serde_json::to_string(&event)?);
                } else {
                    outln!("{}", display::event_line(&event, start, color));
                }
            }
            let _ = stop.send(true);
            for h in handles {
                let _ = h.await;
            }
            let status = record.status();
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "id": id,
                        "status": status.as_str(),
                        "output": record.state.output,
                        "error": record.state.failure,
                    })
                );
            } else {
                outln!("{}", summary(&record));
            }
            return Ok(exit_code(status));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            _ = app::shutdown_signal() => break true,
        }
    };
    if interrupted {
        let _ = stop.send(true);
        errln!(
            "interrupted: {id} is saved; `baton worker` or `baton run` with --id {id} resumes it"
        );
    }
    Ok(130)
}

fn summary(record: &baton_runtime::ports::ExecutionRecord) -> String {
    let state = &record.state;
    let took = state
        .finished_at
        .unwrap_or(record.updated_at)
        .saturating_sub(state.started_at);
    let mut out = format!(
        "execution {} {} in {} ms",
        record.id,
        state.status.as_str(),
        took
    );
    if let Some(output) = &state.output {
        let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
        out.push_str(&format!("\noutput: {pretty}"));
    }
    if let Some(failure) = &state.failure {
        out.push_str(&format!("\ncause: {}: {}", failure.name, failure.message));
    }
    out
}
