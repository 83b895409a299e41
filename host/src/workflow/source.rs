//! Reading a workflow file: the version checked first, strict typed parsing, and a map from fields to lines for every later error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::definition::{WORKFLOW_VERSION, WorkflowDef};

/// A problem in a workflow file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field, such as `steps[2].agent`.
    pub field: String,
    pub message: String,
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
    /// The text that was parsed: what a durable run records, never the
    /// file read again.
    pub text: std::sync::Arc<str>,
}

/// Reads and parses `path` (YAML, or JSON, which is YAML too).
pub fn load(path: &Path) -> Result<WorkflowSource, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.display().to_string(),
            line: None,
            field: "(file)".into(),
            message: format!("cannot read the workflow file: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Parses workflow text; `path` names the file in diagnostics and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<WorkflowSource, Vec<Diagnostic>> {
    let mut map = SourceMap {
        file: path.to_owned(),
        lines: HashMap::new(),
    };
    let fail = |map: &SourceMap, line: Option<usize>, field: &str, message: String| {
        let mut d = map.diag(field, message);
        if line.is_some() {
            d.line = line;
        }
        vec![d]
    };

    // The version first: a file for another version gets that message, not
    // a cascade of field errors.
    let loose: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        fail(&map, line, "(file)", format!("not valid YAML or JSON: {e}"))
    })?;
    if let Ok(node) = marked_yaml::parse_yaml(0, text) {
        map.index(String::new(), &node);
    }
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

    let def: WorkflowDef = serde_yaml_ng::from_str(text).map_err(|e| {
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
    let digest = crate::digest::digest(text.as_bytes());
    Ok(WorkflowSource {
        def,
        map,
        base_dir,
        digest,
        text: text.into(),
    })
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

    #[test]
    fn fields_map_to_lines() {
        let src = parse(Path::new("w.yaml"), OK).unwrap();
        assert_eq!(src.map.diag("steps[0].agent", "x").line, Some(8));
        assert_eq!(src.map.diag("steps[0].input.text", "x").line, Some(7));
    }
}
