//! Fair admission to call slots across tenants: one queue per tenant, served round-robin, each tenant also held to its own `concurrent_calls`.
//!
//! The runtime's instance pool is first come, first served: a tenant that
//! submits a thousand runs would fill its queue ahead of another tenant's
//! single run. Every call of a tenant's run waits here instead. When a slot
//! frees, the next tenant in the ring that has a waiting call and room under
//! its own limit gets it, so a tenant waits behind at most one call of each
//! other tenant, however many the others queued.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use corral_workflow::admission::{Admission, Admitted};
use tokio::sync::oneshot;

/// Slots shared by every tenant's calls.
pub struct Fair {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Calls each tenant has running.
    running: HashMap<String, u32>,
    /// Calls each tenant has waiting, oldest first.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiting calls, in the order they are served.
    ring: VecDeque<String>,
    /// Each tenant's `concurrent_calls`.
    limits: HashMap<String, u32>,
}

impl Fair {
    /// `slots` calls at once in all; `limits` per tenant.
    pub fn new(slots: usize, limits: HashMap<String, u32>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots,
                limits,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot for a call of `tenant`.
    pub async fn acquire(self: &Arc<Self>, tenant: &str) -> Slot {
        let rx = {
            let mut s = self.lock();
            let queued = s.waiting.get(tenant).is_some_and(|q| !q.is_empty());
            if !queued && s.free > 0 && s.room(tenant) {
                s.take(tenant);
                return Slot::new(self, tenant);
            }
            let (tx, rx) = oneshot::channel();
            s.waiting
                .entry(tenant.to_owned())
                .or_default()
                .push_back(tx);
            if !s.ring.iter().any(|t| t == tenant) {
                s.ring.push_back(tenant.to_owned());
            }
            rx
        };
        // The slot was taken for us before the send; a dropped wait gives
        // it back through `dispatch` (the send fails).
        let _ = rx.await;
        Slot::new(self, tenant)
    }

    fn release(&self, tenant: &str) {
        let mut s = self.lock();
        s.free += 1;
        if let Some(n) = s.running.get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
        s.dispatch();
    }

    /// Calls each tenant has running and waiting, for metrics and tests.
    pub fn load(&self, tenant: &str) -> (u32, usize) {
        let s = self.lock();
        (
            s.running.get(tenant).copied().unwrap_or(0),
            s.waiting.get(tenant).map_or(0, VecDeque::len),
        )
    }
}

impl State {
    fn room(&self, tenant: &str) -> bool {
        let limit = self.limits.get(tenant).copied().unwrap_or(u32::MAX);
        self.running.get(tenant).copied().unwrap_or(0) < limit
    }

    fn take(&mut self, tenant: &str) {
        self.free -= 1;
        *self.running.entry(tenant.to_owned()).or_default() += 1;
    }

