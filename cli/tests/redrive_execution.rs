//! `baton redrive` on the embedded backend: a failed execution runs its
//! failed step again under the same idempotency key once the cause is gone,
//! without running what succeeded, and the history says so; an execution
//! that did not fail is refused with the reason.

mod common;

use std::time::Duration;

use common::{Sandbox, path_arg};

const WAIT: Duration = Duration::from_secs(30);

/// A command step that fails while `down` exists, counting its calls.
const FLAKY_PY: &str = r#"
import json, os, sys
json.load(sys.stdin)
with open("calls.txt", "a") as calls:
    calls.write(os.environ.get("BATON_IDEMPOTENCY_KEY", "") + "\n")
if os.path.exists("down"):
    sys.exit(3)
print(json.dumps({"ok": True}))
"#;

const WORKFLOW: &str = r#"name: flaky
defaults: { retry: { max_attempts: 1 } }
steps:
  prepare: { function: noop, mutates: false }
  call: { needs: [prepare], function: flaky, mutates: false }
"#;

#[test]
fn a_failed_execution_is_redriven_from_its_failed_step() {
    let mut sb = Sandbox::new();
    std::fs::write(sb.path().join("flaky.py"), FLAKY_PY).unwrap();
    std::fs::write(sb.path().join("down"), "").unwrap();
    std::fs::write(
        sb.path().join("baton.toml"),
        "[functions.flaky]\ncommand = [\"python3\", \"flaky.py\"]\n",
    )
    .unwrap();
    let file = sb.path().join("flaky.yaml");
    std::fs::write(&file, WORKFLOW).unwrap();
    let out = sb.baton(&["run", &path_arg(&file), "--id", "flaky-1"]);
    assert_ne!(out.code, Some(0));
    assert_eq!(sb.status("flaky-1").as_deref(), Some("failed"));

    // The cause is gone: run it again from where it failed.
    std::fs::remove_file(sb.path().join("down")).unwrap();
    let again = sb.baton(&["redrive", "flaky-1", "--reason", "the service is back"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("redriving flaky-1"),
        "{}",
        again.stdout
    );
    let _worker = sb.worker(&[]);
    sb.wait_terminal(&["flaky-1".to_string()], WAIT);
    assert_eq!(sb.status("flaky-1").as_deref(), Some("succeeded"));

    let calls = std::fs::read_to_string(sb.path().join("calls.txt")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "the failed call, then its redrive");
    assert_eq!(calls[0], calls[1], "under the same idempotency key");
    let history = sb.baton(&["history", "flaky-1"]);
    history.expect_code(0);
    assert!(
        history.stdout.contains("redriven: the service is back"),
        "{}",
        history.stdout
    );
    assert_eq!(
        history
            .stdout
            .matches("step prepare attempt 1 succeeded")
            .count(),
        1,
        "what succeeded is not run again:\n{}",
        history.stdout
    );

    // Redriving one that has not failed is refused, saying why.
    let refused = sb.baton(&["redrive", "flaky-1"]);
    refused.expect_code(1);
    assert!(
        refused
            .stderr
            .contains("flaky-1 not redriven: the execution succeeded"),
        "{}",
        refused.stderr
    );
}
