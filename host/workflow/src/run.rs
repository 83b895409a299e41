//! Running a validated workflow: steps start as soon as their dependencies allow, under the concurrency caps and one fuel budget.
//!
//! The parts, in the order a step meets them: `scheduler` (readiness, the
//! loop), `reuse` (what earlier sessions committed), `approvals`, `exec`
//! (what step tasks share), `for_each` and `repeat`, `attempt` (breaker,
//! slot, fuel, retries, fallback), `step_cache`, `fuel`, then `board` (the
//! transitions a finished step applies), `compensate` and `finish` (the
//! report).

mod approvals;
mod artifacts;
mod attempt;
mod board;
mod compensate;
mod delegates;
mod exec;
mod failure;
mod finish;
mod for_each;
mod fuel;
mod options;
mod readiness;
mod repeat;
mod reuse;
mod scheduler;
mod stats;
mod step_cache;

use std::sync::Arc;

use corral_runtime::Runtime;

use super::model::Workflow;
use super::report::RunReport;

pub use failure::Failure;
pub use options::{Prior, PriorDelegate, Resume, RunOptions, resolve_params};

/// Runs `w` to the end (or until it fails, pauses, waits for a human, runs out of fuel or is cancelled).
pub async fn run(rt: Arc<Runtime>, w: Arc<Workflow>, opts: RunOptions) -> RunReport {
    let mut scheduler = scheduler::Scheduler::new(rt, w, opts);
    scheduler.drive().await;
    scheduler.finish().await
}
