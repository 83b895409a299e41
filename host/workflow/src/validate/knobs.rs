//! The numbers a workflow file sets: each checked against its maximum in `limits.rs`, the error naming the field and the maximum.

use std::time::Duration;

use super::super::definition::{BreakerDef, BudgetDef, RetryDef, WorkflowBudget};
use super::super::limits::{
    MAX_ARTIFACT_BYTES, MAX_ATTEMPTS, MAX_BACKOFF, MAX_BREAKER_THRESHOLD, MAX_CONCURRENCY,
    MAX_COOLDOWN, MAX_FUEL, MAX_HTTP_BYTES, MAX_HTTP_REQUESTS, MAX_JITTER, MAX_RETRY_DELAY,
    MAX_TIMEOUT, MAX_TOKENS, MIN_BACKOFF,
};
use super::super::model::{RETRY_KINDS, RetryPolicy};
use super::Validator;

impl Validator<'_> {
    /// The run's own `budget`.
    pub(super) fn run_budget(&mut self, b: &WorkflowBudget) {
        self.fuel("budget.fuel", b.fuel.0);
        self.tokens("budget.tokens", b.tokens.0);
        if b.artifact_bytes.0 > MAX_ARTIFACT_BYTES {
            self.err(
                "budget.artifact_bytes",
                format!("must be at most {MAX_ARTIFACT_BYTES} bytes (1TiB)"),
            );
        }
        if b.max_concurrency == 0 || b.max_concurrency > MAX_CONCURRENCY {
            self.err(
                "budget.max_concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
    }

    pub(super) fn budget(&mut self, field: &str, b: &BudgetDef) {
        if let Some(f) = b.fuel {
            self.fuel(&format!("{field}.fuel"), f.0);
        }
        if let Some(t) = b.tokens {
            self.tokens(&format!("{field}.tokens"), t.0);
        }
        if let Some(m) = b.memory
            && (m.0 == 0 || m.0 > self.max_memory)
        {
            self.err(
                format!("{field}.memory"),
                format!(
                    "must be between 1 byte and the engine's maximum of {} bytes",
                    self.max_memory
                ),
            );
        }
        if let Some(t) = b.timeout {
            self.duration(&format!("{field}.timeout"), t.0, MAX_TIMEOUT);
        }
        if let Some(n) = b.http_requests
            && n > MAX_HTTP_REQUESTS
        {
            self.err(
                format!("{field}.http_requests"),
                format!("must be at most {MAX_HTTP_REQUESTS}"),
            );
        }
        for (name, bytes) in [
            ("http_request_bytes", b.http_request_bytes),
            ("http_response_bytes", b.http_response_bytes),
        ] {
            if let Some(b) = bytes
                && b.0 > MAX_HTTP_BYTES
            {
                self.err(
                    format!("{field}.{name}"),
                    format!("must be at most {MAX_HTTP_BYTES} bytes (1GiB)"),
                );
            }
        }
    }

    fn fuel(&mut self, field: &str, fuel: u64) {
        if fuel == 0 || fuel > MAX_FUEL {
            self.err(
                field.to_owned(),
                format!("must be between 1 and {MAX_FUEL} (1000000G)"),
            );
        }
    }

    /// Model tokens: 0 (no model calls) up to [`MAX_TOKENS`].
    pub(super) fn tokens(&mut self, field: &str, tokens: u64) {
        if tokens > MAX_TOKENS {
            self.err(
                field.to_owned(),
                format!("must be at most {MAX_TOKENS} (1000G)"),
            );
        }
    }

    /// A duration that must be positive and at most `max`.
    pub(super) fn duration(&mut self, field: &str, d: Duration, max: Duration) {
        if d.is_zero() || d > max {
            self.err(
                field.to_owned(),
                format!("must be longer than 0s and at most {}", show(max)),
            );
        }
    }

    pub(super) fn breaker(&mut self, field: &str, b: &BreakerDef) {
        for (name, n) in [
            ("failure_threshold", b.failure_threshold),
            ("success_threshold", b.success_threshold),
        ] {
            if n == 0 || n > MAX_BREAKER_THRESHOLD {
                self.err(
                    format!("{field}.{name}"),
                    format!("must be between 1 and {MAX_BREAKER_THRESHOLD}"),
                );
            }
        }
        self.duration(&format!("{field}.cooldown"), b.cooldown.0, MAX_COOLDOWN);
    }

    /// A step's `retry`, as the policy the scheduler follows.
    pub(super) fn retry(&mut self, f: &str, r: Option<&RetryDef>) -> RetryPolicy {
        let Some(r) = r else {
            return RetryPolicy::none();
        };
        if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS {
            self.err(
                format!("{f}.retry.max_attempts"),
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        // Written so that NaN fails too.
        if !(r.backoff >= MIN_BACKOFF && r.backoff <= MAX_BACKOFF) {
            self.err(
                format!("{f}.retry.backoff"),
                format!("must be between {MIN_BACKOFF} and {MAX_BACKOFF}"),
            );
        }
        if !(0.0..=MAX_JITTER).contains(&r.jitter) {
            self.err(
                format!("{f}.retry.jitter"),
                format!("must be between 0 and {MAX_JITTER}"),
            );
        }
        for (name, d) in [
            ("initial_delay", r.initial_delay),
            ("max_delay", r.max_delay),
        ] {
            if d.0 > MAX_RETRY_DELAY {
                self.err(
                    format!("{f}.retry.{name}"),
                    format!("must be at most {}", show(MAX_RETRY_DELAY)),
                );
            }
        }
        for (k, on) in r.on.iter().enumerate() {
            if !RETRY_KINDS.contains(&on.as_str()) {
                self.err(
                    format!("{f}.retry.on[{k}]"),
                    format!(
                        "`{on}` is not an error class or kind; use one of: {}",
                        RETRY_KINDS.join(", ")
                    ),
                );
            }
        }
        RetryPolicy {
            max_attempts: r.max_attempts,
            initial_delay: r.initial_delay.0,
            backoff: r.backoff,
            max_delay: r.max_delay.0,
            jitter: r.jitter,
            on: r.on.clone(),
        }
    }
}

/// A limit as the file would write it: `24h`, `365d`.
fn show(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => humantime::format_duration(d).to_string(),
    }
}
