//! The host's own resident memory under hostile calls: huge outputs, log floods, large valid outputs, and 200 hostile calls at once.
//!
//! Each test resets the process's peak resident size (`/proc/self/clear_refs`)
//! and reads it back (`VmHWM`) after the call, so what it measures is the
//! peak during the call. The tests run one at a time (`SERIAL`): they share
//! the process, and with it the resident size.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use corral::{Budget, CallError, CallOutcome, EngineConfig, Grants, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use support::*;

const MIB: u64 = 1 << 20;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A field of `/proc/self/status`, in bytes.
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Runs `work` and returns its result and how far the process's resident
/// size rose above where it stood before, at its peak.
async fn peak_growth<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident size");
    let before = status("VmRSS:");
    let out = work.await;
    let peak = status("VmHWM:");
    (out, peak.saturating_sub(before))
}

async fn hostile_with(payload: Value, budget: &Budget) -> CallOutcome {
    call(agents::HOSTILE, payload, budget).await
}

#[tokio::test]
async fn a_huge_output_is_refused_without_copying_it_into_the_host() {
    let _serial = SERIAL.lock().await;
    load(agents::HOSTILE).await;
    let budget = Budget {
        memory_bytes: 256 * MIB,
        ..budget()
    };
    // `huge_raw` returns a string over fresh, untouched guest pages, so the
    // guest itself adds nothing resident: any growth is the host's.
    for bytes in [100 * MIB, 200 * MIB] {
        let (out, growth) = peak_growth(hostile_with(
            json!({"action": "huge_raw", "bytes": bytes}),
            &budget,
        ))
        .await;
        match out.result {
            Err(CallError::OutputTooLarge { limit, actual, .. }) => {
                assert_eq!((limit, actual), (budget.max_output_bytes, bytes));
            }
            other => panic!("{bytes}: expected OutputTooLarge, got {other:?}"),
        }
        assert_eq!(out.receipt.bytes_out, bytes);
        eprintln!(
            "huge output of {} MiB: host grew {} KiB",
            bytes / MIB,
            growth >> 10
        );
        assert!(
            growth < 16 * MIB,
            "a {bytes}-byte output grew the host by {growth} bytes"
        );
    }
}

#[tokio::test]
async fn log_floods_of_empty_records_keep_the_host_small() {
    let _serial = SERIAL.lock().await;
    load(agents::HOSTILE).await;
    let budget = Budget {
        memory_bytes: 128 * MIB,
        max_log_bytes: 64 << 10,
        timeout: Duration::from_secs(120),
        ..budget()
    };
    for payload in [
        json!({"action": "empty_logs", "count": 1_000_000}),
        json!({"action": "wide_log", "count": 1_000_000}),
    ] {
        let (out, growth) = peak_growth(hostile_with(payload.clone(), &budget)).await;
        assert!(out.result.is_ok(), "{payload}: {:?}", out.result);
        assert!(out.receipt.log_bytes <= 64 << 10);
        // The guest's own pages are resident too; the host may add little
        // beyond them.
        let guest = out.receipt.peak_memory_bytes;
        eprintln!(
            "{}: guest {} KiB, host grew {} KiB",
            payload["action"],
            guest >> 10,
            growth >> 10
        );
        assert!(
            growth < guest + 16 * MIB,
            "{payload}: the host grew {growth} bytes for a guest of {guest}"
        );
    }
}

