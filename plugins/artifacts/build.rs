//! Builds every agent under `plugins/` for `wasm32-wasip2` and writes one path constant per agent.
//!
//! Cargo caches the nested build in `target/wasm-agents`, shared by every
//! profile, so a second `cargo test` rebuilds nothing.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every agent crate: (package name, component file stem).
const AGENTS: &[(&str, &str)] = &[
    ("keywords", "keywords"),
    ("classify", "classify"),
    ("summarize", "summarize"),
    ("critic", "critic"),
    ("echo", "echo"),
    ("env-reader", "env_reader"),
    ("hostile", "hostile"),
    ("not-an-agent", "not-an-agent"),
    ("lead", "lead"),
    ("merge", "merge"),
    ("flaky", "flaky"),
    ("relay", "relay"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let plugins = manifest_dir.parent().unwrap();
    let root = plugins.parent().unwrap();
    for dir in [plugins, &root.join("plugin-sdk"), &root.join("wit")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    ensure_target();

    // OUT_DIR is <target>/<profile>/build/<pkg>/out: share one wasm target dir
    // across profiles so debug and release builds reuse the same components.
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("wasm-agents");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", TARGET, "--locked"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // What the outer cargo set for this build script must not leak into
        // the nested build: flags for the host target, clippy's wrapper.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    for (package, _) in AGENTS {
        cmd.args(["-p", package]);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the wasm agents");
    if !status.success() {
        panic!("building the agents in plugins/ for {TARGET} failed (see the cargo output above)");
    }

    let wasm_dir = target_dir.join(TARGET).join("release");
    let mut code = String::new();
    let mut all = String::new();
    for (package, stem) in AGENTS {
        let path = wasm_dir.join(format!("{stem}.wasm"));
        assert!(
            path.exists(),
            "cargo built {package} but {} is missing",
            path.display()
        );
        let konst = package.to_uppercase().replace('-', "_");
        writeln!(code, "/// The `{package}` component.").unwrap();
        writeln!(
            code,
            "pub const {konst}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        writeln!(all, "    ({package:?}, {konst}),").unwrap();
    }
    writeln!(code, "/// Every component: (package name, path).").unwrap();
    writeln!(code, "pub const ALL: &[(&str, &str)] = &[\n{all}];").unwrap();
    std::fs::write(out_dir.join("agents.rs"), code).unwrap();
}

/// Installs the wasm target through rustup when it is missing, or says how to.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run rustc --print sysroot");
    let sysroot = String::from_utf8(sysroot.stdout).unwrap();
    let libdir = Path::new(sysroot.trim()).join("lib/rustlib").join(TARGET);
    if libdir.exists() {
        return;
    }
    println!("cargo:warning=the {TARGET} target is missing; installing it with rustup");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(s) if s.success() => {}
        _ => panic!(
            "the Rust target {TARGET} is not installed and `rustup target add {TARGET}` failed.\n\
             Install it by hand with `rustup target add {TARGET}` and build again."
        ),
    }
}
