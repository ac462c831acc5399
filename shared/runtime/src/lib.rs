//! Baton's runtime: everything between the pure engine and a backend.
//!
//! - [`ports`]: the narrow traits a backend implements (store, task queue,
//!   timers, event sink, dead letters) and the records they exchange;
//! - [`coordinator`]: load, apply, commit with a version check, deliver;
//! - [`checkpoint`]: when a store writes a snapshot, and replay after it;
//! - [`children`]: what deploying a workflow that runs child workflows checks;
//! - [`step`]: the handler API step functions implement;
//! - [`targets`]: where a function runs (in-process, a local command, Lambda);
//! - [`triggers`]: the executions an event starts through workflows' triggers;
//! - [`contract`]: the test suite every backend must pass (feature `testkit`);
//! - [`faults`]: a backend wrapper that injects faults by plan (feature `testkit`).

pub mod checkpoint;
pub mod children;
pub mod clock;
#[cfg(feature = "testkit")]
pub mod contract;
pub mod coordinator;
#[cfg(feature = "testkit")]
pub mod faults;
mod mailbox;
pub mod ports;
pub mod step;
pub mod targets;
pub mod triggers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use coordinator::{Coordinator, CoordinatorError, StartOptions, Started};
