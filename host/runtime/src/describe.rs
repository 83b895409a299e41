//! What an agent's `describe` may declare: size limits checked before anything is parsed or compiled, and the conversion into `AgentInfo`.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::AgentInfo;
use crate::capability::Capability;
use crate::display::guest;
use crate::error::LoadError;
use crate::schema::PayloadSchema;
use crate::wit::latest as wit;

/// Upper bounds on what `describe` returns. The schemas are measured as
/// text before they are parsed and by node count before they are compiled,
/// so a hostile declaration costs the host at most these sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeLimits {
    /// Bytes of the agent's name; a name is an identifier, with no control characters.
    pub max_name_bytes: usize,
    /// Bytes of its version string, likewise.
    pub max_version_bytes: usize,
    /// Bytes of its description (free text; escaped when printed).
    pub max_description_bytes: usize,
    /// Bytes of each schema's JSON text.
    pub max_schema_bytes: usize,
    /// JSON values (objects, arrays, strings, numbers...) in each schema:
    /// bounds property counts and the cost of compiling it.
    pub max_schema_nodes: usize,
    /// Capabilities requested.
    pub max_capabilities: usize,
    /// Bytes of one capability's variable name or guest path.
    pub max_capability_bytes: usize,
}

impl Default for DescribeLimits {
    fn default() -> Self {
        Self {
            max_name_bytes: 128,
            max_version_bytes: 64,
            max_description_bytes: 4 << 10,
            max_schema_bytes: 256 << 10,
            max_schema_nodes: 10_000,
            max_capabilities: 64,
            max_capability_bytes: 4 << 10,
        }
    }
}

impl DescribeLimits {
    /// The largest a cached copy of a declaration within these limits can be
    /// as JSON text (every byte escaped at worst), so a cached copy is
    /// measured before it is read.
    pub(crate) fn max_encoded_bytes(&self) -> u64 {
        let text = self.max_name_bytes
            + self.max_version_bytes
            + self.max_description_bytes
            + 2 * self.max_schema_bytes
            + self.max_capabilities * (self.max_capability_bytes + 64);
        (text as u64) * 6 + 4096
    }
}

/// What `describe` returned, before its schemas are compiled: the form kept
/// in the compile cache beside the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Declared {
    pub name: String,
    pub version: String,
    pub description: String,
    pub input_schema: String,
    pub output_schema: String,
    pub capabilities: Vec<Capability>,
}

