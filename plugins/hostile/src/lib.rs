//! Fixture: an agent that misbehaves on command, written against the raw bindings so it can break every rule.
//!
//! The payload's `action` picks the misbehaviour; the tests drive one
//! component through all of them, in the manner of Spin's limit tests.

use std::hint::black_box;

use serde_json::{Value, json};

wit_bindgen::generate!({
    path: "../../wit/since_v0.1.0",
    world: "agent",
});

use corral::agent::host::{self, Level};
use corral::agent::types::{AgentError, AgentInfo, ErrorClass};
use exports::corral::agent::guest::Guest;

const ACTIONS: &[&str] = &[
    "ok",
    "loop",
    "alloc",
    "recurse",
    "panic",
    "bad_json",
    "violate_schema",
    "huge_output",
    "deep_output",
    "log_flood",
    "stdout_flood",
    "read_file",
    "read_env",
    "sleep",
    "nap",
    "error",
    "wrong_step",
];

struct Hostile;

impl Guest for Hostile {
    fn describe() -> AgentInfo {
        AgentInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "action": { "enum": ACTIONS },
                    "class": { "enum": ["transient", "permanent", "degradable"] },
                    "bytes": { "type": "integer", "minimum": 0 },
                    "ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["action"],
                "additionalProperties": false
            })
            .to_string(),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "ok": { "type": "boolean" },
                    "observed": { "type": "string" },
                    "filler": { "type": "string" },
                    "nested": {}
                },
                "required": ["ok"],
                "additionalProperties": false
            })
            .to_string(),
            capabilities: Vec::new(),
        }
    }

    fn run(packet: String) -> Result<String, AgentError> {
        let packet: Value = serde_json::from_str(&packet).expect("the host sends JSON");
        let input = &packet["payload"];
        let reply = |payload: Value| {
            json!({
                "version": packet["version"],
                "run_id": packet["run_id"],
                "step_id": packet["step_id"],
                "payload": payload,
            })
            .to_string()
        };
        let action = input["action"].as_str().unwrap_or_default();
        let payload = match action {
            "ok" => json!({ "ok": true }),
            "loop" => {
                let mut x = 1u64;
                loop {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch the pages so nothing is optimised away.
                    hoard.push(black_box(vec![7u8; 1 << 20]));
                }
            }
            "recurse" => json!({ "ok": recurse(black_box(1)) > 0 }),
            "panic" => panic!("the hostile agent panicked on purpose"),
            "bad_json" => return Ok("this is { not json".into()),
            "violate_schema" => json!({ "ok": "yes" }),
            "huge_output" => {
                let n = input["bytes"].as_u64().unwrap_or(4 << 20) as usize;
                json!({ "ok": true, "filler": "x".repeat(n) })
            }
            "deep_output" => {
                let mut v = json!(0);
                for _ in 0..100 {
                    v = json!([v]);
                }
                json!({ "ok": true, "nested": v })
            }
            "log_flood" => {
                let line = "y".repeat(1024);
                for i in 0..10_000 {
                    host::log(Level::Info, &line, &[("i".into(), i.to_string())]);
                }
                json!({ "ok": true })
            }
            "stdout_flood" => {
                let line = "z".repeat(1023);
                for _ in 0..10_000 {
                    println!("{line}");
                }
                json!({ "ok": true })
            }
            "read_file" => {
                let observed = ["/etc/passwd", "/", "."]
                    .iter()
                    .map(|p| match std::fs::read_to_string(p) {
                        Ok(s) => format!("{p}: read {} bytes", s.len()),
                        Err(e) => format!("{p}: {e}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                json!({ "ok": true, "observed": observed })
            }
            "read_env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                json!({ "ok": true, "observed": vars.join(",") })
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
                json!({ "ok": true })
            }
            "nap" => {
                let ms = input["ms"].as_u64().unwrap_or(10);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                json!({ "ok": true })
            }
            "error" => {
                let class = match input["class"].as_str() {
                    Some("transient") => ErrorClass::Transient,
                    Some("degradable") => ErrorClass::Degradable,
                    _ => ErrorClass::Permanent,
                };
                return Err(AgentError {
                    class,
                    message: "the hostile agent failed on purpose".into(),
                });
            }
            "wrong_step" => {
                return Ok(json!({
                    "version": 1, "run_id": packet["run_id"], "step_id": "someone-else",
                    "payload": { "ok": true }
                })
                .to_string());
            }
            other => {
                return Err(AgentError {
                    class: ErrorClass::Permanent,
                    message: format!("unknown action `{other}`"),
                });
            }
        };
        Ok(reply(payload))
    }
}

static DEPTH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Recurses without taking addresses, so the frames live on the wasm stack
/// (not the shadow stack in linear memory) and the engine's stack limit is
/// what stops it. The subtraction after the call keeps LLVM from turning
/// the recursion into a loop.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if DEPTH.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == u64::MAX {
        return n;
    }
    recurse(n + 1).wrapping_sub(n)
}

export!(Hostile);
