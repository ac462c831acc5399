//! Validation: turns a [`WorkflowDefinition`] into a runnable [`Workflow`],
//! or reports every problem in it at once, each naming the step (or
//! schedule) and field.
//!
//! Validation takes time and memory near-linear in the size of the
//! definition: steps are found by name through an index, dependency cycles
//! by an iterative depth-first search, and which steps an expression may
//! read by a few passes over the steps in dependency order (see
//! [`ancestor_queries`]) rather than by a set of ancestors per step, which
//! for a chain of n steps is n²/2 entries.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::definition::{
    Backoff, Compensate, Jitter, RepeatDefinition, RetryDefinition, StepDefinition,
    WorkflowDefinition,
};
use crate::duration::parse_millis;
use crate::expr::{self, Expr, ROOT_VARIABLES, StepRefs, Template};
use crate::limits::{self, MAX_EXECUTION_ID_LEN};
use crate::retry::{MAX_ATTEMPTS_CAP, RetryPolicy};
use crate::schedule::{self, CatchUp, CronExpr, DEFAULT_MAX_CATCH_UP, MAX_CATCH_UP_CAP, Schedule};
use crate::workflow::{
    Action, Call, ChildWorkflow, Compensation, DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT_MS,
    MAX_REPEAT_ITERATIONS, Repeat, Step, Workflow, check_execution_timeout,
};

/// One thing wrong with a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        match (&self.step, &self.field) {
            (Some(step), Some(field)) => write!(f, "step `{step}`, `{field}`: ")?,
            (Some(step), None) => write!(f, "step `{step}`: ")?,
            (None, Some(field)) => write!(f, "`{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a definition.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize)]
pub struct ValidationErrors {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} problem{} in workflow definition:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub(crate) fn parse(message: String) -> ValidationErrors {
        ValidationErrors {
            problems: vec![Problem {
                step: None,
                field: None,
                message,
                line: None,
            }],
        }
    }

    /// Adds the source line of each problem's step, found in the definition text.
    pub(crate) fn with_lines(mut self, text: &str) -> ValidationErrors {
        let lines = step_lines(text);
        for problem in &mut self.problems {
            if problem.line.is_none()
                && let Some(step) = &problem.step
            {
                problem.line = lines.get(step.as_str()).copied();
            }
        }
        self
    }
}

/// Line of each step's key under `steps:` in YAML, or `"name": {` in JSON.
fn step_lines(text: &str) -> HashMap<&str, usize> {
    let mut found = HashMap::new();
    let mut in_steps = false;
    let mut step_indent = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("steps:") || trimmed.starts_with("\"steps\"") {
            in_steps = true;
            step_indent = None;
            continue;
        }
        if !in_steps || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 0 && !trimmed.starts_with('"') && !trimmed.starts_with('}') {
            in_steps = false;
            continue;
        }
        let key = trimmed.trim_start_matches('"');
        let Some(end) = key.find(['"', ':']) else {
            continue;
        };
        let name = &key[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        match step_indent {
            None => step_indent = Some(indent),
            Some(i) if i != indent => continue,
            _ => {}
        }
        found.entry(name).or_insert(number + 1);
    }
    found
}

struct Collector {
    problems: Vec<Problem>,
    /// Reads of one step by another's expressions, decided once the whole
    /// graph is known.
    reads: Vec<PendingRead>,
}

/// An expression of step `reader` reads step `read`: allowed only if `read`
/// is among `reader`'s ancestors. If not, `problem` is reported, placed
/// before `problems[at]` so the report keeps the definition's order.
struct PendingRead {
    at: usize,
    reader: usize,
    read: usize,
    problem: Problem,
}

impl Collector {
    fn add(&mut self, step: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        self.problems.push(problem(step, field, message));
    }

    fn read(&mut self, reader: usize, read: usize, problem: Problem) {
        self.reads.push(PendingRead {
            at: self.problems.len(),
            reader,
            read,
            problem,
        });
    }

    /// Every problem, with the reads `allowed` refuses in their places.
    fn finish(self, allowed: &[bool]) -> Vec<Problem> {
        let mut refused = self
            .reads
            .into_iter()
            .zip(allowed)
            .filter(|(_, allowed)| !**allowed)
            .map(|(read, _)| read)
            .peekable();
        let mut problems = Vec::with_capacity(self.problems.len());
        for (at, problem) in self.problems.into_iter().enumerate() {
            while let Some(read) = refused.next_if(|r| r.at == at) {
                problems.push(read.problem);
            }
            problems.push(problem);
        }
        problems.extend(refused.map(|r| r.problem));
        problems
    }

    fn duration(&mut self, step: Option<&str>, field: &str, text: Option<&str>) -> Option<u64> {
        let text = text?;
        match parse_millis(text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.add(step, Some(field), e.to_string());
                None
            }
        }
    }
}

