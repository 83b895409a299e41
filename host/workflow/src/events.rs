//! Run events: what `--json` prints one per line, what the progress bar and the tests observe.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use corral_runtime::Receipt;

use super::report::RunStatus;

/// What a finished step consumed, summed over its calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepStats {
    pub attempts: u32,
    pub retries: u32,
    pub fallback: Option<String>,
    pub items: Option<usize>,
    pub iterations: Option<u32>,
    pub fuel_used: u64,
    /// Model tokens charged to the step's calls.
    #[serde(default)]
    pub tokens_used: u64,
    pub peak_memory_bytes: u64,
    pub wall_time_us: u64,
}

/// One thing that happened in a run. Serialized as `{"type": ..., "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        workflow: String,
        steps: usize,
    },
    /// A later session picked the run up (`corral resume` or `corral retry`).
    RunResumed {
        run_id: String,
        session: u32,
        /// Steps that were running when the last session stopped: they run again as new attempts.
        interrupted: Vec<String>,
        /// Components whose digest changed, allowed with `--allow-changed-components`.
        changed_components: Vec<String>,
        /// Params set anew with `corral resume --param`; steps that read them run again.
        changed_params: Vec<String>,
        /// The params from now on.
        params: Value,
    },
    StepStarted {
        step: String,
    },
    CallStarted {
        step: String,
        agent: String,
        attempt: u32,
        item: Option<usize>,
        iteration: Option<u32>,
        /// Fuel reserved from the workflow's pool for this call; what it
        /// does not use returns to the pool when it finishes.
        fuel_reserved: u64,
    },
    CallFinished {
        step: String,
        agent: String,
        attempt: u32,
        item: Option<usize>,
        iteration: Option<u32>,
        /// `ok`, or the error kind.
        outcome: String,
        error: Option<String>,
        receipt: Receipt,
    },
    /// A call the step's agent delegated (at any depth) completed; a
    /// resumed step gives its answer again instead of calling it anew.
    DelegateFinished {
        step: String,
        agent: String,
        /// 1 for a call the step's agent made, 2 for one its callee made, ...
        depth: u32,
        /// The callee's component digest and the input payload's digest:
        /// the call a resumed step must make for the answer to be reused.
        component: String,
        input: String,
        output: Arc<Value>,
        receipt: Receipt,
    },
    /// A cached output stood in for a call: no fuel was spent.
    CallCached {
        step: String,
        agent: String,
        item: Option<usize>,
        key: String,
    },
    StepRetrying {
        step: String,
        agent: String,
        next_attempt: u32,
        delay_ms: u64,
        error: String,
    },
    StepFallback {
        step: String,
        agent: String,
        error: String,
    },
    StepCompleted {
        step: String,
        output: Arc<Value>,
        /// Digest of what the step read; a resume reuses the output while it matches.
        fingerprint: String,
        /// Every call was answered from the cache.
        cached: bool,
        #[serde(flatten)]
        stats: StepStats,
    },
    /// A resumed run reused the output an earlier session committed.
    StepReused {
        step: String,
    },
    /// A resumed run runs a step again although an earlier session completed it.
    StepRerun {
        step: String,
        reason: String,
    },
    StepDegraded {
        step: String,
        error: String,
        kind: String,
        /// Digest of what the step read; a resume reuses the degraded outcome while it matches.
        fingerprint: String,
        #[serde(flatten)]
        stats: StepStats,
    },
    StepFailed {
        step: String,
        error: String,
        kind: String,
        #[serde(flatten)]
        stats: StepStats,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    StepPaused {
        step: String,
        error: String,
        kind: String,
        #[serde(flatten)]
        stats: StepStats,
    },
    /// An approval step (or a paused step) waits for `corral approve` or `corral reject`.
    ApprovalRequested {
        step: String,
        prompt: String,
        /// JSON Schema of the input `corral approve --input` must give.
        schema: Value,
        /// The step's resolved `input`, shown to the human.
        context: Value,
        /// Unix milliseconds after which `on_timeout` applies.
        deadline_ms: Option<i64>,
    },
    /// The approval's deadline passed without an answer.
    ApprovalExpired {
        step: String,
    },
    CompensationStarted {
        step: String,
        agent: String,
    },
    CompensationFinished {
        step: String,
        agent: String,
        /// `ok`, or the error kind.
        outcome: String,
        error: Option<String>,
        receipt: Receipt,
    },
    Breaker {
        agent: String,
        from: String,
        to: String,
    },
    RunFinished {
        status: RunStatus,
        /// Fuel charged to the workflow's pool across all sessions.
        fuel_used: u64,
        error: Option<String>,
    },
}

impl Event {
    /// The `type` tag: `step_completed`, `run_finished`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::RunResumed { .. } => "run_resumed",
            Event::StepStarted { .. } => "step_started",
            Event::CallStarted { .. } => "call_started",
            Event::CallFinished { .. } => "call_finished",
            Event::DelegateFinished { .. } => "delegate_finished",
            Event::CallCached { .. } => "call_cached",
            Event::StepRetrying { .. } => "step_retrying",
            Event::StepFallback { .. } => "step_fallback",
            Event::StepCompleted { .. } => "step_completed",
            Event::StepReused { .. } => "step_reused",
            Event::StepRerun { .. } => "step_rerun",
            Event::StepDegraded { .. } => "step_degraded",
            Event::StepFailed { .. } => "step_failed",
            Event::StepSkipped { .. } => "step_skipped",
            Event::StepPaused { .. } => "step_paused",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::ApprovalExpired { .. } => "approval_expired",
            Event::CompensationStarted { .. } => "compensation_started",
            Event::CompensationFinished { .. } => "compensation_finished",
            Event::Breaker { .. } => "breaker",
            Event::RunFinished { .. } => "run_finished",
        }
    }

    /// The step it is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step }
            | Event::CallStarted { step, .. }
            | Event::CallFinished { step, .. }
            | Event::DelegateFinished { step, .. }
            | Event::CallCached { step, .. }
            | Event::StepRetrying { step, .. }
            | Event::StepFallback { step, .. }
            | Event::StepCompleted { step, .. }
            | Event::StepReused { step }
            | Event::StepRerun { step, .. }
            | Event::StepDegraded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepPaused { step, .. }
            | Event::ApprovalRequested { step, .. }
            | Event::ApprovalExpired { step }
            | Event::CompensationStarted { step, .. }
            | Event::CompensationFinished { step, .. } => Some(step),
            Event::RunStarted { .. }
            | Event::RunResumed { .. }
            | Event::Breaker { .. }
            | Event::RunFinished { .. } => None,
        }
    }
}

/// Where events go. Called from many tasks; must be cheap.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> EventSink {
    Arc::new(|_| {})
}
