//! Reading a workflow file: size and shape bounded first, then the version, strict typed parsing, and a map from fields to lines for every later error.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::{LoadError, LoaderOptions};
use serde::Serialize;

use super::definition::{WORKFLOW_VERSION, WorkflowDef};
use super::limits::{MAX_FILE_BYTES, MAX_FILE_DEPTH};
use super::shape;

/// A problem in a workflow file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field, such as `steps[2].agent`.
    pub field: String,
    pub message: String,
    /// The file asks for more than its scope may ever grant (a tenant's
    /// ceiling), rather than being wrong.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}: {}", self.file, self.field, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.field, self.message),
        }
    }
}

/// Where each field of the file is, for messages.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    pub file: PathBuf,
    lines: HashMap<String, usize>,
}

impl SourceMap {
    /// A diagnostic for `field` (such as `steps[2].agent`), located at the
    /// nearest enclosing field the map knows.
    pub fn diag(&self, field: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let field = field.into();
        let mut probe = field.as_str();
        let line = loop {
            if let Some(l) = self.lines.get(probe) {
                break Some(*l);
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe = &probe[..i],
                None => break None,
            }
        };
        Diagnostic {
            file: self.file.display().to_string(),
            line,
            field,
            message: message.into(),
            denied: false,
        }
    }

    fn index(&mut self, path: String, node: &marked_yaml::Node) {
        if let Some(start) = node.span().start() {
            self.lines.entry(path.clone()).or_insert(start.line());
        }
        match node {
            marked_yaml::Node::Mapping(map) => {
                for (key, value) in map.iter() {
                    let child = if path.is_empty() {
                        key.as_str().to_owned()
                    } else {
                        format!("{path}.{}", key.as_str())
                    };
                    if let Some(start) = key.span().start() {
                        self.lines.insert(child.clone(), start.line());
                    }
                    self.index(child, value);
                }
            }
            marked_yaml::Node::Sequence(seq) => {
                for (i, value) in seq.iter().enumerate() {
                    self.index(format!("{path}[{i}]"), value);
                }
            }
            marked_yaml::Node::Scalar(_) => {}
        }
    }
}

/// A parsed workflow file and where its fields are.
#[derive(Debug, Clone)]
pub struct WorkflowSource {
    pub def: WorkflowDef,
    pub map: SourceMap,
    /// The directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// `sha256:` of the file's text.
    pub digest: String,
    /// Exactly the text that was parsed (and digested): what a durable run
    /// records, so the stored definition is the validated one.
    pub text: Arc<str>,
}

/// A diagnostic about the file as a whole, or about one line of it.
fn file_diag(path: &Path, line: Option<usize>, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic {
        file: path.display().to_string(),
        line,
        field: "(file)".into(),
        message,
        denied: false,
    }]
}

fn too_large(path: &Path, size: u64) -> Vec<Diagnostic> {
    file_diag(
        path,
        None,
        format!(
            "the file is {size} bytes; a workflow file may have at most {MAX_FILE_BYTES} bytes (1 MiB)"
        ),
    )
}

/// Reads and parses `path` (YAML; strict JSON when the name ends in `.json`).
/// A file over [`MAX_FILE_BYTES`] is refused before it is read whole.
pub fn load(path: &Path) -> Result<WorkflowSource, Vec<Diagnostic>> {
    let cannot =
        |e: std::io::Error| file_diag(path, None, format!("cannot read the workflow file: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(too_large(path, size));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        file_diag(
            path,
            None,
            format!("the workflow file is not UTF-8 text: {e}"),
        )
    })?;
    parse(path, &text)
}

/// Runs a third-party parser so that a panic inside it becomes a
/// diagnostic: a workflow file must never take the host down.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, Vec<Diagnostic>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        file_diag(
            path,
            None,
            "the YAML parser failed on this file; simplify it".into(),
        )
    })
}

