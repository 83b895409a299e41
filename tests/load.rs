//! Loading agents: a private compile cache, `describe` under a load budget with bounded answers kept on disk, escaped guest text, no network, only requested grants, and loads that leave the executor free.

#[path = "support.rs"]
mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use corral::{
    Budget, CallError, Capability, DirGrant, EnvGrant, Grants, LoadError, Runtime, RuntimeConfig,
};
use serde_json::json;
use support::*;

const MARKER: &[u8] = b"corral-hostile-describe-mode:";
/// Bytes after the marker that hold the NUL-padded mode (see plugins/hostile).
const MODE_BYTES: usize = 64 - MARKER.len();

/// The hostile component with its `describe` switched to `mode`.
fn hostile_describing(mode: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(agents::HOSTILE).unwrap();
    let at: Vec<usize> = bytes
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i + MARKER.len())
        .collect();
    assert_eq!(at.len(), 1, "the describe-mode marker occurs once");
    assert!(mode.len() < MODE_BYTES);
    let slot = &mut bytes[at[0]..at[0] + MODE_BYTES];
    slot.fill(0);
    slot[..mode.len()].copy_from_slice(mode.as_bytes());
    bytes
}

/// The patched component written to a file, for the CLI.
fn hostile_file(dir: &Path, mode: &str) -> PathBuf {
    let path = dir.join(format!("hostile-{mode}.wasm"));
    std::fs::write(&path, hostile_describing(mode)).unwrap();
    path
}

fn runtime_at(cache: Option<&Path>, load_budget: Budget) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: cache.map(Path::to_owned),
        describe_budget: load_budget,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// The shared test cache (so patched components compile once per build).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache")
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

/// The one `engine-<hash>` directory under `base`.
fn engine_dir(base: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_cache_is_private_named_by_a_stable_engine_hash_and_written_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("cache");
    let rt = runtime_at(Some(&base), Budget::default());
    rt.load(agents::CRITIC).await.unwrap();

    assert_eq!(mode_of(&base), 0o700);
    let dir = engine_dir(&base);
    assert_eq!(mode_of(&dir), 0o700);
    let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
    let hash = name.strip_prefix("engine-").expect("engine-<hash>");
    assert!(
        hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    // The artifact and the describe answer, nothing half-written beside them.
    let kept = files(&dir);
    let names: Vec<String> = kept
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".cwasm")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".describe.json")),
        "{names:?}"
    );
    for f in &kept {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }

    // Another engine with the same settings picks the same directory.
    let again = runtime_at(Some(&base), Budget::default());
    again.load(agents::CRITIC).await.unwrap();
    assert_eq!(engine_dir(&base), dir);
    assert_eq!(again.cache_stats().disk_hits, 1);
}

#[tokio::test]
async fn a_cache_directory_others_can_write_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("cache");
    runtime_at(Some(&base), Budget::default())
        .load(agents::CRITIC)
        .await
        .unwrap();
    let dir = engine_dir(&base);

    for (which, mode) in [(&dir, 0o770), (&dir, 0o707), (&base, 0o775)] {
        std::fs::set_permissions(which, std::fs::Permissions::from_mode(mode)).unwrap();
        let rt = runtime_at(Some(&base), Budget::default());
        let err = rt.load(agents::CRITIC).await.unwrap_err();
        match &err {
            LoadError::UnsafeCache { path, .. } => assert_eq!(path, which),
            other => panic!("expected UnsafeCache, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 700 {}", which.display())),
            "{msg}"
        );
        assert_eq!(rt.cache_stats().disk_hits, 0, "nothing was loaded from it");
        std::fs::set_permissions(which, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let rt = runtime_at(Some(&base), Budget::default());
    rt.load(agents::CRITIC).await.unwrap();
    assert_eq!(rt.cache_stats().disk_hits, 1, "private again, used again");
}

#[tokio::test]
async fn an_artifact_others_own_or_can_write_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("cache");
    runtime_at(Some(&base), Budget::default())
        .load(agents::CRITIC)
        .await
        .unwrap();
    let dir = engine_dir(&base);
    let artifact = files(&dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();

    let refused = |expect: &'static str| {
        let (base, artifact) = (base.clone(), artifact.clone());
        async move {
            let rt = runtime_at(Some(&base), Budget::default());
            let err = rt.load(agents::CRITIC).await.unwrap_err();
            match &err {
                LoadError::UnsafeCache { path, .. } => assert_eq!(path, &artifact),
                other => panic!("expected UnsafeCache, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(expect), "{msg}");
            assert!(msg.contains(&format!("rm {}", artifact.display())), "{msg}");
            assert_eq!(rt.cache_stats().compiled + rt.cache_stats().disk_hits, 0);
        }
    };

    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused("writable by its group").await;
    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Owned by another user (`nobody`): only root may hand a file away.
    match std::os::unix::fs::chown(&artifact, Some(65534), None) {
        Ok(()) => refused("owned by uid 65534").await,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("not root: cannot chown, the foreign-owner case is not exercised")
        }
        Err(e) => panic!("chown: {e}"),
    }
}

