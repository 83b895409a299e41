//! What every request shares: the one `Runtime`, the store, the tenants, the registered components, the run drivers and the quota gates.

use std::path::PathBuf;
use std::sync::Arc;

use corral_runtime::Runtime;
use corral_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::driver::Drivers;
use crate::quota::Gates;
use crate::tenant::{Tenant, TenantScope, Tenants};

pub struct AppState {
    pub rt: Arc<Runtime>,
    pub store: Arc<dyn Store>,
    pub tenants: Tenants,
    pub config: ServerConfig,
    /// Registered components, kept by digest.
    pub components: PathBuf,
    /// Which runs this process drives.
    pub drive: crate::Drive,
    pub drivers: Drivers,
    pub gates: Gates,
    /// Call slots, shared fairly across tenants.
    pub fair: Arc<crate::fair::Fair>,
    pub metrics: crate::metrics::Metrics,
    /// Each tenant's fuel window with this process's credit, shared by its runs.
    pub fuel: std::collections::HashMap<String, Arc<crate::quota::TenantFuel>>,
    /// Each tenant's `concurrent_calls`, shared with every process on the store.
    pub calls: std::collections::HashMap<String, Arc<crate::shared_calls::SharedCalls>>,
    /// Each tenant's model tokens per window, shared by its runs.
    pub tokens: std::collections::HashMap<String, Arc<crate::token_window::TenantTokens>>,
    /// Run events on their way to the tenants' endpoints.
    pub webhooks: crate::webhooks::Webhooks,
    /// Set on SIGTERM: nothing new is admitted.
    pub stopping: CancellationToken,
}

impl AppState {
    /// Counts a refusal by a spent quota in the metrics, and passes it on.
    pub fn counted(&self, tenant: &str, p: crate::Problem) -> crate::Problem {
        if let Some(q) = p.extra.get("quota").and_then(|q| q["quota"].as_str()) {
            self.metrics.refused(tenant, q);
        }
        p
    }

    /// Announces `event` of `run` to its tenant's endpoints (queued in the
    /// store; the delivery worker posts it). A failure to queue is logged:
    /// it never fails the run or the request.
    pub async fn announce(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        run: &str,
        event: Option<crate::webhooks::RunEvent>,
    ) {
        if tenant.webhooks.is_empty() {
            return;
        }
        let (st, tenant, run) = (self.clone(), tenant.clone(), run.to_owned());
        let queued = tokio::task::spawn_blocking(move || {
            let rec = st.store.run(&run)?;
            let Some(event) = event.or_else(|| crate::webhooks::RunEvent::of_stop(rec.status))
            else {
                return Ok(());
            };
            st.webhooks.emit(&st.store, &tenant.webhooks, &rec, event)
        })
        .await;
        match queued {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot queue a webhook message"),
            Err(e) => tracing::error!(error = %e, "the webhook queue task failed"),
        }
    }

    /// The scope `tenant`'s workflows resolve in, with its agents as the
    /// store has them now.
    pub async fn scope(&self, tenant: &Arc<Tenant>) -> Result<TenantScope, crate::Problem> {
        let store = self.store.clone();
        let id = tenant.id.clone();
        let agents = blocking(move || store.agents(&id)).await?;
        Ok(TenantScope {
            tenant: tenant.clone(),
            agents: agents.into_iter().map(|a| (a.name, a.digest)).collect(),
            components: self.components.clone(),
            store: Some(self.store.clone()),
            data_root: self.config.data_root.join(&tenant.id),
        })
    }
}

/// Runs a store call on the blocking pool: SQLite may wait on its lock, and
/// the threads that serve requests must not.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, corral_store::StoreError> + Send + 'static,
) -> Result<T, crate::Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(crate::Problem::from),
        Err(e) => Err(crate::Problem::internal(format!(
            "a store task failed: {e}"
        ))),
    }
}
