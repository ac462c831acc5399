//! Real function code as steps: plain Python Lambda functions with no Baton
//! code, run by MiniStack (as local processes), invoked asynchronously by
//! `baton dev --lambda`, their results brought back by their event-invoke
//! configs' destinations to the coordinator queue. A client drives the saga
//! over the HTTP API only; `baton --aws deploy` refuses what cannot run.
//!
//! MiniStack does not deliver OnSuccess destinations and names every Python
//! error `Runtime.HandlerError`; `tests/ministack-server.py` fills both gaps
//! as AWS behaves (see that file). Everything else is MiniStack's own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    DestinationConfig, Environment, FunctionCode, OnFailure, OnSuccess, Runtime,
};
use common::dev::{compensations, request, request_text, start_dev, wait_finished};
use common::{Sandbox, path_arg};
use serde_json::{Value, json};

/// One module serving every test function: it records each call to
/// CALLS_FILE (so the test sees attempts and idempotency keys), fails as the
/// input's `fail` switch says for its function name, and returns an id
/// derived from the idempotency key.
const STEPS_PY: &str = r#"
import hashlib, json, os

class Unavailable(Exception):
    pass

class PermanentDeclined(Exception):
    pass

def handler(event, context):
    baton = event["baton"]
    name = baton["function"].rsplit("-", 1)[1]
    switch = (event.get("input") or {}).get("fail", {}).get(name)
    if switch == "permanent":
        outcome = "failed"
    elif isinstance(switch, dict) and baton["attempt"] <= switch.get("first", 0):
        outcome = "failed"
    else:
        outcome = "succeeded"
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(json.dumps({
            "function": name, "kind": baton["kind"], "attempt": baton["attempt"],
            "key": baton["idempotency_key"], "execution": baton["execution_id"],
            "outcome": outcome,
        }) + "\n")
    if switch == "permanent":
        raise PermanentDeclined(f"{name} refused for good")
    if outcome == "failed":
        raise Unavailable(f"{name} attempt {baton['attempt']} failed")
    return {"id": name + "-" + hashlib.sha256(baton["idempotency_key"].encode()).hexdigest()[:8]}
"#;

/// The order saga's shape on the test's functions (`{prefix}-reserve`, ...).
fn saga(prefix: &str) -> String {
    format!(
        r#"
name: py-orders
defaults:
  retry: {{ max_attempts: 3, backoff: fixed, delay: 100ms }}
  timeout: 30s
steps:
  reserve:
    function: {prefix}-reserve
    input: {{ fail: "${{ input.fail }}" }}
    compensate: {{ function: {prefix}-release, input: {{ id: "${{ steps.reserve.output.id }}", fail: "${{ input.fail }}" }} }}
  charge:
    needs: [reserve]
    function: {prefix}-charge
    input: {{ fail: "${{ input.fail }}" }}
    compensate: {{ function: {prefix}-refund, input: {{ id: "${{ steps.charge.output.id }}", fail: "${{ input.fail }}" }} }}
  ship:
    needs: [charge]
    function: {prefix}-ship
    input: {{ fail: "${{ input.fail }}" }}
    compensate: none
    reason: the test's last step
output: {{ shipment: "${{ steps.ship.output.id }}" }}
"#
    )
}

