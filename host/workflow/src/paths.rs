//! Which host paths a workflow file may name (components, granted directories): only under its own directory or one the operator allowed, checked by path before anything is read.
//!
//! A path is joined to the workflow's directory and normalized lexically
//! (`.` and `..` resolved as text), so `../../etc/passwd` and `/etc` are
//! refused without touching them. A path that passes and exists is then
//! canonicalized, so a symbolic link cannot lead outside either; the
//! canonical path is what the caller opens.

use std::path::{Component, Path, PathBuf};

/// The directories a workflow's paths must stay under.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The workflow's directory as written, for messages.
    base: PathBuf,
    /// Absolute (canonical where they exist) allowed roots, the workflow's
    /// directory first.
    roots: Vec<PathBuf>,
}

impl Confinement {
    /// The workflow's own directory (`base_dir`, relative to the working
    /// directory when relative) and the operator's `allowed` directories.
    pub fn new(base_dir: &Path, allowed: &[PathBuf]) -> Self {
        let roots = std::iter::once(base_dir)
            .chain(allowed.iter().map(PathBuf::as_path))
            .map(absolute)
            .collect();
        Self {
            base: base_dir.to_owned(),
            roots,
        }
    }

    /// The path to open for `path` as the workflow wrote it, or why it may
    /// not be opened.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
        let lexical = normalize(&self.roots[0].join(path));
        if !self.contains(&lexical) {
            return Err(format!(
                "`{}` is outside the workflow's directory ({}); a workflow may only name paths under it{}",
                path.display(),
                self.shown_base(),
                self.allow_hint()
            ));
        }
        match std::fs::canonicalize(&lexical) {
            Ok(real) if self.contains(&real) => Ok(real),
            Ok(real) => Err(format!(
                "`{}` leads through a symbolic link to {}, outside the workflow's directory ({}){}",
                path.display(),
                real.display(),
                self.shown_base(),
                self.allow_hint()
            )),
            // Missing: whoever opens it reports that.
            Err(_) => Ok(lexical),
        }
    }

    fn contains(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    fn shown_base(&self) -> String {
        if self.base.as_os_str().is_empty() {
            ".".into()
        } else {
            self.base.display().to_string()
        }
    }

    fn allow_hint(&self) -> &'static str {
        if self.roots.len() > 1 {
            " or the directories allowed with `--allow-path`"
        } else {
            "; an operator can allow another directory with `--allow-path <dir>`"
        }
    }
}

/// `p` made absolute against the working directory, canonical if it exists.
fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p).map(|a| normalize(&a)))
        .unwrap_or_else(|_| p.to_owned())
}

/// `.` dropped and `..` applied as text; never above the root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_workflow_or_an_allowed_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let wf = tmp.path().join("wf");
        let lib = tmp.path().join("lib");
        let secret = tmp.path().join("secret");
        for d in [&wf, &lib, &secret] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(lib.join("a.wasm"), "x").unwrap();
        std::fs::write(secret.join("key"), "x").unwrap();
        let only = Confinement::new(&wf, &[]);
        assert!(only.resolve(Path::new("agents/a.wasm")).is_ok());
        assert!(only.resolve(Path::new("./x/../a.wasm")).is_ok());
        for bad in [
            "../secret/key",
            "../../../../etc/passwd",
            "/etc/passwd",
            "x/../../lib/a.wasm",
        ] {
            let e = only.resolve(Path::new(bad)).unwrap_err();
            assert!(e.contains("outside the workflow's directory"), "{bad}: {e}");
            assert!(e.contains("--allow-path"), "{e}");
        }
        let with_lib = Confinement::new(&wf, std::slice::from_ref(&lib));
        assert_eq!(
            with_lib.resolve(Path::new("../lib/a.wasm")).unwrap(),
            lib.join("a.wasm").canonicalize().unwrap()
        );
        assert!(with_lib.resolve(Path::new("../secret/key")).is_err());
        // A link inside the directory that leads outside it.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&secret, wf.join("link")).unwrap();
            let e = only.resolve(Path::new("link/key")).unwrap_err();
            assert!(e.contains("symbolic link"), "{e}");
        }
    }
}
