//! The gateway: from an agent's request to a provider's answer. Grant check, alias, request limits, token reservations in every enclosing pool, the alias's rate limits, attempts with backoff inside the deadline, settlement, and a record of the call.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::openai::{ApiKey, OpenAi};
use super::replay::{Recorded, request_digest};
use super::scripted::Scripted;
use super::{
    ModelCallRecord, ModelConfig, ModelError, ModelOutcome, ModelRequest, ModelResponse, Provider,
    ProviderConfig, TokenGrant, TokenPool, estimate_prompt_tokens,
};

/// Attempts per request (the first and three retries), all inside the deadline.
const MAX_ATTEMPTS: u32 = 4;
/// The wait before the first retry; it doubles, up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bounds on what an agent may send (a hostile guest's request is parsed
/// and forwarded by the host).
const MAX_MESSAGES: usize = 1024;
const MAX_TOOLS: usize = 128;
const MAX_REQUEST_BYTES: usize = 4 << 20;

struct Alias {
    provider: Arc<dyn Provider>,
    model: String,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<DefaultDirectRateLimiter>,
}

/// The configured aliases and their providers; one per host.
pub struct Gateway {
    aliases: HashMap<String, Alias>,
    cache: Option<super::cache::AnswerCache>,
    /// A replaying gateway answers from these only, never a provider.
    replay: Option<Recorded>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.aliases.keys().collect();
        names.sort();
        f.debug_struct("Gateway").field("aliases", &names).finish()
    }
}

