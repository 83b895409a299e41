//! Where the names in a workflow lead: its components, granted directories and environment values, resolved for the operator's own files or within a tenant's ceiling.
//!
//! The validator asks a [`Scope`] for every name a file uses and never
//! touches the filesystem or the environment itself. [`LocalScope`] is the
//! command line's: paths confined to the file's directory and the operator's
//! allowed directories, values from corral's own environment. A server gives
//! each tenant a scope of its own (registered components only, directories
//! under the tenant's data root, values from the tenant's secrets), so a
//! tenant's file can neither name a host path nor read the server's
//! environment.

use std::path::{Path, PathBuf};

use crate::paths::Confinement;

/// Why a name in the file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The name is beyond what this scope may ever grant (a tenant's
    /// ceiling), rather than merely wrong.
    pub denied: bool,
}

impl Refusal {
    /// A name that is wrong (missing, malformed): fix the file.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            denied: false,
        }
    }

    /// A name beyond the scope's ceiling: only the operator can allow it.
    pub fn denied(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            denied: true,
        }
    }
}

/// Resolves what a workflow file names.
pub trait Scope: Send + Sync {
    /// The component file to load for an agent's `component` field.
    fn component(&self, reference: &str) -> Result<PathBuf, Refusal>;
    /// The host directory for a `grants.dirs[].host` field.
    fn dir(&self, host: &str) -> Result<PathBuf, Refusal>;
    /// The value for an environment grant that names a variable only.
    fn env(&self, name: &str) -> Result<String, Refusal>;
    /// Whether a `grants.models` entry may be granted.
    fn model(&self, alias: &str) -> Result<(), Refusal>;
    /// Whether a `grants.http` entry may be granted.
    fn http(&self, grant: &corral_runtime::http::HttpGrant) -> Result<(), Refusal>;
}

/// The operator's scope: the file's directory and the allowed directories,
/// and corral's own environment.
#[derive(Debug, Clone)]
pub struct LocalScope {
    confined: Confinement,
}

impl LocalScope {
    /// Paths under `base_dir` (the workflow file's directory) or `allowed`.
    pub fn new(base_dir: &Path, allowed: &[PathBuf]) -> Self {
        Self {
            confined: Confinement::new(base_dir, allowed),
        }
    }
}

impl Scope for LocalScope {
    /// The operator may grant any alias; the gateway refuses those it does
    /// not have, by name, when the agent asks.
    fn model(&self, _alias: &str) -> Result<(), Refusal> {
        Ok(())
    }

    fn http(&self, _grant: &corral_runtime::http::HttpGrant) -> Result<(), Refusal> {
        Ok(())
    }

    fn component(&self, reference: &str) -> Result<PathBuf, Refusal> {
        self.confined
            .resolve(Path::new(reference))
            .map_err(Refusal::denied)
    }

    fn dir(&self, host: &str) -> Result<PathBuf, Refusal> {
        let dir = self
            .confined
            .resolve(Path::new(host))
            .map_err(Refusal::denied)?;
        if !dir.is_dir() {
            return Err(Refusal::invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(dir)
    }

    fn env(&self, name: &str) -> Result<String, Refusal> {
        std::env::var(name).map_err(|_| {
            Refusal::invalid(format!(
                "`{name}` is not set in corral's environment; pass `{name}=VALUE`"
            ))
        })
    }
}
