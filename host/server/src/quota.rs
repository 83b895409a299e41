//! Quotas: runs submitted per minute (GCRA, `governor`), running runs (counted by the store), fuel per window (a ledger in the store that every call reserves from), and the per-call ceilings every step budget is held under.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use corral_runtime::Budget;
use corral_runtime::human;
use corral_workflow::definition::{BudgetDef, WorkflowDef};
use corral_workflow::ledger::{FuelLedger, Grant};
use corral_workflow::model::Workflow;
use governor::RateLimiter;
use governor::clock::{Clock, SystemClock};
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use serde::Serialize;

use crate::problem::{Kind, Problem};
use crate::tenant::{Quota, Tenant, Tenants};

/// The body of a 429: which quota, its limit, what was used and when it resets.
#[derive(Debug, Clone, Serialize)]
pub struct Spent {
    pub quota: &'static str,
    pub limit: u64,
    pub used: u64,
    /// Seconds until there is room again, when known.
    pub resets_in_secs: Option<f64>,
}

impl Spent {
    pub fn problem(self, tenant: &str, detail: String) -> Problem {
        let retry = Duration::from_secs_f64(self.resets_in_secs.unwrap_or(1.0).max(0.0));
        Problem::new(Kind::QuotaExceeded, format!("tenant `{tenant}`: {detail}"))
            .with("quota", &self)
            .retry_after(retry)
    }
}

/// A tenant's per-minute limiter: `governor`'s GCRA, its state in the store.
type SubmitLimiter = RateLimiter<
    NotKeyed,
    StoredRate,
    SystemClock,
    governor::middleware::NoOpMiddleware<std::time::SystemTime>,
>;

/// Per-tenant admission gates. The GCRA state lives in the store, so a
/// tenant's allowance holds across restarts (and servers sharing a store).
pub struct Gates {
    submits: HashMap<String, SubmitLimiter>,
}

/// `governor`'s state for one limiter, kept in the store under `key`.
///
/// governor measures time from the limiter's creation; the store keeps it
/// from the Unix epoch, so that another process (with another start) reads
/// it right. `start_ns` is the wall clock taken just before the limiter was
/// made: off from governor's own start by the microseconds between the two.
pub struct StoredRate {
    store: Arc<dyn corral_store::Store>,
    key: String,
    start_ns: u64,
}

impl StateStore for StoredRate {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut outcome = None;
        let stored = self.store.update_rate(&self.key, &mut |old| {
            let since_start = old.map(|abs| Nanos::from(abs.saturating_sub(self.start_ns)));
            let r = f(since_start);
            let next = r
                .as_ref()
                .ok()
                .map(|(_, tat)| u64::from(*tat).saturating_add(self.start_ns));
            outcome = Some(r.map(|(t, _)| t));
            next
        });
        match (stored, outcome) {
            (Ok(()), Some(r)) => r,
            // The store failed: decide on this process's view alone (as
            // if nothing had been submitted) rather than refuse every
            // tenant while the store is down; the failure is logged.
            (stored, _) => {
                if let Err(e) = stored {
                    tracing::error!(key = %self.key, error = %e, "rate limiter state unavailable; allowing");
                }
                f(None).map(|(t, _)| t)
            }
        }
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

impl Gates {
    pub fn new(tenants: &Tenants, store: &Arc<dyn corral_store::Store>) -> Self {
        let submits = tenants
            .iter()
            .map(|t| {
                let per_minute =
                    NonZeroU32::new(t.quota.runs_per_minute).unwrap_or(NonZeroU32::MIN);
                let state = StoredRate {
                    store: store.clone(),
                    key: format!("runs_per_minute:{}", t.id),
                    start_ns: unix_ns(),
                };
                let limiter =
                    RateLimiter::new(governor::Quota::per_minute(per_minute), state, SystemClock);
                (t.id.clone(), limiter)
            })
            .collect();
        Self { submits }
    }

