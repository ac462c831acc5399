//! `baton follow`: an execution's progress until it ends, on either backend.
//!
//! On a terminal the status is redrawn in place; anywhere else (a pipe, a
//! log file) only what changed is printed, one line each, with no escapes.

use std::io::IsTerminal;
use std::time::Duration;

use baton_runtime::ports::{Backend, ExecutionRecord};

use crate::app::bad;
use crate::display::{self, out, outln};
use crate::run::exit_code;

pub async fn follow<B: Backend>(backend: &B, id: &str, interval: Duration) -> anyhow::Result<u8> {
    let redraw = std::io::stdout().is_terminal();
    // Lines printed last time: on a terminal, how many to erase; otherwise,
    // what each step said, so only changes are printed.
    let mut drawn = 0usize;
    let mut last: Vec<String> = Vec::new();
    let mut last_status = None;
    loop {
        let record = backend
            .load(id)
            .await?
            .ok_or_else(|| bad(format!("no execution `{id}`")))?;
        let status = record.status();
        if redraw {
            let text = display::status_text(&record);
            if drawn > 0 {
                // Up to where the last drawing began, and clear below it.
                out!("\x1b[{drawn}A\x1b[J");
            }
            out!("{text}");
            drawn = text.lines().count();
        } else {
            if last_status.is_none() {
                outln!(
                    "following {} (workflow `{}` version {})",
                    record.id,
                    record.workflow,
                    record.workflow_version
                );
            }
            let lines: Vec<String> = record.state.steps.iter().map(display::step_line).collect();
            for (i, line) in lines.iter().enumerate() {
                if last.get(i) != Some(line) {
                    outln!("{line}");
                }
            }
            last = lines;
            if last_status != Some(status) {
                outln!("status     {}", status.as_str());
            }
        }
        last_status = Some(status);
        if status.is_terminal() {
            if !redraw {
                outln!("{}", ending(&record));
            }
            return Ok(exit_code(status));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::app::shutdown_signal() => return Ok(130),
        }
    }
}

/// The last line: how it ended and how long it took.
fn ending(record: &ExecutionRecord) -> String {
    let state = &record.state;
    let took = state
        .finished_at
        .unwrap_or(record.updated_at)
        .saturating_sub(state.started_at);
    let mut line = format!(
        "execution {} {} in {took} ms",
        record.id,
        state.status.as_str()
    );
    if let Some(failure) = &state.failure {
        line.push_str(&format!(": {}: {}", failure.name, failure.message));
    }
    line
}
