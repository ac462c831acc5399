//! The AWS backend passes the backend contract against moto server.

use baton_aws::testing::fresh_backend;
use baton_runtime::contract::{ContractConfig, run_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_backend_passes_the_contract() {
    let config = ContractConfig { max_receives: 3 };
    run_all(&config, || fresh_backend("contract", &["contract-fn"], 3)).await;
}
