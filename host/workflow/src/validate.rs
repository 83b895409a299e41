//! Static validation: every agent loaded and granted, every number within its limit, every reference and condition compiled, no cycles, every edge type-checked.
//!
//! The checks live in the modules below, by concern; this one runs them in
//! order and assembles the `Workflow` of `model.rs`.

mod agents;
pub mod edges;
mod graph;
mod knobs;
mod steps;

use std::collections::HashMap;

use serde_json::Value;

use corral_runtime::{Budget, Runtime};

use super::condition::{self, CompileError, Condition};
use super::definition::{BudgetDef, ParamType};
use super::limits::MAX_PARAM_BYTES;
use super::model::{Step, Workflow};
use super::scope::{LocalScope, Refusal, Scope};
use super::source::{Diagnostic, SourceMap, WorkflowSource};
use edges::json_type;

/// Validates a parsed workflow as the operator's own file: its paths
/// confined to its directory and `rt`'s allowed paths, environment values
/// from corral's own environment. Every problem found is reported, not just
/// the first.
pub async fn validate(src: &WorkflowSource, rt: &Runtime) -> Result<Workflow, Vec<Diagnostic>> {
    let scope = LocalScope::new(&src.base_dir, &rt.config().allowed_paths);
    validate_in(src, rt, &scope).await
}

/// Validates a parsed workflow, resolving every component, directory and
/// environment value it names through `scope`.
pub async fn validate_in(
    src: &WorkflowSource,
    rt: &Runtime,
    scope: &dyn Scope,
) -> Result<Workflow, Vec<Diagnostic>> {
    let mut v = Validator {
        map: &src.map,
        diags: Vec::new(),
        max_memory: rt.config().engine.max_memory_bytes,
        conditions: condition::compile_workflow(&src.def).await,
    };
    let agents = v.agents(src, rt, scope).await;
    v.params(src);
    let def = &src.def;
    v.run_budget(&def.budget);
    // Ids first, so references can be checked in any order.
    let ids = v.step_ids(def)?;
    let steps: Vec<Option<Step>> = def
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| v.step(i, s, src, &ids, &agents))
        .collect();
    let outputs = v.outputs(src, &ids);
    v.checkpoint()?;
    let steps: Vec<Step> = steps
        .into_iter()
        .map(|s| s.expect("no diagnostics means every step compiled"))
        .collect();
    let ordered = v.ordered(&steps)?;
    v.step_edges(&steps, src, &agents);
    v.diags
        .extend(condition::typecheck::check(src, &steps, &agents));
    v.output_edges(&steps, &outputs, src, &agents);
    v.checkpoint()?;
    Ok(Workflow {
        name: def.name.clone(),
        file: src.map.file.clone(),
        digest: src.digest.clone(),
        text: src.text.clone(),
        agents,
        params: def.params.clone(),
        fuel_budget: def.budget.fuel.0,
        token_budget: def.budget.tokens.0,
        artifact_budget: def.budget.artifact_bytes.0,
        max_concurrency: def.budget.max_concurrency,
        steps: ordered,
        outputs,
    })
}

/// The diagnostics so far, with their places, and what the checks share.
struct Validator<'m> {
    map: &'m SourceMap,
    diags: Vec<Diagnostic>,
    /// The engine's largest memory: no budget may ask for more.
    max_memory: u64,
    /// Every `when` and `until`, compiled off the executor before the checks.
    conditions: HashMap<String, Result<Condition, CompileError>>,
}

impl Validator<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags.push(self.map.diag(field, message));
    }

    /// Reports a name the scope refused, keeping whether it was denied.
    fn refused(&mut self, field: impl Into<String>, refusal: Refusal) {
        let mut d = self.map.diag(field, refusal.message);
        d.denied = refusal.denied;
        self.diags.push(d);
    }

    /// Stops here if anything was reported: later checks rely on earlier ones.
    fn checkpoint(&mut self) -> Result<(), Vec<Diagnostic>> {
        if self.diags.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.diags))
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The budget of a call: the step's fields over the agent's over the defaults.
pub fn merge_budget(base: &Budget, over: &BudgetDef) -> Budget {
    Budget {
        fuel: over.fuel.map(|c| c.0).unwrap_or(base.fuel),
        memory_bytes: over.memory.map(|b| b.0).unwrap_or(base.memory_bytes),
        timeout: over.timeout.map(|d| d.0).unwrap_or(base.timeout),
        tokens: over.tokens.map(|c| c.0).unwrap_or(base.tokens),
        http_requests: over.http_requests.unwrap_or(base.http_requests),
        http_request_bytes: over
            .http_request_bytes
            .map(|b| b.0)
            .unwrap_or(base.http_request_bytes),
        http_response_bytes: over
            .http_response_bytes
            .map(|b| b.0)
            .unwrap_or(base.http_response_bytes),
        ..base.clone()
    }
}

fn dotted(at: &[String]) -> String {
    at.iter().map(|k| format!(".{k}")).collect()
}

fn param_accepts(ty: ParamType, v: &Value) -> bool {
    if ty == ParamType::Artifact {
        return serde_json::from_value::<corral_runtime::artifact::Artifact>(v.clone()).is_ok();
    }
    matches!(
        (ty, v),
        (ParamType::String, Value::String(_))
            | (ParamType::Boolean, Value::Bool(_))
            | (ParamType::Array, Value::Array(_))
            | (ParamType::Object, Value::Object(_))
            | (ParamType::Number, Value::Number(_))
    ) || (ty == ParamType::Integer && (v.is_i64() || v.is_u64()))
}

/// Checks and converts a `--param` value for `ty`: strings stay strings,
/// other types are parsed as JSON. A value over [`MAX_PARAM_BYTES`] is
/// refused before it is parsed.
pub fn param_value(name: &str, ty: ParamType, raw: &str) -> Result<Value, String> {
    if raw.len() > MAX_PARAM_BYTES {
        return Err(format!(
            "param `{name}` is {} bytes; a param value may have at most {MAX_PARAM_BYTES} bytes (1 MiB)",
            raw.len()
        ));
    }
    let value = match ty {
        ParamType::String => Value::String(raw.to_owned()),
        ParamType::Artifact => serde_json::from_str(raw).map_err(|_| {
            format!("param `{name}` is an artifact: `corral run` takes it as the path of a file (`--param {name}=FILE`), and a resumed run keeps the file it started with")
        })?,
        _ => serde_json::from_str(raw)
            .map_err(|e| format!("param `{name}` must be {} (JSON): {e}", ty.json_type()))?,
    };
    if param_accepts(ty, &value) {
        Ok(value)
    } else {
        Err(format!(
            "param `{name}` must be {}, got {}",
            ty.name(),
            json_type(&value)
        ))
    }
}
