//! The `process-payment` step Lambda, fed by its step queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_lambda::step::run_example("process-payment").await
}
