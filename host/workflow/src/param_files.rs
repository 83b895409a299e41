//! Artifact params: each file named by `--param NAME=FILE` is copied into the store before its run exists, and held by the run once it does.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use corral_runtime::artifact::Artifact;
use corral_store::{ArtifactLimits, ArtifactRefusal, ArtifactUpload, Store};

use crate::definition::{ParamDef, ParamType};
use crate::model::Workflow;

/// Files copied into the store, waiting for their run, and the params that
/// name them.
#[derive(Default)]
pub struct Staged {
    /// `--param` pairs, each file's path replaced by its reference (JSON),
    /// ready for `resolve_params`.
    pub params: Vec<(String, String)>,
    files: Vec<StagedFile>,
}

struct StagedFile {
    param: String,
    path: PathBuf,
    upload: ArtifactUpload,
    media_type: String,
}

/// Copies the file each artifact param of `w` names in `given` into `store`
/// (read once, a megabyte at a time).
pub fn stage(
    store: &dyn Store,
    w: &Workflow,
    given: &[(String, String)],
) -> Result<Staged, Vec<String>> {
    let mut staged = Staged::default();
    let pairs = &mut staged.params;
    let mut errors = Vec::new();
    for (name, raw) in given {
        let Some(def) = w.params.get(name).filter(|p| p.ty == ParamType::Artifact) else {
            pairs.push((name.clone(), raw.clone()));
            continue;
        };
        match stage_file(store, w, name, def, Path::new(raw)) {
            Ok(file) => {
                let reference = Artifact {
                    digest: file.upload.digest(),
                    media_type: file.media_type.clone(),
                    size: file.upload.size(),
                };
                let json = serde_json::to_string(&reference).expect("a reference serializes");
                pairs.push((name.clone(), json));
                staged.files.push(file);
            }
            Err(e) => errors.push(e),
        }
    }
    let total: u64 = staged.files.iter().map(|f| f.upload.size()).sum();
    if total > w.artifact_budget {
        errors.push(format!(
            "the files given as params have {total} bytes together, more than the run's artifacts may take ({} bytes); raise `budget.artifact_bytes`",
            w.artifact_budget
        ));
    }
    if errors.is_empty() {
        Ok(staged)
    } else {
        Err(errors)
    }
}

/// Whether `given` sets an artifact param of `w` (which needs a store).
pub fn names_artifact(w: &Workflow, given: &[(String, String)]) -> Option<String> {
    given
        .iter()
        .find(|(n, _)| w.params.get(n).is_some_and(|p| p.ty == ParamType::Artifact))
        .map(|(n, _)| n.clone())
}

fn stage_file(
    store: &dyn Store,
    w: &Workflow,
    name: &str,
    def: &ParamDef,
    path: &Path,
) -> Result<StagedFile, String> {
    let cannot = |e: &dyn std::fmt::Display| {
        format!(
            "param `{name}`: cannot read the file `{}`: {e}",
            path.display()
        )
    };
    let mut file = File::open(path).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(cannot(&"it is not a regular file"));
    }
    if meta.len() > w.artifact_budget {
        return Err(too_big(name, path, meta.len(), w.artifact_budget));
    }
    let mut upload = store
        .artifact_upload()
        .map_err(|e| format!("param `{name}`: the store cannot take the file: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| cannot(&e))?;
        if n == 0 {
            break;
        }
        // A file that grows while it is read is still held to the budget.
        if upload.size() + n as u64 > w.artifact_budget {
            return Err(too_big(
                name,
                path,
                upload.size() + n as u64,
                w.artifact_budget,
            ));
        }
        upload
            .write(&buf[..n])
            .map_err(|e| format!("param `{name}`: the store cannot take the file: {e}"))?;
    }
    Ok(StagedFile {
        param: name.to_owned(),
        path: path.to_owned(),
        upload,
        media_type: def
            .media_type
            .clone()
            .unwrap_or_else(|| guess(path).to_owned()),
    })
}

fn too_big(name: &str, path: &Path, size: u64, limit: u64) -> String {
    format!(
        "param `{name}`: the file `{}` has {size} bytes, more than the run's artifacts may take ({limit} bytes); raise `budget.artifact_bytes`",
        path.display()
    )
}

impl Staged {
    /// Params that name no file.
    pub fn plain(params: Vec<(String, String)>) -> Self {
        Staged {
            params,
            files: Vec::new(),
        }
    }

    /// Records that `run` holds each staged file, within `limits`.
    pub fn place(self, store: &dyn Store, run: &str, limits: ArtifactLimits) -> Result<(), String> {
        for f in self.files {
            let (param, path) = (f.param, f.path);
            match store.artifact_finish(run, f.upload, &f.media_type, limits) {
                Ok(Ok(_)) => {}
                Ok(Err(refusal)) => {
                    let (used, size, limit, field) = match refusal {
                        ArtifactRefusal::Run { used, size, limit } => {
                            (used, size, limit, "the run's `budget.artifact_bytes`")
                        }
                        ArtifactRefusal::Tenant { used, size, limit } => {
                            (used, size, limit, "the tenant's `quota.artifact_bytes`")
                        }
                    };
                    return Err(format!(
                        "param `{param}`: the file `{}` ({size} bytes) does not fit: {used} of {limit} bytes are taken; raise {field}",
                        path.display()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "param `{param}`: the store cannot keep the file `{}`: {e}",
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A media type from a file's extension, for the common document kinds.
fn guess(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("txt" | "text" | "log") => "text/plain",
        Some("md" | "markdown") => "text/markdown",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(guess(Path::new("a/report.TXT")), "text/plain");
        assert_eq!(guess(Path::new("notes.md")), "text/markdown");
        assert_eq!(guess(Path::new("blob")), "application/octet-stream");
    }
}
