//! Test support: a moto server (or any emulator) to test against, and a fresh
//! set of resources per test.
//!
//! `BATON_TEST_AWS_ENDPOINT` names a running emulator (`tests/run-all.sh`
//! starts moto server and sets it). Without it, `tests/moto-server.py` (moto
//! serving one request at a time, as DynamoDB's conditional writes need) is
//! started once per test process on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::backend::AwsBackend;
use crate::bootstrap::{Plan, bootstrap};
use crate::coordinator_batch::QueueMessage;
use crate::counter::RequestCounter;
use crate::dispatch::StepInvoker;
use baton_runtime::ports::StoreResult;
use baton_runtime::step::StepEvent;
use futures::future::BoxFuture;

static SERVER: OnceLock<Mutex<Option<Child>>> = OnceLock::new();
static ENDPOINT: OnceLock<String> = OnceLock::new();
static PREFIX: AtomicU32 = AtomicU32::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The emulator endpoint, starting moto server if none was given.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            if let Ok(url) = std::env::var("BATON_TEST_AWS_ENDPOINT")
                && !url.is_empty()
            {
                return url;
            }
            let port = free_port();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/moto-server.py");
            let child = Command::new("python3")
                .args([script, &port.to_string(), &std::process::id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the AWS tests need moto server: run tests/run-all.sh, set BATON_TEST_AWS_ENDPOINT, \
                         or `pip install 'moto[server]'` ({e})"
                    )
                });
            SERVER.get_or_init(|| Mutex::new(Some(child)));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto server did not start on {url}");
                std::thread::sleep(Duration::from_millis(100));
            }
            url
        })
        .clone()
}

static MINISTACK: OnceLock<Mutex<Option<Child>>> = OnceLock::new();
static MINISTACK_ENDPOINT: OnceLock<String> = OnceLock::new();

/// MiniStack, which runs real Lambda function code (Python, Node.js) as
/// local processes: `BATON_TEST_MINISTACK_ENDPOINT`, or
/// `tests/ministack-server.py` started once per test process (it fills
/// MiniStack's gaps that Baton relies on; see that file).
pub fn ministack_endpoint() -> String {
    MINISTACK_ENDPOINT
        .get_or_init(|| {
            if let Ok(url) = std::env::var("BATON_TEST_MINISTACK_ENDPOINT")
                && !url.is_empty()
            {
                return url;
            }
            let port = free_port();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/ministack-server.py");
            let child = Command::new("python3")
                .args([script, &port.to_string(), &std::process::id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the tests that run real function code need MiniStack: run tests/run-all.sh, \
                         set BATON_TEST_MINISTACK_ENDPOINT, or `pip install ministack` ({e})"
                    )
                });
            MINISTACK.get_or_init(|| Mutex::new(Some(child)));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            let health = format!("127.0.0.1:{port}");
            loop {
                if let Ok(mut stream) = std::net::TcpStream::connect(&health) {
                    use std::io::{Read, Write};
                    let _ = stream.write_all(
                        b"GET /_ministack/health HTTP/1.0\r\nHost: localhost\r\n\r\n",
                    );
                    let mut reply = String::new();
                    let _ = stream.read_to_string(&mut reply);
                    if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "MiniStack did not start on {url}");
                std::thread::sleep(Duration::from_millis(200));
            }
            url
        })
        .clone()
}

/// SDK configuration for the emulator: dummy credentials, us-east-1.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "baton-tests"))
        .load()
        .await
}

/// A unique resource prefix for one test.
pub fn unique_prefix(name: &str) -> String {
    format!(
        "t{}-{}-{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::SeqCst),
        name
    )
}

/// Records the attempts a backend dispatches instead of invoking anything,
/// so a test can play the step function itself.
#[derive(Default)]
pub struct RecordingInvoker {
    events: Mutex<Vec<StepEvent>>,
}

impl RecordingInvoker {
    /// Every attempt dispatched since the last call, oldest first.
    pub fn take_all(&self) -> Vec<StepEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The attempts dispatched to `function` since the last call, oldest first.
    pub fn take(&self, function: &str) -> Vec<StepEvent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let (taken, kept) = events
            .drain(..)
            .partition(|e: &StepEvent| e.baton.function == function);
        *events = kept;
        taken
    }
}

impl StepInvoker for RecordingInvoker {
    fn invoke<'a>(&'a self, event: &'a StepEvent) -> BoxFuture<'a, StoreResult<()>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
        Box::pin(async { Ok(()) })
    }

    fn check<'a>(&'a self, _functions: &'a [String]) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Every message now on the coordinator queue, each deleted as it is read.
pub async fn drain_coordinator_queue(backend: &AwsBackend) -> Vec<QueueMessage> {
    let sqs = &backend.clients().sqs;
    let url = &backend.settings().coordinator_queue_url;
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive from the coordinator queue");
        if out.messages().is_empty() {
            return all;
        }
        for m in out.messages() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete a coordinator message");
            all.push(QueueMessage::from(m));
        }
    }
}

/// A backend on freshly bootstrapped resources whose dispatched attempts are
/// recorded by the returned invoker.
pub async fn fresh_recording_backend(
    name: &str,
    max_receives: u32,
) -> (AwsBackend, Arc<RecordingInvoker>) {
    let invoker = Arc::new(RecordingInvoker::default());
    let backend = fresh_backend(name, max_receives)
        .await
        .with_invoker(invoker.clone());
    (backend, invoker)
}

/// A backend on freshly bootstrapped resources (steps invoked through the
/// Lambda API unless the caller swaps the invoker).
pub async fn fresh_backend(name: &str, max_receives: u32) -> AwsBackend {
    let config = sdk_config(&endpoint()).await;
    let counter = RequestCounter::new();
    let mut plan = Plan::new(unique_prefix(name));
    plan.max_receives = max_receives;
    plan.visibility_timeout_s = 2;
    let throwaway = AwsBackend::with_config(
        &config,
        crate::AwsSettings::from_map(&placeholder()).expect("placeholder settings"),
        counter.clone(),
    );
    let settings = bootstrap(throwaway.clients(), &plan)
        .await
        .expect("bootstrap on the emulator");
    counter.reset();
    AwsBackend::with_config(&config, settings, counter)
}

fn placeholder() -> std::collections::BTreeMap<String, String> {
    [
        ("BATON_TABLE", "unused"),
        ("BATON_COORDINATOR_QUEUE_URL", "http://unused/0/unused"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
