//! What `corral inspect` reports: the world a component implements, its imports and exports, and its `describe`.

use serde::Serialize;
use serde_json::Value;
use wasmtime::Engine;

use crate::agent::Agent;
use crate::capability::Capability;

/// A loaded agent seen from outside.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    pub digest: String,
    /// The WIT world, such as `corral:agent/agent`.
    pub world: String,
    /// The contract version, such as `0.1.0`.
    pub world_version: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    pub capabilities: Vec<Capability>,
    /// Interfaces the component imports (WASI and corral's host).
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl Inspection {
    pub fn of(agent: &Agent, engine: &Engine) -> Self {
        let ty = agent.component.component_type();
        let info = agent.info();
        let (world, world_version) = (
            "corral:agent/agent".to_owned(),
            agent.contract_version().to_owned(),
        );
        Self {
            path: agent.path().display().to_string(),
            digest: agent.digest().to_owned(),
            world,
            world_version,
            name: info.name.clone(),
            version: info.version.clone(),
            description: info.description.clone(),
            input_schema: info.input_schema.source().clone(),
            output_schema: info.output_schema.source().clone(),
            capabilities: info.capabilities.clone(),
            imports: ty.imports(engine).map(|(n, _)| n.to_owned()).collect(),
            exports: ty.exports(engine).map(|(n, _)| n.to_owned()).collect(),
        }
    }
}