fn problem(step: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Problem {
    Problem {
        step: step.map(str::to_string),
        field: field.map(str::to_string),
        message: message.into(),
        line: None,
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where an expression sits decides which steps it may read.
#[derive(Clone, Copy)]
enum Reads {
    /// Only steps the step at this position depends on (they are finished
    /// when it runs).
    Ancestors(usize),
    /// Its ancestors and the step itself (compensation inputs).
    AncestorsAndSelf(usize),
    /// Any step (the workflow output).
    Any,
}

/// What an expression can read of `steps.NAME`.
const STEP_FIELDS: &[&str] = &["output", "status"];

/// ` (did you mean `x`?)` for the closest of `known` to `name`, if close.
fn did_you_mean(name: &str, known: &[&str]) -> String {
    crate::fields::closest(name, known.iter().copied())
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

struct ExprCheck<'a> {
    by_name: &'a HashMap<&'a str, usize>,
    step: Option<&'a str>,
    for_each: bool,
}

impl ExprCheck<'_> {
    fn check(&self, c: &mut Collector, field: &str, e: &Expr, reads: Reads) {
        for variable in e.free_variables() {
            if !ROOT_VARIABLES.contains(&variable.as_str()) {
                c.add(
                    self.step,
                    Some(field),
                    format!(
                        "`{}` names `{variable}`, which is not defined{}; an expression may start with {}",
                        e.source(),
                        did_you_mean(variable, ROOT_VARIABLES),
                        ROOT_VARIABLES
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        for (step, step_field) in e.step_fields() {
            if !STEP_FIELDS.contains(&step_field.as_str()) {
                c.add(
                    self.step,
                    Some(field),
                    format!(
                        "`{}` reads `steps.{step}.{step_field}`, but a step has only `output` and `status`{}",
                        e.source(),
                        did_you_mean(step_field, STEP_FIELDS)
                    ),
                );
            }
        }
        for variable in e.variables() {
            let v = variable.as_str();
            if (v == "item" || v == "index") && !self.for_each {
                c.add(
                    self.step,
                    Some(field),
                    format!(
                        "`{}` uses `{v}`, which exists only in a `for_each` step (in its `input` and `compensate.input`)",
                        e.source()
                    ),
                );
            }
        }
        if let StepRefs::Named(names) = e.step_refs() {
            for name in names {
                match self.by_name.get(name.as_str()) {
                    None => c.add(
                        self.step,
                        Some(field),
                        format!("`{}` refers to unknown step `{name}`", e.source()),
                    ),
                    Some(&i) => {
                        let reader = match reads {
                            Reads::Any => continue,
                            Reads::AncestorsAndSelf(me) if i == me => continue,
                            Reads::Ancestors(me) | Reads::AncestorsAndSelf(me) => me,
                        };
                        c.read(
                            reader,
                            i,
                            problem(
                                self.step,
                                Some(field),
                                format!(
                                    "`{}` reads step `{name}`, which is not among this step's `needs` (directly or through other steps), so it may not have run yet",
                                    e.source()
                                ),
                            ),
                        );
                    }
                }
            }
        }
    }

    fn template(
        &self,
        c: &mut Collector,
        field: &str,
        value: Option<&serde_json::Value>,
        reads: Reads,
    ) -> Option<Template> {
        let Some(value) = value else {
            return Some(Template::null());
        };
        if let Err(e) = limits::check_json_depth(value, "the template") {
            c.add(self.step, Some(field), e.to_string());
            return None;
        }
        match Template::compile(value) {
            Ok(t) => {
                for e in t.exprs() {
                    self.check(c, field, e, reads);
                }
                Some(t)
            }
            Err(errors) => {
                for e in errors {
                    c.add(self.step, Some(field), e.to_string());
                }
                None
            }
        }
    }

    fn single(&self, c: &mut Collector, field: &str, text: &str, reads: Reads) -> Option<Expr> {
        match expr::compile_single(text) {
            Ok(e) => {
                self.check(c, field, &e, reads);
                Some(e)
            }
            Err(e) => {
                c.add(self.step, Some(field), e.to_string());
                None
            }
        }
    }
}

fn retry_policy(
    c: &mut Collector,
    step: Option<&str>,
    field: &str,
    own: Option<&RetryDefinition>,
    fallback: Option<&RetryDefinition>,
    base: Option<&RetryPolicy>,
) -> Option<RetryPolicy> {
    let pick = |f: fn(&RetryDefinition) -> Option<&String>| {
        own.and_then(f)
            .or_else(|| fallback.and_then(f))
            .map(String::as_str)
    };
    let max_attempts = own
        .and_then(|r| r.max_attempts)
        .or_else(|| fallback.and_then(|r| r.max_attempts))
        .or(base.map(|b| b.max_attempts));
    let Some(max_attempts) = max_attempts else {
        c.add(
            step,
            Some(&format!("{field}.max_attempts")),
            "no attempt limit: set `retry.max_attempts` on the step or in `defaults.retry`",
        );
        return None;
    };
    if max_attempts == 0 || max_attempts > MAX_ATTEMPTS_CAP {
        c.add(
            step,
            Some(&format!("{field}.max_attempts")),
            format!("must be between 1 and {MAX_ATTEMPTS_CAP}, not {max_attempts}"),
        );
    }
    let delay_ms = c
        .duration(step, &format!("{field}.delay"), pick(|r| r.delay.as_ref()))
        .or(base.map(|b| b.delay_ms))
        .unwrap_or(1_000);
    let max_delay_ms = c
        .duration(
            step,
            &format!("{field}.max_delay"),
            pick(|r| r.max_delay.as_ref()),
        )
        .or(base.map(|b| b.max_delay_ms))
        .unwrap_or(u64::MAX);
    if max_delay_ms < delay_ms {
        c.add(
            step,
            Some(&format!("{field}.max_delay")),
            "is shorter than `delay`",
        );
    }
    let backoff = own
        .and_then(|r| r.backoff)
        .or_else(|| fallback.and_then(|r| r.backoff))
        .or(base.map(|b| b.backoff))
        .unwrap_or(Backoff::Exponential);
    let jitter = own
        .and_then(|r| r.jitter)
        .or_else(|| fallback.and_then(|r| r.jitter))
        .or(base.map(|b| b.jitter))
        .unwrap_or(Jitter::None);
    let retry_on = own
        .and_then(|r| r.retry_on.clone())
        .or_else(|| fallback.and_then(|r| r.retry_on.clone()));
    let no_retry_on = own
        .and_then(|r| r.no_retry_on.clone())
        .or_else(|| fallback.and_then(|r| r.no_retry_on.clone()))
        .unwrap_or_default();
    Some(RetryPolicy {
        max_attempts: max_attempts.clamp(1, MAX_ATTEMPTS_CAP),
        backoff,
        delay_ms,
        max_delay_ms,
        jitter,
        retry_on,
        no_retry_on,
    })
}

/// At most this many dependency cycles are reported, each with at most
/// this many steps shown.
const MAX_CYCLES_SHOWN: usize = 20;
const MAX_CYCLE_STEPS_SHOWN: usize = 24;

/// Finds dependency cycles, each reported as `a -> b -> a` in run order, by
/// an iterative depth-first search (a chain of any length cannot exhaust
/// the stack). Returns the cycles shown and how many there are in all.
fn find_cycles(needs: &[Vec<usize>], names: &[&str]) -> (Vec<String>, usize) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; needs.len()];
    let mut cycles = Vec::new();
    let mut found = 0;
    // The search path: each step with how many of its needs were followed.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..needs.len() {
        if marks[root] != Mark::New {
            continue;
        }
        marks[root] = Mark::Active;
        path.push((root, 0));
        while let Some((node, followed)) = path.last_mut() {
            let node = *node;
            let Some(&next) = needs[node].get(*followed) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *followed += 1;
            match marks[next] {
                Mark::New => {
                    marks[next] = Mark::Active;
                    path.push((next, 0));
                }
                Mark::Active => {
                    found += 1;
                    if cycles.len() < MAX_CYCLES_SHOWN {
                        let start = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                        cycle.push(next);
                        cycles.push(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
    }
    let shown = cycles
        .into_iter()
        .map(|cycle| {
            // `needs` edges point at dependencies; print in run order.
            let steps: Vec<&str> = cycle.iter().rev().map(|&i| names[i]).collect();
            if steps.len() <= MAX_CYCLE_STEPS_SHOWN {
                return steps.join(" -> ");
            }
            let half = MAX_CYCLE_STEPS_SHOWN / 2;
            format!(
                "{} -> ({} more) -> {}",
                steps[..half].join(" -> "),
                steps.len() - 2 * half,
                steps[steps.len() - half..].join(" -> ")
            )
        })
        .collect();
    (shown, found)
}

/// For each `(reader, read)` pair, whether `read` is among `reader`'s
/// ancestors (the steps it needs, directly or through others). `needs` has
/// no cycles.
///
/// A direct need is answered at once. The rest are answered in passes, one
/// per 64 distinct steps read: each pass walks the steps in dependency
/// order, carrying in one 64-bit word per step which of those 64 are its
/// ancestors. Time is O((steps + needs) × passes) and memory linear, where
/// keeping every step's ancestors would take n²/2 entries for a chain.
fn ancestor_queries(needs: &[Vec<usize>], queries: &[(usize, usize)]) -> Vec<bool> {
    let mut answers = vec![false; queries.len()];
    // Steps read other than as a direct need, in the order of their bits,
    // and the queries each pass answers, with the bit they ask about.
    let mut targets: Vec<usize> = Vec::new();
    let mut bit_of: HashMap<usize, usize> = HashMap::new();
    let mut by_pass: Vec<Vec<(usize, usize)>> = Vec::new();
    for (q, &(reader, read)) in queries.iter().enumerate() {
        if needs[reader].contains(&read) {
            answers[q] = true;
            continue;
        }
        let bit = *bit_of.entry(read).or_insert_with(|| {
            targets.push(read);
            targets.len() - 1
        });
        if bit / 64 == by_pass.len() {
            by_pass.push(Vec::new());
        }
        by_pass[bit / 64].push((q, bit % 64));
    }
    if by_pass.is_empty() {
        return answers;
    }
    let order = dependency_order(needs);
    let mut own = vec![0u64; needs.len()];
    let mut ancestors = vec![0u64; needs.len()];
    for (pass, (pending, reads)) in by_pass.iter().zip(targets.chunks(64)).enumerate() {
        if pass > 0 {
            for &read in &targets[(pass - 1) * 64..pass * 64] {
                own[read] = 0;
            }
        }
        for (bit, &read) in reads.iter().enumerate() {
            own[read] = 1 << bit;
        }
        for &step in &order {
            ancestors[step] = needs[step]
                .iter()
                .fold(0, |acc, &need| acc | ancestors[need] | own[need]);
        }
        for &(q, bit) in pending {
            let (reader, _) = queries[q];
            answers[q] = ancestors[reader] & (1 << bit) != 0;
        }
    }
    answers
}

/// Steps ordered so each comes after everything it needs (Kahn's
/// algorithm); steps on a cycle are left out.
fn dependency_order(needs: &[Vec<usize>]) -> Vec<usize> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    for (step, step_needs) in needs.iter().enumerate() {
        for &need in step_needs {
            dependents[need].push(step);
        }
    }
    let mut order: Vec<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut next = 0;
    while let Some(&step) = order.get(next) {
        next += 1;
        for &dependent in &dependents[step] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                order.push(dependent);
            }
        }
    }
    order
}

/// Validates and compiles a definition.
///
/// Runs on a thread with a stack sized for the CEL parser at the expression
/// limits (see [`crate::limits::MAX_EXPRESSION_DEPTH`]).
pub fn validate(definition: WorkflowDefinition) -> Result<Workflow, ValidationErrors> {
    expr::on_compile_stack(move || validate_here(definition))
}

fn validate_here(definition: WorkflowDefinition) -> Result<Workflow, ValidationErrors> {
    let mut c = Collector {
        problems: Vec::new(),
        reads: Vec::new(),
    };
    if let Err(e) = limits::check_step_count(definition.steps.len()) {
        // Nothing else is looked at: the definition is too large to work on.
        c.add(None, Some("steps"), e.to_string());
        return Err(ValidationErrors {
            problems: c.problems,
        });
    }
    if !valid_workflow_name(&definition.name) {
        c.add(
            None,
            Some("name"),
            format!(
                "`{}` is not a valid workflow name (letters, digits, `-` and `_`)",
                definition.name
            ),
        );
    }
    if definition.steps.is_empty() {
        c.add(None, Some("steps"), "a workflow needs at least one step");
    }

    // Names first: everything else refers to steps by name.
    let names: Vec<&str> = definition.steps.iter().map(|(n, _)| n).collect();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if !is_identifier(name) {
            c.add(
                Some(name),
                None,
                "step names must start with a letter and use only letters, digits and `_` (expressions read them as `steps.NAME`)",
            );
        }
        if by_name.insert(name, i).is_some() {
            c.add(Some(name), None, "duplicate step name");
        }
    }
    // With duplicates, the last definition of a name wins in `by_name`; keep
    // positions consistent by resolving every step's needs against it.
    let suggestions = Suggestions::new(&names);
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (i, (name, step)) in definition.steps.iter().enumerate() {
        let mut seen = HashSet::new();
        for need in &step.needs {
            if !seen.insert(need.as_str()) {
                c.add(
                    Some(name),
                    Some("needs"),
                    format!("`{need}` is listed twice"),
                );
                continue;
            }
            match by_name.get(need.as_str()) {
                Some(&j) if j == i => c.add(Some(name), Some("needs"), "a step cannot need itself"),
                Some(&j) => needs[i].push(j),
                None => c.add(
                    Some(name),
                    Some("needs"),
                    format!("unknown step `{need}`{}", suggestions.suggest(need)),
                ),
            }
        }
    }
    let (cycles, cycle_count) = find_cycles(&needs, &names);
    for cycle in &cycles {
        c.add(None, Some("needs"), format!("dependency cycle: {cycle}"));
    }
    if cycle_count > cycles.len() {
        c.add(
            None,
            Some("needs"),
            format!(
                "{} more dependency cycles not shown",
                cycle_count - cycles.len()
            ),
        );
    }

    let default_timeout = c.duration(
        None,
        "defaults.timeout",
        definition.defaults.timeout.as_deref(),
    );
    let default_comp_retry = retry_policy(
        &mut c,
        None,
        "defaults.compensation_retry",
        definition.defaults.compensation_retry.as_ref(),
        None,
        Some(&RetryPolicy::compensation_default()),
    );

    let mut steps = Vec::with_capacity(names.len());
    for (i, (name, step)) in definition.steps.iter().enumerate() {
        let check = ExprCheck {
            by_name: &by_name,
            step: Some(name),
            for_each: step.for_each.is_some(),
        };
        let reads = Reads::Ancestors(i);
        // `item` and `index` exist per element, not where the whole step is decided.
        let step_level = ExprCheck {
            for_each: false,
            ..check
        };
        let condition = step
            .condition
            .as_deref()
            .and_then(|text| step_level.single(&mut c, "if", text, reads));
        let action = step_action(
            &mut c,
            &check,
            name,
            i,
            step,
            &definition,
            default_timeout,
            default_comp_retry.as_ref(),
        );
        steps.push(Step {
            name: Arc::from(name),
            position: i,
            needs: needs[i].clone(),
            dependents: Vec::new(),
            condition,
            action: action.unwrap_or(Action::Wait { millis: 0 }),
            continue_on_failure: step.continue_on_failure,
        });
    }
    for i in 0..steps.len() {
        for j in steps[i].needs.clone() {
            steps[j].dependents.push(i);
        }
    }

    let output_check = ExprCheck {
        by_name: &by_name,
        step: None,
        for_each: false,
    };
    let output = output_check
        .template(&mut c, "output", definition.output.as_ref(), Reads::Any)
        .unwrap_or_else(Template::null);

    let schedules = validate_schedules(&mut c, &definition);
    validate_triggers(&mut c, &definition);
    let retention_ms = c
        .duration(None, "retention", definition.retention.as_deref())
        .and_then(|ms| match crate::workflow::check_retention(ms) {
            Ok(ms) => Some(ms),
            Err(message) => {
                c.add(None, Some("retention"), message);
                None
            }
        })
        .unwrap_or(crate::workflow::DEFAULT_RETENTION_MS);
    let timeout_ms = c
        .duration(None, "timeout", definition.timeout.as_deref())
        .and_then(|ms| match crate::workflow::check_execution_timeout(ms) {
            Ok(ms) => Some(ms),
            Err(message) => {
                c.add(None, Some("timeout"), message);
                None
            }
        });

    let allowed = if cycle_count == 0 {
        let queries: Vec<(usize, usize)> = c.reads.iter().map(|r| (r.reader, r.read)).collect();
        ancestor_queries(&needs, &queries)
    } else {
        // Order is undefined around a cycle; the cycle is the one complaint about it.
        vec![true; c.reads.len()]
    };
    let problems = c.finish(&allowed);
    if !problems.is_empty() {
        return Err(ValidationErrors { problems });
    }
    let by_name = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i))
        .collect();
    Ok(Workflow {
        name: Arc::from(definition.name.as_str()),
        definition,
        steps,
        output,
        schedules,
        retention_ms,
        timeout_ms,
        by_name,
    })
}

fn is_schedule_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks every schedule; problems name it as `schedules.NAME.FIELD`.
fn validate_schedules(c: &mut Collector, definition: &WorkflowDefinition) -> Vec<Schedule> {
    let mut seen = HashSet::new();
    let mut schedules = Vec::new();
    for (position, (name, schedule)) in definition.schedules.iter().enumerate() {
        if name.is_empty() {
            c.add(
                None,
                Some(&format!("schedules[{position}].name")),
                "a schedule in the list form needs a `name`",
            );
            continue;
        }
        let at = |field: &str| format!("schedules.{name}.{field}");
        if !is_schedule_name(name) {
            c.add(
                None,
                Some(&format!("schedules.{name}")),
                "schedule names use 1 to 64 letters, digits, `-` and `_`",
            );
        }
        if !seen.insert(name) {
            c.add(
                None,
                Some(&format!("schedules.{name}")),
                "duplicate schedule name",
            );
        }
        if let Some(inner) = &schedule.name
            && inner != name
        {
            c.add(
                None,
                Some(&at("name")),
                format!("`{inner}` differs from its key `{name}`, which names the schedule"),
            );
        }
        let example_id = schedule::execution_id(&definition.name, name, 0);
        if example_id.len() > MAX_EXECUTION_ID_LEN {
            c.add(
                None,
                Some(&format!("schedules.{name}")),
                format!(
                    "its execution ids (like `{example_id}`) are longer than {MAX_EXECUTION_ID_LEN} characters: shorten the workflow or schedule name"
                ),
            );
        }
        let cron = match CronExpr::parse(&schedule.cron) {
            Ok(cron) => Some(cron),
            Err(e) => {
                c.add(
                    None,
                    Some(&at("cron")),
                    format!("`{}` is not a valid cron expression: {e}", schedule.cron),
                );
                None
            }
        };
        let zone_name = schedule.timezone.as_deref().unwrap_or("UTC");
        let timezone = match schedule::parse_timezone(zone_name) {
            Some(zone) => Some(zone),
            None => {
                let hint = schedule::timezone_suggestion(zone_name)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| {
                        " (for example `America/New_York`, `Europe/Paris` or `UTC`)".into()
                    });
                c.add(
                    None,
                    Some(&at("timezone")),
                    format!("`{zone_name}` is not an IANA time zone{hint}"),
                );
                None
            }
        };
        if let Some(input) = &schedule.input
            && let Err(e) = limits::check_json_depth(input, "the input")
        {
            c.add(None, Some(&at("input")), e.to_string());
        }
        let catch_up = schedule.catch_up.unwrap_or_default();
        if let Some(max) = schedule.max_catch_up {
            if catch_up != CatchUp::All {
                c.add(
                    None,
                    Some(&at("max_catch_up")),
                    "only applies to `catch_up: all`",
                );
            } else if max == 0 || max > MAX_CATCH_UP_CAP {
                c.add(
                    None,
                    Some(&at("max_catch_up")),
                    format!("must be between 1 and {MAX_CATCH_UP_CAP}, not {max}"),
                );
            }
        }
        if let (Some(cron), Some(timezone)) = (cron, timezone) {
            schedules.push(Schedule {
                name: Arc::from(name),
                cron,
                timezone,
                input: schedule
                    .input
                    .clone()
                    .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
                enabled: schedule.enabled.unwrap_or(true),
                overlap: schedule.overlap.unwrap_or_default(),
                catch_up,
                max_catch_up: schedule.max_catch_up.unwrap_or(DEFAULT_MAX_CATCH_UP),
            });
        }
    }
    schedules
}

/// Checks every trigger's name, pattern and input; problems name it as
/// `triggers.NAME.FIELD` (see [`crate::trigger`]).
fn validate_triggers(c: &mut Collector, definition: &WorkflowDefinition) {
    let mut seen = HashSet::new();
    for (position, trigger) in definition.triggers.iter().enumerate() {
        let name = trigger.name.as_str();
        let at = if crate::trigger::is_trigger_name(name) {
            format!("triggers.{name}")
        } else {
            c.add(
                None,
                Some(&format!("triggers[{position}].name")),
                format!("`{name}` is not a trigger name: use 1 to 64 letters, digits, `-` and `_`"),
            );
            format!("triggers[{position}]")
        };
        if !name.is_empty() && !seen.insert(name) {
            c.add(None, Some(&at), "duplicate trigger name");
        }
        if let Err(problems) = crate::trigger::Trigger::compile(trigger) {
            for p in problems {
                c.add(None, Some(&format!("{at}.{}", p.field)), p.message);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn step_action(
    c: &mut Collector,
    check: &ExprCheck<'_>,
    name: &str,
    position: usize,
    step: &StepDefinition,
    definition: &WorkflowDefinition,
    default_timeout: Option<u64>,
    default_comp_retry: Option<&RetryPolicy>,
) -> Option<Action> {
    let s = Some(name);
    let kinds: Vec<&str> = [
        ("function", step.function.is_some()),
        ("workflow", step.workflow.is_some()),
        ("wait", step.wait.is_some()),
        ("wait_until", step.wait_until.is_some()),
        ("wait_for", step.wait_for.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    match kinds.as_slice() {
        [] => {
            c.add(
                s,
                None,
                "says nothing to do: give it a `function`, `workflow`, `wait`, `wait_until` or `wait_for`",
            );
            return None;
        }
        [_] => {}
        many => {
            c.add(
                s,
                None,
                format!("has {} — a step does exactly one of these", many.join(", ")),
            );
            return None;
        }
    }
    let reads = Reads::Ancestors(position);
    if step.function.is_none() && step.workflow.is_none() {
        for (field, present) in [
            ("input", step.input.is_some()),
            ("retry", step.retry.is_some()),
            ("compensate", step.compensate.is_some()),
            ("for_each", step.for_each.is_some()),
            ("max_concurrency", step.max_concurrency.is_some()),
            ("mutates", step.mutates.is_some()),
            ("reason", step.reason.is_some()),
            ("timeout", step.timeout.is_some()),
            ("repeat", step.repeat.is_some()),
        ] {
            if present {
                c.add(
                    s,
                    Some(field),
                    "only a step with a `function` or `workflow` takes this (waits do not call anything)",
                );
            }
        }
    }
    if step.workflow_version.is_some() && step.workflow.is_none() {
        c.add(
            s,
            Some("workflow_version"),
            "only a step with a `workflow` takes this",
        );
    }
    if let Some(text) = &step.wait {
        return c
            .duration(s, "wait", Some(text))
            .map(|millis| Action::Wait { millis });
    }
    if let Some(text) = &step.wait_until {
        return check
            .single(c, "wait_until", text, reads)
            .map(|e| Action::WaitUntil(Box::new(e)));
    }
    if let Some(wait_for) = &step.wait_for {
        if wait_for.signal.trim().is_empty() {
            c.add(s, Some("wait_for.signal"), "names no signal");
        }
        let timeout_ms = c.duration(s, "wait_for.timeout", wait_for.timeout.as_deref());
        return Some(Action::WaitFor {
            signal: wait_for.signal.clone(),
            timeout_ms,
        });
    }

    let function = step.function.as_deref().unwrap_or_default();
    if step.workflow.is_none() && function.trim().is_empty() {
        c.add(s, Some("function"), "is empty");
    }
    let mutates = step.mutates.unwrap_or(true);
    let compensation = match (&step.compensate, mutates) {
        // A child undoes itself with its own compensations.
        (None, true) if step.workflow.is_some() => None,
        (None, true) => {
            c.add(
                s,
                Some("compensate"),
                "mutates outside state but has no compensation: add `compensate: { function: ... }`, or `mutates: false`, or `compensate: none` with a `reason`",
            );
            None
        }
        (Some(_), false) => {
            c.add(
                s,
                Some("compensate"),
                "says `mutates: false`, so it has nothing to compensate",
            );
            None
        }
        (Some(Compensate::None), true) => {
            if step.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                c.add(
                    s,
                    Some("reason"),
                    "`compensate: none` needs a `reason` saying why the effect cannot or need not be undone",
                );
            }
            None
        }
        (Some(Compensate::Run(comp)), true) => {
            let comp_reads = Reads::AncestorsAndSelf(position);
            let input = check.template(c, "compensate.input", comp.input.as_ref(), comp_reads);
            let retry = retry_policy(
                c,
                s,
                "compensate.retry",
                comp.retry.as_ref(),
                None,
                default_comp_retry,
            );
            let timeout_ms = c
                .duration(s, "compensate.timeout", comp.timeout.as_deref())
                // The step's own `timeout` is checked, and reported, below.
                .or_else(|| step.timeout.as_deref().and_then(|t| parse_millis(t).ok()))
                .or(default_timeout)
                .unwrap_or(DEFAULT_TIMEOUT_MS);
            if comp.function.trim().is_empty() {
                c.add(s, Some("compensate.function"), "is empty");
            }
            match (input, retry) {
                (Some(input), Some(retry)) => Some(Compensation {
                    function: Arc::from(comp.function.as_str()),
                    input,
                    retry,
                    timeout_ms,
                }),
                _ => None,
            }
        }
        (None, false) => None,
    };
    if step.reason.is_some() && !matches!(step.compensate, Some(Compensate::None)) {
        c.add(
            s,
            Some("reason"),
            "only explains `compensate: none`; this step does not say that",
        );
    }
    let input = check.template(c, "input", step.input.as_ref(), reads);
    let retry = if step.workflow.is_some() {
        // A child ends only after its own steps' retries; running it again
        // would repeat what it undid.
        if step.retry.is_some() {
            c.add(
                s,
                Some("retry"),
                "a step that runs a workflow is not retried: give the workflow's own steps `retry`",
            );
        }
        Some(RetryPolicy::once())
    } else {
        retry_policy(
            c,
            s,
            "retry",
            step.retry.as_ref(),
            definition.defaults.retry.as_ref(),
            None,
        )
    };
    let timeout_ms = c
        .duration(s, "timeout", step.timeout.as_deref())
        .or(default_timeout)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 {
        c.add(s, Some("timeout"), "must be longer than zero");
    }
    let step_level = ExprCheck {
        for_each: false,
        ..*check
    };
    let for_each = step
        .for_each
        .as_deref()
        .and_then(|text| step_level.single(c, "for_each", text, reads));
    if step.max_concurrency.is_some() && step.for_each.is_none() {
        c.add(
            s,
            Some("max_concurrency"),
            "only applies to a `for_each` step",
        );
    }
    if step.max_concurrency == Some(0) {
        c.add(s, Some("max_concurrency"), "must be at least 1");
    }
    let repeat = step
        .repeat
        .as_ref()
        .and_then(|repeat| repeat_of(c, &step_level, s, position, step, repeat));
    let tolerated_failures = step.tolerated_failures;
    let tolerated_failure_percent = step.tolerated_failure_percent;
    for (field, present) in [
        ("tolerated_failures", tolerated_failures.is_some()),
        (
            "tolerated_failure_percent",
            tolerated_failure_percent.is_some(),
        ),
    ] {
        if present && step.for_each.is_none() {
            c.add(s, Some(field), "only applies to a `for_each` step");
        }
    }
    if let Some(p) = tolerated_failure_percent
        && p > 100
    {
        c.add(
            s,
            Some("tolerated_failure_percent"),
            format!("must be from 0 to 100, not {p}"),
        );
    }
    let workflow = step
        .workflow
        .as_deref()
        .and_then(|name| child_workflow(c, s, step, name, mutates, compensation.is_some()));
    Some(Action::Call(Box::new(Call {
        function: Arc::from(function),
        workflow,
        input: input?,
        retry: retry?,
        timeout_ms,
        mutates,
        compensation,
        for_each,
        max_concurrency: step
            .max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY)
            .max(1),
        repeat,
        tolerated_failures,
        tolerated_failure_percent,
    })))
}

fn valid_workflow_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// A `workflow:` step's child. Its `timeout` bounds the child execution
/// (there is no attempt to time out: the child always reports how it ended).
fn child_workflow(
    c: &mut Collector,
    s: Option<&str>,
    step: &StepDefinition,
    name: &str,
    mutates: bool,
    has_compensate_function: bool,
) -> Option<ChildWorkflow> {
    if !valid_workflow_name(name) {
        c.add(
            s,
            Some("workflow"),
            format!("`{name}` is not a workflow name: use letters, digits, `-` and `_`"),
        );
    }
    if step.repeat.is_some() {
        c.add(
            s,
            Some("repeat"),
            "a step that runs a workflow cannot repeat; put the `repeat` on a step of that workflow",
        );
    }
    let timeout_ms = match step.timeout.as_deref().map(parse_millis) {
        None => None,
        Some(Ok(ms)) => match check_execution_timeout(ms) {
            Ok(ms) => Some(ms),
            Err(problem) => {
                c.add(
                    s,
                    Some("timeout"),
                    format!("bounds the child execution, so it {problem}"),
                );
                None
            }
        },
        // Reported with the step's other fields.
        Some(Err(_)) => None,
    };
    Some(ChildWorkflow {
        name: Arc::from(name),
        version: step.workflow_version,
        timeout_ms,
        compensate: mutates && step.compensate.is_none() && !has_compensate_function,
    })
}

/// A step's `repeat`: its condition reads the step's own output, and a step
/// that repeats only reads (each call of a change would need its own undo).
fn repeat_of(
    c: &mut Collector,
    check: &ExprCheck<'_>,
    s: Option<&str>,
    position: usize,
    step: &StepDefinition,
    repeat: &RepeatDefinition,
) -> Option<Repeat> {
    if step.for_each.is_some() {
        c.add(
            s,
            Some("repeat"),
            "a `for_each` step cannot repeat; repeat inside the function, or repeat the step that follows",
        );
    }
    if step.mutates != Some(false) {
        c.add(
            s,
            Some("repeat"),
            "a repeating step must say `mutates: false`: it polls, and each call of a change would need its own undo",
        );
    }
    if !(1..=MAX_REPEAT_ITERATIONS).contains(&repeat.max_iterations) {
        c.add(
            s,
            Some("repeat.max_iterations"),
            format!(
                "must be between 1 and {MAX_REPEAT_ITERATIONS}, not {}",
                repeat.max_iterations
            ),
        );
    }
    let delay_ms = c.duration(s, "repeat.delay", repeat.delay.as_deref());
    let until = check.single(
        c,
        "repeat.until",
        &repeat.until,
        Reads::AncestorsAndSelf(position),
    );
    Some(Repeat {
        until: until?,
        max_iterations: repeat.max_iterations.clamp(1, MAX_REPEAT_ITERATIONS),
        delay_ms: match repeat.delay {
            Some(_) => delay_ms?,
            None => 0,
        },
    })
}

/// "Did you mean" for an unknown step name: a step whose name differs only
/// in case, or by one or two letters at the end; the first declared if
/// several do. Found through indexes, so many unknown names cost no more
/// than the names themselves.
struct Suggestions<'a> {
    names: &'a [&'a str],
    /// First position of each name, lowercased.
    lowercase: HashMap<String, usize>,
    /// First position of each name, and of each name cut by one or two
    /// bytes at the end, under the shorter text.
    prefixes: HashMap<&'a str, usize>,
    exact: HashMap<&'a str, usize>,
}

impl<'a> Suggestions<'a> {
    fn new(names: &'a [&'a str]) -> Suggestions<'a> {
        let mut lowercase = HashMap::new();
        let mut prefixes = HashMap::new();
        let mut exact = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            lowercase.entry(name.to_ascii_lowercase()).or_insert(i);
            exact.entry(*name).or_insert(i);
            for cut in 0..=2 {
                if let Some(prefix) = name.len().checked_sub(cut).and_then(|n| name.get(..n)) {
                    prefixes.entry(prefix).or_insert(i);
                }
            }
        }
        Suggestions {
            names,
            lowercase,
            prefixes,
            exact,
        }
    }

    fn suggest(&self, name: &str) -> String {
        let same_case = self.lowercase.get(&name.to_ascii_lowercase()).copied();
        // A step whose name starts with `name`, at most two bytes longer.
        let longer = self.prefixes.get(name).copied();
        // A step whose name `name` starts with, at most two bytes shorter.
        let shorter = (0..=2)
            .filter_map(|cut| name.len().checked_sub(cut).and_then(|n| name.get(..n)))
            .filter_map(|prefix| self.exact.get(prefix).copied())
            .min();
        [same_case, longer, shorter]
            .into_iter()
            .flatten()
            .min()
            .map(|i| format!(" (did you mean `{}`?)", self.names[i]))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step's ancestors, the slow way.
    fn ancestors(needs: &[Vec<usize>]) -> Vec<HashSet<usize>> {
        let order = dependency_order(needs);
        let mut sets: Vec<HashSet<usize>> = vec![HashSet::new(); needs.len()];
        for &step in &order {
            let mut set = HashSet::new();
            for &need in &needs[step] {
                set.insert(need);
                set.extend(sets[need].iter().copied());
            }
            sets[step] = set;
        }
        sets
    }

    #[test]
    fn ancestor_queries_agree_with_ancestor_sets() {
        // Random graphs of 200 steps where each step needs up to three
        // earlier ones; every pair is asked, so many passes run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..5 {
            let n = 200;
            let needs: Vec<Vec<usize>> = (0..n)
                .map(|i| {
                    let mut step_needs: Vec<usize> =
                        (0..next(4)).filter(|_| i > 0).map(|_| next(i)).collect();
                    step_needs.sort_unstable();
                    step_needs.dedup();
                    step_needs
                })
                .collect();
            let queries: Vec<(usize, usize)> = (0..n)
                .flat_map(|reader| (0..n).map(move |read| (reader, read)))
                .collect();
            let expected = ancestors(&needs);
            let answers = ancestor_queries(&needs, &queries);
            for (&(reader, read), answer) in queries.iter().zip(answers) {
                assert_eq!(
                    answer,
                    expected[reader].contains(&read),
                    "is {read} an ancestor of {reader}? needs: {needs:?}"
                );
            }
        }
    }

    #[test]
    fn cycles_are_found_in_order_and_shortened() {
        let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut needs: Vec<Vec<usize>> = (0..30).map(|i| vec![(i + 1) % 30]).collect();
        let (shown, count) = find_cycles(&needs, &names);
        assert_eq!(count, 1);
        assert_eq!(
            shown[0],
            "s0 -> s29 -> s28 -> s27 -> s26 -> s25 -> s24 -> s23 -> s22 -> s21 -> s20 -> s19 -> (7 more) -> s11 -> s10 -> s9 -> s8 -> s7 -> s6 -> s5 -> s4 -> s3 -> s2 -> s1 -> s0"
        );
        needs = vec![vec![1], vec![2], vec![0], vec![]];
        let (shown, count) = find_cycles(&needs, &names[..4]);
        assert_eq!(
            (shown, count),
            (vec!["s0 -> s2 -> s1 -> s0".to_string()], 1)
        );
    }
}
