//! Every budget breach and hostile fixture, each with its exact typed error and receipt.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use corral::{Budget, CallError, Capability, DirGrant, EnvGrant, ErrorClass, Grants, LoadError};
use serde_json::json;
use support::*;

#[tokio::test]
async fn fuel_exhaustion_is_typed_and_fully_charged() {
    let budget = Budget {
        fuel: 5_000_000,
        ..budget()
    };
    let out = hostile("loop", &budget).await;
    match out.result {
        Err(CallError::FuelExhausted { agent, used, limit }) => {
            assert_eq!(agent, "hostile");
            assert_eq!((used, limit), (5_000_000, 5_000_000));
        }
        other => panic!("expected FuelExhausted, got {other:?}"),
    }
    assert_eq!(out.receipt.fuel_used, 5_000_000);
    assert_eq!(out.receipt.fuel_limit, 5_000_000);
    assert_eq!(out.receipt.bytes_out, 0);
}

#[tokio::test]
async fn memory_bomb_is_a_memory_limit_not_unreachable() {
    let budget = Budget {
        memory_bytes: 32 << 20,
        ..budget()
    };
    let out = hostile("alloc", &budget).await;
    match out.result {
        Err(CallError::MemoryLimit {
            limit, requested, ..
        }) => {
            assert_eq!(limit, 32 << 20);
            assert!(
                requested > limit,
                "requested {requested} must exceed {limit}"
            );
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(out.receipt.peak_memory_bytes <= 32 << 20);
    assert!(
        out.receipt.peak_memory_bytes > 16 << 20,
        "the bomb grew before it was stopped"
    );
}

#[tokio::test]
async fn a_busy_loop_hits_the_epoch_deadline() {
    let budget = Budget {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(200),
        ..budget()
    };
    let out = hostile("loop", &budget).await;
    match out.result {
        Err(CallError::DeadlineExceeded { limit, .. }) => {
            assert_eq!(limit, Duration::from_millis(200))
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(out.receipt.fuel_used > 0, "the loop ran and was charged");
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_hits_the_deadline() {
    let budget = Budget {
        timeout: Duration::from_millis(200),
        ..budget()
    };
    let out = hostile("sleep", &budget).await;
    assert!(
        matches!(out.result, Err(CallError::DeadlineExceeded { .. })),
        "expected DeadlineExceeded, got {:?}",
        out.result
    );
    assert!(out.receipt.wall_time() >= Duration::from_millis(200));
}

#[tokio::test]
async fn deep_recursion_is_a_stack_overflow() {
    let out = hostile("recurse", &budget()).await;
    match out.result {
        Err(CallError::StackOverflow { max_stack, .. }) => assert_eq!(max_stack, 512 << 10),
        other => panic!("expected StackOverflow, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panic_is_a_guest_trap_with_its_message() {
    let out = hostile("panic", &budget()).await;
    match out.result {
        Err(CallError::GuestTrap {
            message: Some(m),
            trap,
            ..
        }) => {
            assert!(
                m.contains("the hostile agent panicked on purpose"),
                "message: {m}"
            );
            assert!(trap.contains("unreachable"), "trap: {trap}");
        }
        other => panic!("expected GuestTrap with a message, got {other:?}"),
    }
}

#[tokio::test]
async fn agent_errors_keep_their_class() {
    for (class, expected) in [
        ("transient", ErrorClass::Transient),
        ("permanent", ErrorClass::Permanent),
        ("degradable", ErrorClass::Degradable),
    ] {
        let out = call(
            agents::HOSTILE,
            json!({"action": "error", "class": class}),
            &budget(),
        )
        .await;
        match out.result {
            Err(CallError::Agent { class, message, .. }) => {
                assert_eq!(class, expected);
                assert_eq!(message, "the hostile agent failed on purpose");
            }
            other => panic!("expected an agent error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn huge_output_is_a_budget_breach() {
    let budget = Budget {
        max_output_bytes: 64 << 10,
        ..budget()
    };
    let out = hostile("huge_output", &budget).await;
    match out.result {
        Err(CallError::OutputTooLarge { limit, actual, .. }) => {
            assert_eq!(limit, 64 << 10);
            assert!(actual > 4 << 20);
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert!(out.receipt.bytes_out > 4 << 20);
}

#[tokio::test]
async fn log_and_stdout_floods_are_capped_and_counted() {
    for action in ["log_flood", "stdout_flood"] {
        let budget = Budget {
            max_log_bytes: 8 << 10,
            ..budget()
        };
        let out = hostile(action, &budget).await;
        assert!(out.result.is_ok(), "{action}: {:?}", out.result);
        let r = &out.receipt;
        assert!(r.log_bytes <= 8 << 10, "{action}: kept {}", r.log_bytes);
        assert!(r.log_bytes > 4 << 10, "{action}: kept {}", r.log_bytes);
        // 10,000 lines of about 1 KiB were written.
        assert!(
            r.log_bytes_dropped > 9_000_000,
            "{action}: dropped {}",
            r.log_bytes_dropped
        );
        let kept: usize = out.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= 8 << 10);
    }
}

#[tokio::test]
async fn ungranted_files_and_environment_are_invisible() {
    unsafe { std::env::set_var("CORRAL_TEST_SECRET", "hunter2") };
    let out = hostile("read_file", &budget()).await;
    let observed = out.result.unwrap().payload["observed"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!observed.contains("read "), "a file was read: {observed}");
    assert!(observed.contains("/etc/passwd:"), "{observed}");

    let out = hostile("read_env", &budget()).await;
    let observed = out.result.unwrap().payload["observed"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        observed, "",
        "the agent saw environment variables: {observed}"
    );
}

#[tokio::test]
async fn the_host_serves_the_next_call_after_every_hostile_one() {
    let budget = Budget {
        fuel: 20_000_000,
        memory_bytes: 32 << 20,
        timeout: Duration::from_millis(300),
        max_output_bytes: 64 << 10,
        max_log_bytes: 4 << 10,
        tokens: 0,
        ..Budget::default()
    };
    for action in [
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
        "error",
        "wrong_step",
        "bad_discriminant",
        "oob_output",
        "bad_utf8",
        "log_bad_utf8",
        "alloc_then_panic",
        "empty_logs",
        "wide_log",
    ] {
        let _ = hostile(action, &budget).await;
        let next = call(
            agents::ECHO,
            json!({"text": "still here"}),
            &support::budget(),
        )
        .await;
        let out = next
            .result
            .unwrap_or_else(|e| panic!("after {action}: {e}"));
        assert_eq!(out.payload["text"], "still here", "after {action}");
    }
}

#[tokio::test]
async fn a_successful_call_has_a_full_receipt() {
    let out = call(
        agents::ECHO,
        json!({"text": "hi", "tags": ["a"]}),
        &budget(),
    )
    .await;
    let packet = out.result.unwrap();
    assert_eq!(packet.payload, json!({"text": "hi", "tags": ["a"]}));
    assert_eq!(
        (packet.run_id.as_str(), packet.step_id.as_str()),
        ("run-test", "step-test")
    );
    let r = out.receipt;
    assert_eq!(r.agent, "echo");
    assert!(r.fuel_used > 0 && r.fuel_used < r.fuel_limit);
    assert!(r.peak_memory_bytes > 0 && r.peak_memory_bytes <= r.memory_limit_bytes);
    assert!(r.wall_time_us > 0);
    assert_eq!(
        r.bytes_in,
        serde_json::to_string(&packet_for_echo()).unwrap().len() as u64
    );
    assert!(r.bytes_out > 0);
}

fn packet_for_echo() -> corral::HandoffPacket {
    packet(json!({"text": "hi", "tags": ["a"]}))
}

#[tokio::test]
async fn requested_capabilities_must_be_granted_before_the_call() {
    let agent = load(agents::ENV_READER).await;
    assert_eq!(
        agent.info().capabilities,
        vec![
            Capability::Env {
                name: "GREETING".into()
            },
            Capability::Dir {
                guest_path: "/data".into(),
                writable: false
            },
        ]
    );
    let input = packet(json!({"file": "note.txt"}));
    let out = runtime()
        .call(&agent, &input, &budget(), &Grants::default())
        .await;
    match &out.result {
        Err(e @ CallError::PolicyDenied { denied, .. }) => {
            assert_eq!(denied.len(), 2);
            let msg = e.to_string();
            assert!(msg.contains("--allow-env GREETING"), "{msg}");
            assert!(msg.contains("--allow-dir <host-dir>:/data:ro"), "{msg}");
        }
        other => panic!("expected PolicyDenied, got {other:?}"),
    }
    assert_eq!(out.receipt.fuel_used, 0, "a denied agent never runs");

    // A directory granted at another guest path does not count.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "granted contents").unwrap();
    let wrong = Grants {
        http: Vec::new(),
        env: vec![EnvGrant {
            name: "GREETING".into(),
            value: "hello".into(),
        }],
        dirs: vec![DirGrant {
            host: dir.path().into(),
            guest: "/elsewhere".into(),
            writable: false,
        }],
        models: Vec::new(),
    };
    let out = runtime().call(&agent, &input, &budget(), &wrong).await;
    assert!(
        matches!(&out.result, Err(CallError::PolicyDenied { denied, .. }) if denied.len() == 1)
    );

    let granted = Grants {
        dirs: vec![DirGrant {
            host: dir.path().into(),
            guest: "/data".into(),
            writable: false,
        }],
        ..wrong
    };
    let out = runtime().call(&agent, &input, &budget(), &granted).await;
    let payload = out.result.unwrap().payload;
    assert_eq!(
        payload,
        json!({"greeting": "hello", "contents": "granted contents"})
    );
}

#[tokio::test]
async fn the_compile_cache_compiles_once_per_digest() {
    let dir = tempfile::tempdir().unwrap();
    let config = || corral::RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };

    let first = corral::Runtime::new(config()).unwrap();
    first.load(agents::CRITIC).await.unwrap();
    first.load(agents::CRITIC).await.unwrap();
    let s = first.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.memory_hits), (1, 0, 1));

    // A new process (runtime) finds the precompiled artifact on disk.
    let second = corral::Runtime::new(config()).unwrap();
    second.load(agents::CRITIC).await.unwrap();
    let s = second.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.memory_hits), (0, 1, 0));

    // A corrupt artifact is ignored and replaced, never trusted. (Artifacts
    // are mapped into memory, so they are only ever replaced by rename,
    // never rewritten in place; the runtimes mapping them go first.)
    drop((first, second));
    for entry in walk(dir.path()) {
        let tmp = entry.with_extension("tmp");
        std::fs::write(&tmp, b"garbage").unwrap();
        std::fs::rename(&tmp, &entry).unwrap();
    }
    let third = corral::Runtime::new(config()).unwrap();
    let agent = third.load(agents::CRITIC).await.unwrap();
    assert_eq!(third.cache_stats().compiled, 1);
    let out = third
        .call(
            &agent,
            &packet(json!({"draft": "A short draft."})),
            &budget(),
            &Grants::default(),
        )
        .await;
    assert!(out.result.is_ok());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn malformed_and_foreign_wasm_is_rejected_clearly() {
    let rt = runtime();
    let path = std::path::Path::new("agent.wasm");
    let err = rt.load_bytes(path, b"not wasm at all").await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");

    let core_module = b"\0asm\x01\0\0\0";
    let err = rt.load_bytes(path, core_module).await.unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err:?}");
    assert!(err.to_string().contains("wasm32-wasip2"));

    let echo = std::fs::read(agents::ECHO).unwrap();
    let err = rt
        .load_bytes(path, &echo[..echo.len() / 2])
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");

    let err = rt.load(agents::NOT_AN_AGENT).await.unwrap_err();
    match &err {
        LoadError::WrongWorld {
            found, expected, ..
        } => {
            assert_eq!(
                expected,
                "`corral:agent/guest@0.2.0` or `corral:agent/guest@0.1.0`"
            );
            assert!(
                found.iter().any(|e| e.starts_with("wasi:cli/run")),
                "{found:?}"
            );
        }
        other => panic!("expected WrongWorld, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("does not implement a `corral:agent/agent` world")
    );

    let err = rt.load("no/such/agent.wasm").await.unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }));
}

#[tokio::test]
async fn a_panic_after_a_handled_refusal_is_a_guest_trap_with_its_message() {
    // The guest asks for 1 GiB with `try_reserve`, is refused, goes on, and
    // then panics for a reason of its own.
    let budget = Budget {
        memory_bytes: 64 << 20,
        ..budget()
    };
    let out = hostile("alloc_then_panic", &budget).await;
    match out.result {
        Err(CallError::GuestTrap {
            message: Some(m), ..
        }) => assert!(
            m.contains("gave up after the allocator refused 1 GiB (refused: true)"),
            "message: {m}"
        ),
        other => panic!("expected GuestTrap with the panic message, got {other:?}"),
    }
}

/// Calls the hostile fixture with an action and a packet of exactly `size`
/// bytes of JSON text (padded through `pad`).
async fn hostile_sized(action: &str, size: usize) -> corral::CallOutcome {
    let mut payload = json!({ "action": action, "pad": "" });
    let base = serde_json::to_string(&packet(payload.clone()))
        .unwrap()
        .len();
    payload["pad"] = json!("p".repeat(size - base));
    let input = packet(payload);
    assert_eq!(serde_json::to_string(&input).unwrap().len(), size);
    let agent = load(agents::HOSTILE).await;
    runtime()
        .call(&agent, &input, &budget(), &Grants::default())
        .await
}

#[tokio::test]
async fn malformed_results_and_arguments_are_abi_violations_that_say_why() {
    let cases = [
        ("bad_discriminant", "discriminant"),
        ("oob_output", "outside guest memory"),
        ("bad_utf8", "not valid UTF-8"),
        (
            "log_bad_utf8",
            "passed `log` a string that is not valid UTF-8",
        ),
    ];
    let mut outcomes = Vec::new();
    for (action, why) in cases {
        outcomes.push((action, why, hostile(action, &budget()).await));
    }
    // The fixture's export realloc answers a request of exactly this many
    // bytes (the input packet) with a pointer outside its memory.
    const BAD_REALLOC_SIZE: usize = 12_345;
    let out = hostile_sized("ok", BAD_REALLOC_SIZE).await;
    outcomes.push(("bad_realloc", "realloc", out));
    for (action, why, out) in outcomes {
        let err = out.result.expect_err(action);
        match &err {
            CallError::AbiViolation { agent, reason } => {
                assert_eq!(agent, "hostile");
                assert!(
                    reason.to_lowercase().contains(&why.to_lowercase()),
                    "{action}: {reason}"
                );
            }
            other => panic!("{action}: expected AbiViolation, got {other:?}"),
        }
        // The agent's fault, said in the message itself, not only in a cause.
        assert_eq!(err.kind(), corral::FailureKind::Trap, "{action}");
        assert_eq!(err.class(), ErrorClass::Permanent, "{action}");
        assert!(err.blames_agent(), "{action}");
        let message = err.to_string();
        assert!(message.contains("broke the component ABI"), "{message}");
        assert!(
            message.to_lowercase().contains(&why.to_lowercase()),
            "{message}"
        );
    }
}

#[tokio::test]
async fn empty_and_wide_log_records_are_charged_and_capped() {
    let budget = Budget {
        max_log_bytes: 8 << 10,
        ..budget()
    };
    // Records with empty messages: each costs its overhead.
    let out = call(
        agents::HOSTILE,
        json!({"action": "empty_logs", "count": 200_000}),
        &budget,
    )
    .await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    let r = &out.receipt;
    let per_record = corral::capture::RECORD_OVERHEAD;
    assert!(r.log_bytes <= 8 << 10, "kept {}", r.log_bytes);
    assert_eq!(out.logs.len() as u64, (8 << 10) / per_record);
    assert_eq!(r.log_records_dropped + out.logs.len() as u64, 200_000);
    assert_eq!(r.log_bytes_dropped, r.log_records_dropped * per_record);

    // One record with a million empty fields: dropped whole, and charged.
    let out = call(
        agents::HOSTILE,
        json!({"action": "wide_log", "count": 1_000_000}),
        &budget,
    )
    .await;
    assert!(out.result.is_ok(), "{:?}", out.result);
    let r = &out.receipt;
    assert!(out.logs.is_empty(), "kept {} records", out.logs.len());
    assert_eq!((r.log_bytes, r.log_records_dropped), (0, 1));
    assert!(
        r.log_bytes_dropped >= 1_000_000 * corral::capture::FIELD_OVERHEAD,
        "dropped {}",
        r.log_bytes_dropped
    );
}

#[tokio::test]
async fn calls_wait_for_a_free_instance_slot_within_their_deadline() {
    let config = corral::RuntimeConfig {
        engine: corral::EngineConfig {
            max_instances: 2,
            ..Default::default()
        },
        cache_dir: runtime().config().cache_dir.clone(),
        ..Default::default()
    };
    let rt = std::sync::Arc::new(corral::Runtime::new(config).unwrap());
    let agent = rt.load(agents::HOSTILE).await.unwrap();
    // Six slow calls through a pool of two: each waits for a slot, none
    // fails for want of one.
    let calls = (0..6).map(|_| {
        let (rt, agent) = (rt.clone(), agent.clone());
        tokio::spawn(async move {
            let input = packet(json!({"action": "nap", "ms": 200}));
            rt.call(&agent, &input, &budget(), &Grants::default()).await
        })
    });
    for out in futures::future::join_all(calls).await {
        let out = out.unwrap();
        assert!(out.result.is_ok(), "{:?}", out.result);
    }
    assert_eq!(rt.idle_slots(), 2);

    // With both slots held, a call whose deadline passes while it waits is
    // `Overloaded`: transient, and not the agent's fault (it never ran).
    let hold = |rt: std::sync::Arc<corral::Runtime>, agent: std::sync::Arc<corral::Agent>| {
        tokio::spawn(async move {
            let input = packet(json!({"action": "nap", "ms": 3000}));
            rt.call(&agent, &input, &budget(), &Grants::default()).await
        })
    };
    let holders = [
        hold(rt.clone(), agent.clone()),
        hold(rt.clone(), agent.clone()),
    ];
    while rt.idle_slots() > 0 {
        tokio::task::yield_now().await;
    }
    let short = Budget {
        timeout: Duration::from_millis(100),
        ..budget()
    };
    let input = packet(json!({"action": "ok"}));
    let out = rt.call(&agent, &input, &short, &Grants::default()).await;
    match &out.result {
        Err(e @ CallError::Overloaded { reason, .. }) => {
            assert_eq!(e.class(), ErrorClass::Transient);
            assert!(!e.blames_agent());
            assert!(reason.contains("2 instance slots"), "{reason}");
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(out.receipt.fuel_used, 0, "the call never ran");
    for h in holders {
        assert!(h.await.unwrap().result.is_ok());
    }
}
