//! What the system tests share: a sandbox directory per test holding its
//! database and ledger, the `baton` binary run inside it, worker processes
//! that can be SIGKILLed, and readers of the SQLite files the binary writes.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

pub mod dev;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, params};
use serde_json::Value;

pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Variables the binary reads; cleared so the caller's shell cannot leak into a test.
const BATON_VARS: [&str; 9] = [
    "BATON_AWS",
    "BATON_DB",
    "BATON_CONFIG",
    "BATON_LEDGER",
    "BATON_FAIL",
    "BATON_MAX_RECEIVES",
    "BATON_VISIBILITY_MS",
    "BATON_LOG",
    "BATON_LOG_FORMAT",
];

/// Statuses after which an execution never changes again.
pub const TERMINAL: [&str; 5] = [
    "succeeded",
    "failed",
    "compensated",
    "compensation_failed",
    "cancelled",
];

/// Lifecycle events that end an execution.
pub const FINISH_EVENTS: [&str; 5] = [
    "execution.succeeded",
    "execution.failed",
    "execution.compensated",
    "execution.compensation_failed",
    "execution.cancelled",
];

/// A file of the repository, e.g. `workflows/order-saga.yaml`.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A definition under `cli/tests/workflows/`.
pub fn test_workflow(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workflows")
        .join(name)
}

pub fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// How one `baton` invocation ended.
#[derive(Debug)]
pub struct Outcome {
    pub args: Vec<String>,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with everything the command printed unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.code,
            Some(code),
            "`baton {}` exited with {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Each stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", self.stdout))
            })
            .collect()
    }

    /// The whole stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A temporary directory with the database (`baton.db`) and, beside it, the
