//! `baton dev`: the whole AWS loop on one machine against an emulator.
//!
//! Creates the resources (idempotently), deploys the given workflows, serves
//! the HTTP API on localhost, and polls the coordinator queue the way the
//! coordinator's event source mapping does: batches of up to ten, a
//! visibility timeout as the lease, successes deleted, partial batch failures
//! left to reappear when their visibility timeout ends (and to reach the DLQ
//! through the redrive policy).
//!
//! Steps run where `baton.toml` says (the in-process example handlers
//! otherwise) behind Lambda's asynchronous contract
//! ([`baton_aws::dispatch::LocalInvoker`]): each result reaches the
//! coordinator queue as the destination record Lambda would send. With
//! `--lambda`, steps are real Lambda functions invoked on the endpoint
//! (an emulator that runs function code, or AWS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use baton_aws::coordinator_batch::{QueueMessage, process_coordinator_batch};
use baton_aws::dispatch::LocalInvoker;
use baton_aws::{AwsBackend, RequestCounter};
use baton_runtime::ports::WorkflowStore;
use baton_runtime::{Clock, Coordinator, SystemClock};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::{self, load_workflow};
use crate::aws;

/// Visibility timeout of a polled batch: how long its messages stay leased.
const VISIBILITY_S: i32 = 30;
/// Pause between polls of an empty queue (short polls keep the emulator responsive).
const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct DevOptions {
    pub endpoint: Option<String>,
    pub prefix: String,
    pub port: u16,
    pub files: Vec<PathBuf>,
    pub max_receives: u32,
    /// Invoke steps through the Lambda API instead of running them here.
    pub lambda: bool,
}

pub async fn dev(db: &Path, config: &Path, options: DevOptions) -> anyhow::Result<u8> {
    let workflows = options
        .files
        .iter()
        .map(|f| load_workflow(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let targets = app::targets(db, config)?;
    let (sdk, settings) = aws::create(
        options.endpoint.as_deref(),
        &options.prefix,
        options.max_receives,
    )
    .await?;
    aws::write_settings(db, &settings, options.endpoint.as_deref())?;
    let backend = AwsBackend::with_config(&sdk, settings.clone(), RequestCounter::new());
    let backend = Arc::new(if options.lambda {
        backend
    } else {
        let lookup = move |function: &str| targets.resolve_handler(function);
        let invoker = LocalInvoker::new(Arc::new(lookup), backend.queues_handle());
        backend.with_invoker(Arc::new(invoker))
    });
    for workflow in &workflows {
        let version = backend
            .put_workflow(&workflow.definition, SystemClock.now())
            .await?;
        println!("deployed workflow `{}` version {version}", workflow.name);
    }
    let coordinator = Arc::new(Coordinator::new(backend.clone(), Arc::new(SystemClock)));
    let (stop, stopped) = watch::channel(false);

    let mut tasks = Vec::new();
    let api = Arc::new(baton_api::Api::new(coordinator.clone()));
    let addr = SocketAddr::from(([127, 0, 0, 1], options.port));
    let mut api_stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = api_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = baton_api::serve(api, addr, shutdown).await {
            warn!(error = %e, "the API stopped");
        }
    }));

    let url = settings.coordinator_queue_url.clone();
    {
        let backend = backend.clone();
        let coordinator = coordinator.clone();
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            poll(&backend, url, stopped, |batch| {
                let coordinator = coordinator.clone();
                async move { process_coordinator_batch(&coordinator, batch).await }
            })
            .await
        }));
    }
    println!(
        "baton dev: API on http://{addr}, coordinator queue polled on {}, steps {}; Ctrl-C stops",
        options.endpoint.as_deref().unwrap_or("AWS"),
        if options.lambda {
            "invoked as Lambda functions"
        } else {
            "run in this process"
        }
    );
    app::shutdown_signal().await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(0)
}

/// Polls one queue like an event source mapping until `stopped` turns true.
async fn poll<F, Fut>(
    backend: &AwsBackend,
    url: String,
    mut stopped: watch::Receiver<bool>,
    process: F,
) where
    F: Fn(Vec<QueueMessage>) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let sqs = &backend.clients().sqs;
    while !*stopped.borrow() {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_S)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages().to_vec(),
            Err(e) => {
                warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receive failed");
                Vec::new()
            }
        };
        if messages.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        let batch: Vec<QueueMessage> = messages.iter().map(QueueMessage::from).collect();
        let failed = process(batch).await;
        for m in &messages {
            let id = m.message_id().unwrap_or_default();
            if failed.iter().any(|f| f == id) {
                continue;
            }
            if let Err(e) = sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
            {
                warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed; the message will be seen again");
            }
        }
        if !failed.is_empty() {
            info!(queue = %url, failed = failed.len(), "batch items left for redelivery");
        }
    }
}
