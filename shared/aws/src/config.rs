//! Configuration from environment variables, read once and validated.

use std::collections::BTreeMap;

use baton_core::EventDetail;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Names of the AWS resources Baton uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `BATON_TABLE`: the DynamoDB table.
    pub table: String,
    /// `BATON_COORDINATOR_QUEUE_URL`.
    pub coordinator_queue_url: String,
    /// `BATON_COORDINATOR_QUEUE_ARN`: target of one-time schedules (timers beyond 15 minutes).
    pub coordinator_queue_arn: Option<String>,
    /// `BATON_STEP_FUNCTION_PREFIX`: only Lambda functions whose names start
    /// with it may be steps (the stack's IAM grants invoke on that prefix).
    /// Unset: any function (an emulator).
    pub step_function_prefix: Option<String>,
    /// `BATON_EVENT_BUS` (default `default`).
    pub event_bus: String,
    /// `BATON_SCHEDULE_GROUP` (default `default`).
    pub schedule_group: String,
    /// `BATON_SCHEDULER_ROLE_ARN`: the role EventBridge Scheduler assumes to send to the coordinator queue.
    pub scheduler_role_arn: Option<String>,
    /// `BATON_PAYLOAD_LIMIT` in bytes: the largest input, output or signal
    /// payload (default 10 MiB with a payload bucket, 256 KiB without).
    pub payload_limit: usize,
    /// `BATON_PAYLOAD_BUCKET`: where payloads larger than an item should
    /// hold are kept (see [`crate::payloads`]). Unset: every payload stays
    /// in DynamoDB, and is limited by its item size.
    pub payload_bucket: Option<String>,
    /// `BATON_EVENTS`: which lifecycle events go to EventBridge (`all`,
    /// `outcomes`, `executions` or `none`; default `executions`: each
    /// execution's start and end and every failure, since every event is
    /// billed and a step's detail is in the history and the logs anyway).
    pub events: EventDetail,
}

pub const DEFAULT_PAYLOAD_LIMIT: usize = 256 * 1024;

/// The payload limit with a payload bucket: beyond Step Functions' 256 KiB
/// and Temporal's 2 MB.
pub const BUCKET_PAYLOAD_LIMIT: usize = 10 * 1024 * 1024;

/// Lifecycle events published unless `BATON_EVENTS` says otherwise.
pub const DEFAULT_EVENTS: EventDetail = EventDetail::Executions;

