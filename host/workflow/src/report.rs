//! The run report: status, per-step receipts and attempts, fuel against budget, outputs, breakers and a summary.

use serde::Serialize;
use serde_json::Value;

use super::breaker::BreakerReport;
use corral_runtime::human;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    /// Completed, but some steps were degraded.
    Degraded,
    Failed,
    /// The workflow fuel budget ran out; no new steps were scheduled.
    FuelExhausted,
    /// A step with `on_error: pause` failed; the run waits for a human.
    Paused,
    /// Approval steps wait for a human; nothing else can run until they are answered.
    Waiting,
    Cancelled,
}

impl From<RunStatus> for corral_store::RunState {
    fn from(s: RunStatus) -> Self {
        use corral_store::RunState;
        match s {
            RunStatus::Completed => RunState::Completed,
            RunStatus::Degraded => RunState::Degraded,
            RunStatus::Failed => RunState::Failed,
            RunStatus::FuelExhausted => RunState::FuelExhausted,
            RunStatus::Paused => RunState::Paused,
            RunStatus::Waiting => RunState::Waiting,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Degraded => "degraded",
            RunStatus::Failed => "failed",
            RunStatus::FuelExhausted => "fuel_exhausted",
            RunStatus::Paused => "paused",
            RunStatus::Waiting => "waiting",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Never reached: the run stopped first.
    Pending,
    Completed,
    Degraded,
    Failed,
    Skipped,
    Paused,
    /// An approval step waiting for a human.
    Waiting,
    Cancelled,
}

/// One step's part of the run.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub id: String,
    pub agent: String,
    pub status: StepStatus,
    /// Agent calls made, critic and fallback calls included.
    pub attempts: u32,
    /// Retries: failed attempts tried again, fast failures of an open breaker included.
    pub retries: u32,
    /// The fallback agent, when it produced the output.
    pub fallback: Option<String>,
    /// For-each steps: how many items.
    pub items: Option<usize>,
    /// Quality-gate steps: iterations run.
    pub iterations: Option<u32>,
    pub fuel_used: u64,
    /// Model tokens charged to the step's calls.
    pub tokens_used: u64,
    /// Highest peak memory of any of the step's calls.
    pub peak_memory_bytes: u64,
    /// Wall time of all the step's calls together.
    pub wall_time_us: u64,
    pub error: Option<String>,
    /// The error's kind, such as `fuel_exhausted` or `agent`.
    pub error_kind: Option<String>,
    pub skip_reason: Option<String>,
    /// Every call was answered from the step cache; no fuel was spent.
    pub cached: bool,
    /// The output was committed by an earlier session of this run and reused.
    pub reused: bool,
}

/// One compensation: a completed step undone after the run failed.
#[derive(Debug, Clone, Serialize)]
pub struct CompensationReport {
    pub step: String,
    pub agent: String,
    /// `ok`, or the error kind.
    pub outcome: String,
    pub error: Option<String>,
    pub fuel_used: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    /// Steps that needed at least one retry.
    pub retried: usize,
    pub degraded: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FuelUse {
    /// Fuel the finished calls used.
    pub used: u64,
    pub budget: u64,
    /// Fuel reserved by calls cut off by cancellation: they used at most
    /// this much, and it is not known how much.
    pub unsettled: u64,
}

/// Model tokens the run's steps were charged, against `budget.tokens`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenUse {
    /// Summed over every step, earlier sessions included.
    pub used: u64,
    pub budget: u64,
}

/// Everything a run did, for people (`summary`) and machines (the rest).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub workflow: String,
    pub status: RunStatus,
    pub steps: Vec<StepReport>,
    pub counts: Counts,
    pub fuel: FuelUse,
    pub tokens: TokenUse,
    pub outputs: Value,
    pub breakers: Vec<BreakerReport>,
    /// Compensations run after the run failed, in the order they ran.
    pub compensations: Vec<CompensationReport>,
    /// Approval steps waiting for a human.
    pub waiting: Vec<String>,
    pub wall_time_us: u64,
    /// Why the run did not complete, when it did not.
    pub error: Option<String>,
    pub summary: String,
}

impl RunReport {
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub(crate) fn summarize(&mut self) {
        let c = &self.counts;
        let mut s = format!(
            "workflow `{}` {}: {} of {} steps completed, {} failed, {} degraded, {} skipped, {} retried; fuel {} of {} ({:.1}%); {}",
            self.workflow,
            self.status.name(),
            c.completed,
            c.total,
            c.failed,
            c.degraded,
            c.skipped,
            c.retried,
            human::count(self.fuel.used),
            human::count(self.fuel.budget),
            if self.fuel.budget == 0 {
                0.0
            } else {
                self.fuel.used as f64 * 100.0 / self.fuel.budget as f64
            },
            human::duration(std::time::Duration::from_micros(self.wall_time_us)),
        );
        if self.tokens.used > 0 {
            s.push_str(&format!(
                "; model tokens {} of {}",
                human::count(self.tokens.used),
                human::count(self.tokens.budget)
            ));
        }
        if self.fuel.unsettled > 0 {
            s.push_str(&format!(
                " (plus at most {} reserved by calls cut off by cancellation)",
                human::count(self.fuel.unsettled)
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(". {e}"));
        }
        let failed = self
            .compensations
            .iter()
            .filter(|c| c.outcome != "ok")
            .count();
        if !self.compensations.is_empty() {
            s.push_str(&format!(
                ". Compensated {} step(s){}",
                self.compensations.len(),
                if failed > 0 {
                    format!(", {failed} compensation(s) FAILED")
                } else {
                    String::new()
                }
            ));
        }
        self.summary = s;
    }
}
