//! A provider: something that answers a completion request for one of its models before a deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use super::{ModelRequest, ModelResponse, ProviderError};

/// Answers completion requests. `model` is the provider's own model name
/// (the alias is resolved before); the request's `model` field is the alias
/// and must not be sent.
pub trait Provider: Send + Sync {
    /// One attempt, cut off at `deadline`.
    fn complete<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Result<ModelResponse, ProviderError>> + Send + 'a>>;
}
