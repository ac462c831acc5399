//! The coordinator Lambda, fed by the coordinator queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_lambda::coordinator::run().await
}