/// The output text the fixture's `big_valid` and `big_array` build.
fn lean_output(array: bool, n: usize) -> String {
    let mut out = r#"{"version":1,"run_id":"run-test","step_id":"step-test","payload":{"ok":true,"#
        .to_owned();
    if array {
        out.push_str(r#""nested":["#);
        while out.len() < n {
            out.push_str(r#"{"k":1},"#);
        }
        out.push_str(r#"{"k":1}]}}"#);
    } else {
        out.push_str(r#""filler":""#);
        out.push_str(&"x".repeat(n));
        out.push_str(r#""}}"#);
    }
    out
}

#[tokio::test]
async fn checking_a_large_valid_output_costs_little_beyond_its_value() {
    let _serial = SERIAL.lock().await;
    load(agents::HOSTILE).await;
    let budget = Budget {
        memory_bytes: 256 * MIB,
        max_output_bytes: 64 * MIB,
        timeout: Duration::from_secs(60),
        ..budget()
    };
    // The payload must become a `serde_json::Value` for the caller, and that
    // costs what it costs: about as much as the text for a long string,
    // some 60 times the text for an array of small objects. The check may
    // add the text itself and little more: no second copy, no per-node
    // bookkeeping.
    for (action, bytes) in [("big_valid", 32 * MIB), ("big_array", 8 * MIB)] {
        let text = lean_output(action == "big_array", bytes as usize);
        let (value, value_cost) =
            peak_growth(async { serde_json::from_str::<corral::HandoffPacket>(&text).unwrap() })
                .await;
        drop((value, text.len()));
        let (out, growth) = peak_growth(hostile_with(
            json!({"action": action, "bytes": bytes}),
            &budget,
        ))
        .await;
        let packet = out.result.unwrap_or_else(|e| panic!("{action}: {e}"));
        drop(packet);
        let size = out.receipt.bytes_out;
        assert_eq!(
            size,
            text.len() as u64,
            "{action}: the test builds the same text"
        );
        let guest = out.receipt.peak_memory_bytes;
        eprintln!(
            "{action}: output {} KiB, its Value {} KiB, guest {} KiB, host grew {} KiB",
            size >> 10,
            value_cost >> 10,
            guest >> 10,
            growth >> 10,
        );
        let bound = guest + value_cost + 2 * size + 16 * MIB;
        assert!(
            growth < bound,
            "{action}: the host grew {growth} bytes, over {bound} (output {size}, Value {value_cost}, guest {guest})"
        );
    }
}

/// What a hostile action must end with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Ok,
    Fuel,
    Memory,
    Deadline,
    Stack,
    Trap,
    TooLarge,
    Abi,
}

fn matches(expect: Expect, result: &Result<corral::HandoffPacket, CallError>) -> bool {
    use CallError as E;
    matches!(
        (expect, result),
        (Expect::Ok, Ok(_))
            | (Expect::Fuel, Err(E::FuelExhausted { .. }))
            | (Expect::Memory, Err(E::MemoryLimit { .. }))
            // A short deadline may also pass while the call waits for a slot.
            | (Expect::Deadline, Err(E::DeadlineExceeded { .. } | E::Overloaded { .. }))
            | (Expect::Stack, Err(E::StackOverflow { .. }))
            | (Expect::Trap, Err(E::GuestTrap { message: Some(_), .. }))
            | (Expect::TooLarge, Err(E::OutputTooLarge { .. }))
            | (Expect::Abi, Err(E::AbiViolation { .. }))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hostile_calls_at_once_end_typed_and_keep_the_host_bounded() {
    let _serial = SERIAL.lock().await;
    const SLOTS: u32 = 16;
    let config = RuntimeConfig {
        engine: EngineConfig {
            max_instances: SLOTS,
            ..Default::default()
        },
        cache_dir: runtime().config().cache_dir.clone(),
        ..Default::default()
    };
    let rt = Arc::new(Runtime::new(config).unwrap());
    let hostile = rt.load(agents::HOSTILE).await.unwrap();
    let echo = rt.load(agents::ECHO).await.unwrap();
    let budget = Budget {
        fuel: 50_000_000,
        memory_bytes: 32 * MIB,
        // Generous, so that waiting for one of the 16 slots never ends a
        // call before its own misbehaviour does; `sleep` gets a short one.
        timeout: Duration::from_secs(60),
        max_output_bytes: 64 << 10,
        max_log_bytes: 8 << 10,
        tokens: 0,
        ..Budget::default()
    };
    let actions: [(&str, Value, Expect); 12] = [
        ("loop", json!({}), Expect::Fuel),
        ("alloc", json!({}), Expect::Memory),
        ("huge_raw", json!({"bytes": 16 * MIB}), Expect::TooLarge),
        ("huge_output", json!({"bytes": MIB}), Expect::TooLarge),
        ("panic", json!({}), Expect::Trap),
        ("alloc_then_panic", json!({}), Expect::Trap),
        ("log_flood", json!({}), Expect::Ok),
        ("wide_log", json!({"count": 100_000}), Expect::Ok),
        ("empty_logs", json!({"count": 20_000}), Expect::Ok),
        ("sleep", json!({}), Expect::Deadline),
        ("recurse", json!({}), Expect::Stack),
        ("bad_discriminant", json!({}), Expect::Abi),
    ];
    let (outcomes, growth) = peak_growth(async {
        let calls = (0..200).map(|i| {
            let rt = rt.clone();
            let (agent, payload, expect, mut budget) = if i % 10 == 9 {
                let payload = json!({"text": format!("call {i}")});
                (echo.clone(), payload, Expect::Ok, budget.clone())
            } else {
                let (action, extra, expect) = &actions[i % actions.len()];
                let mut payload = extra.clone();
                payload["action"] = json!(action);
                (hostile.clone(), payload, *expect, budget.clone())
            };
            if payload["action"] == "sleep" {
                budget.timeout = Duration::from_millis(300);
            }
            let label = payload.to_string();
            tokio::spawn(async move {
                let out = rt
                    .call(&agent, &packet(payload), &budget, &Grants::default())
                    .await;
                (label, expect, out)
            })
        });
        futures::future::join_all(calls).await
    })
    .await;
    for joined in outcomes {
        let (label, expect, out) = joined.unwrap();
        assert!(
            matches(expect, &out.result),
            "{label}: expected {expect:?}, got {:?}",
            out.result.as_ref().map(|_| "a packet")
        );
        assert!(out.receipt.log_bytes <= budget.max_log_bytes, "{label}");
    }
    assert_eq!(rt.idle_slots(), SLOTS as usize);
    // Every slot may hold a guest at its memory budget at once; the host
    // adds at most the outputs and logs it keeps and its own bookkeeping.
    let bound = SLOTS as u64 * budget.memory_bytes + 256 * MIB;
    eprintln!(
        "200 hostile calls: host grew {} MiB (bound {} MiB)",
        growth / MIB,
        bound / MIB
    );
    assert!(growth < bound, "the host grew {growth} bytes, over {bound}");
}
