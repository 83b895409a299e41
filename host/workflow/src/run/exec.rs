//! What every step task shares, and how a step's input is resolved and its kind of work chosen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::breaker::{Breaker, Transition};
use crate::events::{Event, EventSink};
use crate::journal::Journal;
use crate::ledger::FuelLedger;
use crate::model::{Step, Workflow};
use crate::reference::{Reference, Source, Template};
use crate::report::StepStatus;
use corral_runtime::Runtime;

use super::failure::Failure;
use super::fuel::FuelPool;
use super::stats::Stats;

/// What every step task shares.
pub(super) struct Exec {
    pub(super) rt: Arc<Runtime>,
    pub(super) w: Arc<Workflow>,
    pub(super) run_id: String,
    pub(super) params: Value,
    pub(super) events: EventSink,
    pub(super) cancel: CancellationToken,
    pub(super) global: Semaphore,
    pub(super) fuel: Mutex<FuelPool>,
    /// The run's model tokens: every model request reserves from it.
    pub(super) tokens: Arc<dyn corral_runtime::model::TokenPool>,
    /// Token budgets around the run (a tenant's window).
    pub(super) outer_tokens: Vec<Arc<dyn corral_runtime::model::TokenPool>>,
    /// The token budgets of the steps that set `tokens`, by step id: every
    /// call of the step reserves from its step's as well.
    pub(super) step_tokens: HashMap<String, Arc<dyn corral_runtime::model::TokenPool>>,
    /// The run's artifacts, when it is durable (they live in its store).
    pub(super) artifacts: Option<Arc<dyn corral_runtime::artifact::ArtifactStore>>,
    /// The delegation of the steps that set `delegates`, by step id.
    pub(super) delegates: HashMap<String, Arc<dyn corral_runtime::delegate::Delegates>>,
    pub(super) breakers: BTreeMap<String, Breaker>,
    pub(super) rng: Mutex<fastrand::Rng>,
    pub(super) journal: Option<Arc<Journal>>,
    /// Who step-cache entries are shared with (see [`RunOptions::cache_scope`](super::RunOptions::cache_scope)).
    pub(super) cache_scope: String,
    pub(super) ledger: Option<Arc<dyn FuelLedger>>,
    pub(super) admission: Option<Arc<dyn Admission>>,
}

/// Outputs of finished dependencies, as one step sees them.
pub(super) type Scope = HashMap<String, (StepStatus, Option<Arc<Value>>)>;

/// A step task's result.
pub(super) struct StepDone {
    pub(super) index: usize,
    pub(super) outcome: Result<Value, Failure>,
    pub(super) stats: Stats,
}

impl Exec {
    /// Journals the event (when the run is durable) and hands it to the sink.
    pub(super) fn emit(&self, e: Event) {
        if let Some(j) = &self.journal {
            j.record(&e);
        }
        (self.events)(&e);
    }

    pub(super) fn announce(&self, agent: &str, t: Transition) {
        if let Some((from, to)) = t {
            self.emit(Event::Breaker {
                agent: agent.into(),
                from: from.name().into(),
                to: to.name().into(),
            });
        }
    }

    pub(super) fn resolve(
        &self,
        step: &Step,
        scope: &Scope,
        t: &Template,
        item: Option<&Value>,
        output: Option<&Value>,
    ) -> Result<Value, Failure> {
        t.resolve(&|r: &Reference| lookup(&self.params, scope, r, item, output))
            .map_err(|e| Failure::permanent("input", format!("step `{}`: {e}", step.id)))
    }

    /// Runs one step; `base` is what earlier sessions of the run already spent on it.
    pub(super) async fn run_step(
        self: Arc<Self>,
        index: usize,
        scope: Scope,
        base: Stats,
    ) -> StepDone {
        let step = &self.w.steps[index];
        let mut stats = base;
        let outcome = if let Some(fe) = &step.for_each {
            self.clone().for_each(index, fe, &scope, &mut stats).await
        } else if step.repeat.is_some() {
            self.repeat(step, &scope, &mut stats).await
        } else {
            match self.resolve(step, &scope, &step.input, None, None) {
                Ok(input) => {
                    self.call_with_fallback(step, input, None, None, &mut stats)
                        .await
                }
                Err(f) => Err(f),
            }
        };
        StepDone {
            index,
            outcome,
            stats,
        }
    }
}

/// The value `r` names, as `scope`, the params, the item and the iteration's output give it.
pub(super) fn lookup(
    params: &Value,
    scope: &Scope,
    r: &Reference,
    item: Option<&Value>,
    output: Option<&Value>,
) -> Result<Value, String> {
    let (root, what) = match &r.source {
        Source::Param(name) => (
            params.get(name).unwrap_or(&Value::Null),
            format!("param `{name}`"),
        ),
        Source::Step(id) => match scope.get(id) {
            Some((_, Some(v))) => (v.as_ref(), format!("step `{id}`'s output")),
            // A degraded, skipped or not-yet-finished dependency reads as null.
            _ => return Ok(Value::Null),
        },
        Source::Item => (item.unwrap_or(&Value::Null), "the item".to_owned()),
        Source::Output => (
            output.unwrap_or(&Value::Null),
            "the iteration's output".to_owned(),
        ),
    };
    r.follow(root)
        .cloned()
        .ok_or_else(|| format!("`{}`: {what} has nothing at that path", r.text))
}