/// Parses workflow text; `path` names the file in diagnostics and anchors relative paths.
///
/// In order, each step bounded before the next runs: the size; for a
/// `.json` name, strict JSON; the shape (depth, one document, no anchors,
/// aliases or tags: [`shape::check`], linear); duplicate keys and the line
/// map (marked-yaml); the version; the typed parse (serde_yaml_ng).
pub fn parse(path: &Path, text: &str) -> Result<WorkflowSource, Vec<Diagnostic>> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, text.len() as u64));
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        // serde_json bounds its own recursion; JSON is then read as the
        // YAML it also is, for the line map and field paths.
        // Into a `Value` (not `IgnoredAny`): only that path names a trailing comma.
        guarded(path, || {
            serde_json::from_str::<serde_json::Value>(text).map(drop)
        })?
        .map_err(|e| {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            file_diag(
                path,
                Some(e.line()),
                format!("not valid JSON: {message} (column {})", e.column()),
            )
        })?;
    }
    guarded(path, || shape::check(text, MAX_FILE_DEPTH))?
        .map_err(|r| file_diag(path, Some(r.line), r.message))?;
    let map = line_map(path, text)?;
    let fail = |map: &SourceMap, line: Option<usize>, field: &str, message: String| {
        let mut d = map.diag(field, message);
        if line.is_some() {
            d.line = line;
        }
        vec![d]
    };

    // The version first: a file for another version gets that message, not
    // a cascade of field errors.
    let loose: serde_yaml_ng::Value =
        guarded(path, || serde_yaml_ng::from_str(text))?.map_err(|e| {
            let line = e.location().map(|l| l.line());
            fail(&map, line, "(file)", format!("not valid YAML: {e}"))
        })?;
    match loose.get("version") {
        None => {
            return Err(fail(
                &map,
                Some(1),
                "version",
                format!(
                    "the file has no `version` field; add `version: {WORKFLOW_VERSION}` at the top"
                ),
            ));
        }
        Some(v) if v.as_u64() != Some(u64::from(WORKFLOW_VERSION)) => {
            return Err(fail(
                &map,
                None,
                "version",
                format!(
                    "workflow version {} is not supported; this corral reads version {WORKFLOW_VERSION}",
                    serde_json::to_string(v).unwrap_or_default()
                ),
            ));
        }
        Some(_) => {}
    }

    let def: WorkflowDef = guarded(path, || serde_yaml_ng::from_str(text))?.map_err(|e| {
        let line = e.location().map(|l| l.line());
        // serde_yaml_ng prefixes the path it was at: `steps[1]: unknown field ...`.
        let message = e.to_string();
        let (field, rest) = match message.split_once(": ") {
            Some((f, rest)) if !f.contains(' ') => (f.to_owned(), rest.to_owned()),
            _ => ("(file)".to_owned(), message.clone()),
        };
        let rest = rest.split(" at line ").next().unwrap_or(&rest).to_owned();
        fail(&map, line, &field, rest)
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let digest = corral_runtime::digest::digest(text.as_bytes());
    Ok(WorkflowSource {
        def,
        map,
        base_dir,
        digest,
        text: text.into(),
    })
}

/// Where each field is, and a duplicate key reported at the duplicate.
fn line_map(path: &Path, text: &str) -> Result<SourceMap, Vec<Diagnostic>> {
    let mut map = SourceMap {
        file: path.to_owned(),
        lines: HashMap::new(),
    };
    // Other load errors (a top level that is not a mapping) are left to
    // serde, whose messages name the expected fields.
    if let Ok(node) = guarded(path, || marked_yaml::parse_yaml(0, text))? {
        map.index(String::new(), &node);
    }
    let strict = LoaderOptions::default().error_on_duplicate_keys(true);
    if let Err(LoadError::DuplicateKey(dup)) = guarded(path, || {
        marked_yaml::parse_yaml_with_options(0, text, strict)
    })? {
        let line = |n: &marked_yaml::types::MarkedScalarNode| n.span().start().map(|m| m.line());
        let (first, again) = (line(&dup.prev_key), line(&dup.key));
        let key = dup.key.as_str();
        // The map knows the key's path, at one of its two lines.
        let field = map
            .lines
            .iter()
            .filter(|(f, l)| {
                (f.as_str() == key || f.ends_with(&format!(".{key}")))
                    && (Some(**l) == first || Some(**l) == again)
            })
            .map(|(f, _)| f.clone())
            .min()
            .unwrap_or_else(|| key.to_owned());
        let message = match first {
            Some(l) => format!("duplicate key `{key}`: it is already set at line {l}"),
            None => format!("duplicate key `{key}`"),
        };
        let mut d = map.diag(field, message);
        d.line = again.or(d.line);
        return Err(vec![d]);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "version: 1\nname: t\nagents:\n  a:\n    component: a.wasm\nsteps:\n  - id: s\n    agent: a\n";

    #[test]
    fn unknown_fields_name_the_field_and_line() {
        let text = OK.replace("    agent: a\n", "    agent: a\n    retires: 3\n");
        let err = parse(Path::new("w.yaml"), &text).unwrap_err();
        assert_eq!(err[0].line, Some(9), "{err:?}");
        assert!(
            err[0].message.contains("unknown field `retires`"),
            "{err:?}"
        );
        assert_eq!(err[0].field, "steps[0]");
    }

    #[test]
    fn the_version_is_checked_first() {
        let text = OK
            .replace("version: 1", "version: 7")
            .replace("agent: a", "agnet: a");
        let err = parse(Path::new("w.yaml"), &text).unwrap_err();
        assert!(
            err[0]
                .message
                .contains("workflow version 7 is not supported"),
            "{err:?}"
        );
        let err = parse(Path::new("w.yaml"), "name: x\nsteps: []\n").unwrap_err();
        assert!(err[0].message.contains("no `version` field"));
    }

    #[test]
    fn json_files_parse_too() {
        let text = r#"{"version": 1, "name": "t", "agents": {"a": {"component": "a.wasm"}},
            "steps": [{"id": "s", "agent": "a", "input": {"n": 5}}]}"#;
        let src = parse(Path::new("w.json"), text).unwrap();
        assert_eq!(src.def.steps[0].input["n"], 5);
        let err = parse(Path::new("w.json"), &text.replace("\"agent\"", "\"agnet\"")).unwrap_err();
        assert!(err[0].message.contains("unknown field `agnet`"), "{err:?}");
    }

    fn one(path: &str, text: &str) -> Diagnostic {
        let mut d = parse(Path::new(path), text).expect_err(text);
        assert_eq!(d.len(), 1, "{d:?}");
        d.remove(0)
    }

    #[test]
    fn several_shaped_forms_name_the_field_its_line_and_the_forms() {
        let head = "version: 1\nname: t\nagents:\n  a:\n    component: a.wasm\nsteps:\n  - id: s\n    agent: a\n";
        let cases = [
            (
                "    budget:\n      fuel: 10X\n",
                "steps[0].budget.fuel",
                10,
                "5_000_000, 5M or 8.15G",
            ),
            (
                "    budget:\n      fuel: -5\n",
                "steps[0].budget.fuel",
                10,
                "is negative",
            ),
            (
                "    budget:\n      memory: 12parsecs\n",
                "steps[0].budget.memory",
                10,
                "64MiB",
            ),
            (
                "    budget:\n      memory: -5\n",
                "steps[0].budget.memory",
                10,
                "64MiB",
            ),
            (
                "    budget:\n      timeout: 5\n",
                "steps[0].budget.timeout",
                10,
                "has no unit",
            ),
            (
                "    budget:\n      timeout: 10X\n",
                "steps[0].budget.timeout",
                10,
                "250ms, 10s",
            ),
            (
                "    budget:\n      timeout: 99999999999999999999h\n",
                "steps[0].budget.timeout",
                10,
                "250ms, 10s",
            ),
            (
                "    join: some\n",
                "steps[0].join",
                9,
                "`all`, `any` or `{at_least: N}`",
            ),
            (
                "    join: {at_most: 2}\n",
                "steps[0].join",
                9,
                "unknown field `at_most`",
            ),
            (
                "    join: {at_least: -1}\n",
                "steps[0].join.at_least",
                9,
                "-1",
            ),
            (
                "    join: 5\n",
                "steps[0].join",
                9,
                "`all`, `any` or `{at_least: N}`",
            ),
            (
                "    cache: maybe\n",
                "steps[0].cache",
                9,
                "`true`, `false` or `{ttl: <duration>}`",
            ),
            (
                "    cache: {ttl: 5}\n",
                "steps[0].cache.ttl",
                9,
                "has no unit",
            ),
            (
                "    cache: {tll: 1h}\n",
                "steps[0].cache",
                9,
                "unknown field `tll`",
            ),
        ];
        for (tail, field, line, says) in cases {
            let d = one("w.yaml", &format!("{head}{tail}"));
            assert_eq!(
                (d.field.as_str(), d.line),
                (field, Some(line)),
                "{tail}: {d}"
            );
            assert!(d.message.contains(says), "{tail}: {d}");
            assert!(!d.message.contains("untagged"), "{d}");
        }
    }

    #[test]
    fn a_duplicate_key_is_reported_at_the_duplicate() {
        let text = OK.replace("    agent: a\n", "    agent: a\n    id: t\n");
        let d = one("w.yaml", &text);
        assert_eq!((d.field.as_str(), d.line), ("steps[0].id", Some(9)), "{d}");
        assert!(d.message.contains("already set at line 7"), "{d}");
        let d = one("w.yaml", &format!("{OK}name: again\n"));
        assert_eq!((d.field.as_str(), d.line), ("name", Some(9)), "{d}");
        // JSON too: serde_json would keep the last one silently.
        let d = one(
            "w.json",
            r#"{"version": 1, "name": "a",
            "name": "b"}"#,
        );
        assert_eq!(d.line, Some(2), "{d}");
    }

    #[test]
    fn documents_anchors_and_aliases_get_a_line() {
        let d = one("w.yaml", &format!("{OK}---\n{OK}"));
        assert_eq!(d.line, Some(9), "{d}");
        let bomb = format!(
            "{OK}params:\n  p: {{ type: array, default: &a [x, x] }}\n  q: {{ type: array, default: [*a, *a] }}\n"
        );
        let d = one("w.yaml", &bomb);
        assert_eq!(d.line, Some(10), "{d}");
        assert!(d.message.contains("anchors"), "{d}");
    }

    #[test]
    fn deep_nesting_is_refused_before_the_yaml_parsers_see_it() {
        let deep = format!(
            "{OK}params:\n  p: {{ type: array, default: {}{} }}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let d = one("w.yaml", &deep);
        assert_eq!(d.line, Some(10), "{d}");
        assert!(d.message.contains("more than 64"), "{d}");
        let d = one(
            "w.json",
            &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        );
        assert_eq!(d.line, Some(1), "{d}");
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let big = format!(
            "{OK}description: \"{}\"\n",
            "x".repeat(MAX_FILE_BYTES as usize)
        );
        let d = one("w.yaml", &big);
        assert!(d.message.contains("at most 1048576 bytes"), "{d}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.yaml");
        std::fs::write(&file, &big).unwrap();
        let err = load(&file).unwrap_err();
        assert!(
            err[0].message.contains(&format!("is {} bytes", big.len())),
            "{err:?}"
        );
    }

    #[test]
    fn json_is_strict_and_keeps_its_lines() {
        let text = "{\n  \"version\": 1,\n  \"name\": \"t\",\n  \"agents\": {\"a\": {\"component\": \"a.wasm\"}},\n  \"steps\": [{\"id\": \"s\", \"agent\": \"a\"},]\n}\n";
        let d = one("w.json", text);
        assert_eq!(d.line, Some(5), "{d}");
        assert!(d.message.contains("not valid JSON: trailing comma"), "{d}");
        // The same text is YAML that was accepted before.
        assert!(parse(Path::new("w.yaml"), text).is_ok());
        let compact = r#"{"version":1,"name":"t","agents":{"a":{"component":"a.wasm"}},"steps":[{"id":"s","agent":"a"}]}"#;
        assert!(parse(Path::new("w.json"), compact).is_ok());
        let d = one(
            "w.json",
            &text.replace(",]", "]").replace("\"agent\"", "\"agnet\""),
        );
        assert_eq!((d.field.as_str(), d.line), ("steps[0]", Some(5)), "{d}");
    }

    #[test]
    fn the_parsed_text_is_kept_exactly() {
        let src = parse(Path::new("w.yaml"), OK).unwrap();
        assert_eq!(&*src.text, OK);
        assert_eq!(src.digest, corral_runtime::digest::digest(OK.as_bytes()));
    }

    #[test]
    fn odd_text_gets_a_diagnostic_not_a_panic() {
        for text in [
            "",
            "\0",
            "[",
            "]",
            "{",
            "}",
            ":",
            "- -",
            "? ? ?",
            "&a",
            "*a",
            "!x",
            "%YAML 1.2\n---\n",
            "---\n...\n---",
            "version: 1\nsteps: [",
            "\t\tversion: 1",
            "'",
            "\"",
            "|\n  x",
            "version: 1\nname: [1, 2]\nagents: 5\nsteps: {}\n",
            "\u{feff}version: 1",
        ] {
            for name in ["w.yaml", "w.json"] {
                let _ = parse(Path::new(name), text);
            }
        }
    }

    #[test]
    fn fields_map_to_lines() {
        let src = parse(Path::new("w.yaml"), OK).unwrap();
        assert_eq!(src.map.diag("steps[0].agent", "x").line, Some(8));
        assert_eq!(src.map.diag("steps[0].input.text", "x").line, Some(7));
    }
}
