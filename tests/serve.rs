//! `corral serve` as a tenant meets it: a real server process on loopback, real HTTP, two tenants who must never see or spend each other's things.

#[path = "support.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ACME: &str = "acme-token";
const GLOBEX: &str = "globex-token";
const TINY: &str = "tiny-token";
const METERED: &str = "metered-token";

/// A server process with its own config, state and tenant data.
struct Serve {
    dir: tempfile::TempDir,
    child: Option<Child>,
    base: String,
}

impl Serve {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corral.toml"), config()).unwrap();
        let mut s = Self {
            dir,
            child: None,
            base: String::new(),
        };
        s.spawn();
        s
    }

    /// Starts (or restarts) the process on a free port; waits for its
    /// "listening on" line.
    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args([
                "serve",
                "--config",
                "corral.toml",
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(self.dir.path())
            .env(
                "CORRAL_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache"),
            )
            .env("CORRAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("corral serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        self.base = addr.to_owned();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the process to exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    fn data(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("tenants").join(tenant)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let res = match (method, body) {
            ("GET", _) => with_auth(agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(agent.delete(&url), &auth).call(),
            ("POST", Some(b)) => with_auth(agent.post(&url), &auth).send_json(b),
            ("POST", None) => with_auth(agent.post(&url), &auth).send_empty(),
            _ => panic!("{method}"),
        };
        Reply::from(res.unwrap())
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(token), Some(body))
    }

    fn upload(&self, token: &str, name: &str, bytes: &[u8]) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let res = agent
            .put(self.url(&format!("/v1/agents/{name}")))
            .header("Authorization", format!("Bearer {token}"))
            .send(bytes)
            .unwrap();
        Reply::from(res)
    }

    fn submit(&self, token: &str, workflow: &str) -> Reply {
        self.post("/v1/runs", token, &json!({ "workflow": workflow }))
    }

    /// Polls `/metrics` until it has `line` (bounded).
    fn wait_metric(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.call("GET", "/metrics", None, None).body;
            if m.as_str().is_some_and(|t| t.contains(line)) {
                return;
            }
            assert!(Instant::now() < deadline, "no `{line}` in {m}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls a run until it stops running (bounded).
    fn wait_run(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/v1/runs/{id}"), token);
            assert_eq!(r.status, 200, "{}", r.body);
            if !matches!(r.body["status"].as_str(), Some("running")) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} still running: {}",
                r.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

struct Reply {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

impl From<ureq::http::Response<ureq::Body>> for Reply {
    fn from(mut res: ureq::http::Response<ureq::Body>) -> Self {
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let text = res.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status: res.status().as_u16(),
            content_type,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }
}

fn hash(token: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

fn config() -> String {
    format!(
        r#"
[server]
shutdown_grace = "2s"

[[tenant]]
id = "acme"
tokens = ["{}"]
secrets = {{ GREETING = "hello" }}

[[tenant]]
id = "globex"
tokens = ["{}"]

[[tenant]]
id = "tiny"
tokens = ["{}"]
[tenant.quota]
runs_per_minute = 2
concurrent_runs = 1
memory_per_call = "64MiB"
event_streams = 2

[[tenant]]
id = "metered"
tokens = ["{}"]
[tenant.quota]
fuel_per_window = "100K"
window = "1h"
fuel_per_call = "30K"
"#,
        hash(ACME),
        hash(GLOBEX),
        hash(TINY),
        hash(METERED)
    )
}

fn echo_workflow(agent: &str) -> String {
    format!(
        "version: 1\nname: hello\nagents:\n  echo: {{ component: {agent} }}\nsteps:\n  - {{ id: a, agent: echo, input: {{ text: hi, tags: [x] }} }}\n  - {{ id: b, agent: echo, input: {{ text: $steps.a.output.text, tags: $steps.a.output.tags }} }}\noutputs:\n  text: $steps.b.output.text\n"
    )
}

fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn problem_type(r: &Reply) -> &str {
    r.body["type"].as_str().unwrap_or("")
}

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
fn spent_quotas_answer_429_with_the_quota_and_when_it_resets() {
    let s = Serve::start();
    assert_eq!(
        s.upload(TINY, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s.submit(TINY, &echo_workflow("echo"));
        assert!(matches!(r.status, 201 | 429), "{}", r.body);
        if r.status == 201 {
            ids.push(r.body["id"].as_str().unwrap().to_owned());
            s.wait_run(TINY, ids.last().unwrap());
        } else {
            // Only the concurrent-runs quota may refuse these two.
            assert_eq!(r.body["quota"]["quota"], "concurrent_runs", "{}", r.body);
        }
    }
    let third = s.submit(TINY, &echo_workflow("echo"));
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(problem_type(&third).ends_with("/quota-exceeded"));
    assert_eq!(third.body["quota"]["quota"], "runs_per_minute");
    assert_eq!(third.body["quota"]["limit"], 2);
    let after: u64 = third.retry_after.as_deref().unwrap().parse().unwrap();
    let metrics = s.call("GET", "/metrics", None, None).body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"corral_quota_refusals_total{tenant="tiny",quota="runs_per_minute"} 1"#),
        "{metrics}"
    );
    assert!((1..=60).contains(&after), "{after}");
    // Another tenant is not affected.
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    assert_eq!(s.submit(ACME, &echo_workflow("echo")).status, 201);
}

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

const LATCHED: &str = "version: 1\nname: latched\nagents:\n  latch: { component: latch, grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { timeout: 30s } }\nsteps:\n  - { id: s1, agent: latch, input: { text: go, mark: '-1', gate: s1 } }\n  - { id: s2, agent: latch, input: { text: $steps.s1.output.text, mark: '-2', gate: s2 } }\n  - { id: s3, agent: latch, input: { text: $steps.s2.output.text, mark: '-3', gate: s3 } }\noutputs:\n  text: $steps.s3.output.text\n";

/// The events a run's journal holds now (the stream is read briefly).
fn events_so_far(s: &Serve, token: &str, id: &str) -> Vec<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(300)))
        .build()
        .into();
    let res = agent
        .get(s.url(&format!("/v1/runs/{id}/events")))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    BufReader::new(res.into_body().into_reader())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(l.strip_prefix("data: ")?).ok())
        .collect()
}

/// Reads SSE events from `after` until `stop` says so or the stream ends.
fn read_events(
    s: &Serve,
    id: &str,
    last_event_id: Option<i64>,
    mut stop: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent
        .get(s.url(&format!("/v1/runs/{id}/events")))
        .header("Authorization", format!("Bearer {ACME}"));
    if let Some(l) = last_event_id {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let res = req.call().unwrap();
    assert_eq!(res.status(), 200);
    let mut out = Vec::new();
    let reader = BufReader::new(res.into_body().into_reader());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            let done = stop(&v);
            out.push(v);
            if done {
                break;
            }
        }
    }
    out
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

/// A chain of `n` echo steps (about 12K fuel each).
fn echo_chain(n: usize) -> String {
    let mut s = "version: 1\nname: chain\nagents:\n  echo: { component: echo }\nsteps:\n  - { id: s0, agent: echo, input: { text: hi } }\n".to_string();
    for i in 1..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: echo, input: {{ text: $steps.s{}.output.text }} }}\n",
            i - 1
        ));
    }
    s
}

