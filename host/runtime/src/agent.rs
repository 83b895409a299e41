//! A loaded agent: its compiled component, pre-linked instance, and what `describe` declared.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Component;

use crate::capability::Capability;
use crate::schema::PayloadSchema;

/// An agent ready to be called: compiled once, linked once, described once.
pub struct Agent {
    pub(crate) path: PathBuf,
    pub(crate) digest: String,
    pub(crate) component: Component,
    pub(crate) pre: crate::contract::Contract,
    pub(crate) info: AgentInfo,
}

impl Agent {
    /// What the agent declared about itself.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// `sha256:` digest of the component file.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the component was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The contract version the component implements: `0.2.0` or `0.1.0`.
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.info.name)
            .field("digest", &self.digest)
            .finish()
    }
}

/// What an agent says about itself in `describe`, with its schemas compiled.
pub struct AgentInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: Arc<PayloadSchema>,
    pub output_schema: Arc<PayloadSchema>,
    pub capabilities: Vec<Capability>,
}
