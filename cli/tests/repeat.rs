//! A `repeat` step end to end on the embedded backend: `baton run` polls a
//! command step until its output says done, each poll a separate call with
//! its own idempotency key; one that never gets there fails the run by name.

mod common;

use common::{Sandbox, path_arg};

/// A poll that is done on its third call, counting calls in a file.
const POLL_PY: &str = r#"
import json, os, sys
event = json.load(sys.stdin)
path = "polls.txt"
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
with open("keys.txt", "a") as keys:
    keys.write(os.environ.get("BATON_IDEMPOTENCY_KEY", "") + "\n")
print(json.dumps({"done": n >= int(os.environ.get("POLLS_NEEDED", "3")), "n": n}))
"#;

fn workflow(max_iterations: u32) -> String {
    format!(
        r#"name: poll
defaults: {{ retry: {{ max_attempts: 1 }} }}
steps:
  ready:
    function: poll
    mutates: false
    repeat: {{ until: "${{ steps.ready.output.done }}", max_iterations: {max_iterations}, delay: 100ms }}
output: {{ polls: "${{ steps.ready.output.n }}" }}
"#
    )
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("poll.py"), POLL_PY).unwrap();
    std::fs::write(
        sb.path().join("baton.toml"),
        "[functions.poll]\ncommand = [\"python3\", \"poll.py\"]\n",
    )
    .unwrap();
    sb
}

#[test]
fn a_step_polls_until_its_output_says_done() {
    let sb = sandbox();
    let file = sb.path().join("poll.yaml");
    std::fs::write(&file, workflow(5)).unwrap();
    let out = sb.baton(&["run", &path_arg(&file), "--id", "poll-1", "--json"]);
    out.expect_code(0);
    let record = sb
        .baton(&["status", "poll-1", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(record["state"]["status"], "succeeded", "{record:#}");
    assert_eq!(record["state"]["output"]["polls"], 3);
    assert_eq!(
        std::fs::read_to_string(sb.path().join("polls.txt")).unwrap(),
        "3"
    );
    // One JSON line per applied event: each poll's result is there.
    let out = sb.baton(&["history", "poll-1", "--json"]);
    out.expect_code(0);
    let history = &out.stdout;
    let results = history
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|h| h["event"]["type"] == "task_succeeded")
        .count();
    assert_eq!(results, 3, "each poll is in the history:\n{history}");
    // Each poll was its own call, with its own idempotency key.
    let keys = std::fs::read_to_string(sb.path().join("keys.txt")).unwrap();
    let keys: std::collections::BTreeSet<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
}

#[test]
fn a_poll_that_never_gets_there_fails_the_run_by_name() {
    let sb = sandbox();
    let file = sb.path().join("poll.yaml");
    std::fs::write(&file, workflow(2)).unwrap();
    let out = sb.baton(&["run", &path_arg(&file), "--id", "poll-2"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    let record = sb
        .baton(&["status", "poll-2", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(record["state"]["status"], "failed", "{record:#}");
    let step = &record["state"]["steps"][0];
    assert_eq!(
        step["units"][0]["error"]["name"], "RepeatExhausted",
        "{record:#}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("polls.txt")).unwrap(),
        "2"
    );
}
