//! `corral new agent`: each language's scaffold builds, and its own test calls it through `corral call`.

use std::path::Path;
use std::process::Command;

fn corral() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.env(
        "CORRAL_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache"),
    );
    c
}

/// Scaffolds `lang` and runs the project's `test.sh` (build, call, a refused bad input).
fn scaffold_builds_and_passes_its_test(lang: &str) {
    // The agents' toolchains (venv, node_modules) exist: plugins/artifacts built them.
    let _ = corral_plugins::ALL;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join(format!("hello-{lang}"));
    let out = corral()
        .args([
            "new",
            "agent",
            &format!("hello-{lang}"),
            "--lang",
            lang,
            "--dir",
        ])
        .arg(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("./build.sh"));
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("corral call hello-{lang}.wasm")),
        "{readme}"
    );

    let shared = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let wasm_agents = Path::new(corral_plugins::ECHO)
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    let mut test = Command::new(project.join("test.sh"));
    test.env("CORRAL", env!("CARGO_BIN_EXE_corral"))
        .env("CORRAL_CACHE_DIR", shared.join("corral-cache"))
        // Reuse what earlier builds compiled; the scaffold's own steps still run.
        .env("CARGO_TARGET_DIR", shared.join("scaffold-target"))
        .env(
            "COMPONENTIZE_PY",
            wasm_agents.join("py-venv/bin/componentize-py"),
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let out = test.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "test.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#""greeting":"Hello, corral!""#),
        "{stdout}"
    );
    assert!(stdout.contains("a schema violation is refused"), "{stdout}");
}

#[test]
fn rust_scaffold() {
    scaffold_builds_and_passes_its_test("rust");
}

#[test]
fn python_scaffold() {
    scaffold_builds_and_passes_its_test("python");
}

#[test]
fn js_scaffold() {
    scaffold_builds_and_passes_its_test("js");
}

#[test]
fn bad_names_and_occupied_directories_are_refused() {
    let out = corral()
        .args(["new", "agent", "Bad_Name", "--lang", "rust"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a usable agent name"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = corral()
        .args(["new", "agent", "ok-name", "--lang", "python", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
