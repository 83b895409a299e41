//! `corral retry --replay-models`: a model gateway that answers from the run's journal, so a recorded step runs again without the provider.

use std::sync::Arc;

use corral::model::{Gateway, ModelCallRecord};
use corral::store::Store;

use super::{Exit, StateArgs};

/// The most bytes of recorded answers read from one journal; answers past
/// it are left out (their requests then fail with `not_recorded`).
const MAX_REPLAY_BYTES: usize = 64 << 20;

/// Journal entries read per page.
const PAGE: usize = 1_000;

/// A replaying gateway over every model call recorded in `run`'s journal.
pub(crate) fn gateway(run: &str, state: &StateArgs) -> Result<Arc<Gateway>, Exit> {
    let store = state.open()?;
    store.run(run).map_err(|e| super::store_error(&e))?;
    let records = recorded(store.as_ref(), run).map_err(|e| super::store_error(&e))?;
    Ok(Arc::new(Gateway::replay(records)))
}

/// The model calls in the receipts of `run`'s finished calls, in journal order.
fn recorded(
    store: &dyn Store,
    run: &str,
) -> Result<Vec<ModelCallRecord>, corral::store::StoreError> {
    let mut records = Vec::new();
    let (mut after, mut bytes, mut left_out) = (0, 0usize, 0usize);
    loop {
        let page = store.journal(run, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.kind == "call_finished") {
            let calls = &e.data["receipt"]["model_calls"];
            let Ok(calls) = serde_json::from_value::<Vec<ModelCallRecord>>(calls.clone()) else {
                continue;
            };
            for mut r in calls {
                let size = r.response.as_ref().map_or(0, |a| a.size());
                if bytes + size > MAX_REPLAY_BYTES {
                    r.response = None;
                    left_out += 1;
                } else {
                    bytes += size;
                }
                records.push(r);
            }
        }
    }
    if left_out > 0 {
        eprintln!(
            "warning: {left_out} recorded model answers are past the replay's {} MiB and left out",
            MAX_REPLAY_BYTES >> 20
        );
    }
    Ok(records)
}
