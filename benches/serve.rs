//! Service benchmarks, read as ratios within one run: a workflow through `corral serve`'s API against the same workflow run by `corral run --ephemeral`, and the tenant quota ledger's cost per call against a run with no tenant.
//!
//! Run with `cargo bench -p corral --bench serve` (unset `RUST_BACKTRACE`).
//!
//! - `first-step/api`: `POST /v1/runs`, then the event stream up to the
//!   first `step_started`, on a warm server (agent registered, compiled).
//! - `first-step/cli`: `corral run --ephemeral --json` as a fresh process,
//!   up to its first `step_started` line: what a laptop user waits.
//! - `chain/api` and `chain/cli`: the same, to the end of a 50-step chain;
//!   50 divided by the time is steps per second.
//! - `ledger/none`, `ledger/tenant` and `ledger/tenant+fair`: a journaled
//!   100-step chain in process, without a tenant, with the tenant's fuel
//!   ledger (a store reservation and settlement per call), and with the
//!   ledger, fair admission to call slots and the tenant's call slots
//!   shared through the store, as `corral serve` runs it.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::store::{Durability, SqliteStore, Store};
use corral::workflow::durable::begin;
use corral::workflow::model::Workflow;
use corral::workflow::report::RunStatus;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Runtime, RuntimeConfig};
use corral_server::fair::{Fair, TenantAdmission};
use corral_server::quota::TenantFuel;
use corral_server::shared_calls::SharedCalls;
use corral_server::tenant::{Quota, Tenant};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token";
const CHAIN: usize = 50;

/// A chain of `n` echo steps; `component` as the workflow names it.
fn chain(n: usize, component: &str) -> String {
    let mut s = format!(
        "version: 1\nname: chain\nagents:\n  echo: {{ component: '{component}' }}\nbudget: {{ fuel: 1000G }}\nsteps:\n  - {{ id: s0, agent: echo, input: {{ text: hello, tags: [a, b] }} }}\n"
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

fn agents_dir() -> PathBuf {
    Path::new(corral_plugins::ECHO)
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf()
}

/// A `corral serve` process with one tenant whose quotas never bind.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(cache: &Path) -> Self {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let hash = hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()));
        std::fs::write(
            dir.path().join("corral.toml"),
            format!(
                "[[tenant]]\nid = \"bench\"\ntokens = [\"sha256:{hash}\"]\n[tenant.quota]\nruns_per_minute = 1000000\nconcurrent_runs = 64\nfuel_per_window = \"1000000G\"\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args([
                "serve",
                "--config",
                "corral.toml",
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .env("CORRAL_CACHE_DIR", cache)
            .env("CORRAL_LOG", "error")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("corral serve: listening on ")
            .unwrap()
            .to_owned();
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let s = Self {
            child,
            base,
            agent,
            _dir: dir,
        };
        s.agent
            .put(format!("{}/v1/agents/echo", s.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send(std::fs::read(corral_plugins::ECHO).unwrap())
            .unwrap();
        s
    }

    fn submit(&self, workflow: &str) -> String {
        let mut res = self
            .agent
            .post(format!("{}/v1/runs", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send_json(json!({ "workflow": workflow }))
            .unwrap();
        let v: Value = res.body_mut().read_json().unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Reads the run's events until `stop` says so.
    fn events_until(&self, id: &str, stop: impl Fn(&str) -> bool) {
        let res = self
            .agent
            .get(format!("{}/v1/runs/{id}/events", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        for line in BufReader::new(res.into_body().into_reader()).lines() {
            let line = line.unwrap();
            if let Some(kind) = line.strip_prefix("event: ")
                && stop(kind)
            {
                return;
            }
        }
        panic!("the stream of {id} ended early");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `corral run --ephemeral --json <file>`, read until `stop` says so; the
/// process is then left to finish, untimed.
fn cli_until(file: &Path, cache: &Path, stop: impl Fn(&str) -> bool) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["run", "--ephemeral", "--json"])
        .arg(file)
        .arg("--allow-path")
        .arg(agents_dir())
        .env("CORRAL_CACHE_DIR", cache)
        .env("CORRAL_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut elapsed = None;
    // Read to the end: a closed pipe would fail the process's later prints.
    for line in out.lines() {
        if elapsed.is_some() {
            continue;
        }
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
        if v["type"].as_str().is_some_and(&stop) {
            elapsed = Some(started.elapsed());
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "corral run failed: {status}");
    elapsed.expect("the event never came")
}

fn api_vs_cli(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(cache.path());
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.yaml");
    std::fs::write(&one, chain(1, corral_plugins::ECHO)).unwrap();
    let long = dir.path().join("chain.yaml");
    std::fs::write(&long, chain(CHAIN, corral_plugins::ECHO)).unwrap();
    let (api_one, api_long) = (chain(1, "echo"), chain(CHAIN, "echo"));
    // Warm both: the server compiles on upload; the CLI fills the cache.
    cli_until(&one, cache.path(), |t| t == "step_started");

    let mut g = c.benchmark_group("serve");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("first-step/api", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let t = Instant::now();
                let id = server.submit(&api_one);
                server.events_until(&id, |k| k == "step_started");
                total += t.elapsed();
                server.events_until(&id, |k| k == "end");
            }
            total
        })
    });
    g.bench_function("first-step/cli", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| cli_until(&one, cache.path(), |t| t == "step_started"))
                .sum()
        })
    });
    g.bench_function("chain/api", |b| {
        b.iter(|| {
            let id = server.submit(&api_long);
            server.events_until(&id, |k| k == "end");
        })
    });
    g.bench_function("chain/cli", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| cli_until(&long, cache.path(), |t| t == "report"))
                .sum()
        })
    });
    g.finish();
}

