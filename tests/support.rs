//! Helpers shared by the integration tests: one runtime per test binary and packet shorthands.

#![allow(dead_code)]

use std::sync::OnceLock;

use corral::{Agent, Budget, CallOutcome, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::Value;

pub use corral_plugins as agents;

/// One runtime per test binary, with a private compile cache.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig {
            cache_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        (Runtime::new(config).unwrap(), dir)
    })
    .0
}

pub async fn load(path: &str) -> std::sync::Arc<Agent> {
    runtime()
        .load(path)
        .await
        .unwrap_or_else(|e| panic!("loading {path}: {e:?}"))
}

pub fn packet(payload: Value) -> HandoffPacket {
    HandoffPacket::new("run-test", "step-test", payload)
}

/// Calls `path` with `payload` under `budget` and no grants.
pub async fn call(path: &str, payload: Value, budget: &Budget) -> CallOutcome {
    let agent = load(path).await;
    runtime()
        .call(&agent, &packet(payload), budget, &Grants::default())
        .await
}

/// Calls the hostile fixture with an action.
pub async fn hostile(action: &str, budget: &Budget) -> CallOutcome {
    call(
        agents::HOSTILE,
        serde_json::json!({ "action": action }),
        budget,
    )
    .await
}

/// A budget with a short deadline so a test that fails does not hang.
pub fn budget() -> Budget {
    Budget {
        timeout: std::time::Duration::from_secs(5),
        ..Budget::default()
    }
}
