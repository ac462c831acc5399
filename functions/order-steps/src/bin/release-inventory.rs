//! The `release-inventory` step Lambda, fed by its step queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_lambda::step::run_example("release-inventory").await
}
