//! The example orders app (`examples/orders-app`), as a user deploys it:
//! its template wires every function's results to Baton's coordinator queue
//! with no Lambda retries, its Python, Node.js and Rust handlers really run
//! on step events (Python and Node in `python3` and `node` child processes,
//! through drivers that call the handler the way Lambda's runtime does), and
//! its workflow validates and names exactly the template's functions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use baton_core::definition::{Compensate, Format};
use baton_core::{TaskKind, Workflow, WorkflowDefinition};
use baton_deploy_tests::Template;
use baton_runtime::step::{StepContext, StepEvent, error_from_function, handler_fn};
use serde_json::{Value, json};

const PREFIX: &str = "orders-";

fn app_path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/orders-app"
    ))
    .join(relative)
}

fn template() -> Template {
    let path = app_path("template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Template::parse(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// One function of the app's template.
#[derive(Debug, Clone)]
struct Function {
    runtime: String,
    code: PathBuf,
    /// `module.function` for Python and Node.js, the binary for Rust.
    handler: String,
}

/// The template's functions by `FunctionName`.
fn functions(t: &Template) -> BTreeMap<String, Function> {
    let mut functions = BTreeMap::new();
    for (id, resource) in t.resources_of_type("AWS::Serverless::Function") {
        let text = |name: &str| -> String {
            t.function_property(resource, name)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{id}: {name} is not a literal string"))
                .to_string()
        };
        let runtime = text("Runtime");
        let handler = if runtime.starts_with("provided") {
            resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: a Rust function names its Binary"))
                .to_string()
        } else {
            text("Handler")
        };
        let function = Function {
            code: app_path(&text("CodeUri")),
            runtime,
            handler,
        };
        functions.insert(text("FunctionName"), function);
    }
    functions
}

fn short_name(function: &str) -> &str {
    function.strip_prefix(PREFIX).unwrap_or(function)
}

#[test]
fn every_function_reports_to_the_coordinator_queue_and_is_never_retried_by_lambda() {
    let t = template();
    assert_eq!(t.doc["Transform"], "AWS::Serverless-2016-10-31");
    assert_eq!(
        t.parameter("BatonStack").map(|p| &p["Type"]),
        Some(&json!("String"))
    );
    let queue = json!({"Fn::ImportValue": {"Fn::Sub": "${BatonStack}-CoordinatorQueueArn"}});
    let mut seen = 0;
    for (id, resource) in t.resources_of_type("AWS::Serverless::Function") {
        seen += 1;
        let name = resource["Properties"]["FunctionName"]
            .as_str()
            .unwrap_or("");
        assert!(
            name.starts_with(PREFIX),
            "{id}: FunctionName `{name}` does not start with `{PREFIX}`: Baton may not invoke it"
        );
        let config = t
            .function_property(resource, "EventInvokeConfig")
            .unwrap_or_else(|| panic!("{id}: no EventInvokeConfig"));
        assert_eq!(
            config["MaximumRetryAttempts"],
            json!(0),
            "{id}: Lambda must not retry; Baton owns retries"
        );
        for destination in ["OnSuccess", "OnFailure"] {
            let target = &config["DestinationConfig"][destination];
            assert_eq!(
                target["Type"], "SQS",
                "{id}: {destination} is not an SQS destination"
            );
            assert_eq!(
                target["Destination"], queue,
                "{id}: {destination} is not the Baton stack's coordinator queue"
            );
        }
        if let Some(age) = config.get("MaximumEventAgeInSeconds") {
            let age = age.as_u64().unwrap_or(0);
            assert!(
                (60..=21_600).contains(&age),
                "{id}: MaximumEventAgeInSeconds {age}"
            );
        }
    }
    assert_eq!(seen, 8, "the saga's eight functions");
}

#[test]
fn every_handler_the_template_names_exists() {
    for (name, function) in functions(&template()) {
        let (file, symbol) = match function.runtime.as_str() {
            r if r.starts_with("python") => {
                let (module, symbol) = function.handler.rsplit_once('.').expect("module.function");
                (
                    function.code.join(format!("{module}.py")),
                    format!("def {symbol}("),
                )
            }
            r if r.starts_with("nodejs") => {
                let (module, symbol) = function.handler.rsplit_once('.').expect("module.function");
                (
                    function.code.join(format!("{module}.mjs")),
                    format!("export const {symbol} "),
                )
            }
            r if r.starts_with("provided") => (
                function
                    .code
                    .join(format!("src/bin/{}.rs", function.handler)),
                "baton_lambda::step::run".to_string(),
            ),
            other => panic!("{name}: unexpected runtime {other}"),
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{name}: cannot read {}: {e}", file.display()));
        assert!(
            text.contains(&symbol),
            "{name}: {} has no `{symbol}`",
            file.display()
        );
    }
}

#[test]
fn the_workflow_validates_and_calls_exactly_the_apps_functions() {
    let path = app_path("workflow.yaml");
    let text = std::fs::read_to_string(&path).expect("the workflow");
    if let Err(errors) = Workflow::from_text(&text, Format::Yaml) {
        panic!("{}: {}", path.display(), errors.to_string().trim_end());
    }
    let definition = WorkflowDefinition::parse(&text, Format::Yaml).expect("a definition");
    assert_eq!(definition.name, "order-processing");
    let mut called = BTreeSet::new();
    for (_, step) in definition.steps.iter() {
        called.extend(step.function.clone());
        if let Some(Compensate::Run(compensation)) = &step.compensate {
            called.insert(compensation.function.clone());
        }
    }
    let deployed: BTreeSet<String> = functions(&template()).into_keys().collect();
    assert_eq!(called, deployed);
}

/// What an invocation returned, as Lambda reports it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Output(Value),
    Error { error_type: String, message: String },
}

impl Outcome {
    fn output(&self) -> &Value {
        match self {
            Outcome::Output(value) => value,
            Outcome::Error {
                error_type,
                message,
            } => panic!("failed: {error_type}: {message}"),
        }
    }

    fn error_type(&self) -> &str {
        match self {
            Outcome::Error { error_type, .. } => error_type,
            Outcome::Output(value) => panic!("succeeded with {value}"),
        }
    }

    /// Whether Baton would retry this failure.
    fn retryable(&self) -> bool {
        error_from_function(self.error_type(), "").retryable
    }
}

/// Calls Python handlers as Lambda's runtime does: the exception's class
/// name is the error type.
const PYTHON_DRIVER: &str = r#"
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
results = []
for call in json.load(sys.stdin):
    module, name = call["handler"].rsplit(".", 1)
    handler = getattr(importlib.import_module(module), name)
    try:
        results.append({"output": handler(call["event"], None)})
    except Exception as e:
        results.append({"errorType": type(e).__name__, "errorMessage": str(e)})
print(json.dumps(results))
"#;

/// Calls Node.js handlers as Lambda's runtime does: the error's `name` is
/// the error type.
const NODE_DRIVER: &str = r#"
import { pathToFileURL } from "node:url";
import path from "node:path";
let text = "";
for await (const chunk of process.stdin) text += chunk;
const results = [];
for (const call of JSON.parse(text)) {
  const dot = call.handler.lastIndexOf(".");
  const file = path.join(process.argv[1], call.handler.slice(0, dot) + ".mjs");
  const handler = (await import(pathToFileURL(file).href))[call.handler.slice(dot + 1)];
  try {
    results.push({ output: await handler(call.event, {}) });
  } catch (e) {
    results.push({ errorType: e.name, errorMessage: e.message });
  }
}
console.log(JSON.stringify(results));
"#;

/// Runs `calls` (function name, event) in one child process per runtime,
/// or in-process for the Rust functions.
fn invoke(calls: &[(&str, StepEvent)]) -> Vec<Outcome> {
    let functions = functions(&template());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; calls.len()];
    let mut by_process: BTreeMap<(String, PathBuf), Vec<usize>> = BTreeMap::new();
    for (i, (name, event)) in calls.iter().enumerate() {
        let function = functions
            .get(*name)
            .unwrap_or_else(|| panic!("no function {name} in the template"));
        if function.runtime.starts_with("provided") {
            outcomes[i] = Some(invoke_rust(&function.handler, event.clone()));
        } else {
            let language: String = function
                .runtime
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            by_process
                .entry((language, function.code.clone()))
                .or_default()
                .push(i);
        }
    }
    for ((language, code), indices) in by_process {
        let functions = &functions;
        let batch: Vec<Value> = indices
            .iter()
            .map(|&i| json!({"handler": functions[calls[i].0].handler, "event": calls[i].1}))
            .collect();
        let results = run_driver(&language, &code, &Value::Array(batch));
        assert_eq!(results.len(), indices.len());
        for (i, result) in indices.into_iter().zip(results) {
            outcomes[i] = Some(match result.get("output") {
                Some(output) => Outcome::Output(output.clone()),
                None => Outcome::Error {
                    error_type: result["errorType"].as_str().unwrap_or_default().to_string(),
                    message: result["errorMessage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                },
            });
        }
    }
    outcomes.into_iter().map(Option::unwrap).collect()
}

fn run_driver(language: &str, code: &Path, calls: &Value) -> Vec<Value> {
    let (program, args): (&str, Vec<&str>) = match language {
        "python" => ("python3", vec!["-c", PYTHON_DRIVER]),
        "nodejs" => ("node", vec!["--input-type=module", "-e", NODE_DRIVER]),
        other => panic!("no driver for {other}"),
    };
    let mut child = Command::new(program)
        .args(args)
        .arg(code)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): the example app's {language} handlers need it")
        });
    let stdin = serde_json::to_vec(calls).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&stdin)
        .expect("write the calls");
    let out = child.wait_with_output().expect("the driver finishes");
    assert!(
        out.status.success(),
        "{program} driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{program} driver printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn invoke_rust(binary: &str, event: StepEvent) -> Outcome {
    let handler = match binary {
        "ship-order" => handler_fn(orders_app_steps::ship_order),
        "cancel-shipment" => handler_fn(orders_app_steps::cancel_shipment),
        other => panic!("no Rust handler for binary {other}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let now = event.baton.deadline - 60_000;
    match runtime.block_on(baton_lambda::step::handle(handler.as_ref(), event, now)) {
        Ok(output) => Outcome::Output(output),
        Err(e) => Outcome::Error {
            error_type: e.error_type,
            message: e.error_message,
        },
    }
}

/// The event Baton sends `function` for the first attempt of a step keyed
/// `key`.
fn event(function: &str, input: Value, key: &str) -> StepEvent {
    event_at(function, input, key, 1)
}

fn event_at(function: &str, input: Value, key: &str, attempt: u32) -> StepEvent {
    StepEvent {
        input,
        baton: StepContext {
            execution_id: "order-1".into(),
            workflow: "order-processing".into(),
            step: short_name(function).into(),
            index: None,
            attempt,
            kind: TaskKind::Step,
            function: function.into(),
            idempotency_key: key.into(),
            deadline: 1_764_504_000_000,
        },
    }
}

/// A valid input for each function.
fn valid_input(function: &str) -> Value {
    match short_name(function) {
        "validate-order" => json!({"orderId": "o-1", "items": []}),
        "reserve-inventory" => {
            json!({"orderId": "o-1", "items": [{"sku": "SKU-1", "qty": 1, "price": 25}]})
        }
        "release-inventory" => json!({"reservationId": "res-1"}),
        "process-payment" => json!({"orderId": "o-1", "amount": 25}),
        "refund-payment" => json!({"chargeId": "ch-1"}),
        "ship-order" => json!({"orderId": "o-1", "reservationId": "res-1"}),
        "cancel-shipment" => json!({"trackingId": "trk-1"}),
        "notify-customer" => json!({"orderId": "o-1", "trackingId": "trk-1"}),
        other => panic!("no input for {other}"),
    }
}

fn with_fail(function: &str, switch: Value) -> Value {
    let mut input = valid_input(function);
    input["fail"] = json!({ short_name(function): switch });
    input
}

#[test]
fn the_steps_return_their_outputs() {
    let outcomes = invoke(&[
        (
            "orders-validate-order",
            event("orders-validate-order", json!({"orderId": "o-1"}), "bk-1"),
        ),
        (
            "orders-validate-order",
            event("orders-validate-order", json!({"orderId": "bad-1"}), "bk-2"),
        ),
        (
            "orders-release-inventory",
            event(
                "orders-release-inventory",
                valid_input("release-inventory"),
                "bk-3",
            ),
        ),
        (
            "orders-refund-payment",
            event(
                "orders-refund-payment",
                valid_input("refund-payment"),
                "bk-4",
            ),
        ),
        (
            "orders-cancel-shipment",
            event(
                "orders-cancel-shipment",
                valid_input("cancel-shipment"),
                "bk-5",
            ),
        ),
        (
            "orders-notify-customer",
            event(
                "orders-notify-customer",
                valid_input("notify-customer"),
                "bk-6",
            ),
        ),
        (
            "orders-release-inventory",
            event("orders-release-inventory", json!({}), "bk-7"),
        ),
        (
            "orders-process-payment",
            event("orders-process-payment", json!({"orderId": "o-1"}), "bk-8"),
        ),
    ]);
    assert_eq!(
        outcomes[0].output(),
        &json!({"valid": true, "orderId": "o-1",
                "items": [{"sku": "SKU-1", "qty": 1, "price": 25}], "total": 25})
    );
    assert_eq!(outcomes[1].output()["valid"], false);
    assert_eq!(
        outcomes[2].output(),
        &json!({"reservationId": "res-1", "released": true})
    );
    assert_eq!(outcomes[3].output()["chargeId"], "ch-1");
    assert_eq!(
        outcomes[4].output(),
        &json!({"trackingId": "trk-1", "cancelled": true})
    );
    assert_eq!(outcomes[5].output()["notified"], true);
    // Input no retry can fix fails for good, in every language.
    for invalid in &outcomes[6..] {
        assert!(invalid.error_type().starts_with("Permanent"), "{invalid:?}");
        assert!(!invalid.retryable());
    }
}

#[test]
fn a_retry_gets_the_id_the_first_attempt_got() {
    let makers = [
        ("orders-reserve-inventory", "reservationId", "res-"),
        ("orders-process-payment", "chargeId", "ch-"),
        ("orders-ship-order", "trackingId", "trk-"),
    ];
    let mut calls = Vec::new();
    for (function, _, _) in makers {
        let input = valid_input(function);
        calls.push((function, event_at(function, input.clone(), "bk-1", 1)));
        calls.push((function, event_at(function, input.clone(), "bk-1", 2)));
        calls.push((function, event_at(function, input, "bk-2", 1)));
    }
    let outcomes = invoke(&calls);
    for ((function, field, prefix), outcomes) in makers.iter().zip(outcomes.chunks(3)) {
        let id = |outcome: &Outcome| {
            outcome.output()[field]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let (first, retry, other) = (id(&outcomes[0]), id(&outcomes[1]), id(&outcomes[2]));
        assert_eq!(first, retry, "{function}: a retry got another {field}");
        assert_ne!(first, other, "{function}: two steps got the same {field}");
        // Every language derives the id the same way from the key.
        assert_eq!(first, format!("{prefix}40d9b17c3201"), "{function}");
    }
}

#[test]
fn the_fail_switch_fails_each_step_as_asked() {
    let names: Vec<String> = functions(&template()).into_keys().collect();
    let mut calls = Vec::new();
    for function in &names {
        let f = function.as_str();
        calls.push((f, event(f, with_fail(f, json!("always")), "bk-1")));
        calls.push((f, event(f, with_fail(f, json!("permanent")), "bk-1")));
        calls.push((f, event_at(f, with_fail(f, json!({"first": 1})), "bk-1", 1)));
        calls.push((f, event_at(f, with_fail(f, json!({"first": 1})), "bk-1", 2)));
        // A switch for another function leaves this one alone.
        calls.push((
            f,
            event(f, json!({"fail": {"no-such-function": "always"}}), "bk-1"),
        ));
        calls.push((f, event(f, valid_input(f), "bk-1")));
    }
    let outcomes = invoke(&calls);
    for (function, outcomes) in names.iter().zip(outcomes.chunks(6)) {
        let [always, permanent, first, second, _, plain] = outcomes else {
            unreachable!()
        };
        assert!(
            always.retryable(),
            "{function}: `always` is retried: {always:?}"
        );
        assert!(
            permanent.error_type().starts_with("Permanent"),
            "{function}: `permanent` must report a Permanent error type: {permanent:?}"
        );
        assert!(!permanent.retryable());
        assert!(first.retryable(), "{function}: `first: 1` fails attempt 1");
        assert_eq!(
            second, plain,
            "{function}: `first: 1` lets attempt 2 through"
        );
        plain.output();
    }
}
