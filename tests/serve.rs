//! `corral serve` as a tenant meets it: a real server process on loopback, real HTTP; authentication, uploads and runs, isolation between tenants, ceilings, event streams, and restarts.

#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use serve::*;

#[test]
fn requests_without_a_known_token_are_refused_with_a_problem() {
    let s = Serve::start();
    let none = s.call("GET", "/v1/runs", None, None);
    assert_eq!(none.status, 401);
    assert_eq!(none.content_type, "application/problem+json");
    assert!(
        problem_type(&none).ends_with("/unauthorized"),
        "{}",
        none.body
    );
    let wrong = s.get("/v1/runs", "not-a-token");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(s.call("GET", "/healthz", None, None).status, 200);
    assert_eq!(s.call("GET", "/readyz", None, None).status, 200);
    let missing = s.get("/v1/nothing", ACME);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type, "application/problem+json");
    // Malformed requests are problems too, naming what is wrong.
    let unknown = s.post("/v1/runs", ACME, &json!({ "workflow": "x", "priority": 1 }));
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.content_type, "application/problem+json");
    assert!(
        unknown.body["detail"]
            .as_str()
            .unwrap()
            .contains("priority"),
        "{}",
        unknown.body
    );
    let bad_query = s.get("/v1/runs?status=sleeping", ACME);
    assert_eq!(bad_query.status, 400, "{}", bad_query.body);
    assert!(
        bad_query.body["detail"]
            .as_str()
            .unwrap()
            .contains("sleeping")
    );
}

