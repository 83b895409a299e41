//! The compile cache: precompiled components on disk, keyed by content digest and engine.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// How components were obtained, for tests and `--json` output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Components compiled by Cranelift.
    pub compiled: u64,
    /// Components deserialized from a precompiled artifact on disk.
    pub disk_hits: u64,
    /// Loads answered by an agent already in memory.
    pub memory_hits: u64,
}

pub(crate) struct CompileCache {
    /// `<base>/wasmtime-<version>-<engine hash>`, or none when disabled.
    dir: Option<PathBuf>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
}

impl CompileCache {
    pub fn new(base: Option<&Path>, engine: &Engine) -> Self {
        // Artifacts are only valid for the engine settings that produced them.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let dir = base.map(|b| {
            b.join(format!(
                "wasmtime-{}-{:016x}",
                wasmtime_version(),
                h.finish()
            ))
        });
        Self {
            dir,
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }

    /// The component for `bytes`, from disk when a valid artifact exists.
    /// Errors from `Component::new` are returned unwrapped so the caller
    /// can report an invalid component; cache I/O failures only warn.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component, wasmtime::Error> {
        let artifact = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{}.cwasm", digest.replace(':', "-"))));
        if let Some(path) = artifact.as_ref().filter(|p| p.exists()) {
            // SAFETY: the artifact was written by `Component::serialize`
            // below for this engine's settings (the directory name pins
            // them). The cache directory must be writable only by its user.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(c) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(
                        "ignoring unusable cached artifact {}: {e:#}",
                        path.display()
                    )
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &artifact
            && let Err(e) = store(&component, path)
        {
            tracing::warn!("cannot write compile cache {}: {e:#}", path.display());
        }
        Ok(component)
    }
}

/// Writes the artifact atomically: a concurrent reader sees all of it or nothing.
fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("artifact paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = component.serialize()?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn wasmtime_version() -> &'static str {
    // Bumped with the `wasmtime` pin in Cargo.toml; the engine hash covers
    // the rest of the settings.
    "48"
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
