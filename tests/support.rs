//! Helpers shared by the integration tests: one runtime per test binary and packet shorthands.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use corral::{Agent, Budget, CallOutcome, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::Value;

pub use corral_plugins as agents;

/// One runtime per test binary. The compile cache is shared by every test
/// binary (cargo's scratch directory for integration tests), so each agent
/// is compiled once per build, not once per binary.
pub fn runtime() -> &'static Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache");
        let config = RuntimeConfig {
            cache_dir: Some(dir),
            // The tests' workflows name the built agents and temporary
            // directories by absolute path.
            allowed_paths: vec![wasm_agents_dir(), std::env::temp_dir()],
            ..Default::default()
        };
        Arc::new(Runtime::new(config).unwrap())
    })
}

/// The directory every agent component is built under (`target/wasm-agents`).
pub fn wasm_agents_dir() -> std::path::PathBuf {
    std::path::Path::new(agents::ECHO)
        .ancestors()
        .nth(3)
        .expect("agents live in <target>/wasm-agents/<target>/release")
        .to_path_buf()
}

pub async fn load(path: &str) -> Arc<Agent> {
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

/// The directory the agent components are built into.
pub fn agents_dir() -> String {
    std::path::Path::new(agents::ECHO)
        .parent()
        .unwrap()
        .display()
        .to_string()
}

/// Parses and validates workflow text (with `@AGENTS@` standing for the
/// components' directory), panicking with the diagnostics if invalid.
pub async fn workflow(text: &str) -> Arc<corral::workflow::model::Workflow> {
    let text = text.replace("@AGENTS@", &agents_dir());
    let src = corral::workflow::source::parse(std::path::Path::new("test.yaml"), &text)
        .unwrap_or_else(|d| panic!("{d:#?}"));
    Arc::new(
        corral::workflow::validate::validate(&src, runtime())
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    )
}
