//! The README's "Deploy your own workflow" path, on MiniStack: the example
//! app's functions (Python, Node.js and Rust, `examples/orders-app`) really
//! run, and the README's `baton --aws` commands deploy, start and watch the
//! order saga.
//!
//! Two stand-ins, since neither SAM deployment runs without Docker: the
//! test creates the app's functions with the configuration its
//! `template.yaml` gives them (the table below, checked against the
//! workflow), and `baton dev --lambda` plays the deployed Baton stack (its
//! HTTP API and coordinator, invoking the functions on the emulator), so
//! `baton bootstrap --from-stack` is replaced by the settings `baton dev`
//! writes. `tests/ministack-server.py` fills MiniStack's gaps (see there).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{DestinationConfig, FunctionCode, OnFailure, OnSuccess, Runtime};
use common::dev::start_dev;
use common::{Sandbox, path_arg, repo_file};
use serde_json::Value;

/// The app's functions as `examples/orders-app/template.yaml` declares them:
/// name, runtime, code directory, handler (or Rust binary).
const FUNCTIONS: [(&str, &str, &str, &str); 8] = [
    (
        "orders-validate-order",
        "python",
        "python",
        "orders.validate_order",
    ),
    (
        "orders-reserve-inventory",
        "python",
        "python",
        "orders.reserve_inventory",
    ),
    (
        "orders-release-inventory",
        "python",
        "python",
        "orders.release_inventory",
    ),
    (
        "orders-notify-customer",
        "python",
        "python",
        "orders.notify_customer",
    ),
    (
        "orders-process-payment",
        "node",
        "node",
        "payments.processPayment",
    ),
    (
        "orders-refund-payment",
        "node",
        "node",
        "payments.refundPayment",
    ),
    ("orders-ship-order", "rust", "rust", "ship-order"),
    ("orders-cancel-shipment", "rust", "rust", "cancel-shipment"),
];

const STACK_ENV: [(&str, &str); 1] = [("BATON_STEP_FUNCTION_PREFIX", "orders-")];

/// A zip of `files` (path in the zip, file on disk), made with Python's zipfile.
fn zip(dir: &Path, name: &str, files: &[(&str, PathBuf)]) -> Vec<u8> {
    let out = dir.join(format!("{name}.zip"));
    let entries: Vec<(String, String)> = files
        .iter()
        .map(|(inside, path)| (inside.to_string(), path.display().to_string()))
        .collect();
    let script = "import json, sys, zipfile\n\
        out, entries = sys.argv[1], json.loads(sys.argv[2])\n\
        with zipfile.ZipFile(out, 'w') as z:\n\
        \x20   for inside, path in entries:\n\
        \x20       info = zipfile.ZipInfo(inside)\n\
        \x20       info.external_attr = 0o755 << 16\n\
        \x20       z.writestr(info, open(path, 'rb').read())\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .arg(serde_json::to_string(&entries).unwrap())
        .status()
        .expect("python3 runs");
    assert!(status.success(), "zipping {name}");
    std::fs::read(out).unwrap()
}

/// The app's Rust binaries, built as `sam build` would (for this machine).
fn rust_binaries() -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "orders-app-steps",
            "--bins",
            "--message-format=json",
        ])
        .current_dir(repo_file("."))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the app's Rust steps: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|m| {
            let executable = m["executable"].as_str()?;
            let name = m["target"]["name"].as_str()?;
            Some((name.to_string(), PathBuf::from(executable)))
        })
        .collect()
}

async fn deploy_app(endpoint: &str, dir: &Path, queue_arn: &str) {
    let config = baton_aws::testing::sdk_config(endpoint).await;
    let client = aws_sdk_lambda::Client::new(&config);
    let app = repo_file("examples/orders-app");
    let python = zip(
        dir,
        "python",
        &[("orders.py", app.join("python/orders.py"))],
    );
    let node = zip(
        dir,
        "node",
        &[("payments.mjs", app.join("node/payments.mjs"))],
    );
    let binaries = rust_binaries();
    for (name, kind, _, handler) in FUNCTIONS {
        let (runtime, code, handler) = match kind {
            "python" => (Runtime::Python312, python.clone(), handler.to_string()),
            "node" => (Runtime::Nodejs20x, node.clone(), handler.to_string()),
            _ => {
                let binary = binaries
                    .iter()
                    .find(|(bin, _)| bin == handler)
                    .unwrap_or_else(|| panic!("no binary {handler} in {binaries:?}"));
                let code = zip(dir, handler, &[("bootstrap", binary.1.clone())]);
                (Runtime::Providedal2023, code, "bootstrap".to_string())
            }
        };
        let created = client
            .create_function()
            .function_name(name)
            .runtime(runtime)
            .role("arn:aws:iam::000000000000:role/orders-app")
            .handler(handler)
            .timeout(30)
            .code(
                FunctionCode::builder()
                    .zip_file(Blob::new(code.clone()))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another run against the same emulator made it: take this code.
            Err(SdkError::ServiceError(e)) if e.err().is_resource_conflict_exception() => {
                client
                    .update_function_code()
                    .function_name(name)
                    .zip_file(Blob::new(code))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("update {name}: {e:?}"));
            }
            Err(e) => panic!("create {name}: {e:?}"),
        }
        // The template's Globals.EventInvokeConfig.
        let destinations = DestinationConfig::builder()
            .on_success(OnSuccess::builder().destination(queue_arn).build())
            .on_failure(OnFailure::builder().destination(queue_arn).build())
            .build();
        client
            .put_function_event_invoke_config()
            .function_name(name)
            .maximum_retry_attempts(0)
            .maximum_event_age_in_seconds(3600)
            .destination_config(destinations)
            .send()
            .await
            .unwrap_or_else(|e| panic!("event-invoke config of {name}: {e:?}"));
    }
}

