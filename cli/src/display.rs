//! Text rendering of events, executions and lists for the terminal, and the
//! one way the command writes to stdout ([`outln!`], [`out!`]).

use std::io::Write;

use baton_core::engine::{Event, LifecycleKind, StepStatus, TaskKind};
use baton_core::{LifecycleEvent, Timestamp};
use baton_runtime::ports::{ExecutionRecord, ExecutionSummary, HistoryEntry};

/// Stdout was closed by its reader (`baton list | head -1` has what it
/// wanted). The command stops quietly with exit code 141, what a shell reports
/// for a process stopped by SIGPIPE: the output was cut short, not wrong.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// The exit code for [`StdoutClosed`] (128 + SIGPIPE).
pub const STDOUT_CLOSED_CODE: u8 = 141;

/// Writes to stdout; a closed pipe becomes [`StdoutClosed`] rather than the
/// panic `println!` gives.
pub fn write_out(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(text) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes to stderr, for notes and errors; a closed stderr has no reader to
/// tell, so a failed write is dropped instead of panicking as `eprintln!` does.
pub fn note(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `print!` that returns [`StdoutClosed`] (through `?`) when the reader is gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::display::write_out(format_args!($($arg)*))?
    };
}

/// `println!` that returns [`StdoutClosed`] (through `?`) when the reader is gone.
macro_rules! outln {
    () => {
        $crate::display::write_out(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::display::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `eprintln!` that never panics (see [`note`]).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::display::note(format_args!($($arg)*))
    };
}

pub(crate) use {errln, out, outln};

fn elapsed(at: Timestamp, start: Timestamp) -> String {
    let ms = at.saturating_sub(start);
    format!("+{}.{:03}s", ms / 1000, ms % 1000)
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// One line per lifecycle event: time since start, what happened, where.
pub fn event_line(event: &LifecycleEvent, start: Timestamp, color: bool) -> String {
    let (symbol, code) = match event.kind {
        LifecycleKind::StepSucceeded
        | LifecycleKind::CompensationSucceeded
        | LifecycleKind::ExecutionSucceeded => ("✓", "32"),
        LifecycleKind::StepFailed
        | LifecycleKind::CompensationFailed
        | LifecycleKind::ExecutionFailed
        | LifecycleKind::ExecutionCompensationFailed => ("✗", "31"),
        LifecycleKind::StepRetrying | LifecycleKind::CompensationRetrying => ("↻", "33"),
        LifecycleKind::StepSkipped => ("-", "90"),
        LifecycleKind::StepWaiting => ("…", "36"),
        LifecycleKind::CompensationStarted => ("↶", "35"),
        LifecycleKind::ExecutionCompensated | LifecycleKind::ExecutionCancelled => ("↶", "35"),
        LifecycleKind::StepStarted | LifecycleKind::ExecutionStarted => ("▶", "34"),
    };
    let mut where_ = event.step.as_deref().unwrap_or("").to_string();
    if let Some(i) = event.index {
        where_.push_str(&format!("[{i}]"));
    }
    let mut detail = String::new();
    if let Some(attempt) = event.attempt {
        detail.push_str(&format!("attempt {attempt}"));
    }
    if let Some(delay) = event.delay_ms {
        detail.push_str(&format!(", next in {delay} ms"));
    }
    if let Some(error) = &event.error {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(&format!("{}: {}", error.name, error.message));
    }
    format!(
        "{:>9}  {} {:<30} {:<16} {}",
        elapsed(event.at, start),
        paint(symbol, code, color),
        event.kind.as_str(),
        where_,
        detail
    )
    .trim_end()
    .to_string()
}

pub fn history_line(entry: &HistoryEntry, start: Timestamp) -> String {
    let what = match &entry.event {
        Event::Started {
            parent: Some(parent),
            ..
        } => format!(
            "started for step `{}` of execution {}",
            parent.task.step, parent.execution_id
        ),
        Event::Started { .. } => "started".to_string(),
        Event::CompensationRequested { task } => {
            format!("undo asked by step `{}` of the parent execution", task.step)
        }
        Event::TaskSucceeded { task, .. } => format!("{} succeeded", task_name(task)),
        Event::TaskFailed { task, error } => format!(
            "{} failed: {}: {}",
            task_name(task),
            error.name,
            error.message
        ),
        Event::TaskTimedOut { task } => format!("{} timed out", task_name(task)),
        Event::TimerFired { timer } => format!("timer {} fired", timer.key()),
        Event::SignalReceived { name, .. } => format!("signal `{name}` received"),
        Event::CancelRequested { reason } => format!(
            "cancel requested{}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::DeadLetterRedriven { dead_letter } => {
            format!("dead letter {} redriven", dead_letter_what(dead_letter))
        }
        Event::DeadLetterDiscarded { dead_letter } => format!(
            "dead letter {} discarded (resolved by hand)",
            dead_letter_what(dead_letter)
        ),
        Event::RedriveRequested { reason } => format!(
            "redriven{}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    };
    format!("{:>4}  {:>9}  {what}", entry.seq, elapsed(entry.at, start))
}

/// `ID (compensation of STEP[i])`: which dead letter, and of what.
fn dead_letter_what(dead: &baton_core::engine::DeadLetterRef) -> String {
    let step = match (&dead.step, dead.index) {
        (Some(step), Some(i)) => format!(" of {step}[{i}]"),
        (Some(step), None) => format!(" of {step}"),
        (None, _) => String::new(),
    };
    format!("{} ({}{step})", dead.id, dead.kind.as_str())
}

fn task_name(task: &baton_core::TaskRef) -> String {
    let index = task.index.map(|i| format!("[{i}]")).unwrap_or_default();
    let kind = match task.kind {
        TaskKind::Step => "step",
        TaskKind::Compensation => "compensation of",
    };
    format!("{kind} {}{index} attempt {}", task.step, task.attempt)
}

pub fn status_text(record: &ExecutionRecord) -> String {
    let state = &record.state;
    let mut out = format!(
        "execution  {}\nworkflow   {} (version {})\nstatus     {}\n",
        record.id,
        record.workflow,
        record.workflow_version,
        state.status.as_str()
    );
    if let Some(finished) = state.finished_at {
        out.push_str(&format!(
            "took       {} ms\n",
            finished.saturating_sub(state.started_at)
        ));
    }
    out.push_str("steps\n");
    for step in &state.steps {
        out.push_str(&step_line(step));
        out.push('\n');
    }
    if let Some(output) = &state.output {
        out.push_str(&format!("output     {output}\n"));
    }
    if let Some(failure) = &state.failure {
        out.push_str(&format!(
            "error      {}: {}\n",
            failure.name, failure.message
        ));
    }
    out
}

/// One step's progress: status, attempts, elements, compensation, error.
pub fn step_line(step: &baton_core::engine::StepState) -> String {
    let attempts: u32 = step.units.iter().map(|u| u.attempt).sum();
    let mut line = format!("  {:<20} {:<10}", step.name, step.status.as_str());
    if attempts > 0 {
        line.push_str(&format!(" attempts {attempts}"));
    }
    if step.units.len() > 1 {
        line.push_str(&format!(" elements {}", step.units.len()));
    }
    let compensations: Vec<&str> = step
        .units
        .iter()
        .filter_map(|u| u.compensation.as_ref())
        .map(|c| match c.status {
            baton_core::engine::UnitStatus::Succeeded => "compensated",
            baton_core::engine::UnitStatus::Failed if c.resolved => {
                "compensation failed, resolved by hand"
            }
            baton_core::engine::UnitStatus::Failed => "compensation failed",
            _ => "compensating",
        })
        .collect();
    if let Some(c) = compensations.first() {
        line.push_str(&format!(" ({c})"));
    }
    if step.status == StepStatus::Failed
        && let Some(e) = &step.error
    {
        line.push_str(&format!(" — {}: {}", e.name, e.message));
    }
    line.trim_end().to_string()
}

pub fn list_text(rows: &[ExecutionSummary]) -> String {
    let mut out = format!("{:<44} {:<24} {:<20}\n", "ID", "WORKFLOW", "STATUS");
    for row in rows {
        out.push_str(&format!(
            "{:<44} {:<24} {:<20}\n",
            row.id,
            format!("{} v{}", row.workflow, row.workflow_version),
            row.status.as_str()
        ));
    }
    out
}
