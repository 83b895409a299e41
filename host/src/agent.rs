//! A loaded agent: its compiled component, pre-linked instance, and what `describe` declared.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::Component;

use crate::schema::PayloadSchema;
use crate::wit::latest as wit;

/// An agent ready to be called: compiled once, linked once, described once.
pub struct Agent {
    pub(crate) path: PathBuf,
    pub(crate) digest: String,
    pub(crate) component: Component,
    pub(crate) pre: wit::AgentPre<crate::sandbox::HostState>,
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

/// A capability an agent requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Capability {
    Env { name: String },
    Dir { guest_path: String, writable: bool },
}

impl From<wit::corral::agent::types::Capability> for Capability {
    fn from(c: wit::corral::agent::types::Capability) -> Self {
        use wit::corral::agent::types::Capability as W;
        match c {
            W::Env(name) => Capability::Env { name },
            W::Dir(d) => Capability::Dir {
                guest_path: d.guest_path,
                writable: d.writable,
            },
        }
    }
}

/// How an agent's own error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Permanent,
    Degradable,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Degradable => "degradable",
        })
    }
}

impl From<wit::corral::agent::types::ErrorClass> for ErrorClass {
    fn from(c: wit::corral::agent::types::ErrorClass) -> Self {
        use wit::corral::agent::types::ErrorClass as W;
        match c {
            W::Transient => ErrorClass::Transient,
            W::Permanent => ErrorClass::Permanent,
            W::Degradable => ErrorClass::Degradable,
        }
    }
}
