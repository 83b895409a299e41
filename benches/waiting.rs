//! Scale: 2,000 agents wait on a model at once. Each asks the scripted provider, which answers after 2 s; all must complete. Prints the resident memory per waiting agent and the time to drain, as a ratio to the 2 s a single call takes.
//!
//! Run with `cargo bench -p corral --bench waiting` (unset `RUST_BACKTRACE`
//! first). `CORRAL_WAITING=N` changes the number of agents, and
//! `CORRAL_WAITING_SLOTS=N` the engine's instance slots (128, the old
//! default, shows what sizing the pool for waiting agents bought).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral::model::{Gateway, ModelConfig};
use corral::{Budget, EngineConfig, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::json;

#[path = "../tests/support.rs"]
mod support;

const LATENCY: Duration = Duration::from_secs(2);

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn runtime(dir: &std::path::Path, agents: u32) -> Runtime {
    let script = dir.join("script.json");
    let answer = json!({"summary": "ok", "keywords": ["a"]}).to_string();
    std::fs::write(
        &script,
        json!({"responses": [{"when": {"contains": ""}, "content": answer,
            "latency_ms": LATENCY.as_millis() as u64}]})
        .to_string(),
    )
    .unwrap();
    let config: ModelConfig = toml::from_str(&format!(
        "[providers.p]\nkind = \"scripted\"\nfile = {:?}\n[models.fast]\nprovider = \"p\"\nmodel = \"m\"\n",
        script.display().to_string()
    ))
    .unwrap();
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        models: Some(Arc::new(Gateway::new(&config).unwrap())),
        engine: EngineConfig {
            max_instances: std::env::var("CORRAL_WAITING_SLOTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| agents.max(EngineConfig::default().max_instances)),
            ..EngineConfig::default()
        },
        ..Default::default()
    })
    .unwrap()
}

fn main() {
    let agents: u32 = std::env::var("CORRAL_WAITING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let rt = Arc::new(runtime(dir.path(), agents));
        let agent = rt.load(support::agents::EXTRACT).await.unwrap();
        let grants = Grants {
            models: vec!["fast".into()],
            ..Grants::default()
        };
        let budget = Budget {
            timeout: Duration::from_secs(120),
            memory_bytes: 64 << 20,
            ..Budget::default()
        };
        let packet =
            HandoffPacket::new("r", "s", json!({"text": "a short text", "max_tokens": 32}));

        // One call alone: the floor the drain is compared with.
        let start = Instant::now();
        rt.call(&agent, &packet, &budget, &grants)
            .await
            .result
            .unwrap();
        let single = start.elapsed();

        let baseline = rss_bytes();
        let peak = Arc::new(AtomicU64::new(baseline));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let start = Instant::now();
        let calls: Vec<_> = (0..agents)
            .map(|_| {
                let (rt, agent, packet, budget, grants) = (
                    rt.clone(),
                    agent.clone(),
                    packet.clone(),
                    budget.clone(),
                    grants.clone(),
                );
                tokio::spawn(async move { rt.call(&agent, &packet, &budget, &grants).await })
            })
            .collect();
        let mut failed = 0;
        for c in calls {
            if let Err(e) = c.await.unwrap().result {
                failed += 1;
                if failed <= 3 {
                    eprintln!("a call failed: {e}");
                }
            }
        }
        let drain = start.elapsed();
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed);
        let per_agent = peak.saturating_sub(baseline) / u64::from(agents);
        println!(
            "waiting/{agents}: {} completed, {failed} failed",
            agents - failed
        );
        println!("  one call alone      {:.2} s", single.as_secs_f64());
        println!(
            "  drain of {agents}       {:.2} s ({:.2}x one call)",
            drain.as_secs_f64(),
            drain.as_secs_f64() / single.as_secs_f64()
        );
        println!(
            "  resident memory     {} MiB before, {} MiB at peak: {} KiB per waiting agent",
            baseline >> 20,
            peak >> 20,
            per_agent >> 10
        );
        assert_eq!(failed, 0, "every waiting agent must complete");
    });
}
