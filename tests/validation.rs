//! Every validation error on a corpus of invalid workflows (`tests/workflows/invalid/`), with the exact message.
//!
//! The expected diagnostics live in `tests/workflows/invalid.expected`;
//! `BLESS=1 cargo test --test validation` rewrites it after a deliberate change.

#[path = "support.rs"]
mod support;

use std::path::{Path, PathBuf};

use corral::workflow::{source, validate::validate};
use support::*;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workflows")
}

#[tokio::test]
async fn invalid_workflows_get_exact_diagnostics() {
    let agents_dir = Path::new(agents::ECHO)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    let mut actual = String::new();
    for file in &files {
        let name = format!("invalid/{}", file.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(file)
            .unwrap()
            .replace("@AGENTS@", &agents_dir);
        let result = match source::parse(Path::new(&name), &text) {
            Ok(src) => validate(&src, runtime()).await.map(|_| ()),
            Err(d) => Err(d),
        };
        let diags = result.expect_err(&format!("{name} must be invalid"));
        // The echo component's digest moves with every toolchain or SDK change.
        let echo_digest = runtime()
            .load(agents::ECHO)
            .await
            .unwrap()
            .digest()
            .to_owned();
        for d in diags {
            actual.push_str(
                &d.to_string()
                    .replace(&agents_dir, "@AGENTS@")
                    .replace(&echo_digest, "@ECHO_DIGEST@"),
            );
            actual.push('\n');
        }
    }
    let golden = corpus().join("invalid.expected");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(5)
            .map(|(e, a)| format!("expected: {e}\n  actual: {a}"))
            .collect();
        panic!(
            "diagnostics differ from {} (BLESS=1 rewrites it):\n{}\n(expected {} lines, got {})",
            golden.display(),
            diff.join("\n"),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

#[tokio::test]
async fn the_examples_are_valid() {
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let src = source::load(&path).unwrap_or_else(|d| panic!("{d:#?}"));
            validate(&src, runtime())
                .await
                .unwrap_or_else(|d| panic!("{}: {d:#?}", path.display()));
        }
    }
}

/// `corral validate` on a workflow in `dir` whose agent sits in the built
/// agents' directory, outside it: refused by path, unless allowed.
#[test]
fn components_outside_the_workflow_need_an_allowed_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: w\nagents:\n  echo: {{ component: '{}' }}\nsteps:\n  - {{ id: a, agent: echo, input: {{ text: x }} }}\n",
            agents::ECHO
        ),
    )
    .unwrap();
    let corral = |allow: Option<&Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_corral"));
        c.args(["validate", file.to_str().unwrap()])
            .env("CORRAL_CACHE_DIR", dir.path().join("cache"))
            .env_remove("CORRAL_ALLOW_PATHS");
        if let Some(p) = allow {
            c.arg("--allow-path").arg(p);
        }
        c.output().unwrap()
    };
    let out = corral(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(
        stderr.contains("w.yaml:4: agents.echo.component: `")
            && stderr.contains("is outside the workflow's directory")
            && stderr.contains("--allow-path <dir>"),
        "{stderr}"
    );
    let out = corral(Some(&wasm_agents_dir()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn oversized_params_are_refused_before_parsing() {
    use corral::workflow::definition::ParamType;
    use corral::workflow::limits::MAX_PARAM_BYTES;
    use corral::workflow::validate::param_value;
    let big = format!("[{}1]", "1,".repeat(MAX_PARAM_BYTES / 2));
    let e = param_value("list", ParamType::Array, &big).unwrap_err();
    assert!(
        e.contains("param `list` is") && e.contains("at most 1048576 bytes"),
        "{e}"
    );
    let e = param_value("text", ParamType::String, &"x".repeat(MAX_PARAM_BYTES + 1)).unwrap_err();
    assert!(e.contains("at most 1048576 bytes"), "{e}");
    assert!(param_value("text", ParamType::String, &"x".repeat(MAX_PARAM_BYTES)).is_ok());
}
