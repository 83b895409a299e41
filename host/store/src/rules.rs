//! What every backend decides the same way: how a claim changes a run, whose runs a dead process gives up, how many shared slots a holder gets, whether a step may take a human's answer, the entries an answer and a cancel write, and whether an artifact fits its run's and tenant's storage.

use serde_json::Value;

use std::time::Duration;

use crate::{
    ArtifactLimits, ArtifactRefusal, Entry, Lease, Owner, RunRecord, RunState, StepRecord,
    StoreError,
};

/// The step row an answer may be written to, or why not: the step must
/// wait for a human, unanswered, before its deadline, in a run not finished.
pub(crate) fn answer_check(
    rec: &RunRecord,
    run: &str,
    step: &str,
    row: Option<StepRecord>,
    now_ms: i64,
) -> Result<StepRecord, StoreError> {
    let step_err = |message: String| StoreError::Step {
        run: run.into(),
        step: step.into(),
        message,
    };
    let Some(row) = row else {
        return Err(step_err(
            "has not started, so there is nothing to answer yet (see `corral show`)".into(),
        ));
    };
    if rec.is_finished() {
        return Err(step_err(format!("the run is already {}", rec.status)));
    }
    if !row.status.awaits_human() {
        return Err(step_err(format!(
            "is not waiting for a human: its status is `{}`",
            row.status
        )));
    }
    if row.answer.is_some() {
        return Err(step_err(
            "was already answered; resume the run to apply the answer".into(),
        ));
    }
    if let Some(deadline) = row.waiting.as_ref().and_then(|w| w["deadline_ms"].as_i64())
        && deadline <= now_ms
    {
        return Err(step_err(
            "its approval deadline has passed; resume the run to apply `on_timeout`".into(),
        ));
    }
    Ok(row)
}

/// The journal entry that records `answer` on `row`.
pub(crate) fn answer_entry(mut row: StepRecord, step: &str, answer: &Value) -> Entry {
    row.answer = Some(answer.clone());
    Entry {
        step_state: Some(row),
        ..Entry::new("approval_answered", Some(step.into()), {
            let mut data = serde_json::Map::new();
            data.insert("step".into(), Value::String(step.into()));
            if let Value::Object(a) = answer {
                data.extend(a.clone());
            }
            Value::Object(data).to_string()
        })
    }
}

/// The entry that finishes a run nobody drives, cancelled by `corral cancel`.
pub(crate) fn cancel_entry() -> Entry {
    Entry {
        run_state: Some((
            RunState::Cancelled,
            Some("cancelled with `corral cancel`".into()),
        )),
        ..Entry::new(
            "run_finished",
            None,
            r#"{"status":"cancelled","fuel_used":0,"error":"cancelled with `corral cancel`"}"#
                .into(),
        )
    }
}

/// Whether `size` more bytes fit beside what the run and its tenant hold.
pub(crate) fn artifact_fits(
    size: u64,
    run_used: u64,
    tenant_used: u64,
    limits: ArtifactLimits,
) -> Result<(), ArtifactRefusal> {
    if run_used.saturating_add(size) > limits.run {
        return Err(ArtifactRefusal::Run {
            used: run_used,
            size,
            limit: limits.run,
        });
    }
    if tenant_used.saturating_add(size) > limits.tenant {
        return Err(ArtifactRefusal::Tenant {
            used: tenant_used,
            size,
            limit: limits.tenant,
        });
    }
    Ok(())
}

/// The prefix of the owners that are processes of this host: one known
/// dead (killed) gives its runs up before its lease ends.
pub(crate) fn this_host() -> String {
    format!("{}:", crate::hostname())
}

/// Of `owners` (encoded, of this host), those whose process is gone.
pub(crate) fn dead(owners: Vec<String>) -> Vec<String> {
    owners
        .into_iter()
        .filter(|o| crate::Owner::decode(o).is_some_and(|o| o.is_dead()))
        .collect()
}

/// How many of `want` slots a holder gets when live others hold `others`
/// of `limit`.
pub(crate) fn slots_granted(want: u32, others: i64, limit: u32) -> u32 {
    let room = (i64::from(limit) - others).max(0);
    want.min(room.min(i64::from(u32::MAX)) as u32)
}

/// `rec` given to `owner` at `now`, unless a live owner holds it (then
/// `Leased`): a new driver is a new session, starts with no cancel request
/// pending, and gets a new epoch, so whoever held the run before can no
/// longer commit. The caller writes the record's owner, heartbeat,
/// sessions and epoch in the transaction that read it.
pub(crate) fn take(
    mut rec: RunRecord,
    owner: &Owner,
    lease: Duration,
    now: i64,
) -> Result<(RunRecord, Lease), StoreError> {
    let mine = owner.encode();
    if rec.owner.as_deref() != Some(mine.as_str()) {
        if rec.lease_live(now, lease) {
            let held = rec.owner.clone().unwrap_or_default();
            return Err(StoreError::Leased {
                run: rec.id.clone(),
                owner: Owner::decode(&held).map_or(held, |o| o.describe()),
                age: Duration::from_millis((now - rec.heartbeat_ms.unwrap_or(now)).max(0) as u64),
            });
        }
        rec.sessions += 1;
    }
    rec.epoch += 1;
    rec.owner = Some(mine);
    rec.heartbeat_ms = Some(now);
    rec.cancel_requested = false;
    let lease = Lease {
        owner: owner.clone(),
        epoch: rec.epoch,
    };
    Ok((rec, lease))
}
