//! `baton` against AWS (moto server): settings read from a CloudFormation
//! stack's outputs, `baton --aws start` on a deployed workflow, and the
//! commands that have no AWS form refusing `--aws` instead of running here.

mod common;

use std::collections::BTreeMap;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{DestinationConfig, FunctionCode, OnFailure, OnSuccess, Runtime};
use baton_aws::testing::{endpoint, sdk_config, unique_prefix};
use common::{Sandbox, path_arg};
use serde_json::{Value, json};

/// The `export NAME=value` lines of the sandbox's `aws.env`.
fn aws_env(sb: &Sandbox) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(sb.path().join("aws.env")).expect("aws.env was written");
    text.lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates a stack on moto from these resources and outputs; returns its outputs by key.
async fn create_stack(name: &str, resources: Value, outputs: Value) -> BTreeMap<String, String> {
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": resources,
        "Outputs": outputs
    });
    let client = aws_sdk_cloudformation::Client::new(&sdk_config(&endpoint()).await);
    client
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityIam)
        .send()
        .await
        .expect("moto creates the stack");
    let described = client
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .expect("moto describes the stack");
    described.stacks()[0]
        .outputs()
        .iter()
        .map(|o| {
            (
                o.output_key().unwrap_or_default().to_string(),
                o.output_value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The queues of a Baton stack, trimmed to what moto's CloudFormation creates.
fn baton_resources(name: &str) -> Value {
    json!({
        "CoordinatorQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": { "QueueName": format!("{name}-coordinator") }
        },
        "CoordinatorQueueDlq": {
            "Type": "AWS::SQS::Queue",
            "Properties": { "QueueName": format!("{name}-coordinator-dlq") }
        }
    })
}

fn baton_outputs(name: &str) -> Value {
    json!({
        "ApiUrl": {
            "Description": "Base URL of the HTTP API (requests are signed with SigV4).",
            "Value": "https://api.example"
        },
        "TableName": {
            "Description": "The DynamoDB table (BATON_TABLE).",
            "Value": format!("{name}-table")
        },
        "CoordinatorQueueUrl": {
            "Description": "BATON_COORDINATOR_QUEUE_URL.",
            "Value": { "Ref": "CoordinatorQueue" }
        },
        "CoordinatorQueueArn": {
            "Description": "BATON_COORDINATOR_QUEUE_ARN. Step functions' event-invoke destinations (OnSuccess and OnFailure) point here.",
            "Value": { "Fn::GetAtt": ["CoordinatorQueue", "Arn"] }
        },
        "StepFunctionPrefix": {
            "Description": "BATON_STEP_FUNCTION_PREFIX.",
            "Value": format!("{name}-")
        },
        "CoordinatorDlqUrl": {
            "Description": "The coordinator queue's DLQ.",
            "Value": { "Ref": "CoordinatorQueueDlq" }
        },
        "EventBusName": {
            "Description": "BATON_EVENT_BUS.",
            "Value": format!("{name}-bus")
        }
    })
}

#[tokio::test]
async fn bootstrap_from_stack_writes_the_stacks_settings() {
    let sb = Sandbox::new();
    let stack = unique_prefix("stack");
    create_stack(&stack, baton_resources(&stack), baton_outputs(&stack)).await;
    let url = endpoint();
    let out = sb.baton(&["bootstrap", "--from-stack", &stack, "--endpoint", &url]);
    out.expect_code(0);
    let env = aws_env(&sb);
    assert_eq!(env["BATON_TABLE"], format!("{stack}-table"));
    assert!(
        env["BATON_COORDINATOR_QUEUE_URL"].ends_with(&format!("/{stack}-coordinator")),
        "{env:?}"
    );
    assert!(
        env["BATON_COORDINATOR_QUEUE_ARN"].ends_with(&format!(":{stack}-coordinator")),
        "{env:?}"
    );
    assert_eq!(env["BATON_STEP_FUNCTION_PREFIX"], format!("{stack}-"));
    assert_eq!(env["BATON_EVENT_BUS"], format!("{stack}-bus"));
    assert_eq!(env["AWS_ENDPOINT_URL"], url);
    // What was written is also printed, as `baton bootstrap` does.
    assert!(
        out.stdout
            .contains(&format!("export BATON_TABLE={stack}-table")),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_stack_without_a_required_output_is_refused_by_name() {
    let sb = Sandbox::new();
    let stack = unique_prefix("no-table");
    let mut outputs = baton_outputs(&stack);
    outputs.as_object_mut().unwrap().remove("TableName");
    create_stack(&stack, baton_resources(&stack), outputs).await;
    let out = sb.baton(&[
        "bootstrap",
        "--from-stack",
        &stack,
        "--endpoint",
        &endpoint(),
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("BATON_TABLE"), "{}", out.stderr);
    assert!(out.stderr.contains(&stack), "{}", out.stderr);
    assert!(!sb.path().join("aws.env").exists());
}

#[test]
fn a_missing_stack_is_a_clear_error() {
    let sb = Sandbox::new();
    let stack = unique_prefix("never-created");
    let out = sb.baton(&[
        "bootstrap",
        "--from-stack",
        &stack,
        "--endpoint",
        &endpoint(),
    ]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains(&format!("no CloudFormation stack `{stack}`")),
        "{}",
        out.stderr
    );
}

#[test]
fn from_stack_conflicts_with_creating_resources() {
    let sb = Sandbox::new();
    let out = sb.baton(&["bootstrap", "--from-stack", "s", "--prefix", "p"]);
    out.expect_code(2);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

#[test]
fn run_and_worker_refuse_aws() {
    let sb = Sandbox::new();
    let file = path_arg(&common::repo_file("workflows/order-saga.yaml"));
    let out = sb.baton(&["--aws", "run", &file]);
    out.expect_code(2);
    assert!(out.stderr.contains("`baton run`"), "{}", out.stderr);
    assert!(out.stderr.contains("baton --aws start"), "{}", out.stderr);
    let out = sb.baton_env(&["worker"], &[("BATON_AWS", "1")]);
    out.expect_code(2);
    assert!(out.stderr.contains("`baton worker`"), "{}", out.stderr);
    assert!(out.stderr.contains("coordinator"), "{}", out.stderr);
    // Nothing ran locally.
    assert!(!sb.db_path().exists());
}

/// A zip holding a Python handler (moto stores the code; it never runs it here).
fn handler_zip(dir: &std::path::Path) -> Vec<u8> {
    let source = dir.join("index.py");
    std::fs::write(
        &source,
        "def handler(event, context):\n    return event['input']\n",
    )
    .unwrap();
    let zip = dir.join("function.zip");
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(&source)
        .status()
        .expect("python3 builds the zip");
    assert!(status.success());
    std::fs::read(zip).unwrap()
}

#[tokio::test]
async fn aws_start_starts_a_deployed_workflow_and_dispatches_its_first_step() {
    let sb = Sandbox::new();
    let url = endpoint();
    let prefix = unique_prefix("start");
    sb.baton(&["bootstrap", "--endpoint", &url, "--prefix", &prefix])
        .expect_code(0);
    let env = aws_env(&sb);

    // The step function, set up as the stack sets up step functions (moto
    // wants its role to exist).
    let role = create_stack(
        &format!("{prefix}-role"),
        json!({"Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
            }}
        }}),
        json!({"RoleArn": {"Value": {"Fn::GetAtt": ["Role", "Arn"]}}}),
    )
    .await
    .remove("RoleArn")
    .expect("the role's ARN");
    let function = format!("{prefix}-charge");
    let lambda = aws_sdk_lambda::Client::new(&sdk_config(&url).await);
    lambda
        .create_function()
        .function_name(&function)
        .runtime(Runtime::Python311)
        .handler("index.handler")
        .role(role)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(handler_zip(sb.path())))
                .build(),
        )
        .send()
        .await
        .expect("create the function");
    let queue_arn = env["BATON_COORDINATOR_QUEUE_ARN"].clone();
    lambda
        .put_function_event_invoke_config()
        .function_name(&function)
        .maximum_retry_attempts(0)
        .destination_config(
            DestinationConfig::builder()
                .on_success(OnSuccess::builder().destination(&queue_arn).build())
                .on_failure(OnFailure::builder().destination(&queue_arn).build())
                .build(),
        )
        .send()
        .await
        .expect("configure the function's destinations");

    let workflow = format!("{prefix}-orders");
    let file = sb.path().join("orders.yaml");
    std::fs::write(
        &file,
        format!(
            "name: {workflow}\nsteps:\n  charge:\n    function: {function}\n    mutates: false\n    retry: {{ max_attempts: 1 }}\n"
        ),
    )
    .unwrap();
    let file = path_arg(&file);

    let out = sb.baton(&["--aws", "start", &file]);
    out.expect_code(2);
    assert!(
        out.stderr.contains(&format!("baton --aws deploy {file}")),
        "{}",
        out.stderr
    );
    let out = sb.baton(&["--aws", "start", "no-such-workflow"]);
    out.expect_code(2);

    sb.baton(&["--aws", "deploy", &file]).expect_code(0);
    let out = sb.baton(&[
        "--aws",
        "start",
        &file,
        "--id",
        "order-1",
        "--input",
        r#"{"orderId":"o-1"}"#,
        "--json",
    ]);
    out.expect_code(0);
    assert!(!out.stderr.contains("differs"), "{}", out.stderr);
    assert_eq!(
        out.json(),
        json!({"id": "order-1", "created": true, "status": "running"})
    );

    // The execution lives on AWS, with its first step dispatched.
    let status = sb.baton(&["--aws", "status", "order-1", "--json"]);
    status.expect_code(0);
    let record = status.json();
    assert_eq!(record["workflow"], json!(workflow), "{record}");
    assert_eq!(
        record["state"]["input"],
        json!({"orderId": "o-1"}),
        "{record}"
    );
    let step = &record["state"]["steps"][0];
    assert_eq!(
        (&step["name"], &step["status"]),
        (&json!("charge"), &json!("running")),
        "the first step runs: {record}"
    );

    // By name, again with the same input: the same id creates nothing.
    let out = sb.baton(&[
        "--aws",
        "start",
        &workflow,
        "--id",
        "order-1",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("order-1 already exists"),
        "{}",
        out.stdout
    );
    // With another input, the id is refused rather than answered with the first.
    let out = sb.baton(&["--aws", "start", &workflow, "--id", "order-1"]);
    out.expect_code(2);
    assert!(out.stderr.contains("different input"), "{}", out.stderr);

    // An input the table cannot hold goes to the payload bucket.
    let big = sb.path().join("big.json");
    std::fs::write(&big, json!({"blob": "x".repeat(300 * 1024)}).to_string()).unwrap();
    let big = format!("@{}", path_arg(&big));
    sb.baton(&["--aws", "start", &workflow, "--input", &big])
        .expect_code(0);
    // Over the payload limit (10 MiB with a bucket): refused before anything is written.
    let huge = sb.path().join("huge.json");
    std::fs::write(
        &huge,
        json!({"blob": "x".repeat(10 * 1024 * 1024)}).to_string(),
    )
    .unwrap();
    let huge = format!("@{}", path_arg(&huge));
    let out = sb.baton(&["--aws", "start", &workflow, "--input", &huge]);
    out.expect_code(2);
    assert!(out.stderr.contains("byte limit"), "{}", out.stderr);

    // A signal no step of the workflow waits for is refused before anything
    // is stored, naming those it does wait for (here none).
    sb.baton(&["--aws", "cancel", "order-1"]).expect_code(0);
    let out = sb.baton(&["--aws", "signal", "order-1", "approval"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("waits for a `approval` signal; it waits for none"),
        "{}",
        out.stderr
    );
    let out = sb.baton(&["--aws", "signal", "no-such-execution", "approval"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no execution `no-such-execution`"),
        "{}",
        out.stderr
    );
}
