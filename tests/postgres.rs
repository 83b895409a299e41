//! corral on PostgreSQL (`--db`): a run killed mid-step resumes from the database with every step committed once; a server killed mid-run has its run taken over by another server on the same database; artifacts, `show` and `gc` work as on the embedded store. The tests start their own throwaway cluster.

#[path = "durable_support.rs"]
mod durable;
#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::sync::OnceLock;

use corral::store::Store as _;
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

/// A `LATCHED` run submitted to `a`, held in its step s2 after s1
/// committed: its id, and the gate directory that releases s2 and s3.
fn latched_run_held_in_s2(a: &serve::Serve) -> (String, std::path::PathBuf) {
    let up = a.upload(serve::ACME, "latch", &serve::bytes(support::agents::LATCH));
    assert_eq!(up.status, 201, "{}", up.body);
    let gates = a.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("s1"), "").unwrap();
    let run = a.submit(serve::ACME, serve::LATCHED);
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();
    serve::read_events(a, &id, None, |e| {
        e["type"] == "call_started" && e["step"] == "s2"
    });
    (id, gates)
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
    // Held in s2, after s1 committed; then the driving server dies.
    let (id, gates) = latched_run_held_in_s2(&a);
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
    let (id, gates) = latched_run_held_in_s2(&a);
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

const APPROVAL: &str = "version: 1\nname: gated\nagents:\n  echo: { component: echo }\nsteps:\n  - { id: draft, agent: echo, input: { text: $params.text } }\n  - id: sign_off\n    approval:\n      prompt: Ship it?\n      schema: { type: object, properties: { approver: { type: string } }, required: [approver] }\n    input: { text: $steps.draft.output.text }\n  - { id: ship, agent: echo, depends_on: [sign_off], input: { text: $steps.draft.output.text } }\nparams:\n  text: { type: string }\n";

