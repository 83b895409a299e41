//! The hard limits one agent call runs under: fuel, memory, wall-clock time, output and log bytes, model tokens, and outbound HTTP requests and bytes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits for one agent call. Every limit is always enforced; a breach ends
/// the call with a typed [`CallError`](crate::CallError) and a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Wasm instructions the call may execute (wasmtime fuel).
    pub fuel: u64,
    /// Bytes of linear memory and tables the whole instance may hold at once.
    pub memory_bytes: u64,
    /// Wall-clock time for the whole call, host calls included.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Largest output packet, in bytes of JSON text.
    pub max_output_bytes: u64,
    /// Bytes of log records, stdout and stderr kept per call; the rest is
    /// dropped and counted.
    pub max_log_bytes: u64,
    /// Model tokens (prompt and completion) the call's model requests may
    /// reserve in all (contract 0.2.0).
    #[serde(default = "default_tokens")]
    pub tokens: u64,
    /// Outbound HTTP requests the call may send (contract 0.2.0); each
    /// also needs a grant.
    #[serde(default = "default_http_requests")]
    pub http_requests: u32,
    /// Bytes of request bodies the call may send in all.
    #[serde(default = "default_http_request_bytes")]
    pub http_request_bytes: u64,
    /// Bytes of response bodies the call may read in all.
    #[serde(default = "default_http_response_bytes")]
    pub http_response_bytes: u64,
}

fn default_tokens() -> u64 {
    Budget::DEFAULT_TOKENS
}

fn default_http_requests() -> u32 {
    Budget::DEFAULT_HTTP_REQUESTS
}

fn default_http_request_bytes() -> u64 {
    Budget::DEFAULT_HTTP_REQUEST_BYTES
}

fn default_http_response_bytes() -> u64 {
    Budget::DEFAULT_HTTP_RESPONSE_BYTES
}

impl Budget {
    /// 1 G instructions: about a second of guest work on this machine kind.
    pub const DEFAULT_FUEL: u64 = 1_000_000_000;
    pub const DEFAULT_MEMORY: u64 = 256 << 20;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
    pub const DEFAULT_MAX_LOG: u64 = 64 << 10;
    pub const DEFAULT_TOKENS: u64 = 100_000;
    pub const DEFAULT_HTTP_REQUESTS: u32 = 64;
    pub const DEFAULT_HTTP_REQUEST_BYTES: u64 = 1 << 20;
    pub const DEFAULT_HTTP_RESPONSE_BYTES: u64 = 8 << 20;
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY,
            timeout: Self::DEFAULT_TIMEOUT,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT,
            max_log_bytes: Self::DEFAULT_MAX_LOG,
            tokens: Self::DEFAULT_TOKENS,
            http_requests: Self::DEFAULT_HTTP_REQUESTS,
            http_request_bytes: Self::DEFAULT_HTTP_REQUEST_BYTES,
            http_response_bytes: Self::DEFAULT_HTTP_RESPONSE_BYTES,
        }
    }
}

/// Serializes a `Duration` as a humantime string ("1s 500ms").
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(D::Error::custom)
    }
}
