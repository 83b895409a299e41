//! Artifacts: large bytes stored once by content digest, in files beside the database, and the runs that hold each one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::StoreError;

/// One run's hold on a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub run: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub created_ms: i64,
}

/// The most bytes stored artifacts may take, for a run and for its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactLimits {
    pub run: u64,
    pub tenant: u64,
}

/// Why an artifact was not stored: a storage quota it would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRefusal {
    /// The run's artifacts would take more than its limit.
    Run { used: u64, size: u64, limit: u64 },
    /// The tenant's runs' artifacts would take more than its limit.
    Tenant { used: u64, size: u64, limit: u64 },
}

/// Bytes on their way into the store: a temporary file and their running
/// SHA-256, so that nobody holds more than a chunk in memory. Dropped
/// unfinished, the file is removed.
pub struct ArtifactUpload {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl ArtifactUpload {
    pub(crate) fn create(dir: &Path) -> Result<Self, StoreError> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let path = tmp.join(format!("{:016x}", fastrand::u64(..)));
        let file = File::create_new(&path).map_err(|e| io(&path, e))?;
        Ok(Self {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Appends `chunk`.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .expect("an upload is written until finished");
        file.write_all(chunk).map_err(|e| io(&self.path, e))?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `sha256:<hex>` of the bytes written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Flushes the file and gives its digest, size and temporary path.
    pub(crate) fn seal(mut self) -> Result<(String, u64, PathBuf), StoreError> {
        let file = self.file.take().expect("sealed once");
        file.sync_data().map_err(|e| io(&self.path, e))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        // The caller moves the file into place; nothing is left to remove.
        let path = std::mem::take(&mut self.path);
        Ok((digest, self.size, path))
    }
}

impl Drop for ArtifactUpload {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where the bytes of `digest` live under `dir`; `None` for a malformed digest.
pub(crate) fn artifact_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    valid.then(|| dir.join(&hex[..2]).join(hex))
}

/// Moves a sealed upload to its place; if the same bytes are there already,
/// the upload is dropped and the stored file's time is renewed (so that a
/// concurrent `gc` sees it as fresh).
pub(crate) fn place(dir: &Path, digest: &str, tmp: &Path) -> Result<(), StoreError> {
    let to = artifact_path(dir, digest).expect("a digest this module made");
    if to.exists() {
        let _ = std::fs::remove_file(tmp);
        let _ = File::options()
            .append(true)
            .open(&to)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(());
    }
    let parent = to.parent().expect("a two-level path");
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    std::fs::rename(tmp, &to).map_err(|e| io(&to, e))
}

/// Up to `max` bytes of the stored `digest` from `offset`; empty past the end.
pub(crate) fn read(
    dir: &Path,
    digest: &str,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>, StoreError> {
    let path = artifact_path(dir, digest).ok_or_else(|| StoreError::Backend {
        path: dir.display().to_string(),
        source: format!("`{digest}` is not a sha256 digest").into(),
    })?;
    let mut file = File::open(&path).map_err(|e| io(&path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io(&path, e))?;
    let mut buf = Vec::with_capacity(max);
    file.take(max as u64)
        .read_to_end(&mut buf)
        .map_err(|e| io(&path, e))?;
    Ok(buf)
}

/// Removes the stored files whose digest `held` denies, last modified
/// before `before`: (files, bytes) removed. Leftover temporary files of
/// that age go too.
pub(crate) fn sweep(
    dir: &Path,
    before: std::time::SystemTime,
    held: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
) -> Result<(u64, u64), StoreError> {
    let (mut files, mut bytes) = (0, 0);
    let Ok(shards) = std::fs::read_dir(dir) else {
        return Ok((0, 0));
    };
    for shard in shards.flatten() {
        let is_tmp = shard.file_name() == "tmp";
        let Ok(entries) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.modified().map_or(true, |m| m >= before) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_tmp && held(&format!("sha256:{name}"))? {
                continue;
            }
            if std::fs::remove_file(e.path()).is_ok() && !is_tmp {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend {
        path: path.display().to_string(),
        source: e.to_string().into(),
    }
}
