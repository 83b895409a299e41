//! A run as the API shows it: steps in the file's order, progress, an ETA at the pace so far, and each step's output.

use std::collections::HashMap;
use std::path::Path;

use corral_store::{LEASE, RunRecord, RunState, StepRecord, StepState, now_ms};
use corral_workflow::source;
use serde_json::Value;

use crate::api::{Progress, RunView, StepView};

/// Assembles the view of `run`; `driving`: this process drives it now.
pub fn view(
    run: &RunRecord,
    steps: Vec<StepRecord>,
    outputs: &HashMap<String, Value>,
    driving: bool,
) -> RunView {
    let order: Vec<String> = source::parse(Path::new(&run.file), &run.definition)
        .map(|src| src.def.steps.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    let mut by_id: HashMap<String, StepRecord> =
        steps.into_iter().map(|s| (s.step.clone(), s)).collect();
    let total = order.len().max(by_id.len());
    let done = by_id.values().filter(|s| s.status.is_settled()).count();
    let elapsed_ms = (run.updated_ms - run.created_ms).max(0) as f64;
    let eta_secs = (run.status == RunState::Running && done > 0 && done < total)
        .then(|| elapsed_ms / done as f64 * (total - done) as f64 / 1000.0);
    let mut views: Vec<StepView> = order
        .iter()
        .map(|id| {
            let s = by_id.remove(id).unwrap_or(StepRecord {
                step: id.clone(),
                status: StepState::Pending,
                ..StepRecord::default()
            });
            step_view(s, outputs)
        })
        .collect();
    views.extend(by_id.into_values().map(|s| step_view(s, outputs)));
    let status = if driving {
        run.status.as_str()
    } else {
        run.display_status(now_ms(), LEASE)
    };
    RunView {
        id: run.id.clone(),
        workflow: run.workflow.clone(),
        status: status.to_owned(),
        error: run.error.clone(),
        created_ms: run.created_ms,
        updated_ms: run.updated_ms,
        sessions: run.sessions,
        fuel_used: run.fuel_charged,
        params: run.params.clone(),
        progress: Progress {
            steps: total,
            finished: done,
            percent: if total == 0 {
                100.0
            } else {
                (done as f64 * 100.0 / total as f64).round()
            },
            eta_secs,
        },
        steps: views,
    }
}

fn step_view(s: StepRecord, outputs: &HashMap<String, Value>) -> StepView {
    StepView {
        output: outputs.get(&s.step).cloned(),
        status: s.status.as_str().to_owned(),
        step: s.step,
        attempts: s.attempts,
        retries: s.retries,
        fuel_used: s.fuel_used,
        tokens_used: s.tokens_used,
        peak_memory_bytes: s.peak_memory_bytes,
        wall_time_us: s.wall_time_us,
        cached: s.cached,
        fallback: s.fallback,
        error: s.error,
        error_kind: s.error_kind,
        waiting: s.waiting,
        answer: s.answer,
    }
}
