//! The validated workflow: agents loaded, references and conditions compiled, steps in dependency order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use corral_runtime::{Agent, Budget, Grants};

use super::condition::Condition;
use super::definition::{BreakerDef, Join, OnError, ParamDef};
use super::reference::{Reference, Template};

/// A workflow that passed validation; only this can be run.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub file: PathBuf,
    /// `sha256:` of the file text.
    pub digest: String,
    /// Exactly the text that was validated and digested; a durable run
    /// stores this, never a second read of the file.
    pub text: Arc<str>,
    pub agents: BTreeMap<String, WorkflowAgent>,
    pub params: BTreeMap<String, ParamDef>,
    /// Fuel for the whole run.
    pub fuel_budget: u64,
    /// Model tokens for the whole run (each session's own count).
    pub token_budget: u64,
    /// Bytes of artifacts the run may store.
    pub artifact_budget: u64,
    pub max_concurrency: u32,
    /// Steps in a dependency order: every step comes after its dependencies.
    pub steps: Vec<Step>,
    pub outputs: Vec<(String, Template)>,
}

/// An agent as a workflow uses it.
#[derive(Debug, Clone)]
pub struct WorkflowAgent {
    pub name: String,
    pub agent: Arc<Agent>,
    pub grants: Grants,
    pub budget: Budget,
    pub breaker: BreakerDef,
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// Position in the file, for messages (`steps[i]`).
    pub index: usize,
    pub agent: String,
    pub input: Template,
    /// Indices (into `Workflow::steps`) of the steps this one waits for.
    pub deps: Vec<usize>,
    /// The dependencies its `when` reads: they must finish before it is
    /// decided, whatever the join.
    pub when_deps: Vec<usize>,
    pub when: Option<Condition>,
    pub for_each: Option<ForEach>,
    pub budget: Budget,
    pub retry: RetryPolicy,
    pub fallback: Option<String>,
    /// The fallback's budget: the step's `budget` over the fallback agent's.
    pub fallback_budget: Budget,
    pub on_error: OnError,
    pub repeat: Option<Repeat>,
    pub join: Join,
    /// An approval step: it waits for a human instead of calling an agent.
    pub approval: Option<Approval>,
    /// The agent that undoes this step when the run fails.
    pub compensate: Option<String>,
    /// Caching: `Some(None)` keeps entries forever, `Some(Some(ttl))` for `ttl`.
    pub cache: Option<Option<Duration>>,
    /// Model tokens for all of the step's calls together, if limited.
    pub token_budget: Option<u64>,
    /// Agents the step's agent (and its callees) may delegate to.
    pub delegates: Vec<String>,
    /// Delegated calls the step may make in all.
    pub max_delegations: u32,
    /// How deep its delegations may nest.
    pub delegation_depth: u32,
}

/// A validated approval step.
#[derive(Debug, Clone)]
pub struct Approval {
    pub prompt: String,
    /// JSON Schema of the human's input, which becomes the step's output.
    pub schema: Value,
    pub validator: Arc<jsonschema::Validator>,
    pub timeout: Option<Duration>,
    /// On timeout: complete with this output (`on_timeout: default`), or fail.
    pub default: Option<Value>,
}

impl Approval {
    /// Checks a human's input against the schema; the message names each problem.
    pub fn check(&self, input: &Value) -> Result<(), String> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(input)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "(root)" } else { &at })
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[derive(Debug, Clone)]
pub struct ForEach {
    pub list: Reference,
    pub max_concurrency: u32,
    pub max_items: u32,
}

#[derive(Debug, Clone)]
pub struct Repeat {
    pub critic: String,
    pub critic_input: Template,
    pub until: Condition,
    pub max_iterations: u32,
    pub feedback: Option<String>,
}

/// When and how a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub backoff: f64,
    pub max_delay: Duration,
    pub jitter: f64,
    /// Error classes and kinds that are retried.
    pub on: Vec<String>,
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_delay: Duration::ZERO,
            backoff: 1.0,
            max_delay: Duration::ZERO,
            jitter: 0.0,
            on: Vec::new(),
        }
    }

    /// The delay before attempt `next` (2 for the first retry), before
    /// jitter: `initial * backoff^(next-2)`, capped at `max_delay`.
    /// Saturates (at `max_delay`, or zero) rather than panic, whatever the
    /// policy holds: a policy built without the validator may hold anything.
    pub fn base_delay(&self, next: u32) -> Duration {
        let exp = self
            .backoff
            .powi(next.saturating_sub(2).min(i32::MAX as u32) as i32);
        let secs = self.initial_delay.as_secs_f64() * exp;
        super::clock::secs_f64(secs, self.max_delay)
    }

    /// The delay with jitter: scaled by a factor in `1 ± jitter` from `unit` in [0, 1).
    pub fn delay(&self, next: u32, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        // Jitter may take a delay just past `max_delay`; never past the
        // longest delay validation accepts.
        let cap = self.max_delay.saturating_mul(2);
        super::clock::secs_f64(self.base_delay(next).as_secs_f64() * factor, cap)
    }

    /// Whether a failure of this class and kind is retried.
    pub fn retries(&self, class: &str, kind: &str) -> bool {
        self.on.iter().any(|o| o == class || o == kind)
    }
}

/// What `retry.on` accepts: the error classes, then the error kinds worth retrying.
pub const RETRY_KINDS: &[&str] = &[
    "transient",
    "permanent",
    "degradable",
    "deadline_exceeded",
    "fuel_exhausted",
    "memory_limit",
    "stack_overflow",
    "guest_trap",
    "output_too_large",
    "invalid_output",
    "agent",
    "abi_violation",
    "overloaded",
    "breaker_open",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            backoff: 2.0,
            max_delay: Duration::from_millis(350),
            jitter: 0.5,
            on: vec!["transient".into()],
        };
        let base: Vec<u128> = (2..=5).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(base, [100, 200, 350, 350]);
        assert_eq!(p.delay(2, 0.0).as_millis(), 50);
        assert_eq!(p.delay(2, 0.5).as_millis(), 100);
        assert_eq!(p.delay(3, 0.999_999).as_millis(), 299);
        assert!(p.retries("transient", "deadline_exceeded"));
        // Out of every bound the validator sets: saturates, never panics.
        let wild = RetryPolicy {
            initial_delay: Duration::MAX,
            backoff: f64::INFINITY,
            max_delay: Duration::MAX,
            jitter: f64::NAN,
            ..p.clone()
        };
        assert_eq!(wild.base_delay(u32::MAX), Duration::MAX);
        let _ = wild.delay(u32::MAX, 0.9);
        assert!(!p.retries("permanent", "fuel_exhausted"));
    }
}
