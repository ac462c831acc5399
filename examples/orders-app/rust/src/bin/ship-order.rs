//! The `ship-order` step function.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_lambda::step::run(baton_runtime::step::handler_fn(
        orders_app_steps::ship_order,
    ))
    .await
}