/// What `baton bootstrap` wrote: the settings later commands use.
fn settings(sb: &Sandbox) -> BTreeMap<String, String> {
    std::fs::read_to_string(sb.path().join("aws.env"))
        .expect("baton bootstrap wrote aws.env")
        .lines()
        .filter_map(|line| line.trim_start_matches("export ").split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A zip holding `steps.py`, made with Python's own zipfile module.
fn steps_zip(dir: &Path) -> Vec<u8> {
    let source = dir.join("steps.py");
    std::fs::write(&source, STEPS_PY).unwrap();
    let zip = dir.join("steps.zip");
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(&source)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    std::fs::read(zip).unwrap()
}

struct Functions {
    client: aws_sdk_lambda::Client,
    code: Vec<u8>,
    calls: String,
}

impl Functions {
    async fn new(endpoint: &str, dir: &Path) -> Functions {
        let config = baton_aws::testing::sdk_config(endpoint).await;
        Functions {
            client: aws_sdk_lambda::Client::new(&config),
            code: steps_zip(dir),
            calls: dir.join("calls.jsonl").display().to_string(),
        }
    }

    async fn create(&self, name: &str) {
        self.client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Python311)
            .role("arn:aws:iam::000000000000:role/steps")
            .handler("steps.handler")
            .timeout(20)
            .code(
                FunctionCode::builder()
                    .zip_file(Blob::new(self.code.clone()))
                    .build(),
            )
            .environment(
                Environment::builder()
                    .variables("CALLS_FILE", &self.calls)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    }

    /// What the app's own stack sets: no Lambda retries, both destinations on
    /// Baton's coordinator queue.
    async fn send_results_to(&self, name: &str, queue_arn: &str) {
        let destinations = DestinationConfig::builder()
            .on_success(OnSuccess::builder().destination(queue_arn).build())
            .on_failure(OnFailure::builder().destination(queue_arn).build())
            .build();
        self.client
            .put_function_event_invoke_config()
            .function_name(name)
            .maximum_retry_attempts(0)
            .destination_config(destinations)
            .send()
            .await
            .unwrap_or_else(|e| panic!("event-invoke config of {name}: {e:?}"));
    }

    fn calls(&self, execution: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|c| c["execution"] == execution)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_python_functions_are_steps_retried_and_compensated() {
    let endpoint = baton_aws::testing::ministack_endpoint();
    let sb = Sandbox::new();
    let prefix = baton_aws::testing::unique_prefix("py");
    sb.baton(&["bootstrap", "--endpoint", &endpoint, "--prefix", &prefix])
        .expect_code(0);
    let queue_arn = settings(&sb)["BATON_COORDINATOR_QUEUE_ARN"].clone();
    let functions = Functions::new(&endpoint, sb.path()).await;
    for name in ["reserve", "release", "charge", "refund", "ship"] {
        let function = format!("{prefix}-{name}");
        functions.create(&function).await;
        functions.send_results_to(&function, &queue_arn).await;
    }
    let workflow = sb.path().join("py-orders.yaml");
    std::fs::write(&workflow, saga(&prefix)).unwrap();
    let dev = start_dev(
        &sb,
        &endpoint,
        &["--lambda", "--prefix", &prefix, &path_arg(&workflow)],
    );

    // Succeeds, with the first charge failing once and retried under the same key.
    let input = json!({"fail": {"charge": {"first": 1}}});
    let (code, body) = request(
        dev.port,
        "POST",
        "/workflows/py-orders/executions",
        Some(&json!({"id": "py-ok", "input": input})),
    );
    assert_eq!(code, 201, "{body}");
    let done = wait_finished(dev.port, "py-ok");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let shipment = done["output"]["shipment"]
        .as_str()
        .expect("the ship step's output");
    assert!(shipment.starts_with("ship-"), "{done:#}");
    let charges: Vec<(u64, String, String)> = functions
        .calls("py-ok")
        .iter()
        .filter(|c| c["function"] == "charge")
        .map(|c| {
            (
                c["attempt"].as_u64().unwrap(),
                c["outcome"].as_str().unwrap().to_string(),
                c["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        charges.len(),
        2,
        "one failed attempt, one retry: {charges:?}"
    );
    assert_eq!((charges[0].0, charges[0].1.as_str()), (1, "failed"));
    assert_eq!((charges[1].0, charges[1].1.as_str()), (2, "succeeded"));
    assert_eq!(
        charges[0].2, charges[1].2,
        "a retry keeps its idempotency key"
    );

    // Shipping fails for good (a `Permanent…` error type: not retried), so the
    // charge is refunded, then the reservation released: reverse order.
    let (code, body) = request(
        dev.port,
        "POST",
        "/workflows/py-orders/executions",
        Some(&json!({"id": "py-undo", "input": {"fail": {"ship": "permanent"}}})),
    );
    assert_eq!(code, 201, "{body}");
    let done = wait_finished(dev.port, "py-undo");
    assert_eq!(done["status"], "compensated", "{done:#}");
    assert_eq!(compensations(dev.port, "py-undo"), ["charge", "reserve"]);
    let calls = functions.calls("py-undo");
    let order: Vec<String> = calls
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["function"].as_str().unwrap(),
                c["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "reserve:succeeded",
            "charge:succeeded",
            "ship:failed",
            "refund:succeeded",
            "release:succeeded"
        ],
        "a permanent error is not retried; compensations run in reverse"
    );
    let (_, history) = request(dev.port, "GET", "/executions/py-undo/history", None);
    let failure = history
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"]["type"] == "task_failed")
        .expect("the failed shipment is in the history");
    assert_eq!(
        failure["event"]["error"]["name"], "PermanentDeclined",
        "{failure:#}"
    );
    assert_eq!(failure["event"]["error"]["retryable"], false);

    // Deploying what cannot run is refused, naming each function, and stores nothing.
    let unconfigured = format!("{prefix}-unconfigured");
    functions.create(&unconfigured).await;
    let broken = sb.path().join("broken.yaml");
    std::fs::write(
        &broken,
        format!(
            "name: py-broken\ndefaults: {{ retry: {{ max_attempts: 1 }} }}\nsteps:\n  a: {{ function: {prefix}-missing, mutates: false }}\n  b: {{ needs: [a], function: {unconfigured}, mutates: false }}\n  c: {{ needs: [b], function: {prefix}-reserve, mutates: false }}\n"
        ),
    )
    .unwrap();
    let refused = sb.baton_env(&["--aws", "deploy", &path_arg(&broken)], &[]);
    let refused = refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains(&format!("function `{prefix}-missing` does not exist")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!(
            "function `{unconfigured}` has no event-invoke config"
        )),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains(&format!("`{prefix}-reserve`")),
        "a function that can run is not named: {}",
        refused.stderr
    );
    let (code, body) = request(dev.port, "GET", "/workflows/py-broken", None);
    assert_eq!(code, 404, "nothing was stored: {body}");
    // Outside the functions Baton may invoke, even though it exists.
    let outside = sb.baton_env(
        &["--aws", "deploy", &path_arg(&workflow)],
        &[("BATON_STEP_FUNCTION_PREFIX", "billing-")],
    );
    let outside = outside.expect_code(2);
    assert!(
        outside
            .stderr
            .contains("outside BATON_STEP_FUNCTION_PREFIX `billing-`"),
        "{}",
        outside.stderr
    );
    // The same refusal through the API, as a 422 listing the problems.
    let (code, body) = request_text(
        dev.port,
        "PUT",
        "/workflows/py-broken",
        "application/yaml",
        &std::fs::read_to_string(&broken).unwrap(),
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["problems"].as_array().map(Vec::len),
        Some(2),
        "{body:#}"
    );
}