impl AwsSettings {
    pub fn from_env() -> Result<AwsSettings, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        AwsSettings::from_map(&vars)
    }

    /// Reads settings from a map (the environment, or a test's).
    pub fn from_map(vars: &BTreeMap<String, String>) -> Result<AwsSettings, ConfigError> {
        let get = |name: &str| vars.get(name).filter(|v| !v.trim().is_empty()).cloned();
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let payload_bucket = get("BATON_PAYLOAD_BUCKET");
        let payload_limit = match get("BATON_PAYLOAD_LIMIT") {
            None if payload_bucket.is_some() => BUCKET_PAYLOAD_LIMIT,
            None => DEFAULT_PAYLOAD_LIMIT,
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                name: "BATON_PAYLOAD_LIMIT",
                message: format!("`{v}` is not a number of bytes"),
            })?,
        };
        let events = match get("BATON_EVENTS") {
            None => DEFAULT_EVENTS,
            Some(v) => EventDetail::parse(&v).ok_or_else(|| ConfigError::Invalid {
                name: "BATON_EVENTS",
                message: format!("`{v}` is not one of {}", EventDetail::NAMES.join(", ")),
            })?,
        };
        let coordinator_queue_url = required("BATON_COORDINATOR_QUEUE_URL")?;
        if !coordinator_queue_url.starts_with("http") {
            return Err(ConfigError::Invalid {
                name: "BATON_COORDINATOR_QUEUE_URL",
                message: format!("`{coordinator_queue_url}` is not a queue URL"),
            });
        }
        Ok(AwsSettings {
            table: required("BATON_TABLE")?,
            coordinator_queue_url,
            coordinator_queue_arn: get("BATON_COORDINATOR_QUEUE_ARN"),
            step_function_prefix: get("BATON_STEP_FUNCTION_PREFIX"),
            event_bus: get("BATON_EVENT_BUS").unwrap_or_else(|| "default".into()),
            schedule_group: get("BATON_SCHEDULE_GROUP").unwrap_or_else(|| "default".into()),
            scheduler_role_arn: get("BATON_SCHEDULER_ROLE_ARN"),
            payload_limit,
            payload_bucket,
            events,
        })
    }

    /// The environment variables that reproduce these settings (for child processes and templates).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("BATON_TABLE".to_string(), self.table.clone()),
            (
                "BATON_COORDINATOR_QUEUE_URL".to_string(),
                self.coordinator_queue_url.clone(),
            ),
            ("BATON_EVENT_BUS".to_string(), self.event_bus.clone()),
            (
                "BATON_SCHEDULE_GROUP".to_string(),
                self.schedule_group.clone(),
            ),
            (
                "BATON_PAYLOAD_LIMIT".to_string(),
                self.payload_limit.to_string(),
            ),
            ("BATON_EVENTS".to_string(), self.events.as_str().to_string()),
        ];
        if let Some(arn) = &self.coordinator_queue_arn {
            env.push(("BATON_COORDINATOR_QUEUE_ARN".to_string(), arn.clone()));
        }
        if let Some(prefix) = &self.step_function_prefix {
            env.push(("BATON_STEP_FUNCTION_PREFIX".to_string(), prefix.clone()));
        }
        if let Some(arn) = &self.scheduler_role_arn {
            env.push(("BATON_SCHEDULER_ROLE_ARN".to_string(), arn.clone()));
        }
        if let Some(bucket) = &self.payload_bucket {
            env.push(("BATON_PAYLOAD_BUCKET".to_string(), bucket.clone()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_the_missing_variable() {
        let err = AwsSettings::from_map(&map(&[("BATON_TABLE", "t")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("BATON_COORDINATOR_QUEUE_URL"));
        assert!(err.to_string().contains("BATON_COORDINATOR_QUEUE_URL"));
    }

    #[test]
    fn defaults_and_validation() {
        let base = [
            ("BATON_TABLE", "t"),
            ("BATON_COORDINATOR_QUEUE_URL", "http://q/1/c"),
        ];
        let s = AwsSettings::from_map(&map(&base)).unwrap();
        assert_eq!(s.step_function_prefix, None);
        assert_eq!(s.payload_limit, DEFAULT_PAYLOAD_LIMIT);
        let mut bad = base.to_vec();
        bad.push(("BATON_PAYLOAD_LIMIT", "lots"));
        assert!(matches!(
            AwsSettings::from_map(&map(&bad)),
            Err(ConfigError::Invalid {
                name: "BATON_PAYLOAD_LIMIT",
                ..
            })
        ));
        assert_eq!(s.events, EventDetail::Executions);
        let mut quiet = base.to_vec();
        quiet.push(("BATON_EVENTS", "all"));
        quiet.push(("BATON_STEP_FUNCTION_PREFIX", "orders-"));
        let quiet = AwsSettings::from_map(&map(&quiet)).unwrap();
        assert_eq!(quiet.events, EventDetail::All);
        let mut typo = base.to_vec();
        typo.push(("BATON_EVENTS", "some"));
        let err = AwsSettings::from_map(&map(&typo)).unwrap_err();
        assert!(
            err.to_string()
                .contains("`some` is not one of all, outcomes")
        );
        for s in [s, quiet] {
            let round = AwsSettings::from_map(&s.to_env().into_iter().collect()).unwrap();
            assert_eq!(round, s);
        }
    }
}
