//! The compile cache: precompiled components and their `describe` answers on disk, keyed by content digest and engine, private to the user.
//!
//! Artifacts are native code that `Component::deserialize_file` maps and
//! runs without validation, so the cache is a code-injection door unless
//! only this user can write it: directories are created `0700` and files
//! `0600`, and a directory or file owned by someone else, or writable by
//! group or others, is refused before anything in it is read. Every method
//! here touches the disk or compiles: call them off the async executor.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::describe::{Declared, DescribeLimits};
use crate::error::LoadError;

/// How components were obtained, for tests and `--json` output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Components compiled by Cranelift.
    pub compiled: u64,
    /// Components deserialized from a precompiled artifact on disk.
    pub disk_hits: u64,
    /// Loads answered by an agent already in memory.
    pub memory_hits: u64,
    /// Loads that took the agent's `describe` answer from disk instead of
    /// calling it.
    pub describe_hits: u64,
}

pub(crate) struct CompileCache {
    /// The directory the user chose, or none when the cache is disabled.
    base: Option<PathBuf>,
    /// `<base>/engine-<hash>`: artifacts only load into an engine with the
    /// settings that produced them.
    dir: Option<PathBuf>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
    describe_hits: AtomicU64,
}

impl CompileCache {
    pub fn new(base: Option<&Path>, engine: &Engine) -> Self {
        // The engine's own compatibility hash covers the wasmtime version,
        // target, Cranelift flags, tunables and wasm features. It is fed
        // through SHA-256, not `DefaultHasher`, whose output Rust may change
        // between releases.
        let engine_hash = crate::digest::hash_digest(&engine.precompile_compatibility_hash());
        let dir = base.map(|b| b.join(format!("engine-{}", &engine_hash[..16])));
        Self {
            base: base.map(Path::to_owned),
            dir,
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            describe_hits: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            describe_hits: self.describe_hits.load(Ordering::Relaxed),
        }
    }

    /// The component for `bytes` (the file at `path`, with `digest`), from
    /// a precompiled artifact when a valid one exists. Blocking.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
        path: &Path,
    ) -> Result<Component, LoadError> {
        let artifact = self
            .private_dir()?
            .map(|d| d.join(file_name(digest, "cwasm")));
        if let Some(artifact) = &artifact
            && private_file(artifact)?
        {
            // SAFETY: the artifact sits in a directory only this user can
            // write, and is owned by this user and not writable by anyone
            // else (both checked above), so it was written by
            // `Component::serialize` below for this engine's settings (the
            // directory name pins them). wasmtime checks the header.
            match unsafe { Component::deserialize_file(engine, artifact) } {
                Ok(c) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => tracing::warn!(
                    "ignoring unusable cached artifact {}: {e:#}",
                    artifact.display()
                ),
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(artifact) = &artifact
            && let Err(e) = component
                .serialize()
                .map_err(anyhow::Error::from)
                .and_then(|bytes| write_private(artifact, &bytes))
        {
            tracing::warn!("cannot write compile cache {}: {e:#}", artifact.display());
        }
        Ok(component)
    }

    /// What `describe` returned for `digest` on an earlier load, if it was
    /// kept. Checked against `limits` by the caller like a fresh answer; an
    /// unreadable copy is ignored. Blocking.
    pub fn declared(
        &self,
        digest: &str,
        limits: &DescribeLimits,
    ) -> Result<Option<Declared>, LoadError> {
        let Some(dir) = self.private_dir()? else {
            return Ok(None);
        };
        let file = dir.join(file_name(digest, "describe.json"));
        if !private_file(&file)? {
            return Ok(None);
        }
        let read = || -> anyhow::Result<Declared> {
            let max = limits.max_encoded_bytes();
            let size = std::fs::metadata(&file)?.len();
            anyhow::ensure!(
                size <= max,
                "{size} bytes, over the {max} a valid answer takes"
            );
            Ok(serde_json::from_slice(&std::fs::read(&file)?)?)
        };
        match read() {
            Ok(declared) => {
                self.describe_hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(declared))
            }
            Err(e) => {
                tracing::warn!(
                    "ignoring unusable cached describe {}: {e:#}",
                    file.display()
                );
                Ok(None)
            }
        }
    }

    /// Keeps what `describe` returned next to the artifact. Blocking.
    pub fn keep_declared(&self, digest: &str, declared: &Declared) {
        let Ok(Some(dir)) = self.private_dir() else {
            return;
        };
        let file = dir.join(file_name(digest, "describe.json"));
        let text = serde_json::to_vec(declared).expect("declarations always serialize");
        if let Err(e) = write_private(&file, &text) {
            tracing::warn!("cannot write compile cache {}: {e:#}", file.display());
        }
    }

    /// The artifact directory, created `0700` when missing, once the user's
    /// directory and it are checked to be private. `None` when the cache is
    /// off or cannot be created (loads then compile every time).
    fn private_dir(&self) -> Result<Option<&Path>, LoadError> {
        let (Some(base), Some(dir)) = (&self.base, &self.dir) else {
            return Ok(None);
        };
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            tracing::warn!(
                "cannot create the compile cache {}: {e}; compiling without it",
                dir.display()
            );
            return Ok(None);
        }
        for d in [base, dir] {
            let meta = std::fs::metadata(d).map_err(|e| {
                LoadError::Cache(anyhow::Error::from(e).context(format!("reading {}", d.display())))
            })?;
            check_private(d, &meta, Kind::Dir)?;
        }
        Ok(Some(dir))
    }
}

/// `sha256-<hex>.<ext>`: the digest with a character every file system takes.
fn file_name(digest: &str, ext: &str) -> String {
    format!("{}.{ext}", digest.replace(':', "-"))
}

#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File,
}

/// Whether `file` exists; an error if it exists and is not private.
fn private_file(file: &Path) -> Result<bool, LoadError> {
    match std::fs::metadata(file) {
        Ok(meta) => check_private(file, &meta, Kind::File).map(|()| true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LoadError::Cache(
            anyhow::Error::from(e).context(format!("reading {}", file.display())),
        )),
    }
}

/// Refuses what another user owns or could have written, naming the fix.
fn check_private(path: &Path, meta: &Metadata, kind: Kind) -> Result<(), LoadError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let shown = path.display();
    let problem = if meta.uid() != me {
        format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "it is writable by {} (mode {:03o})",
            if meta.mode() & 0o020 != 0 {
                "its group"
            } else {
                "others"
            },
            meta.mode() & 0o777
        )
    } else {
        return Ok(());
    };
    let fix = match kind {
        Kind::Dir if meta.uid() == me => format!("make it private with `chmod 700 {shown}`"),
        Kind::Dir => {
            format!("remove it (`rm -r {shown}`) or choose another directory with `--cache-dir`")
        }
        // Someone else may already have written it: only removing it is safe.
        Kind::File => format!("remove it (`rm {shown}`); corral compiles the component again"),
    };
    Err(LoadError::UnsafeCache {
        path: path.to_owned(),
        problem,
        fix,
    })
}

/// Writes `bytes` to `path` as `0600`, atomically and durably: a temporary
/// file is written and fsynced, renamed over `path` (a reader sees all of
/// it or nothing; a mapped old artifact is never truncated), and the
/// directory is fsynced so the rename survives a crash.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache files have a parent");
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    let write = || -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The default cache directory: `$CORRAL_CACHE_DIR`, else the user's cache
/// directory (`$XDG_CACHE_HOME/corral` or `$HOME/.cache/corral`).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CORRAL_CACHE_DIR") {
        return Some(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("corral"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("corral"))
}