#[test]
fn the_fuel_quota_holds_across_concurrent_runs_and_a_restart() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(METERED, "echo", &bytes(support::agents::ECHO))
            .status,
        201
    );
    // Two runs that would each need about 120K, against 100K per hour.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let r = s.submit(METERED, &echo_chain(10));
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let runs: Vec<Value> = ids.iter().map(|id| s.wait_run(METERED, id)).collect();
    let used: u64 = runs.iter().map(|r| r["fuel_used"].as_u64().unwrap()).sum();
    assert!(used <= 100_000, "the tenant's runs used {used} of 100K");
    assert!(used > 80_000, "the window was spent, not left idle: {used}");
    assert!(
        runs.iter().any(|r| r["status"] == "fuel_exhausted"),
        "{runs:?}"
    );
    let cut = runs
        .iter()
        .find(|r| r["status"] == "fuel_exhausted")
        .unwrap();
    assert!(
        cut["error"].as_str().unwrap().contains("fuel_per_window")
            || cut.to_string().contains("fuel_per_window"),
        "{cut}"
    );

    // Spent: a new run is refused at the door, with when it resets...
    let refused = s.submit(METERED, &echo_chain(1));
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["quota"]["quota"], "fuel_per_window");
    assert_eq!(refused.body["quota"]["limit"], 100_000);
    assert!(refused.retry_after.is_some());
    // ...and still after a restart: the ledger is in the store.
    s.kill9();
    s.spawn();
    let again = s.submit(METERED, &echo_chain(1));
    assert_eq!(again.status, 429, "{}", again.body);
    // Other tenants are untouched.
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    assert_eq!(s.submit(ACME, &echo_chain(3)).status, 201);
}

