//! When a step may start: joins, `when` dependencies, and the `steps` variable its condition reads.

use serde_json::Value;

use crate::definition::Join;
use crate::model::Step;
use crate::report::StepStatus;

use super::exec::Scope;

/// Whether a pending step may start now.
pub(super) enum Ready {
    Wait,
    Go,
    Skip(String),
}

pub(super) fn readiness(step: &Step, status: &[StepStatus], running: &[bool]) -> Ready {
    let finished =
        |d: usize| !matches!(status[d], StepStatus::Pending | StepStatus::Waiting) && !running[d];
    // Degraded dependencies do not count towards `any` and `at_least`:
    // those joins wait for real results.
    let completed = |d: usize| status[d] == StepStatus::Completed;
    if !step.when_deps.iter().all(|&d| finished(d)) {
        return Ready::Wait;
    }
    match step.join {
        Join::All => {
            if !step.deps.iter().all(|&d| finished(d)) {
                return Ready::Wait;
            }
            match step
                .deps
                .iter()
                .find(|&&d| !matches!(status[d], StepStatus::Completed | StepStatus::Degraded))
            {
                Some(_) => {
                    Ready::Skip("a dependency did not complete (it was skipped or failed)".into())
                }
                None => Ready::Go,
            }
        }
        Join::Any => {
            if step.deps.iter().any(|&d| completed(d)) {
                Ready::Go
            } else if step.deps.iter().all(|&d| finished(d)) {
                Ready::Skip("no dependency completed (`join: any`)".into())
            } else {
                Ready::Wait
            }
        }
        Join::AtLeast(k) => {
            let done = step.deps.iter().filter(|&&d| completed(d)).count();
            let open = step.deps.iter().filter(|&&d| !finished(d)).count();
            if done >= k as usize {
                Ready::Go
            } else if done + open < k as usize {
                Ready::Skip(format!(
                    "only {done} dependencies completed, `join: at_least: {k}` needs {k}"
                ))
            } else {
                Ready::Wait
            }
        }
    }
}

/// A step as a `when` sees it, its output borrowed: the condition converts
/// only the paths it reads.
pub(super) fn when_step<'s>(id: &str, scope: &'s Scope) -> (Value, Option<&'s Value>) {
    match scope.get(id) {
        Some((status, output)) => (
            serde_json::to_value(status).unwrap_or(Value::Null),
            output.as_deref(),
        ),
        None => (
            serde_json::to_value(StepStatus::Pending).unwrap_or(Value::Null),
            None,
        ),
    }
}