    /// Hands free slots to waiting calls, one tenant at a time around the ring.
    fn dispatch(&mut self) {
        let mut skipped = 0;
        while self.free > 0 && skipped < self.ring.len() {
            let Some(tenant) = self.ring.pop_front() else {
                break;
            };
            if !self.room(&tenant) {
                // At its own limit: keep its place for later.
                self.ring.push_back(tenant);
                skipped += 1;
                continue;
            }
            let Some(tx) = self.waiting.get_mut(&tenant).and_then(VecDeque::pop_front) else {
                continue;
            };
            self.take(&tenant);
            if tx.send(()).is_err() {
                // The waiter gave up: the slot is free again.
                self.free += 1;
                if let Some(n) = self.running.get_mut(&tenant) {
                    *n -= 1;
                }
            }
            if self.waiting.get(&tenant).is_some_and(|q| !q.is_empty()) {
                self.ring.push_back(tenant);
            }
            skipped = 0;
        }
    }
}

/// One admitted call's slot; dropping it frees the slot.
pub struct Slot {
    fair: Arc<Fair>,
    tenant: String,
}

impl Slot {
    fn new(fair: &Arc<Fair>, tenant: &str) -> Self {
        Self {
            fair: fair.clone(),
            tenant: tenant.to_owned(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.fair.release(&self.tenant);
    }
}

/// A tenant's runs' view of the shared slots.
pub struct TenantAdmission {
    pub fair: Arc<Fair>,
    pub tenant: String,
    /// Where the wait for each slot is observed (the tenant's series of
    /// `corral_call_admission_wait_seconds`), if anywhere.
    pub waits: Option<prometheus_client::metrics::histogram::Histogram>,
    /// The tenant's slots shared with other processes on the store, taken
    /// before a place in this process.
    pub shared: Option<Arc<crate::shared_calls::SharedCalls>>,
}

impl Admission for TenantAdmission {
    fn admit(&self) -> Pin<Box<dyn Future<Output = Admitted> + Send + '_>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            // The tenant's shared slot first: waiting for it (on other
            // processes) must not hold a place other tenants could use here.
            let shared = match &self.shared {
                Some(s) => Some(s.acquire().await),
                None => None,
            };
            let slot = self.fair.acquire(&self.tenant).await;
            if let Some(h) = &self.waits {
                h.observe(started.elapsed().as_secs_f64());
            }
            Admitted(Box::new((slot, shared)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fair(slots: usize) -> Arc<Fair> {
        Fair::new(slots, [("a".into(), 10), ("b".into(), 10)].into())
    }

    #[tokio::test]
    async fn a_flooding_tenant_does_not_starve_another() {
        let f = fair(1);
        let first = f.acquire("a").await;
        // Tenant a queues 100 calls, then b queues one.
        let mut a_waits = Vec::new();
        for _ in 0..100 {
            let f = f.clone();
            a_waits.push(tokio::spawn(async move { f.acquire("a").await }));
        }
        tokio::task::yield_now().await;
        while f.load("a").1 < 100 {
            tokio::task::yield_now().await;
        }
        let fb = f.clone();
        let b = tokio::spawn(async move { fb.acquire("b").await });
        while f.load("b").1 < 1 {
            tokio::task::yield_now().await;
        }
        // a's running call ends: a's oldest waiter goes first (a was in the
        // ring first), then b, ahead of a's other 99.
        drop(first);
        tokio::task::yield_now().await;
        assert_eq!(f.load("a"), (1, 99));
        let a_next = a_waits.remove(0).await.unwrap();
        drop(a_next);
        let b_slot = b.await.unwrap();
        assert_eq!(f.load("b"), (1, 0));
        assert_eq!(f.load("a"), (0, 99));
        drop(b_slot);
        for w in a_waits {
            drop(w.await.unwrap());
        }
        assert_eq!(f.load("a"), (0, 0));
    }

    #[tokio::test]
    async fn a_tenant_is_held_to_its_own_concurrent_calls() {
        let f = Fair::new(4, [("a".into(), 1), ("b".into(), 4)].into());
        let a1 = f.acquire("a").await;
        let fa = f.clone();
        let a2 = tokio::spawn(async move { fa.acquire("a").await });
        while f.load("a").1 < 1 {
            tokio::task::yield_now().await;
        }
        // b still gets the free slots.
        let _b = (f.acquire("b").await, f.acquire("b").await);
        assert_eq!(f.load("a"), (1, 1));
        drop(a1);
        let _a2 = a2.await.unwrap();
        assert_eq!(f.load("a"), (1, 0));
    }

    #[tokio::test]
    async fn a_wait_given_up_frees_its_slot() {
        let f = fair(1);
        let held = f.acquire("a").await;
        let fb = f.clone();
        let gave_up = tokio::spawn(async move { fb.acquire("b").await });
        while f.load("b").1 < 1 {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        // The slot is free: a new call gets it at once.
        let _again = f.acquire("a").await;
        assert_eq!(f.load("b"), (0, 0));
    }
}