/// The process's fair slots and the tenant's slots shared through the store.
type Admission = (Arc<Fair>, Arc<SharedCalls>);

/// One journaled run of `w`, with the tenant's ledger and admission when given.
async fn run_journaled(
    rt: &Arc<Runtime>,
    w: &Arc<Workflow>,
    store: &Arc<dyn Store>,
    tenant: Option<(&Arc<Tenant>, Option<&Admission>)>,
) {
    let params = resolve_params(w, &[]).unwrap();
    let run_id = format!("bench-{:016x}", fastrand::u64(..));
    let cancel = CancellationToken::new();
    let journal = begin(store.clone(), w, &params, &run_id, cancel.clone()).unwrap();
    let mut opts = RunOptions::new(run_id, params);
    opts.cancel = cancel;
    opts.journal = Some(journal.clone());
    if let Some((t, fair)) = tenant {
        opts.ledger = Some(Arc::new(TenantFuel::new(store.clone(), t.clone())));
        opts.admission = fair.map(|(f, shared)| {
            Arc::new(TenantAdmission {
                fair: f.clone(),
                tenant: t.id.clone(),
                waits: None,
                shared: Some(shared.clone()),
            }) as _
        });
    }
    let report = run(rt.clone(), w.clone(), opts).await;
    journal.close().await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
}

fn ledger(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = RuntimeConfig {
        allowed_paths: vec![agents_dir()],
        ..RuntimeConfig::default()
    };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.yaml");
    std::fs::write(&file, chain(100, corral_plugins::ECHO)).unwrap();
    let src = source::load(&file).unwrap();
    let w = Arc::new(tokio.block_on(validate(&src, &rt)).unwrap());
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("state"), Durability::Normal).unwrap());
    let tenant = Arc::new(Tenant {
        id: "bench".into(),
        token_hashes: Vec::new(),
        secrets: Default::default(),
        quota: Quota {
            fuel_per_window: u64::MAX / 4,
            ..Quota::default()
        },
        webhooks: Vec::new(),
    });
    let fair = (
        Fair::new(
            rt.config().engine.max_instances as usize,
            HashMap::from([("bench".to_string(), 4)]),
        ),
        SharedCalls::new(store.clone(), "bench", 4),
    );

    let mut g = c.benchmark_group("ledger");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("none", |b| {
        b.iter(|| tokio.block_on(run_journaled(&rt, &w, &store, None)))
    });
    g.bench_function("tenant", |b| {
        b.iter(|| tokio.block_on(run_journaled(&rt, &w, &store, Some((&tenant, None)))))
    });
    g.bench_function("tenant+fair", |b| {
        b.iter(|| tokio.block_on(run_journaled(&rt, &w, &store, Some((&tenant, Some(&fair))))))
    });
    g.finish();
}

criterion_group!(benches, api_vs_cli, ledger);
criterion_main!(benches);
