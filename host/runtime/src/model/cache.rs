//! An optional cache of model answers, keyed by the canonical request: a deterministic request (temperature 0) asked again within the TTL is answered from memory, without tokens or a provider call. Bounded in entries and in bytes per entry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ModelRequest, ModelResponse};

/// `[cache]` of the model configuration; absent, nothing is cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The most answers kept; the oldest goes first.
    pub entries: usize,
    /// How long an answer is reused, such as `10m`.
    #[serde(with = "humantime_str")]
    pub ttl: Duration,
}

/// The largest answer kept (its content and tool calls), in bytes.
const MAX_ENTRY_BYTES: usize = 64 << 10;

/// Answers by request key, oldest first for eviction.
pub(crate) struct AnswerCache {
    config: CacheConfig,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (Instant, ModelResponse)>,
    order: VecDeque<String>,
}

impl AnswerCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            inner: Mutex::default(),
        }
    }

    /// The key of `req` sent as `model`, if it is deterministic enough to
    /// reuse: temperature 0, stated.
    pub fn key(model: &str, req: &ModelRequest) -> Option<String> {
        if req.temperature != Some(0.0) {
            return None;
        }
        let value = serde_json::json!({ "model": model, "request": req });
        Some(crate::digest::digest(&crate::digest::canonical_json(
            &value,
        )))
    }

    pub fn get(&self, key: &str) -> Option<ModelResponse> {
        let entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (at, answer) = entries.map.get(key)?;
        (at.elapsed() < self.config.ttl).then(|| answer.clone())
    }

    pub fn put(&self, key: String, answer: &ModelResponse) {
        if self.config.entries == 0 || answer.size() > MAX_ENTRY_BYTES {
            return;
        }
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if entries
            .map
            .insert(key.clone(), (Instant::now(), answer.clone()))
            .is_none()
        {
            entries.order.push_back(key);
        }
        while entries.map.len() > self.config.entries {
            match entries.order.pop_front() {
                Some(old) => {
                    entries.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// A duration written as text (`10m`, `1h 30m`).
mod humantime_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(D::Error::custom)
    }
}
