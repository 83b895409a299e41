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
    /// Instances that can be live at once (the pooling allocator's slots):
    /// calls that wait on a model or an HTTP response hold one each.
    pub max_instances: u32,
    /// Calls running wasm at once; a call waiting on the host (a model, an
    /// HTTP response) gives its place up. Near the core count by default.
    #[serde(default = "default_max_running")]
    pub max_running: u32,
    /// How often the epoch advances: the granularity of wall-clock deadlines.
    pub epoch_tick: Duration,
}

fn default_max_running() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    (cores * 2).max(4)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack: 512 << 10,
            max_memory_bytes: 1 << 30,
            max_instances: 2048,
            max_running: default_max_running(),
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Guard pages after each linear memory; with reservations below 4 GiB the
/// compiled code checks bounds explicitly, and the guard only elides checks
/// of small constant offsets.
const MEMORY_GUARD: u64 = 32 << 20;

/// Builds the engine and starts the thread that advances its epoch.
pub(crate) fn build(cfg: &EngineConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = cfg.max_instances;
    // Sized for thousands of live instances, most of them idle (waiting on
    // a model): each memory slot reserves `max_memory_bytes` of address
    // space plus a guard, not wasmtime's default 4 GiB, so 2,048 instances
    // of 4 memories take about 8.3 TiB of the 128 TiB a process may map.
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
        .memory_reservation(cfg.max_memory_bytes)
        .memory_guard_size(MEMORY_GUARD)
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
