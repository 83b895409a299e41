//! Delegation (contract 0.2.0): an agent calls other agents through the host, each under a budget carved from what its own call has left, refunded when the callee is done; who may be called, and how, comes from whoever started the call (a workflow step) through [`Delegates`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{MemoryPool, TokenPool};
use crate::{Agent, Budget, CallError, CallOutcome, Grants, HandoffPacket, Receipt};

/// An agent a call may delegate to, as its starter resolved it.
pub struct Callee {
    /// The name the caller asked for.
    pub name: String,
    pub agent: Arc<Agent>,
    pub grants: Grants,
    /// Its own limits; the carved sub-budget is held under them.
    pub budget: Budget,
}

/// Who a call may delegate to and how each delegated call is made: a
/// workflow step implements it over its `delegates`. One value serves a
/// step's whole tree of delegated calls, so its limits count across it.
#[async_trait::async_trait]
pub trait Delegates: Send + Sync {
    /// The agent named `name`, or why this call may not delegate to it
    /// (the message names the field that grants it).
    fn callee(&self, name: &str) -> Result<Callee, String>;
    /// Claims one delegated call from the step's count, or says why not.
    fn claim(&self) -> Result<(), String>;
    /// The deepest a chain of delegations may go, and the field that sets it.
    fn max_depth(&self) -> (u32, String);
    /// The packet a callee gets: the step's run and step ids, `payload`.
    fn packet(&self, payload: Value) -> HandoffPacket;
    /// The answer an earlier session of the run recorded for this very
    /// call (the callee's component and the packet's payload), if any:
    /// a resumed step does not call its completed children again.
    fn reuse(&self, callee: &Callee, packet: &HandoffPacket) -> Option<Reused>;
    /// Makes the call; `extras` carries the pools and the delegation of
    /// the callee itself, one level deeper.
    async fn call(
        &self,
        callee: &Callee,
        packet: &HandoffPacket,
        budget: &Budget,
        extras: CallExtras,
    ) -> CallOutcome;
}

/// What a call gets beyond its agent, packet, budget and grants.
#[derive(Default, Clone)]
pub struct CallExtras {
    /// The token budgets around the call (step, workflow, tenant), innermost first.
    pub pools: Vec<Arc<dyn TokenPool>>,
    /// Whom it may delegate to, and at what depth it runs (a top-level call is 0).
    pub delegation: Option<Delegation>,
    /// Where the call's artifacts are kept (its run's store); without it,
    /// a packet that names an artifact is refused.
    pub artifacts: Option<Arc<dyn crate::artifact::ArtifactStore>>,
}

/// A delegated call's answer from an earlier session of the run.
#[derive(Debug, Clone)]
pub struct Reused {
    pub payload: Value,
    /// Its receipt then; what it spent was charged then.
    pub receipt: Receipt,
}

/// A call's place in a tree of delegations.
#[derive(Clone)]
pub struct Delegation {
    pub delegates: Arc<dyn Delegates>,
    pub depth: u32,
}

/// A delegated call as the caller's receipt records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRecord {
    pub agent: String,
    /// 1 for a call the step's agent made, 2 for one its callee made, ...
    pub depth: u32,
    /// Fuel carved from the caller for it; what it did not use went back.
    pub fuel_carved: u64,
    pub outcome: DelegationOutcome,
    /// Why it gave no output, as the caller was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The callee's own receipt (absent when it was refused before it ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Box<Receipt>>,
}

/// How a delegated call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelegationOutcome {
    Ok,
    /// An earlier session of the run completed the same call (agent,
    /// component and input); its recorded answer was given again, at no cost.
    Reused,
    NotGranted,
    InvalidInput,
    LimitReached,
    /// The callee hit its sub-budget or trapped.
    Breached,
    /// The callee reported its own error.
    Failed,
}

/// What the caller has left when a delegated call starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Left {
    pub fuel: u64,
    pub deadline: Instant,
    pub memory: u64,
    pub tokens: u64,
}

/// What the caller asked for, each limit optional.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub tokens: Option<u64>,
}

/// The callee's budget: its own limits, each held to what was asked and
/// to what the caller has left (fuel, time, tokens) or may hold (memory).
/// `share` is the fuel an unset request gets (all that is left, or an
/// equal part of it in a batch).
pub(crate) fn carve(own: &Budget, asked: Asked, left: Left, share: u64, now: Instant) -> Budget {
    let time_left = left.deadline.saturating_duration_since(now);
    Budget {
        fuel: asked.fuel.unwrap_or(share).min(left.fuel),
        memory_bytes: asked
            .memory
            .unwrap_or(own.memory_bytes)
            .min(own.memory_bytes)
            .min(left.memory),
        timeout: asked
            .timeout
            .unwrap_or(time_left)
            .min(own.timeout)
            .min(time_left),
        tokens: asked.tokens.unwrap_or(left.tokens).min(left.tokens),
        ..own.clone()
    }
}

/// Tokens a pool has left.
pub(crate) fn tokens_left(pool: &MemoryPool) -> u64 {
    pool.limit().saturating_sub(pool.used())
}

/// The caller's view of a delegated call's failure, and its outcome.
pub(crate) fn classify(e: &CallError) -> DelegationOutcome {
    match e {
        CallError::InvalidInput { .. } => DelegationOutcome::InvalidInput,
        CallError::Agent { .. } => DelegationOutcome::Failed,
        _ => DelegationOutcome::Breached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(fuel: u64, secs: u64, now: Instant) -> Left {
        Left {
            fuel,
            deadline: now + Duration::from_secs(secs),
            memory: 64 << 20,
            tokens: 500,
        }
    }

    #[test]
    fn a_sub_budget_never_exceeds_what_the_caller_has_left() {
        let now = Instant::now();
        let own = Budget::default();
        let greedy = Asked {
            fuel: Some(u64::MAX),
            memory: Some(u64::MAX),
            timeout: Some(Duration::from_secs(3600)),
            tokens: Some(u64::MAX),
        };
        let b = carve(&own, greedy, left(1_000, 2, now), 1_000, now);
        assert_eq!(b.fuel, 1_000);
        assert_eq!(b.memory_bytes, 64 << 20);
        assert!(b.timeout <= Duration::from_secs(2));
        assert_eq!(b.tokens, 500);

        // Unset: the share of the fuel, all the time left up to the
        // callee's own timeout, the callee's own memory up to the caller's.
        let b = carve(&own, Asked::default(), left(1_000, 60, now), 250, now);
        assert_eq!(b.fuel, 250);
        assert_eq!(b.timeout, own.timeout);
        assert_eq!(b.memory_bytes, 64 << 20);

        // Past the caller's deadline nothing is left.
        let b = carve(&own, Asked::default(), left(1_000, 0, now), 1_000, now);
        assert_eq!(b.timeout, Duration::ZERO);
    }
}
