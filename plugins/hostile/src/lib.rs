//! Fixture: an agent that misbehaves on command, written against the raw bindings so it can break every rule.
//!
//! The payload's `action` picks the misbehaviour; the tests drive one
//! component through all of them, in the manner of Spin's limit tests.
//! `describe` takes no input, so its misbehaviour is picked by patching
//! [`DESCRIBE_MODE`] in a copy of the component (see `describe_mode`).

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
    "network",
];

struct Hostile;

impl Guest for Hostile {
    fn describe() -> AgentInfo {
        hostile_describe(describe_mode()).unwrap_or_else(normal_info)
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
            "network" => json!({ "ok": true, "observed": network::try_all() }),
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

/// What the hostile agent declares when `describe` behaves.
fn normal_info() -> AgentInfo {
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

/// What `describe` does, as a NUL-padded mode after a marker that occurs
/// once in the component. A test copies the component and overwrites the
/// mode (`normal` unless patched); the volatile read keeps the compiler
/// from folding the constant into the code.
#[used]
static DESCRIBE_MODE: [u8; 64] =
    *b"corral-hostile-describe-mode:normal\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn describe_mode() -> String {
    // SAFETY: a plain read of a static; volatile only to defeat folding.
    let bytes = unsafe { std::ptr::read_volatile(&DESCRIBE_MODE) };
    let mode = &bytes["corral-hostile-describe-mode:".len()..];
    let end = mode.iter().position(|&b| b == 0).unwrap_or(mode.len());
    String::from_utf8_lossy(&mode[..end]).into_owned()
}

/// A misbehaving `describe`, or `None` for the normal one.
fn hostile_describe(mode: String) -> Option<AgentInfo> {
    let schema = |properties: usize| {
        let props: serde_json::Map<String, Value> = (0..properties)
            .map(|i| (format!("p{i}"), json!({})))
            .collect();
        json!({ "type": "object", "properties": props }).to_string()
    };
    let info = |name: &str, description: &str, input_schema: String| AgentInfo {
        name: name.into(),
        version: "1.0.0".into(),
        description: description.into(),
        input_schema,
        output_schema: json!({ "type": "object" }).to_string(),
        capabilities: Vec::new(),
    };
    match mode.as_str() {
        "normal" => None,
        // Colours, a window title, a cleared screen and a faked line.
        "ansi" => Some(info(
            "hostile",
            "\u{1b}[31mred\u{1b}[0m\u{1b}]0;owned\u{7}\u{1b}[2J\r\nerror: faked",
            schema(0),
        )),
        "ansi_name" => Some(info("\u{1b}[2Jhostile", "", schema(0))),
        "long_description" => Some(info("hostile", &"d".repeat(100_000), schema(0))),
        // 100,000 properties: megabytes of schema text.
        "huge_schema" => Some(info("hostile", "", schema(100_000))),
        // 20,000 properties in under 256 KiB of text.
        "many_nodes" => Some(info("hostile", "", schema(20_000))),
        "requests" => Some(AgentInfo {
            capabilities: vec![
                corral::agent::types::Capability::Env("HOSTILE_WANTED".into()),
                corral::agent::types::Capability::Dir(corral::agent::types::DirRequest {
                    guest_path: "/wanted".into(),
                    writable: false,
                }),
            ],
            ..normal_info()
        }),
        "loop" => {
            let mut x = 1u64;
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![7u8; 1 << 20]));
            }
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
            None
        }
        "panic" => panic!("describe panicked on purpose"),
        other => panic!("unknown describe mode `{other}`"),
    }
}

/// Every kind of network access a guest can try, each answered with the
/// WASI error code it got (`access-denied` when the host denies it).
mod network {
    use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket, udp_create_socket};

    const LOOPBACK: IpSocketAddress = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port: 9,
        address: (127, 0, 0, 1),
    });

    pub fn try_all() -> String {
        let net = instance_network::instance_network();
        let tcp = match tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
            Err(e) => e.name().to_owned(),
            Ok(socket) => match socket.start_connect(&net, LOOPBACK) {
                Err(e) => format!("connect {}", e.name()),
                Ok(()) => {
                    socket.subscribe().block();
                    match socket.finish_connect() {
                        Err(e) => format!("connect {}", e.name()),
                        Ok(_) => "connected".into(),
                    }
                }
            },
        };
        let udp = match udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4) {
            Err(e) => e.name().to_owned(),
            Ok(socket) => {
                let any = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: 0,
                    address: (0, 0, 0, 0),
                });
                match socket.start_bind(&net, any) {
                    Err(e) => format!("bind {}", e.name()),
                    Ok(()) => match socket.finish_bind() {
                        Err(e) => format!("bind {}", e.name()),
                        Ok(()) => "bound".into(),
                    },
                }
            }
        };
        let lookup = match ip_name_lookup::resolve_addresses(&net, "localhost") {
            Err(e) => e.name().to_owned(),
            Ok(stream) => {
                stream.subscribe().block();
                match stream.resolve_next_address() {
                    Err(e) => format!("resolve {}", e.name()),
                    Ok(_) => "resolved".into(),
                }
            }
        };
        format!("tcp: {tcp}; udp: {udp}; lookup: {lookup}")
    }
}

export!(Hostile);
