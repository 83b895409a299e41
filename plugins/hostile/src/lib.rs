//! Fixture: an agent that misbehaves on command, written against the raw bindings so it can break every rule.
//!
//! The payload's `action` picks the misbehaviour; the tests drive one
//! component through all of them, in the manner of Spin's limit tests.
//! `describe` takes no input, so its misbehaviour is picked by patching
//! [`DESCRIBE_MODE`] in a copy of the component (see `describe_mode`).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

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
    // Raw canonical-ABI results, written by `export_run` below.
    "bad_discriminant",
    "oob_output",
    "bad_utf8",
    "huge_raw",
    // Lean large outputs and host-call abuse.
    "big_valid",
    "big_array",
    "empty_logs",
    "wide_log",
    "log_bad_utf8",
    "alloc_then_panic",
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
            "big_valid" | "big_array" => {
                nap(input);
                let n = input["bytes"].as_u64().unwrap_or(1 << 20) as usize;
                return Ok(lean_output(&packet, action == "big_array", n));
            }
            "empty_logs" => {
                let n = input["count"].as_u64().unwrap_or(1_000_000);
                for _ in 0..n {
                    host::log(Level::Info, "", &[]);
                }
                json!({ "ok": true })
            }
            "wide_log" => {
                let n = input["count"].as_u64().unwrap_or(1_000_000) as usize;
                let fields = vec![(String::new(), String::new()); n];
                host::log(Level::Info, "", &fields);
                json!({ "ok": true })
            }
            "log_bad_utf8" => {
                // Library UB on purpose: the bytes only pass through to the host.
                let bytes = black_box([b'a', 0xff, 0xfe]);
                let bad = unsafe { std::str::from_utf8_unchecked(&bytes) };
                host::log(Level::Info, bad, &[]);
                json!({ "ok": true })
            }
            "alloc_then_panic" => {
                let mut v: Vec<u8> = Vec::new();
                let refused = v.try_reserve(1 << 30).is_err();
                black_box(&v);
                panic!("gave up after the allocator refused 1 GiB (refused: {refused})");
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
                "ms": { "type": "integer", "minimum": 0 },
                "count": { "type": "integer", "minimum": 0 },
                "pad": { "type": "string" }
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

fn nap(input: &Value) {
    if let Some(ms) = input["ms"].as_u64() {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A valid output packet of about `n` bytes built in one allocation, so the
/// guest's own memory stays near the output's size: a filler string, or an
/// array of small objects (`{"k":1}`), the costliest shape to parse.
fn lean_output(packet: &Value, array: bool, n: usize) -> String {
    let head = format!(
        r#"{{"version":1,"run_id":{},"step_id":{},"payload":{{"ok":true,"#,
        packet["run_id"], packet["step_id"]
    );
    let mut out = String::with_capacity(head.len() + n + 16);
    out.push_str(&head);
    if array {
        out.push_str(r#""nested":["#);
        while out.len() < n {
            out.push_str(r#"{"k":1},"#);
        }
        out.push_str(r#"{"k":1}]}}"#);
    } else {
        out.push_str(r#""filler":""#);
        // A memset rather than a loop of pushes: cheap in fuel.
        let mut bytes = out.into_bytes();
        bytes.resize(bytes.len() + n, b'x');
        bytes.extend_from_slice(br#""}}"#);
        out = String::from_utf8(bytes).expect("ASCII");
    }
    out
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

// The exports are written by hand instead of with `export!`, so that `run`
// can return what the canonical ABI forbids and `cabi_export_realloc` can
// misbehave. Everything else goes through wit-bindgen's glue.

#[unsafe(export_name = "corral:agent/guest@0.1.0#describe")]
unsafe extern "C" fn export_describe() -> *mut u8 {
    unsafe { exports::corral::agent::guest::_export_describe_cabi::<Hostile>() }
}

#[unsafe(export_name = "cabi_post_corral:agent/guest@0.1.0#describe")]
unsafe extern "C" fn post_return_describe(ret: *mut u8) {
    unsafe { exports::corral::agent::guest::__post_return_describe::<Hostile>(ret) }
}

/// Set when `run` returned a raw result, which post-return must not free.
static RAW: AtomicBool = AtomicBool::new(false);

#[unsafe(export_name = "corral:agent/guest@0.1.0#run")]
unsafe extern "C" fn export_run(ptr: *mut u8, len: usize) -> *mut u8 {
    let packet = unsafe { std::slice::from_raw_parts(ptr, len) };
    if let Some(ret) = raw_result(packet) {
        RAW.store(true, Ordering::Relaxed);
        return ret;
    }
    unsafe { exports::corral::agent::guest::_export_run_cabi::<Hostile>(ptr, len) }
}

#[unsafe(export_name = "cabi_post_corral:agent/guest@0.1.0#run")]
unsafe extern "C" fn post_return_run(ret: *mut u8) {
    if !RAW.load(Ordering::Relaxed) {
        unsafe { exports::corral::agent::guest::__post_return_run::<Hostile>(ret) }
    }
}

/// The return area of `result<string, agent-error>`: a discriminant byte,
/// then at offset 4 the string's pointer and length.
#[repr(C, align(4))]
struct RetArea([u8; 16]);

static mut RET_AREA: RetArea = RetArea([0; 16]);

/// Results a conforming agent never returns, for the actions that ask.
fn raw_result(packet: &[u8]) -> Option<*mut u8> {
    let packet: Value = serde_json::from_slice(packet).ok()?;
    let input = &packet["payload"];
    static BAD_UTF8: [u8; 4] = [b'{', 0xff, 0xfe, b'}'];
    let (discriminant, ptr, len): (u8, usize, usize) = match input["action"].as_str()? {
        "bad_discriminant" => (7, 0, 0),
        "oob_output" => (0, 0xffff_0000, 64),
        "bad_utf8" => (0, BAD_UTF8.as_ptr() as usize, BAD_UTF8.len()),
        "huge_raw" => {
            // Fresh pages that are never touched: the guest costs the host
            // no resident memory, so any growth the test sees is the host's.
            let n = input["bytes"].as_u64()? as usize;
            let base = grow_pages(n.div_ceil(65536));
            assert_ne!(base, usize::MAX, "memory.grow refused {n} bytes");
            (0, base * 65536, n)
        }
        _ => return None,
    };
    // Through a raw pointer: a reference to a `static mut` is refused.
    #[allow(clippy::deref_addrof)]
    let ret = unsafe { &mut *(&raw mut RET_AREA) };
    ret.0[0] = discriminant;
    ret.0[4..8].copy_from_slice(&(ptr as u32).to_le_bytes());
    ret.0[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    Some(ret.0.as_mut_ptr())
}

/// Grows linear memory by `pages`; `usize::MAX` when refused. The agent is
/// only built for wasm32, but the workspace's lints check it on the host.
fn grow_pages(pages: usize) -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_grow(0, pages)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = pages;
        usize::MAX
    }
}

/// A packet of exactly this many bytes makes the export realloc return a
/// pointer outside memory.
pub const BAD_REALLOC_SIZE: usize = 12_345;

/// The allocator the host uses to pass `run` its packet.
#[unsafe(export_name = "cabi_export_realloc")]
unsafe extern "C" fn export_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use std::alloc::{Layout, alloc, handle_alloc_error, realloc};
    if new_len == BAD_REALLOC_SIZE {
        return 0xffff_0000usize as *mut u8;
    }
    if new_len == 0 {
        return align as *mut u8;
    }
    unsafe {
        let ptr = if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
        }
        ptr
    }
}
