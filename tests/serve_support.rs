//! What the `corral serve` tests share: a server process with its own config, state and tenant data, an HTTP client for it, and the workflows and readers the tests use.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ACME: &str = "acme-token";

pub const GLOBEX: &str = "globex-token";

pub const TINY: &str = "tiny-token";

pub const METERED: &str = "metered-token";

/// A server process with its own config, state and tenant data.
pub struct Serve {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub base: String,
    /// A PostgreSQL database the server journals in (`--db`).
    pub db: Option<String>,
    /// Where it runs: its own `dir`, or another server's (a sibling).
    workdir: PathBuf,
    /// Arguments after `serve --config corral.toml --listen ...`.
    pub args: Vec<String>,
}

impl Serve {
    pub fn start() -> Self {
        Self::start_with(&config())
    }

    /// A server with `config` as its `corral.toml`.
    pub fn start_with(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corral.toml"), config).unwrap();
        let workdir = dir.path().to_owned();
        let mut s = Self {
            dir,
            child: None,
            base: String::new(),
            db: None,
            workdir,
            args: Vec::new(),
        };
        s.spawn();
        s
    }

    /// A server in `dir`, not started yet: write its files, then `spawn`.
    pub fn unstarted(dir: tempfile::TempDir) -> Self {
        let workdir = dir.path().to_owned();
        Self {
            dir,
            child: None,
            base: String::new(),
            db: None,
            workdir,
            args: Vec::new(),
        }
    }

    /// A server on the PostgreSQL database at `db`.
    pub fn start_on(db: &str, config: &str) -> Self {
        Self::start_on_with(db, config, &[])
    }

    /// [`Self::start_on`] with more `serve` arguments (`--submit-only`).
    pub fn start_on_with(db: &str, config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corral.toml"), config).unwrap();
        let workdir = dir.path().to_owned();
        let mut s = Self {
            dir,
            child: None,
            base: String::new(),
            db: Some(db.to_owned()),
            workdir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// A second server process beside this one: the same config, tenant
    /// data and database, its own port.
    pub fn sibling(&self) -> Self {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.sibling_with(&args)
    }

    /// [`Self::sibling`] with other `serve` arguments.
    pub fn sibling_with(&self, args: &[&str]) -> Self {
        let mut s = Self {
            dir: tempfile::tempdir().unwrap(),
            child: None,
            base: String::new(),
            db: self.db.clone(),
            workdir: self.workdir.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// A `corral worker` beside this server: the same config, tenant data
    /// and database.
    pub fn worker(&self, max_runs: u32) -> Worker {
        let mut w = Worker {
            child: None,
            workdir: self.workdir.clone(),
            db: self.db.clone(),
            max_runs,
        };
        w.spawn();
        w
    }

    /// Starts (or restarts) the process on a free port; waits for its
    /// "listening on" line.
    pub fn spawn(&mut self) {
        let mut args = vec![
            "serve",
            "--config",
            "corral.toml",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend(self.args.iter().map(String::as_str));
        let (child, line) = launch(&args, &self.workdir, self.db.as_deref());
        let addr = line
            .trim()
            .strip_prefix("corral serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        self.base = addr.to_owned();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn data(&self, tenant: &str) -> PathBuf {
        self.workdir.join("tenants").join(tenant)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
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

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(token), Some(body))
    }

    pub fn upload(&self, token: &str, name: &str, bytes: &[u8]) -> Reply {
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

    pub fn submit(&self, token: &str, workflow: &str) -> Reply {
        self.post("/v1/runs", token, &json!({ "workflow": workflow }))
    }

    /// Polls `/metrics` until it has `line` (bounded).
    pub fn wait_metric(&self, line: &str) {
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
    pub fn wait_run(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/v1/runs/{id}"), token);
            assert_eq!(r.status, 200, "{}", r.body);
            if !matches!(r.body["status"].as_str(), Some("running" | "queued")) {
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

/// Starts `corral <args>` in `workdir` as every corral process of a test
/// runs: the shared compile cache, quiet logs, the database if any, and a
/// `models.toml` beside the config as its gateway. Returns the child and
/// its first line of output, which says it is ready.
fn launch(args: &[&str], workdir: &Path, db: Option<&str>) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    if workdir.join("models.toml").is_file() {
        cmd.args(["--models", "models.toml"]);
    }
    cmd.args(args)
        .current_dir(workdir)
        .env(
            "CORRAL_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache"),
        )
        .env("CORRAL_LOG", "warn")
        .env_remove("CORRAL_DATABASE_URL");
    if let Some(db) = db {
        cmd.env("CORRAL_DATABASE_URL", db);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// A `corral worker` process: drives runs claimed from the database.
pub struct Worker {
    pub child: Option<Child>,
    workdir: PathBuf,
    db: Option<String>,
    max_runs: u32,
}

impl Worker {
    /// Starts (or restarts) the process; waits for its first line.
    pub fn spawn(&mut self) {
        let max_runs = self.max_runs.to_string();
        let args = ["worker", "--config", "corral.toml", "--max-runs", &max_runs];
        let (child, line) = launch(&args, &self.workdir, self.db.as_deref());
        assert!(
            line.starts_with("corral worker: claiming runs"),
            "unexpected first line: {line:?}"
        );
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn with_auth<B>(
    req: ureq::RequestBuilder<B>,
    auth: &Option<String>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Value,
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

pub fn hash(token: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

pub fn config() -> String {
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

pub fn echo_workflow(agent: &str) -> String {
    format!(
        "version: 1\nname: hello\nagents:\n  echo: {{ component: {agent} }}\nsteps:\n  - {{ id: a, agent: echo, input: {{ text: hi, tags: [x] }} }}\n  - {{ id: b, agent: echo, input: {{ text: $steps.a.output.text, tags: $steps.a.output.tags }} }}\noutputs:\n  text: $steps.b.output.text\n"
    )
}

pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

pub fn problem_type(r: &Reply) -> &str {
    r.body["type"].as_str().unwrap_or("")
}

pub const LATCHED: &str = "version: 1\nname: latched\nagents:\n  latch: { component: latch, grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { timeout: 30s } }\nsteps:\n  - { id: s1, agent: latch, input: { text: go, mark: '-1', gate: s1 } }\n  - { id: s2, agent: latch, input: { text: $steps.s1.output.text, mark: '-2', gate: s2 } }\n  - { id: s3, agent: latch, input: { text: $steps.s2.output.text, mark: '-3', gate: s3 } }\noutputs:\n  text: $steps.s3.output.text\n";

/// The events a run's journal holds now (the stream is read briefly).
pub fn events_so_far(s: &Serve, token: &str, id: &str) -> Vec<Value> {
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
pub fn read_events(
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

/// A chain of `n` echo steps (about 12K fuel each).
pub fn echo_chain(n: usize) -> String {
    let mut s = "version: 1\nname: chain\nagents:\n  echo: { component: echo }\nsteps:\n  - { id: s0, agent: echo, input: { text: hi } }\n".to_string();
    for i in 1..n {
        s.push_str(&format!(
            "  - {{ id: s{i}, agent: echo, input: {{ text: $steps.s{}.output.text }} }}\n",
            i - 1
        ));
    }
    s
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
