//! [`Api`]: the coordinator the routes act through, and the options that
//! shape requests (body size limit, base path, how execution ids are made).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use baton_runtime::Coordinator;
use baton_runtime::ports::Backend;

/// Default largest request body: 256 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Makes ids for executions started without an `id` or `Idempotency-Key`.
///
/// Any `Fn() -> String + Send + Sync` is one, so tests can fix the ids.
/// An id must pass [`baton_core::limits::check_execution_id`]: 1 to 128
/// characters of ASCII letters, digits, `-`, `_`, `.` or `:`, not `.` or `..`.
pub trait IdGenerator: Send + Sync {
    fn next_id(&self) -> String;
}

impl<F: Fn() -> String + Send + Sync> IdGenerator for F {
    fn next_id(&self) -> String {
        self()
    }
}

/// Ids from the time, a random number drawn once per process, and a counter:
/// roughly ordered by time, and unique across processes (Lambda instances)
/// without coordination.
pub struct TimeCounterIds {
    node: u32,
    counter: AtomicU64,
}

impl TimeCounterIds {
    pub fn new() -> TimeCounterIds {
        // `RandomState` is seeded from the operating system's randomness, which
        // spares a dependency for the one random number needed here.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        TimeCounterIds {
            node: hasher.finish() as u32,
            counter: AtomicU64::new(0),
        }
    }
}

impl Default for TimeCounterIds {
    fn default() -> Self {
        TimeCounterIds::new()
    }
}

impl IdGenerator for TimeCounterIds {
    fn next_id(&self) -> String {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{millis:011x}-{:08x}-{:04x}", self.node, n & 0xffff)
    }
}

/// How the API treats requests.
#[derive(Clone)]
pub struct ApiOptions {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit: usize,
    /// A prefix removed from every path before routing (an API Gateway stage
    /// such as `/prod`); `None` routes the path as it is.
    pub base_path: Option<String>,
    pub ids: Arc<dyn IdGenerator>,
}

impl ApiOptions {
    pub fn body_limit(mut self, bytes: usize) -> ApiOptions {
        self.body_limit = bytes;
        self
    }

    /// Sets the prefix stripped before routing; `""` or `"/"` means none.
    pub fn base_path(mut self, prefix: impl Into<String>) -> ApiOptions {
        let prefix = prefix.into();
        let trimmed = prefix.trim().trim_end_matches('/');
        self.base_path = if trimmed.is_empty() {
            None
        } else if trimmed.starts_with('/') {
            Some(trimmed.to_string())
        } else {
            Some(format!("/{trimmed}"))
        };
        self
    }

    pub fn ids(mut self, ids: impl IdGenerator + 'static) -> ApiOptions {
        self.ids = Arc::new(ids);
        self
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            body_limit: DEFAULT_BODY_LIMIT,
            base_path: None,
            ids: Arc::new(TimeCounterIds::new()),
        }
    }
}

impl fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiOptions")
            .field("body_limit", &self.body_limit)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// The HTTP API over one backend.
pub struct Api<B> {
    coordinator: Arc<Coordinator<B>>,
    options: ApiOptions,
}

impl<B: Backend> Api<B> {
    pub fn new(coordinator: Arc<Coordinator<B>>) -> Api<B> {
        Api::with_options(coordinator, ApiOptions::default())
    }

    pub fn with_options(coordinator: Arc<Coordinator<B>>, options: ApiOptions) -> Api<B> {
        Api {
            coordinator,
            options,
        }
    }

    pub fn coordinator(&self) -> &Arc<Coordinator<B>> {
        &self.coordinator
    }

    pub fn backend(&self) -> &Arc<B> {
        self.coordinator.backend()
    }

    pub fn options(&self) -> &ApiOptions {
        &self.options
    }
}

/// Whether `id` can name an execution: it appears in URL paths, queue
/// messages and storage keys, so it is kept short and free of separators.
/// The rule is [`baton_core::limits::check_execution_id`], which says why not.
pub fn valid_execution_id(id: &str) -> bool {
    baton_core::limits::check_execution_id(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let ids = TimeCounterIds::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert!(valid_execution_id(&a), "{a}");
    }

    #[test]
    fn base_path_is_normalised() {
        let o = ApiOptions::default().base_path("prod/");
        assert_eq!(o.base_path.as_deref(), Some("/prod"));
        assert_eq!(ApiOptions::default().base_path("/").base_path, None);
    }

    #[test]
    fn execution_ids() {
        assert!(valid_execution_id("order-1:retry_2.a"));
        assert!(!valid_execution_id(""));
        assert!(!valid_execution_id("a/b"));
        assert!(!valid_execution_id(&"x".repeat(129)));
        assert!(!valid_execution_id(".."));
        assert!(valid_execution_id(
            "reports-daily-report-2026-03-08T05:00:00Z"
        ));
    }
}
