//! Running a validated workflow: steps start as soon as their dependencies allow, under the concurrency caps and one fuel budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::digest::{canonical_json, digest};
use crate::store::{StepRecord, now_ms};
use crate::{Budget, CallError, ErrorClass, HandoffPacket, Runtime};

use super::breaker::{Breaker, Transition};
use super::condition::Binding;
use super::definition::{Join, OnError};
use super::events::{Event, EventSink, StepStats};
use super::journal::Journal;
use super::model::{ForEach, Step, Workflow};
use super::reference::{Reference, Source};
use super::report::{
    CompensationReport, Counts, FuelUse, RunReport, RunStatus, StepReport, StepStatus,
};
use super::validate::param_value;

/// How to run a workflow.
pub struct RunOptions {
    pub run_id: String,
    /// Param values, already checked by [`resolve_params`].
    pub params: Value,
    pub events: EventSink,
    /// Cancelling stops scheduling and drops running calls.
    pub cancel: CancellationToken,
    /// Seed of the retry jitter, for reproducible schedules.
    pub seed: u64,
    /// Where the run is journaled; `None` runs in memory only.
    pub journal: Option<Arc<Journal>>,
    /// What earlier sessions of this run committed.
    pub resume: Option<Resume>,
    /// Keep running while approval steps wait, polling the store for answers
    /// (and their deadlines), instead of stopping with status `waiting`.
    pub wait_for_approvals: bool,
    /// Run the compensations of completed steps when the run is cancelled.
    pub compensate_on_cancel: bool,
}

impl RunOptions {
    /// An in-memory run with no events.
    pub fn new(run_id: impl Into<String>, params: Value) -> Self {
        Self {
            run_id: run_id.into(),
            params,
            events: super::events::discard(),
            cancel: CancellationToken::new(),
            seed: 0,
            journal: None,
            resume: None,
            wait_for_approvals: false,
            compensate_on_cancel: false,
        }
    }
}

/// What earlier sessions of a run left in the store.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// This session's number: 2 for the first resume.
    pub session: u32,
    /// Stored step state by step id.
    pub steps: HashMap<String, Prior>,
    /// Steps to run again even if what they read did not change (`corral retry`).
    pub force: BTreeSet<String>,
    /// Components whose digest changed since the run started (allowed explicitly).
    pub changed_components: Vec<String>,
    /// Params given new values for this session.
    pub changed_params: Vec<String>,
}

/// One step as an earlier session left it.
#[derive(Debug, Clone)]
pub struct Prior {
    pub record: StepRecord,
    pub output: Option<Arc<Value>>,
}

