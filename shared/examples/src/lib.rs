//! Example step handlers for the order saga (`workflows/order-saga.yaml`).
//!
//! The same handler code runs under the embedded worker and inside step
//! Lambdas. Modules:
//!
//! - [`ledger`]: the SQLite file that plays the outside services, recording
//!   every side effect and every call, so exactly-once effects can be checked.
//! - [`handlers`]: the saga's functions (`validate-order`, `process-payment`,
//!   ... and `noop`) and [`register_all`].
//! - [`failure`]: the failure switches (`"always"`, `{"first": N}`, `"crash"`,
//!   ...) that make a handler fail on purpose.

pub mod failure;
pub mod handlers;
pub mod ledger;

pub use failure::{FAIL_ENV, FailureSwitch};
pub use handlers::{FUNCTIONS, HandlerEnv, register_all, register_all_with};
pub use ledger::{Call, CallOutcome, Effect, LEDGER_ENV, Ledger, LedgerError, Recorded};
