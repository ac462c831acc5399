//! The AWS backend end to end on moto server: `baton dev` serves the API and
//! polls the coordinator and step queues; a client drives it over HTTP only.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, path_arg, repo_file};
use serde_json::{Value, json};

/// A `baton dev` process, stopped when dropped.
struct Dev {
    child: Child,
    port: u16,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 request; returns the status and the JSON body.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the API accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("an HTTP status");
    let json = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn start_dev(sb: &Sandbox, prefix: &str) -> Dev {
    let port = free_port();
    let endpoint = baton_aws::testing::endpoint();
    let log = std::fs::File::create(sb.path().join("dev.log")).unwrap();
    let child = sb
        .command(
            &[
                "dev",
                "--endpoint",
                &endpoint,
                "--prefix",
                prefix,
                "--port",
                &port.to_string(),
                &path_arg(&repo_file("workflows/order-saga.yaml")),
            ],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("baton dev starts");
    let dev = Dev { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "baton dev did not serve its API: {}",
            std::fs::read_to_string(sb.path().join("dev.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dev
}

fn wait_finished(port: u16, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = request(port, "GET", &format!("/executions/{id}"), None);
        assert_eq!(code, 200, "{body}");
        if [
            "succeeded",
            "failed",
            "compensated",
            "compensation_failed",
            "cancelled",
        ]
        .contains(&body["status"].as_str().unwrap_or(""))
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{id} did not finish: {body:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Compensation tasks in the order the history applied their results.
fn compensations(port: u16, id: &str) -> Vec<String> {
    let (code, history) = request(port, "GET", &format!("/executions/{id}/history"), None);
    assert_eq!(code, 200);
    history
        .as_array()
        .expect("a list")
        .iter()
        .filter(|h| {
            h["event"]["type"] == "task_succeeded" && h["event"]["task"]["kind"] == "compensation"
        })
        .map(|h| h["event"]["task"]["step"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn order_saga_through_the_api_on_moto() {
    let sb = Sandbox::new();
    let prefix = baton_aws::testing::unique_prefix("dev");
    let dev = start_dev(&sb, &prefix);

    let (code, started) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(&json!({"id": "aws-ok", "input": {"orderId": "o-1"}})),
    );
    assert_eq!(code, 201, "{started}");
    // The same id again starts nothing new.
    let (code, again) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(&json!({"id": "aws-ok", "input": {"orderId": "o-other"}})),
    );
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["created"], false);

    let done = wait_finished(dev.port, "aws-ok");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        done["output"]["trackingNumber"]
            .as_str()
            .unwrap()
            .starts_with("TRK")
    );
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["succeeded"; 5]);
    let (_, history) = request(dev.port, "GET", "/executions/aws-ok/history", None);
    let history = history.as_array().unwrap();
    assert_eq!(history[0]["event"]["type"], "started");
    let seqs: Vec<u64> = history.iter().map(|h| h["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "history is gapless and ordered"
    );

    // A shipment that fails for good: refund, then release, in reverse order of completion.
    let (code, _) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(
            &json!({"id": "aws-ship-fails", "input": {"orderId": "o-2", "fail": {"ship-order": "permanent"}}}),
        ),
    );
    assert_eq!(code, 201);
    let done = wait_finished(dev.port, "aws-ship-fails");
    assert_eq!(done["status"], "compensated", "{done:#}");
    assert_eq!(
        compensations(dev.port, "aws-ship-fails"),
        ["charge", "reserve"]
    );

    // A payment that always fails: retried to its limit, then only the reservation is undone.
    let (code, _) = request(
        dev.port,
        "POST",
        "/workflows/order-processing/executions",
        Some(
            &json!({"id": "aws-pay-fails", "input": {"orderId": "o-3", "fail": {"process-payment": "always"}}}),
        ),
    );
    assert_eq!(code, 201);
    let done = wait_finished(dev.port, "aws-pay-fails");
    assert_eq!(done["status"], "compensated", "{done:#}");
    let charge = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "charge")
        .unwrap();
    assert_eq!(charge["attempts"], 5, "{charge:#}");
    assert_eq!(compensations(dev.port, "aws-pay-fails"), ["reserve"]);

    // The operator's view of the same executions, through the command.
    let listed = sb.baton_env(&["list"], &[("BATON_AWS", "1")]);
    let listed = listed.expect_code(0);
    for id in ["aws-ok", "aws-ship-fails", "aws-pay-fails"] {
        assert!(listed.stdout.contains(id), "{}", listed.stdout);
    }
}
