//! Baton's core: the workflow definition model, its validation, and the pure
//! engine that moves one execution forward.
//!
//! Nothing here performs I/O or reads a clock. The engine is a reducer:
//! `(execution, event, now) -> (execution', commands, next wake-up)`; shells
//! (the embedded SQLite runtime, the AWS coordinator) persist the state,
//! carry out the commands and feed back what happened as events.

pub mod definition;
pub mod duration;
pub mod engine;
pub mod expr;
pub mod fields;
pub mod graph;
pub mod idempotency;
pub mod limits;
pub mod lint;
pub mod retry;
pub mod schedule;
pub mod schema;
pub mod trigger;
pub mod validate;
pub mod workflow;

pub use definition::WorkflowDefinition;
pub use engine::{
    Command, ErrorInfo, Event, EventDetail, Execution, ExecutionStatus, LifecycleEvent,
    LifecycleKind, Outcome, TaskKind, TaskRef, TimerId, Transition,
};
pub use limits::LimitError;
pub use validate::{Problem, ValidationErrors};
pub use workflow::Workflow;

/// Milliseconds since the Unix epoch. The shell supplies it; the core never reads a clock.
pub type Timestamp = u64;
