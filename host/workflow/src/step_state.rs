//! The step state machine, written once: how each event moves a step's stored state. The journal writer stores what it yields; the scheduler's board reads its steps' status from it.

use serde_json::json;

use corral_store::{StepRecord, StepState};

use super::events::{Event, StepStats};

/// Applies events to step records, numbering completions in order.
#[derive(Debug, Clone)]
pub struct StepMachine {
    next_order: u64,
}

impl StepMachine {
    /// Completions continue after the highest order in `records` (what
    /// earlier sessions of the run completed).
    pub fn new<'a>(records: impl IntoIterator<Item = &'a StepRecord>) -> Self {
        let next_order = records
            .into_iter()
            .filter_map(|r| r.completed_order)
            .max()
            .map_or(0, |o| o + 1);
        Self { next_order }
    }

    /// Applies `e` to `r`, the record of the step `e` is about. `output` is
    /// the blob digest of a completed step's output, when it is stored.
    /// Returns whether the record changed.
    pub fn apply(&mut self, r: &mut StepRecord, e: &Event, output: Option<String>) -> bool {
        match e {
            Event::StepStarted { .. } => {
                r.status = StepState::Running;
                r.error = None;
                r.error_kind = None;
                clear_outcome(r);
            }
            Event::CallStarted { .. } => r.attempts += 1,
            Event::CallFinished { receipt, .. } => {
                r.fuel_used += receipt.fuel_used;
                r.tokens_used += receipt.tokens_used();
                r.peak_memory_bytes = r.peak_memory_bytes.max(receipt.peak_memory_bytes);
                r.wall_time_us += receipt.wall_time_us;
            }
            Event::StepRetrying { .. } => r.retries += 1,
            Event::StepCompleted {
                fingerprint,
                cached,
                stats,
                ..
            } => {
                r.status = StepState::Completed;
                set_stats(r, stats);
                r.output = output;
                r.fingerprint = Some(fingerprint.clone());
                r.cached = *cached;
                r.error = None;
                r.error_kind = None;
                r.completed_order = Some(self.next_order);
                self.next_order += 1;
                r.waiting = None;
                r.answer = None;
            }
            Event::StepDegraded {
                error,
                kind,
                stats,
                fingerprint,
                ..
            } => {
                fail(r, StepState::Degraded, error, kind, stats);
                // A degraded outcome is reused like a completed one.
                r.fingerprint = Some(fingerprint.clone());
            }
            Event::StepFailed {
                error, kind, stats, ..
            } => fail(r, StepState::Failed, error, kind, stats),
            Event::StepPaused {
                error, kind, stats, ..
            } => fail(r, StepState::Paused, error, kind, stats),
            Event::StepSkipped { reason, .. } => {
                r.status = StepState::Skipped;
                r.error = Some(reason.clone());
                clear_outcome(r);
            }
            Event::ApprovalRequested {
                prompt,
                schema,
                context,
                deadline_ms,
                ..
            } => {
                // A paused step waits for an answer but stays paused.
                if r.status != StepState::Paused {
                    r.status = StepState::Waiting;
                }
                r.waiting = Some(
                    json!({ "prompt": prompt, "schema": schema, "context": context, "deadline_ms": deadline_ms }),
                );
                r.answer = None;
            }
            Event::CompensationFinished { outcome, error, .. } => {
                if outcome == "ok" {
                    r.status = StepState::Compensated;
                } else {
                    r.status = StepState::CompensationFailed;
                    r.error = error.clone();
                    r.error_kind = Some(outcome.clone());
                }
            }
            Event::RunStarted { .. }
            | Event::RunResumed { .. }
            | Event::RunFinished { .. }
            | Event::StepReused { .. }
            | Event::StepRerun { .. }
            | Event::CallCached { .. }
            // The caller's receipt counts its delegates when its call ends.
            | Event::DelegateFinished { .. }
            | Event::StepFallback { .. }
            | Event::ApprovalExpired { .. }
            | Event::CompensationStarted { .. }
            | Event::Breaker { .. } => return false,
        }
        true
    }
}

fn set_stats(r: &mut StepRecord, s: &StepStats) {
    r.attempts = s.attempts;
    r.retries = s.retries;
    r.fuel_used = s.fuel_used;
    r.tokens_used = s.tokens_used;
    r.peak_memory_bytes = s.peak_memory_bytes;
    r.wall_time_us = s.wall_time_us;
    r.fallback = s.fallback.clone();
}

fn fail(r: &mut StepRecord, status: StepState, error: &str, kind: &str, stats: &StepStats) {
    r.status = status;
    set_stats(r, stats);
    r.error = Some(error.to_owned());
    r.error_kind = Some(kind.to_owned());
    clear_outcome(r);
}

/// Forgets what an earlier outcome of the step left: its output, its place
/// in the completion order, an approval request and its answer.
fn clear_outcome(r: &mut StepRecord) {
    r.output = None;
    r.fingerprint = None;
    r.cached = false;
    r.completed_order = None;
    r.waiting = None;
    r.answer = None;
}