impl Gateway {
    /// Builds the providers (keys read now, from the host's environment or
    /// files) and the aliases' limiters. Every problem is named.
    pub fn new(config: &ModelConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut providers: HashMap<&str, Arc<dyn Provider>> = HashMap::new();
        // A provider no alias names is not started, and its key not read:
        // switching an alias between providers is a one-line change.
        let used = |name: &str| config.models.values().any(|a| a.provider == name);
        for (name, p) in config.providers.iter().filter(|(n, _)| used(n)) {
            match provider(name, p) {
                Ok(p) => {
                    providers.insert(name, p);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut aliases = HashMap::new();
        for (alias, a) in &config.models {
            let Some(p) = providers.get(a.provider.as_str()) else {
                if !config.providers.contains_key(&a.provider) {
                    errors.push(format!(
                        "models.{alias}.provider: no provider `{}` is configured",
                        a.provider
                    ));
                }
                continue;
            };
            let per_minute = |n: Option<u32>| {
                n.and_then(NonZeroU32::new)
                    .map(|n| RateLimiter::direct(Quota::per_minute(n)))
            };
            aliases.insert(
                alias.clone(),
                Alias {
                    provider: p.clone(),
                    model: a.model.clone(),
                    requests: per_minute(a.requests_per_minute),
                    tokens: per_minute(a.tokens_per_minute),
                },
            );
        }
        if errors.is_empty() {
            Ok(Self {
                aliases,
                cache: config.cache.clone().map(super::cache::AnswerCache::new),
                replay: None,
            })
        } else {
            Err(errors)
        }
    }

    /// A gateway over one provider, for tests and embedding.
    pub fn with_provider(alias: &str, model: &str, provider: Arc<dyn Provider>) -> Self {
        let mut aliases = HashMap::new();
        aliases.insert(
            alias.to_owned(),
            Alias {
                provider,
                model: model.to_owned(),
                requests: None,
                tokens: None,
            },
        );
        Self {
            aliases,
            cache: None,
            replay: None,
        }
    }

    /// A gateway that answers from `records` (a run's journaled model
    /// calls) and never calls a provider: each request identical to a
    /// recorded one gets its recorded answer, charged its recorded usage;
    /// any other request fails with `not_recorded`.
    pub fn replay(records: impl IntoIterator<Item = ModelCallRecord>) -> Self {
        Self {
            aliases: HashMap::new(),
            cache: None,
            replay: Some(Recorded::new(records)),
        }
    }

    /// Recorded answers a replaying gateway has not used yet (0 otherwise).
    pub fn replay_left(&self) -> usize {
        self.replay.as_ref().map_or(0, Recorded::left)
    }

    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.keys().map(String::as_str)
    }

    /// Answers `req` for an agent granted `granted` aliases, charging every
    /// pool in `pools` (innermost first: the call's own budget, then the
    /// step's, the workflow's, the tenant's), before `deadline`.
    pub async fn complete(
        &self,
        req: &ModelRequest,
        granted: &[String],
        pools: &[&dyn TokenPool],
        deadline: Instant,
    ) -> (Result<ModelResponse, ModelError>, ModelCallRecord) {
        let started = Instant::now();
        let mut record = ModelCallRecord::new(&req.model);
        let result = self.run(req, granted, pools, deadline, &mut record).await;
        record.latency_ms = started.elapsed().as_millis() as u64;
        record.outcome = match &result {
            Ok(_) if record.cached => ModelOutcome::Cached,
            Ok(_) if self.replay.is_some() => ModelOutcome::Replayed,
            Ok(_) => ModelOutcome::Ok,
            Err(e) => e.outcome(),
        };
        if let Ok(answer) = &result {
            record.response = Some(answer.clone());
        }
        (result, record)
    }

    async fn run(
        &self,
        req: &ModelRequest,
        granted: &[String],
        pools: &[&dyn TokenPool],
        deadline: Instant,
        record: &mut ModelCallRecord,
    ) -> Result<ModelResponse, ModelError> {
        if !granted.iter().any(|g| g == &req.model) {
            return Err(ModelError::NotGranted {
                alias: req.model.clone(),
            });
        }
        if let Some(recorded) = &self.replay {
            check_request(req)?;
            record.request = request_digest(&req.model, req);
            return replayed(recorded, req, pools, record).await;
        }
        let alias = self.aliases.get(&req.model).ok_or_else(|| {
            let mut known: Vec<&str> = self.aliases().collect();
            known.sort();
            ModelError::UnknownAlias {
                alias: req.model.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            }
        })?;
        record.model = alias.model.clone();
        check_request(req)?;
        record.request = request_digest(&req.model, req);
        // A repeated deterministic request: no tokens, no provider call.
        let key = self
            .cache
            .as_ref()
            .and_then(|_| super::cache::AnswerCache::key(&alias.model, req));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(answer) = cache.get(key)
        {
            record.cached = true;
            return Ok(answer);
        }
        let needed = estimate_prompt_tokens(req).saturating_add(u64::from(req.max_tokens));
        let grants = reserve(pools, needed).await?;
        record.reserved_tokens = needed;
        let answer = self.attempts(alias, req, needed, deadline, record).await;
        // A failed request may still have been billed; only a request that
        // was never answered gives its reservation back.
        let charged = match &answer {
            Ok(r) => r.usage.map_or(needed, |u| u.total()),
            Err(_) => 0,
        };
        if let Ok(r) = &answer
            && let Some(u) = r.usage
        {
            record.prompt_tokens = u.prompt_tokens;
            record.completion_tokens = u.completion_tokens;
        }
        record.charged_tokens = charged;
        for (pool, grant) in pools.iter().zip(grants) {
            pool.settle(grant, charged).await;
        }
        if let (Some(cache), Some(key), Ok(a)) = (&self.cache, key, &answer) {
            cache.put(key, a);
        }
        answer
    }

    /// Attempts within the deadline: the alias's rate limits first, then the
    /// provider; 429s and 5xx are retried with backoff (longer if the
    /// provider asks) while time is left.
    async fn attempts(
        &self,
        alias: &Alias,
        req: &ModelRequest,
        tokens: u64,
        deadline: Instant,
        record: &mut ModelCallRecord,
    ) -> Result<ModelResponse, ModelError> {
        wait_for_limits(alias, &req.model, tokens, deadline).await?;
        let mut n = 0;
        loop {
            n += 1;
            record.attempts = n;
            let attempt = alias.provider.complete(&alias.model, req, deadline);
            let outcome = match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ModelError::Timeout {
                        alias: req.model.clone(),
                    });
                }
            };
            let err = match outcome {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let wait = (BACKOFF * 2u32.pow(n - 1))
                .min(MAX_BACKOFF)
                .max(err.retry_after.unwrap_or_default());
            if !err.retryable() || n >= MAX_ATTEMPTS || Instant::now() + wait >= deadline {
                return Err(err.into_model_error(&req.model));
            }
            tracing::debug!(alias = %req.model, attempt = n, ?wait, error = %err, "model request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

fn provider(name: &str, p: &ProviderConfig) -> Result<Arc<dyn Provider>, String> {
    match p {
        ProviderConfig::Openai {
            base_url,
            api_key_env,
            api_key_file,
        } => {
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(format!(
                    "providers.{name}.base_url: `{base_url}` is not an http:// or https:// URL"
                ));
            }
            let key = match (api_key_env, api_key_file) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "providers.{name}: give `api_key_env` or `api_key_file`, not both"
                    ));
                }
                (Some(var), None) => Some(ApiKey::new(std::env::var(var).map_err(|_| {
                    format!("providers.{name}.api_key_env: the variable `{var}` is not set")
                })?)),
                (None, Some(path)) => Some(ApiKey::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            format!(
                                "providers.{name}.api_key_file: cannot read {}: {e}",
                                path.display()
                            )
                        })?
                        .trim()
                        .to_owned(),
                )),
                (None, None) => None,
            };
            Ok(Arc::new(OpenAi::new(base_url, key)))
        }
        ProviderConfig::Scripted { file } => Scripted::load(file)
            .map(|s| Arc::new(s) as Arc<dyn Provider>)
            .map_err(|e| format!("providers.{name}.file: {e}")),
    }
}

