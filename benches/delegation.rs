//! Delegation and artifact benchmarks, read as ratios within one run: 64 calls made by delegation against the same 64 calls as workflow steps, and bytes moved as an artifact against the same bytes carried in packets.
//!
//! Run with `cargo bench -p corral --bench delegation` (unset `RUST_BACKTRACE`).
//!
//! - `steps/64`: 64 independent `summarize` steps, one section each.
//! - `delegated/64`: one `orchestrate` step that delegates the same 64
//!   sections to `summarize` in one batch. Against `steps/64`: the cost of
//!   a delegated call next to a step (it includes the orchestrator's own
//!   call, one in 65).
//! - `artifact/64MiB`: `bulk` writes 64 MiB as an artifact and a second
//!   step reads it through (journaled run: artifacts belong to a run).
//! - `packet/16x900KiB`: 16 `echo` steps in a chain, each carrying a
//!   900 KiB text (about 14 MiB handed on), journaled the same way.
//!   Bytes per second of each, against each other.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral::store::{Durability, SqliteStore, Store};
use corral::workflow::durable::begin;
use corral::workflow::events::discard;
use corral::workflow::model::Workflow;
use corral::workflow::report::RunStatus;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Runtime, RuntimeConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SECTION: &str =
    "The export failed twice during backups. Nobody noticed until Monday. The fix is a retry.";

fn steps(n: usize) -> String {
    let mut s = format!(
        "version: 1\nname: steps\nagents:\n  summarize: {{ component: '{}' }}\nbudget: {{ fuel: 1000G, max_concurrency: 64 }}\nsteps:\n",
        corral_plugins::SUMMARIZE
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: summarize, input: {{ text: '{SECTION} {i}', max_sentences: 1 }} }}\n"
        ));
    }
    s
}

fn delegated(n: usize) -> String {
    let doc: Vec<String> = (0..n).map(|i| format!("{SECTION} {i}")).collect();
    format!(
        "version: 1\nname: delegated\nagents:\n  orchestrate: {{ component: '{}' }}\n  summarize: {{ component: '{}' }}\nbudget: {{ fuel: 1000G }}\nsteps:\n  - {{ id: o, agent: orchestrate, delegates: [summarize], max_delegations: {n}, input: {{ text: {:?} }} }}\n",
        corral_plugins::ORCHESTRATE,
        corral_plugins::SUMMARIZE,
        doc.join("\n\n")
    )
}

fn artifact(bytes: u64) -> String {
    format!(
        "version: 1\nname: artifact\nagents:\n  bulk: {{ component: '{}', budget: {{ memory: 64MiB, fuel: 100G, timeout: 60s }} }}\nbudget: {{ fuel: 1000G }}\nsteps:\n  - {{ id: make, agent: bulk, input: {{ make: {{ size: {bytes} }} }} }}\n  - {{ id: read, agent: bulk, input: {{ read: $steps.make.output.artifact }} }}\n",
        corral_plugins::BULK
    )
}

fn packets(n: usize, text: usize) -> String {
    let mut s = format!(
        "version: 1\nname: packets\nagents:\n  echo: {{ component: '{}' }}\nbudget: {{ fuel: 1000G }}\nparams:\n  text: {{ type: string, default: '{}' }}\nsteps:\n  - {{ id: s0, agent: echo, input: {{ text: $params.text, tags: [a] }} }}\n",
        corral_plugins::ECHO,
        "x".repeat(text)
    );
    for i in 1..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: echo, input: {{ text: $steps.s{}.output.text, tags: [a] }} }}\n",
            i - 1
        ));
    }
    s
}

async fn load(rt: &Runtime, text: &str) -> Arc<Workflow> {
    let src = source::parse(Path::new("bench.yaml"), text).unwrap();
    Arc::new(
        validate(&src, rt)
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    )
}

/// One run; journaled in `store` when given.
async fn run_once(rt: &Arc<Runtime>, w: &Arc<Workflow>, store: Option<&Arc<dyn Store>>) {
    let params = resolve_params(w, &[]).unwrap();
    let run_id = format!("bench-{:016x}", fastrand::u64(..));
    let mut opts = RunOptions::new(run_id.clone(), params.clone());
    opts.events = discard();
    let journal =
        store.map(|s| begin(s.clone(), w, &params, &run_id, opts.cancel.clone()).unwrap());
    opts.journal = journal.clone();
    let report = run(rt.clone(), w.clone(), opts).await;
    if let Some(j) = journal {
        j.close().await.unwrap();
    }
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
}

fn benches(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agents = Path::new(corral_plugins::ECHO).ancestors().nth(3).unwrap();
    let config = RuntimeConfig {
        allowed_paths: vec![agents.to_path_buf()],
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("state"), Durability::Normal).unwrap());

    let mut g = c.benchmark_group("delegation");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let w = tokio.block_on(load(&rt, &steps(64)));
    g.bench_function("steps/64", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &w, None)))
    });
    let w = tokio.block_on(load(&rt, &delegated(64)));
    g.bench_function("delegated/64", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &w, None)))
    });
    g.finish();

    let mut g = c.benchmark_group("bytes");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let size = 64u64 << 20;
    g.throughput(Throughput::Bytes(size));
    let w = tokio.block_on(load(&rt, &artifact(size)));
    g.bench_function("artifact/64MiB", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &w, Some(&store))))
    });
    let text = 900 << 10;
    g.throughput(Throughput::Bytes(16 * text as u64));
    let w = tokio.block_on(load(&rt, &packets(16, text)));
    g.bench_function("packet/16x900KiB", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &w, Some(&store))))
    });
    g.finish();
}

criterion_group!(delegation, benches);
criterion_main!(delegation);
