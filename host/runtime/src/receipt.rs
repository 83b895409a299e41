//! The resource receipt every call produces, successful or not.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one call consumed against its budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub agent: String,
    pub fuel_used: u64,
    pub fuel_limit: u64,
    /// Peak bytes of linear memory and tables held by the instance.
    pub peak_memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Wall-clock time of instantiation and the call.
    pub wall_time_us: u64,
    pub timeout_ms: u64,
    /// Bytes of the input packet's JSON text.
    pub bytes_in: u64,
    /// Bytes of the output packet's JSON text (0 when there was none).
    pub bytes_out: u64,
    /// Bytes of log records, stdout and stderr lines kept: their text plus
    /// a fixed overhead per record and per field.
    pub log_bytes: u64,
    /// Bytes of records dropped past the cap, counted the same way.
    pub log_bytes_dropped: u64,
    /// Records dropped past the byte cap or the record cap.
    #[serde(default)]
    pub log_records_dropped: u64,
    /// The last progress the agent reported, in percent.
    pub progress: Option<u8>,
    /// The capabilities the call ran with: the grants the agent requested.
    /// Grants it did not request were withheld and are not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<crate::Capability>,
    /// Every model call the agent made (contract 0.2.0): alias, provider
    /// model, tokens, attempts, latency and outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_calls: Vec<crate::model::ModelCallRecord>,
    /// Every call the agent delegated to another agent (contract 0.2.0),
    /// each with its own receipt: the tree of a step's delegations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegations: Vec<crate::delegate::DelegationRecord>,
    /// Model calls past the receipt's cap of `MAX_MODEL_RECORDS`, counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub model_calls_dropped: u64,
    /// Model tokens charged to the call's budgets, over all its model calls
    /// (the dropped ones included).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub model_tokens: u64,
    /// Every outbound HTTP request the agent made or tried (contract
    /// 0.2.0): method, origin, path, status, bytes, time and outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_calls: Vec<crate::http::HttpCallRecord>,
    /// Requests past the receipt's cap of `MAX_HTTP_RECORDS`, counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub http_calls_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Receipt {
    pub fn wall_time(&self) -> Duration {
        Duration::from_micros(self.wall_time_us)
    }

    /// Model tokens charged to the call's budgets, over all its model calls.
    pub fn tokens_used(&self) -> u64 {
        // Delegates draw on the caller's token budget: their tokens are its.
        // A reused answer spent its tokens in the session that recorded it.
        self.model_tokens
            + self
                .delegations
                .iter()
                .filter(|d| d.outcome != crate::delegate::DelegationOutcome::Reused)
                .filter_map(|d| d.receipt.as_ref())
                .map(|r| r.tokens_used())
                .sum::<u64>()
    }
}
