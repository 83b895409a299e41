//! Approvals: a human's answer applied, and answers and deadlines polled from the store.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::events::Event;
use crate::report::RunStatus;
use corral_store::now_ms;

use super::board::{Board, finish_failed};
use super::exec::Exec;
use super::failure::{Failure, Special};

/// How often a run waiting for approvals looks for answers.
pub(super) const APPROVAL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl Board {
    /// Applies a human's answer to a waiting approval or a paused step.
    pub(super) fn answer(
        &mut self,
        exec: &Exec,
        i: usize,
        answer: &Value,
        halt: &mut Option<(RunStatus, String)>,
    ) {
        let step = &exec.w.steps[i];
        self.waiting.remove(&i);
        let s = self.stats_of(i);
        if answer["approved"] == Value::Bool(true) {
            let input = answer.get("input").cloned().unwrap_or(Value::Null);
            // Checked here too, not only by `corral approve`: an answer may
            // come from any writer of the store.
            let checked = match &step.approval {
                Some(a) => a
                    .check(&input)
                    .map_err(|e| format!("does not match `approval.schema`: {e}")),
                None => exec.w.agents[&step.agent]
                    .agent
                    .info()
                    .output_schema
                    .check(&input)
                    .map_err(|e| {
                        format!("does not match agent `{}`'s output schema: {e}", step.agent)
                    }),
            };
            if let Err(e) = checked {
                let f = Failure::permanent(
                    "invalid_input",
                    format!("step `{}`: the human's answer {e}", step.id),
                );
                *halt = halt.take().or(finish_failed(exec, step, self, i, &f, s));
                return;
            }
            self.complete(exec, i, Arc::new(input), s);
        } else {
            let reason = answer["reason"].as_str().unwrap_or("no reason given");
            let f = Failure {
                special: Special::Rejected,
                ..Failure::permanent(
                    "rejected",
                    format!("step `{}` was rejected by a human: {reason}", step.id),
                )
            };
            *halt = halt.take().or(finish_failed(exec, step, self, i, &f, s));
        }
    }

    /// Applies `answers` (from [`stored_answers`]) and expired deadlines;
    /// returns the steps that changed.
    pub(super) fn settle_approvals(
        &mut self,
        exec: &Exec,
        answers: &HashMap<String, Value>,
        halt: &mut Option<(RunStatus, String)>,
    ) -> Vec<usize> {
        let mut changed = Vec::new();
        let now = now_ms();
        for (i, deadline) in self.waiting.clone() {
            let step = &exec.w.steps[i];
            if let Some(answer) = answers.get(&step.id) {
                self.answer(exec, i, answer, halt);
                changed.push(i);
            } else if deadline.is_some_and(|d| d <= now) {
                self.waiting.remove(&i);
                exec.emit(Event::ApprovalExpired {
                    step: step.id.clone(),
                });
                let a = step.approval.as_ref().expect("only approval steps wait");
                let s = self.stats_of(i);
                match &a.default {
                    Some(d) => self.complete(exec, i, Arc::new(d.clone()), s),
                    None => {
                        let f = Failure::permanent(
                            "approval_timeout",
                            format!(
                                "approval step `{}` was not answered within {} (raise `approval.timeout`, or set `on_timeout: default`)",
                                step.id,
                                humantime::format_duration(a.timeout.unwrap_or_default())
                            ),
                        );
                        *halt = halt.take().or(finish_failed(exec, step, self, i, &f, s));
                    }
                }
                changed.push(i);
            }
        }
        changed
    }
}

/// Humans' answers to this run's waiting steps, by step id. The store is
/// read on a blocking thread: the scheduler never waits for the disk.
pub(super) async fn stored_answers(exec: &Exec) -> HashMap<String, Value> {
    let Some(j) = &exec.journal else {
        return HashMap::new();
    };
    let (store, run) = (j.store().clone(), j.run_id().to_owned());
    let rows = tokio::task::spawn_blocking(move || store.steps(&run)).await;
    match rows {
        Ok(Ok(rows)) => rows
            .into_iter()
            .filter(|r| r.status.awaits_human())
            .filter_map(|r| Some((r.step, r.answer?)))
            .collect(),
        Ok(Err(e)) => {
            tracing::warn!("cannot read approval answers: {e}");
            HashMap::new()
        }
        Err(e) => {
            tracing::warn!("cannot read approval answers: {e}");
            HashMap::new()
        }
    }
}
