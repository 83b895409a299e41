//! Tokens as a budgeted resource: the estimate reserved before a request, and the outer pools (step, workflow, tenant window) every call reserves from and settles to.

use super::ModelRequest;

/// What a request may use at most: `max_tokens` plus the prompt, estimated
/// at one token per 4 bytes of text (rounded up), an overestimate for
/// English with the common tokenizers, so a reservation rarely falls short;
/// a request reserves at least 1 token per message for the framing.
pub fn estimate_prompt_tokens(req: &ModelRequest) -> u64 {
    let mut bytes: u64 = 0;
    for m in &req.messages {
        bytes += m.content.len() as u64 + 16;
        for c in &m.tool_calls {
            bytes += (c.name.len() + c.arguments.len()) as u64;
        }
    }
    for t in &req.tools {
        bytes += (t.name.len() + t.description.len() + t.parameters.to_string().len()) as u64;
    }
    if let Some(s) = &req.response_schema {
        bytes += s.to_string().len() as u64;
    }
    bytes.div_ceil(4)
}

/// A pool refused a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensExhausted {
    /// Which budget: `step token budget`, `workflow token budget`, ...
    pub budget: String,
    /// The setting that raises it.
    pub field: String,
    pub used: u64,
    pub limit: u64,
}

/// A reservation taken from a pool, to settle after the request.
#[derive(Debug)]
pub struct TokenGrant {
    pub reserved: u64,
    /// What the pool needs to find the reservation again (a window's start,
    /// say); 0 when it needs nothing.
    pub tag: i64,
}

/// An enclosing token budget: the step's, the workflow's, a tenant's window.
/// A pool grants all of a reservation or none of it. Its methods may wait
/// (a tenant's window lives in the store).
#[async_trait::async_trait]
pub trait TokenPool: Send + Sync {
    async fn reserve(&self, tokens: u64) -> Result<TokenGrant, TokensExhausted>;
    /// Gives back what `grant` reserved beyond `used`.
    async fn settle(&self, grant: TokenGrant, used: u64);
}

/// A token budget held in memory: a call's own, or a step's or a run's in
/// one process. Reservations are atomic; a settlement that reports more
/// than was reserved charges the difference (the provider's count wins).
pub struct MemoryPool {
    budget: String,
    field: String,
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl MemoryPool {
    /// `budget` names it in errors (`call token budget`); `field` is the
    /// setting that raises it (`budget.tokens`).
    pub fn new(budget: impl Into<String>, field: impl Into<String>, limit: u64) -> Self {
        Self {
            budget: budget.into(),
            field: field.into(),
            limit,
            used: Default::default(),
        }
    }

    /// A pool that starts with `used` already spent (what earlier sessions
    /// of a run were charged).
    pub fn with_used(mut self, used: u64) -> Self {
        self.used = std::sync::atomic::AtomicU64::new(used);
        self
    }

    /// What it allows in all.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserved or used so far.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[async_trait::async_trait]
impl TokenPool for MemoryPool {
    async fn reserve(&self, tokens: u64) -> Result<TokenGrant, TokensExhausted> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(tokens).filter(|&n| n <= self.limit)
            })
            .map(|_| TokenGrant {
                reserved: tokens,
                tag: 0,
            })
            .map_err(|used| TokensExhausted {
                budget: self.budget.clone(),
                field: self.field.clone(),
                used,
                limit: self.limit,
            })
    }

    async fn settle(&self, grant: TokenGrant, used: u64) {
        use std::sync::atomic::Ordering;
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(if used >= grant.reserved {
                    u.saturating_add(used - grant.reserved)
                } else {
                    u.saturating_sub(grant.reserved - used)
                })
            });
    }
}
