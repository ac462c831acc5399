//! The AWS backend passes the backend contract against moto server.

use baton_aws::testing::fresh_recording_backend;
use baton_runtime::contract::run_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_backend_passes_the_contract() {
    run_all(|| async { fresh_recording_backend("contract", 3).await.0 }).await;
}
