//! The `api` Lambda function: Baton's HTTP API behind API Gateway, on the AWS backend.
//!
//! Configuration is the AWS backend's environment (`BATON_TABLE`,
//! `BATON_COORDINATOR_QUEUE_URL`, ...), plus `BATON_API_BASE_PATH`, a prefix
//! removed from request paths (an HTTP API's named stage, such as `/prod`).

use std::sync::Arc;

use baton_api::{Api, ApiOptions};
use baton_aws::{AwsBackend, AwsSettings};
use baton_runtime::{Coordinator, SystemClock};
use lambda_http::{Error, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let settings = AwsSettings::from_env().unwrap_or_else(|e| {
        tracing::error!(error = %e, "invalid configuration");
        std::process::exit(1);
    });
    let backend = Arc::new(AwsBackend::from_env(settings).await);
    let coordinator = Arc::new(Coordinator::new(backend, Arc::new(SystemClock)));
    let options =
        ApiOptions::default().base_path(std::env::var("BATON_API_BASE_PATH").unwrap_or_default());
    let api = Arc::new(Api::with_options(coordinator, options));
    lambda_http::run(service_fn(move |request| {
        let api = api.clone();
        async move { baton_api::lambda::handle_lambda(&api, request).await }
    }))
    .await
}
