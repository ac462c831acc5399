//! Baton's embedded backend: executions, tasks, timers, events and dead
//! letters in one SQLite file, and the worker loop that drives them.
//!
//! - [`store`]: [`SqliteBackend`], the backend ports on SQLite (WAL, one
//!   transaction per transition, tasks leased like SQS messages);
//! - `checkpoints`: loads from the newest snapshot and the history after
//!   it, with the states this process knows kept in memory;
//! - `group`: the single writer that commits the transitions waiting at the
//!   same moment in one transaction (one disk sync for many steps);
//! - [`local`]: tasks a worker leases to itself in the transaction that
//!   creates them, so the next step starts without a poll;
//! - [`worker`]: fires due timers, leases tasks, runs them on their targets
//!   and reports results through the coordinator, and delivers the outbox
//!   entries (commands for other executions) a dead process left behind;
//! - [`schedules`]: starts the executions of workflows' cron schedules as
//!   they come due, each instant once however many workers run.

mod checkpoints;
mod group;
pub mod local;
pub mod retention;
pub mod schedules;
pub mod store;
pub mod worker;

pub use store::{SqliteBackend, SqliteOptions};
pub use worker::{Worker, WorkerOptions};