#[test]
fn a_tenant_uploads_an_agent_runs_a_workflow_and_reads_its_outputs() {
    let s = Serve::start();
    let up = s.upload(ACME, "echo", &bytes(support::agents::ECHO));
    assert_eq!(up.status, 201, "{}", up.body);
    assert!(up.body["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(up.body["describe"]["name"], "echo");

    let bad = s.upload(ACME, "junk", b"not wasm at all");
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(
        bad.body["detail"].as_str().unwrap().contains("junk"),
        "{}",
        bad.body
    );

    let run = s.submit(ACME, &echo_workflow("echo"));
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();
    let done = s.wait_run(ACME, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["percent"], 100.0);
    let b = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "b")
        .unwrap();
    assert_eq!(b["output"]["text"], "hi", "{done}");

    // By digest as well as by name.
    let digest = up.body["digest"].as_str().unwrap();
    let by_digest = s.submit(ACME, &echo_workflow(digest));
    assert_eq!(by_digest.status, 201, "{}", by_digest.body);

    let metrics = s.call("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    for line in [
        r#"corral_runs_submitted_total{tenant="acme"} 2"#,
        r#"corral_steps_total{tenant="acme",agent="echo",status="completed"}"#,
        r#"corral_step_fuel_count{tenant="acme",agent="echo"}"#,
        r#"corral_calls_running{tenant="acme"} "#,
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    let list = s.get("/v1/runs", ACME);
    assert_eq!(
        list.body["runs"].as_array().unwrap().len(),
        2,
        "{}",
        list.body
    );
}

#[test]
fn another_tenants_runs_and_agents_answer_404_and_cannot_be_used() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let run = s.submit(ACME, &echo_workflow("echo"));
    let id = run.body["id"].as_str().unwrap().to_owned();
    s.wait_run(ACME, &id);

    for (method, path) in [
        ("GET", format!("/v1/runs/{id}")),
        ("GET", format!("/v1/runs/{id}/events")),
        ("POST", format!("/v1/runs/{id}/cancel")),
        ("POST", format!("/v1/runs/{id}/resume")),
        ("POST", format!("/v1/runs/{id}/steps/a/approve")),
        ("GET", "/v1/agents/echo".to_string()),
        ("DELETE", "/v1/agents/echo".to_string()),
    ] {
        let r = s.call(method, &path, Some(GLOBEX), None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        let unknown = s.call(method, &path.replace(&id, "run-0000"), Some(GLOBEX), None);
        assert_eq!(
            r.body["title"], unknown.body["title"],
            "the answers tell nothing apart"
        );
    }
    assert_eq!(s.get("/v1/runs", GLOBEX).body["runs"], json!([]));
    assert_eq!(s.get("/v1/agents", GLOBEX).body["agents"], json!([]));

    // Globex cannot run acme's agent, by name or by digest.
    let digest = s.get("/v1/agents/echo", ACME).body["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["echo", digest.as_str()] {
        let r = s.submit(GLOBEX, &echo_workflow(name));
        assert_eq!(r.status, 403, "{}", r.body);
    }
    // Acme's agent is still there.
    assert_eq!(s.get("/v1/agents/echo", ACME).status, 200);
}

#[test]
fn a_workflow_above_the_tenants_ceiling_is_refused_before_anything_runs() {
    let s = Serve::start();
    assert_eq!(
        s.upload(TINY, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    assert_eq!(
        s.upload(ACME, "env", &bytes(support::agents::ENV_READER))
            .status,
        201
    );
    std::fs::create_dir_all(s.data("acme").join("inbox")).unwrap();
    let cases = [
        (
            TINY,
            format!(
                "version: 1\nname: p\nagents:\n  echo: {{ component: {} }}\nsteps:\n  - {{ id: a, agent: echo, input: {{ text: hi }} }}\n",
                support::agents::ECHO
            ),
            "agents.echo.component",
        ),
        (
            TINY,
            echo_workflow("echo").replace(
                "{ component: echo }",
                "{ component: echo, budget: { memory: 128MiB } }",
            ),
            "quota.memory_per_call",
        ),
        // Every submission counts against the per-minute quota, refused or
        // not (tiny may make two), so the rest are acme's.
        (
            ACME,
            ENV_WORKFLOW.replace("host: inbox", "host: ../globex"),
            "data root",
        ),
        (
            ACME,
            ENV_WORKFLOW.replace("GREETING", "HOME"),
            "no secret `HOME`",
        ),
    ];
    for (token, wf, needle) in cases {
        let r = s.submit(token, &wf);
        assert_eq!(r.status, 403, "{wf}\n{}", r.body);
        assert!(problem_type(&r).ends_with("/above-ceiling"), "{}", r.body);
        assert!(r.body.to_string().contains(needle), "{needle}: {}", r.body);
    }
    assert_eq!(
        s.get("/v1/runs", TINY).body["runs"],
        json!([]),
        "nothing ran"
    );

    // A granted secret is the tenant's, never the server's environment, and
    // a granted directory is under the tenant's data root.
    let inbox = s.data("acme").join("inbox");
    std::fs::write(inbox.join("note.txt"), "from the inbox").unwrap();
    let ok = s.submit(ACME, ENV_WORKFLOW);
    assert_eq!(ok.status, 201, "{}", ok.body);
    let done = s.wait_run(ACME, ok.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    let out = &done["steps"][0]["output"];
    assert_eq!(out["greeting"], "hello", "{done}");
    assert_eq!(out["contents"], "from the inbox", "{done}");
}

const ENV_WORKFLOW: &str = "version: 1\nname: e\nagents:\n  env: { component: env, grants: { env: [GREETING], dirs: [ { host: inbox, guest: /data } ] } }\nsteps:\n  - { id: a, agent: env, input: { file: note.txt } }\n";

#[test]
fn the_same_idempotency_key_returns_the_first_run() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let send = || {
        Reply::from(
            agent
                .post(s.url("/v1/runs"))
                .header("Authorization", format!("Bearer {ACME}"))
                .header("Idempotency-Key", "order-17")
                .send_json(json!({ "workflow": echo_workflow("echo") }))
                .unwrap(),
        )
    };
    let first = send();
    let again = send();
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(
        s.get("/v1/runs", ACME).body["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_event_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    let gates = s.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("s1"), "").unwrap();
    let run = s.submit(ACME, LATCHED);
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();

    // First connection: up to s2's call starting (held at its gate).
    let first = read_events(&s, &id, None, |e| {
        e["type"] == "call_started" && e["step"] == "s2"
    });
    let last = first.last().unwrap()["seq"].as_i64().unwrap();
    std::fs::write(gates.join("s2"), "").unwrap();
    std::fs::write(gates.join("s3"), "").unwrap();
    // Reconnect: everything after, to the end.
    let rest = read_events(&s, &id, Some(last), |_| false);
    let seqs: Vec<i64> = first
        .iter()
        .chain(&rest)
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seqs, sorted, "every event once, in order");
    assert_eq!(rest.last().unwrap()["status"], "completed", "{rest:?}");
    // Nothing missing: the stream carried exactly the run's journal.
    let all = read_events(&s, &id, None, |_| false);
    let journal: Vec<i64> = all.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, journal);
}

#[test]
fn a_server_killed_mid_run_resumes_it_on_restart_without_running_a_committed_step_again() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(ACME, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    let gates = s.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("s1"), "").unwrap();
    let run = s.submit(ACME, LATCHED);
    let id = run.body["id"].as_str().unwrap().to_owned();
    // Hold the run in s2, after s1 committed, then kill the server.
    read_events(&s, &id, None, |e| {
        e["type"] == "call_started" && e["step"] == "s2"
    });
    s.kill9();
    std::fs::write(gates.join("s2"), "").unwrap();
    std::fs::write(gates.join("s3"), "").unwrap();
    s.spawn();
    let done = s.wait_run(ACME, &id);
    assert_eq!(done["status"], "completed", "{done}");
    let events = read_events(&s, &id, None, |_| false);
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
    assert_eq!(done["sessions"], 2, "{done}");
}

#[test]
fn sigterm_ends_event_streams_and_leaves_a_held_run_for_the_next_start() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(ACME, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    let gates = s.data("acme").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let run = s.submit(ACME, LATCHED);
    let id = run.body["id"].as_str().unwrap().to_owned();
    // A reader follows the run, held at its first gate, when SIGTERM comes.
    let base = s.base.clone();
    let reader = std::thread::spawn({
        let id = id.clone();
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
            let res = agent
                .get(format!("{base}/v1/runs/{id}/events"))
                .header("Authorization", format!("Bearer {ACME}"))
                .call()
                .unwrap();
            BufReader::new(res.into_body().into_reader())
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("data: "))
                .count()
        }
    });
    s.wait_metric(r#"corral_event_streams 1"#);
    let started = Instant::now();
    assert!(s.terminate().success());
    // The grace period is 2 s; the held call is cut off after it.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown waited on the stream"
    );
    assert!(reader.join().unwrap() > 0);
    // It gave up the run's lease on the way out, so any server may take it
    // at once.
    {
        use corral::store::{Durability, SqliteStore, Store as _};
        let store =
            SqliteStore::open(&s.dir.path().join("corral-state"), Durability::Normal).unwrap();
        let rec = store.run(&id).unwrap();
        assert!(rec.owner.is_none(), "the lease is still held: {rec:?}");
        assert_eq!(rec.status.as_str(), "running");
    }
    // The next start resumes it.
    for g in ["s1", "s2", "s3"] {
        std::fs::write(gates.join(g), "").unwrap();
    }
    s.spawn();
    assert_eq!(s.wait_run(ACME, &id)["status"], "completed");
}

#[test]
fn sigterm_stops_admitting_and_lets_a_short_run_finish() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let run = s.submit(ACME, &echo_workflow("echo"));
    let id = run.body["id"].as_str().unwrap().to_owned();
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    s.spawn();
    assert_eq!(s.wait_run(ACME, &id)["status"], "completed");
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/corral.toml");
    let c = corral_server::config::load(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(c.tenants.len(), 2);
}

#[test]
fn a_registered_workflow_runs_by_name_for_its_tenant_only() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let put = |token: &str, body: Value| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Reply::from(
            agent
                .put(s.url("/v1/workflows/hello"))
                .header("Authorization", format!("Bearer {token}"))
                .send_json(body)
                .unwrap(),
        )
    };
    // Checked when registered: globex has no `echo`.
    let refused = put(GLOBEX, json!({ "workflow": echo_workflow("echo") }));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let reg = put(ACME, json!({ "workflow": echo_workflow("echo") }));
    assert_eq!(reg.status, 201, "{}", reg.body);
    assert_eq!(
        s.get("/v1/workflows", ACME).body["workflows"][0]["name"],
        "hello"
    );
    assert_eq!(
        s.get("/v1/workflows/hello", ACME).body["workflow"],
        echo_workflow("echo")
    );
    assert_eq!(s.get("/v1/workflows/hello", GLOBEX).status, 404);

    let run = s.post("/v1/runs", ACME, &json!({ "workflow_name": "hello" }));
    assert_eq!(run.status, 201, "{}", run.body);
    let done = s.wait_run(ACME, run.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    let theirs = s.post("/v1/runs", GLOBEX, &json!({ "workflow_name": "hello" }));
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    let both = s.post(
        "/v1/runs",
        ACME,
        &json!({ "workflow_name": "hello", "workflow": "version: 1" }),
    );
    assert_eq!(both.status, 400, "{}", both.body);
}

