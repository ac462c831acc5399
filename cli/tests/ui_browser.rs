//! The web console (`baton ui`) in a real browser: headless Chromium driven
//! through chromedriver (installed by `tests/browser/install.sh`), asserting
//! what a person sees: a failed step's node marked failed, a compensated
//! saga's compensations in order, the list filtered by status, a signal and a
//! cancel sent from the page changing their executions, a failed execution
//! redriven from the page once its cause is gone (and a stale page's redrive
//! refused with the API's reason). It saves the screenshots the README shows
//! under `docs/`.
//!
//! Without Chromium the test fails; `BATON_SKIP_BROWSER=1` skips it with a
//! printed reason (for developers without a browser).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, path_arg, repo_file, test_workflow};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A command step that fails (exit 3) while the file `down` exists.
const FLAKY_PY: &str = r#"
import json, os, sys
json.load(sys.stdin)
if os.path.exists("down"):
    sys.exit(3)
print(json.dumps({"ok": True}))
"#;

/// One attempt per step, and nothing to undo: a failure leaves it `failed`.
const FLAKY_WORKFLOW: &str = r#"name: flaky
defaults: { retry: { max_attempts: 1 } }
steps:
  prepare: { function: noop, mutates: false }
  call: { needs: [prepare], function: flaky, mutates: false }
"#;

