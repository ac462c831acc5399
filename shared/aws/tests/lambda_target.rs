//! `lambda = "name"` targets against MiniStack, which runs the Python
//! function below as a real Lambda function: what it returns is the step's
//! output, what it throws is the step's error, named by the exception's
//! class and retried unless the class starts with `Permanent`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use baton_aws::lambda_target::LambdaTarget;
use baton_aws::testing::{ministack_endpoint, sdk_config, unique_prefix};
use baton_core::TaskKind;
use baton_runtime::step::{Registry, StepContext, StepError};
use baton_runtime::targets::{Targets, TargetsConfig};
use serde_json::{Value, json};

const HANDLER: &str = r#"
class PermanentDeclined(Exception):
    pass


def handler(event, context):
    step_input = event["input"]
    mode = step_input.get("mode")
    if mode == "declined":
        raise PermanentDeclined("card declined")
    if mode == "flaky":
        raise ConnectionError("the bank did not answer")
    return {
        "echo": step_input,
        "step": event["baton"]["step"],
        "idempotency_key": event["baton"]["idempotency_key"],
    }
"#;

/// The handler zipped as Lambda takes it (`index.py` at the root).
fn function_zip() -> Vec<u8> {
    let dir = std::env::temp_dir().join(unique_prefix("lambda-target-zip"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let source: PathBuf = dir.join("index.py");
    std::fs::write(&source, HANDLER).expect("write the handler");
    let zip = dir.join("function.zip");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(&source)
        .status()
        .expect("python3 builds the zip");
    assert!(status.success(), "python3 -m zipfile failed");
    let bytes = std::fs::read(&zip).expect("read the zip");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// Creates the function on MiniStack; returns its name.
async fn create_function(endpoint: &str) -> String {
    let name = unique_prefix("charge");
    let client = aws_sdk_lambda::Client::new(&sdk_config(endpoint).await);
    client
        .create_function()
        .function_name(&name)
        .runtime(Runtime::Python311)
        .handler("index.handler")
        .role("arn:aws:iam::000000000000:role/baton-test")
        .timeout(30)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(function_zip()))
                .build(),
        )
        .send()
        .await
        .expect("create the function on MiniStack");
    name
}

fn targets(function: &str, endpoint: &str) -> Targets {
    let text = format!(
        "[functions.charge]\nlambda = \"{function}\"\nendpoint = \"{endpoint}\"\n\n\
         [functions.missing]\nlambda = \"{function}-does-not-exist\"\nendpoint = \"{endpoint}\"\n"
    );
    let config = TargetsConfig::parse(&text).expect("the targets parse");
    Targets::new(Registry::new(), config).with_lambda(Arc::new(LambdaTarget::new()))
}

fn context(function: &str) -> StepContext {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64;
    StepContext {
        execution_id: "order-1".into(),
        workflow: "orders".into(),
        step: "charge".into(),
        index: None,
        attempt: 1,
        kind: TaskKind::Step,
        function: function.into(),
        idempotency_key: "bk-order-1-charge".into(),
        deadline: now + 60_000,
    }
}

async fn invoke(targets: &Targets, function: &str, input: Value) -> Result<Value, StepError> {
    targets
        .invoke(context(function), input, Duration::from_secs(60))
        .await
}

#[tokio::test]
async fn a_python_function_is_a_step_target() {
    let endpoint = ministack_endpoint();
    let function = create_function(&endpoint).await;
    let targets = targets(&function, &endpoint);

    let output = invoke(&targets, "charge", json!({"orderId": "o-1"}))
        .await
        .expect("the function's return value");
    assert_eq!(
        output,
        json!({"echo": {"orderId": "o-1"}, "step": "charge", "idempotency_key": "bk-order-1-charge"})
    );

    let declined = invoke(&targets, "charge", json!({"mode": "declined"}))
        .await
        .expect_err("a raised PermanentDeclined");
    assert_eq!(declined.name, "PermanentDeclined", "{declined:?}");
    assert!(declined.message.contains("card declined"), "{declined:?}");
    assert!(!declined.retryable, "{declined:?}");

    let flaky = invoke(&targets, "charge", json!({"mode": "flaky"}))
        .await
        .expect_err("a raised ConnectionError");
    assert_eq!(flaky.name, "ConnectionError", "{flaky:?}");
    assert!(flaky.retryable, "{flaky:?}");

    let missing = invoke(&targets, "missing", json!({}))
        .await
        .expect_err("an unknown function");
    assert_eq!(missing.name, "LambdaFunctionNotFound", "{missing:?}");
    assert!(!missing.retryable, "{missing:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    // Nothing listens on the port once the listener above is dropped.
    let targets = targets("charge", &format!("http://127.0.0.1:{port}"));
    let error = invoke(&targets, "charge", json!({}))
        .await
        .expect_err("no Lambda there");
    assert_eq!(
        (error.name.as_str(), error.retryable),
        ("LambdaUnavailable", true),
        "{error:?}"
    );
}
