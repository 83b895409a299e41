//! Scale-out: steps per second and claim latency with 1, 2 and 4 `corral worker` processes on one PostgreSQL database, for a CPU-bound workflow and for one whose steps wait on a model, against one `corral serve` on the embedded SQLite store, in the same run.
//!
//! Run with `cargo bench -p corral --bench scale` (unset `RUST_BACKTRACE`
//! first). It starts a throwaway PostgreSQL cluster that flushes every
//! commit, as a production database does. Each configuration gets a fresh
//! database (or state directory), the same agents and the same runs:
//!
//! - `cpu`: 16 runs of 8 chained `latch` steps, each burning about 100M
//!   fuel: bound by the machine's cores.
//! - `wait`: 32 runs of 4 chained `extract` steps, each asking a scripted
//!   model that answers after 250 ms: bound by nothing but the waits.
//!
//! The SQLite baseline is one `corral serve` that drives what it is given.
//! The PostgreSQL configurations are one `corral serve --submit-only` that
//! takes the submissions and N workers (`--max-runs 16` each) that drive
//! them. Steps per second count every step of every run, from the first
//! submission to the last completion; a run's claim latency is from its
//! creation (the store's clock) to its first journal entry (its driver's
//! clock; one machine here). For PostgreSQL it also reports what the
//! database did per step, from its own counters: transactions committed
//! (by every process: steps, heartbeats, claims, quota slices), rows
//! written and WAL bytes. `CORRAL_SCALE_QUICK=1` runs a quarter of the
//! work.

use std::time::{Duration, Instant};

use corral::store::postgres::cluster::TestCluster;

#[path = "../tests/serve_support.rs"]
mod serve;
#[path = "../tests/support.rs"]
mod support;

use serve::{ACME, Serve};

const LATENCY_MS: u64 = 250;

/// One workload: a workflow, how many runs of it, and steps per run.
struct Load {
    name: &'static str,
    workflow: String,
    runs: usize,
    steps: usize,
}

/// What one configuration did with one workload.
struct Figures {
    wall: Duration,
    steps: usize,
    /// Milliseconds from each run's creation to its first journal entry.
    claims: Vec<i64>,
    /// What the database did meanwhile (PostgreSQL only).
    db: Option<DbWork>,
}

/// The database's own counters: transactions committed, rows written and
/// WAL bytes, read from `pg_stat_database` and the WAL position.
#[derive(Clone, Copy, Default)]
struct DbWork {
    commits: i64,
    rows: i64,
    wal: i64,
}

impl DbWork {
    fn read(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(conn);
            // Backends flush their counters about once a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            client
                .batch_execute("SELECT pg_stat_clear_snapshot()")
                .await
                .unwrap();
            let row = client
                .query_one(
                    "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted,
                            pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8
                     FROM pg_stat_database WHERE datname = current_database()",
                    &[],
                )
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
            Self {
                commits: row.get(0),
                rows: row.get(1),
                wal: row.get(2),
            }
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            commits: self.commits - before.commits,
            rows: self.rows - before.rows,
            wal: self.wal - before.wal,
        }
    }
}

impl Figures {
    fn steps_per_sec(&self) -> f64 {
        self.steps as f64 / self.wall.as_secs_f64()
    }

    fn claim(&self, q: f64) -> i64 {
        let mut c = self.claims.clone();
        c.sort_unstable();
        c[((c.len() - 1) as f64 * q).round() as usize]
    }
}

fn loads(quick: bool) -> Vec<Load> {
    let scale = if quick { 4 } else { 1 };
    let chain =
        |n: usize, step: &dyn Fn(usize) -> String| (0..n).map(step).collect::<Vec<_>>().join("");
    let cpu = chain(8, &|i| {
        let text = if i == 0 {
            "go".to_owned()
        } else {
            format!("$steps.s{}.output.text", i - 1)
        };
        format!(
            "  - {{ id: s{i}, agent: latch, input: {{ text: {text}, mark: '.{i}', burn: 10000000 }} }}\n"
        )
    });
    let wait = chain(4, &|i| {
        let text = if i == 0 {
            "a text".to_owned()
        } else {
            format!("$steps.s{}.output.summary", i - 1)
        };
        format!("  - {{ id: s{i}, agent: extract, input: {{ text: {text}, max_tokens: 16 }} }}\n")
    });
    vec![
        Load {
            name: "cpu",
            workflow: format!(
                "version: 1\nname: cpu\nagents:\n  latch: {{ component: latch, grants: {{ dirs: [ {{ host: gates, guest: /gates }} ] }} }}\nsteps:\n{cpu}"
            ),
            runs: 16 / scale,
            steps: 8,
        },
        Load {
            name: "wait",
            workflow: format!(
                "version: 1\nname: wait\nagents:\n  extract: {{ component: extract, grants: {{ models: [fast] }} }}\nsteps:\n{wait}"
            ),
            runs: 32 / scale,
            steps: 4,
        },
    ]
}

