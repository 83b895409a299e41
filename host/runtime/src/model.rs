//! The model gateway: agents ask the host for a model completion by alias; the host holds the provider and its key, checks the grant, reserves tokens from every enclosing budget, rate-limits, retries and records the call.
//!
//! An agent never sees a key or a provider URL: it names an alias that the
//! operator configured ([`ModelConfig`]) and that its grants allow. Tokens
//! are budgeted like fuel: before a request the gateway reserves
//! `max_tokens` plus an estimate of the prompt from the call's own limit and
//! from every outer [`TokenPool`] (step, workflow, tenant window); after it,
//! each reservation settles to the usage the provider reported (or stays
//! charged in full when it reported none).

mod cache;
mod config;
mod error;
mod gateway;
pub mod openai;
mod provider;
mod record;
mod replay;
pub mod scripted;
mod tokens;
mod types;

pub use cache::CacheConfig;
pub use config::{AliasConfig, ModelConfig, ProviderConfig};
pub use error::{ModelError, ModelOutcome, ProviderError, ProviderErrorKind};
pub use gateway::Gateway;
pub use provider::Provider;
pub(crate) use record::ModelLog;
pub use record::{MAX_MODEL_RECORDS, MAX_RECORDED_ANSWER_BYTES, ModelCallRecord};
pub use replay::request_digest;
pub use tokens::{MemoryPool, TokenGrant, TokenPool, TokensExhausted, estimate_prompt_tokens};
pub use types::{FinishReason, Message, ModelRequest, ModelResponse, Role, Tool, ToolCall, Usage};
