//! How a model call fails: a typed error for the agent and the receipt (what was refused, which budget, what to change), and the provider's failure it came from.

use std::time::Duration;

/// Why a model call did not return a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model alias `{alias}` is not granted to this agent; grant it with `--allow-model {alias}` (CLI) or `grants: {{ models: [{alias}] }}` (workflow)"
    )]
    NotGranted { alias: String },
    #[error("no model alias `{alias}` is configured on this host (configured: {known})")]
    UnknownAlias { alias: String, known: String },
    /// Refused before anything was sent: the request could need more
    /// tokens than `budget` has left.
    #[error(
        "the request may use up to {needed} tokens, but the {budget} has {left} of {limit} left ({used} used); raise `{field}`",
        left = limit.saturating_sub(*used)
    )]
    TokenBudgetExhausted {
        /// Which budget: `call token budget`, `step token budget`, ...
        budget: String,
        /// The setting that raises it.
        field: String,
        used: u64,
        limit: u64,
        needed: u64,
    },
    #[error("model `{alias}` is rate limited: {detail}")]
    RateLimited {
        alias: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("model `{alias}` gave no answer within the call's deadline")]
    Timeout { alias: String },
    #[error("model `{alias}`: the provider refused the request: {message}")]
    BadRequest { alias: String, message: String },
    #[error("model `{alias}`: the provider failed: {message}")]
    Unavailable { alias: String, message: String },
    #[error("model `{alias}`: the provider's answer is not usable: {message}")]
    Malformed { alias: String, message: String },
    #[error("the model request is invalid: {0}")]
    InvalidRequest(String),
    /// A replay found no recorded answer for the request.
    #[error("model `{alias}`: replaying, and {why}")]
    NotRecorded { alias: String, why: String },
}

impl ModelError {
    /// Worth retrying later (by the step's retry policy): a rate limit, a
    /// timeout, a provider outage. Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::RateLimited { .. }
                | ModelError::Timeout { .. }
                | ModelError::Unavailable { .. }
        )
    }

    /// A short name for receipts and metrics: `ok` is the success's.
    pub fn outcome(&self) -> ModelOutcome {
        match self {
            ModelError::NotGranted { .. } => ModelOutcome::NotGranted,
            ModelError::UnknownAlias { .. } => ModelOutcome::UnknownAlias,
            ModelError::TokenBudgetExhausted { .. } => ModelOutcome::TokenBudgetExhausted,
            ModelError::RateLimited { .. } => ModelOutcome::RateLimited,
            ModelError::Timeout { .. } => ModelOutcome::Timeout,
            ModelError::BadRequest { .. } => ModelOutcome::BadRequest,
            ModelError::Unavailable { .. } => ModelOutcome::Unavailable,
            ModelError::Malformed { .. } => ModelOutcome::Malformed,
            ModelError::InvalidRequest(_) => ModelOutcome::InvalidRequest,
            ModelError::NotRecorded { .. } => ModelOutcome::NotRecorded,
        }
    }
}

/// How a model call ended, as receipts and the journal record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelOutcome {
    #[default]
    Ok,
    /// Answered from the gateway's cache.
    Cached,
    /// Answered from the run's journal (a replay), not by the provider.
    Replayed,
    NotGranted,
    UnknownAlias,
    TokenBudgetExhausted,
    RateLimited,
    Timeout,
    BadRequest,
    Unavailable,
    Malformed,
    InvalidRequest,
    /// A replay had no recorded answer for the request.
    NotRecorded,
}

impl ModelOutcome {
    /// The outcome as written in receipts: `ok`, `rate_limited`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ModelOutcome::Ok => "ok",
            ModelOutcome::Cached => "cached",
            ModelOutcome::Replayed => "replayed",
            ModelOutcome::NotGranted => "not_granted",
            ModelOutcome::UnknownAlias => "unknown_alias",
            ModelOutcome::TokenBudgetExhausted => "token_budget_exhausted",
            ModelOutcome::RateLimited => "rate_limited",
            ModelOutcome::Timeout => "timeout",
            ModelOutcome::BadRequest => "bad_request",
            ModelOutcome::Unavailable => "unavailable",
            ModelOutcome::Malformed => "malformed",
            ModelOutcome::InvalidRequest => "invalid_request",
            ModelOutcome::NotRecorded => "not_recorded",
        }
    }
}

impl ModelOutcome {
    /// The agent got an answer (from the provider, the cache or a replay).
    pub fn answered(self) -> bool {
        matches!(
            self,
            ModelOutcome::Ok | ModelOutcome::Cached | ModelOutcome::Replayed
        )
    }
}

impl std::fmt::Display for ModelOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ModelOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What kind of failure a provider reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// 429: retried after `retry_after` (or a backoff) within the deadline.
    RateLimited,
    /// 5xx, or the connection failed: retried within the deadline.
    Unavailable,
    /// This attempt ran out of time.
    Timeout,
    /// 4xx other than 429: the request itself is wrong; not retried.
    BadRequest,
    /// 2xx with a body that does not parse.
    Malformed,
}

/// One failed attempt at a provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
    /// What the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::RateLimited | ProviderErrorKind::Unavailable
        )
    }

    /// As the agent sees it, for model `alias`.
    pub fn into_model_error(self, alias: &str) -> ModelError {
        let alias = alias.to_owned();
        let message = self.message;
        match self.kind {
            ProviderErrorKind::RateLimited => ModelError::RateLimited {
                alias,
                detail: message,
                retry_after: self.retry_after,
            },
            ProviderErrorKind::Unavailable => ModelError::Unavailable { alias, message },
            ProviderErrorKind::Timeout => ModelError::Timeout { alias },
            ProviderErrorKind::BadRequest => ModelError::BadRequest { alias, message },
            ProviderErrorKind::Malformed => ModelError::Malformed { alias, message },
        }
    }
}
