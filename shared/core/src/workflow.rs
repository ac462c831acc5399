//! A validated, compiled workflow: what the engine runs.
//!
//! Built only by [`crate::validate`], so every `Workflow` has resolved
//! dependencies, no cycles, compiled expressions and complete retry policies.

use std::collections::HashMap;
use std::sync::Arc;

use crate::definition::{Format, WorkflowDefinition};
use crate::expr::{Expr, Template};
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::validate::{self, ValidationErrors};

/// Default per-attempt timeout when neither the step nor `defaults` sets one
/// (the longest a Lambda invocation can run).
pub const DEFAULT_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// How long a finished execution's records are kept when neither the
/// workflow nor the start says.
pub const DEFAULT_RETENTION_MS: u64 = 30 * DAY_MS;
/// The shortest retention: a running execution's history is kept at least
/// this long, which the snapshot policy relies on (see the runtime's
/// `checkpoint` module).
pub const MIN_RETENTION_MS: u64 = DAY_MS;
pub const MAX_RETENTION_MS: u64 = 3650 * DAY_MS;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A retention in range, or why not.
pub fn check_retention(ms: u64) -> Result<u64, String> {
    if (MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "must be from 1 day to 3650 days, not {}",
            crate::duration::format_millis(ms)
        ))
    }
}

impl Workflow {
    /// The signals its steps wait for, in step order, each once.
    pub fn signal_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for step in &self.steps {
            if let Action::WaitFor { signal, .. } = &step.action
                && !names.contains(signal)
            {
                names.push(signal.clone());
            }
        }
        names
    }
}

/// The longest execution timeout: a year, as Step Functions' Standard
/// workflows allow.
pub const MAX_EXECUTION_TIMEOUT_MS: u64 = 365 * DAY_MS;

/// An execution timeout within range: a second to a year.
pub fn check_execution_timeout(ms: u64) -> Result<u64, String> {
    if (1_000..=MAX_EXECUTION_TIMEOUT_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "must be from 1s to 365d, not {}",
            crate::duration::format_millis(ms)
        ))
    }
}

/// Default `max_concurrency` of a `for_each` step.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 10;

#[derive(Debug)]
pub struct Workflow {
    pub definition: WorkflowDefinition,
    pub name: Arc<str>,
    pub steps: Vec<Step>,
    pub output: Template,
    /// Every schedule, enabled or not, in declaration order.
    pub schedules: Vec<Schedule>,
    /// How long a finished execution's records are kept.
    pub retention_ms: u64,
    /// The longest an execution may run (the definition's `timeout`).
    pub timeout_ms: Option<u64>,
    pub(crate) by_name: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Step {
    pub name: Arc<str>,
    pub position: usize,
    pub needs: Vec<usize>,
    pub dependents: Vec<usize>,
    pub condition: Option<Expr>,
    pub action: Action,
    pub continue_on_failure: bool,
}

#[derive(Debug)]
pub enum Action {
    Call(Box<Call>),
    Wait {
        millis: u64,
    },
    WaitUntil(Box<Expr>),
    WaitFor {
        signal: String,
        timeout_ms: Option<u64>,
    },
}

#[derive(Debug)]
pub struct Call {
    /// The function called; empty for a step that runs a [`Call::workflow`].
    pub function: Arc<str>,
    /// The workflow a `workflow:` step runs as a child execution.
    pub workflow: Option<ChildWorkflow>,
    pub input: Template,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub mutates: bool,
    pub compensation: Option<Compensation>,
    pub for_each: Option<Expr>,
    pub max_concurrency: u32,
    pub repeat: Option<Repeat>,
    /// How many `for_each` elements may fail for good, by count and by
    /// percentage of the list; the step fails when either is exceeded.
    pub tolerated_failures: Option<u32>,
    pub tolerated_failure_percent: Option<u32>,
}

impl Call {
    /// Whether a succeeded unit is undone when the saga unwinds: by its
    /// `compensate` function, or by the child execution's own compensations.
    pub fn compensable(&self) -> bool {
        self.compensation.is_some() || self.workflow.as_ref().is_some_and(|w| w.compensate)
    }

    /// Whether `failed` failed elements of a `for_each` of `len` are within
    /// what the step tolerates.
    pub fn tolerates(&self, failed: usize, len: usize) -> bool {
        let within_count = |n: u32| failed <= n as usize;
        let within_percent =
            |p: u32| failed.saturating_mul(100) <= (p as usize).saturating_mul(len);
        match (self.tolerated_failures, self.tolerated_failure_percent) {
            (None, None) => failed == 0,
            (count, percent) => {
                count.is_none_or(within_count) && percent.is_none_or(within_percent)
            }
        }
    }
}

/// A `workflow:` step's child: which workflow, and how it is bounded and undone.
#[derive(Debug)]
pub struct ChildWorkflow {
    pub name: Arc<str>,
    /// `None`: the newest version when the child starts.
    pub version: Option<u32>,
    /// The child execution's timeout (the step's own `timeout`); without
    /// one, the child workflow's `timeout` applies.
    pub timeout_ms: Option<u64>,
    /// Undoing the step asks the child to run its own compensations (no
    /// `compensate` function replaces them, and the step mutates).
    pub compensate: bool,
}

/// How deep executions may nest: a child of a child ... stops here, so a
/// workflow that runs itself ends with a step failure instead of forever.
pub const MAX_CHILD_DEPTH: u32 = 16;

/// A step's `repeat`: call again until `until` holds.
#[derive(Debug)]
pub struct Repeat {
    pub until: Expr,
    pub max_iterations: u32,
    pub delay_ms: u64,
}

/// The most iterations a `repeat` may ask for: each adds to the history.
pub const MAX_REPEAT_ITERATIONS: u32 = 1_000;

#[derive(Debug)]
pub struct Compensation {
    pub function: Arc<str>,
    pub input: Template,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
}

impl Workflow {
    /// Parses and validates a definition; every problem is reported at once.
    pub fn from_text(text: &str, format: Format) -> Result<Workflow, ValidationErrors> {
        let definition = WorkflowDefinition::parse(text, format)
            .map_err(|e| ValidationErrors::parse(e.to_string()))?;
        validate::validate(definition).map_err(|errors| errors.with_lines(text))
    }

    pub fn from_definition(definition: WorkflowDefinition) -> Result<Workflow, ValidationErrors> {
        validate::validate(definition)
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.step_index(name).map(|i| &self.steps[i])
    }

    /// Every function a step or compensation calls, sorted, without repeats.
    pub fn functions(&self) -> Vec<&str> {
        let mut functions: Vec<&str> = self
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Call(call) => Some(call),
                _ => None,
            })
            .flat_map(|call| {
                call.workflow
                    .is_none()
                    .then_some(call.function.as_ref())
                    .into_iter()
                    .chain(call.compensation.as_ref().map(|c| c.function.as_ref()))
            })
            .collect();
        functions.sort_unstable();
        functions.dedup();
        functions
    }
}

impl Workflow {
    /// The workflows its steps run as children (name and version, if
    /// pinned), in step order, each once.
    pub fn children(&self) -> Vec<(&str, Option<u32>)> {
        let mut children: Vec<(&str, Option<u32>)> = Vec::new();
        for call in self.steps.iter().filter_map(Step::call) {
            if let Some(child) = &call.workflow {
                let entry = (child.name.as_ref(), child.version);
                if !children.contains(&entry) {
                    children.push(entry);
                }
            }
        }
        children
    }
}

impl Step {
    pub fn call(&self) -> Option<&Call> {
        match &self.action {
            Action::Call(call) => Some(call),
            _ => None,
        }
    }
}
