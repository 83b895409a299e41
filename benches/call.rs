//! Benchmarks, read as ratios within one run: corral's call against bare wasmtime, warm against cold loads, fuel on against off.
//!
//! Run with `cargo bench -p corral --bench call` (unset `RUST_BACKTRACE`
//! first: anyhow captures a backtrace per error while it is set).
//!
//! - `call/floor`: the echo agent instantiated from an `InstancePre` and its
//!   `run` called with bare wasmtime on an engine with the same settings
//!   (pooling, fuel, epochs): no validation, no receipt, no limiter.
//! - `call/floor_tuned`: the same with the pool tuned as corral's engine is
//!   (small regions kept resident instead of madvised).
//! - `call/corral`: `Runtime::call` on the same component and packet, with
//!   schema checks in and out, the memory meter, capture and the receipt.
//! - `load/cold` and `load/warm`: a fresh runtime loading the keywords agent
//!   without and with a populated disk cache.
//! - `fuel/on` and `fuel/off`: the keywords agent on a real text, bare
//!   wasmtime, with fuel metering on and off.

use std::time::Duration;

use corral::{Budget, Grants, HandoffPacket, Runtime, RuntimeConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bare {
    wasmtime::component::bindgen!({
        path: "../../wit/since_v0.2.0",
        world: "agent",
        exports: { default: async },
    });
}

pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bare::corral::agent::host::Host for State {
    fn log(&mut self, _: bare::corral::agent::host::Level, _: String, _: Vec<(String, String)>) {}
    fn progress(&mut self, _: u8, _: String) {}
}

impl bare::corral::agent::types::Host for State {}

/// Bare wasmtime: the floor corral is measured against.
pub struct Bare {
    engine: Engine,
    pre: bare::AgentPre<State>,
    fuel: bool,
}

impl Bare {
    pub fn new(path: &str, fuel: bool) -> Self {
        Self::with_pool(path, fuel, PoolingAllocationConfig::default())
    }

    /// The same, with the pool tuned as corral tunes it (small regions kept
    /// resident), to separate corral's own overhead from its engine tuning.
    pub fn tuned(path: &str) -> Self {
        let mut pool = PoolingAllocationConfig::default();
        pool.linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10)
            .async_stack_keep_resident(64 << 10);
        Self::with_pool(path, true, pool)
    }

    fn with_pool(path: &str, fuel: bool, pool: PoolingAllocationConfig) -> Self {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(fuel)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        bare::corral::agent::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
        bare::corral::agent::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
        // The agents measured here import neither `model`, `delegate` nor
        // `artifacts`, so the bare linker need not provide them.
        let component = Component::from_file(&engine, path).unwrap();
        let pre = bare::AgentPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Self { engine, pre, fuel }
    }

    pub async fn run(&self, packet: &str) -> String {
        let state = State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.fuel {
            store.set_fuel(u64::MAX / 2).unwrap();
        }
        store.set_epoch_deadline(u64::MAX / 2);
        let agent = self.pre.instantiate_async(&mut store).await.unwrap();
        agent
            .corral_agent_guest()
            .call_run(&mut store, packet)
            .await
            .unwrap()
            .unwrap()
    }
}

pub fn one_kib_packet() -> HandoffPacket {
    let packet = HandoffPacket::new(
        "run-bench",
        "step-bench",
        json!({ "text": "lorem ipsum dolor sit amet ".repeat(34), "tags": ["a", "b", "c"] }),
    );
    let size = serde_json::to_string(&packet).unwrap().len();
    assert!((1000..1100).contains(&size), "packet is {size} bytes");
    packet
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn call(c: &mut Criterion) {
    let rt = tokio();
    let packet = one_kib_packet();
    let text = serde_json::to_string(&packet).unwrap();
    let bare = Bare::new(corral_plugins::ECHO, true);
    let tuned = Bare::tuned(corral_plugins::ECHO);
    let corral = Runtime::new(RuntimeConfig::default()).unwrap();
    let agent = rt.block_on(corral.load(corral_plugins::ECHO)).unwrap();
    let budget = Budget::default();
    let grants = Grants::default();
    assert!(
        rt.block_on(corral.call(&agent, &packet, &budget, &grants))
            .result
            .is_ok()
    );

    let mut g = c.benchmark_group("call");
    g.bench_function("floor", |b| b.iter(|| rt.block_on(bare.run(&text))));
    g.bench_function("floor_tuned", |b| b.iter(|| rt.block_on(tuned.run(&text))));
    g.bench_function("corral", |b| {
        b.iter(|| {
            rt.block_on(corral.call(&agent, &packet, &budget, &grants))
                .result
                .unwrap()
        })
    });
    g.finish();
}

fn load(c: &mut Criterion) {
    let rt = tokio();
    let dir = tempfile::tempdir().unwrap();
    let cached = || RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    // Populate the disk cache once.
    rt.block_on(
        Runtime::new(cached())
            .unwrap()
            .load(corral_plugins::KEYWORDS),
    )
    .unwrap();

    let mut g = c.benchmark_group("load");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("cold", |b| {
        b.iter(|| {
            let rt2 = Runtime::new(RuntimeConfig::default()).unwrap();
            rt.block_on(rt2.load(corral_plugins::KEYWORDS)).unwrap();
            assert_eq!(rt2.cache_stats().compiled, 1);
        })
    });
    g.bench_function("warm", |b| {
        b.iter(|| {
            let rt2 = Runtime::new(cached()).unwrap();
            rt.block_on(rt2.load(corral_plugins::KEYWORDS)).unwrap();
            assert_eq!(rt2.cache_stats().disk_hits, 1);
        })
    });
    g.finish();
}

fn fuel(c: &mut Criterion) {
    let rt = tokio();
    let text =
        "Corral runs agents in sandboxes. Each agent gets a budget of fuel and memory. ".repeat(40);
    let packet = serde_json::to_string(&HandoffPacket::new(
        "r",
        "s",
        json!({ "text": text, "top_k": 10 }),
    ))
    .unwrap();
    let on = Bare::new(corral_plugins::KEYWORDS, true);
    let off = Bare::new(corral_plugins::KEYWORDS, false);
    let mut g = c.benchmark_group("fuel");
    g.bench_function("on", |b| b.iter(|| rt.block_on(on.run(&packet))));
    g.bench_function("off", |b| b.iter(|| rt.block_on(off.run(&packet))));
    g.finish();
}

criterion_group!(benches, call, load, fuel);
criterion_main!(benches);
