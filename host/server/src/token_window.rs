//! A tenant's model tokens per window (`quota.tokens_per_window`), kept in the store beside its fuel window, so every process serving the tenant draws from one budget.
//!
//! Each model request reserves its estimate here (all of it or nothing)
//! before it is sent, and settles to the provider's count afterwards; a
//! reservation cut off by a crash stays charged until the window ends.

use std::sync::Arc;

use corral_runtime::human;
use corral_runtime::model::{TokenGrant, TokenPool, TokensExhausted};

use crate::tenant::Tenant;

/// The tenant's token window.
pub struct TenantTokens {
    pub store: Arc<dyn corral_store::Store>,
    pub tenant: Arc<Tenant>,
}

impl TenantTokens {
    /// The store's key for the window: the tenant's id cannot hold `/`, so
    /// this never meets a fuel window's key.
    fn key(&self) -> String {
        format!("{}/tokens", self.tenant.id)
    }

    fn exhausted(&self, used: u64) -> TokensExhausted {
        TokensExhausted {
            budget: format!(
                "tenant `{}`'s token quota per {}",
                self.tenant.id,
                human::duration(self.tenant.quota.window)
            ),
            field: "quota.tokens_per_window".into(),
            used,
            limit: self.tenant.quota.tokens_per_window,
        }
    }
}

#[async_trait::async_trait]
impl TokenPool for TenantTokens {
    async fn reserve(&self, tokens: u64) -> Result<TokenGrant, TokensExhausted> {
        let (store, key) = (self.store.clone(), self.key());
        let (window, limit) = (
            self.tenant.quota.window,
            self.tenant.quota.tokens_per_window,
        );
        let reserved = tokio::task::spawn_blocking(move || {
            let w = store.reserve_fuel(&key, window, limit, tokens)?;
            // All or nothing: a partial grant goes straight back.
            if w.granted < tokens && w.granted > 0 {
                store.settle_fuel(&key, w.start_ms, w.granted, 0)?;
            }
            Ok::<_, corral_store::StoreError>(w)
        })
        .await;
        match reserved {
            Ok(Ok(w)) if w.granted >= tokens => Ok(TokenGrant {
                reserved: tokens,
                tag: w.start_ms,
            }),
            Ok(Ok(w)) => Err(self.exhausted(w.charged.saturating_sub(w.granted))),
            // The store failed: refuse rather than spend past the quota.
            Ok(Err(e)) => {
                tracing::warn!(tenant = %self.tenant.id, error = %e, "cannot reserve model tokens");
                Err(self.exhausted(0))
            }
            Err(_) => Err(self.exhausted(0)),
        }
    }

    async fn settle(&self, grant: TokenGrant, used: u64) {
        let (store, key) = (self.store.clone(), self.key());
        let settled = tokio::task::spawn_blocking(move || {
            store.settle_fuel(&key, grant.tag, grant.reserved, used)
        })
        .await;
        if let Ok(Err(e)) = settled {
            // The refund is lost; the window stays charged (never overspent).
            tracing::warn!(tenant = %self.tenant.id, error = %e, "cannot settle model tokens");
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_store::{Durability, SqliteStore};

    use super::*;

    fn window(limit: u64) -> (TenantTokens, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn corral_store::Store> =
            Arc::new(SqliteStore::open(dir.path(), Durability::Normal).unwrap());
        let mut tenant = Tenant {
            id: "acme".into(),
            token_hashes: Vec::new(),
            secrets: Default::default(),
            quota: Default::default(),
            webhooks: Vec::new(),
        };
        tenant.quota.tokens_per_window = limit;
        let tokens = TenantTokens {
            store,
            tenant: Arc::new(tenant),
        };
        (tokens, dir)
    }

    #[tokio::test]
    async fn a_request_gets_all_it_asks_or_nothing_and_settles_to_usage() {
        let (pool, _dir) = window(1_000);
        let g = pool.reserve(600).await.unwrap();
        // 600 reserved: 500 more does not fit, and takes nothing.
        let refused = pool.reserve(500).await.unwrap_err();
        assert_eq!(refused.field, "quota.tokens_per_window");
        assert!(refused.budget.contains("acme"), "{}", refused.budget);
        // Settled to 100 used: 500 fits now.
        pool.settle(g, 100).await;
        let g2 = pool.reserve(500).await.unwrap();
        pool.settle(g2, 500).await;
        // 600 charged in all; 400 left.
        assert!(pool.reserve(401).await.is_err());
        assert!(pool.reserve(400).await.is_ok());
    }

    #[tokio::test]
    async fn the_window_is_shared_by_every_pool_of_the_tenant() {
        let (a, _dir) = window(1_000);
        let b = TenantTokens {
            store: a.store.clone(),
            tenant: a.tenant.clone(),
        };
        let _held = a.reserve(900).await.unwrap();
        assert!(b.reserve(200).await.is_err());
        // The fuel window of the same tenant is another budget.
        let fuel = a
            .store
            .reserve_fuel("acme", a.tenant.quota.window, 1_000, 1_000)
            .unwrap();
        assert_eq!(fuel.granted, 1_000);
    }
}
