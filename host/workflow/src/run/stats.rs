//! What a step consumed, summed over its calls and sessions.

use crate::events::StepStats;

/// What a step consumed, summed over its calls.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    /// Calls answered from the step cache.
    pub(super) cache_hits: u32,
    pub(super) attempts: u32,
    pub(super) retries: u32,
    pub(super) fallback: Option<String>,
    pub(super) items: Option<usize>,
    pub(super) iterations: Option<u32>,
    pub(super) fuel: u64,
    pub(super) tokens: u64,
    pub(super) peak: u64,
    pub(super) wall_us: u64,
}

impl Stats {
    pub(super) fn merge(&mut self, o: Stats) {
        self.cache_hits += o.cache_hits;
        self.attempts += o.attempts;
        self.retries += o.retries;
        self.fallback = self.fallback.take().or(o.fallback);
        self.fuel += o.fuel;
        self.tokens += o.tokens;
        self.peak = self.peak.max(o.peak);
        self.wall_us += o.wall_us;
    }

    pub(super) fn public(&self) -> StepStats {
        StepStats {
            attempts: self.attempts,
            retries: self.retries,
            fallback: self.fallback.clone(),
            items: self.items,
            iterations: self.iterations,
            fuel_used: self.fuel,
            tokens_used: self.tokens,
            peak_memory_bytes: self.peak,
            wall_time_us: self.wall_us,
        }
    }
}