    /// Takes one submission from `tenant`'s per-minute allowance (a store
    /// transaction: call it off the async threads).
    pub fn submit(&self, tenant: &Tenant) -> Result<(), Problem> {
        let Some(limiter) = self.submits.get(&tenant.id) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(SystemClock.now());
            let limit = u64::from(tenant.quota.runs_per_minute);
            Spent {
                quota: "runs_per_minute",
                limit,
                used: limit,
                resets_in_secs: Some(wait.as_secs_f64()),
            }
            .problem(
                &tenant.id,
                format!(
                    "{limit} runs per minute submitted; the next is allowed in {}",
                    human::duration(wait)
                ),
            )
        })
    }
}

/// Every budget the file sets explicitly that is above the tenant's
/// per-call ceiling: the submission is refused with all of them.
pub fn above_ceiling(def: &WorkflowDef, q: &Quota) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |field: String, b: &BudgetDef| {
        if let Some(f) = b.fuel
            && f.0 > q.fuel_per_call
        {
            found.push(format!(
                "{field}.fuel asks for {} instructions; the tenant's ceiling (quota.fuel_per_call) is {}",
                human::count(f.0),
                human::count(q.fuel_per_call)
            ));
        }
        if let Some(m) = b.memory
            && m.0 > q.memory_per_call
        {
            found.push(format!(
                "{field}.memory asks for {}; the tenant's ceiling (quota.memory_per_call) is {}",
                human::bytes(m.0),
                human::bytes(q.memory_per_call)
            ));
        }
        if let Some(t) = b.timeout
            && t.0 > q.call_timeout
        {
            found.push(format!(
                "{field}.timeout asks for {}; the tenant's ceiling (quota.call_timeout) is {}",
                human::duration(t.0),
                human::duration(q.call_timeout)
            ));
        }
        if let Some(t) = b.tokens
            && t.0 > q.tokens_per_call
        {
            found.push(format!(
                "{field}.tokens asks for {}; the tenant's ceiling (quota.tokens_per_call) is {}",
                human::count(t.0),
                human::count(q.tokens_per_call)
            ));
        }
        if let Some(n) = b.http_requests
            && n > q.http_requests_per_call
        {
            found.push(format!(
                "{field}.http_requests asks for {n}; the tenant's ceiling (quota.http_requests_per_call) is {}",
                q.http_requests_per_call
            ));
        }
        for (name, asked, ceiling) in [
            (
                "http_request_bytes",
                b.http_request_bytes,
                q.http_request_bytes_per_call,
            ),
            (
                "http_response_bytes",
                b.http_response_bytes,
                q.http_response_bytes_per_call,
            ),
        ] {
            if let Some(a) = asked
                && a.0 > ceiling
            {
                found.push(format!(
                    "{field}.{name} asks for {}; the tenant's ceiling (quota.{name}_per_call) is {}",
                    human::bytes(a.0),
                    human::bytes(ceiling)
                ));
            }
        }
    };
    for (name, a) in &def.agents {
        check(format!("agents.{name}.budget"), &a.budget);
    }
    for (i, s) in def.steps.iter().enumerate() {
        check(format!("steps[{i}].budget"), &s.budget);
    }
    for (i, s) in def.steps.iter().enumerate() {
        let limits = [
            (
                "max_delegations",
                s.max_delegations,
                q.delegations_per_step,
                "delegations_per_step",
            ),
            (
                "delegation_depth",
                s.delegation_depth,
                q.delegation_depth,
                "delegation_depth",
            ),
        ];
        for (field, asked, ceiling, quota) in limits {
            if let Some(n) = asked
                && n > ceiling
            {
                found.push(format!(
                    "steps[{i}].{field} asks for {n}; the tenant's ceiling (quota.{quota}) is {ceiling}"
                ));
            }
        }
    }
    found
}

