//! Helpers shared by the integration tests: step contexts, throw-away
//! ledgers and re-running this test binary as a child process (for crashes,
//! environment variables and multi-process writers).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use baton_core::TaskKind;
use baton_core::idempotency;
use baton_examples::Ledger;
use baton_runtime::step::StepContext;
use tempfile::TempDir;

/// Set in a child process, so its `#[ignore]`d entry point knows to run.
pub const CHILD_ENV: &str = "BATON_EXAMPLES_TEST_CHILD";

/// The context the engine would send for `step` of `execution`, with the
/// real idempotency key.
pub fn context(
    execution: &str,
    step: &str,
    function: &str,
    kind: TaskKind,
    attempt: u32,
) -> StepContext {
    StepContext {
        execution_id: execution.to_owned(),
        workflow: "order-processing".to_owned(),
        step: step.to_owned(),
        index: None,
        attempt,
        kind,
        function: function.to_owned(),
        idempotency_key: idempotency::key(execution, step, None, kind),
        deadline: u64::MAX,
    }
}

pub fn step(execution: &str, step_name: &str, function: &str, attempt: u32) -> StepContext {
    context(execution, step_name, function, TaskKind::Step, attempt)
}

pub fn compensation(execution: &str, step_name: &str, function: &str, attempt: u32) -> StepContext {
    context(
        execution,
        step_name,
        function,
        TaskKind::Compensation,
        attempt,
    )
}

pub fn temp_ledger() -> (TempDir, Arc<Ledger>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path().join("ledger.db")).expect("open ledger");
    (dir, Arc::new(ledger))
}

/// Runs the `#[ignore]`d test `name` of this binary in a child process.
pub fn run_child(name: &str, cwd: &Path, envs: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(cwd)
        .env(CHILD_ENV, "1")
        .env_remove("BATON_FAIL")
        .env_remove("BATON_LEDGER");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("spawn child test process")
}

pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Whether the child ran its test and it passed (a filter that matched
/// nothing would also exit 0, so check the count too).
pub fn assert_child_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
