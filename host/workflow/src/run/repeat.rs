//! Quality gates: the step's agent, then its critic, until the `until` condition holds.

use serde_json::{Value, json};

use crate::model::Step;

use super::exec::{Exec, Scope};
use super::failure::Failure;
use super::stats::Stats;

impl Exec {
    /// Runs the quality-gate loop of a step with `repeat`.
    pub(super) async fn repeat(
        &self,
        step: &Step,
        scope: &Scope,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let rep = step.repeat.as_ref().expect("checked by the caller");
        let base = self.resolve(step, scope, &step.input, None, None)?;
        let critic_budget = self.w.agents[&rep.critic].budget.clone();
        let mut feedback: Option<Value> = None;
        let mut last_verdict = Value::Null;
        for iteration in 1..=rep.max_iterations {
            let mut input = base.clone();
            if let (Some(field), Some(fb), Value::Object(map)) =
                (&rep.feedback, &feedback, &mut input)
            {
                map.insert(field.clone(), fb.clone());
            }
            stats.iterations = Some(iteration);
            let output = self
                .call_with_fallback(step, input, None, Some(iteration), stats)
                .await?;
            let critic_input = self.resolve(step, scope, &rep.critic_input, None, Some(&output))?;
            let verdict = self
                .call(
                    step,
                    &rep.critic,
                    &critic_budget,
                    critic_input,
                    None,
                    Some(iteration),
                    stats,
                )
                .await?;
            let done = rep
                .until
                .eval(&[
                    ("critic", &verdict),
                    ("output", &output),
                    ("iteration", &json!(iteration)),
                    ("params", &self.params),
                ])
                .map_err(|e| {
                    Failure::permanent("condition", format!("step `{}`: repeat.until {e}", step.id))
                })?;
            if done {
                return Ok(output);
            }
            feedback = Some(verdict.clone());
            last_verdict = verdict;
        }
        Err(Failure::permanent(
            "quality_gate",
            format!(
                "step `{}` did not pass its quality gate `{}` in {} iterations; the critic's last verdict: {last_verdict}",
                step.id,
                rep.until.source(),
                rep.max_iterations
            ),
        ))
    }
}
