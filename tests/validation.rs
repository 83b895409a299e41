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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workflows")
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
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")).unwrap()
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
