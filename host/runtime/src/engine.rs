//! The one shared wasmtime `Engine`: component model, async, fuel, epochs and the pooling allocator.

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Engine-wide settings. Per-call limits live in [`Budget`](crate::Budget).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Wasm stack per call; deeper recursion is a `StackOverflow`.
    pub max_wasm_stack: usize,
    /// Largest single linear memory; a call's memory budget may not exceed it.
    pub max_memory_bytes: u64,
    /// Instances that can be live at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// How often the epoch advances: the granularity of wall-clock deadlines.
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack: 512 << 10,
            max_memory_bytes: 4 << 30,
            max_instances: 128,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Builds the engine and starts the thread that advances its epoch.
pub(crate) fn build(cfg: &EngineConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = cfg.max_instances;
    pool.total_component_instances(instances)
        // A component holds several core instances; Python and JS agents
        // hold a dozen or more, each with its memory and table.
        .total_core_instances(instances * 16)
        .total_memories(instances * 4)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(cfg.max_memory_bytes as usize)
        .table_elements(100_000)
        .max_core_instance_size(16 << 20)
        .max_component_instance_size(4 << 20)
        // Reset small dirty regions by memset instead of madvise: cheaper for
        // the short calls agents make, and no TLB shootdowns across cores.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10)
        .async_stack_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_wasm_stack)
        // The fiber stack must hold the wasm stack plus host frames.
        .async_stack_size(cfg.max_wasm_stack + (1 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("cannot create the wasmtime engine")?;
    start_epoch_ticker(&engine, cfg.epoch_tick);
    Ok(engine)
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("corral-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("cannot spawn the epoch thread");
}
