//! The scheduler's view of every step, and the transitions it applies when steps finish.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::ErrorClass;
use crate::workflow::definition::OnError;
use crate::workflow::events::Event;
use crate::workflow::model::{Step, Workflow};
use crate::workflow::report::{RunStatus, StepReport, StepStatus};

use super::exec::Exec;
use super::failure::{Failure, Special};
use super::options::Resume;
use super::stats::Stats;

/// The scheduler's view of every step.
pub(super) struct Board {
    pub(super) status: Vec<StepStatus>,
    pub(super) running: Vec<bool>,
    pub(super) outputs: Vec<Option<Arc<Value>>>,
    pub(super) reports: Vec<StepReport>,
    /// Completion order, for compensation in reverse.
    pub(super) order: Vec<Option<u64>>,
    pub(super) next_order: u64,
    /// Digest of what each started step read.
    pub(super) fingerprints: Vec<Option<String>>,
    /// Approval steps waiting: deadline in Unix milliseconds.
    pub(super) waiting: BTreeMap<usize, Option<i64>>,
}

impl Board {
    /// Every step pending; completion order continues after what earlier sessions completed.
    pub(super) fn new(w: &Workflow, resume: &Resume) -> Self {
        let n = w.steps.len();
        Self {
            status: vec![StepStatus::Pending; n],
            running: vec![false; n],
            outputs: vec![None; n],
            reports: w
                .steps
                .iter()
                .map(|s| StepReport {
                    id: s.id.clone(),
                    agent: s.agent.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    retries: 0,
                    fallback: None,
                    items: None,
                    iterations: None,
                    fuel_used: 0,
                    peak_memory_bytes: 0,
                    wall_time_us: 0,
                    error: None,
                    error_kind: None,
                    skip_reason: None,
                    cached: false,
                    reused: false,
                })
                .collect(),
            order: vec![None; n],
            next_order: resume
                .steps
                .values()
                .filter_map(|p| p.record.completed_order)
                .max()
                .map_or(0, |o| o + 1),
            fingerprints: vec![None; n],
            waiting: BTreeMap::new(),
        }
    }

    /// Marks the steps still running as cancelled (their tasks were dropped).
    pub(super) fn cancel_running(&mut self) {
        for i in 0..self.running.len() {
            if self.running[i] {
                self.running[i] = false;
                self.status[i] = StepStatus::Cancelled;
                let r = &mut self.reports[i];
                r.status = StepStatus::Cancelled;
                r.error = Some("the run was cancelled while this step ran".into());
                r.error_kind = Some("cancelled".into());
            }
        }
    }

    pub(super) fn complete(&mut self, exec: &Exec, i: usize, v: Arc<Value>, s: Stats) {
        let step = &exec.w.steps[i];
        self.status[i] = StepStatus::Completed;
        // Cached: every call this session was a cache hit (no new attempts).
        let cached = s.cache_hits > 0 && s.attempts == self.reports[i].attempts;
        self.record_stats(i, &s);
        let r = &mut self.reports[i];
        r.status = StepStatus::Completed;
        r.error = None;
        r.error_kind = None;
        r.cached = cached;
        self.outputs[i] = Some(v.clone());
        self.order[i] = Some(self.next_order);
        self.next_order += 1;
        exec.emit(Event::StepCompleted {
            step: step.id.clone(),
            output: v,
            fingerprint: self.fingerprints[i].clone().unwrap_or_default(),
            cached: r.cached,
            stats: s.public(),
        });
    }

    pub(super) fn record_stats(&mut self, i: usize, s: &Stats) {
        let r = &mut self.reports[i];
        (r.attempts, r.retries, r.fallback, r.items, r.iterations) = (
            s.attempts,
            s.retries,
            s.fallback.clone(),
            s.items,
            s.iterations,
        );
        (r.fuel_used, r.peak_memory_bytes, r.wall_time_us) = (s.fuel, s.peak, s.wall_us);
    }

    pub(super) fn stats_of(&self, i: usize) -> Stats {
        let r = &self.reports[i];
        Stats {
            attempts: r.attempts,
            retries: r.retries,
            fuel: r.fuel_used,
            peak: r.peak_memory_bytes,
            wall_us: r.wall_time_us,
            ..Stats::default()
        }
    }
}

/// Marks step `i` skipped, with the reason.
pub(super) fn skip(exec: &Exec, board: &mut Board, i: usize, reason: String) {
    board.status[i] = StepStatus::Skipped;
    board.reports[i].status = StepStatus::Skipped;
    board.reports[i].skip_reason = Some(reason.clone());
    exec.emit(Event::StepSkipped {
        step: exec.w.steps[i].id.clone(),
        reason,
    });
}

/// Applies a step's final failure; returns how the run halts, if it does.
pub(super) fn finish_failed(
    exec: &Exec,
    step: &Step,
    board: &mut Board,
    i: usize,
    f: &Failure,
    s: Stats,
) -> Option<(RunStatus, String)> {
    board.record_stats(i, &s);
    let r = &mut board.reports[i];
    let status = &mut board.status[i];
    r.error = Some(f.message.clone());
    r.error_kind = Some(f.kind.clone());
    let id = step.id.clone();
    let (error, kind, stats) = (f.message.clone(), f.kind.clone(), s.public());
    match f.special {
        Special::Cancelled => {
            *status = StepStatus::Cancelled;
            r.status = StepStatus::Cancelled;
            Some((RunStatus::Cancelled, "the run was cancelled".into()))
        }
        Special::WorkflowFuel => {
            *status = StepStatus::Failed;
            r.status = StepStatus::Failed;
            exec.emit(Event::StepFailed {
                step: id,
                error,
                kind,
                stats,
            });
            Some((RunStatus::FuelExhausted, f.message.clone()))
        }
        Special::None
            if f.class == ErrorClass::Degradable || step.on_error == OnError::Continue =>
        {
            *status = StepStatus::Degraded;
            r.status = StepStatus::Degraded;
            exec.emit(Event::StepDegraded {
                step: id,
                error,
                kind,
                fingerprint: board.fingerprints[i].clone().unwrap_or_default(),
                stats,
            });
            None
        }
        Special::None if step.on_error == OnError::Pause => {
            *status = StepStatus::Paused;
            r.status = StepStatus::Paused;
            exec.emit(Event::StepPaused {
                step: id.clone(),
                error,
                kind,
                stats,
            });
            // A human may answer with the output the step should have produced.
            let schema = exec
                .w
                .agents
                .get(&step.agent)
                .map(|a| a.agent.info().output_schema.source().clone())
                .unwrap_or(Value::Null);
            exec.emit(Event::ApprovalRequested {
                step: id.clone(),
                prompt: format!(
                    "step `{id}` failed: {}. Approve with the output it should have produced (it must match agent `{}`'s output schema), reject to fail the run, or `corral resume` to try it again",
                    f.message, step.agent
                ),
                schema,
                context: Value::Null,
                deadline_ms: None,
            });
            Some((
                RunStatus::Paused,
                format!(
                    "step `{id}` failed and the run is paused for a human: {}",
                    f.message
                ),
            ))
        }
        Special::None | Special::Rejected => {
            *status = StepStatus::Failed;
            r.status = StepStatus::Failed;
            exec.emit(Event::StepFailed {
                step: id.clone(),
                error,
                kind,
                stats,
            });
            Some((
                RunStatus::Failed,
                format!("step `{id}` failed: {}", f.message),
            ))
        }
    }
}
