//! corral on PostgreSQL (`--db`): a run killed mid-step resumes from the database with every step committed once; a server killed mid-run has its run taken over by another server on the same database; artifacts, `show` and `gc` work as on the embedded store. The tests start their own throwaway cluster.

#[path = "durable_support.rs"]
mod durable;
#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::sync::OnceLock;

use corral::store::postgres::cluster::TestCluster;
use durable::*;
use serde_json::Value;

fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| TestCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

/// An environment on a database of its own.
fn on_postgres() -> Env {
    let name = format!("t{:016x}", fastrand::u64(..));
    Env::on_postgres(cluster().create_database(&name).unwrap())
}

#[test]
fn kill_9_mid_step_then_resume_on_postgres_commits_every_step_once() {
    let env = on_postgres();
    // s1 may pass; s2 waits at its gate until the test opens it.
    env.open_gates(&["s1"]);
    let wf = env.workflow("latched.yaml", LATCHED);
    let mut child = env.spawn(&["run", &wf, "--json", "--run-id", "k"]);
    env.wait_for("k", "s2 started", |j| count(j, "call_started", "s2") >= 1);
    child.kill().unwrap(); // SIGKILL, mid-call of s2 (s1 committed)
    child.wait().unwrap();
    env.open_gates(SLOW_STEPS);
    let out = env.corral(&["resume", "k", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.report(&out)["outputs"]["text"], "go-1-2-3a-4-5");
    let j = env.journal("k");
    for s in SLOW_STEPS {
        assert_eq!(count(&j, "step_completed", s), 1, "{s}");
    }
    assert_eq!(count(&j, "call_started", "s1"), 1, "s1 was not run again");
    assert_eq!(resumes(&j), 1);
    let runs = env.corral(&["runs"]);
    assert!(String::from_utf8_lossy(&runs.stdout).contains("completed"));
}

#[test]
fn artifacts_live_in_the_database_and_gc_removes_them() {
    let env = on_postgres();
    let yaml = "version: 1\nname: pipe\nagents:\n  bulk: { component: \"@BULK@\" }\nsteps:\n  - { id: make, agent: bulk, input: { make: { size: 3000000, seed: 4 } } }\n  - { id: read, agent: bulk, input: { read: $steps.make.output.artifact } }\noutputs:\n  made: $steps.make.output\n  read: $steps.read.output\n";
    let wf = env.workflow("pipe.yaml", yaml);
    let out = env.corral(&["run", &wf, "--json", "--run-id", "p"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = env.report(&out);
    assert_eq!(
        r["outputs"]["made"]["checksum"],
        r["outputs"]["read"]["checksum"]
    );
    let digest = r["outputs"]["made"]["artifact"]["$artifact"]
        .as_str()
        .unwrap()
        .to_owned();
    // Nothing on disk: the bytes are in the database.
    assert!(!env.state().join("artifacts").exists());
    let to = env.path().join("out.bin");
    let get = env.corral(&["artifact", "get", "p", &digest, "-o", to.to_str().unwrap()]);
    assert_eq!(code(&get), 0, "{}", stderr(&get));
    let bytes = std::fs::read(&to).unwrap();
    assert_eq!(bytes.len(), 3_000_000);
    assert_eq!(corral::digest::digest(&bytes), digest);
    let shown: Value =
        serde_json::from_slice(&env.corral(&["show", "p", "--json"]).stdout).unwrap();
    assert_eq!(shown["artifacts"][0]["$artifact"], digest.as_str());

    let gc = env.corral(&["gc", "--older-than", "0s"]);
    assert_eq!(code(&gc), 0, "{}", stderr(&gc));
    assert!(env.store().artifacts("p").unwrap().is_empty());
    assert!(
        env.store()
            .artifact_read(&digest, 0, 10)
            .unwrap()
            .is_empty(),
        "no run holds the bytes: they are gone"
    );
}

/// Two servers on one database: the one driving a run is killed mid-step,
/// and the other takes the run over once its lease expires, without
/// running a committed step again.
#[test]
fn a_server_killed_mid_run_has_its_run_taken_over_by_another() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let mut a = serve::Serve::start_on(&db, &serve::config());
    let b = a.sibling();
    let up = a.upload(serve::ACME, "latch", &serve::bytes(support::agents::LATCH));
    assert_eq!(up.status, 201, "{}", up.body);
    let gates = a.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("s1"), "").unwrap();
    let run = a.submit(serve::ACME, serve::LATCHED);
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();
    // Held in s2, after s1 committed; then the driving server dies.
    serve::read_events(&a, &id, None, |e| {
        e["type"] == "call_started" && e["step"] == "s2"
    });
    a.kill9();
    std::fs::write(gates.join("s2"), "").unwrap();
    std::fs::write(gates.join("s3"), "").unwrap();
    // The other server sees it through the shared database and, once the
    // lease has expired, drives it to the end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        // `interrupted` until the lease expires and the sweep picks it up.
        let r = b.wait_run(serve::ACME, &id);
        if r["status"] != "interrupted" || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["sessions"], 2, "{done}");
    let events = serve::read_events(&b, &id, None, |_| false);
    let completed = |step: &str| {
        events
            .iter()
            .filter(|e| e["type"] == "step_completed" && e["step"] == step)
            .count()
    };
    assert_eq!(
        (completed("s1"), completed("s2"), completed("s3")),
        (1, 1, 1)
    );
}