#[tokio::test]
async fn describe_is_kept_with_the_artifact_and_not_called_again() {
    let tmp = tempfile::tempdir().unwrap();
    let first = runtime_at(Some(tmp.path()), Budget::default());
    let a = first.load(agents::HOSTILE).await.unwrap();
    let s = first.cache_stats();
    assert_eq!((s.compiled, s.describe_hits), (1, 0));

    let second = runtime_at(Some(tmp.path()), Budget::default());
    let b = second.load(agents::HOSTILE).await.unwrap();
    let s = second.cache_stats();
    assert_eq!((s.compiled, s.disk_hits, s.describe_hits), (0, 1, 1));
    let (ia, ib) = (
        corral::inspect::Inspection::of(&a, first.engine()),
        corral::inspect::Inspection::of(&b, second.engine()),
    );
    assert_eq!(
        serde_json::to_value(&ia).unwrap(),
        serde_json::to_value(&ib).unwrap()
    );
    let out = second
        .call(
            &b,
            &packet(json!({"action": "ok"})),
            &budget(),
            &Grants::default(),
        )
        .await;
    assert!(out.result.is_ok(), "{:?}", out.result);

    // A kept answer is checked like a fresh one: a tampered copy that breaks
    // a limit is refused, not trusted.
    let kept = files(&engine_dir(tmp.path()))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".describe.json"))
        .unwrap();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    doc["description"] = json!("d".repeat(10_000));
    std::fs::write(&kept, doc.to_string()).unwrap();
    let third = runtime_at(Some(tmp.path()), Budget::default());
    let err = third.load(agents::HOSTILE).await.unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::DescribeTooLarge {
                field: "description",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn describe_runs_under_the_load_budget_and_its_errors_name_the_load_flags() {
    let cases: [(&str, Budget, &str); 3] = [
        (
            "loop",
            Budget {
                fuel: 5_000_000,
                ..budget()
            },
            "--load-fuel",
        ),
        (
            "alloc",
            Budget {
                memory_bytes: 32 << 20,
                ..budget()
            },
            "--load-memory",
        ),
        (
            "sleep",
            Budget {
                timeout: Duration::from_millis(300),
                ..budget()
            },
            "--load-timeout",
        ),
    ];
    for (mode, load_budget, flag) in cases {
        let rt = runtime_at(Some(&shared_cache()), load_budget);
        let err = rt
            .load_bytes(Path::new("hostile.wasm"), &hostile_describing(mode))
            .await
            .unwrap_err();
        let LoadError::Describe { cause, .. } = &err else {
            panic!("{mode}: expected Describe, got {err:?}");
        };
        let expected = match mode {
            "loop" => matches!(
                **cause,
                CallError::FuelExhausted {
                    used: 5_000_000,
                    ..
                }
            ),
            "alloc" => matches!(**cause, CallError::MemoryLimit { limit, .. } if limit == 32 << 20),
            _ => {
                matches!(**cause, CallError::DeadlineExceeded { limit, .. } if limit == Duration::from_millis(300))
            }
        };
        assert!(expected, "{mode}: {cause:?}");
        let msg = err.to_string();
        assert!(msg.contains(flag), "{mode}: {msg}");
        assert!(
            !msg.contains("`--fuel`")
                && !msg.contains("`--memory`")
                && !msg.contains("`--timeout`"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn a_failed_load_says_why_in_its_message() {
    let rt = runtime_at(Some(&shared_cache()), budget());
    let err = rt
        .load_bytes(Path::new("hostile.wasm"), &hostile_describing("panic"))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Describe { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("describe panicked on purpose"), "{msg}");

    let echo = std::fs::read(agents::ECHO).unwrap();
    let err = rt
        .load_bytes(Path::new("half.wasm"), &echo[..echo.len() / 2])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("half.wasm is not a valid component: ") && msg.len() > 40,
        "{msg}"
    );
}

#[tokio::test]
async fn oversized_or_unprintable_declarations_are_refused_naming_the_limit() {
    let rt = runtime_at(Some(&shared_cache()), budget());
    let load = |mode: &'static str| {
        let rt = &rt;
        async move {
            rt.load_bytes(Path::new("hostile.wasm"), &hostile_describing(mode))
                .await
                .unwrap_err()
        }
    };
    let err = load("huge_schema").await;
    match &err {
        LoadError::DescribeTooLarge {
            field: "input schema",
            unit: "bytes",
            limit,
            actual,
            ..
        } => assert!(*limit == 256 << 10 && *actual > *limit),
        other => panic!("expected DescribeTooLarge, got {other:?}"),
    }
    assert!(
        err.to_string().contains("over the limit of 262144"),
        "{err}"
    );

    let err = load("many_nodes").await;
    assert!(
        matches!(
            &err,
            LoadError::DescribeTooLarge {
                field: "input schema",
                unit: "JSON values",
                limit: 10_000,
                ..
            }
        ),
        "{err:?}"
    );
    let err = load("long_description").await;
    assert!(
        matches!(
            &err,
            LoadError::DescribeTooLarge {
                field: "description",
                actual: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    let err = load("ansi_name").await;
    assert!(
        matches!(&err, LoadError::BadDescribe { field: "name", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains('\u{1b}') && msg.contains("\\u{1b}[2J"),
        "{msg}"
    );
}

fn corral(cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_CACHE_DIR", cache)
        .env_remove("CORRAL_LOG")
        .output()
        .unwrap()
}

#[test]
fn inspect_escapes_what_the_agent_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let file = hostile_file(tmp.path(), "ansi");
    let out = corral(&shared_cache(), &["inspect", file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains(
            "\\u{1b}[31mred\\u{1b}[0m\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{a}error: faked"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("error: faked")),
        "the guest faked a line: {stdout}"
    );
}

#[test]
fn the_load_budget_flags_reach_describe() {
    let tmp = tempfile::tempdir().unwrap();
    let file = hostile_file(tmp.path(), "loop");
    let out = corral(
        &shared_cache(),
        &["--load-fuel", "5M", "inspect", file.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains(
            "used 5000000 of 5000000 instructions; raise the load budget with `--load-fuel`"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_network_is_denied_at_every_entry_point() {
    let out = hostile("network", &budget()).await;
    let payload = out.result.unwrap().payload;
    assert_eq!(
        payload["observed"],
        "tcp: access-denied; udp: access-denied; lookup: access-denied"
    );
}

#[tokio::test]
async fn an_agent_gets_only_the_grants_it_requested() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let grants = Grants {
        http: Vec::new(),
        env: vec![
            EnvGrant {
                name: "HOSTILE_WANTED".into(),
                value: "yes".into(),
            },
            EnvGrant {
                name: "NOT_REQUESTED".into(),
                value: "secret".into(),
            },
        ],
        dirs: vec![
            DirGrant {
                host: dir.path().into(),
                guest: "/wanted".into(),
                writable: true,
            },
            DirGrant {
                host: dir.path().into(),
                guest: "/unwanted".into(),
                writable: true,
            },
        ],
        models: vec!["never-requested".into()],
    };
    let requesting = rt
        .load_bytes(Path::new("hostile.wasm"), &hostile_describing("requests"))
        .await
        .unwrap();
    let plain = load(agents::HOSTILE).await;
    let read_env = packet(json!({"action": "read_env"}));

    let out = rt.call(&requesting, &read_env, &budget(), &grants).await;
    assert_eq!(out.result.unwrap().payload["observed"], "HOSTILE_WANTED");
    // Asked for read-only, granted read-write: opened read-only.
    assert_eq!(
        out.receipt.granted,
        vec![
            Capability::Env {
                name: "HOSTILE_WANTED".into()
            },
            Capability::Dir {
                guest_path: "/wanted".into(),
                writable: false
            },
        ]
    );

    let out = rt.call(&plain, &read_env, &budget(), &grants).await;
    assert_eq!(out.result.unwrap().payload["observed"], "");
    assert!(out.receipt.granted.is_empty());
}

/// On a single-threaded executor, a task spawned beside a load runs while
/// the component compiles: the load reads, hashes and compiles on the
/// blocking pool. (Any compile shows it; a Rust agent keeps the test fast,
/// where a Python agent takes minutes to compile in a debug build.) The cache directory is created just before Cranelift
/// starts and the `compiled` counter moves just after it ends, so a turn
/// that sees the first and not the second ran during the compile. A load
/// that compiled on the executor's thread would give the task no turn
/// before the compile ended.
#[test]
fn a_slow_compile_leaves_the_executor_free() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_owned();
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    executor.block_on(async move {
        let rt = Arc::new(runtime_at(Some(&base), budget()));
        let watcher = {
            let (rt, base) = (rt.clone(), base.clone());
            tokio::spawn(async move {
                let mut turns_during_compile = 0u64;
                while rt.cache_stats().compiled == 0 {
                    let started = std::fs::read_dir(&base).is_ok_and(|mut d| d.next().is_some());
                    if started {
                        turns_during_compile += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                turns_during_compile
            })
        };
        rt.load(agents::HOSTILE).await.unwrap();
        let turns = watcher.await.unwrap();
        assert!(turns > 0, "no other task ran while the agent compiled");
    });
}
