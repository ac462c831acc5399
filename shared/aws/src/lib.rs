//! Baton on AWS: the backend ports on DynamoDB, SQS, EventBridge and
//! EventBridge Scheduler, plus what the Lambda functions share.
//!
//! - [`config`]: settings from environment variables, validated once;
//! - [`store`]: executions, history and outbox, workflow versions, step
//!   results and compensation dead letters in one DynamoDB table;
//! - [`dispatch`]: step functions invoked asynchronously, their results
//!   back as Lambda destination records;
//! - [`queues`]: the coordinator queue, timers, lifecycle events;
//! - [`backend`]: [`AwsBackend`], all ports together, with DLQ access;
//! - [`messages`]: what travels on the coordinator queue;
//! - [`counter`]: an SDK interceptor counting requests per operation;
//! - [`errors`]: AWS errors sorted by what the caller must do;
//! - [`schedules`]: workflows' cron schedules as EventBridge Scheduler
//!   schedules, and the coordinator's side of the starts they send;
//! - [`rules`]: workflows' event triggers as EventBridge rules targeting the
//!   coordinator queue;
//! - [`bootstrap`]: creates the resources on an emulator;
//! - [`lambda_target`]: `lambda = "name"` step targets, invoked synchronously.
//!
//! Everything honours the standard `AWS_ENDPOINT_URL`, so the same code runs
//! against AWS, LocalStack and moto server.

pub mod backend;
pub mod bootstrap;
pub mod config;
pub mod coordinator_batch;
pub mod counter;
pub mod dispatch;
pub mod errors;
pub mod lambda_target;
pub mod messages;
pub mod payloads;
pub mod queues;
pub mod rules;
pub mod schedules;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testing;

pub use backend::AwsBackend;
pub use config::{AwsSettings, ConfigError};
pub use counter::RequestCounter;
pub use messages::CoordinatorMessage;
