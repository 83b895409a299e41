//! The step cache: a call's key, lookup and store.

use serde_json::{Value, json};

use crate::model::Step;
use corral_runtime::Budget;
use corral_runtime::digest::{canonical_json, digest};
use corral_store::now_ms;

use super::exec::Exec;

impl Exec {
    /// The cache key of a call: everything that can change its result.
    /// That is the component, the input, what the agent is granted (a
    /// directory's contents or a variable's value can change the output),
    /// the limits it runs under (a smaller budget might have failed), the
    /// agents it may delegate to (their components answer for part of it),
    /// and the scope entries are shared in (one tenant's never serve
    /// another's).
    pub(super) fn cache_key(
        &self,
        step: &Step,
        agent: &str,
        budget: &Budget,
        input: &Value,
    ) -> String {
        let wa = &self.w.agents[agent];
        let mut key = json!({
            "version": 2,
            "scope": self.cache_scope,
            "component": wa.agent.digest(),
            "grants": wa.grants,
            "budget": budget,
            "input": input,
        });
        // Only for a step that delegates, so that other keys stay as they were.
        if !step.delegates.is_empty() {
            let delegates: serde_json::Map<String, Value> = step
                .delegates
                .iter()
                .filter_map(|d| self.w.agents.get(d).map(|a| (d, a)))
                .map(|(d, a)| {
                    let v = json!({ "component": a.agent.digest(), "grants": a.grants, "budget": a.budget });
                    (d.clone(), v)
                })
                .collect();
            key["delegates"] = json!({
                "agents": delegates,
                "max": step.max_delegations,
                "depth": step.delegation_depth,
            });
        }
        digest(&canonical_json(&key))
    }

    /// A live cached output for this call, if the step caches and one
    /// exists. The store is read on a blocking thread, never the scheduler's.
    pub(super) async fn cached(&self, step: &Step, key: &str) -> Option<Value> {
        step.cache?;
        let store = self.journal.as_ref()?.store().clone();
        let key = key.to_owned();
        let read = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
            let Some(d) = store.cache_get(&key, now_ms()).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            store.blob(&d).map_err(|e| e.to_string())
        });
        match read.await {
            Ok(Ok(bytes)) => serde_json::from_slice(&bytes?).ok(),
            Ok(Err(e)) => {
                tracing::warn!("step cache lookup failed: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("step cache lookup failed: {e}");
                None
            }
        }
    }

    /// Keeps `output` for later runs, unless it names artifacts: those
    /// belong to this run, and a later run given the reference would not
    /// hold them (its next step would be refused), so that step runs again.
    pub(super) fn cache_put(&self, step: &Step, key: String, output: &Value) {
        let (Some(j), Some(ttl)) = (&self.journal, step.cache) else {
            return;
        };
        if !corral_runtime::artifact::references(output).is_empty() {
            return;
        }
        let bytes = serde_json::to_vec(output).unwrap_or_default();
        let d = digest(&bytes);
        let entry = corral_store::Entry {
            blob: Some((d.clone(), bytes)),
            cache: Some((
                key.clone(),
                d.clone(),
                ttl.map(|t| {
                    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
                    now_ms().saturating_add(ms)
                }),
            )),
            ..corral_store::Entry::new(
                "cache_stored",
                Some(step.id.clone()),
                json!({ "step": step.id, "key": key, "output": d }).to_string(),
            )
        };
        j.append(entry);
    }
}