impl From<wit::corral::agent::types::AgentInfo> for Declared {
    fn from(i: wit::corral::agent::types::AgentInfo) -> Self {
        Self {
            name: i.name,
            version: i.version,
            description: i.description,
            input_schema: i.input_schema,
            output_schema: i.output_schema,
            capabilities: i.capabilities.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<crate::wit::since_v0_1_0::corral::agent::types::AgentInfo> for Declared {
    fn from(i: crate::wit::since_v0_1_0::corral::agent::types::AgentInfo) -> Self {
        Self {
            name: i.name,
            version: i.version,
            description: i.description,
            input_schema: i.input_schema,
            output_schema: i.output_schema,
            capabilities: i.capabilities.into_iter().map(Into::into).collect(),
        }
    }
}

impl Declared {
    /// Checks every limit; names the first field over its limit.
    pub fn check(&self, path: &Path, limits: &DescribeLimits) -> Result<(), LoadError> {
        let too_large = |field: &'static str, unit: &'static str, limit: usize, actual: usize| {
            Err(LoadError::DescribeTooLarge {
                path: path.to_owned(),
                agent: guest(&self.name).into_owned(),
                field,
                unit,
                limit: limit as u64,
                actual: actual as u64,
            })
        };
        let (bytes, entries) = ("bytes", "entries");
        let sizes = [
            ("name", bytes, limits.max_name_bytes, self.name.len()),
            (
                "version",
                bytes,
                limits.max_version_bytes,
                self.version.len(),
            ),
            (
                "description",
                bytes,
                limits.max_description_bytes,
                self.description.len(),
            ),
            (
                "input schema",
                bytes,
                limits.max_schema_bytes,
                self.input_schema.len(),
            ),
            (
                "output schema",
                bytes,
                limits.max_schema_bytes,
                self.output_schema.len(),
            ),
            (
                "capability list",
                entries,
                limits.max_capabilities,
                self.capabilities.len(),
            ),
        ];
        for (field, unit, limit, actual) in sizes {
            if actual > limit {
                return too_large(field, unit, limit, actual);
            }
        }
        for c in &self.capabilities {
            let text = match c {
                Capability::Env { name } => name,
                Capability::Dir { guest_path, .. } => guest_path,
                Capability::Model { alias } => alias,
                Capability::Http { url } => url,
            };
            if text.len() > limits.max_capability_bytes {
                return too_large(
                    "capability name or path",
                    bytes,
                    limits.max_capability_bytes,
                    text.len(),
                );
            }
            self.identifier(path, "capability", text)?;
            if let Capability::Http { url } = c
                && url != "*"
            {
                crate::http::HttpGrant::parse(url)
                    .map_err(|why| self.unusable(path, "http capability", why))?;
            }
        }
        if self.name.is_empty() {
            return Err(self.unusable(path, "name", "it is empty".into()));
        }
        self.identifier(path, "name", &self.name)?;
        self.identifier(path, "version", &self.version)
    }

    /// Identifiers are printed in errors, receipts and logs everywhere:
    /// refusing control characters here keeps them out of every terminal.
    fn identifier(&self, path: &Path, field: &'static str, text: &str) -> Result<(), LoadError> {
        match text.chars().find(|c| c.is_control()) {
            None => Ok(()),
            Some(c) => Err(self.unusable(
                path,
                field,
                format!(
                    "`{}` holds the control character U+{:04X}",
                    guest(text),
                    c as u32
                ),
            )),
        }
    }

    fn unusable(&self, path: &Path, field: &'static str, problem: String) -> LoadError {
        LoadError::BadDescribe {
            path: path.to_owned(),
            agent: guest(&self.name).into_owned(),
            field,
            problem,
        }
    }

    /// Parses and compiles the schemas (within `limits`: call
    /// [`check`](Self::check) first). CPU-bound: run it off the executor.
    pub fn compile(self, path: &Path, limits: &DescribeLimits) -> Result<AgentInfo, LoadError> {
        let agent = guest(&self.name).into_owned();
        let schema = |which: &'static str, text: &str| -> Result<Arc<PayloadSchema>, LoadError> {
            let bad = |message: String| LoadError::BadSchema {
                path: path.to_owned(),
                agent: agent.clone(),
                which,
                message,
            };
            let value: Value =
                serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let nodes = count_nodes(&value, limits.max_schema_nodes + 1);
            if nodes > limits.max_schema_nodes {
                return Err(LoadError::DescribeTooLarge {
                    path: path.to_owned(),
                    agent: agent.clone(),
                    field: if which == "input" {
                        "input schema"
                    } else {
                        "output schema"
                    },
                    unit: "JSON values",
                    limit: limits.max_schema_nodes as u64,
                    actual: nodes as u64,
                });
            }
            PayloadSchema::compile(value).map(Arc::new).map_err(bad)
        };
        Ok(AgentInfo {
            input_schema: schema("input", &self.input_schema)?,
            output_schema: schema("output", &self.output_schema)?,
            name: self.name,
            version: self.version,
            description: self.description,
            capabilities: self.capabilities,
        })
    }
}

/// JSON values in `v` (object keys not counted), stopping at `stop`.
/// Iterative: serde_json bounds nesting at parse, but nothing here recurses.
fn count_nodes(v: &Value, stop: usize) -> usize {
    let mut seen = 0;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        seen += 1;
        if seen >= stop {
            break;
        }
        match v {
            Value::Array(a) => todo.extend(a),
            Value::Object(m) => todo.extend(m.values()),
            _ => {}
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_and_stops_early() {
        let v = serde_json::json!({"a": [1, 2, {"b": null}], "c": "x"});
        assert_eq!(count_nodes(&v, 100), 7);
        assert_eq!(count_nodes(&v, 3), 3);
    }
}
