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
        stderr.contains("does not implement the `corral:agent/agent@0.1.0` world"),
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
    assert_eq!(doc["world_version"], "0.1.0");
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
        text.contains("corral:agent/agent@0.1.0") && text.contains("input schema"),
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
