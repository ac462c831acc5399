//! `baton dev` as a child process and a small HTTP client for its API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Sandbox;

/// A `baton dev` process, stopped when dropped.
pub struct Dev {
    child: Child,
    pub port: u16,
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
pub fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request_text(port, method, path, "application/json", &body)
}

/// One HTTP/1.1 request with a body of the given type (a YAML definition, say).
pub fn request_text(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the API accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// `baton dev --endpoint ENDPOINT --port <free> ARGS`, once its API answers.
pub fn start_dev(sb: &Sandbox, endpoint: &str, args: &[&str]) -> Dev {
    let port = free_port();
    let log = std::fs::File::create(sb.path().join("dev.log")).unwrap();
    let port_text = port.to_string();
    let mut all = vec!["dev", "--endpoint", endpoint, "--port", &port_text];
    all.extend_from_slice(args);
    let child = sb
        .command(&all, &[])
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

pub fn wait_finished(port: u16, id: &str) -> Value {
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
pub fn compensations(port: u16, id: &str) -> Vec<String> {
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
