//! An outer fuel budget a run draws from besides its own pool, such as a tenant's fuel per window, kept by whoever runs the workflow.
//!
//! Budgets nest: a call reserves from the run's pool first, then from the
//! ledger, and runs under the smaller grant; afterwards it gives back to
//! both what it did not use. A ledger never grants more than it has left,
//! so the outer budget is never overspent, and a reservation cut off by a
//! crash stays charged.

/// Fuel granted by a ledger to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub amount: u64,
    /// The ledger's own reference for the settlement (a window's start).
    pub token: i64,
}

/// An outer fuel budget. Its methods may block (a store); the scheduler
/// calls them on the blocking pool, unless the `_now` forms answer first.
pub trait FuelLedger: Send + Sync {
    /// Reserves up to `want` fuel (at least 1), or says why none is left,
    /// naming the budget and when it has room again.
    fn reserve(&self, want: u64) -> Result<Grant, String>;
    /// Gives back what a call did not use of its grant.
    fn settle(&self, grant: &Grant, used: u64);
    /// [`reserve`](Self::reserve) when it can answer without blocking
    /// (from memory); `None` sends the caller to the blocking form.
    fn reserve_now(&self, _want: u64) -> Option<Grant> {
        None
    }
    /// [`settle`](Self::settle) when it can without blocking; false sends
    /// the caller to the blocking form.
    fn settle_now(&self, _grant: &Grant, _used: u64) -> bool {
        false
    }
    /// The budget, for messages: which it is and where its limit is set.
    fn describe(&self) -> String;
}
