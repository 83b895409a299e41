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

use crate::{Budget, CallError, ErrorClass, HandoffPacket, Runtime};

use super::breaker::{Breaker, Transition};
use super::definition::{Join, OnError};
use super::events::{Event, EventSink};
use super::model::{ForEach, Step, Workflow};
use super::reference::{Reference, Source};
use super::report::{Counts, FuelUse, RunReport, RunStatus, StepReport, StepStatus};
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
        self.attempts += o.attempts;
        self.retries += o.retries;
        self.fallback = self.fallback.take().or(o.fallback);
        self.fuel += o.fuel;
        self.peak = self.peak.max(o.peak);
        self.wall_us += o.wall_us;
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
        (self.events)(&e);
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
        let packet = HandoffPacket::new(self.run_id.clone(), step.id.clone(), input);
        let breaker = &self.breakers[agent];
        let mut attempt = 0;
        loop {
            attempt += 1;
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
                        attempt,
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
                        attempt,
                        item,
                        iteration,
                        outcome: out
                            .result
                            .as_ref()
                            .err()
                            .map_or("ok", |e| e.kind_name())
                            .into(),
                        fuel_used: r.fuel_used,
                        wall_time_us: r.wall_time_us,
                    });
                    drop(permit);
                    match out.result {
                        Ok(p) => {
                            let t = breaker.record(trial, true, Instant::now());
                            self.announce(agent, t);
                            Ok(p.payload)
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

    async fn run_step(self: Arc<Self>, index: usize, scope: Scope) -> StepDone {
        let step = &self.w.steps[index];
        let mut stats = Stats::default();
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

/// Runs `w` to the end (or until it fails, pauses, runs out of fuel or is cancelled).
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
        w: w.clone(),
    });
    exec.emit(Event::RunStarted {
        run_id: opts.run_id.clone(),
        workflow: w.name.clone(),
        steps: w.steps.len(),
    });

    let n = w.steps.len();
    let mut status = vec![StepStatus::Pending; n];
    let mut running = vec![false; n];
    let mut outputs: Vec<Option<Arc<Value>>> = vec![None; n];
    let mut reports: Vec<StepReport> = w
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
        })
        .collect();
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

    loop {
        while halt.is_none() {
            let Some(i) = candidates.pop_first() else {
                break;
            };
            if status[i] != StepStatus::Pending || running[i] {
                continue;
            }
            let step = &w.steps[i];
            match readiness(step, &status, &running) {
                Ready::Wait => continue,
                Ready::Skip(reason) => {
                    skip(&exec, &mut status, &mut reports, i, reason);
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
                .map(|&d| (w.steps[d].id.clone(), (status[d], outputs[d].clone())))
                .collect();
            if let Some(cond) = &step.when {
                let steps_var = when_steps(cond.steps(), &scope);
                match cond.eval(&[("params", &exec.params), ("steps", &steps_var)]) {
                    Ok(true) => {}
                    Ok(false) => {
                        skip(
                            &exec,
                            &mut status,
                            &mut reports,
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
                            &mut status[i],
                            &mut reports[i],
                            &f,
                        ));
                        candidates.extend(&dependents[i]);
                        continue;
                    }
                }
            }
            in_flight += 1;
            running[i] = true;
            exec.emit(Event::StepStarted {
                step: step.id.clone(),
            });
            let fut = exec.clone().run_step(i, scope);
            if inline.is_empty() {
                inline.push(Box::pin(fut));
            } else {
                let handle = set.spawn(fut);
                task_step.insert(handle.id(), i);
            }
        }
        if set.is_empty() && inline.is_empty() {
            break;
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
            _ = exec.cancel.cancelled(), if !cancel_handled => {
                cancel_handled = true;
                halt = Some((RunStatus::Cancelled, "the run was cancelled".into()));
                set.abort_all();
                // Dropping the inline step cancels its call too.
                inline.clear();
                for i in 0..n {
                    if running[i] {
                        running[i] = false;
                        status[i] = StepStatus::Cancelled;
                        reports[i].status = StepStatus::Cancelled;
                        reports[i].error = Some("the run was cancelled while this step ran".into());
                        reports[i].error_kind = Some("cancelled".into());
                    }
                }
                continue;
            }
        };
        let i = done.index;
        running[i] = false;
        in_flight -= 1;
        candidates.extend(&dependents[i]);
        // One slot freed: the first step waiting for one takes it.
        if let Some(d) = deferred.pop_first() {
            candidates.insert(d);
        }
        let r = &mut reports[i];
        let s = done.stats;
        (r.attempts, r.retries, r.fallback, r.items, r.iterations) =
            (s.attempts, s.retries, s.fallback, s.items, s.iterations);
        (r.fuel_used, r.peak_memory_bytes, r.wall_time_us) = (s.fuel, s.peak, s.wall_us);
        match done.outcome {
            Ok(v) => {
                status[i] = StepStatus::Completed;
                r.status = StepStatus::Completed;
                outputs[i] = Some(Arc::new(v));
                exec.emit(Event::StepCompleted {
                    step: w.steps[i].id.clone(),
                });
            }
            Err(f) => {
                let h = finish_failed(&exec, &w.steps[i], &mut status[i], r, &f);
                halt = halt.or(h);
            }
        }
    }

    let scope: Scope = w
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), (status[i], outputs[i].clone())))
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
    for r in &reports {
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
    let (status, error) = match halt {
        Some((s, e)) => (s, Some(e)),
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
    });
    let mut report = RunReport {
        run_id: opts.run_id,
        workflow: w.name.clone(),
        status,
        steps: reports,
        counts,
        fuel: FuelUse {
            used,
            budget: w.fuel_budget,
            unsettled,
        },
        outputs: outputs_value,
        breakers: exec.breakers.iter().map(|(n, b)| b.report(n)).collect(),
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
    let finished = |d: usize| status[d] != StepStatus::Pending && !running[d];
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

fn skip(
    exec: &Exec,
    status: &mut [StepStatus],
    reports: &mut [StepReport],
    i: usize,
    reason: String,
) {
    status[i] = StepStatus::Skipped;
    reports[i].status = StepStatus::Skipped;
    reports[i].skip_reason = Some(reason.clone());
    exec.emit(Event::StepSkipped {
        step: exec.w.steps[i].id.clone(),
        reason,
    });
}

/// Applies a step's final failure; returns how the run halts, if it does.
fn finish_failed(
    exec: &Exec,
    step: &Step,
    status: &mut StepStatus,
    r: &mut StepReport,
    f: &Failure,
) -> Option<(RunStatus, String)> {
    r.error = Some(f.message.clone());
    r.error_kind = Some(f.kind.clone());
    let id = step.id.clone();
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
                error: f.message.clone(),
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
                error: f.message.clone(),
            });
            None
        }
        Special::None if step.on_error == OnError::Pause => {
            *status = StepStatus::Paused;
            r.status = StepStatus::Paused;
            exec.emit(Event::StepPaused {
                step: id.clone(),
                error: f.message.clone(),
            });
            Some((
                RunStatus::Paused,
                format!(
                    "step `{id}` failed and the run is paused for a human: {}",
                    f.message
                ),
            ))
        }
        Special::None => {
            *status = StepStatus::Failed;
            r.status = StepStatus::Failed;
            exec.emit(Event::StepFailed {
                step: id.clone(),
                error: f.message.clone(),
            });
            Some((
                RunStatus::Failed,
                format!("step `{id}` failed: {}", f.message),
            ))
        }
    }
}

/// The `steps` variable of a `when`: status and output of the steps it reads.
fn when_steps(ids: &std::collections::BTreeSet<String>, scope: &Scope) -> Value {
    let mut map = Map::new();
    for id in ids {
        let (status, output) = scope
            .get(id)
            .cloned()
            .unwrap_or((StepStatus::Pending, None));
        map.insert(
            id.clone(),
            json!({ "status": serde_json::to_value(status).unwrap(), "output": output.map(|o| (*o).clone()).unwrap_or(Value::Null) }),
        );
    }
    Value::Object(map)
}
