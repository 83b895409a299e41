//! A step's delegation: whom its agent (and their callees) may call through the host, and its limits, counted across the step's attempts and its whole tree of delegated calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use corral_runtime::delegate::{CallExtras, Callee, Delegates};
use corral_runtime::{Budget, CallOutcome, HandoffPacket, Runtime};

use crate::model::Workflow;

/// The `delegates` of one step.
pub(super) struct StepDelegates {
    rt: Arc<Runtime>,
    w: Arc<Workflow>,
    /// The step's position in `w.steps`.
    step: usize,
    run_id: String,
    /// Delegated calls made so far.
    made: AtomicU32,
}

impl StepDelegates {
    pub(super) fn new(rt: Arc<Runtime>, w: Arc<Workflow>, step: usize, run_id: String) -> Self {
        Self {
            rt,
            w,
            step,
            run_id,
            made: AtomicU32::new(0),
        }
    }

    fn field(&self, name: &str) -> String {
        format!("steps[{}].{name}", self.w.steps[self.step].index)
    }
}

#[async_trait::async_trait]
impl Delegates for StepDelegates {
    fn callee(&self, name: &str) -> Result<Callee, String> {
        let s = &self.w.steps[self.step];
        if !s.delegates.iter().any(|d| d == name) {
            return Err(format!(
                "agent `{name}` is not among step `{}`'s delegates ({}); add it to `{}`",
                s.id,
                s.delegates.join(", "),
                self.field("delegates")
            ));
        }
        let a = &self.w.agents[name];
        Ok(Callee {
            agent: a.agent.clone(),
            grants: a.grants.clone(),
            budget: a.budget.clone(),
        })
    }

    fn claim(&self) -> Result<(), String> {
        let max = self.w.steps[self.step].max_delegations;
        self.made
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "step `{}` has made its {max} delegated calls (`{}`)",
                    self.w.steps[self.step].id,
                    self.field("max_delegations")
                )
            })
    }

    fn max_depth(&self) -> (u32, String) {
        (
            self.w.steps[self.step].delegation_depth,
            self.field("delegation_depth"),
        )
    }

    fn packet(&self, payload: Value) -> HandoffPacket {
        HandoffPacket::new(&self.run_id, &self.w.steps[self.step].id, payload)
    }

    async fn call(
        &self,
        callee: &Callee,
        packet: &HandoffPacket,
        budget: &Budget,
        extras: CallExtras,
    ) -> CallOutcome {
        self.rt
            .call_with(&callee.agent, packet, budget, &callee.grants, extras)
            .await
    }
}
