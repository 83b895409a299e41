//! Reuse across sessions: what a step read (its fingerprint), and whether a stored outcome still holds.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::events::Event;
use crate::model::Step;
use crate::reference::{Reference, Source};
use crate::report::{RunStatus, StepStatus};
use corral_runtime::digest::{canonical_json, digest};
use corral_store::StepState;

use super::board::Board;
use super::exec::{Exec, Scope, lookup};
use super::options::Prior;
use super::stats::Stats;

/// Digest of everything a step reads: the targets of its references, and
/// all params when a condition reads `params`. A resume reuses a step's
/// outcome only while this is unchanged.
///
/// A `join: any` or `at_least` step can start while some dependencies still
/// run; what it would read of those is unknown then, so they are left out,
/// and the stored fingerprint lists the steps it did read (`digest|a,b`).
/// `only` recomputes it over that list; `None` if one of them has not
/// finished now.
pub(super) fn fingerprint(
    exec: &Exec,
    step: &Step,
    scope: &Scope,
    only: Option<&BTreeSet<String>>,
) -> Option<String> {
    let mut reads = Map::new();
    let mut used = BTreeSet::new();
    let mut partial = false;
    let mut missing = false;
    let mut add = |r: &Reference| {
        match &r.source {
            Source::Item | Source::Output => return,
            Source::Step(id) => {
                let finished = scope.get(id).is_some_and(|(st, _)| {
                    !matches!(st, StepStatus::Pending | StepStatus::Waiting)
                });
                match only {
                    Some(set) if !set.contains(id) => return,
                    Some(_) if !finished => {
                        missing = true;
                        return;
                    }
                    None if !finished => {
                        partial = true;
                        return;
                    }
                    _ => {
                        used.insert(id.clone());
                    }
                }
            }
            Source::Param(_) => {}
        }
        let v = lookup(&exec.params, scope, r, None, None).unwrap_or(Value::Null);
        reads.insert(r.text.clone(), v);
    };
    for t in std::iter::once(&step.input).chain(step.repeat.as_ref().map(|r| &r.critic_input)) {
        for placed in t.references() {
            add(placed.reference);
        }
    }
    if let Some(fe) = &step.for_each {
        add(&fe.list);
    }
    if missing {
        return None;
    }
    let conditions_read_params = step
        .when
        .iter()
        .chain(step.repeat.as_ref().map(|r| &r.until))
        .any(|c| c.variables().contains("params"));
    if conditions_read_params {
        reads.insert("params".into(), exec.params.clone());
    }
    let d = digest(&canonical_json(&Value::Object(reads)));
    Some(if partial || only.is_some() {
        format!("{d}|{}", used.into_iter().collect::<Vec<_>>().join(","))
    } else {
        d
    })
}

/// Whether a stored fingerprint still holds for the step as it stands now;
/// `current` is the step's fingerprint computed for this session.
fn still_holds(
    exec: &Exec,
    step: &Step,
    scope: &Scope,
    stored: Option<&str>,
    current: Option<&str>,
) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    match stored.split_once('|') {
        None => current == Some(stored),
        Some((_, list)) => {
            let only: BTreeSet<String> = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            fingerprint(exec, step, scope, Some(&only)).as_deref() == Some(stored)
        }
    }
}

/// What an earlier session's state of a step means for this session.
pub(super) enum Carried {
    /// The step's outcome is settled (reused, or a stored answer applied).
    Settled,
    /// The step runs (or waits) again; `base` is what it already spent.
    Again {
        base: Stats,
        /// The deadline of an approval it was already waiting for.
        deadline: Option<i64>,
    },
}

/// Applies what an earlier session left of step `i`: a committed outcome
/// is reused while what the step reads is unchanged, a stored answer is
/// applied, and anything else runs again with its stats carried over.
#[allow(clippy::too_many_arguments)]
pub(super) fn carry_over(
    exec: &Exec,
    board: &mut Board,
    i: usize,
    scope: &Scope,
    p: Prior,
    forced: bool,
    halt: &mut Option<(RunStatus, String)>,
) -> Carried {
    let step = &exec.w.steps[i];
    let rec = &p.record;
    let mut deadline = None;
    match rec.status {
        StepState::Completed | StepState::Degraded
            if !forced
                && still_holds(
                    exec,
                    step,
                    scope,
                    rec.fingerprint.as_deref(),
                    board.fingerprints[i].as_deref(),
                ) =>
        {
            board.adopt(i, p.record, p.output);
            exec.emit(Event::StepReused {
                step: step.id.clone(),
            });
            return Carried::Settled;
        }
        StepState::Completed | StepState::Degraded => {
            exec.emit(Event::StepRerun {
                step: step.id.clone(),
                reason: if forced {
                    "`corral retry` asked for it".into()
                } else {
                    "what it reads changed since the earlier session".into()
                },
            });
        }
        StepState::Waiting | StepState::Paused if rec.answer.is_some() && !forced => {
            board.carry_stats(i, rec);
            let answer = rec.answer.clone().unwrap_or_default();
            board.answer(exec, i, &answer, halt);
            return Carried::Settled;
        }
        StepState::Waiting => {
            deadline = rec.waiting.as_ref().and_then(|w| w["deadline_ms"].as_i64());
        }
        _ => {}
    }
    board.carry_stats(i, rec);
    let base = board.stats_of(i);
    Carried::Again { base, deadline }
}