/// Servers on different machines share only the database: an agent
/// uploaded to one runs on the other, which copies the component from the
/// database (checking its digest) the first time a workflow names it.
#[test]
fn an_agent_uploaded_to_one_server_runs_on_another_that_shares_only_the_database() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let a = serve::Serve::start_on(&db, &serve::config());
    let b = serve::Serve::start_on(&db, &serve::config());
    let up = a.upload(serve::ACME, "echo", &serve::bytes(support::agents::ECHO));
    assert_eq!(up.status, 201, "{}", up.body);
    assert_eq!(b.get("/v1/agents/echo", serve::ACME).status, 200);
    let run = b.submit(serve::ACME, &serve::echo_workflow("echo"));
    assert_eq!(run.status, 201, "{}", run.body);
    let done = b.wait_run(serve::ACME, run.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["steps"][1]["output"]["text"], "hi", "{done}");
}

/// A server paused (SIGSTOP) past its lease loses the run to another; when
/// it wakes, its late commits are refused, so the run's journal holds each
/// step once and the other server's outcome stands.
#[test]
fn a_server_paused_past_its_lease_cannot_commit_when_it_wakes() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let mut a = serve::Serve::start_on(&db, &serve::config());
    let b = a.sibling();
    let up = a.upload(serve::ACME, "latch", &serve::bytes(support::agents::LATCH));
    assert_eq!(up.status, 201, "{}", up.body);
    let gates = a.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("s1"), "").unwrap();
    let run = a.submit(serve::ACME, serve::LATCHED);
    let id = run.body["id"].as_str().unwrap().to_owned();
    serve::read_events(&a, &id, None, |e| {
        e["type"] == "call_started" && e["step"] == "s2"
    });
    let pid = a.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    // B takes the run over once A's lease has expired, and finishes it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while b.get(&format!("/v1/runs/{id}"), serve::ACME).body["sessions"] != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "B never took the run over"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::fs::write(gates.join("s2"), "").unwrap();
    std::fs::write(gates.join("s3"), "").unwrap();
    let done = loop {
        let r = b.get(&format!("/v1/runs/{id}"), serve::ACME).body;
        if r["status"] == "completed" || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(done["status"], "completed", "{done}");
    // A wakes with s2 still in hand: whatever it tries to commit is refused.
    signal("-CONT");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let events = serve::read_events(&b, &id, None, |_| false);
    let count = |kind: &str, step: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["step"] == step)
            .count()
    };
    assert_eq!(
        (
            count("step_completed", "s1"),
            count("step_completed", "s2"),
            count("step_completed", "s3")
        ),
        (1, 1, 1)
    );
    let after = b.get(&format!("/v1/runs/{id}"), serve::ACME).body;
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["sessions"], 2, "{after}");
    a.kill9();
}

/// PostgreSQL restarts while a run waits mid-step: the run's process keeps
/// its lease through the outage (the journal tries the store again, within
/// the lease), reconnects, and finishes with every step committed once.
#[test]
fn a_database_restart_mid_run_is_ridden_out() {
    // A cluster of its own (the shared one must not stop under other
    // tests) that flushes every commit, since it is stopped as by a crash.
    let own = TestCluster::start_with(true).unwrap_or_else(|e| panic!("{e}"));
    let env = Env::on_postgres(own.create_database("restart").unwrap());
    env.open_gates(&["s1"]);
    let wf = env.workflow("latched.yaml", LATCHED);
    let child = env
        .command(&["run", &wf, "--json", "--run-id", "r"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for("r", "s2 started", |j| count(j, "call_started", "s2") >= 1);
    own.stop().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    own.start_server().unwrap();
    env.open_gates(SLOW_STEPS);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j = env.journal("r");
    for s in SLOW_STEPS {
        assert_eq!(count(&j, "step_completed", s), 1, "{s}");
    }
    assert_eq!(resumes(&j), 0, "one session rode it out");
}
