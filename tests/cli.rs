//! The `corral` binary: documented exit codes, `--json` output, and readable errors.

#[path = "support.rs"]
mod support;

use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use support::agents;

fn cache_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn corral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_CACHE_DIR", cache_dir())
        .env("CORRAL_STATE_DIR", cache_dir().join("state"))
        .env("CORRAL_ALLOW_PATHS", support::wasm_agents_dir())
        .env_remove("CORRAL_LOG")
        .output()
        .unwrap()
}

fn json_call(agent: &str, input: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["call", agent, "--input", input, "--json"];
    args.extend_from_slice(extra);
    let out = corral(&args);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap(), doc)
}

#[test]
fn success_prints_the_packet_and_receipt() {
    let (code, doc) = json_call(agents::KEYWORDS, r#"{"text": "alpha beta alpha"}"#, &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["output"]["payload"]["keywords"][0]["word"], "alpha");
    assert_eq!(doc["receipt"]["agent"], "keywords");
    assert!(doc["receipt"]["fuel_used"].as_u64().unwrap() > 0);

    let out = corral(&[
        "call",
        agents::KEYWORDS,
        "--input",
        r#"{"text": "alpha beta alpha"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let packet: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(packet["payload"]["word_count"], 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("receipt for `keywords`") && stderr.contains("fuel"),
        "{stderr}"
    );
}

#[test]
fn input_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.json");
    std::fs::write(&file, r#"{"text": "from a file"}"#).unwrap();
    let (code, doc) = json_call(agents::ECHO, &format!("@{}", file.display()), &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["output"]["payload"]["text"], "from a file");
}

#[test]
fn each_failure_kind_has_its_exit_code() {
    let (code, doc) = json_call(agents::HOSTILE, r#"{"action": "error"}"#, &[]);
    assert_eq!((code, doc["error"]["kind"].as_str()), (1, Some("agent")));

    let (code, doc) = json_call(agents::HOSTILE, r#"{"action": "loop"}"#, &["--fuel", "2M"]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("fuel_exhausted"))
    );
    assert_eq!(doc["error"]["limit"], 2_000_000);
    assert_eq!(doc["receipt"]["fuel_used"], 2_000_000);
    assert!(doc["error"]["message"].as_str().unwrap().contains("--fuel"));

    let (code, doc) = json_call(
        agents::HOSTILE,
        r#"{"action": "alloc"}"#,
        &["--memory", "16MiB"],
    );
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("memory_limit"))
    );

    let (code, doc) = json_call(agents::KEYWORDS, r#"{"text": 1}"#, &[]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (4, Some("invalid_input"))
    );
    assert_eq!(doc["error"]["problem"]["pointer"], "/text");

    let (code, doc) = json_call(agents::KEYWORDS, r#"{"text": "#, &[]);
    assert_eq!(
        (code, doc["error"]["problem"]["problem"].as_str()),
        (4, Some("json"))
    );

    let (code, doc) = json_call(agents::ENV_READER, r#"{"file": "x"}"#, &[]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (5, Some("policy_denied"))
    );

    let (code, doc) = json_call(agents::HOSTILE, r#"{"action": "panic"}"#, &[]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (6, Some("guest_trap"))
    );

    let (code, doc) = json_call(agents::NOT_AN_AGENT, "{}", &[]);
    assert_eq!((code, doc["error"]["kind"].as_str()), (7, Some("load")));

    // Usage errors come from clap: a missing --input.
    let out = corral(&["call", agents::ECHO]);
    assert_eq!(out.status.code(), Some(2));
    let out = corral(&["call", agents::ECHO, "--input", "@/no/such/file.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.json"));
}

#[test]
fn grants_on_the_command_line_open_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.txt"), "note").unwrap();
    let allow = format!("{}:/data:ro", dir.path().display());
    let (code, doc) = json_call(
        agents::ENV_READER,
        r#"{"file": "n.txt"}"#,
        &["--allow-env", "GREETING=hi", "--allow-dir", &allow],
    );
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        doc["output"]["payload"],
        serde_json::json!({"greeting": "hi", "contents": "note"})
    );
}

