//! A step's delegation: whom its agent (and their callees) may call through the host, and its limits, counted across the step's attempts and its whole tree of delegated calls; each completed call journaled, and reused when a resumed step makes it again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use corral_runtime::delegate::{CallExtras, Callee, Delegates, Reused};
use corral_runtime::digest::{canonical_json, digest};
use corral_runtime::{Budget, CallOutcome, HandoffPacket, Runtime};

use super::options::PriorDelegate;
use crate::events::{Event, EventSink};
use crate::journal::Journal;
use crate::model::Workflow;

/// Answers of an earlier session by (component digest, input digest);
/// each answers one call.
type Answers = HashMap<(String, String), VecDeque<Reused>>;

/// Where a step's delegated calls are reported.
pub(super) struct Report {
    pub(super) journal: Option<Arc<Journal>>,
    pub(super) events: EventSink,
}

/// The `delegates` of one step.
pub(super) struct StepDelegates {
    rt: Arc<Runtime>,
    w: Arc<Workflow>,
    /// The step's position in `w.steps`.
    step: usize,
    run_id: String,
    /// Delegated calls made so far.
    made: AtomicU32,
    report: Report,
    /// What an earlier session's calls answered, to give again.
    earlier: Mutex<Answers>,
}

impl StepDelegates {
    pub(super) fn new(
        rt: Arc<Runtime>,
        w: Arc<Workflow>,
        step: usize,
        run_id: String,
        report: Report,
        earlier: Vec<PriorDelegate>,
    ) -> Self {
        let mut answers = Answers::new();
        for p in earlier {
            answers
                .entry((p.component, p.input))
                .or_default()
                .push_back(Reused {
                    payload: Arc::unwrap_or_clone(p.output),
                    receipt: p.receipt,
                });
        }
        Self {
            rt,
            w,
            step,
            run_id,
            made: AtomicU32::new(0),
            report,
            earlier: Mutex::new(answers),
        }
    }

    fn emit(&self, e: Event) {
        if let Some(j) = &self.report.journal {
            j.record(&e);
        }
        (self.report.events)(&e);
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
            name: name.to_owned(),
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

    fn reuse(&self, callee: &Callee, packet: &HandoffPacket) -> Option<Reused> {
        let mut earlier = self.earlier.lock().unwrap();
        if earlier.is_empty() {
            return None;
        }
        let key = (callee.agent.digest().to_owned(), input_digest(packet));
        earlier.get_mut(&key)?.pop_front()
    }

    async fn call(
        &self,
        callee: &Callee,
        packet: &HandoffPacket,
        budget: &Budget,
        extras: CallExtras,
    ) -> CallOutcome {
        let depth = extras.delegation.as_ref().map_or(1, |d| d.depth);
        let out = self
            .rt
            .call_with(&callee.agent, packet, budget, &callee.grants, extras)
            .await;
        if let Ok(answer) = &out.result {
            self.emit(Event::DelegateFinished {
                step: self.w.steps[self.step].id.clone(),
                agent: callee.name.clone(),
                depth,
                component: callee.agent.digest().to_owned(),
                input: input_digest(packet),
                output: Arc::new(answer.payload.clone()),
                receipt: out.receipt.clone(),
            });
        }
        out
    }
}

/// What a delegated call's answer is keyed by, besides its component.
fn input_digest(packet: &HandoffPacket) -> String {
    digest(&canonical_json(&packet.payload))
}
