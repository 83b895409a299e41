//! Workflows: agents chained into a DAG by validated handoffs, checked before they run, scheduled under one budget.

pub mod admission;
pub mod breaker;
pub mod clock;
pub mod condition;
pub mod definition;
pub mod durable;
pub mod events;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod param_files;
pub mod paths;
pub mod plan;
mod prior_delegates;
pub mod reference;
pub mod report;
pub mod run;
pub mod scope;
pub mod shape;
pub mod source;
pub mod step_state;
pub mod units;
pub mod validate;

// The type edges moved into validation; the scheduler names `json_type` here.
pub use validate::edges;