/// Holds every call's budget to the tenant's ceiling: a default the file
/// did not set never exceeds what the tenant may have.
pub fn clamp(w: &mut Workflow, q: &Quota) {
    for a in w.agents.values_mut() {
        hold(&mut a.budget, q);
    }
    for s in &mut w.steps {
        hold(&mut s.budget, q);
        hold(&mut s.fallback_budget, q);
        s.max_delegations = s.max_delegations.min(q.delegations_per_step);
        s.delegation_depth = s.delegation_depth.min(q.delegation_depth);
    }
    w.max_concurrency = w.max_concurrency.min(q.concurrent_calls);
    w.artifact_budget = w.artifact_budget.min(q.artifact_bytes);
}

/// One call's budget held to the tenant's per-call ceilings.
fn hold(b: &mut Budget, q: &Quota) {
    b.fuel = b.fuel.min(q.fuel_per_call);
    b.memory_bytes = b.memory_bytes.min(q.memory_per_call);
    b.timeout = b.timeout.min(q.call_timeout);
    b.tokens = b.tokens.min(q.tokens_per_call);
    b.http_requests = b.http_requests.min(q.http_requests_per_call);
    b.http_request_bytes = b.http_request_bytes.min(q.http_request_bytes_per_call);
    b.http_response_bytes = b.http_response_bytes.min(q.http_response_bytes_per_call);
}

/// The quotas a tenant's run is held to, shared with its driver.
pub type SharedQuota = Arc<Quota>;

/// A tenant's fuel per window, kept in the store so it holds across runs,
/// restarts and servers: the outer budget of every call of its runs.
///
/// Each store reservation takes a little more than the call asked for (a
/// slice of the window, at most [`CREDIT_SHARE`] of it) and keeps the rest
/// as local credit, which the tenant's next calls draw on without a store
/// transaction, and to which their refunds return. The store has charged
/// the credit already, so the window is never overspent; what this process
/// holds unused at exit stays charged until the window ends.
pub struct TenantFuel {
    pub store: Arc<dyn corral_store::Store>,
    pub tenant: Arc<Tenant>,
    credit: std::sync::Mutex<Credit>,
}

/// Fuel reserved in the store and not yet handed to a call.
#[derive(Default)]
struct Credit {
    /// The window it was reserved in.
    start_ms: i64,
    available: u64,
}

/// The most of a window one process holds as credit: 1/200.
pub const CREDIT_SHARE: u64 = 200;

impl TenantFuel {
    pub fn new(store: Arc<dyn corral_store::Store>, tenant: Arc<Tenant>) -> Self {
        Self {
            store,
            tenant,
            credit: Default::default(),
        }
    }

    fn window_open(&self, start_ms: i64) -> bool {
        let len = self.tenant.quota.window.as_millis() as i64;
        corral_store::now_ms() < start_ms.saturating_add(len)
    }

    fn spent(&self, w: &corral_store::FuelWindow) -> String {
        let resets = Duration::from_millis((w.end_ms - corral_store::now_ms()).max(0) as u64);
        format!(
            "tenant `{}` used its fuel quota of {} per {} (quota.fuel_per_window); it resets in {}",
            self.tenant.id,
            human::count(w.limit),
            human::duration(self.tenant.quota.window),
            human::duration(resets)
        )
    }

    /// The 429 for a spent window, if it is spent now.
    pub fn check(&self) -> Result<(), Problem> {
        let q = &self.tenant.quota;
        let w = self
            .store
            .fuel_window(&self.tenant.id, q.window, q.fuel_per_window)?;
        if w.charged < w.limit {
            return Ok(());
        }
        let resets = (w.end_ms - corral_store::now_ms()).max(0) as f64 / 1000.0;
        Err(Spent {
            quota: "fuel_per_window",
            limit: w.limit,
            used: w.charged,
            resets_in_secs: Some(resets),
        }
        .problem(&self.tenant.id, self.spent(&w)))
    }
}

impl TenantFuel {
    /// All of `want` from the credit, if it has it (no store call).
    fn take_credit(&self, credit: &mut Credit, want: u64) -> Option<Grant> {
        if credit.available >= want && self.window_open(credit.start_ms) {
            credit.available -= want;
            return Some(Grant {
                amount: want,
                token: credit.start_ms,
            });
        }
        None
    }

