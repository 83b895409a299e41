//! The PostgreSQL store on a throwaway cluster: the behaviour suite every backend passes, and what only a shared database can do (many processes on one schema, fencing across connections).

use std::sync::OnceLock;

use super::cluster::TestCluster;
use super::*;
use crate::behaviour::{Fixture, behaviour_tests, new_run};

/// One cluster for this test binary; each test gets a database of its own.
fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| TestCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

struct Pg {
    url: String,
    store: PgStore,
}

impl Fixture for Pg {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn sql(&self, sql: &str) {
        let sql = sql.to_owned();
        self.store
            .rows(move |c| async move { Ok(c.batch_execute(&sql).await?) })
            .unwrap();
    }
}

fn fresh() -> Pg {
    let name = format!("t{:016x}", fastrand::u64(..));
    let url = cluster().create_database(&name).unwrap();
    let store = PgStore::connect(&url).unwrap();
    Pg { url, store }
}

behaviour_tests!(fresh());

#[test]
fn a_commit_is_all_or_nothing() {
    let f = fresh();
    let store = &f.store;
    let mine = store
        .create_run(&new_run("r"), &Owner::this_process())
        .unwrap();
    f.sql(
        "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER boom BEFORE INSERT ON journal FOR EACH ROW WHEN (NEW.kind = 'boom') EXECUTE FUNCTION boom();",
    );
    let good = Entry::new("step_started", Some("a".into()), "{}".into());
    let bad = Entry::new("boom", None, "{}".into());
    let err = store.commit("r", &mine, &[good.clone(), bad]).unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(store.journal("r", 0, 10).unwrap().is_empty());
    store.commit("r", &mine, &[good]).unwrap();
    assert_eq!(store.journal("r", 0, 10).unwrap().len(), 1);
}

#[test]
fn processes_share_one_schema_and_a_newer_one_is_refused() {
    let f = fresh();
    // Another process connecting to the same database migrates nothing
    // again and sees the same runs.
    f.store
        .create_run(&new_run("kept"), &Owner::this_process())
        .unwrap();
    let other = PgStore::connect(&f.url).unwrap();
    assert_eq!(other.run("kept").unwrap().status, RunState::Running);
    f.sql("UPDATE corral_schema SET version = 99");
    let err = PgStore::connect(&f.url).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("newer than this corral knows"),
        "{err}"
    );
}

#[test]
fn a_lease_taken_over_by_another_process_fences_the_first() {
    let f = fresh();
    let me = Owner::this_process();
    let first = f.store.create_run(&new_run("r"), &me).unwrap();
    // Another machine's process claims it once the lease has expired.
    f.sql(&format!(
        "UPDATE runs SET heartbeat_ms = heartbeat_ms - {}",
        2 * crate::LEASE.as_millis()
    ));
    let elsewhere = Owner {
        host: "another-machine".into(),
        ..Owner::this_process()
    };
    let other = PgStore::connect(&f.url).unwrap();
    let (_, second) = other.claim("r", &elsewhere, crate::LEASE).unwrap();
    assert!(second.epoch > first.epoch);
    let e = Entry::new("step_started", Some("a".into()), "{}".into());
    assert!(matches!(
        f.store.commit("r", &first, std::slice::from_ref(&e)),
        Err(StoreError::LeaseLost(_))
    ));
    other.commit("r", &second, &[e]).unwrap();
}

#[test]
fn a_password_never_shows_in_messages() {
    assert_eq!(
        redact("postgres://corral:s3cret@db.internal:5432/corral"),
        "postgres://corral@db.internal:5432/corral"
    );
    assert_eq!(
        redact("host=db.internal password=s3cret user=corral"),
        "host=db.internal user=corral"
    );
    let err = PgStore::connect("postgres://u:s3cret@127.0.0.1:1/none")
        .err()
        .unwrap();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// A process waiting for runs hears, through `LISTEN`, of each run another
/// process submits, wakes or gives up unfinished, and of nothing else.
#[test]
fn claimable_runs_are_announced_to_other_processes() {
    let f = fresh();
    let other = PgStore::connect(&f.url).unwrap();
    let wakeups = f.store.wakeups().expect("PostgreSQL announces runs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let heard = |within_ms: u64| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(within_ms), wakeups.notified())
                .await
                .is_ok()
        })
    };
    // One permit when the listener connects (what it may have missed).
    assert!(heard(5_000), "the listener never connected");
    assert!(!heard(300), "nothing happened yet");
    let tenant_run = |id: &str| NewRun {
        tenant: "acme".into(),
        ..new_run(id)
    };
    other.submit_run(&tenant_run("q")).unwrap();
    assert!(heard(5_000), "a submitted run");
    let me = Owner::this_process();
    let lease = other.create_run(&tenant_run("d"), &me).unwrap();
    assert!(!heard(300), "a run created with a driver is not claimable");
    other.release("d", &lease).unwrap();
    assert!(heard(5_000), "a run given up unfinished");
    let (_, lease) = other.claim("d", &me, crate::LEASE).unwrap();
    let done = Entry {
        run_state: Some((RunState::Completed, None)),
        ..Entry::new("run_finished", None, "{}".into())
    };
    other.commit("d", &lease, &[done]).unwrap();
    other.release("d", &lease).unwrap();
    assert!(!heard(300), "a finished run wakes no one");
}
