//! The embedded backend passes the backend contract.

use baton_embedded::{SqliteBackend, SqliteOptions};
use baton_runtime::contract::{ContractConfig, run_all, run_task_queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicU32::new(0);
    let config = ContractConfig { max_receives: 3 };
    let make = || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = dir.path().join(format!("contract-{n}.db"));
        async move {
            SqliteBackend::open(
                &path,
                SqliteOptions {
                    max_receives: 3,
                    visibility_ms: 0,
                    ..SqliteOptions::default()
                },
            )
            .unwrap()
        }
    };
    run_all(make).await;
    run_task_queue(&config, make).await;
}