    /// Returns `unused` of `grant` to the credit, if it is the current
    /// window's and has room (no store call).
    fn give_credit(&self, grant: &Grant, unused: u64) -> bool {
        let mut credit = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.tenant.quota.fuel_per_window / CREDIT_SHARE;
        if credit.start_ms == grant.token
            && self.window_open(grant.token)
            && credit.available.saturating_add(unused) <= cap
        {
            credit.available += unused;
            return true;
        }
        false
    }
}

impl FuelLedger for TenantFuel {
    fn reserve_now(&self, want: u64) -> Option<Grant> {
        let mut credit = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        self.take_credit(&mut credit, want)
    }

    fn settle_now(&self, grant: &Grant, used: u64) -> bool {
        self.give_credit(grant, grant.amount.saturating_sub(used))
    }

    fn reserve(&self, want: u64) -> Result<Grant, String> {
        let q = &self.tenant.quota;
        let mut credit = self.credit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = self.take_credit(&mut credit, want) {
            return Ok(g);
        }
        // Another slice from the store; the old window's credit is moot.
        let slice = (q.fuel_per_window / CREDIT_SHARE).min(want.saturating_mul(64));
        let w = self
            .store
            .reserve_fuel(
                &self.tenant.id,
                q.window,
                q.fuel_per_window,
                want.saturating_add(slice),
            )
            .map_err(|e| e.to_string())?;
        if credit.start_ms != w.start_ms {
            *credit = Credit {
                start_ms: w.start_ms,
                available: 0,
            };
        }
        let total = w.granted.saturating_add(credit.available);
        if total == 0 {
            return Err(self.spent(&w));
        }
        let amount = want.min(total);
        credit.available = total - amount;
        Ok(Grant {
            amount,
            token: w.start_ms,
        })
    }

    fn describe(&self) -> String {
        format!(
            "tenant `{}`'s fuel quota of {} per {} (quota.fuel_per_window)",
            self.tenant.id,
            human::count(self.tenant.quota.fuel_per_window),
            human::duration(self.tenant.quota.window)
        )
    }

    fn settle(&self, grant: &Grant, used: u64) {
        if self.give_credit(grant, grant.amount.saturating_sub(used)) {
            return;
        }
        if let Err(e) = self
            .store
            .settle_fuel(&self.tenant.id, grant.token, grant.amount, used)
        {
            // The refund is lost; the window stays charged (never overspent).
            tracing::warn!(tenant = %self.tenant.id, error = %e, "cannot refund unused fuel");
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_store::{Durability, SqliteStore, Store};

    use super::*;

    fn ledger(limit: u64) -> (Arc<dyn Store>, TenantFuel, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path(), Durability::Normal).unwrap());
        let tenant = Arc::new(Tenant {
            id: "acme".into(),
            token_hashes: Vec::new(),
            secrets: Default::default(),
            quota: Quota {
                fuel_per_window: limit,
                ..Quota::default()
            },
            webhooks: Vec::new(),
        });
        (store.clone(), TenantFuel::new(store, tenant), dir)
    }

    fn charged(store: &Arc<dyn Store>, limit: u64) -> u64 {
        store
            .fuel_window("acme", Duration::from_secs(3600), limit)
            .unwrap()
            .charged
    }

    fn tight() -> Quota {
        Quota {
            tokens_per_call: 1_000,
            http_requests_per_call: 4,
            http_request_bytes_per_call: 1 << 10,
            http_response_bytes_per_call: 64 << 10,
            ..Quota::default()
        }
    }

