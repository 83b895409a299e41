//! Compensation: undoing completed steps in reverse completion order.

use std::sync::Arc;

use serde_json::Value;

use crate::events::Event;
use crate::report::CompensationReport;
use corral_runtime::HandoffPacket;

use super::exec::Exec;

impl Exec {
    /// Runs compensations (already in reverse completion order); each gets the step's output.
    pub(super) async fn compensate(
        &self,
        steps: &[(u64, usize, Arc<Value>)],
    ) -> Vec<CompensationReport> {
        let mut out = Vec::new();
        for (_, i, output) in steps {
            let step = &self.w.steps[*i];
            let agent = step.compensate.as_ref().expect("only compensable steps");
            let wa = &self.w.agents[agent];
            self.emit(Event::CompensationStarted {
                step: step.id.clone(),
                agent: agent.clone(),
            });
            let packet = HandoffPacket::new(
                self.run_id.clone(),
                format!("{}.compensate", step.id),
                (**output).clone(),
            );
            // Compensations have their agent's own budget, outside the
            // workflow's pool: a run that failed for fuel must still undo.
            // They read the run's artifacts like any call: an output that
            // names one hands it to its compensation.
            let extras = corral_runtime::delegate::CallExtras {
                artifacts: self.artifacts.clone(),
                ..Default::default()
            };
            let call = self
                .rt
                .call_with(&wa.agent, &packet, &wa.budget, &wa.grants, extras)
                .await;
            let (outcome, error) = match &call.result {
                Ok(_) => ("ok".to_owned(), None),
                Err(e) => (
                    e.kind_name().to_owned(),
                    Some(format!("compensation of step `{}` failed: {e}", step.id)),
                ),
            };
            if let Some(e) = &error {
                tracing::error!("{e}");
            }
            self.emit(Event::CompensationFinished {
                step: step.id.clone(),
                agent: agent.clone(),
                outcome: outcome.clone(),
                error: error.clone(),
                receipt: call.receipt.clone(),
            });
            out.push(CompensationReport {
                step: step.id.clone(),
                agent: agent.clone(),
                outcome,
                error,
                fuel_used: call.receipt.fuel_used,
            });
        }
        out
    }
}
