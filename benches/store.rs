//! The store's cost per step, read as ratios within one run: committing a step's completion and claiming a run, on the embedded SQLite store and on PostgreSQL (a local cluster this benchmark starts, with PostgreSQL's default durability: every commit flushed).
//!
//! Run with `cargo bench -p corral-store --bench store` (unset `RUST_BACKTRACE`).
//!
//! - `commit/*`: one journal commit as a step completes: the entry, its
//!   1 KiB output blob and the step's row, with the lease checked.
//! - `claim/*`: a driver takes a run's lease (the epoch bumped) and gives
//!   it back, as a worker does per run.
//!
//! SQLite `normal` fsyncs at checkpoints, `full` at every commit; against
//! PostgreSQL over loopback, which fsyncs its WAL at every commit.

use std::time::Duration;

use corral_store::postgres::cluster::TestCluster;
use corral_store::{
    Durability, Entry, LEASE, NewRun, Owner, PgStore, SqliteStore, StepRecord, StepState, Store,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn new_run(id: &str) -> NewRun {
    NewRun {
        id: id.into(),
        workflow: "bench".into(),
        file: "bench.yaml".into(),
        definition: "version: 1".into(),
        digest: "sha256:0".into(),
        params: serde_json::json!({}),
        components: serde_json::json!({}),
        tenant: "acme".into(),
        idempotency_key: None,
        max_running: None,
    }
}

fn step_completed(i: u64) -> Entry {
    let output = vec![b'x'; 1024];
    let digest = format!("sha256:{i:064x}");
    Entry {
        blob: Some((digest.clone(), output)),
        step_state: Some(StepRecord {
            step: format!("s{}", i % 100),
            status: StepState::Completed,
            attempts: 1,
            fuel_used: 1000,
            output: Some(digest),
            completed_order: Some(i),
            ..Default::default()
        }),
        ..Entry::new("step_completed", Some(format!("s{}", i % 100)), "{}".into())
    }
}

fn bench_store(c: &mut Criterion, name: &str, store: &dyn Store) {
    let me = Owner::this_process();
    let lease = store.create_run(&new_run("r"), &me).unwrap();
    let mut i = 0u64;
    c.bench_function(&format!("commit/{name}"), |b| {
        b.iter(|| {
            i += 1;
            store.commit("r", &lease, &[step_completed(i)]).unwrap();
        })
    });
    store.release("r", &lease).unwrap();
    c.bench_function(&format!("claim/{name}"), |b| {
        b.iter(|| {
            let (_, l) = store.claim("r", &me, LEASE).unwrap();
            store.release("r", &l).unwrap();
        })
    });
}

fn stores(c: &mut Criterion) {
    for (name, durability) in [
        ("sqlite-normal", Durability::Normal),
        ("sqlite-full", Durability::Full),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), durability).unwrap();
        bench_store(c, name, &store);
    }
    let cluster = TestCluster::start_with(true).unwrap();
    let url = cluster.create_database("bench").unwrap();
    let store = PgStore::connect(&url).unwrap();
    bench_store(c, "postgres", &store);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    targets = stores
}
criterion_main!(benches);