/// A directory with the config (one tenant with room for every run), a
/// scripted model and the gate directory `latch` is granted.
fn prepared() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nshutdown_grace = \"2s\"\n\n[[tenant]]\nid = \"acme\"\ntokens = [\"{}\"]\n[tenant.quota]\nconcurrent_runs = 1000\nruns_per_minute = 100000\nconcurrent_calls = 64\nmodels = [\"fast\"]\ntokens_per_window = \"1G\"\n",
        serve::hash(ACME)
    );
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        format!(
            r#"{{"responses": [{{"when": {{"contains": ""}}, "content": "{{\"summary\": \"s\", \"keywords\": []}}", "latency_ms": {LATENCY_MS}}}]}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models.toml"),
        format!(
            "[providers.p]\nkind = \"scripted\"\nfile = {:?}\n[models.fast]\nprovider = \"p\"\nmodel = \"m\"\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("tenants/acme/gates")).unwrap();
    dir
}

fn upload_agents(front: &Serve) {
    for (name, path) in [
        ("latch", support::agents::LATCH),
        ("extract", support::agents::EXTRACT),
    ] {
        let r = front.upload(ACME, name, &serve::bytes(path));
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

/// Submits every run of `load` through `front` and waits for them all.
fn drive(front: &Serve, load: &Load) -> Figures {
    let start = Instant::now();
    let ids: Vec<String> = (0..load.runs)
        .map(|_| {
            let r = front.submit(ACME, &load.workflow);
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        let done = front.wait_run(ACME, id);
        assert_eq!(done["status"], "completed", "{}", done["error"]);
    }
    let wall = start.elapsed();
    let claims = ids
        .iter()
        .map(|id| {
            let created = front.get(&format!("/v1/runs/{id}"), ACME).body["created_ms"]
                .as_i64()
                .unwrap();
            let events = serve::events_so_far(front, ACME, id);
            events[0]["at_ms"].as_i64().unwrap() - created
        })
        .collect();
    Figures {
        wall,
        steps: load.runs * load.steps,
        claims,
        db: None,
    }
}

/// Warms the compile cache and the agents' first load, outside the timing.
fn warm(front: &Serve, loads: &[Load]) {
    for load in loads {
        let r = front.submit(ACME, &load.workflow);
        assert_eq!(r.status, 201, "{}", r.body);
        front.wait_run(ACME, r.body["id"].as_str().unwrap());
    }
}

fn sqlite(loads: &[Load]) -> Vec<Figures> {
    let mut front = Serve::unstarted(prepared());
    front.spawn();
    upload_agents(&front);
    warm(&front, loads);
    let figures = loads.iter().map(|l| drive(&front, l)).collect();
    front.kill9();
    figures
}

fn postgres(cluster: &TestCluster, workers: usize, loads: &[Load]) -> Vec<Figures> {
    let db = cluster
        .create_database(&format!("scale{workers}_{:08x}", fastrand::u32(..)))
        .unwrap();
    let mut front = Serve::unstarted(prepared());
    front.db = Some(db);
    front.args = vec!["--submit-only".into()];
    front.spawn();
    upload_agents(&front);
    let pool: Vec<_> = (0..workers).map(|_| front.worker(16)).collect();
    warm(&front, loads);
    let url = front.db.clone().unwrap();
    let figures = loads
        .iter()
        .map(|l| {
            let before = DbWork::read(&url);
            let mut f = drive(&front, l);
            // The WAL position is the cluster's: other databases are idle.
            f.db = Some(DbWork::read(&url).since(before));
            f
        })
        .collect();
    drop(pool);
    front.kill9();
    figures
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let quick = std::env::var_os("CORRAL_SCALE_QUICK").is_some();
    let loads = loads(quick);
    let cluster = TestCluster::start_with(true).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = vec![("sqlite, serve".to_owned(), sqlite(&loads))];
    for n in [1, 2, 4] {
        rows.push((
            format!("postgres, {n} worker(s)"),
            postgres(&cluster, n, &loads),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n{cores} cores; model latency {LATENCY_MS} ms; ratios against the first row\n");
    for (i, load) in loads.iter().enumerate() {
        println!("{}: {} runs x {} steps", load.name, load.runs, load.steps);
        println!(
            "| configuration | steps/s | ratio | claim p50 | claim p95 | commits/step | rows/step | WAL/step |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let base = rows[0].1[i].steps_per_sec();
        for (name, figures) in &rows {
            let f = &figures[i];
            let per_step = |n: i64| format!("{:.1}", n as f64 / f.steps as f64);
            let (commits, written, wal) = match f.db {
                Some(d) => (
                    per_step(d.commits),
                    per_step(d.rows),
                    format!("{:.1} KiB", d.wal as f64 / f.steps as f64 / 1024.0),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {name} | {:.1} | {:.2}x | {} ms | {} ms | {commits} | {written} | {wal} |",
                f.steps_per_sec(),
                f.steps_per_sec() / base,
                f.claim(0.5),
                f.claim(0.95)
            );
        }
        println!();
    }
}
