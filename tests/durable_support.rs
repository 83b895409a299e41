//! What the durable-run tests share: a scratch state directory driving the `corral` binary, journal readers, and the workflows several tests run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, OnceLock};

use corral::store::{Durability, JournalEntry, PgStore, SqliteStore, Store};
use serde_json::Value;

use crate::support;
use crate::support::agents;

/// A scratch directory with its own state store (SQLite in the directory,
/// or a PostgreSQL database); the compile cache is shared.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// A PostgreSQL database every command uses instead of the directory.
    pub db: Option<String>,
    pg: OnceLock<Arc<PgStore>>,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            db: None,
            pg: OnceLock::new(),
        }
    }

    /// An environment whose commands journal in the database at `url`.
    pub fn on_postgres(url: String) -> Self {
        Self {
            db: Some(url),
            ..Self::new()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
        c.args(args)
            .current_dir(self.path())
            .env("CORRAL_STATE_DIR", self.state())
            .env("CORRAL_ALLOW_PATHS", support::wasm_agents_dir())
            .env(
                "CORRAL_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache"),
            )
            .env_remove("CORRAL_LOG")
            .env_remove("CORRAL_DATABASE_URL");
        if let Some(url) = &self.db {
            c.env("CORRAL_DATABASE_URL", url);
        }
        c
    }

    pub fn corral(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn workflow(&self, name: &str, yaml: &str) -> String {
        let text = yaml
            .replace("@RELAY@", agents::RELAY)
            .replace("@LATCH@", agents::LATCH)
            .replace("@HOSTILE@", agents::HOSTILE)
            .replace("@MERGE@", agents::MERGE)
            .replace("@BULK@", agents::BULK);
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match &self.db {
            Some(url) => self
                .pg
                .get_or_init(|| Arc::new(PgStore::connect(url).unwrap()))
                .clone(),
            None => Arc::new(SqliteStore::open(&self.state(), Durability::Normal).unwrap()),
        }
    }

    pub fn journal(&self, run: &str) -> Vec<JournalEntry> {
        self.store().journal(run, 0, 100_000).unwrap()
    }

    /// Waits (bounded) until the journal satisfies `pred`.
    pub fn wait_for(&self, run: &str, what: &str, pred: impl Fn(&[JournalEntry]) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.db.is_some() || self.state().join("corral.db").exists() {
                let j = self.store().journal(run, 0, 100_000).unwrap_or_default();
                if pred(&j) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}");
    }

    /// The report of a `--json` run: the last line.
    pub fn report(&self, out: &Output) -> Value {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(v["type"], "report", "{v}");
        v["data"].clone()
    }
}

pub fn count(j: &[JournalEntry], kind: &str, step: &str) -> usize {
    j.iter()
        .filter(|e| e.kind == kind && e.step.as_deref() == Some(step))
        .count()
}

pub fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Six slow steps: a chain, with a parallel pair in the middle.
pub const SLOW: &str = r#"
version: 1
name: slow
agents:
  relay: { component: "@RELAY@" }
params:
  text: { type: string, default: "go" }
budget: { max_concurrency: 2 }
steps:
  - { id: s1, agent: relay, input: { text: $params.text, mark: "-1", ms: 300 } }
  - { id: s2, agent: relay, input: { text: $steps.s1.output.text, hops: $steps.s1.output.hops, mark: "-2", ms: 300 } }
  - { id: s3a, agent: relay, input: { text: $steps.s2.output.text, hops: $steps.s2.output.hops, mark: "-3a", ms: 400 } }
  - { id: s3b, agent: relay, input: { text: $steps.s2.output.text, hops: $steps.s2.output.hops, mark: "-3b", ms: 250 } }
  - { id: s4, agent: relay, input: { text: $steps.s3a.output.text, hops: $steps.s3b.output.hops, mark: "-4", ms: 300 } }
  - { id: s5, agent: relay, input: { text: $steps.s4.output.text, hops: $steps.s4.output.hops, mark: "-5", ms: 300 } }
outputs:
  text: $steps.s5.output.text
  hops: $steps.s5.output.hops
"#;

pub const SLOW_STEPS: &[&str] = &["s1", "s2", "s3a", "s3b", "s4", "s5"];

/// Six steps like `SLOW`, each held at its gate (a file in `gates/`) until the test opens it.
pub const LATCHED: &str = r#"
version: 1
name: latched
agents:
  latch: { component: "@LATCH@", grants: { dirs: [ { host: gates, guest: /gates } ] }, budget: { timeout: 60s } }
params:
  text: { type: string, default: "go" }
budget: { max_concurrency: 2 }
steps:
  - { id: s1, agent: latch, input: { text: $params.text, mark: "-1", gate: s1 } }
  - { id: s2, agent: latch, input: { text: $steps.s1.output.text, hops: $steps.s1.output.hops, mark: "-2", gate: s2 } }
  - { id: s3a, agent: latch, input: { text: $steps.s2.output.text, hops: $steps.s2.output.hops, mark: "-3a", gate: s3a } }
  - { id: s3b, agent: latch, input: { text: $steps.s2.output.text, hops: $steps.s2.output.hops, mark: "-3b", gate: s3b } }
  - { id: s4, agent: latch, input: { text: $steps.s3a.output.text, hops: $steps.s3b.output.hops, mark: "-4", gate: s4 } }
  - { id: s5, agent: latch, input: { text: $steps.s4.output.text, hops: $steps.s4.output.hops, mark: "-5", gate: s5 } }
outputs:
  text: $steps.s5.output.text
  hops: $steps.s5.output.hops
"#;

pub fn resumes(j: &[JournalEntry]) -> usize {
    j.iter().filter(|e| e.kind == "run_resumed").count()
}

/// Entries of `kind` for `step` since the run's last session began.
pub fn since_last_session(j: &[JournalEntry], kind: &str, step: &str) -> usize {
    let from = j
        .iter()
        .rposition(|e| e.kind == "run_resumed" || e.kind == "run_started")
        .unwrap_or(0);
    count(&j[from..], kind, step)
}

impl Env {
    /// Opens the gates of the latch agent's `steps` (`gates/` beside the workflows).
    pub fn open_gates(&self, steps: &[&str]) {
        let dir = self.path().join("gates");
        std::fs::create_dir_all(&dir).unwrap();
        for s in steps {
            std::fs::write(dir.join(s), "").unwrap();
        }
    }
}

/// Relay, an approval, then relay again: the workflow the approval tests and others share.
pub const GATED: &str = r#"
version: 1
name: gated
agents:
  relay: { component: "@RELAY@" }
steps:
  - { id: draft, agent: relay, input: { text: "draft" } }
  - id: sign_off
    approval:
      prompt: Publish the draft?
      schema:
        type: object
        properties: { approver: { type: string, minLength: 1 } }
        required: [approver]
        additionalProperties: false
    input: { draft: $steps.draft.output.text }
  - { id: publish, agent: relay, input: { text: $steps.sign_off.output.approver, mark: " approved" } }
outputs:
  published: $steps.publish.output.text
"#;
