//! The plan of a validated workflow: waves of steps that can run in parallel, and a worst-case fuel estimate against the budget.

use serde::Serialize;

use super::model::Workflow;

/// What `corral validate` reports besides errors: the dry run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Steps grouped by depth: every step of a wave depends only on earlier waves.
    pub waves: Vec<Vec<String>>,
    pub fuel: FuelEstimate,
}

#[derive(Debug, Clone, Serialize)]
pub struct FuelEstimate {
    /// Fuel if every call used its whole budget, with every retry, fallback,
    /// for-each item (up to `max_items`) and quality-gate iteration.
    pub worst_case: u64,
    pub budget: u64,
    /// Whether the worst case fits the workflow budget. If it does not, the
    /// run still starts, and stops scheduling when the budget is spent.
    pub fits: bool,
    pub per_step: Vec<StepFuel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepFuel {
    pub step: String,
    pub worst_case: u64,
    /// Calls at most: attempts × items × iterations, fallback and critic included.
    pub max_calls: u64,
}

pub fn plan(w: &Workflow) -> Plan {
    let mut depth = vec![0usize; w.steps.len()];
    for (i, s) in w.steps.iter().enumerate() {
        depth[i] = s.deps.iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
    }
    let mut waves: Vec<Vec<String>> = vec![Vec::new(); depth.iter().max().map_or(0, |d| d + 1)];
    for (i, s) in w.steps.iter().enumerate() {
        waves[depth[i]].push(s.id.clone());
    }

    let per_step: Vec<StepFuel> = w
        .steps
        .iter()
        .map(|s| {
            let attempts = u64::from(s.retry.max_attempts);
            let items = s.for_each.as_ref().map_or(1, |f| u64::from(f.max_items));
            let (iterations, critic_fuel) = match &s.repeat {
                Some(r) => {
                    let critic = w.agents.get(&r.critic).map_or(0, |a| a.budget.fuel);
                    (u64::from(r.max_iterations), critic)
                }
                None => (1, 0),
            };
            let fallback_calls = if s.fallback.is_some() {
                attempts * iterations
            } else {
                0
            };
            let step_calls = attempts * iterations + fallback_calls;
            let critic_calls = if s.repeat.is_some() {
                attempts * iterations
            } else {
                0
            };
            let per_item = (attempts * iterations)
                .saturating_mul(s.budget.fuel)
                .saturating_add(fallback_calls.saturating_mul(s.fallback_budget.fuel))
                .saturating_add(critic_calls.saturating_mul(critic_fuel));
            let worst = items.saturating_mul(per_item);
            StepFuel {
                step: s.id.clone(),
                worst_case: worst,
                max_calls: items * (step_calls + critic_calls),
            }
        })
        .collect();
    let worst_case = per_step
        .iter()
        .fold(0u64, |a, s| a.saturating_add(s.worst_case));
    Plan {
        waves,
        fuel: FuelEstimate {
            worst_case,
            budget: w.fuel_budget,
            fits: worst_case <= w.fuel_budget,
            per_step,
        },
    }
}