/// Checks `--param name=value` pairs against the declared params and fills defaults.
pub fn resolve_params(w: &Workflow, given: &[(String, String)]) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    let mut values = Map::new();
    for (name, raw) in given {
        match w.params.get(name) {
            None => {
                let known: Vec<&str> = w.params.keys().map(String::as_str).collect();
                errors.push(format!(
                    "unknown param `{name}`; the workflow declares: {}",
                    if known.is_empty() {
                        "(none)".into()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            Some(p) => match param_value(name, p.ty, raw) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    for (name, p) in &w.params {
        if values.contains_key(name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                values.insert(name.clone(), d.clone());
            }
            None => errors.push(format!(
                "param `{name}` ({}) is required: pass `--param {name}=<value>`",
                p.ty.json_type()
            )),
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(values))
    } else {
        Err(errors)
    }
}

/// Why a step (or one of its calls) failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub class: ErrorClass,
    pub message: String,
    special: Special,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    WorkflowFuel,
    Cancelled,
    /// A human rejected the step: it fails, whatever its `on_error`.
    Rejected,
}

impl Failure {
    fn permanent(kind: &str, message: String) -> Self {
        Self {
            kind: kind.into(),
            class: ErrorClass::Permanent,
            message,
            special: Special::None,
        }
    }

    fn from_call(e: &CallError) -> Self {
        Self {
            kind: e.kind_name().into(),
            class: e.class(),
            message: e.to_string(),
            special: Special::None,
        }
    }

    /// The workflow's fuel pool cannot cover the call: the run stops.
    fn workflow_fuel(message: String) -> Self {
        Self {
            kind: "workflow_fuel_exhausted".into(),
            class: ErrorClass::Permanent,
            message,
            special: Special::WorkflowFuel,
        }
    }

    fn cancelled() -> Self {
        Self {
            kind: "cancelled".into(),
            class: ErrorClass::Permanent,
            message: "the run was cancelled".into(),
            special: Special::Cancelled,
        }
    }
}

/// What a step consumed, summed over its calls.
#[derive(Debug, Default, Clone)]
struct Stats {
    /// Calls answered from the step cache.
    cache_hits: u32,
    attempts: u32,
    retries: u32,
    fallback: Option<String>,
    items: Option<usize>,
    iterations: Option<u32>,
    fuel: u64,
    peak: u64,
    wall_us: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.cache_hits += o.cache_hits;
        self.attempts += o.attempts;
        self.retries += o.retries;
        self.fallback = self.fallback.take().or(o.fallback);
        self.fuel += o.fuel;
        self.peak = self.peak.max(o.peak);
        self.wall_us += o.wall_us;
    }

    fn public(&self) -> StepStats {
        StepStats {
            attempts: self.attempts,
            retries: self.retries,
            fallback: self.fallback.clone(),
            items: self.items,
            iterations: self.iterations,
            fuel_used: self.fuel,
            peak_memory_bytes: self.peak,
            wall_time_us: self.wall_us,
        }
    }
}

struct FuelPool {
    remaining: u64,
    used: u64,
    /// Reserved by calls still running. A call dropped by cancellation never
    /// settles; the report shows its reservation as `unsettled`.
    outstanding: u64,
}

/// What every step task shares.
struct Exec {
    rt: Arc<Runtime>,
    w: Arc<Workflow>,
    run_id: String,
    params: Value,
    events: EventSink,
    cancel: CancellationToken,
    global: Semaphore,
    fuel: Mutex<FuelPool>,
    breakers: BTreeMap<String, Breaker>,
    rng: Mutex<fastrand::Rng>,
    journal: Option<Arc<Journal>>,
}

/// Outputs of finished dependencies, as one step sees them.
type Scope = HashMap<String, (StepStatus, Option<Arc<Value>>)>;

struct StepDone {
    index: usize,
    outcome: Result<Value, Failure>,
    stats: Stats,
}

impl Exec {
    fn emit(&self, e: Event) {
        if let Some(j) = &self.journal {
            j.record(&e);
        }
        (self.events)(&e);
    }

    /// The cache key of a call: the component's digest and the input's canonical JSON.
    fn cache_key(&self, agent: &str, input: &Value) -> String {
        let mut bytes = self.w.agents[agent].agent.digest().as_bytes().to_vec();
        bytes.push(b'\n');
        bytes.extend(canonical_json(input));
        digest(&bytes)
    }

    /// A live cached output for this call, if the step caches and one exists.
    fn cached(&self, step: &Step, key: &str) -> Option<Value> {
        let store = self.journal.as_ref()?.store();
        step.cache?;
        let d = store
            .cache_get(key, now_ms())
            .map_err(|e| tracing::warn!("step cache lookup failed: {e}"))
            .ok()??;
        let bytes = store.blob(&d).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn cache_put(&self, step: &Step, key: String, output: &Value) {
        let (Some(j), Some(ttl)) = (&self.journal, step.cache) else {
            return;
        };
        let bytes = serde_json::to_vec(output).unwrap_or_default();
        let d = digest(&bytes);
        let entry = crate::store::Entry {
            blob: Some((d.clone(), bytes)),
            cache: Some((
                key.clone(),
                d.clone(),
                ttl.map(|t| now_ms() + t.as_millis() as i64),
            )),
            ..crate::store::Entry::new(
                "cache_stored",
                Some(step.id.clone()),
                json!({ "step": step.id, "key": key, "output": d }).to_string(),
            )
        };
        j.append(entry);
    }

    fn announce(&self, agent: &str, t: Transition) {
        if let Some((from, to)) = t {
            self.emit(Event::Breaker {
                agent: agent.into(),
                from: from.name().into(),
                to: to.name().into(),
            });
        }
    }

    /// Reserves up to `want` fuel; the call may use no more than that.
    fn reserve(&self, want: u64) -> u64 {
        let mut pool = self.fuel.lock().unwrap();
        let grant = want.min(pool.remaining);
        pool.remaining -= grant;
        pool.outstanding += grant;
        grant
    }

    fn settle(&self, reserved: u64, used: u64) {
        let mut pool = self.fuel.lock().unwrap();
        pool.remaining += reserved.saturating_sub(used);
        pool.used += used;
        pool.outstanding -= reserved;
    }

    /// Calls `agent` with `input`, retrying per the step's policy.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        step: &Step,
        agent: &str,
        budget: &Budget,
        input: Value,
        item: Option<usize>,
        iteration: Option<u32>,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let wa = &self.w.agents[agent];
        let key = step.cache.map(|_| self.cache_key(agent, &input));
        if let Some(key) = &key
            && let Some(v) = self.cached(step, key)
        {
            stats.cache_hits += 1;
            self.emit(Event::CallCached {
                step: step.id.clone(),
                agent: agent.into(),
                item,
                key: key.clone(),
            });
            return Ok(v);
        }
        let packet = HandoffPacket::new(self.run_id.clone(), step.id.clone(), input);
        let breaker = &self.breakers[agent];
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Numbered across the step's calls and sessions: a call cut off by
            // a crash counts, and its rerun is the next attempt.
            let number = stats.attempts + 1;
            if self.cancel.is_cancelled() {
                return Err(Failure::cancelled());
            }
            let (admitted, t) = breaker.admit(Instant::now());
            self.announce(agent, t);
            let result = match admitted {
                Err(wait) => Err(Failure {
                    kind: "breaker_open".into(),
                    class: ErrorClass::Transient,
                    message: if wait.is_zero() {
                        format!(
                            "agent `{agent}` is failing fast: its circuit breaker is half-open and a trial call is in progress (agents.{agent}.breaker)"
                        )
                    } else {
                        format!(
                            "agent `{agent}` is failing fast: its circuit breaker is open for another {wait:.1?} after repeated failures (agents.{agent}.breaker)"
                        )
                    },
                    special: Special::None,
                }),
                Ok(trial) => {
                    // The slot first, then the fuel: a call waiting for a
                    // slot must not park fuel other calls could use.
                    let permit = tokio::select! {
                        p = self.global.acquire() => p.expect("the semaphore is never closed"),
                        _ = self.cancel.cancelled() => {
                            breaker.release(trial);
                            return Err(Failure::cancelled());
                        }
                    };
                    let limit = self.reserve(budget.fuel);
                    if limit == 0 {
                        breaker.release(trial);
                        return Err(Failure::workflow_fuel(format!(
                            "the workflow fuel budget of {} is spent; step `{}` was not started (raise `budget.fuel` in the workflow)",
                            self.w.fuel_budget, step.id
                        )));
                    }
                    self.emit(Event::CallStarted {
                        step: step.id.clone(),
                        agent: agent.into(),
                        attempt: number,
                        item,
                        iteration,
                    });
                    let call_budget = Budget {
                        fuel: limit,
                        ..budget.clone()
                    };
                    let out = self
                        .rt
                        .call(&wa.agent, &packet, &call_budget, &wa.grants)
                        .await;
                    let r = &out.receipt;
                    self.settle(limit, r.fuel_used);
                    stats.attempts += 1;
                    stats.fuel += r.fuel_used;
                    stats.peak = stats.peak.max(r.peak_memory_bytes);
                    stats.wall_us += r.wall_time_us;
                    self.emit(Event::CallFinished {
                        step: step.id.clone(),
                        agent: agent.into(),
                        attempt: number,
                        item,
                        iteration,
                        outcome: out
                            .result
                            .as_ref()
                            .err()
                            .map_or("ok", |e| e.kind_name())
                            .into(),
                        error: out.result.as_ref().err().map(|e| e.to_string()),
                        receipt: r.clone(),
                    });
                    drop(permit);
                    match out.result {
                        Ok(p) => {
                            let t = breaker.record(trial, true, Instant::now());
                            self.announce(agent, t);
                            if let Some(key) = &key {
                                self.cache_put(step, key.clone(), &p.payload);
                            }
                            return Ok(p.payload);
                        }
                        // The workflow's budget cut the call short: not the agent's fault.
                        Err(CallError::FuelExhausted { .. }) if limit < budget.fuel => {
                            breaker.release(trial);
                            return Err(Failure::workflow_fuel(format!(
                                "the workflow fuel budget of {} ran out during step `{}`: it got {limit} of its {} instructions (raise `budget.fuel` in the workflow)",
                                self.w.fuel_budget, step.id, budget.fuel
                            )));
                        }
                        // Bad input is the caller's fault, not the agent's health.
                        Err(e @ CallError::InvalidInput { .. }) => {
                            breaker.release(trial);
                            Err(Failure::from_call(&e))
                        }
                        Err(e) => {
                            let t = breaker.record(trial, false, Instant::now());
                            self.announce(agent, t);
                            let mut f = Failure::from_call(&e);
                            if matches!(
                                e,
                                CallError::FuelExhausted { .. }
                                    | CallError::MemoryLimit { .. }
                                    | CallError::DeadlineExceeded { .. }
                            ) {
                                f.message.push_str(&format!(
                                    "; in this workflow, set it in `budget:` of step `{}` or of agent `{agent}`",
                                    step.id
                                ));
                            }
                            Err(f)
                        }
                    }
                }
            };
            let failure = match result {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if attempt >= step.retry.max_attempts
                || !step
                    .retry
                    .retries(&failure.class.to_string(), &failure.kind)
            {
                return Err(failure);
            }
            let unit = self.rng.lock().unwrap().f64();
            let delay = step.retry.delay(attempt + 1, unit);
            stats.retries += 1;
            self.emit(Event::StepRetrying {
                step: step.id.clone(),
                agent: agent.into(),
                next_attempt: attempt + 1,
                delay_ms: delay.as_millis() as u64,
                error: failure.message.clone(),
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(Failure::cancelled()),
            }
        }
    }

    /// The step's agent with retries, then its fallback agent.
    async fn call_with_fallback(
        &self,
        step: &Step,
        input: Value,
        item: Option<usize>,
        iteration: Option<u32>,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let Some(fb) = &step.fallback else {
            return self
                .call(
                    step,
                    &step.agent,
                    &step.budget,
                    input,
                    item,
                    iteration,
                    stats,
                )
                .await;
        };
        let f = match self
            .call(
                step,
                &step.agent,
                &step.budget,
                input.clone(),
                item,
                iteration,
                stats,
            )
            .await
        {
            Err(f) if f.special == Special::None => f,
            other => return other,
        };
        self.emit(Event::StepFallback {
            step: step.id.clone(),
            agent: fb.clone(),
            error: f.message.clone(),
        });
        let out = self
            .call(
                step,
                fb,
                &step.fallback_budget,
                input,
                item,
                iteration,
                stats,
            )
            .await;
        if out.is_ok() {
            stats.fallback = Some(fb.clone());
        }
        out.map_err(|e| Failure {
            message: format!(
                "{} (after the primary agent failed: {})",
                e.message, f.message
            ),
            ..e
        })
    }

    /// Runs compensations (already in reverse completion order); each gets the step's output.
    async fn compensate(&self, steps: &[(u64, usize, Arc<Value>)]) -> Vec<CompensationReport> {
        let mut out = Vec::new();
        for (_, i, output) in steps {
            let step = &self.w.steps[*i];
            let agent = step.compensate.as_ref().expect("only compensable steps");
            let wa = &self.w.agents[agent];
            self.emit(Event::CompensationStarted {
                step: step.id.clone(),
                agent: agent.clone(),
            });
            let packet = HandoffPacket::new(
                self.run_id.clone(),
                format!("{}.compensate", step.id),
                (**output).clone(),
            );
            // Compensations have their agent's own budget, outside the
            // workflow's pool: a run that failed for fuel must still undo.
            let call = self
                .rt
                .call(&wa.agent, &packet, &wa.budget, &wa.grants)
                .await;
            let (outcome, error) = match &call.result {
                Ok(_) => ("ok".to_owned(), None),
                Err(e) => (
                    e.kind_name().to_owned(),
                    Some(format!("compensation of step `{}` failed: {e}", step.id)),
                ),
            };
            if let Some(e) = &error {
                tracing::error!("{e}");
            }
            self.emit(Event::CompensationFinished {
                step: step.id.clone(),
                agent: agent.clone(),
                outcome: outcome.clone(),
                error: error.clone(),
                receipt: call.receipt.clone(),
            });
            out.push(CompensationReport {
                step: step.id.clone(),
                agent: agent.clone(),
                outcome,
                error,
                fuel_used: call.receipt.fuel_used,
            });
        }
        out
    }

    fn resolve(
        &self,
        step: &Step,
        scope: &Scope,
        t: &super::reference::Template,
        item: Option<&Value>,
        output: Option<&Value>,
    ) -> Result<Value, Failure> {
        t.resolve(&|r: &Reference| lookup(&self.params, scope, r, item, output))
            .map_err(|e| Failure::permanent("input", format!("step `{}`: {e}", step.id)))
    }

    /// Runs one step; `base` is what earlier sessions of the run already spent on it.
    async fn run_step(self: Arc<Self>, index: usize, scope: Scope, base: Stats) -> StepDone {
        let step = &self.w.steps[index];
        let mut stats = base;
        let outcome = if let Some(fe) = &step.for_each {
            self.clone().for_each(index, fe, &scope, &mut stats).await
        } else if step.repeat.is_some() {
            self.repeat(step, &scope, &mut stats).await
        } else {
            match self.resolve(step, &scope, &step.input, None, None) {
                Ok(input) => {
                    self.call_with_fallback(step, input, None, None, &mut stats)
                        .await
                }
                Err(f) => Err(f),
            }
        };
        StepDone {
            index,
            outcome,
            stats,
        }
    }

    async fn for_each(
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
                        super::edges::json_type(&other)
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

    async fn repeat(
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

fn lookup(
    params: &Value,
    scope: &Scope,
    r: &Reference,
    item: Option<&Value>,
    output: Option<&Value>,
) -> Result<Value, String> {
    let (root, what) = match &r.source {
        Source::Param(name) => (
            params.get(name).unwrap_or(&Value::Null),
            format!("param `{name}`"),
        ),
        Source::Step(id) => match scope.get(id) {
            Some((_, Some(v))) => (v.as_ref(), format!("step `{id}`'s output")),
            // A degraded, skipped or not-yet-finished dependency reads as null.
            _ => return Ok(Value::Null),
        },
        Source::Item => (item.unwrap_or(&Value::Null), "the item".to_owned()),
        Source::Output => (
            output.unwrap_or(&Value::Null),
            "the iteration's output".to_owned(),
        ),
    };
    r.follow(root)
        .cloned()
        .ok_or_else(|| format!("`{}`: {what} has nothing at that path", r.text))
}

/// How often a run waiting for approvals looks for answers.
const APPROVAL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The scheduler's view of every step.
struct Board {
    status: Vec<StepStatus>,
    running: Vec<bool>,
    outputs: Vec<Option<Arc<Value>>>,
    reports: Vec<StepReport>,
    /// Completion order, for compensation in reverse.
    order: Vec<Option<u64>>,
    next_order: u64,
    /// Digest of what each started step read.
    fingerprints: Vec<Option<String>>,
    /// Approval steps waiting: deadline in Unix milliseconds.
    waiting: BTreeMap<usize, Option<i64>>,
}

impl Board {
    fn complete(&mut self, exec: &Exec, i: usize, v: Arc<Value>, s: Stats) {
        let step = &exec.w.steps[i];
        self.status[i] = StepStatus::Completed;
        // Cached: every call this session was a cache hit (no new attempts).
        let cached = s.cache_hits > 0 && s.attempts == self.reports[i].attempts;
        self.record_stats(i, &s);
        let r = &mut self.reports[i];
        r.status = StepStatus::Completed;
        r.error = None;
        r.error_kind = None;
        r.cached = cached;
        self.outputs[i] = Some(v.clone());
        self.order[i] = Some(self.next_order);
        self.next_order += 1;
        exec.emit(Event::StepCompleted {
            step: step.id.clone(),
            output: v,
            fingerprint: self.fingerprints[i].clone().unwrap_or_default(),
            cached: r.cached,
            stats: s.public(),
        });
    }

    fn record_stats(&mut self, i: usize, s: &Stats) {
        let r = &mut self.reports[i];
        (r.attempts, r.retries, r.fallback, r.items, r.iterations) = (
            s.attempts,
            s.retries,
            s.fallback.clone(),
            s.items,
            s.iterations,
        );
        (r.fuel_used, r.peak_memory_bytes, r.wall_time_us) = (s.fuel, s.peak, s.wall_us);
    }

    /// Applies a human's answer to a waiting approval or a paused step.
    fn answer(
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

    fn stats_of(&self, i: usize) -> Stats {
        let r = &self.reports[i];
        Stats {
            attempts: r.attempts,
            retries: r.retries,
            fuel: r.fuel_used,
            peak: r.peak_memory_bytes,
            wall_us: r.wall_time_us,
            ..Stats::default()
        }
    }

    /// Applies answers from the store and expired deadlines; returns the steps that changed.
    fn settle_approvals(
        &mut self,
        exec: &Exec,
        halt: &mut Option<(RunStatus, String)>,
    ) -> Vec<usize> {
        let mut changed = Vec::new();
        if self.waiting.is_empty() {
            return changed;
        }
        let answers: HashMap<String, Value> = exec
            .journal
            .as_ref()
            .and_then(|j| j.store().steps(j.run_id()).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status == "waiting" || r.status == "paused")
            .filter_map(|r| Some((r.step, r.answer?)))
            .collect();
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

/// Digest of everything a step reads: the targets of its references, and
/// all params when a condition reads `params`. A resume reuses a step's
/// outcome only while this is unchanged.
///
/// A `join: any` or `at_least` step can start while some dependencies still
/// run; what it would read of those is unknown then, so they are left out,
/// and the stored fingerprint lists the steps it did read (`digest|a,b`).
/// `only` recomputes it over that list; `None` if one of them has not
/// finished now.
fn fingerprint(
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

/// Runs `w` to the end (or until it fails, pauses, waits for a human, runs out of fuel or is cancelled).
pub async fn run(rt: Arc<Runtime>, w: Arc<Workflow>, opts: RunOptions) -> RunReport {
    let started = Instant::now();
    let exec = Arc::new(Exec {
        rt,
        run_id: opts.run_id.clone(),
        params: opts.params,
        events: opts.events,
        cancel: opts.cancel.clone(),
        global: Semaphore::new(w.max_concurrency as usize),
        fuel: Mutex::new(FuelPool {
            remaining: w.fuel_budget,
            used: 0,
            outstanding: 0,
        }),
        breakers: w
            .agents
            .iter()
            .map(|(n, a)| (n.clone(), Breaker::new(a.breaker)))
            .collect(),
        rng: Mutex::new(fastrand::Rng::with_seed(opts.seed)),
        journal: opts.journal.clone(),
        w: w.clone(),
    });
    let resume = opts.resume.unwrap_or_default();
    match &opts.journal {
        Some(_) if resume.session > 1 => {
            let interrupted = w
                .steps
                .iter()
                .filter(|s| {
                    resume
                        .steps
                        .get(&s.id)
                        .is_some_and(|p| p.record.status == "running")
                })
                .map(|s| s.id.clone())
                .collect();
            exec.emit(Event::RunResumed {
                run_id: opts.run_id.clone(),
                session: resume.session,
                interrupted,
                changed_components: resume.changed_components.clone(),
                changed_params: resume.changed_params.clone(),
                params: exec.params.clone(),
            });
        }
        _ => exec.emit(Event::RunStarted {
            run_id: opts.run_id.clone(),
            workflow: w.name.clone(),
            steps: w.steps.len(),
        }),
    }

    let n = w.steps.len();
    let mut prior: Vec<Option<Prior>> = w
        .steps
        .iter()
        .map(|s| resume.steps.get(&s.id).cloned())
        .collect();
    let mut board = Board {
        status: vec![StepStatus::Pending; n],
        running: vec![false; n],
        outputs: vec![None; n],
        reports: w
            .steps
            .iter()
            .map(|s| StepReport {
                id: s.id.clone(),
                agent: s.agent.clone(),
                status: StepStatus::Pending,
                attempts: 0,
                retries: 0,
                fallback: None,
                items: None,
                iterations: None,
                fuel_used: 0,
                peak_memory_bytes: 0,
                wall_time_us: 0,
                error: None,
                error_kind: None,
                skip_reason: None,
                cached: false,
                reused: false,
            })
            .collect(),
        order: vec![None; n],
        next_order: resume
            .steps
            .values()
            .filter_map(|p| p.record.completed_order)
            .max()
            .map_or(0, |o| o + 1),
        fingerprints: vec![None; n],
        waiting: BTreeMap::new(),
    };
    let mut halt: Option<(RunStatus, String)> = None;
    // One step runs inline in this task: a chain then never crosses threads,
    // which costs more than the step itself. Steps that become ready while
    // it runs are spawned, so parallel steps still use every core.
    let mut inline: FuturesUnordered<BoxFuture<'static, StepDone>> = FuturesUnordered::new();
    let mut set: JoinSet<StepDone> = JoinSet::new();
    let mut task_step: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in w.steps.iter().enumerate() {
        for &d in &s.deps {
            dependents[d].push(i);
        }
    }
    // Steps whose readiness may have changed; steps are in dependency order,
    // so taking the lowest first settles skips in one pass.
    let mut candidates: BTreeSet<usize> = (0..n).collect();
    // Ready steps waiting for a slot: no more steps run at once than the
    // concurrency cap allows calls, so none sits spawned on the semaphore.
    let mut deferred: BTreeSet<usize> = BTreeSet::new();
    let mut in_flight = 0usize;
    let mut cancel_handled = false;
    let wait_mode = opts.wait_for_approvals && exec.journal.is_some();

    loop {
        while halt.is_none() {
            let Some(i) = candidates.pop_first() else {
                break;
            };
            if board.status[i] != StepStatus::Pending || board.running[i] {
                continue;
            }
            let step = &w.steps[i];
            match readiness(step, &board.status, &board.running) {
                Ready::Wait => continue,
                Ready::Skip(reason) => {
                    skip(&exec, &mut board, i, reason);
                    candidates.extend(&dependents[i]);
                    continue;
                }
                Ready::Go if in_flight >= w.max_concurrency as usize => {
                    deferred.insert(i);
                    continue;
                }
                Ready::Go => {}
            }
            let scope: Scope = step
                .deps
                .iter()
                .map(|&d| {
                    (
                        w.steps[d].id.clone(),
                        (board.status[d], board.outputs[d].clone()),
                    )
                })
                .collect();
            if let Some(cond) = &step.when {
                let lookup = |id: &str| Some(when_step(id, &scope));
                let vars = [
                    ("params", Binding::Json(&exec.params)),
                    ("steps", Binding::Steps(&lookup)),
                ];
                match cond.eval_with(&vars) {
                    Ok(true) => {}
                    Ok(false) => {
                        skip(
                            &exec,
                            &mut board,
                            i,
                            format!("`when: {}` was false", cond.source()),
                        );
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                    Err(e) => {
                        let f = Failure::permanent(
                            "condition",
                            format!("step `{}`: when {e}", step.id),
                        );
                        halt = halt.or(finish_failed(
                            &exec,
                            step,
                            &mut board,
                            i,
                            &f,
                            Stats::default(),
                        ));
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                }
            }
            if exec.journal.is_some() {
                board.fingerprints[i] = fingerprint(&exec, step, &scope, None);
            }
            // What an earlier session left decides whether the step runs.
            let mut base = Stats::default();
            let mut deadline = None;
            if let Some(p) = prior[i].take() {
                let rec = &p.record;
                let forced = resume.force.contains(&step.id);
                let r = &mut board.reports[i];
                (r.retries, r.fuel_used, r.peak_memory_bytes, r.wall_time_us) = (
                    rec.retries,
                    rec.fuel_used,
                    rec.peak_memory_bytes,
                    rec.wall_time_us,
                );
                r.attempts = rec.attempts;
                base = board.stats_of(i);
                let r = &mut board.reports[i];
                match rec.status.as_str() {
                    "completed" | "degraded"
                        if !forced
                            && still_holds(
                                &exec,
                                step,
                                &scope,
                                rec.fingerprint.as_deref(),
                                board.fingerprints[i].as_deref(),
                            ) =>
                    {
                        let degraded = rec.status == "degraded";
                        let st = if degraded {
                            StepStatus::Degraded
                        } else {
                            StepStatus::Completed
                        };
                        board.status[i] = st;
                        r.status = st;
                        r.reused = true;
                        r.cached = rec.cached;
                        r.fallback = rec.fallback.clone();
                        r.error = rec.error.clone();
                        r.error_kind = rec.error_kind.clone();
                        board.outputs[i] = p.output.clone();
                        board.order[i] = rec.completed_order;
                        exec.emit(Event::StepReused {
                            step: step.id.clone(),
                        });
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                    "completed" | "degraded" => {
                        exec.emit(Event::StepRerun {
                            step: step.id.clone(),
                            reason: if forced {
                                "`corral retry` asked for it".into()
                            } else {
                                "what it reads changed since the earlier session".into()
                            },
                        });
                    }
                    "waiting" | "paused" if rec.answer.is_some() && !forced => {
                        let answer = rec.answer.clone().unwrap_or_default();
                        board.answer(&exec, i, &answer, &mut halt);
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                    "waiting" => {
                        deadline = rec.waiting.as_ref().and_then(|w| w["deadline_ms"].as_i64());
                    }
                    _ => {}
                }
            }
            if let Some(a) = &step.approval {
                let context = match exec.resolve(step, &scope, &step.input, None, None) {
                    Ok(v) => v,
                    Err(f) => {
                        halt = halt.or(finish_failed(
                            &exec,
                            step,
                            &mut board,
                            i,
                            &f,
                            Stats::default(),
                        ));
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                };
                let deadline = deadline.or(a.timeout.map(|t| now_ms() + t.as_millis() as i64));
                board.status[i] = StepStatus::Waiting;
                board.reports[i].status = StepStatus::Waiting;
                board.waiting.insert(i, deadline);
                exec.emit(Event::ApprovalRequested {
                    step: step.id.clone(),
                    prompt: a.prompt.clone(),
                    schema: a.schema.clone(),
                    context,
                    deadline_ms: deadline,
                });
                continue;
            }
            in_flight += 1;
            board.running[i] = true;
            exec.emit(Event::StepStarted {
                step: step.id.clone(),
            });
            let fut = exec.clone().run_step(i, scope, base);
            if inline.is_empty() {
                inline.push(Box::pin(fut));
            } else {
                let handle = set.spawn(fut);
                task_step.insert(handle.id(), i);
            }
        }
        if set.is_empty() && inline.is_empty() {
            // Only approvals can move the run now.
            if halt.is_none() && !board.waiting.is_empty() {
                let changed = board.settle_approvals(&exec, &mut halt);
                if !changed.is_empty() {
                    for i in changed {
                        candidates.extend(&dependents[i]);
                    }
                    continue;
                }
            }
            if halt.is_none() && exec.cancel.is_cancelled() {
                halt = Some((RunStatus::Cancelled, "the run was cancelled".into()));
            }
            if !(wait_mode && halt.is_none() && !board.waiting.is_empty()) {
                break;
            }
        }
        let done = tokio::select! {
            Some(done) = inline.next(), if !inline.is_empty() => done,
            Some(joined) = set.join_next_with_id(), if !set.is_empty() => match joined {
                Ok((_, done)) => done,
                Err(e) => {
                    let i = task_step[&e.id()];
                    let f = if e.is_cancelled() { Failure::cancelled() } else { Failure::permanent("host", format!("step `{}` crashed the host task: {e}", w.steps[i].id)) };
                    StepDone { index: i, outcome: Err(f), stats: Stats::default() }
                }
            },
            _ = tokio::time::sleep(APPROVAL_POLL), if wait_mode && halt.is_none() && !board.waiting.is_empty() => {
                for i in board.settle_approvals(&exec, &mut halt) {
                    candidates.extend(&dependents[i]);
                }
                continue;
            }
            _ = exec.cancel.cancelled(), if !cancel_handled => {
                cancel_handled = true;
                halt = Some((RunStatus::Cancelled, "the run was cancelled".into()));
                set.abort_all();
                // Dropping the inline step cancels its call too.
                inline.clear();
                for i in 0..n {
                    if board.running[i] {
                        board.running[i] = false;
                        board.status[i] = StepStatus::Cancelled;
                        let r = &mut board.reports[i];
                        r.status = StepStatus::Cancelled;
                        r.error = Some("the run was cancelled while this step ran".into());
                        r.error_kind = Some("cancelled".into());
                    }
                }
                continue;
            }
        };
        let i = done.index;
        board.running[i] = false;
        in_flight -= 1;
        candidates.extend(&dependents[i]);
        // One slot freed: the first step waiting for one takes it.
        if let Some(d) = deferred.pop_first() {
            candidates.insert(d);
        }
        match done.outcome {
            Ok(v) => board.complete(&exec, i, Arc::new(v), done.stats),
            Err(f) => {
                let h = finish_failed(&exec, &w.steps[i], &mut board, i, &f, done.stats);
                halt = halt.or(h);
            }
        }
    }

    // Steps an earlier session completed and this one did not reach still count for compensation.
    let mut compensable: Vec<(u64, usize, Arc<Value>)> = Vec::new();
    for (i, s) in w.steps.iter().enumerate() {
        if s.compensate.is_none() {
            continue;
        }
        if board.status[i] == StepStatus::Completed
            && let (Some(o), Some(v)) = (board.order[i], &board.outputs[i])
        {
            compensable.push((o, i, v.clone()));
        } else if let Some(p) = &prior[i]
            && p.record.status == "completed"
            && let (Some(o), Some(v)) = (p.record.completed_order, &p.output)
        {
            compensable.push((o, i, v.clone()));
        }
    }
    // A run whose journal failed (or whose lease another process took) must
    // not undo steps the store may still show as done.
    let journal_ok = exec.journal.as_ref().is_none_or(|j| j.result().is_ok());
    let compensate = journal_ok
        && match &halt {
            Some((RunStatus::Failed | RunStatus::FuelExhausted, _)) => true,
            Some((RunStatus::Cancelled, _)) => {
                opts.compensate_on_cancel
                    || exec
                        .journal
                        .as_ref()
                        .is_some_and(|j| j.compensate_requested())
            }
            _ => false,
        };
    let compensations = if compensate {
        compensable.sort_by_key(|c| std::cmp::Reverse(c.0));
        exec.compensate(&compensable).await
    } else {
        Vec::new()
    };

    let scope: Scope = w
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), (board.status[i], board.outputs[i].clone())))
        .collect();
    let outputs_value = Value::Object(
        w.outputs
            .iter()
            .map(|(name, t)| {
                let v = t
                    .resolve(&|r| lookup(&exec.params, &scope, r, None, None))
                    .unwrap_or(Value::Null);
                (name.clone(), v)
            })
            .collect(),
    );
    let mut counts = Counts {
        total: n,
        ..Counts::default()
    };
    for r in &board.reports {
        match r.status {
            StepStatus::Completed => counts.completed += 1,
            StepStatus::Failed => counts.failed += 1,
            StepStatus::Degraded => counts.degraded += 1,
            StepStatus::Skipped => counts.skipped += 1,
            _ => {}
        }
        if r.retries > 0 {
            counts.retried += 1;
        }
    }
    let waiting: Vec<String> = board
        .waiting
        .keys()
        .map(|&i| w.steps[i].id.clone())
        .collect();
    let (status, error) = match halt {
        Some((s, e)) => (s, Some(e)),
        None if !waiting.is_empty() => (
            RunStatus::Waiting,
            Some(format!(
                "waiting for a human to answer: {}; use `corral approve {} <step> --input <json>` or `corral reject`",
                waiting.join(", "),
                opts.run_id
            )),
        ),
        None if counts.degraded > 0 => (RunStatus::Degraded, None),
        None => (RunStatus::Completed, None),
    };
    let (used, unsettled) = {
        let pool = exec.fuel.lock().unwrap();
        (pool.used, pool.outstanding)
    };
    exec.emit(Event::RunFinished {
        status: status.name().into(),
        fuel_used: used,
        error: error.clone(),
    });
    let mut report = RunReport {
        run_id: opts.run_id,
        workflow: w.name.clone(),
        status,
        steps: board.reports,
        counts,
        fuel: FuelUse {
            used,
            budget: w.fuel_budget,
            unsettled,
        },
        outputs: outputs_value,
        breakers: exec.breakers.iter().map(|(n, b)| b.report(n)).collect(),
        compensations,
        waiting,
        wall_time_us: started.elapsed().as_micros() as u64,
        error,
        summary: String::new(),
    };
    report.summarize();
    report
}

enum Ready {
    Wait,
    Go,
    Skip(String),
}

fn readiness(step: &Step, status: &[StepStatus], running: &[bool]) -> Ready {
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

fn skip(exec: &Exec, board: &mut Board, i: usize, reason: String) {
    board.status[i] = StepStatus::Skipped;
    board.reports[i].status = StepStatus::Skipped;
    board.reports[i].skip_reason = Some(reason.clone());
    exec.emit(Event::StepSkipped {
        step: exec.w.steps[i].id.clone(),
        reason,
    });
}

/// Applies a step's final failure; returns how the run halts, if it does.
fn finish_failed(
    exec: &Exec,
    step: &Step,
    board: &mut Board,
    i: usize,
    f: &Failure,
    s: Stats,
) -> Option<(RunStatus, String)> {
    board.record_stats(i, &s);
    let r = &mut board.reports[i];
    let status = &mut board.status[i];
    r.error = Some(f.message.clone());
    r.error_kind = Some(f.kind.clone());
    let id = step.id.clone();
    let (error, kind, stats) = (f.message.clone(), f.kind.clone(), s.public());
    match f.special {
        Special::Cancelled => {
            *status = StepStatus::Cancelled;
            r.status = StepStatus::Cancelled;
            Some((RunStatus::Cancelled, "the run was cancelled".into()))
        }
        Special::WorkflowFuel => {
            *status = StepStatus::Failed;
            r.status = StepStatus::Failed;
            exec.emit(Event::StepFailed {
                step: id,
                error,
                kind,
                stats,
            });
            Some((RunStatus::FuelExhausted, f.message.clone()))
        }
        Special::None
            if f.class == ErrorClass::Degradable || step.on_error == OnError::Continue =>
        {
            *status = StepStatus::Degraded;
            r.status = StepStatus::Degraded;
            exec.emit(Event::StepDegraded {
                step: id,
                error,
                kind,
                fingerprint: board.fingerprints[i].clone().unwrap_or_default(),
                stats,
            });
            None
        }
        Special::None if step.on_error == OnError::Pause => {
            *status = StepStatus::Paused;
            r.status = StepStatus::Paused;
            exec.emit(Event::StepPaused {
                step: id.clone(),
                error,
                kind,
                stats,
            });
            // A human may answer with the output the step should have produced.
            let schema = exec
                .w
                .agents
                .get(&step.agent)
                .map(|a| a.agent.info().output_schema.source().clone())
                .unwrap_or(Value::Null);
            exec.emit(Event::ApprovalRequested {
                step: id.clone(),
                prompt: format!(
                    "step `{id}` failed: {}. Approve with the output it should have produced (it must match agent `{}`'s output schema), reject to fail the run, or `corral resume` to try it again",
                    f.message, step.agent
                ),
                schema,
                context: Value::Null,
                deadline_ms: None,
            });
            Some((
                RunStatus::Paused,
                format!(
                    "step `{id}` failed and the run is paused for a human: {}",
                    f.message
                ),
            ))
        }
        Special::None | Special::Rejected => {
            *status = StepStatus::Failed;
            r.status = StepStatus::Failed;
            exec.emit(Event::StepFailed {
                step: id.clone(),
                error,
                kind,
                stats,
            });
            Some((
                RunStatus::Failed,
                format!("step `{id}` failed: {}", f.message),
            ))
        }
    }
}

/// The `steps` variable of a `when`: status and output of the steps it reads.
/// A step as a `when` sees it, its output borrowed: the condition converts
/// only the paths it reads.
fn when_step<'s>(id: &str, scope: &'s Scope) -> (Value, Option<&'s Value>) {
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