#[test]
fn errors_are_readable_with_their_cause() {
    let out = corral(&["call", agents::NOT_AN_AGENT, "--input", "{}"]);
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not implement a `corral:agent/agent` world"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap();
    let out = corral(&["inspect", bogus.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("core WebAssembly module, not a component")
    );
}

#[test]
fn inspect_shows_world_schemas_capabilities_and_imports() {
    let out = corral(&["inspect", agents::ENV_READER, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["world"], "corral:agent/agent");
    // The Rust SDK speaks contract 0.2.0.
    assert_eq!(doc["world_version"], "0.2.0");
    assert_eq!(doc["name"], "env-reader");
    assert_eq!(
        doc["capabilities"][0],
        serde_json::json!({"kind": "env", "name": "GREETING"})
    );
    let imports: Vec<&str> = doc["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports.iter().any(|i| i.starts_with("corral:agent/")),
        "{imports:?}"
    );
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:filesystem/")),
        "{imports:?}"
    );
    assert_eq!(doc["input_schema"]["required"], serde_json::json!(["file"]));

    let out = corral(&["inspect", agents::KEYWORDS]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("corral:agent/agent@0.2.0") && text.contains("input schema"),
        "{text}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = corral(&["call", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3  a budget was breached",
        "5  a requested capability",
        "--allow-dir",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn a_missing_granted_directory_is_a_usage_error() {
    let out = corral(&[
        "call",
        agents::ECHO,
        "--input",
        "{}",
        "--allow-dir",
        "/no/such/dir:/data",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

fn example(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn validate_prints_the_plan_or_located_errors() {
    let out = corral(&["validate", &example("pipeline.yaml"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(
        doc["plan"]["waves"],
        serde_json::json!([["keywords", "summary"], ["review"]])
    );
    assert!(doc["plan"]["fuel"]["worst_case"].as_u64().unwrap() > 0);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let agent = agents::ECHO;
    std::fs::write(
        &bad,
        format!("version: 1\nname: bad\nagents:\n  echo: {{ component: '{agent}' }}\nsteps:\n  - {{ id: a, agent: echo, input: {{ text: $steps.b.output.text }} }}\n  - {{ id: b, agent: echo, input: {{ text: $steps.a.output.text }} }}\n"),
    )
    .unwrap();
    let out = corral(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(9));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:6: steps[0]: steps form a cycle: a → b → a"),
        "{stderr}"
    );
}

#[test]
fn run_streams_json_events_and_ends_with_the_report() {
    let out = corral(&["run", &example("pipeline.yaml"), "--json", "--run-id", "r1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines[0]["type"], "run_started");
    assert_eq!(lines[0]["data"]["run_id"], "r1");
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    for k in [
        "step_started",
        "call_started",
        "call_finished",
        "step_completed",
        "run_finished",
    ] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    let report = lines.last().unwrap();
    assert_eq!(report["type"], "report");
    assert_eq!(report["data"]["status"], "completed");
    assert_eq!(report["data"]["counts"]["completed"], 3);
    assert!(
        report["data"]["summary"]
            .as_str()
            .unwrap()
            .contains("3 of 3 steps completed")
    );
}

#[test]
fn run_exit_codes_follow_the_outcome() {
    // A required param left out.
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.yaml");
    let hostile = agents::HOSTILE;
    std::fs::write(
        &wf,
        format!("version: 1\nname: wf\nagents:\n  h: {{ component: '{hostile}' }}\nparams:\n  action: {{ type: string }}\nsteps:\n  - {{ id: a, agent: h, input: {{ action: $params.action }} }}\n"),
    )
    .unwrap();
    let wf = wf.to_str().unwrap();
    let out = corral(&["run", wf]);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("param `action` (string) is required"));
    let out = corral(&["run", wf, "--json"]);
    assert_eq!(out.status.code(), Some(9));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["type"], "error");
    assert!(
        doc["data"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("is required")
    );

    assert_eq!(
        corral(&["run", wf, "--param", "action=ok"]).status.code(),
        Some(0)
    );
    let out = corral(&["run", wf, "-p", "action=error"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("workflow `wf` failed")
            && stdout.contains("the hostile agent failed on purpose"),
        "{stdout}"
    );
}

/// Agent log lines reach a file or a pipe as plain text: no colour codes.
#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "--log",
            "info",
            "call",
            agents::HOSTILE,
            "--input",
            r#"{"action": "log_flood"}"#,
        ])
        .env("CORRAL_CACHE_DIR", cache_dir())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("yyyy"), "the agent's log lines: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in: {stderr:.400}");
}

/// `corral inspect x.wasm | head -1`: the reader goes away early, and
/// corral ends quietly (SIGPIPE) instead of panicking on the closed pipe.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_corral_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["inspect", agents::KEYWORDS])
        .env("CORRAL_CACHE_DIR", cache_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before corral writes.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}"
    );
}
