//! Run events: what `--json` prints one per line, what the progress bar and the tests observe.

use std::sync::Arc;

use serde::Serialize;

/// One thing that happened in a run. Serialized as `{"type": ..., "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        workflow: String,
        steps: usize,
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
    },
    CallFinished {
        step: String,
        agent: String,
        attempt: u32,
        item: Option<usize>,
        iteration: Option<u32>,
        /// `ok`, or the error kind.
        outcome: String,
        fuel_used: u64,
        wall_time_us: u64,
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
    },
    StepDegraded {
        step: String,
        error: String,
    },
    StepFailed {
        step: String,
        error: String,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    StepPaused {
        step: String,
        error: String,
    },
    Breaker {
        agent: String,
        from: String,
        to: String,
    },
    RunFinished {
        status: String,
        fuel_used: u64,
    },
}

/// Where events go. Called from many tasks; must be cheap.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> EventSink {
    Arc::new(|_| {})
}