#[test]
fn corral_token_prints_a_token_and_the_hash_the_config_keeps() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap();
    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("hash:  "))
        .unwrap();
    assert!(token.starts_with("crl_") && token.len() == 68, "{token}");
    assert_eq!(printed, hash(token));

    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["token", "--hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"acme-token\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash(ACME));
}

#[test]
fn metrics_follow_call_admission_waits_and_breakers_per_agent() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "flaky", &bytes(support::agents::FLAKY))
            .status,
        201
    );
    std::fs::create_dir_all(s.data("acme").join("state")).unwrap();
    // Two permanent failures open the breaker; the run stops with it open.
    let wf = "version: 1\nname: tripping\nagents:\n  flaky:\n    component: flaky\n    grants: { dirs: [{ host: state, guest: /state, writable: true }] }\n    breaker: { failure_threshold: 2, cooldown: 1h }\nsteps:\n  - { id: f1, agent: flaky, on_error: continue, input: { key: bad, fail_first: 99, class: permanent } }\n  - { id: f2, agent: flaky, on_error: continue, depends_on: [f1], input: { key: bad, fail_first: 99, class: permanent } }\n";
    let run = s.submit(ACME, wf);
    assert_eq!(run.status, 201, "{}", run.body);
    let done = s.wait_run(ACME, run.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "degraded", "{done}");
    s.wait_metric(r#"corral_breaker_changes_total{tenant="acme",agent="flaky",to="open"} 1"#);
    // Opened during the run, released when the run stopped.
    s.wait_metric(r#"corral_breakers_open{tenant="acme",agent="flaky"} 0"#);
    s.wait_metric(r#"corral_call_admission_wait_seconds_count{tenant="acme"} 2"#);
}

/// Artifacts belong to a run, so to its tenant: another tenant's run cannot
/// read one even by its digest, nor can the same tenant's next run; and the
/// service refuses artifact params (it takes no files) naming the param.
#[test]
fn a_tenants_artifacts_stay_in_the_run_that_holds_them() {
    let s = Serve::start();
    for t in [ACME, GLOBEX] {
        assert_eq!(
            s.upload(t, "bulk", &bytes(support::agents::BULK)).status,
            201
        );
    }
    let make = "version: 1\nname: make\nagents:\n  bulk: { component: bulk }\nsteps:\n  - { id: make, agent: bulk, input: { make: { size: 5000, seed: 3 } } }\n";
    let run = s.submit(ACME, make);
    assert_eq!(run.status, 201, "{}", run.body);
    let done = s.wait_run(ACME, run.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    let made = done["steps"][0]["output"]["artifact"].clone();
    assert_eq!(made["size"], 5000, "{done}");

    let read = format!(
        "version: 1\nname: read\nagents:\n  bulk: {{ component: bulk }}\nsteps:\n  - {{ id: read, agent: bulk, input: {{ read: {made} }} }}\n"
    );
    for t in [GLOBEX, ACME] {
        let run = s.submit(t, &read);
        assert_eq!(run.status, 201, "{}", run.body);
        let done = s.wait_run(t, run.body["id"].as_str().unwrap());
        assert_eq!(done["status"], "failed", "{done}");
        let error = done["steps"][0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(made["$artifact"].as_str().unwrap()),
            "{done}"
        );
    }

    let param = "version: 1\nname: p\nparams:\n  doc: { type: artifact }\nagents:\n  bulk: { component: bulk }\nsteps:\n  - { id: read, agent: bulk, input: { read: $params.doc } }\n";
    let r = s.post(
        "/v1/runs",
        ACME,
        &json!({ "workflow": param, "params": { "doc": made } }),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.to_string().contains("param `doc` is an artifact"),
        "{}",
        r.body
    );
}
