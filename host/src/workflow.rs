//! Workflows: agents chained into a DAG by validated handoffs, checked before they run, scheduled under one budget.

pub mod condition;
pub mod definition;
pub mod reference;
pub mod source;
pub mod units;
