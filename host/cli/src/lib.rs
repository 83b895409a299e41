//! corral: run AI agents as sandboxed WebAssembly components under hard budgets, with validated JSON handoffs.
//!
//! This crate is the `corral` command and a facade over the crates that do
//! the work, cut by role (dependencies point one way, cli → workflow →
//! runtime, with the store beside them):
//!
//! - [`corral_runtime`], re-exported at the root: the engine, compile cache,
//!   sandbox, budgets, grants, packets and receipts ([`Runtime::load`],
//!   [`Runtime::call`]);
//! - [`workflow`] ([`corral_workflow`]): definition, validation, plan,
//!   scheduler and journal of a DAG of agents;
//! - [`store`] ([`corral_store`]): the journal's `Store` trait and its SQLite
//!   backend.

pub use corral_runtime::*;
pub use corral_store as store;
pub use corral_workflow as workflow;
