//! Admission to call slots shared with other runs, such as a server's fair share across tenants, decided by whoever runs the workflow.
//!
//! A call waits for its run's own concurrency slot first, then for an
//! admission; it holds the [`Admitted`] guard until the call ends. Without
//! one, calls go straight to the runtime's instance pool, first come first
//! served.

use std::future::Future;
use std::pin::Pin;

/// Held for as long as an admitted call runs; dropping it frees the slot.
pub struct Admitted(pub Box<dyn Send + Sync>);

/// Decides when a call of this run may start.
pub trait Admission: Send + Sync {
    /// Waits for a slot. Dropping the future gives up the wait.
    fn admit(&self) -> Pin<Box<dyn Future<Output = Admitted> + Send + '_>>;
}