/// Refuses requests no provider should get from a guest.
fn check_request(req: &ModelRequest) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::InvalidRequest(m));
    if req.max_tokens == 0 {
        return bad("`max_tokens` must be at least 1".into());
    }
    if req.messages.is_empty() || req.messages.len() > MAX_MESSAGES {
        return bad(format!(
            "{} messages; a request has 1 to {MAX_MESSAGES}",
            req.messages.len()
        ));
    }
    if req.tools.len() > MAX_TOOLS {
        return bad(format!("{} tools; at most {MAX_TOOLS}", req.tools.len()));
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return bad(format!("temperature {t} is outside 0 to 2"));
    }
    let bytes = serde_json::to_vec(req)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_REQUEST_BYTES {
        return bad(format!(
            "{bytes} bytes of request; at most {MAX_REQUEST_BYTES}"
        ));
    }
    Ok(())
}

/// Answers `req` from the recorded answers, reserving and charging as the
/// provider's answer was: a replay meets the same budgets the run did.
async fn replayed(
    recorded: &Recorded,
    req: &ModelRequest,
    pools: &[&dyn TokenPool],
    record: &mut ModelCallRecord,
) -> Result<ModelResponse, ModelError> {
    let Some(answer) = recorded.take(&record.request) else {
        return Err(ModelError::NotRecorded {
            alias: req.model.clone(),
            why: recorded.why_missing(),
        });
    };
    record.model = answer.model;
    let needed = estimate_prompt_tokens(req).saturating_add(u64::from(req.max_tokens));
    let grants = reserve(pools, needed).await?;
    record.reserved_tokens = needed;
    let usage = answer.response.usage;
    let charged = usage.map_or(needed, |u| u.total());
    if let Some(u) = usage {
        record.prompt_tokens = u.prompt_tokens;
        record.completion_tokens = u.completion_tokens;
    }
    record.charged_tokens = charged;
    for (pool, grant) in pools.iter().zip(grants) {
        pool.settle(grant, charged).await;
    }
    Ok(answer.response)
}

/// Reserves `tokens` from every pool, or from none.
async fn reserve(pools: &[&dyn TokenPool], tokens: u64) -> Result<Vec<TokenGrant>, ModelError> {
    let mut grants = Vec::with_capacity(pools.len());
    for pool in pools {
        match pool.reserve(tokens).await {
            Ok(g) => grants.push(g),
            Err(e) => {
                for (p, g) in pools.iter().zip(grants) {
                    p.settle(g, 0).await;
                }
                return Err(ModelError::TokenBudgetExhausted {
                    budget: e.budget,
                    field: e.field,
                    used: e.used,
                    limit: e.limit,
                    needed: tokens,
                });
            }
        }
    }
    Ok(grants)
}

/// Waits (inside the deadline) until the alias's request and token rates
/// allow this request.
async fn wait_for_limits(
    alias: &Alias,
    name: &str,
    tokens: u64,
    deadline: Instant,
) -> Result<(), ModelError> {
    use governor::clock::{Clock as _, DefaultClock};
    let limited = |detail: String, wait: Option<Duration>| ModelError::RateLimited {
        alias: name.to_owned(),
        detail,
        retry_after: wait,
    };
    if let Some(l) = &alias.requests {
        loop {
            match l.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if Instant::now() + wait >= deadline {
                        return Err(limited(
                            "the alias's `requests_per_minute` is spent until after the call's deadline".into(),
                            Some(wait),
                        ));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    if let Some(l) = &alias.tokens {
        let n =
            NonZeroU32::new(tokens.clamp(1, u64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
        loop {
            match l.check_n(n) {
                Ok(Ok(())) => break,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if Instant::now() + wait >= deadline {
                        return Err(limited(
                            "the alias's `tokens_per_minute` is spent until after the call's deadline".into(),
                            Some(wait),
                        ));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {
                    return Err(ModelError::InvalidRequest(format!(
                        "the request may use {tokens} tokens, more than model `{name}`'s `tokens_per_minute` allows at once"
                    )));
                }
            }
        }
    }
    Ok(())
}
