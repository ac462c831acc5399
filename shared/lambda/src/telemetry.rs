//! Logging for the functions: one JSON object per line, which CloudWatch Logs
//! Insights can query by field (`span.workflow.execution.id`, ...).

use tracing_subscriber::EnvFilter;

/// Variable holding the log filter; `RUST_LOG` is read when it is unset.
pub const LOG_ENV: &str = "BATON_LOG";

const DEFAULT_FILTER: &str = "info";

/// Installs the JSON subscriber with the filter from `BATON_LOG`, else
/// `RUST_LOG`, else `info`. Calling it again does nothing.
pub fn init_tracing() {
    let spec = [LOG_ENV, "RUST_LOG"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let (filter, invalid) = match EnvFilter::try_new(&spec) {
        Ok(filter) => (filter, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    let installed = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .try_init()
        .is_ok();
    if installed && let Some(e) = invalid {
        tracing::warn!(filter = %spec, error = %e, "invalid log filter; using `{DEFAULT_FILTER}`");
    }
}
