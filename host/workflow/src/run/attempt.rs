//! One call of an agent: breaker admission, a concurrency slot, fuel, retries with backoff, then the fallback agent.

use std::time::Instant;

use serde_json::Value;

use crate::events::Event;
use crate::ledger::Grant;
use crate::model::Step;
use corral_runtime::{Budget, CallError, ErrorClass, HandoffPacket};

use super::exec::Exec;
use super::failure::{Failure, Special};
use super::stats::Stats;

/// Where a call is made: the step, the agent (the step's own, its fallback
/// or its critic), the budget, and the for-each item or gate iteration.
struct Site<'a> {
    step: &'a Step,
    agent: &'a str,
    budget: &'a Budget,
    item: Option<usize>,
    iteration: Option<u32>,
}

impl Exec {
    /// Calls `agent` with `input`, retrying per the step's policy.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        &self,
        step: &Step,
        agent: &str,
        budget: &Budget,
        input: Value,
        item: Option<usize>,
        iteration: Option<u32>,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let site = Site {
            step,
            agent,
            budget,
            item,
            iteration,
        };
        let key = step
            .cache
            .map(|_| self.cache_key(step, agent, budget, &input));
        if let Some(key) = &key
            && let Some(v) = self.cached(step, key).await
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.cancel.is_cancelled() {
                return Err(Failure::cancelled());
            }
            let failure = match self.attempt(&site, &packet, stats).await {
                Ok(v) => {
                    if let Some(key) = key {
                        self.cache_put(step, key, &v);
                    }
                    return Ok(v);
                }
                // Run-level failures (fuel pool, cancel) are never retried.
                Err(f) if f.special != Special::None => return Err(f),
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

    /// One attempt: the breaker admits it, it takes a slot and then its
    /// fuel, and the outcome is judged for the breaker.
    async fn attempt(
        &self,
        site: &Site<'_>,
        packet: &HandoffPacket,
        stats: &mut Stats,
    ) -> Result<Value, Failure> {
        let (step, agent) = (site.step, site.agent);
        let breaker = &self.breakers[agent];
        let (admitted, t) = breaker.admit(Instant::now());
        self.announce(agent, t);
        let trial = admitted.map_err(|wait| breaker_open(agent, wait))?;
        // The slot first, then the fuel: a call waiting for a slot must not
        // park fuel other calls could use.
        let permit = tokio::select! {
            p = self.global.acquire() => p.expect("the semaphore is never closed"),
            _ = self.cancel.cancelled() => {
                breaker.release(trial);
                return Err(Failure::cancelled());
            }
        };
        // Then a slot shared with other runs, if whoever runs us shares them.
        let admitted = match &self.admission {
            None => None,
            Some(a) => tokio::select! {
                g = a.admit() => Some(g),
                _ = self.cancel.cancelled() => {
                    breaker.release(trial);
                    return Err(Failure::cancelled());
                }
            },
        };
        let pooled = self.fuel.lock().unwrap().reserve(site.budget.fuel);
        if pooled == 0 {
            breaker.release(trial);
            return Err(Failure::workflow_fuel(format!(
                "the workflow fuel budget of {} is spent; step `{}` was not started (raise `budget.fuel` in the workflow)",
                self.w.fuel_budget, step.id
            )));
        }
        let grant = match self.outer_reserve(pooled).await {
            Ok(grant) => grant,
            Err(why) => {
                self.fuel.lock().unwrap().settle(pooled, 0);
                breaker.release(trial);
                return Err(Failure::workflow_fuel(format!(
                    "{why}; step `{}` was not started",
                    step.id
                )));
            }
        };
        // The smaller grant of the nested budgets.
        let limit = grant.as_ref().map_or(pooled, |g| g.amount.min(pooled));
        let outer_cut = limit < pooled;
        // Numbered across the step's calls and sessions: a call cut off by a
        // crash counts, and its rerun is the next attempt.
        let number = stats.attempts + 1;
        self.emit(Event::CallStarted {
            step: step.id.clone(),
            agent: agent.into(),
            attempt: number,
            item: site.item,
            iteration: site.iteration,
            fuel_reserved: limit,
        });
        let call_budget = Budget {
            fuel: limit,
            ..site.budget.clone()
        };
        let wa = &self.w.agents[agent];
        let extras = corral_runtime::delegate::CallExtras {
            pools: self
                .step_tokens
                .get(&step.id)
                .cloned()
                .into_iter()
                .chain([self.tokens.clone()])
                .chain(self.outer_tokens.iter().cloned())
                .collect(),
            delegation: self.delegates.get(&step.id).map(|d| {
                corral_runtime::delegate::Delegation {
                    delegates: d.clone(),
                    depth: 0,
                }
            }),
            artifacts: self.artifacts.clone(),
        };
        let out = self
            .rt
            .call_with(&wa.agent, packet, &call_budget, &wa.grants, extras)
            .await;
        let r = &out.receipt;
        self.fuel.lock().unwrap().settle(pooled, r.fuel_used);
        if let Some(g) = grant {
            self.outer_settle(g, r.fuel_used).await;
        }
        stats.attempts += 1;
        stats.fuel += r.fuel_used;
        stats.tokens += r.tokens_used();
        stats.peak = stats.peak.max(r.peak_memory_bytes);
        stats.wall_us += r.wall_time_us;
        let error = out.result.as_ref().err();
        self.emit(Event::CallFinished {
            step: step.id.clone(),
            agent: agent.into(),
            attempt: number,
            item: site.item,
            iteration: site.iteration,
            outcome: error.map_or("ok", |e| e.kind_name()).into(),
            error: error.map(|e| e.to_string()),
            receipt: r.clone(),
        });
        drop(admitted);
        drop(permit);
        self.judge(site, trial, (limit, outer_cut), out.result)
    }

    /// Reserves from the outer ledger, if the run has one (off the executor:
    /// a ledger may be a store).
    async fn outer_reserve(&self, want: u64) -> Result<Option<Grant>, String> {
        let Some(ledger) = self.ledger.clone() else {
            return Ok(None);
        };
        if let Some(g) = ledger.reserve_now(want) {
            return Ok(Some(g));
        }
        tokio::task::spawn_blocking(move || ledger.reserve(want))
            .await
            .map_err(|e| format!("the fuel ledger failed: {e}"))?
            .map(Some)
    }

    async fn outer_settle(&self, grant: Grant, used: u64) {
        if let Some(ledger) = self.ledger.clone()
            && !ledger.settle_now(&grant, used)
        {
            let _ = tokio::task::spawn_blocking(move || ledger.settle(&grant, used)).await;
        }
    }

    /// What a call's result means for the step and the agent's breaker.
    fn judge(
        &self,
        site: &Site<'_>,
        trial: bool,
        (limit, outer_cut): (u64, bool),
        result: Result<HandoffPacket, CallError>,
    ) -> Result<Value, Failure> {
        let (step, agent) = (site.step, site.agent);
        let breaker = &self.breakers[agent];
        match result {
            Ok(p) => {
                let t = breaker.record(trial, true, Instant::now());
                self.announce(agent, t);
                Ok(p.payload)
            }
            // An outer budget (the tenant's) cut the call short.
            Err(CallError::FuelExhausted { .. }) if outer_cut => {
                breaker.release(trial);
                let outer = self.ledger.as_ref().map_or_else(
                    || "the run's outer fuel budget".to_string(),
                    |l| l.describe(),
                );
                Err(Failure::workflow_fuel(format!(
                    "{outer} ran out during step `{}`: it got {limit} of its {} instructions",
                    step.id, site.budget.fuel
                )))
            }
            // The workflow's budget cut the call short: not the agent's fault.
            Err(CallError::FuelExhausted { .. }) if limit < site.budget.fuel => {
                breaker.release(trial);
                Err(Failure::workflow_fuel(format!(
                    "the workflow fuel budget of {} ran out during step `{}`: it got {limit} of its {} instructions (raise `budget.fuel` in the workflow)",
                    self.w.fuel_budget, step.id, site.budget.fuel
                )))
            }
            // Bad input is the caller's fault, and a full instance pool or a
            // host failure the host's: neither says anything of the agent's health.
            Err(
                e @ (CallError::InvalidInput { .. }
                | CallError::Overloaded { .. }
                | CallError::Host { .. }),
            ) => {
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

    /// The step's agent with retries, then its fallback agent.
    pub(super) async fn call_with_fallback(
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
}

/// The failure of a call the agent's open (or busy half-open) breaker refused.
fn breaker_open(agent: &str, wait: std::time::Duration) -> Failure {
    Failure {
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
    }
}
