//! `corral new agent`: scaffolds a self-contained agent project (SDK and contract vendored) in Rust, Python or JavaScript.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::Exit;

#[derive(Args)]
pub struct NewArgs {
    #[command(subcommand)]
    what: New,
}

#[derive(Subcommand)]
enum New {
    /// A working agent project: the SDK, a typed example, `build.sh`, and `test.sh`, which calls it through `corral call`.
    Agent(AgentArgs),
}

#[derive(Args)]
struct AgentArgs {
    /// The agent's name: lowercase letters, digits and `-`, starting with a letter.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to create the project [default: ./<name>].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
}

/// The contract every SDK speaks (0.2.0: with `model` and `http`).
const WIT_0_2: &str = include_str!("../../../../wit/since_v0.2.0/agent.wit");
/// The WASI interfaces the contract's `agent-http` world imports, vendored
/// beside it (every WIT tool resolves `deps/` in the package's directory).
const WASI_DEPS: &[(&str, &str)] = &[
    (
        "cli",
        include_str!("../../../../wit/since_v0.2.0/deps/cli/cli.wit"),
    ),
    (
        "clocks",
        include_str!("../../../../wit/since_v0.2.0/deps/clocks/clocks.wit"),
    ),
    (
        "filesystem",
        include_str!("../../../../wit/since_v0.2.0/deps/filesystem/filesystem.wit"),
    ),
    (
        "http",
        include_str!("../../../../wit/since_v0.2.0/deps/http/http.wit"),
    ),
    (
        "io",
        include_str!("../../../../wit/since_v0.2.0/deps/io/io.wit"),
    ),
    (
        "random",
        include_str!("../../../../wit/since_v0.2.0/deps/random/random.wit"),
    ),
    (
        "sockets",
        include_str!("../../../../wit/since_v0.2.0/deps/sockets/sockets.wit"),
    ),
];
const README: &str = include_str!("../../templates/README.md.tmpl");
const TEST: &str = include_str!("../../templates/test.sh");

const RUST_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/lib.rs.tmpl"),
    ),
    ("build.sh", include_str!("../../templates/rust/build.sh")),
    (
        "vendor/corral-sdk/Cargo.toml",
        include_str!("../../templates/rust/sdk-Cargo.toml.tmpl"),
    ),
    (
        "vendor/corral-sdk/src/lib.rs",
        include_str!("../../../../plugin-sdk/src/lib.rs"),
    ),
    (
        "vendor/corral-sdk/src/agent.rs",
        include_str!("../../../../plugin-sdk/src/agent.rs"),
    ),
    (
        "vendor/corral-sdk/src/context.rs",
        include_str!("../../../../plugin-sdk/src/context.rs"),
    ),
    (
        "vendor/corral-sdk/src/error.rs",
        include_str!("../../../../plugin-sdk/src/error.rs"),
    ),
    (
        "vendor/corral-sdk/src/packet.rs",
        include_str!("../../../../plugin-sdk/src/packet.rs"),
    ),
    (
        "vendor/corral-sdk/src/http.rs",
        include_str!("../../../../plugin-sdk/src/http.rs"),
    ),
    (
        "vendor/corral-sdk/src/artifacts.rs",
        include_str!("../../../../plugin-sdk/src/artifacts.rs"),
    ),
    ("vendor/wit/since_v0.2.0/agent.wit", WIT_0_2),
    (".gitignore", "target/\n*.wasm\n"),
];

const PYTHON_FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py.tmpl")),
    (
        "requirements.txt",
        include_str!("../../templates/python/requirements.txt"),
    ),
    ("build.sh", include_str!("../../templates/python/build.sh")),
    (
        "corral_sdk/__init__.py",
        include_str!("../../../../plugin-sdk/python/corral_sdk/__init__.py"),
    ),
    (
        "corral_sdk/http.py",
        include_str!("../../../../plugin-sdk/python/corral_sdk/http.py"),
    ),
    (
        "corral_sdk/artifacts.py",
        include_str!("../../../../plugin-sdk/python/corral_sdk/artifacts.py"),
    ),
    ("wit/agent.wit", WIT_0_2),
    (".gitignore", ".venv/\n__pycache__/\n*.wasm\n"),
];

