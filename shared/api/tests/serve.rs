//! The API over real HTTP on 127.0.0.1, through `serve`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request on a fresh connection; returns the status and the JSON body.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the head");
    // A server may answer (413) before reading the body and close; that is fine.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("read the response");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not start on {addr}");
}

#[tokio::test]
async fn serves_the_api_over_http_and_stops_on_shutdown() {
    let h = harness();
    let api = Arc::new(h.api);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton_api::serve(api.clone(), addr, async {
        let _ = stopped.await;
    }));
    wait_until_listening(addr).await;

    let (status, body) = exchange(
        addr,
        "PUT /workflows/waiter HTTP/1.1\r\nContent-Type: application/json",
        WAIT_JSON.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = exchange(
        addr,
        "POST /workflows/waiter/executions HTTP/1.1\r\nIdempotency-Key: http-1",
        br#"{"input": 1}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "http-1");

    let (status, body) = exchange(addr, "GET /executions/http-1 HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "running");

    let (status, body) = exchange(
        addr,
        "POST /executions/http-1/signals/go HTTP/1.1",
        b"\"yes\"",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = exchange(addr, "GET /executions/http-1 HTTP/1.1", b"").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "succeeded", "{body}");

    // Refused from Content-Length alone, before the body is read.
    let big = vec![b' '; 300 * 1024];
    let (status, body) = exchange(addr, "POST /workflows/waiter/executions HTTP/1.1", &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("262144-byte limit")),
        "{body}"
    );

    let (status, _) = exchange(addr, "GET /nowhere HTTP/1.1", b"").await;
    assert_eq!(status, 404);

    stop.send(()).expect("the server is waiting");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .expect("the server task")
        .expect("serve returns Ok");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_body_without_length_is_limited_while_read() {
    let h = harness_with(
        baton_embedded::SqliteOptions::default(),
        baton_api::ApiOptions::default().body_limit(1024),
    );
    let api = Arc::new(h.api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton_api::serve_on(api, listener, async {
        let _ = stopped.await;
    }));

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let chunk = "x".repeat(800);
    let request = format!(
        "POST /workflows/w/executions HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("1024-byte limit"), "{text}");

    stop.send(()).expect("the server is waiting");
    server
        .await
        .expect("the server task")
        .expect("serve returns Ok");
}

/// The server's connections run on Tokio workers, whose 2 MiB stacks a
/// nested expression once overflowed, taking the whole process down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_expressions_are_refused_and_the_server_stays_up() {
    let h = harness();
    let api = Arc::new(h.api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton_api::serve_on(api, listener, async {
        let _ = stopped.await;
    }));

    let definition = |depth: usize| {
        format!(
            "name: nested\nsteps:\n  hold:\n    wait_until: \"${{ {}1{} }}\"\n",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    let head = "PUT /workflows/nested HTTP/1.1\r\nContent-Type: application/yaml";
    let (status, body) = exchange(addr, head, definition(10_000).as_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["problems"][0]["step"], "hold", "{body}");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nests deeper than the limit of 24 levels")),
        "{body}"
    );
    let (status, body) = exchange(addr, head, definition(20).as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = exchange(addr, "GET /workflows/nested HTTP/1.1", b"").await;
    assert_eq!(status, 200, "{body}");

    stop.send(()).expect("the server is waiting");
    server
        .await
        .expect("the server task")
        .expect("serve returns Ok");
}
