//! The end of a session: compensation when the run failed, then the report and its summary.

use std::sync::Arc;

use serde_json::Value;

use crate::events::Event;
use crate::report::{Counts, FuelUse, RunReport, RunStatus, StepReport, StepStatus, TokenUse};
use corral_store::StepState;

use super::exec::{Scope, lookup};
use super::scheduler::Scheduler;

impl Scheduler {
    /// Compensates if the run failed (or was cancelled with compensation),
    /// records the run's end and builds its report.
    pub(super) async fn finish(self) -> RunReport {
        // Only the shared executor is held across the await: the scheduler's
        // own state (its set of step futures) is not `Sync`, and a run is
        // driven on a spawned task by the server.
        let compensations = match self.compensations_needed() {
            Some(list) => {
                let exec = self.exec.clone();
                exec.compensate(&list).await
            }
            None => Vec::new(),
        };
        let Scheduler {
            exec,
            w,
            board,
            halt,
            started,
            ..
        } = self;
        let counts = count(&board.reports);
        let waiting: Vec<String> = board
            .waiting
            .keys()
            .map(|&i| w.steps[i].id.clone())
            .collect();
        let (status, error) = match halt {
            Some((s, e)) => (s, Some(e)),
            None if !waiting.is_empty() => (
                RunStatus::Waiting,
                Some(format!(
                    "waiting for a human to answer: {}; use `corral approve {} <step> --input <json>` or `corral reject`",
                    waiting.join(", "),
                    exec.run_id
                )),
            ),
            None if counts.degraded > 0 => (RunStatus::Degraded, None),
            None => (RunStatus::Completed, None),
        };
        let (used, unsettled) = exec.fuel.lock().unwrap().totals();
        exec.emit(Event::RunFinished {
            status,
            fuel_used: used,
            error: error.clone(),
        });
        let scope: Scope = w
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), (board.status[i], board.outputs[i].clone())))
            .collect();
        let outputs = Value::Object(
            w.outputs
                .iter()
                .map(|(name, t)| {
                    let v = t
                        .resolve(&|r| lookup(&exec.params, &scope, r, None, None))
                        .unwrap_or(Value::Null);
                    (name.clone(), v)
                })
                .collect(),
        );
        let tokens_used = board.reports.iter().map(|s| s.tokens_used).sum();
        let mut report = RunReport {
            run_id: exec.run_id.clone(),
            workflow: w.name.clone(),
            status,
            steps: board.reports,
            counts,
            fuel: FuelUse {
                used,
                budget: w.fuel_budget,
                unsettled,
            },
            tokens: TokenUse {
                used: tokens_used,
                budget: w.token_budget,
            },
            outputs,
            breakers: exec.breakers.iter().map(|(n, b)| b.report(n)).collect(),
            compensations,
            waiting,
            wall_time_us: started.elapsed().as_micros() as u64,
            error,
            summary: String::new(),
        };
        report.summarize();
        report
    }

    /// Runs the compensations of completed steps, newest first, when the
    /// run failed, ran out of fuel, or was cancelled with compensation.
    fn compensations_needed(&self) -> Option<Vec<(u64, usize, Arc<Value>)>> {
        let exec = &self.exec;
        // A run whose journal failed (or whose lease another process took)
        // must not undo steps the store may still show as done.
        let journal_ok = exec.journal.as_ref().is_none_or(|j| j.result().is_ok());
        let wanted = match &self.halt {
            Some((RunStatus::Failed | RunStatus::FuelExhausted, _)) => true,
            Some((RunStatus::Cancelled, _)) => {
                self.compensate_on_cancel
                    || exec
                        .journal
                        .as_ref()
                        .is_some_and(|j| j.compensate_requested())
            }
            _ => false,
        };
        if !(journal_ok && wanted) {
            return None;
        }
        let mut compensable = self.compensable();
        compensable.sort_by_key(|c| std::cmp::Reverse(c.0));
        Some(compensable)
    }

    /// Completed steps with a compensation: completion order, index, output.
    /// Steps an earlier session completed and this one did not reach count too.
    fn compensable(&self) -> Vec<(u64, usize, Arc<Value>)> {
        let board = &self.board;
        let mut out = Vec::new();
        for (i, s) in self.w.steps.iter().enumerate() {
            if s.compensate.is_none() {
                continue;
            }
            if board.status[i] == StepStatus::Completed
                && let (Some(o), Some(v)) = (board.completed_order(i), &board.outputs[i])
            {
                out.push((o, i, v.clone()));
            } else if let Some(p) = &self.prior[i]
                && p.record.status == StepState::Completed
                && let (Some(o), Some(v)) = (p.record.completed_order, &p.output)
            {
                out.push((o, i, v.clone()));
            }
        }
        out
    }
}

fn count(reports: &[StepReport]) -> Counts {
    let mut counts = Counts {
        total: reports.len(),
        ..Counts::default()
    };
    for r in reports {
        match r.status {
            StepStatus::Completed => counts.completed += 1,
            StepStatus::Failed => counts.failed += 1,
            StepStatus::Degraded => counts.degraded += 1,
            StepStatus::Skipped => counts.skipped += 1,
            _ => {}
        }
        if r.retries > 0 {
            counts.retried += 1;
        }
    }
    counts
}
