//! Durable runs through the `corral` binary: kill -9 and resume, fuel across sessions, compensation, caching, pins, params, retry, gc, cancel and concurrent processes.

#[path = "durable_support.rs"]
mod durable;
#[path = "support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use corral::store::{JournalEntry, RunState};
use durable::*;
use serde_json::{Value, json};
use support::agents;

#[test]
fn kill_9_at_several_points_then_resume_runs_every_step_exactly_once() {
    let baseline_env = Env::new();
    baseline_env.open_gates(SLOW_STEPS);
    let wf = baseline_env.workflow("latched.yaml", LATCHED);
    let baseline = baseline_env.corral(&["run", &wf, "--json", "--run-id", "baseline"]);
    assert_eq!(code(&baseline), 0, "{}", stderr(&baseline));
    let expected = baseline_env.report(&baseline)["outputs"].clone();
    assert_eq!(expected["text"], "go-1-2-3a-4-5");

    // Each kill lands where the test holds the run: a call waits at its
    // closed gate until the test opens it, so no kill races the work.
    // (kill when, gates to open before the next session)
    type Point = fn(&[JournalEntry]) -> bool;
    let points: [(&str, Point, &[&str]); 4] = [
        // Mid-call of the first step.
        (
            "s1 started",
            |j| since_last_session(j, "call_started", "s1") >= 1,
            &["s1", "s2"],
        ),
        // Just after a commit (s3a and s3b may be starting).
        (
            "s2 committed",
            |j| count(j, "step_completed", "s2") >= 1,
            &["s3b"],
        ),
        // While the parallel pair runs: s3a held, s3b free.
        (
            "s3a started",
            |j| since_last_session(j, "call_started", "s3a") >= 1,
            &["s3a", "s4"],
        ),
        // As the last step starts.
        (
            "s5 started",
            |j| since_last_session(j, "call_started", "s5") >= 1,
            &["s5"],
        ),
    ];
    let env = Env::new();
    env.open_gates(&[]);
    let wf = env.workflow("latched.yaml", LATCHED);
    let mut child = env.spawn(&["run", &wf, "--json", "--run-id", "k"]);
    for (i, (what, pred, open)) in points.iter().enumerate() {
        // Session i+1 has begun (i resumes), and holds where the test wants.
        env.wait_for("k", what, |j| resumes(j) == i && pred(j));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let runs = env.corral(&["runs", "--json"]);
        let k: Value = String::from_utf8_lossy(&runs.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["id"] == "k")
            .unwrap();
        assert_eq!(k["status"], "interrupted", "after kill {i} ({what})");
        env.open_gates(open);
        child = env.spawn(&["resume", "k", "--json"]);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let j = env.journal("k");
    for s in SLOW_STEPS {
        assert_eq!(count(&j, "step_completed", s), 1, "step {s} completed once");
    }
    let resumes: Vec<&JournalEntry> = j.iter().filter(|e| e.kind == "run_resumed").collect();
    assert_eq!(resumes.len(), 4);
    let show = env.corral(&["show", "k", "--json"]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["run"]["status"], "completed");
    assert_eq!(shown["run"]["sessions"], 5);
    // The outputs are those of the uninterrupted run.
    let s5 = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "s5")
        .unwrap();
    assert_eq!(s5["output_value"]["text"], expected["text"]);
    assert_eq!(s5["output_value"]["hops"], expected["hops"]);
    // A step cut off mid-call ran again as a new attempt, and both count.
    let interrupted: Vec<String> = resumes
        .iter()
        .flat_map(|e| e.data["interrupted"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for s in ["s1", "s3a", "s5"] {
        assert!(interrupted.contains(&s.to_owned()), "{s}: {interrupted:?}");
    }
    for s in &interrupted {
        let row = shown["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["step"] == s.as_str())
            .unwrap();
        let starts = count(&j, "call_started", s) as u64;
        assert!(starts >= 2, "step {s}: {starts} call starts");
        assert_eq!(row["attempts"].as_u64().unwrap(), starts, "step {s}");
    }
    // Committed steps were reused, not rerun.
    assert_eq!(count(&j, "step_reused", "s1"), 3);
}

/// Three steps that burn `@BURN@` rounds each; `f2` is held at its gate.
const FUELED: &str = r#"
version: 1
name: fueled
agents:
  latch: { component: "@LATCH@", grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { fuel: "@CALL@", timeout: 60s } }
budget: { fuel: "@BUDGET@" }
steps:
  - { id: f1, agent: latch, input: { text: "a", burn: @BURN@ } }
  - { id: f2, agent: latch, input: { text: $steps.f1.output.text, burn: @BURN@, gate: f2 } }
  - { id: f3, agent: latch, input: { text: $steps.f2.output.text, burn: @BURN@ } }
"#;

/// Fuel the journal proves a run may have spent: what finished calls used,
/// plus, for each call cut off by a kill, the most it could have used (its
/// reservation when the journal records one, else its agent's `fuel`).
fn fuel_proven(j: &[JournalEntry], call_limit: u64) -> u64 {
    let key = |e: &JournalEntry| (e.step.clone(), e.data["attempt"].as_u64());
    let finished: std::collections::HashSet<_> = j
        .iter()
        .filter(|e| e.kind == "call_finished")
        .map(key)
        .collect();
    let used: u64 = j
        .iter()
        .filter(|e| e.kind == "call_finished")
        .map(|e| e.data["receipt"]["fuel_used"].as_u64().unwrap())
        .sum();
    let cut_off: u64 = j
        .iter()
        .filter(|e| e.kind == "call_started" && !finished.contains(&key(e)))
        .map(|e| e.data["fuel_reserved"].as_u64().unwrap_or(call_limit))
        .sum();
    used + cut_off
}

#[test]
fn killed_and_resumed_runs_never_spend_more_than_the_fuel_budget() {
    const BURN: u64 = 2_000_000;
    // One step's fuel, measured: the burn is deterministic.
    let probe = Env::new();
    probe.open_gates(&["f2"]);
    let wf = probe.workflow(
        "fueled.yaml",
        &FUELED
            .replace("@BURN@", &BURN.to_string())
            .replace("\"@CALL@\"", "1G")
            .replace("\"@BUDGET@\"", "10G"),
    );
    let out = probe.corral(&["run", &wf, "--json", "--run-id", "probe"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let x = step(&probe.report(&out), "f1")["fuel_used"]
        .as_u64()
        .unwrap();
    assert!(x > BURN, "the burn costs fuel: {x}");

    // Each call may use 1.5 steps' worth; the budget covers an
    // uninterrupted run (3 steps) with room, but not two lost calls more.
    let call = x * 3 / 2;
    let budget = x + 2 * call + x / 2;
    let env = Env::new();
    env.open_gates(&[]);
    let wf = env.workflow(
        "fueled.yaml",
        &FUELED
            .replace("@BURN@", &BURN.to_string())
            .replace("\"@CALL@\"", &call.to_string())
            .replace("\"@BUDGET@\"", &budget.to_string()),
    );
    let mut child = env.spawn(&["run", &wf, "--json", "--run-id", "f"]);
    for kill in 0..2 {
        env.wait_for("f", "f2 held at its gate", |j| {
            resumes(j) == kill && since_last_session(j, "call_started", "f2") >= 1
        });
        child.kill().unwrap();
        child.wait().unwrap();
        if kill == 0 {
            child = env.spawn(&["resume", "f", "--json"]);
        }
    }
    // The third session has less fuel left than a step needs.
    env.open_gates(&["f2"]);
    let out = env.corral(&["resume", "f", "--json"]);
    let report = env.report(&out);
    assert_eq!(report["status"], "fuel_exhausted", "{report}");
    assert!(
        report["fuel"]["used"].as_u64().unwrap() <= budget,
        "{report}"
    );

    let j = env.journal("f");
    assert_eq!(resumes(&j), 2);
    let proven = fuel_proven(&j, call);
    assert!(
        proven <= budget,
        "the journal shows up to {proven} fuel spent, over the budget of {budget}"
    );
    // The store's charge is what the report shows.
    assert_eq!(
        env.store().run("f").unwrap().fuel_charged,
        report["fuel"]["used"].as_u64().unwrap()
    );
}

#[test]
fn the_step_cache_key_covers_what_the_agent_is_granted() {
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("data")).unwrap();
    std::fs::write(env.path().join("data/note.txt"), "hi").unwrap();
    let workflow = |greeting: &str| {
        format!(
            r#"
version: 1
name: greet
agents:
  reader:
    component: "{}"
    grants: {{ env: ["GREETING={greeting}"], dirs: [ {{ host: data, guest: /data }} ] }}
steps:
  - {{ id: read, agent: reader, input: {{ file: note.txt }}, cache: true }}
outputs:
  greeting: $steps.read.output.greeting
"#,
            agents::ENV_READER
        )
    };
    let run = |name: &str, greeting: &str| {
        let wf = env.workflow(name, &workflow(greeting));
        let out = env.corral(&["run", &wf, "--json", "--run-id", name]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env.report(&out)
    };
    let hello = run("hello", "hello");
    assert_eq!(hello["outputs"]["greeting"], "hello");
    // Same component, same input, another granted value: not the same call.
    let bye = run("bye", "bye");
    assert_eq!(step(&bye, "read")["cached"], false, "{bye}");
    assert_eq!(bye["outputs"]["greeting"], "bye");
    // Same grants again: the cache answers.
    let again = run("again", "hello");
    assert_eq!(step(&again, "read")["cached"], true, "{again}");
}

#[test]
fn a_failed_run_compensates_completed_steps_in_reverse_and_reports_failures() {
    let env = Env::new();
    let wf = env.workflow(
        "saga.yaml",
        r#"
version: 1
name: saga
agents:
  relay: { component: "@RELAY@" }
  broken_undo: { component: "@HOSTILE@" }
steps:
  - { id: book, agent: relay, input: { text: "flight" }, compensate: relay }
  - { id: charge, agent: relay, input: { text: $steps.book.output.text, mark: "+card" }, compensate: broken_undo }
  - { id: note, agent: relay, input: { text: "no undo needed" } }
  - { id: ship, agent: relay, input: { text: $steps.charge.output.text, fail: true }, depends_on: [note] }
"#,
    );
    let out = env.corral(&["run", &wf, "--json", "--run-id", "s"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = env.report(&out);
    assert_eq!(r["status"], "failed");
    let comps = r["compensations"].as_array().unwrap();
    let order: Vec<&str> = comps.iter().map(|c| c["step"].as_str().unwrap()).collect();
    assert_eq!(order, ["charge", "book"], "reverse completion order");
    assert_eq!(comps[0]["outcome"], "invalid_input", "{r}");
    assert!(
        comps[0]["error"]
            .as_str()
            .unwrap()
            .contains("compensation of step `charge` failed")
    );
    assert_eq!(comps[1]["outcome"], "ok");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("1 compensation(s) FAILED")
    );

    let j = env.journal("s");
    let started: Vec<&str> = j
        .iter()
        .filter(|e| e.kind == "compensation_started")
        .map(|e| e.step.as_deref().unwrap())
        .collect();
    assert_eq!(started, ["charge", "book"]);
    let shown: Value =
        serde_json::from_slice(&env.corral(&["show", "s", "--json"]).stdout).unwrap();
    let status = |id: &str| {
        shown["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("book"), "compensated");
    assert_eq!(status("charge"), "compensation_failed");
    assert_eq!(status("note"), "completed");
}

#[test]
fn the_step_cache_hits_for_the_same_input_and_misses_for_another() {
    let env = Env::new();
    let wf = env.workflow(
        "cache.yaml",
        r#"
version: 1
name: cached
agents:
  relay: { component: "@RELAY@" }
params:
  text: { type: string }
steps:
  - { id: slow, agent: relay, input: { text: $params.text, mark: "!" }, cache: { ttl: 1h } }
  - { id: fresh, agent: relay, input: { text: $steps.slow.output.text } }
outputs:
  text: $steps.fresh.output.text
"#,
    );
    let run = |id: &str, text: &str| {
        let out = env.corral(&[
            "run",
            &wf,
            "--json",
            "--run-id",
            id,
            "-p",
            &format!("text={text}"),
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env.report(&out)
    };
    let first = run("c1", "hello");
    assert_eq!(step(&first, "slow")["cached"], false);
    assert!(step(&first, "slow")["fuel_used"].as_u64().unwrap() > 0);
    let second = run("c2", "hello");
    assert_eq!(step(&second, "slow")["cached"], true);
    assert_eq!(step(&second, "slow")["fuel_used"], 0);
    assert_eq!(step(&second, "slow")["attempts"], 0);
    assert_eq!(
        step(&second, "fresh")["cached"],
        false,
        "only cached steps hit"
    );
    assert_eq!(second["outputs"], first["outputs"]);
    assert_eq!(count(&env.journal("c2"), "call_cached", "slow"), 1);
    let third = run("c3", "other");
    assert_eq!(step(&third, "slow")["cached"], false);
    assert_eq!(third["outputs"]["text"], "other!");
}

/// Appends a custom section: the component behaves the same, its digest changes.
fn touch_component(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend_from_slice(&[0x00, 0x06, 0x05, b'p', b'a', b't', b'c', b'h']);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn resume_refuses_a_changed_component_unless_allowed() {
    let env = Env::new();
    let local = env.path().join("relay.wasm");
    std::fs::copy(agents::RELAY, &local).unwrap();
    let wf = env.workflow(
        "pinned.yaml",
        &GATED.replace("@RELAY@", &local.display().to_string()),
    );
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "p"])), 10);
    touch_component(&local);
    let ok = env.corral(&[
        "approve",
        "p",
        "sign_off",
        "--input",
        r#"{"approver": "x"}"#,
    ]);
    assert_eq!(code(&ok), 0);
    let refused = env.corral(&["resume", "p"]);
    assert_eq!(code(&refused), 9, "{}", stderr(&refused));
    let msg = stderr(&refused);
    assert!(
        msg.contains("agent `relay`: was sha256:") && msg.contains("--allow-changed-components"),
        "{msg}"
    );
    let allowed = env.corral(&["resume", "p", "--allow-changed-components", "--json"]);
    assert_eq!(code(&allowed), 0, "{}", stderr(&allowed));
    let resumed = env
        .journal("p")
        .into_iter()
        .find(|e| e.kind == "run_resumed")
        .unwrap();
    assert_eq!(resumed.data["changed_components"], json!(["relay"]));
}

#[test]
fn resume_with_a_changed_param_reruns_only_what_reads_it() {
    let env = Env::new();
    let wf = env.workflow(
        "params.yaml",
        r#"
version: 1
name: params
agents:
  relay: { component: "@RELAY@" }
params:
  topic: { type: string, default: "cats" }
  other: { type: string, default: "dogs" }
steps:
  - { id: a, agent: relay, input: { text: $params.topic } }
  - { id: b, agent: relay, input: { text: $params.other } }
  - { id: c, agent: relay, input: { text: $steps.a.output.text, mark: "!" } }
  - { id: d, agent: relay, input: { text: $steps.b.output.text, mark: "?" } }
outputs:
  c: $steps.c.output.text
  d: $steps.d.output.text
"#,
    );
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "q"])), 0);
    let out = env.corral(&["resume", "q", "--param", "topic=birds", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = env.report(&out);
    assert_eq!(r["outputs"], json!({ "c": "birds!", "d": "dogs?" }));
    for (id, reused) in [("a", false), ("b", true), ("c", false), ("d", true)] {
        assert_eq!(step(&r, id)["reused"], reused, "step {id}");
    }
    let j = env.journal("q");
    assert_eq!(count(&j, "step_rerun", "a"), 1);
    assert_eq!(count(&j, "step_completed", "b"), 1, "b ran once in all");
    let resumed = j.iter().find(|e| e.kind == "run_resumed").unwrap();
    assert_eq!(resumed.data["changed_params"], json!(["topic"]));
    // The new value sticks for later sessions.
    let again = env.corral(&["resume", "q", "--param", "topic=birds", "--json"]);
    let r = env.report(&again);
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["reused"] == true),
        "{r}"
    );
}

#[test]
fn retry_reruns_the_failed_step_and_reuses_the_rest() {
    let env = Env::new();
    let wf = env.workflow(
        "retry.yaml",
        r#"
version: 1
name: retry
agents:
  relay: { component: "@RELAY@" }
steps:
  - { id: a, agent: relay, input: { text: "a" } }
  - { id: b, agent: relay, input: { text: $steps.a.output.text, fail: true } }
"#,
    );
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "t"])), 1);
    let refused = env.corral(&["resume", "t"]);
    assert_eq!(code(&refused), 2);
    assert!(
        stderr(&refused).contains("corral retry t --step"),
        "{}",
        stderr(&refused)
    );
    let out = env.corral(&["retry", "t", "--step", "b", "--json"]);
    assert_eq!(code(&out), 1);
    let r = env.report(&out);
    assert_eq!(step(&r, "a")["reused"], true);
    assert_eq!(
        step(&r, "b")["attempts"],
        2,
        "the retry is the second attempt"
    );
    let unknown = env.corral(&["retry", "t", "--step", "zz"]);
    assert_eq!(code(&unknown), 2);
    assert!(
        stderr(&unknown).contains("no step `zz`; its steps are: a, b"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn gc_prunes_finished_runs_and_unreferenced_blobs_only() {
    let env = Env::new();
    let slow = env.workflow(
        "params.yaml",
        &SLOW
            .replace("ms: 300", "ms: 0")
            .replace("ms: 400", "ms: 0")
            .replace("ms: 250", "ms: 0"),
    );
    let gated = env.workflow("gated.yaml", GATED);
    assert_eq!(
        code(&env.corral(&["run", &slow, "--run-id", "old1", "-p", "text=x"])),
        0
    );
    assert_eq!(
        code(&env.corral(&["run", &slow, "--run-id", "old2", "-p", "text=y"])),
        0
    );
    assert_eq!(code(&env.corral(&["run", &gated, "--run-id", "open"])), 10);
    let out = env.corral(&["gc", "--older-than", "0s", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["runs"], 2);
    assert!(stats["blobs"].as_u64().unwrap() >= 12, "{stats}");
    let store = env.store();
    let ids: Vec<String> = store.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["open"]);
    assert!(store.journal("old1", 0, 10).unwrap().is_empty());
    // The open run keeps its outputs and still finishes.
    assert_eq!(
        code(&env.corral(&[
            "approve",
            "open",
            "sign_off",
            "--input",
            r#"{"approver": "z"}"#
        ])),
        0
    );
    let done = env.corral(&["resume", "open", "--json"]);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    assert_eq!(env.report(&done)["outputs"]["published"], "z approved");
    let again: Value =
        serde_json::from_slice(&env.corral(&["gc", "--older-than", "1h", "--json"]).stdout)
            .unwrap();
    assert_eq!(again["runs"], 0, "recent runs are kept");
}

#[test]
fn concurrent_processes_share_one_state_directory() {
    let env = Env::new();
    let fast = SLOW
        .replace("ms: 300", "ms: 20")
        .replace("ms: 400", "ms: 20")
        .replace("ms: 250", "ms: 20");
    let wf = env.workflow("fast.yaml", &fast);
    let children: Vec<(String, Child)> = (0..4)
        .map(|i| {
            let id = format!("c{i}");
            let text = format!("text=t{i}");
            (
                id.clone(),
                env.spawn(&["run", &wf, "--run-id", &id, "-p", &text]),
            )
        })
        .collect();
    for (id, mut c) in children {
        assert_eq!(c.wait().unwrap().code(), Some(0), "run {id}");
    }
    let store = env.store();
    let runs: BTreeMap<String, RunState> = store
        .runs()
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(runs.len(), 4);
    for i in 0..4 {
        let id = format!("c{i}");
        assert_eq!(runs[&id], RunState::Completed);
        let j = store.journal(&id, 0, 10_000).unwrap();
        for s in SLOW_STEPS {
            assert_eq!(count(&j, "step_completed", s), 1, "run {id} step {s}");
        }
        let s5 = store
            .steps(&id)
            .unwrap()
            .into_iter()
            .find(|s| s.step == "s5")
            .unwrap();
        let out: Value =
            serde_json::from_slice(&store.blob(s5.output.as_ref().unwrap()).unwrap().unwrap())
                .unwrap();
        assert_eq!(out["text"], format!("t{i}-1-2-3a-4-5"));
    }
    // Reusing a run id is refused.
    let dup = env.corral(&["run", &wf, "--run-id", "c0"]);
    assert_eq!(code(&dup), 2);
    assert!(
        stderr(&dup).contains("a run `c0` already exists"),
        "{}",
        stderr(&dup)
    );
}

#[test]
fn cancel_stops_a_driven_run_and_compensates_an_idle_one() {
    let env = Env::new();
    let wf = env.workflow(
        "gated.yaml",
        &GATED.replace(
            "- { id: draft, agent: relay, input: { text: \"draft\" } }",
            "- { id: draft, agent: relay, input: { text: \"draft\" }, compensate: relay }",
        ),
    );
    let mut driven = env.spawn(&["run", &wf, "--wait", "--run-id", "x"]);
    env.wait_for("x", "the approval request", |j| {
        count(j, "approval_requested", "sign_off") == 1
    });
    let out = env.corral(&["cancel", "x"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(driven.wait().unwrap().code(), Some(130));
    assert_eq!(env.store().run("x").unwrap().status, RunState::Cancelled);
    assert!(
        env.journal("x")
            .iter()
            .all(|e| e.kind != "compensation_started")
    );
    // A cancelled run can be continued; the old cancel request does not stop it.
    let mut resumed = env.spawn(&["resume", "x", "--wait"]);
    std::thread::sleep(Duration::from_millis(2500));
    let ok = env.corral(&[
        "approve",
        "x",
        "sign_off",
        "--input",
        r#"{"approver": "v"}"#,
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert_eq!(resumed.wait().unwrap().code(), Some(0));

    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "y"])), 10);
    let out = env.corral(&["cancel", "y", "--compensate"]);
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    let j = env.journal("y");
    assert_eq!(count(&j, "compensation_finished", "draft"), 1);
    assert_eq!(env.store().run("y").unwrap().status, RunState::Cancelled);
    let again = env.corral(&["cancel", "y"]);
    assert_eq!(code(&again), 2);
}

#[test]
fn a_join_any_step_that_started_before_a_slow_branch_finished_is_reused() {
    let env = Env::new();
    let wf = env.workflow(
        "race.yaml",
        r#"
version: 1
name: race
agents:
  relay: { component: "@RELAY@" }
  merge: { component: "@MERGE@" }
steps:
  - { id: fast, agent: relay, input: { text: "fast" } }
  - { id: slow, agent: relay, input: { text: "slow", ms: 500 } }
  - { id: first, agent: merge, join: any, input: { items: [$steps.fast.output, $steps.slow.output], field: text } }
  - { id: last, agent: relay, input: { text: $steps.first.output.text, fail: true }, depends_on: [slow] }
"#,
    );
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "race"])), 1);
    let out = env.corral(&["retry", "race", "--step", "last", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = env.report(&out);
    // `first` read `fast` only (`slow` still ran): that still holds, so it is reused.
    assert_eq!(step(&r, "first")["reused"], true, "{r}");
    assert_eq!(count(&env.journal("race"), "step_completed", "first"), 1);
}

/// One step whose latch delegates three legs to latch, each held at its gate.
const DELEGATING: &str = r#"
version: 1
name: delegating
agents:
  latch: { component: "@LATCH@", grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { timeout: 60s } }
steps:
  - id: fan
    agent: latch
    delegates: [latch]
    input: { text: "go", then: [ { text: "a", gate: a }, { text: "b", gate: b }, { text: "c", gate: c } ] }
outputs:
  text: $steps.fan.output.text
"#;

#[test]
fn kill_9_mid_delegation_then_resume_reuses_the_children_that_completed() {
    let env = Env::new();
    env.open_gates(&["a", "b"]);
    let wf = env.workflow("delegating.yaml", DELEGATING);
    let mut child = env.spawn(&["run", &wf, "--json", "--run-id", "d"]);
    // Legs a and b are done and journaled; c waits at its closed gate.
    env.wait_for("d", "two delegated calls finished", |j| {
        count(j, "delegate_finished", "fan") >= 2
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(env.store().run("d").unwrap().status, RunState::Running);

    env.open_gates(&["c"]);
    let out = env.corral(&["resume", "d", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.report(&out)["outputs"]["text"], "go[a][b][c]");

    // a and b ran once, in the first session; only c ran in the second.
    let j = env.journal("d");
    assert_eq!(count(&j, "delegate_finished", "fan"), 3);
    let inputs: std::collections::BTreeSet<&str> = j
        .iter()
        .filter(|e| e.kind == "delegate_finished")
        .map(|e| e.data["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs.len(), 3, "three different legs");
    let finished = j
        .iter()
        .rfind(|e| e.kind == "call_finished" && e.step.as_deref() == Some("fan"))
        .unwrap();
    let outcomes: Vec<&str> = finished.data["receipt"]["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["reused", "reused", "ok"]);

    let show = env.corral(&["show", "d"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert_eq!(text.matches("reused").count(), 2, "{text}");
}

/// A step that delegates answers for its delegates' components too: a
/// cached output is reused while they are the same, and not once the
/// workflow points a delegate at another component.
#[test]
fn a_cached_step_that_delegates_runs_again_when_a_delegate_changes() {
    let env = Env::new();
    let yaml = |worker: &str| {
        format!(
            "version: 1\nname: d\nagents:\n  orchestrate: {{ component: \"{}\" }}\n  summarize: {{ component: \"{worker}\" }}\nsteps:\n  - {{ id: s, agent: orchestrate, cache: true, delegates: [summarize], input: {{ text: \"One. Two.\\n\\nThree. Four.\" }} }}\n",
            agents::ORCHESTRATE
        )
    };
    let cached = |file: &str, id: &str| {
        let out = env.corral(&["run", file, "--json", "--run-id", id]);
        assert_eq!(code(&out), 0, "{id}: {}", stderr(&out));
        step(&env.report(&out), "s")["cached"].as_bool().unwrap()
    };
    let same = env.workflow("same.yaml", &yaml(agents::SUMMARIZE));
    assert!(!cached(&same, "d1"));
    assert!(
        cached(&same, "d2"),
        "the same call is served from the cache"
    );
    let other = env.workflow("other.yaml", &yaml(agents::LEAD));
    assert!(
        !cached(&other, "d3"),
        "another delegate component: the step runs again"
    );
}
