//! Agent errors with the class that tells a workflow whether to retry, fail or go on.

use crate::bindings::corral::agent::types as wit;

pub use wit::ErrorClass;

/// An error the agent reports itself. Its class decides what a workflow does:
/// transient errors are retried, permanent ones fail the step (or go to a
/// fallback), degradable ones let the workflow continue without this result.
#[derive(Debug, Clone)]
pub struct AgentError {
    pub class: ErrorClass,
    pub message: String,
}

impl AgentError {
    /// Worth retrying: a timeout, a rate limit, a resource briefly unavailable.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    /// Retrying will not help: invalid input, a missing resource, a bug.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// The result is optional: the workflow may go on without it.
    pub fn degradable(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Degradable,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.class, self.message)
    }
}

impl std::error::Error for AgentError {}

impl From<AgentError> for wit::AgentError {
    fn from(e: AgentError) -> Self {
        wit::AgentError {
            class: e.class,
            message: e.message,
        }
    }
}

/// A failed model call as the agent's own error: rate limits, timeouts and
/// outages are transient (a workflow retries the step); the rest permanent.
impl From<crate::model::ModelError> for AgentError {
    fn from(e: crate::model::ModelError) -> Self {
        use crate::model::ModelError as M;
        match e {
            M::RateLimited(m) | M::Timeout(m) | M::Unavailable(m) => AgentError::transient(m),
            M::NotGranted(m)
            | M::TokenBudgetExhausted(m)
            | M::BadRequest(m)
            | M::InvalidRequest(m) => AgentError::permanent(m),
        }
    }
}

/// A failed delegated call as the caller's own error: the callee's error
/// keeps its class; anything else is permanent (a refusal, or a callee that
/// hit its sub-budget, would fail the same way again).
impl From<crate::delegate::DelegateError> for AgentError {
    fn from(e: crate::delegate::DelegateError) -> Self {
        use crate::delegate::DelegateError as D;
        match e {
            D::Failed(inner) => AgentError {
                class: inner.class,
                message: inner.message,
            },
            D::NotGranted(m) | D::InvalidInput(m) | D::LimitReached(m) | D::Breached(m) => {
                AgentError::permanent(m)
            }
        }
    }
}

/// A failed HTTP request as the agent's own error: a denial, a spent quota
/// or a bad request is permanent; a transport failure transient.
impl From<crate::http::HttpError> for AgentError {
    fn from(e: crate::http::HttpError) -> Self {
        use crate::http::HttpError as H;
        let message = e.to_string();
        match e {
            H::Transport(_) => AgentError::transient(message),
            H::Denied(_) | H::Quota(_) | H::Invalid(_) => AgentError::permanent(message),
        }
    }
}