#[test]
fn a_tenant_flooding_the_server_does_not_hold_back_another_tenants_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Serve {
        dir,
        child: None,
        base: String::new(),
    };
    // Two call slots in all, so the flood queues.
    std::fs::write(
        s.dir.path().join("corral.toml"),
        config().replace("[server]\n", "[server]\ncall_slots = 2\n"),
    )
    .unwrap();
    s.spawn();
    assert_eq!(
        s.upload(GLOBEX, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let gates = s.data("globex").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    // Globex floods: ten runs whose one call each waits at its own gate.
    let flood: Vec<String> = (0..10)
        .map(|i| {
            let wf = format!(
                "version: 1\nname: flood\nagents:\n  latch: {{ component: latch, grants: {{ dirs: [ {{ host: gates, guest: /gates }} ] }}, budget: {{ timeout: 30s }} }}\nsteps:\n  - {{ id: a, agent: latch, input: {{ text: x, gate: f{i} }} }}\n"
            );
            let r = s.submit(GLOBEX, &wf);
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Two hold the slots; eight wait behind them.
    s.wait_metric(r#"corral_calls_waiting{tenant="globex"} 8"#);
    let mine = s.submit(ACME, &echo_chain(1));
    assert_eq!(mine.status, 201, "{}", mine.body);
    // Free the two slots by letting the running calls finish. Served in
    // turn, globex gets the first slot and acme the second; first come,
    // first served would give both to globex's queue, and acme's run would
    // wait for gates this test never opens.
    let running: Vec<usize> = (0..flood.len())
        .filter(|&i| {
            events_so_far(&s, GLOBEX, &flood[i])
                .iter()
                .any(|e| e["type"] == "call_started")
        })
        .collect();
    assert_eq!(running.len(), 2, "two call slots, two calls running");
    for i in running {
        std::fs::write(gates.join(format!("f{i}")), "").unwrap();
    }
    let done = s.wait_run(ACME, mine.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    // Globex's queue is still there behind it.
    let finished = flood
        .iter()
        .filter(|id| s.get(&format!("/v1/runs/{id}"), GLOBEX).body["status"] == "completed")
        .count();
    assert!(finished <= 3, "{finished} of globex's runs finished first");
    for i in 0..10 {
        std::fs::write(gates.join(format!("f{i}")), "").unwrap();
    }
    for id in &flood {
        assert_eq!(s.wait_run(GLOBEX, id)["status"], "completed");
    }
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

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_thousand_runs_from_fifty_clients_across_five_tenants_all_complete() {
    let runs: usize = std::env::var("CORRAL_LOAD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<String> = (0..5).map(|i| format!("load{i}")).collect();
    let mut toml = String::new();
    for t in &tenants {
        toml.push_str(&format!(
            "[[tenant]]\nid = \"{t}\"\ntokens = [\"{}\"]\n[tenant.quota]\nruns_per_minute = 100000\nconcurrent_runs = 1000\nfuel_per_window = \"1000G\"\n",
            hash(t)
        ));
    }
    std::fs::write(dir.path().join("corral.toml"), toml).unwrap();
    let mut s = Serve {
        dir,
        child: None,
        base: String::new(),
    };
    s.spawn();
    let pid = s.child.as_ref().unwrap().id();
    for t in &tenants {
        assert_eq!(
            s.upload(t, "echo", &bytes(support::agents::ECHO)).status,
            201
        );
    }
    // Warm up (compile cache, first runs), then take the baseline.
    for t in &tenants {
        let r = s.submit(t, &echo_chain(10));
        s.wait_run(t, r.body["id"].as_str().unwrap());
    }
    let baseline = rss(pid);

    let next = std::sync::atomic::AtomicUsize::new(0);
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= runs {
                        break;
                    }
                    let t = &tenants[n % tenants.len()];
                    let r = s.submit(t, &echo_chain(10));
                    assert_eq!(r.status, 201, "run {n}: {}", r.body);
                    ids.lock()
                        .unwrap()
                        .push((t.clone(), r.body["id"].as_str().unwrap().to_owned()));
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), runs);
    for (t, id) in &ids {
        let done = s.wait_run(t, id);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["progress"]["finished"], 10);
    }
    let after = rss(pid);
    eprintln!(
        "{runs} runs: resident memory {} MiB before, {} MiB after",
        baseline >> 20,
        after >> 20
    );
    assert!(
        after < baseline + (256 << 20),
        "resident memory grew from {} MiB to {} MiB",
        baseline >> 20,
        after >> 20
    );
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
fn a_tenant_holds_at_most_its_share_of_event_streams() {
    let s = Serve::start();
    assert_eq!(
        s.upload(TINY, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    let gates = s.data("tiny").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let run = s.submit(TINY, &LATCHED.replace("timeout: 30s", "timeout: 20s"));
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let open = || {
        agent
            .get(s.url(&format!("/v1/runs/{id}/events")))
            .header("Authorization", format!("Bearer {TINY}"))
            .call()
            .unwrap()
    };
    // The run is held at its first gate: its streams stay open.
    let (a, b) = (open(), open());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let third = Reply::from(open());
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.body["quota"]["quota"], "event_streams");
    // Closing one frees its place.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open();
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(b);
    for g in ["s1", "s2", "s3"] {
        std::fs::write(gates.join(g), "").unwrap();
    }
    assert_eq!(s.wait_run(TINY, &id)["status"], "completed");
}
