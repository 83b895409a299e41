//! Reading back from a run's journal the delegated calls that completed in the steps its last session left running, so that a resumed step reuses them instead of calling them again.

use std::collections::{BTreeSet, HashMap};

use corral_runtime::Receipt;
use corral_store::{StepState, Store, StoreError};

use super::run::{Prior, PriorDelegate};

/// The most bytes of earlier answers (outputs and receipts) a resume holds
/// for reuse; calls past it are made again.
const MAX_REUSED_BYTES: usize = 64 << 20;

/// Journal entries read per page.
const PAGE: usize = 1_000;

/// The completed delegated calls of the steps in `steps` that were running
/// (and are not in `force`, which runs afresh), by step id, in journal order.
pub(crate) fn prior_delegates(
    store: &dyn Store,
    run: &str,
    steps: &HashMap<String, Prior>,
    force: &BTreeSet<String>,
) -> Result<HashMap<String, Vec<PriorDelegate>>, StoreError> {
    let running: BTreeSet<&str> = steps
        .iter()
        .filter(|(id, p)| p.record.status == StepState::Running && !force.contains(*id))
        .map(|(id, _)| id.as_str())
        .collect();
    let mut found: HashMap<String, Vec<PriorDelegate>> = HashMap::new();
    if running.is_empty() {
        return Ok(found);
    }
    let (mut after, mut bytes) = (0, 0usize);
    loop {
        let page = store.journal(run, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.kind == "delegate_finished") {
            let Some(step) = e.step.as_deref().filter(|s| running.contains(s)) else {
                continue;
            };
            let d = &e.data;
            let (Some(component), Some(input), Some(output)) = (
                d["component"].as_str(),
                d["input"].as_str(),
                d["output"].as_str(),
            ) else {
                continue;
            };
            let Ok(receipt) = serde_json::from_value::<Receipt>(d["receipt"].clone()) else {
                continue;
            };
            let Some(blob) = store.blob(output)? else {
                continue;
            };
            bytes += blob.len() + d["receipt"].to_string().len();
            if bytes > MAX_REUSED_BYTES {
                return Ok(found);
            }
            let Ok(output) = serde_json::from_slice(&blob) else {
                continue;
            };
            found
                .entry(step.to_owned())
                .or_default()
                .push(PriorDelegate {
                    component: component.to_owned(),
                    input: input.to_owned(),
                    output: std::sync::Arc::new(output),
                    receipt,
                });
        }
    }
    Ok(found)
}