/// Servers that only submit (`serve --submit-only`) leave every run to the
/// workers on the same database: each run is claimed by one worker, driven
/// once, and an approval answered through either server wakes the run for
/// a worker to finish.
#[test]
fn servers_that_only_submit_leave_runs_and_answered_approvals_to_workers() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let a = serve::Serve::start_on_with(&db, &serve::config(), &["--submit-only"]);
    let b = a.sibling();
    let up = a.upload(serve::ACME, "echo", &serve::bytes(support::agents::ECHO));
    assert_eq!(up.status, 201, "{}", up.body);
    // Submitted before any worker exists: nothing drives them yet.
    let ids: Vec<String> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            let r = s.submit(serve::ACME, &serve::echo_chain(3));
            assert_eq!(r.status, 201, "{}", r.body);
            assert_eq!(r.body["status"], "queued", "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let still = a.get(&format!("/v1/runs/{}", ids[0]), serve::ACME).body;
    assert_eq!(still["status"], "queued", "no process drives it: {still}");
    let workers: Vec<_> = (0..3).map(|_| a.worker(2)).collect();
    for id in &ids {
        let done = a.wait_run(serve::ACME, id);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["sessions"], 1, "claimed once: {done}");
        let events = serve::read_events(&b, id, None, |_| false);
        let started = events.iter().filter(|e| e["type"] == "run_started").count();
        assert_eq!(started, 1, "{id}");
    }
    let r = a.post(
        "/v1/runs",
        serve::ACME,
        &serde_json::json!({"workflow": APPROVAL, "params": {"text": "ship"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let waiting = a.wait_run(serve::ACME, &id);
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let answer = b.post(
        &format!("/v1/runs/{id}/steps/sign_off/approve"),
        serve::ACME,
        &serde_json::json!({"input": {"approver": "ana"}}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let done = a.wait_run(serve::ACME, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["sessions"], 2, "{done}");
    drop(workers);
}

/// One tenant's fuel window is shared by every process: two servers and
/// three workers draw on it together, and all of them together never spend
/// more than the window's limit, though each alone could have.
#[test]
fn a_tenants_fuel_window_holds_across_two_servers_and_three_workers() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let a = serve::Serve::start_on(&db, &serve::config());
    let b = a.sibling_with(&["--submit-only"]);
    let _workers: Vec<_> = (0..3).map(|_| a.worker(4)).collect();
    let up = a.upload(serve::METERED, "echo", &serve::bytes(support::agents::ECHO));
    assert_eq!(up.status, 201, "{}", up.body);
    // `metered` has 100K fuel per hour; each run of 4 echo steps uses about
    // 48K, so the window holds about two runs. `a` drives what it is given,
    // `b` queues its runs for the workers (or for `a`, which claims too).
    let mut ids = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = s.submit(serve::METERED, &serve::echo_chain(4));
        match r.status {
            201 => ids.push(r.body["id"].as_str().unwrap().to_owned()),
            429 => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    let mut used = 0;
    let mut exhausted = 0;
    for id in &ids {
        let done = a.wait_run(serve::METERED, id);
        used += done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["fuel_used"].as_u64().unwrap())
            .sum::<u64>();
        exhausted += usize::from(done["status"] != "completed");
    }
    assert!(
        used <= 100_000,
        "the processes together used {used} of 100K"
    );
    assert!(
        refused + exhausted > 0,
        "12 runs of ~48K fit a 100K window: {used} used"
    );
}

/// 10 branches of 20 chained `latch` steps, 4 at a time, each burning fuel
/// for a while so that a process can be killed mid-step.
fn wide_workflow(burn: u64) -> String {
    let mut s = String::from(
        "version: 1\nname: wide\nbudget: { max_concurrency: 4 }\nagents:\n  latch: { component: latch, grants: { dirs: [ { host: gates, guest: /gates } ] } }\nsteps:\n",
    );
    for b in 0..10 {
        for i in 0..20 {
            let text = if i == 0 {
                format!("b{b}")
            } else {
                format!("$steps.b{b}s{}.output.text", i - 1)
            };
            s.push_str(&format!(
                "  - {{ id: b{b}s{i}, agent: latch, input: {{ text: {text}, mark: '.{i}', burn: {burn} }} }}\n"
            ));
        }
    }
    s.push_str("outputs:\n");
    for b in 0..10 {
        s.push_str(&format!("  b{b}: $steps.b{b}s19.output\n"));
    }
    s
}

/// Rounds of `latch`'s burn per step (about 10 fuel each).
const BURN: u64 = 2_000_000;

/// Three workers drive a 200-step run with parallel branches; whichever
/// drives it is killed (SIGKILL) mid-step 20 times and started again. The
/// run completes, each step is committed exactly once, and its outputs are
/// those of the same run driven with no kill.
#[test]
fn a_200_step_run_survives_20_kills_of_its_worker_with_each_step_committed_once() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let a = serve::Serve::start_on_with(&db, &serve::config(), &["--submit-only"]);
    let up = a.upload(serve::ACME, "latch", &serve::bytes(support::agents::LATCH));
    assert_eq!(up.status, 201, "{}", up.body);
    std::fs::create_dir_all(a.data("acme").join("gates")).unwrap();
    let wf = wide_workflow(BURN);
    let mut workers: Vec<serve::Worker> = (0..3).map(|_| a.worker(1)).collect();
    let submit = || {
        let r = a.submit(serve::ACME, &wf);
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    };
    let calm = a.wait_run(serve::ACME, &submit());
    assert_eq!(calm["status"], "completed", "{}", calm["error"]);

    let id = submit();
    let store = corral::store::PgStore::connect(&db).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let (mut kills, mut committed) = (0, 0);
    while kills < 20 {
        assert!(std::time::Instant::now() < deadline, "{kills} kills so far");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let rec = store.run(&id).unwrap();
        assert!(!rec.is_finished(), "finished after only {kills} kills");
        let steps = store.steps(&id).unwrap();
        let done = steps
            .iter()
            .filter(|s| s.status == corral::store::StepState::Completed)
            .count();
        let mid_step = steps
            .iter()
            .any(|s| s.status == corral::store::StepState::Running);
        // Killed once its new driver has committed a step, while it runs one.
        let owner = rec.owner.as_deref().and_then(corral::store::Owner::decode);
        let (Some(owner), true, true) = (owner, done > committed, mid_step) else {
            continue;
        };
        let Some(w) = workers.iter_mut().find(|w| w.pid() == Some(owner.pid)) else {
            continue;
        };
        w.kill9();
        w.spawn();
        kills += 1;
        committed = done;
    }
    // Interrupted by the last kill until the restarted worker claims it.
    let done = loop {
        let r = a.wait_run(serve::ACME, &id);
        if r["status"] != "interrupted" || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(done["status"], "completed", "{}", done["error"]);
    assert_eq!(done["outputs"], calm["outputs"]);
    assert!(
        done["sessions"].as_u64().unwrap() > 20,
        "{}",
        done["sessions"]
    );
    let events = serve::read_events(&a, &id, None, |_| false);
    let mut completions = std::collections::BTreeMap::<String, usize>::new();
    for e in events.iter().filter(|e| e["type"] == "step_completed") {
        *completions
            .entry(e["step"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(completions.len(), 200);
    assert!(
        completions.values().all(|&n| n == 1),
        "steps committed more than once: {:?}",
        completions
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
}

/// A tenant's `concurrent_calls` holds across processes: with a limit of
/// 2 and two servers each given two runs whose one call waits at a gate,
/// only two calls start in all until the gate opens; then every run
/// completes.
#[test]
fn a_tenants_concurrent_calls_hold_across_servers() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let config = format!(
        "{}\n[[tenant]]\nid = \"pair\"\ntokens = [\"{}\"]\n[tenant.quota]\nconcurrent_calls = 2\n",
        serve::config(),
        serve::hash("pair-token")
    );
    let a = serve::Serve::start_on(&db, &config);
    let b = a.sibling();
    let up = a.upload("pair-token", "latch", &serve::bytes(support::agents::LATCH));
    assert_eq!(up.status, 201, "{}", up.body);
    let gates = a.data("pair").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let held = "version: 1\nname: held\nagents:\n  latch: { component: latch, grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { timeout: 30s } }\nsteps:\n  - { id: s, agent: latch, input: { text: go, gate: open } }\n";
    let ids: Vec<String> = [&a, &a, &b, &b]
        .iter()
        .map(|s| {
            let r = s.submit("pair-token", held);
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let started = || {
        ids.iter()
            .filter(|id| {
                serve::events_so_far(&a, "pair-token", id)
                    .iter()
                    .any(|e| e["type"] == "call_started")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while started() < 2 {
        assert!(std::time::Instant::now() < deadline, "calls never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Time for a third call to start, were the limit per process.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(started(), 2, "calls running at once across both servers");
    std::fs::write(gates.join("open"), "").unwrap();
    for id in &ids {
        let done = a.wait_run("pair-token", id);
        assert_eq!(done["status"], "completed", "{}", done["error"]);
    }
}

/// A run a worker claims but cannot resume (here: its agent was replaced
/// while it waited for an answer) is left for its lease to expire, not
/// claimed again at once: it neither spins nor holds up the runs queued
/// behind it.
#[test]
fn a_claimed_run_that_cannot_be_resumed_neither_spins_nor_holds_up_the_queue() {
    let name = format!("t{:016x}", fastrand::u64(..));
    let db = cluster().create_database(&name).unwrap();
    let a = serve::Serve::start_on_with(&db, &serve::config(), &["--submit-only"]);
    for (name, path) in [
        ("echo", support::agents::ECHO),
        ("echo2", support::agents::ECHO),
    ] {
        let up = a.upload(serve::ACME, name, &serve::bytes(path));
        assert_eq!(up.status, 201, "{}", up.body);
    }
    let _worker = a.worker(4);
    let r = a.post(
        "/v1/runs",
        serve::ACME,
        &serde_json::json!({"workflow": APPROVAL, "params": {"text": "ship"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let stuck = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.wait_run(serve::ACME, &stuck)["status"], "waiting");
    // Another component under the name the waiting run pinned.
    let up = a.upload(
        serve::ACME,
        "echo",
        &serve::bytes(support::agents::KEYWORDS),
    );
    assert_eq!(up.status, 201, "{}", up.body);
    let answer = a.post(
        &format!("/v1/runs/{stuck}/steps/sign_off/approve"),
        serve::ACME,
        &serde_json::json!({"input": {"approver": "ana"}}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let behind = a.submit(serve::ACME, &serve::echo_workflow("echo2"));
    assert_eq!(behind.status, 201, "{}", behind.body);
    let done = a.wait_run(serve::ACME, behind.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{}", done["error"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r = a.get(&format!("/v1/runs/{stuck}"), serve::ACME).body;
    assert!(
        r["sessions"].as_u64().unwrap() <= 3,
        "claimed again and again: {} sessions",
        r["sessions"]
    );
}

/// PostgreSQL restarts (as by a crash) while a worker drives a run
/// mid-step: the worker and the server reconnect and go on, and the run
/// finishes in the worker's one session with each step once.
#[test]
fn workers_ride_out_a_database_restart_mid_run() {
    // A cluster of its own, flushing every commit (it is stopped as by a crash).
    let own = TestCluster::start_with(true).unwrap_or_else(|e| panic!("{e}"));
    let db = own.create_database("restart").unwrap();
    let a = serve::Serve::start_on_with(&db, &serve::config(), &["--submit-only"]);
    let _worker = a.worker(4);
    let (id, gates) = latched_run_held_in_s2(&a);
    own.stop().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    own.start_server().unwrap();
    std::fs::write(gates.join("s2"), "").unwrap();
    std::fs::write(gates.join("s3"), "").unwrap();
    // The server's first queries after the restart may find dead
    // connections (a 5xx); it reconnects.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let r = a.get(&format!("/v1/runs/{id}"), serve::ACME);
        if r.status == 200 && r.body["status"] == "completed" {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {}",
            r.status,
            r.body["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        done["sessions"], 1,
        "the worker kept the run through the outage"
    );
    let events = serve::read_events(&a, &id, None, |_| false);
    for s in ["s1", "s2", "s3"] {
        let n = events
            .iter()
            .filter(|e| e["type"] == "step_completed" && e["step"] == s)
            .count();
        assert_eq!(n, 1, "{s}");
    }
}
