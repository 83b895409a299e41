//! The scheduler's view of every step, and the transitions it applies when steps finish.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::definition::OnError;
use crate::events::Event;
use crate::model::{Step, Workflow};
use crate::report::{RunStatus, StepReport, StepStatus};
use crate::step_state::StepMachine;
use corral_runtime::ErrorClass;
use corral_store::{StepRecord, StepState};

use super::exec::Exec;
use super::failure::{Failure, Special};
use super::options::Resume;
use super::stats::Stats;

/// The scheduler's view of every step. Each step's state is a
/// [`StepRecord`] moved by the same [`StepMachine`] the journal writer
/// uses, so the two can never disagree; `status` and `reports` are read
/// from it.
pub(super) struct Board {
    pub(super) status: Vec<StepStatus>,
    pub(super) running: Vec<bool>,
    pub(super) outputs: Vec<Option<Arc<Value>>>,
    pub(super) reports: Vec<StepReport>,
    records: Vec<StepRecord>,
    machine: StepMachine,
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
                    tokens_used: 0,
                    peak_memory_bytes: 0,
                    wall_time_us: 0,
                    error: None,
                    error_kind: None,
                    skip_reason: None,
                    cached: false,
                    reused: false,
                })
                .collect(),
            records: w
                .steps
                .iter()
                .map(|s| StepRecord {
                    step: s.id.clone(),
                    ..StepRecord::default()
                })
                .collect(),
            machine: StepMachine::new(resume.steps.values().map(|p| &p.record)),
            fingerprints: vec![None; n],
            waiting: BTreeMap::new(),
        }
    }

    /// Moves step `i` by `e`, then hands `e` on to the journal and the
    /// sink: every transition of the board goes through here.
    pub(super) fn emit(&mut self, exec: &Exec, i: usize, e: Event) {
        self.machine.apply(&mut self.records[i], &e, None);
        self.sync(i);
        exec.emit(e);
    }

    /// Reads step `i`'s status and report from its record.
    fn sync(&mut self, i: usize) {
        let rec = &self.records[i];
        let status = match rec.status {
            // A running step is pending to readiness; `running` says more.
            StepState::Pending | StepState::Running => StepStatus::Pending,
            StepState::Waiting => StepStatus::Waiting,
            StepState::Paused => StepStatus::Paused,
            StepState::Completed | StepState::Compensated | StepState::CompensationFailed => {
                StepStatus::Completed
            }
            StepState::Degraded => StepStatus::Degraded,
            StepState::Failed => StepStatus::Failed,
            StepState::Skipped => StepStatus::Skipped,
            StepState::Cancelled => StepStatus::Cancelled,
        };
        self.status[i] = status;
        let r = &mut self.reports[i];
        r.status = status;
        (r.attempts, r.retries, r.fallback, r.cached) =
            (rec.attempts, rec.retries, rec.fallback.clone(), rec.cached);
        (r.fuel_used, r.peak_memory_bytes, r.wall_time_us) =
            (rec.fuel_used, rec.peak_memory_bytes, rec.wall_time_us);
        r.tokens_used = rec.tokens_used;
        // The store keeps a skip's reason as its error; the report apart.
        if status == StepStatus::Skipped {
            (r.skip_reason, r.error, r.error_kind) = (rec.error.clone(), None, None);
        } else {
            (r.error, r.error_kind) = (rec.error.clone(), rec.error_kind.clone());
        }
    }

    /// Takes an earlier session's committed outcome of step `i` as its own.
    pub(super) fn adopt(&mut self, i: usize, record: StepRecord, output: Option<Arc<Value>>) {
        self.records[i] = record;
        self.outputs[i] = output;
        self.sync(i);
        self.reports[i].reused = true;
    }

    /// Carries what earlier sessions spent on step `i` into this one.
    pub(super) fn carry_stats(&mut self, i: usize, prior: &StepRecord) {
        let r = &mut self.records[i];
        (r.attempts, r.retries, r.fuel_used) = (prior.attempts, prior.retries, prior.fuel_used);
        r.tokens_used = prior.tokens_used;
        (r.peak_memory_bytes, r.wall_time_us) = (prior.peak_memory_bytes, prior.wall_time_us);
        self.sync(i);
    }

    /// Step `i` was cancelled; no event records that, the run's end does.
    fn cancel(&mut self, i: usize, error: &str) {
        let r = &mut self.records[i];
        r.status = StepState::Cancelled;
        (r.error, r.error_kind) = (Some(error.into()), Some("cancelled".into()));
        self.sync(i);
    }

    /// Marks the steps still running as cancelled (their tasks were dropped).
    pub(super) fn cancel_running(&mut self) {
        for i in 0..self.running.len() {
            if self.running[i] {
                self.running[i] = false;
                self.cancel(i, "the run was cancelled while this step ran");
            }
        }
    }

    /// Where step `i` stands in the run's completion order, if it completed.
    pub(super) fn completed_order(&self, i: usize) -> Option<u64> {
        self.records[i].completed_order
    }

    pub(super) fn complete(&mut self, exec: &Exec, i: usize, v: Arc<Value>, s: Stats) {
        let step = &exec.w.steps[i];
        // Cached: every call this session was a cache hit (no new attempts).
        let cached = s.cache_hits > 0 && s.attempts == self.records[i].attempts;
        self.outputs[i] = Some(v.clone());
        self.set_extras(i, &s);
        let e = Event::StepCompleted {
            step: step.id.clone(),
            output: v,
            fingerprint: self.fingerprints[i].clone().unwrap_or_default(),
            cached,
            stats: s.public(),
        };
        self.emit(exec, i, e);
    }

    /// What a step's report shows beyond its record: items and iterations.
    fn set_extras(&mut self, i: usize, s: &Stats) {
        let r = &mut self.reports[i];
        (r.items, r.iterations) = (s.items, s.iterations);
    }

    pub(super) fn stats_of(&self, i: usize) -> Stats {
        let r = &self.records[i];
        Stats {
            attempts: r.attempts,
            retries: r.retries,
            fuel: r.fuel_used,
            tokens: r.tokens_used,
            peak: r.peak_memory_bytes,
            wall_us: r.wall_time_us,
            ..Stats::default()
        }
    }
}

