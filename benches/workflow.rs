//! Workflow benchmarks, read as ratios within one run: per-step cost of a 500-step chain and a 500-wide fan-out against one bare call, and parse+validate+plan of a 100-step file.
//!
//! Run with `cargo bench -p corral --bench workflow` (unset `RUST_BACKTRACE`).
//!
//! - `step/floor`: one bare-wasmtime instantiate+call of the echo agent with
//!   a 1 KiB packet (the same floor as `benches/call.rs`).
//! - `chain/500`: 500 echo steps, each reading the previous one's output
//!   (1 KiB packets), validated handoffs, receipts, events, the fuel pool.
//!   Divide by 500 for the per-step cost.
//! - `chain/500/durable`: the same chain journaled to SQLite at the default
//!   durability (WAL, `synchronous=NORMAL`), flushed before the run counts as
//!   done; `chain/500/durable-full` with `synchronous=FULL`. The difference
//!   to `chain/500`, divided by 500, is the durable per-step overhead.
//! - `fanout/500`: 500 independent echo steps under `max_concurrency: 2`.
//! - `plan/100`: parse, validate and plan a 100-step workflow (agents
//!   already loaded, as on any run after the first).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral::store::{Durability, SqliteStore, Store};
use corral::workflow::durable::begin;
use corral::workflow::events::discard;
use corral::workflow::model::Workflow;
use corral::workflow::plan::plan;
use corral::workflow::report::RunStatus;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Runtime, RuntimeConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

#[path = "call.rs"]
#[allow(dead_code)]
mod call;

fn text_kib() -> String {
    "lorem ipsum dolor sit amet ".repeat(36)
}

fn chain(n: usize) -> String {
    let mut s = format!(
        "version: 1\nname: chain\nagents:\n  echo: {{ component: '{}' }}\nbudget: {{ fuel: 1000G }}\nparams:\n  text: {{ type: string, default: '{}' }}\nsteps:\n  - {{ id: s0, agent: echo, input: {{ text: $params.text, tags: [a, b, c] }} }}\n",
        corral_plugins::ECHO,
        text_kib()
    );
    for i in 1..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: echo, input: {{ text: $steps.s{}.output.text, tags: $steps.s{}.output.tags }} }}\n",
            i - 1,
            i - 1
        ));
    }
    s
}

fn fanout(n: usize, concurrency: u32) -> String {
    let mut s = format!(
        "version: 1\nname: fanout\nagents:\n  echo: {{ component: '{}' }}\nbudget: {{ fuel: 1000G, max_concurrency: {concurrency} }}\nparams:\n  text: {{ type: string, default: '{}' }}\nsteps:\n",
        corral_plugins::ECHO,
        text_kib()
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: echo, input: {{ text: $params.text, tags: [a, b, c] }} }}\n"
        ));
    }
    s
}

/// A 100-step workflow with a mix of agents, references, conditions and retries.
fn hundred() -> String {
    let mut s = format!(
        "version: 1\nname: hundred\nagents:\n  keywords: {{ component: '{}' }}\n  summarize: {{ component: '{}' }}\n  critic: {{ component: '{}' }}\nparams:\n  text: {{ type: string, default: 'One. Two. Three.' }}\nsteps:\n",
        corral_plugins::KEYWORDS,
        corral_plugins::SUMMARIZE,
        corral_plugins::CRITIC
    );
    for i in 0..100 {
        let step = match i % 4 {
            0 => format!(
                "  - {{ id: s{i}, agent: summarize, input: {{ text: $params.text, max_sentences: 2 }}, retry: {{ max_attempts: 3 }} }}\n"
            ),
            1 => format!(
                "  - {{ id: s{i}, agent: keywords, input: {{ text: $steps.s{}.output.summary, top_k: 3 }} }}\n",
                i - 1
            ),
            2 => format!(
                "  - {{ id: s{i}, agent: critic, when: 'steps.s{}.output.word_count > 1', input: {{ draft: $steps.s{}.output.summary, rules: {{ required_terms: [$steps.s{}.output.keywords.0.word] }} }} }}\n",
                i - 1,
                i - 2,
                i - 1
            ),
            _ => format!(
                "  - {{ id: s{i}, agent: summarize, input: {{ text: $steps.s{}.output.summary }} }}\n",
                i - 3
            ),
        };
        s.push_str(&step);
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

async fn run_once(rt: &Arc<Runtime>, w: &Arc<Workflow>) {
    let params = resolve_params(w, &[]).unwrap();
    let opts = RunOptions {
        run_id: "bench".into(),
        params,
        events: discard(),
        cancel: CancellationToken::new(),
        seed: 0,
        ..RunOptions::new("", serde_json::Value::Null)
    };
    let report = run(rt.clone(), w.clone(), opts).await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
}

/// One journaled run, committed to the end.
async fn run_durable(rt: &Arc<Runtime>, w: &Arc<Workflow>, store: &Arc<dyn Store>) {
    let params = resolve_params(w, &[]).unwrap();
    let run_id = format!("bench-{:016x}", fastrand::u64(..));
    let cancel = CancellationToken::new();
    let journal = begin(store.clone(), w, &params, &run_id, cancel.clone()).unwrap();
    let mut opts = RunOptions::new(run_id, params);
    opts.cancel = cancel;
    opts.journal = Some(journal.clone());
    let report = run(rt.clone(), w.clone(), opts).await;
    journal.close().await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
}

fn workflows(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The benchmark's workflows name the built agents by absolute path.
    let agents = Path::new(corral_plugins::ECHO).ancestors().nth(3).unwrap();
    let config = RuntimeConfig {
        allowed_paths: vec![agents.to_path_buf()],
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let floor = call::Bare::new(corral_plugins::ECHO, true);
    let packet = serde_json::to_string(&call::one_kib_packet()).unwrap();
    let chain500 = tokio.block_on(load(&rt, &chain(500)));
    let dir = tempfile::tempdir().unwrap();
    let chain_file = dir.path().join("chain.yaml");
    std::fs::write(&chain_file, chain(500)).unwrap();
    let chain500_file = {
        let src = source::load(&chain_file).unwrap();
        Arc::new(tokio.block_on(validate(&src, &rt)).unwrap())
    };
    let normal: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("normal"), Durability::Normal).unwrap());
    let full: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("full"), Durability::Full).unwrap());
    let fan500 = tokio.block_on(load(&rt, &fanout(500, 2)));
    let fan500_1 = tokio.block_on(load(&rt, &fanout(500, 1)));

    let mut g = c.benchmark_group("workflow");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("step/floor", |b| {
        b.iter(|| tokio.block_on(floor.run(&packet)))
    });
    g.bench_function("chain/500", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &chain500)))
    });
    g.bench_function("chain/500/durable", |b| {
        b.iter(|| tokio.block_on(run_durable(&rt, &chain500_file, &normal)))
    });
    g.bench_function("chain/500/durable-full", |b| {
        b.iter(|| tokio.block_on(run_durable(&rt, &chain500_file, &full)))
    });
    g.bench_function("fanout/500", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &fan500)))
    });
    g.bench_function("fanout/500/cap1", |b| {
        b.iter(|| tokio.block_on(run_once(&rt, &fan500_1)))
    });
    let text = hundred();
    g.bench_function("plan/100", |b| {
        b.iter(|| {
            let w = tokio.block_on(load(&rt, &text));
            plan(&w)
        })
    });
    g.finish();
}

criterion_group!(benches, workflows);
criterion_main!(benches);
