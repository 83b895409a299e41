//! Builds every agent under `plugins/` (Rust for `wasm32-wasip2`, Python with componentize-py, JavaScript with componentize-js) and writes one path constant per agent.
//!
//! Everything lands in `target/wasm-agents`, shared by every profile. Cargo
//! caches the nested Rust build; a Python or JS component is rebuilt only
//! when it is older than its sources, so a second `cargo test` rebuilds
//! nothing. The Python toolchain is pinned in `plugins/python/requirements.txt`
//! and installed into a venv there; the JS one in `plugins/js/package-lock.json`.

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
    ("latch", "latch"),
    ("extract", "extract"),
    ("fetch", "fetch"),
    ("orchestrate", "orchestrate"),
    ("bulk", "bulk"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let plugins = manifest_dir.parent().unwrap();
    let root = plugins.parent().unwrap();
    // Not plugins/ as a whole: node_modules would be scanned on every build.
    let mut watched = vec![
        root.join("wit"),
        root.join("plugin-sdk"),
        plugins.join("python"),
    ];
    watched.extend(AGENTS.iter().map(|(package, _)| plugins.join(package)));
    watched.push(plugins.join("textkit"));
    watched.extend(
        ["build.mjs", "package.json", "package-lock.json"]
            .iter()
            .map(|f| plugins.join("js").join(f)),
    );
    watched.extend(sources(&plugins.join("js"), "agent.js"));
    for path in &watched {
        println!("cargo:rerun-if-changed={}", path.display());
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
    // (name in ALL, constant, what it is, component path) for every agent.
    let mut built: Vec<(String, String, String, PathBuf)> = Vec::new();
    for (package, stem) in AGENTS {
        let path = wasm_dir.join(format!("{stem}.wasm"));
        assert!(
            path.exists(),
            "cargo built {package} but {} is missing",
            path.display()
        );
        let konst = package.to_uppercase().replace('-', "_");
        built.push((
            package.to_string(),
            konst,
            format!("The `{package}` component."),
            path,
        ));
    }
    for (lang, paths) in [
        ("py", python_agents(root, &target_dir)),
        ("js", js_agents(root, &target_dir)),
    ] {
        for path in paths {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let konst = format!("{lang}_{name}").to_uppercase().replace('-', "_");
            let doc = format!("The `{name}` agent, in {lang}.");
            built.push((format!("{lang}-{name}"), konst, doc, path));
        }
    }
    for (name, konst, doc, path) in &built {
        writeln!(code, "/// {doc}").unwrap();
        writeln!(
            code,
            "pub const {konst}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        writeln!(all, "    ({name:?}, {konst}),").unwrap();
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

/// Agent directories under `dir` that hold `entry` (`app.py`, `agent.js`).
fn sources(dir: &Path, entry: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(entry).is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The newest modification time of the files under `paths`.
fn newest(paths: &[PathBuf]) -> std::time::SystemTime {
    fn walk(p: &Path, best: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "node_modules" || n == "__pycache__")
            {
                return;
            }
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), best);
            }
        } else if let Ok(m) = meta.modified() {
            *best = (*best).max(m);
        }
    }
    let mut best = std::time::SystemTime::UNIX_EPOCH;
    for p in paths {
        walk(p, &mut best);
    }
    best
}

/// Whether `out` is missing or older than any of `inputs`.
fn stale(out: &Path, inputs: &[PathBuf]) -> bool {
    match std::fs::metadata(out).and_then(|m| m.modified()) {
        Ok(built) => newest(inputs) > built,
        Err(_) => true,
    }
}

fn run(cmd: &mut Command, what: &str, hint: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what} failed ({s}); {hint}"),
        Err(e) => panic!("{what} could not start ({e}); {hint}"),
    }
}

/// Builds `plugins/python/*/app.py` with componentize-py from a pinned venv.
fn python_agents(root: &Path, target_dir: &Path) -> Vec<PathBuf> {
    let agents = sources(&root.join("plugins/python"), "app.py");
    let requirements = root.join("plugins/python/requirements.txt");
    let venv = target_dir.join("py-venv");
    let tool = venv.join("bin/componentize-py");
    let hint = "the Python agents need python3 (3.10 or newer) with the venv module and pip, \
                and access to PyPI for the pinned componentize-py";
    if stale(&tool, std::slice::from_ref(&requirements)) {
        println!(
            "cargo:warning=installing the Python agent toolchain (plugins/python/requirements.txt) into {}",
            venv.display()
        );
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating a Python venv",
            hint,
        );
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
            "pip install -r plugins/python/requirements.txt",
            hint,
        );
        // pip leaves the script's old mtime; mark the toolchain as current.
        let _ = std::fs::File::options()
            .append(true)
            .open(&tool)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
    let sdk = root.join("plugin-sdk/python");
    let wit = root.join("wit/since_v0.2.0");
    let out_dir = target_dir.join("python");
    std::fs::create_dir_all(&out_dir).unwrap();
    agents
        .iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let out = out_dir.join(format!("{name}.wasm"));
            if stale(&out, &[dir.clone(), sdk.clone(), wit.clone(), tool.clone()]) {
                run(
                    Command::new(&tool)
                        // No __pycache__ in the source tree: it would retrigger this script.
                        .env("PYTHONDONTWRITEBYTECODE", "1")
                        .arg("--quiet")
                        .arg("-d")
                        .arg(&wit)
                        .args(["-w", world(dir), "componentize", "app", "-p"])
                        .arg(dir)
                        .arg("-p")
                        .arg(&sdk)
                        .arg("-o")
                        .arg(&out),
                    &format!("componentize-py for plugins/python/{name}"),
                    "see its output above",
                );
            }
            out
        })
        .collect()
}

/// The world a Python agent is built against: `agent-http` when its
/// `features` file lists `http` (componentize-py binds every import of the
/// world, so only agents that send requests import `wasi:http`).
fn world(dir: &Path) -> &'static str {
    let features = std::fs::read_to_string(dir.join("features")).unwrap_or_default();
    if features.split_whitespace().any(|f| f == "http") {
        "agent-http"
    } else {
        "agent"
    }
}

/// Builds `plugins/js/*/agent.js` with componentize-js (through `plugins/js/build.mjs`).
fn js_agents(root: &Path, target_dir: &Path) -> Vec<PathBuf> {
    let js = root.join("plugins/js");
    let agents = sources(&js, "agent.js");
    let hint = "the JavaScript agents need node (18 or newer) and npm, \
                with access to the npm registry for the pinned componentize-js";
    let lock = js.join("package-lock.json");
    let installed = js.join("node_modules/.package-lock.json");
    if stale(&installed, &[lock.clone(), js.join("package.json")]) {
        println!(
            "cargo:warning=installing the JS agent toolchain (plugins/js/package-lock.json) with npm ci"
        );
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&js),
            "npm ci in plugins/js",
            hint,
        );
    }
    let inputs = [
        root.join("plugin-sdk/js"),
        root.join("wit/since_v0.2.0"),
        js.join("build.mjs"),
        installed,
    ];
    let out_dir = target_dir.join("js");
    std::fs::create_dir_all(&out_dir).unwrap();
    agents
        .iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let out = out_dir.join(format!("{name}.wasm"));
            let mut mine = inputs.to_vec();
            mine.push(dir.clone());
            if stale(&out, &mine) {
                run(
                    Command::new("node")
                        .arg(js.join("build.mjs"))
                        .arg(dir)
                        .arg(&out)
                        .current_dir(&js),
                    &format!("building plugins/js/{name} with componentize-js"),
                    hint,
                );
            }
            out
        })
        .collect()
}
