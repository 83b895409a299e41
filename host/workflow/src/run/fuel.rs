//! The workflow's fuel pool: each call reserves before it starts and settles after.

/// Fuel of the whole run. A call reserves what it may use before it starts
/// and gives back what it did not use, so concurrent calls never overspend.
#[derive(Debug)]
pub(super) struct FuelPool {
    remaining: u64,
    used: u64,
    /// Reserved by calls still running. A call dropped by cancellation never
    /// settles; the report shows its reservation as `unsettled`.
    outstanding: u64,
}

impl FuelPool {
    /// A pool for one session; `charged` is what earlier sessions of the
    /// run already charged, counted as used.
    pub(super) fn new(budget: u64, charged: u64) -> Self {
        Self {
            remaining: budget.saturating_sub(charged),
            used: charged,
            outstanding: 0,
        }
    }

    /// Reserves up to `want` fuel; the call may use no more than that.
    pub(super) fn reserve(&mut self, want: u64) -> u64 {
        let grant = want.min(self.remaining);
        self.remaining -= grant;
        self.outstanding += grant;
        grant
    }

    /// Returns what a call did not use of its reservation.
    pub(super) fn settle(&mut self, reserved: u64, used: u64) {
        let used = used.min(reserved);
        self.remaining += reserved - used;
        self.used += used;
        self.outstanding -= reserved;
    }

    /// Fuel used across sessions, and fuel still reserved by this
    /// session's calls that never settled.
    pub(super) fn totals(&self) -> (u64, u64) {
        (self.used, self.outstanding)
    }
}