const JS_FILES: &[(&str, &str)] = &[
    ("agent.js", include_str!("../../templates/js/agent.js.tmpl")),
    (
        "package.json",
        include_str!("../../templates/js/package.json.tmpl"),
    ),
    (
        "build.mjs",
        include_str!("../../../../plugins/js/build.mjs"),
    ),
    (
        "package-lock.json",
        include_str!("../../../../plugins/js/package-lock.json"),
    ),
    ("build.sh", include_str!("../../templates/js/build.sh")),
    (
        "corral-sdk/index.js",
        include_str!("../../../../plugin-sdk/js/index.js"),
    ),
    ("wit/agent.wit", WIT_0_2),
    (".gitignore", "node_modules/\n*.wasm\n"),
];

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

pub fn run(args: NewArgs) -> Exit {
    let New::Agent(a) = args.what;
    if !valid_name(&a.name) {
        eprintln!(
            "error: `{}` is not a usable agent name: use lowercase letters, digits and `-`, starting with a letter (e.g. `word-count`)",
            a.name
        );
        return Exit::Usage;
    }
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        eprintln!(
            "error: {} already exists and is not empty; pick another `--dir`",
            dir.display()
        );
        return Exit::Usage;
    }
    let wit_version = "0.2.0";
    let (files, lang, lang_name, notes) = match a.lang {
        Lang::Rust => (
            RUST_FILES,
            "rust",
            "Rust",
            "The agent is `src/lib.rs`: typed `Input` and `Output` (their JSON Schemas are derived with `schemars`) and a `run` that returns the output or an `AgentError` (transient, permanent or degradable). `vendor/corral-sdk` is the SDK. `build.sh` needs the Rust toolchain; it adds the `wasm32-wasip2` target if it is missing.",
        ),
        Lang::Python => (
            PYTHON_FILES,
            "python",
            "Python",
            "The agent is `app.py`: `Input` and `Output` dataclasses (their JSON Schemas are derived from the type hints; or set `input_schema`/`output_schema` as dicts) and a `run` that returns the output or raises `AgentError.transient/permanent/degradable`. `corral_sdk/` is the SDK (`corral_sdk.http` sends HTTP requests: list `http` in a `features` file to build against the `agent-http` world). `build.sh` needs python3 with venv and pip; it installs the pinned componentize-py into `.venv`. The component is about 18 MB and takes seconds to compile the first time it is called; corral caches the compiled form, so later calls start in milliseconds.",
        ),
        Lang::Js => (
            JS_FILES,
            "js",
            "JavaScript",
            "The agent is `agent.js`: `defineAgent({ name, version, description, inputSchema, outputSchema, run(ctx, payload) })`; `run` returns the output or throws `AgentError.transient/permanent/degradable(message)`. `corral-sdk/` is the SDK. `build.sh` needs node and npm; it installs the pinned componentize-js into `node_modules`. The component is about 12 MB and takes seconds to compile the first time it is called; corral caches the compiled form, so later calls start in milliseconds.",
        ),
    };
    let description = format!("The {} agent.", a.name);
    let fill = |t: &str| {
        t.replace("{{name}}", &a.name)
            .replace("{{crate}}", &a.name.replace('-', "_"))
            .replace("{{description}}", &description)
            .replace("{{lang}}", lang)
            .replace("{{lang_name}}", lang_name)
            .replace("{{lang_notes}}", notes)
            .replace("{{wit_version}}", wit_version)
            .replace("{{sdk_version}}", env!("CARGO_PKG_VERSION"))
    };
    let mut all: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), fill(t)))
        .collect();
    all.push(("README.md".into(), fill(README)));
    all.push(("test.sh".into(), fill(TEST)));
    let wit_dir = match a.lang {
        Lang::Rust => "vendor/wit/since_v0.2.0",
        Lang::Python | Lang::Js => "wit",
    };
    for (name, text) in WASI_DEPS {
        all.push((
            format!("{wit_dir}/deps/{name}/{name}.wit"),
            text.to_string(),
        ));
    }
    for (rel, text) in &all {
        if let Err(e) = write(&dir.join(rel), text) {
            eprintln!("error: cannot write {}: {e}", dir.join(rel).display());
            return Exit::Host;
        }
    }
    println!(
        "created {} agent `{}` in {}\n  cd {} && ./build.sh && corral call {}.wasm --input '{{\"name\": \"you\"}}'",
        lang_name,
        a.name,
        dir.display(),
        dir.display(),
        a.name
    );
    Exit::Success
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    if path.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
