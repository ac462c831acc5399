//! Retry policies: which failures are retried, how many times, and after what delay.

use serde::{Deserialize, Serialize};

use crate::definition::{Backoff, Jitter};
use crate::idempotency;

/// Upper bound on `max_attempts`; more than this is a definition error, not a policy.
pub const MAX_ATTEMPTS_CAP: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: Jitter,
    pub retry_on: Option<Vec<String>>,
    pub no_retry_on: Vec<String>,
}

impl RetryPolicy {
    /// The compensation default: exponential, 5 attempts, 1s doubling to at most 1m, full jitter.
    pub fn compensation_default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            delay_ms: 1_000,
            max_delay_ms: 60_000,
            jitter: Jitter::Full,
            retry_on: None,
            no_retry_on: Vec::new(),
        }
    }

    /// No retry: one attempt.
    pub fn once() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::compensation_default()
        }
    }

    /// Whether a failure of `attempt` (1-based) with this error may be tried again.
    pub fn should_retry(&self, attempt: u32, error_name: &str, retryable: bool) -> bool {
        if !retryable || attempt >= self.max_attempts {
            return false;
        }
        if self.no_retry_on.iter().any(|n| n == error_name) {
            return false;
        }
        match &self.retry_on {
            Some(names) => names.iter().any(|n| n == error_name),
            None => true,
        }
    }

    /// Delay before the attempt after `failed_attempt` (1-based). With full
    /// jitter the delay is drawn from `[0, capped]` by a hash of its inputs.
    pub fn delay_after(
        &self,
        failed_attempt: u32,
        execution_id: &str,
        step: &str,
        index: Option<u32>,
    ) -> u64 {
        let n = u64::from(failed_attempt.max(1));
        let raw = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(n),
            Backoff::Exponential => {
                let shift = (n - 1).min(62) as u32;
                self.delay_ms.saturating_mul(1u64 << shift)
            }
        };
        let capped = raw.min(self.max_delay_ms);
        match self.jitter {
            Jitter::None => capped,
            Jitter::Full => {
                let fraction =
                    idempotency::unit_fraction(execution_id, step, index, failed_attempt);
                (capped as f64 * fraction) as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            delay_ms: 200,
            max_delay_ms: 1_000,
            jitter,
            retry_on: None,
            no_retry_on: vec![],
        }
    }

    #[test]
    fn backoff_shapes_and_cap() {
        let delays = |b| {
            (1..=5)
                .map(|a| policy(b, Jitter::None).delay_after(a, "e", "s", None))
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(Backoff::Fixed), vec![200, 200, 200, 200, 200]);
        assert_eq!(delays(Backoff::Linear), vec![200, 400, 600, 800, 1000]);
        assert_eq!(
            delays(Backoff::Exponential),
            vec![200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn full_jitter_is_bounded_and_replayable() {
        let p = policy(Backoff::Exponential, Jitter::Full);
        for attempt in 1..=5 {
            let d = p.delay_after(attempt, "e", "s", None);
            let cap =
                policy(Backoff::Exponential, Jitter::None).delay_after(attempt, "e", "s", None);
            assert!(d <= cap);
            assert_eq!(d, p.delay_after(attempt, "e", "s", None));
        }
    }

    #[test]
    fn limits_and_error_filters() {
        let mut p = policy(Backoff::Fixed, Jitter::None);
        assert!(p.should_retry(4, "Boom", true));
        assert!(!p.should_retry(5, "Boom", true));
        assert!(!p.should_retry(1, "Boom", false));
        p.no_retry_on = vec!["CardDeclined".into()];
        assert!(!p.should_retry(1, "CardDeclined", true));
        p.retry_on = Some(vec!["Throttled".into()]);
        assert!(p.should_retry(1, "Throttled", true));
        assert!(!p.should_retry(1, "Boom", true));
    }
}