    #[test]
    fn budgets_above_the_per_call_ceilings_are_all_named() {
        let text = "version: 1\nname: w\nagents:\n  f: { component: f.wasm, budget: { http_requests: 5, http_response_bytes: 1MiB } }\nsteps:\n  - { id: a, agent: f, budget: { http_request_bytes: 2KiB, tokens: 2K } }\n";
        let def = corral_workflow::source::parse(std::path::Path::new("w.yaml"), text)
            .unwrap()
            .def;
        let found = above_ceiling(&def, &tight());
        let expected = [
            "agents.f.budget.http_requests asks for 5; the tenant's ceiling (quota.http_requests_per_call) is 4",
            "agents.f.budget.http_response_bytes asks for 1.0 MiB; the tenant's ceiling (quota.http_response_bytes_per_call) is 64.0 KiB",
            "steps[0].budget.tokens asks for 2k; the tenant's ceiling (quota.tokens_per_call) is 1k",
            "steps[0].budget.http_request_bytes asks for 2.0 KiB; the tenant's ceiling (quota.http_request_bytes_per_call) is 1.0 KiB",
        ];
        assert_eq!(found, expected);
        let within = text.replace("5,", "4,").replace("1MiB", "64KiB");
        let within = within.replace("2KiB", "1KiB").replace("2K }", "1K }");
        let def = corral_workflow::source::parse(std::path::Path::new("w.yaml"), &within)
            .unwrap()
            .def;
        assert_eq!(above_ceiling(&def, &tight()), Vec::<String>::new());
    }

    #[test]
    fn a_steps_delegation_limits_are_held_to_the_tenants_ceilings() {
        let q = Quota {
            delegations_per_step: 10,
            delegation_depth: 2,
            ..Quota::default()
        };
        let text = "version: 1\nname: w\nagents:\n  o: { component: o.wasm }\nsteps:\n  - { id: a, agent: o, delegates: [o], max_delegations: 11, delegation_depth: 3 }\n  - { id: b, agent: o, delegates: [o], max_delegations: 10, delegation_depth: 2 }\n";
        let def = corral_workflow::source::parse(std::path::Path::new("w.yaml"), text)
            .unwrap()
            .def;
        assert_eq!(
            above_ceiling(&def, &q),
            [
                "steps[0].max_delegations asks for 11; the tenant's ceiling (quota.delegations_per_step) is 10",
                "steps[0].delegation_depth asks for 3; the tenant's ceiling (quota.delegation_depth) is 2",
            ]
        );
    }

    #[test]
    fn defaults_the_file_left_unset_are_held_to_the_ceilings() {
        let mut b = Budget::default();
        hold(&mut b, &tight());
        assert_eq!(
            (
                b.tokens,
                b.http_requests,
                b.http_request_bytes,
                b.http_response_bytes
            ),
            (1_000, 4, 1 << 10, 64 << 10)
        );
        // A ceiling above the default leaves the default alone.
        let mut b = Budget::default();
        hold(&mut b, &Quota::default());
        assert_eq!(b, Budget::default());
    }

    #[test]
    fn calls_draw_on_local_credit_and_refunds_return_to_it() {
        let (store, fuel, _dir) = ledger(1_000_000);
        let a = fuel.reserve(1_000).unwrap();
        // One store reservation: the call's 1,000 and a 5,000 slice.
        assert_eq!(charged(&store, 1_000_000), 6_000);
        let b = fuel.reserve(1_000).unwrap();
        assert_eq!((a.amount, b.amount), (1_000, 1_000));
        assert_eq!(charged(&store, 1_000_000), 6_000, "served from credit");
        fuel.settle(&a, 400);
        fuel.settle(&b, 1_000);
        // 600 came back to the credit: 4,000 + 600 left, no store call.
        for _ in 0..4 {
            fuel.reserve(1_000).unwrap();
        }
        assert_eq!(charged(&store, 1_000_000), 6_000);
    }

    #[test]
    fn credit_never_lets_a_tenant_overspend_its_window() {
        let (store, fuel, _dir) = ledger(2_500);
        let mut handed = 0;
        loop {
            match fuel.reserve(1_000) {
                Ok(g) => handed += g.amount,
                Err(e) => {
                    assert!(e.contains("quota.fuel_per_window"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(handed, 2_500);
        assert_eq!(charged(&store, 2_500), 2_500);
    }
}
