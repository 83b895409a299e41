//! A tenant's `concurrent_calls` held across every process sharing the store: each process holds some of the tenant's slots in the store, takes more a round trip at a time when its calls need them, and gives back what it no longer uses within a second.
//!
//! A call first gets one of the tenant's shared slots here, then a place in
//! this process ([`crate::fair`]), so that a tenant waiting on other
//! processes never holds places other tenants' calls could use here. A slot freed by a call is kept for the
//! next call of this process (no round trip) until the renewal, every
//! [`RENEW`], hands back what is idle. The store never grants beyond the
//! limit; a process that dies gives its slots back when its hold expires
//! ([`HOLD`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{Owner, Store};
use tokio::sync::Notify;

/// How long a hold lasts unrenewed: a killed process's slots come back then.
pub const HOLD: Duration = Duration::from_secs(5);
/// How often holds are renewed and idle slots given back.
pub const RENEW: Duration = Duration::from_secs(1);
/// How often a call that found no slot anywhere asks the store again
/// (another process may have given some back).
const RETRY: Duration = Duration::from_millis(100);

/// One tenant's shared slots, as this process holds them.
pub struct SharedCalls {
    store: Arc<dyn Store>,
    key: String,
    holder: String,
    limit: u32,
    local: Mutex<Local>,
    /// One store call at a time, so holds are set in order.
    asking: tokio::sync::Mutex<()>,
    freed: Notify,
}

#[derive(Default)]
struct Local {
    /// Slots the store says this process holds.
    held: u32,
    /// Of those, taken by running calls.
    in_use: u32,
    /// Calls waiting for one.
    waiting: u32,
}

impl SharedCalls {
    pub fn new(store: Arc<dyn Store>, tenant: &str, limit: u32) -> Arc<Self> {
        Arc::new(Self {
            store,
            key: format!("{tenant}/calls"),
            holder: Owner::this_process().encode(),
            limit,
            local: Mutex::default(),
            asking: tokio::sync::Mutex::new(()),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot this process holds, taken now if one is idle.
    fn take_idle(self: &Arc<Self>) -> Option<SharedSlot> {
        let mut l = self.lock();
        if l.in_use < l.held {
            l.in_use += 1;
            return Some(SharedSlot(self.clone()));
        }
        None
    }

    /// Waits for one of the tenant's slots. Dropping the future gives up.
    pub async fn acquire(self: &Arc<Self>) -> SharedSlot {
        if let Some(s) = self.take_idle() {
            return s;
        }
        self.lock().waiting += 1;
        let _waiting = Waiting(self);
        loop {
            // One waiter asks the store for all who wait; the others wait
            // for its answer (or a slot freed here) instead of asking too.
            if let Ok(asking) = self.asking.try_lock() {
                let _ = self.settle(asking).await;
            }
            if let Some(s) = self.take_idle() {
                return s;
            }
            tokio::select! {
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(RETRY + Duration::from_millis(fastrand::u64(0..50))) => {}
            }
            if let Some(s) = self.take_idle() {
                return s;
            }
        }
    }

    /// Sets this process's hold to what its calls use and wait for; the
    /// store grants what fits under the limit. Slots being given back are
    /// dropped here first, so no call takes one while the store is told it
    /// is free. A store that cannot be reached leaves the hold as it was
    /// (calls wait, never overrun).
    async fn settle(
        self: &Arc<Self>,
        _asking: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), corral_store::StoreError> {
        let want = {
            let mut l = self.lock();
            let want = l.in_use + l.waiting;
            l.held = l.held.min(want);
            want
        };
        let this = self.clone();
        let held = tokio::task::spawn_blocking(move || {
            this.store
                .hold_slots(&this.key, &this.holder, want, this.limit, HOLD)
        })
        .await
        .unwrap_or_else(|e| {
            Err(corral_store::StoreError::Busy {
                path: String::new(),
                source: e.to_string().into(),
            })
        })?;
        self.lock().held = held;
        self.freed.notify_waiters();
        Ok(())
    }

    /// Until `stop`: renews this process's hold and gives idle slots back.
    pub async fn renew(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RENEW) => {}
            }
            let busy = {
                let l = self.lock();
                l.held > 0 || l.waiting > 0
            };
            if busy && let Err(e) = self.settle(self.asking.lock().await).await {
                tracing::warn!(key = %self.key, error = %e, "cannot renew the shared call slots");
            }
        }
        // Stopping: hand back everything at once.
        let _ = self.settle_to_zero().await;
    }

    async fn settle_to_zero(self: &Arc<Self>) -> Result<u32, corral_store::StoreError> {
        let _asking = self.asking.lock().await;
        self.lock().held = 0;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.store
                .hold_slots(&this.key, &this.holder, 0, this.limit, HOLD)
        })
        .await
        .unwrap_or(Ok(0))
    }

    /// Slots this process holds and uses, and calls waiting for one.
    pub fn load(&self) -> (u32, u32, u32) {
        let l = self.lock();
        (l.held, l.in_use, l.waiting)
    }
}

/// Counts a waiting call out however its wait ends.
struct Waiting<'a>(&'a SharedCalls);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut l = self.0.lock();
        l.waiting = l.waiting.saturating_sub(1);
    }
}

/// One of the tenant's shared slots, held by a running call.
pub struct SharedSlot(Arc<SharedCalls>);

impl Drop for SharedSlot {
    fn drop(&mut self) {
        {
            let mut l = self.0.lock();
            l.in_use = l.in_use.saturating_sub(1);
        }
        // Kept for this process's next call until the renewal.
        self.0.freed.notify_one();
    }
}