/// The flags Chromium needs to start headless on a closed network without hanging.
const CHROMIUM_ARGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1500",
];

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn executable(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Starts `baton ui --port 0` on the sandbox's database; returns it and its URL.
fn start_console(sb: &Sandbox) -> (Guard, String) {
    let mut child = sb
        .command(&["ui", "--port", "0"], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("baton ui starts");
    let stdout = child.stdout.take().expect("its stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("baton ui prints its address");
    let start = line.find("http://").expect("a URL in the first line");
    let url = line[start..]
        .split_whitespace()
        .next()
        .expect("the URL")
        .trim_end_matches('/')
        .to_string();
    (guard, url)
}

fn start_chromedriver(driver: &Path) -> (Guard, String) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
    let guard = Guard(child);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str, chromium: &Path, profile: &Path) -> Client {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .expect("a Chromium session through chromedriver")
}

/// Waits until the script (a function body returning a value) returns
/// something other than null or false, and returns it.
async fn until(client: &Client, what: &str, script: &str, args: Vec<Value>) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        match client.execute(script, args.clone()).await {
            Ok(Value::Null | Value::Bool(false)) => {}
            Ok(value) => return value,
            Err(e) => last = json!(e.to_string()),
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what} (last error: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A graph node's status and visible text, once it shows `status`.
async fn node_with_status(client: &Client, node: &str, status: &str) -> Value {
    until(
        client,
        &format!("node {node} as {status}"),
        "const g = document.querySelector(`g[data-node-id=\"${arguments[0]}\"]`);
         if (!g || g.dataset.status !== arguments[1]) return null;
         const shape = g.querySelector('.shape');
         return { text: g.querySelector('.state').textContent,
                  order: g.querySelector('.order').textContent,
                  stroke: getComputedStyle(shape).stroke };",
        vec![json!(node), json!(status)],
    )
    .await
}

/// The redrive button's label, or null when the page offers none, once the
/// page shows its actions.
async fn redrive_button(client: &Client) -> Value {
    let shown = until(
        client,
        "the actions",
        "if (!document.querySelector('#start-again')) return null;
         const b = document.querySelector('#redrive');
         return { label: b && b.offsetParent !== null ? b.textContent : null };",
        vec![],
    )
    .await;
    shown["label"].clone()
}

/// The execution's status badge, once it shows `status`.
async fn execution_status(client: &Client, status: &str) {
    until(
        client,
        &format!("the execution {status}"),
        "const b = document.querySelector('#execution-status [data-status]');
         return b && b.dataset.status === arguments[0];",
        vec![json!(status)],
    )
    .await;
}

/// The action's message, once it shows one of `kind` (ok, warn, error).
async fn action_message(client: &Client, kind: &str) -> String {
    let text = until(
        client,
        &format!("an {kind} message"),
        "const m = document.querySelector('#action-message');
         return m && !m.hidden && m.classList.contains(arguments[0]) ? m.textContent : null;",
        vec![json!(kind)],
    )
    .await;
    text.as_str().unwrap_or_default().to_string()
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = repo_file(&format!("docs/{name}"));
    std::fs::create_dir_all(path.parent().expect("docs/")).expect("docs/ exists");
    std::fs::write(&path, png).expect("the screenshot is saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_operates_executions() {
    if std::env::var("BATON_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: BATON_SKIP_BROWSER=1 (the console's browser test needs Chromium)");
        return;
    }
    let chromium = executable("BATON_CHROMIUM", "/usr/bin/chromium");
    let driver = executable("BATON_CHROMEDRIVER", "/usr/bin/chromedriver");
    assert!(
        chromium.exists() && driver.exists(),
        "{} or {} is missing: run tests/browser/install.sh (or set BATON_SKIP_BROWSER=1 to skip)",
        chromium.display(),
        driver.display()
    );

    let mut sb = Sandbox::new();
    let saga = path_arg(&repo_file("workflows/order-saga.yaml"));
    // Shipping fails for good: the charge is refunded, then the reservation released.
    sb.baton(&[
        "run",
        &saga,
        "--id",
        "saga-compensated",
        "--input",
        r#"{"orderId":"o-3","fail":{"ship-order":"permanent"}}"#,
    ])
    .expect_code(4);
    sb.baton(&[
        "run",
        &saga,
        "--id",
        "saga-ok",
        "--input",
        r#"{"orderId":"o-1"}"#,
    ])
    .expect_code(0);
    // Two executions whose call fails while `down` exists; then it is back.
    std::fs::write(sb.path().join("flaky.py"), FLAKY_PY).expect("flaky.py");
    std::fs::write(
        sb.path().join("baton.toml"),
        "[functions.flaky]\ncommand = [\"python3\", \"flaky.py\"]\n",
    )
    .expect("baton.toml");
    let flaky = sb.path().join("flaky.yaml");
    std::fs::write(&flaky, FLAKY_WORKFLOW).expect("flaky.yaml");
    std::fs::write(sb.path().join("down"), "").expect("down");
    for id in ["flaky-redrive", "flaky-stale"] {
        let out = sb.baton(&["run", &path_arg(&flaky), "--id", id]);
        assert_ne!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(sb.status(id).as_deref(), Some("failed"));
    }
    std::fs::remove_file(sb.path().join("down")).expect("down removed");
    // A parent whose step runs a child workflow.
    let pause = sb.path().join("pause.yaml");
    std::fs::write(&pause, "name: pause\nsteps:\n  nap: { wait: 10ms }\n").expect("pause.yaml");
    sb.baton(&["deploy", &path_arg(&pause)]).expect_code(0);
    let nest = sb.path().join("nest.yaml");
    std::fs::write(&nest, "name: nest\nsteps:\n  inner: { workflow: pause }\n").expect("nest.yaml");
    sb.baton(&["run", &path_arg(&nest), "--id", "nest-1"])
        .expect_code(0);
    let approval = test_workflow("approval.yaml");
    sb.start(&approval, "await-signal", &json!({"orderId": "o-sig"}));
    sb.start(&approval, "await-cancel", &json!({"orderId": "o-can"}));
    let _worker = sb.worker(&[]);
    sb.wait_event("await-signal", "step.waiting", Some("approve"), WAIT);
    sb.wait_event("await-cancel", "step.waiting", Some("approve"), WAIT);

    let (_console, url) = start_console(&sb);
    let (_driver, webdriver) = start_chromedriver(&driver);
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let client = browser(&webdriver, &chromium, profile.path()).await;
    // Close the session whatever happens, so chromedriver stops its Chromium.
    let result = tokio::spawn(scenario(client.clone(), url)).await;
    let _ = client.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(client: Client, url: String) {
    // The compensated saga: ship failed, its compensations ran newest first.
    client
        .goto(&format!("{url}/#/executions/saga-compensated"))
        .await
        .expect("the execution page opens");
    let ship = node_with_status(&client, "step:ship", "failed").await;
    assert_eq!(ship["text"], "failed", "{ship}");
    let charge = node_with_status(&client, "step:charge", "succeeded").await;
    assert_ne!(
        ship["stroke"], charge["stroke"],
        "a failed node is drawn in another colour than a succeeded one"
    );
    let undo_charge = node_with_status(&client, "undo:charge", "succeeded").await;
    let undo_reserve = node_with_status(&client, "undo:reserve", "succeeded").await;
    assert_eq!(undo_charge["order"], "#1", "{undo_charge}");
    assert_eq!(undo_reserve["order"], "#2", "{undo_reserve}");
    assert_eq!(undo_charge["text"], "compensated");
    let undo_ship = node_with_status(&client, "undo:ship", "idle").await;
    assert_eq!(
        undo_ship["text"], "not run",
        "ship never succeeded: nothing to undo"
    );
    let order = until(
        &client,
        "the compensations listed",
        "const items = [...document.querySelectorAll('#compensations li[data-step]')];
         return items.length ? items.map((li) => li.textContent) : null;",
        vec![],
    )
    .await;
    let order: Vec<String> = serde_json::from_value(order).expect("texts");
    assert_eq!(order.len(), 2, "{order:?}");
    assert!(
        order[0].starts_with("undo charge (refund-payment)"),
        "{order:?}"
    );
    assert!(
        order[1].starts_with("undo reserve (release-inventory)"),
        "{order:?}"
    );
    // The timeline has a bar per attempt, compensations included.
    let bars = until(
        &client,
        "the timeline",
        "const rows = document.querySelectorAll('#timeline .row');
         return rows.length ? [...rows].map((r) => r.querySelector('.label').textContent) : null;",
        vec![],
    )
    .await;
    assert_eq!(
        bars,
        json!([
            "validate #1",
            "reserve #1",
            "charge #1",
            "ship #1",
            "undo charge #1",
            "undo reserve #1"
        ])
    );
    // Selecting the failed step shows its input and error.
    client
        .find(Locator::Css(r#"g[data-node-id="step:ship"]"#))
        .await
        .expect("the ship node")
        .click()
        .await
        .expect("a click on it");
    let panel = until(
        &client,
        "the step panel",
        "const e = document.querySelector('#panel-error');
         return e ? document.querySelector('#step-panel').textContent : null;",
        vec![],
    )
    .await;
    let panel = panel.as_str().unwrap_or_default();
    assert!(panel.contains("InjectedFailure"), "{panel}");
    assert!(
        panel.contains("\"orderId\": \"o-3\""),
        "the step's input: {panel}"
    );
    assert_eq!(
        redrive_button(&client).await,
        Value::Null,
        "a compensated execution cannot be redriven"
    );
    screenshot(&client, "console-execution.png").await;

    // The list, filtered by status with the status menu.
    client
        .goto(&format!("{url}/#/executions"))
        .await
        .expect("the list opens");
    until(
        &client,
        "eight executions (a parent and its child among them)",
        "return document.querySelectorAll('#executions tr[data-id]').length === 8;",
        vec![],
    )
    .await;
    let count = until(
        &client,
        "the count of compensated executions",
        "const n = document.querySelector('#counts [data-status=compensated] .n');
         return n ? n.textContent : null;",
        vec![],
    )
    .await;
    assert_eq!(count, "1");
    client
        .find(Locator::Css("#filter-status"))
        .await
        .expect("the status filter")
        .select_by_value("compensated")
        .await
        .expect("compensated chosen");
    let shown = until(
        &client,
        "only compensated executions",
        "const rows = [...document.querySelectorAll('#executions tr[data-id]')];
         if (!location.hash.includes('status=compensated') || rows.length !== 1) return null;
         return rows.map((r) => [r.dataset.id, r.dataset.status]);",
        vec![],
    )
    .await;
    assert_eq!(shown, json!([["saga-compensated", "compensated"]]));

    // A signal sent from the page completes the waiting step.
    client
        .goto(&format!("{url}/#/executions/await-signal"))
        .await
        .expect("the waiting execution opens");
    node_with_status(&client, "step:approve", "waiting").await;
    screenshot(&client, "console-waiting.png").await;
    client
        .find(Locator::Css("#signal-name"))
        .await
        .expect("the signal name")
        .send_keys("approval")
        .await
        .expect("typed");
    client
        .find(Locator::Css("#signal-data"))
        .await
        .expect("the signal payload")
        .send_keys(r#"{"ok":true}"#)
        .await
        .expect("typed");
    client
        .find(Locator::Css("#signal-form button"))
        .await
        .expect("the send button")
        .click()
        .await
        .expect("sent");
    node_with_status(&client, "step:approve", "succeeded").await;
    node_with_status(&client, "step:finish", "succeeded").await;
    let status = until(
        &client,
        "the execution succeeded",
        "const b = document.querySelector('#execution-status [data-status]');
         return b && b.dataset.status === 'succeeded' ? b.textContent : null;",
        vec![],
    )
    .await;
    assert_eq!(status, "succeeded");

    // Cancelling from the page undoes the charge and the reservation.
    client
        .goto(&format!("{url}/#/executions/await-cancel"))
        .await
        .expect("the other waiting execution opens");
    node_with_status(&client, "step:approve", "waiting").await;
    client
        .find(Locator::Css("#cancel"))
        .await
        .expect("the cancel button")
        .click()
        .await
        .expect("clicked");
    client
        .accept_alert()
        .await
        .expect("the confirmation accepted");
    until(
        &client,
        "the execution cancelled",
        "const b = document.querySelector('#execution-status [data-status]');
         return b && b.dataset.status === 'cancelled';",
        vec![],
    )
    .await;
    node_with_status(&client, "undo:charge", "succeeded").await;
    node_with_status(&client, "undo:reserve", "succeeded").await;
    node_with_status(&client, "step:approve", "cancelled").await;

    // A succeeded execution offers no redrive.
    client
        .goto(&format!("{url}/#/executions/saga-ok"))
        .await
        .expect("the succeeded execution opens");
    execution_status(&client, "succeeded").await;
    assert_eq!(redrive_button(&client).await, Value::Null);

    // A failed execution whose cause is gone is redriven from the page: the
    // failed step runs again and the execution succeeds, shown as it happens.
    client
        .goto(&format!("{url}/#/executions/flaky-redrive"))
        .await
        .expect("the failed execution opens");
    execution_status(&client, "failed").await;
    let call = node_with_status(&client, "step:call", "failed").await;
    assert_eq!(call["text"], "failed", "{call}");
    node_with_status(&client, "step:prepare", "succeeded").await;
    assert_eq!(redrive_button(&client).await, "Redrive");
    client
        .find(Locator::Css("#redrive"))
        .await
        .expect("the redrive button")
        .click()
        .await
        .expect("clicked");
    client
        .send_alert_text("the service is back")
        .await
        .expect("the reason typed");
    client.accept_alert().await.expect("the redrive confirmed");
    let said = action_message(&client, "ok").await;
    assert_eq!(said, "redrive applied; status running");
    execution_status(&client, "succeeded").await;
    let call = node_with_status(&client, "step:call", "succeeded").await;
    assert_eq!(
        call["text"], "succeeded · 2 attempts",
        "the failed attempt, then the redriven one: {call}"
    );
    let prepare = node_with_status(&client, "step:prepare", "succeeded").await;
    assert_eq!(
        prepare["text"], "succeeded",
        "what succeeded is not run again: {prepare}"
    );
    assert_eq!(redrive_button(&client).await, Value::Null);
    let history = until(
        &client,
        "the redrive in the history",
        "const h = document.querySelector('#history pre');
         return h && h.textContent.includes('the service is back') ? h.textContent : null;",
        vec![],
    )
    .await;
    let history = history.as_str().unwrap_or_default();
    assert!(
        history.contains(r#"{"type":"redrive_requested","reason":"the service is back"}"#),
        "{history}"
    );
    assert_eq!(
        history.matches(r#""step":"prepare""#).count(),
        1,
        "prepare ran once: {history}"
    );

    // A page left open on a failed execution that was redriven meanwhile
    // (here through the API, as from another tab): its redrive is refused
    // with the API's reason, and the page shows the execution as it is.
    client
        .goto(&format!("{url}/#/executions/flaky-stale"))
        .await
        .expect("the other failed execution opens");
    execution_status(&client, "failed").await;
    assert_eq!(redrive_button(&client).await, "Redrive");
    let code = client
        .execute(
            "return fetch('/api/executions/flaky-stale/redrive', { method: 'POST' }).then((r) => r.status);",
            vec![],
        )
        .await
        .expect("a redrive through the API");
    assert_eq!(code, 202);
    client
        .find(Locator::Css("#redrive"))
        .await
        .expect("the stale redrive button")
        .click()
        .await
        .expect("clicked");
    client.accept_alert().await.expect("no reason given");
    let said = action_message(&client, "error").await;
    assert!(
        said.starts_with(
            "redrive refused: execution `flaky-stale` cannot be redriven: the execution "
        ),
        "{said}"
    );
    execution_status(&client, "succeeded").await;
    assert_eq!(redrive_button(&client).await, Value::Null);

    // A parent's child-workflow step links to its child, and the child to its parent.
    client
        .goto(&format!("{url}/#/executions/nest-1"))
        .await
        .expect("the parent opens");
    node_with_status(&client, "step:inner", "succeeded").await;
    client
        .find(Locator::Css(r#"g[data-node-id="step:inner"]"#))
        .await
        .expect("the child-workflow node")
        .click()
        .await
        .expect("clicked");
    let child = until(
        &client,
        "the child execution's link",
        "const a = document.querySelector('ul.children a');
         return a && a.textContent;",
        vec![],
    )
    .await;
    assert_eq!(child, "nest-1:inner");
    client
        .find(Locator::Css("ul.children a"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("clicked");
    let parent = until(
        &client,
        "the parent's link on the child's page",
        "const a = document.querySelector('#parent-link');
         return a && document.querySelector('#execution-id').textContent === 'nest-1:inner' && a.textContent;",
        vec![],
    )
    .await;
    assert_eq!(parent, "nest-1");
}