/// ledger (`ledger.db`). Every command runs with the directory as its working
/// directory, so no `baton.toml` of the repository is picked up. Kept on
/// disk, with its worker logs, when the test panics.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    workers: usize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    /// Leases last 200 ms unless extended by a living worker, so a killed worker's tasks come back fast.
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("baton-test-")
            .tempdir()
            .expect("temporary directory");
        Sandbox {
            dir: Some(dir),
            env: vec![("BATON_VISIBILITY_MS".into(), "200".into())],
            workers: 0,
        }
    }

    /// Sets a variable for every command and worker of this sandbox.
    pub fn with_env(mut self, name: &str, value: &str) -> Sandbox {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("sandbox directory").path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.path().join("baton.db")
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.path().join("ledger.db")
    }

    pub fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(BATON);
        command
            .current_dir(self.path())
            .arg("--db")
            .arg(self.db_path())
            .args(args);
        for var in BATON_VARS {
            command.env_remove(var);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        for (name, value) in extra_env {
            command.env(name, value);
        }
        command
    }

    /// Runs `baton --db <sandbox db> ARGS` to completion.
    pub fn baton(&self, args: &[&str]) -> Outcome {
        self.baton_env(args, &[])
    }

    pub fn baton_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Outcome {
        let output = self
            .command(args, extra_env)
            .stdin(Stdio::null())
            .output()
            .expect("the baton binary runs");
        Outcome {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `baton start` with an explicit id; panics unless it succeeds.
    pub fn start(&self, workflow: &Path, id: &str, input: &Value) {
        self.baton(&[
            "start",
            &path_arg(workflow),
            "--id",
            id,
            "--input",
            &input.to_string(),
        ])
        .expect_code(0);
    }

    /// Starts `baton worker` in the background; its log goes to `worker-N.log`.
    pub fn worker(&mut self, extra_env: &[(&str, &str)]) -> WorkerProcess {
        self.workers += 1;
        let log = self.path().join(format!("worker-{}.log", self.workers));
        let stderr = File::create(&log).expect("worker log");
        let child = self
            .command(&["worker"], extra_env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the baton worker starts");
        WorkerProcess {
            child: Some(child),
            log,
        }
    }

    /// Opens a file the binary created, never creating it.
    fn open(path: &Path) -> Connection {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }

    pub fn db(&self) -> Connection {
        Self::open(&self.db_path())
    }

    pub fn ledger(&self) -> Connection {
        Self::open(&self.ledger_path())
    }

    /// One number from the database, e.g. `SELECT COUNT(*) FROM tasks`.
    pub fn count(&self, sql: &str) -> i64 {
        self.db()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every execution's status, by id.
    pub fn statuses(&self) -> BTreeMap<String, String> {
        let conn = self.db();
        let mut stmt = conn
            .prepare("SELECT id, status FROM executions")
            .expect("query executions");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("read executions")
            .collect::<Result<_, _>>()
            .expect("read executions")
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.statuses().remove(id)
    }

    /// The lifecycle events of one execution, oldest first, as the JSON the binary stored.
    pub fn events(&self, id: &str) -> Vec<Value> {
        let conn = self.db();
        let mut stmt = conn
            .prepare("SELECT body FROM events WHERE execution_id = ?1 ORDER BY id")
            .expect("query events");
        stmt.query_map([id], |r| r.get::<_, String>(0))
            .expect("read events")
            .map(|body| {
                serde_json::from_str(&body.expect("event row")).expect("event body is JSON")
            })
            .collect()
    }

    /// How many finishing lifecycle events each execution has.
    pub fn finish_event_counts(&self) -> BTreeMap<String, usize> {
        let conn = self.db();
        let marks = FINISH_EVENTS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT execution_id, COUNT(*) FROM events WHERE kind IN ({marks}) GROUP BY execution_id"
            ))
            .expect("query events");
        stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
        })
        .expect("read events")
        .collect::<Result<_, _>>()
        .expect("read events")
    }

    /// `(timer_key, fire_at)` of an execution's pending timers.
    pub fn timers(&self, id: &str) -> Vec<(String, u64)> {
        let conn = self.db();
        let mut stmt = conn
            .prepare(
                "SELECT timer_key, fire_at FROM timers WHERE execution_id = ?1 ORDER BY fire_at",
            )
            .expect("query timers");
        stmt.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .expect("read timers")
        .collect::<Result<_, _>>()
        .expect("read timers")
    }

    /// Functions of the side effects the ledger recorded for an execution, oldest first.
    pub fn effects(&self, id: &str) -> Vec<String> {
        if !self.ledger_path().exists() {
            return Vec::new();
        }
        let conn = self.ledger();
        let mut stmt = conn
            .prepare("SELECT function FROM effects WHERE execution_id = ?1 ORDER BY id")
            .expect("query effects");
        stmt.query_map([id], |r| r.get(0))
            .expect("read effects")
            .collect::<Result<_, _>>()
            .expect("read effects")
    }

    /// `(idempotency_key, function, rows)` of every effect recorded more than once.
    pub fn duplicate_effects(&self) -> Vec<(String, String, i64)> {
        let conn = self.ledger();
        let mut stmt = conn
            .prepare(
                "SELECT idempotency_key, function, COUNT(*) FROM effects
                 GROUP BY idempotency_key, function HAVING COUNT(*) > 1",
            )
            .expect("query effects");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("read effects")
            .collect::<Result<_, _>>()
            .expect("read effects")
    }

    /// How many handler invocations of `function` for an execution ended with `outcome`
    /// (`recorded`, `replayed`, `succeeded`, `failed`, `crashed`).
    pub fn calls(&self, id: &str, function: &str, outcome: &str) -> i64 {
        self.ledger()
            .query_row(
                "SELECT COUNT(*) FROM calls WHERE execution_id = ?1 AND function = ?2 AND outcome = ?3",
                params![id, function, outcome],
                |r| r.get(0),
            )
            .expect("count calls")
    }

    /// Waits until every given execution has a terminal status; returns the statuses.
    pub fn wait_terminal(&self, ids: &[String], timeout: Duration) -> BTreeMap<String, String> {
        wait_until(&format!("{} executions to finish", ids.len()), timeout, || {
            let statuses = self.statuses();
            let done = ids
                .iter()
                .all(|id| statuses.get(id).is_some_and(|s| TERMINAL.contains(&s.as_str())));
            done.then(|| ids.iter().map(|id| (id.clone(), statuses[id].clone())).collect())
        })
        .unwrap_or_else(|| {
            let statuses = self.statuses();
            let stuck: Vec<_> = ids
                .iter()
                .filter(|id| !statuses.get(*id).is_some_and(|s| TERMINAL.contains(&s.as_str())))
                .map(|id| format!("{id}: {:?}", statuses.get(id)))
                .collect();
            panic!(
                "{} of {} executions did not finish within {timeout:?}: {stuck:?}\n(sandbox kept at {})",
                stuck.len(),
                ids.len(),
                self.path().display()
            )
        })
    }

    /// Waits for the first event of `kind` (and `step`, if given) of an execution.
    pub fn wait_event(&self, id: &str, kind: &str, step: Option<&str>, timeout: Duration) -> Value {
        wait_until(&format!("{kind} of {id}"), timeout, || {
            self.events(id)
                .into_iter()
                .find(|e| e["kind"] == kind && step.is_none_or(|s| e["step"] == s))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {kind} event for {id} within {timeout:?}: {:#?}",
                self.events(id)
            )
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(mut dir) = self.dir.take()
        {
            dir.disable_cleanup(true);
            eprintln!("sandbox kept for inspection: {}", dir.path().display());
        }
    }
}

/// A `baton worker` process; SIGKILLed when dropped.
pub struct WorkerProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// SIGKILL, as a crash or `kill -9` would, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status if the process has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("poll the worker");
        if status.is_some() {
            self.child = None;
        }
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > timeout {
            eprintln!("gave up waiting for {what} after {timeout:?}");
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp the binary stores.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A small seeded generator (xorshift64*): the kill schedule of a failing
/// run can be replayed by setting `BATON_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    /// From `BATON_TEST_SEED`, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("BATON_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (BATON_TEST_SEED={seed} replays it)");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}