/// Marks step `i` skipped, with the reason.
pub(super) fn skip(exec: &Exec, board: &mut Board, i: usize, reason: String) {
    let e = Event::StepSkipped {
        step: exec.w.steps[i].id.clone(),
        reason,
    };
    board.emit(exec, i, e);
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
    board.set_extras(i, &s);
    let id = step.id.clone();
    let (error, kind, stats) = (f.message.clone(), f.kind.clone(), s.public());
    match f.special {
        Special::Cancelled => {
            board.cancel(i, &f.message);
            Some((RunStatus::Cancelled, "the run was cancelled".into()))
        }
        Special::WorkflowFuel => {
            let e = Event::StepFailed {
                step: id,
                error,
                kind,
                stats,
            };
            board.emit(exec, i, e);
            Some((RunStatus::FuelExhausted, f.message.clone()))
        }
        Special::None
            if f.class == ErrorClass::Degradable || step.on_error == OnError::Continue =>
        {
            let e = Event::StepDegraded {
                step: id,
                error,
                kind,
                fingerprint: board.fingerprints[i].clone().unwrap_or_default(),
                stats,
            };
            board.emit(exec, i, e);
            None
        }
        Special::None if step.on_error == OnError::Pause => {
            let e = Event::StepPaused {
                step: id.clone(),
                error,
                kind,
                stats,
            };
            board.emit(exec, i, e);
            // A human may answer with the output the step should have produced.
            let schema = exec
                .w
                .agents
                .get(&step.agent)
                .map(|a| a.agent.info().output_schema.source().clone())
                .unwrap_or(Value::Null);
            let e = Event::ApprovalRequested {
                step: id.clone(),
                prompt: format!(
                    "step `{id}` failed: {}. Approve with the output it should have produced (it must match agent `{}`'s output schema), reject to fail the run, or `corral resume` to try it again",
                    f.message, step.agent
                ),
                schema,
                context: Value::Null,
                deadline_ms: None,
            };
            board.emit(exec, i, e);
            Some((
                RunStatus::Paused,
                format!(
                    "step `{id}` failed and the run is paused for a human: {}",
                    f.message
                ),
            ))
        }
        Special::None | Special::Rejected => {
            let e = Event::StepFailed {
                step: id.clone(),
                error,
                kind,
                stats,
            };
            board.emit(exec, i, e);
            Some((
                RunStatus::Failed,
                format!("step `{id}` failed: {}", f.message),
            ))
        }
    }
}