fn settings_value(sb: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sb.path().join("aws.env"))
        .expect("aws.env")
        .lines()
        .filter_map(|l| l.trim_start_matches("export ").split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("{name} in aws.env"))
}

fn status(sb: &Sandbox, id: &str) -> Value {
    let out = sb.baton_env(&["--aws", "status", id, "--json"], &STACK_ENV);
    out.expect_code(0).json()
}

fn wait_ended(sb: &Sandbox, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = status(sb, id);
        // `status --json` prints the stored record: the engine's state inside.
        if common::TERMINAL.contains(&body["state"]["status"].as_str().unwrap_or("")) {
            return body["state"].clone();
        }
        assert!(Instant::now() < deadline, "{id} did not end: {body:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_own_workflow_path_runs_python_node_and_rust_steps() {
    let workflow = repo_file("examples/orders-app/workflow.yaml");
    let text = std::fs::read_to_string(&workflow).unwrap();
    let parsed = baton_core::Workflow::from_text(&text, baton_core::definition::Format::Yaml)
        .expect("the app's workflow is valid");
    let mut named: Vec<&str> = parsed.functions();
    named.sort();
    let mut ours: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
    ours.sort();
    assert_eq!(named, ours, "the table above follows the app's template");

    let endpoint = baton_aws::testing::ministack_endpoint();
    let sb = Sandbox::new();
    let prefix = baton_aws::testing::unique_prefix("own");
    // The Baton stack: API and coordinator, invoking functions on the emulator.
    let _stack = start_dev(&sb, &endpoint, &["--lambda", "--prefix", &prefix]);
    deploy_app(
        &endpoint,
        sb.path(),
        &settings_value(&sb, "BATON_COORDINATOR_QUEUE_ARN"),
    )
    .await;

    // baton --aws deploy examples/orders-app/workflow.yaml
    let deployed = sb.baton_env(&["--aws", "deploy", &path_arg(&workflow)], &STACK_ENV);
    let deployed = deployed.expect_code(0);
    assert!(
        deployed
            .stdout
            .contains("workflow `order-processing` version"),
        "{}",
        deployed.stdout
    );

    // baton --aws start order-processing --input '{"orderId":"o-1"}'
    let started = sb.baton_env(
        &[
            "--aws",
            "start",
            "order-processing",
            "--input",
            r#"{"orderId":"o-1"}"#,
            "--id",
            "own-o-1",
        ],
        &STACK_ENV,
    );
    started.expect_code(0);
    let done = wait_ended(&sb, "own-o-1");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        done["output"]["chargeId"]
            .as_str()
            .unwrap()
            .starts_with("ch-"),
        "{done:#}"
    );
    assert!(done["output"]["trackingId"].is_string(), "{done:#}");

    // A shipment that fails for good (Rust step, `Permanent` error type):
    // the Node refund, then the Python release, in reverse order.
    let failing = sb.baton_env(
        &[
            "--aws",
            "start",
            "order-processing",
            "--input",
            r#"{"orderId":"o-2","fail":{"ship-order":"permanent"}}"#,
            "--id",
            "own-o-2",
        ],
        &STACK_ENV,
    );
    failing.expect_code(0);
    let done = wait_ended(&sb, "own-o-2");
    assert_eq!(done["status"], "compensated", "{done:#}");
    let history = sb
        .baton_env(&["--aws", "history", "own-o-2", "--json"], &STACK_ENV)
        .expect_code(0)
        .json_lines();
    let undone: Vec<&str> = history
        .iter()
        .filter(|h| {
            h["event"]["type"] == "task_succeeded" && h["event"]["task"]["kind"] == "compensation"
        })
        .map(|h| h["event"]["task"]["step"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["charge", "reserve"], "{history:#?}");
}
