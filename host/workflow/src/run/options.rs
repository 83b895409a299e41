//! How a run is asked for: options, the state earlier sessions left, and param values.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use corral_store::StepRecord;

use crate::admission::Admission;
use crate::events::EventSink;
use crate::journal::Journal;
use crate::ledger::FuelLedger;
use crate::model::Workflow;
use crate::validate::param_value;

/// How to run a workflow.
pub struct RunOptions {
    pub run_id: String,
    /// Param values, already checked by [`resolve_params`].
    pub params: Value,
    pub events: EventSink,
    /// Cancelling stops scheduling and drops running calls.
    pub cancel: CancellationToken,
    /// Seed of the retry jitter, for reproducible schedules.
    pub seed: u64,
    /// Where the run is journaled; `None` runs in memory only.
    pub journal: Option<Arc<Journal>>,
    /// What earlier sessions of this run committed.
    pub resume: Option<Resume>,
    /// Keep running while approval steps wait, polling the store for answers
    /// (and their deadlines), instead of stopping with status `waiting`.
    pub wait_for_approvals: bool,
    /// Run the compensations of completed steps when the run is cancelled.
    pub compensate_on_cancel: bool,
    /// Part of every step-cache key: entries are shared only within one
    /// scope. `local` for the command line; a service sets one per tenant.
    pub cache_scope: String,
    /// An outer fuel budget every call also reserves from (a tenant's).
    pub ledger: Option<Arc<dyn FuelLedger>>,
    /// Outer token budgets every model request also reserves from (a
    /// tenant's window), besides the call's and the run's.
    pub token_pools: Vec<Arc<dyn corral_runtime::model::TokenPool>>,
    /// The most bytes the tenant's runs' artifacts may take together
    /// (unlimited for the command line).
    pub artifact_tenant_bytes: u64,
    /// Call slots shared with other runs (a server's fair share).
    pub admission: Option<Arc<dyn Admission>>,
}

impl RunOptions {
    /// An in-memory run with no events.
    pub fn new(run_id: impl Into<String>, params: Value) -> Self {
        Self {
            run_id: run_id.into(),
            params,
            events: crate::events::discard(),
            cancel: CancellationToken::new(),
            seed: 0,
            journal: None,
            resume: None,
            wait_for_approvals: false,
            compensate_on_cancel: false,
            cache_scope: "local".into(),
            ledger: None,
            token_pools: Vec::new(),
            artifact_tenant_bytes: u64::MAX,
            admission: None,
        }
    }
}

/// What earlier sessions of a run left in the store.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// This session's number: 2 for the first resume.
    pub session: u32,
    /// Stored step state by step id.
    pub steps: HashMap<String, Prior>,
    /// Steps to run again even if what they read did not change (`corral retry`).
    pub force: BTreeSet<String>,
    /// Components whose digest changed since the run started (allowed explicitly).
    pub changed_components: Vec<String>,
    /// Params given new values for this session.
    pub changed_params: Vec<String>,
    /// Fuel earlier sessions charged to the workflow's pool (see
    /// [`RunRecord::fuel_charged`](corral_store::RunRecord::fuel_charged)):
    /// this session gets only what is left of the budget.
    pub fuel_charged: u64,
    /// The delegated calls that completed in the steps the last session
    /// left running, by step id: the steps reuse them as they run again.
    pub delegated: HashMap<String, Vec<PriorDelegate>>,
}

/// A delegated call an earlier session completed, for its step to reuse
/// when the step runs again.
#[derive(Debug, Clone)]
pub struct PriorDelegate {
    /// The callee's component digest.
    pub component: String,
    /// The digest of the input payload's canonical JSON.
    pub input: String,
    pub output: Arc<Value>,
    pub receipt: corral_runtime::Receipt,
}

/// One step as an earlier session left it.
#[derive(Debug, Clone)]
pub struct Prior {
    pub record: StepRecord,
    pub output: Option<Arc<Value>>,
}

/// Checks `--param name=value` pairs against the declared params and fills defaults.
pub fn resolve_params(w: &Workflow, given: &[(String, String)]) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    let mut values = Map::new();
    for (name, raw) in given {
        match w.params.get(name) {
            None => {
                let known: Vec<&str> = w.params.keys().map(String::as_str).collect();
                errors.push(format!(
                    "unknown param `{name}`; the workflow declares: {}",
                    if known.is_empty() {
                        "(none)".into()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            Some(p) => match param_value(name, p.ty, raw) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    for (name, p) in &w.params {
        if values.contains_key(name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                values.insert(name.clone(), d.clone());
            }
            None => errors.push(format!(
                "param `{name}` ({}) is required: pass `--param {name}={}`",
                p.ty.name(),
                if p.ty == crate::definition::ParamType::Artifact {
                    "FILE"
                } else {
                    "<value>"
                }
            )),
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(values))
    } else {
        Err(errors)
    }
}
