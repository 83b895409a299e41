//! `for_each`: one call per list element under the step's own cap; the first failure stops the rest.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::model::ForEach;

use super::exec::{Exec, Scope, lookup};
use super::failure::{Failure, Special};
use super::stats::Stats;

impl Exec {
    /// Runs the step once per element of its list; the output is the list of outputs.
    pub(super) async fn for_each(
        self: Arc<Self>,
        index: usize,
        fe: &ForEach,
        scope: &Scope,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let step = &self.w.steps[index];
        let (list, max_items) = (&fe.list, fe.max_items);
        let items = match lookup(&self.params, scope, list, None, None) {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                return Err(Failure::permanent(
                    "input",
                    format!(
                        "step `{}`: `for_each: {}` is {}, not a list",
                        step.id,
                        list.text,
                        crate::edges::json_type(&other)
                    ),
                ));
            }
            Err(e) => {
                return Err(Failure::permanent(
                    "input",
                    format!("step `{}`: {e}", step.id),
                ));
            }
        };
        if items.len() > max_items as usize {
            return Err(Failure::permanent(
                "input",
                format!(
                    "step `{}`: `for_each` has {} items, over its `max_items` of {max_items}",
                    step.id,
                    items.len()
                ),
            ));
        }
        stats.items = Some(items.len());
        let limit = Arc::new(Semaphore::new(fe.max_concurrency as usize));
        let scope = Arc::new(scope.clone());
        let mut set = JoinSet::new();
        for (k, item) in items.into_iter().enumerate() {
            let exec = self.clone();
            let limit = limit.clone();
            let scope = scope.clone();
            set.spawn(async move {
                let _slot = limit.acquire().await.expect("never closed");
                let step = &exec.w.steps[index];
                let mut s = Stats::default();
                let r = match exec.resolve(step, &scope, &step.input, Some(&item), None) {
                    Ok(input) => {
                        exec.call_with_fallback(step, input, Some(k), None, &mut s)
                            .await
                    }
                    Err(f) => Err(f),
                };
                (k, r, s)
            });
        }
        let mut results: Vec<Option<Value>> = vec![None; stats.items.unwrap_or(0)];
        // The step fails on its first failed item: the others are stopped so
        // they spend no more fuel. A run-level failure (the fuel budget,
        // cancellation) outranks an item's own; otherwise the lowest item wins.
        let mut error: Option<(usize, Failure)> = None;
        while let Some(joined) = set.join_next().await {
            let (k, r) = match joined {
                Ok((k, r, s)) => {
                    stats.merge(s);
                    (k, r)
                }
                Err(e) if e.is_cancelled() => continue,
                Err(e) => (
                    usize::MAX,
                    Err(Failure::permanent(
                        "host",
                        format!("step `{}`: an item task crashed: {e}", step.id),
                    )),
                ),
            };
            match r {
                Ok(v) => results[k] = Some(v),
                Err(f) => {
                    let better = match &error {
                        None => true,
                        Some((j, old)) => {
                            (f.special != Special::None && old.special == Special::None)
                                || (f.special == old.special && k < *j)
                        }
                    };
                    if better {
                        error = Some((k, f));
                    }
                    set.abort_all();
                }
            }
        }
        match error {
            Some((k, f)) => Err(Failure {
                message: format!("item {k}: {}", f.message),
                ..f
            }),
            None => Ok(Value::Array(
                results
                    .into_iter()
                    .map(|v| v.unwrap_or(Value::Null))
                    .collect(),
            )),
        }
    }
}
