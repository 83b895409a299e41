//! The handoff packet envelope and the size and depth caps every packet obeys.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::PacketProblem;

/// The envelope version this host speaks.
pub const PACKET_VERSION: u32 = 1;

/// A handoff packet: the only way data enters or leaves an agent.
///
/// The host builds one per call around the payload, and the agent returns
/// one with the same `run_id` and `step_id` around its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "corral handoff packet")]
pub struct HandoffPacket {
    /// Envelope version; `1` in this release.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// The run this packet belongs to, such as `run-0192f…`.
    pub run_id: String,
    /// The step of the run, such as `summarize`.
    pub step_id: String,
    /// The data itself, checked against the agent's input or output schema.
    pub payload: Value,
    /// References to large artifacts kept outside the packet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactRef>,
}

/// A large artifact passed by reference instead of inside the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    /// A name unique within the packet, such as `report.pdf`.
    pub name: String,
    /// Content digest, `sha256:` and 64 hex digits.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Media type, such as `application/pdf`.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

impl HandoffPacket {
    /// A packet for `payload` in step `step_id` of run `run_id`.
    pub fn new(run_id: impl Into<String>, step_id: impl Into<String>, payload: Value) -> Self {
        Self {
            version: PACKET_VERSION,
            run_id: run_id.into(),
            step_id: step_id.into(),
            payload,
            artifacts: Vec::new(),
        }
    }
}

/// Caps every packet must respect, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketLimits {
    /// Largest input packet in bytes of JSON text. The output cap is the
    /// budget's `max_output_bytes`.
    pub max_bytes: u64,
    /// Deepest nesting of arrays and objects in a payload.
    pub max_depth: usize,
}

impl Default for PacketLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_depth: 64,
        }
    }
}

/// Fails if `value` nests deeper than `max_depth`, naming where.
pub fn check_depth(value: &Value, max_depth: usize) -> Result<(), PacketProblem> {
    // An explicit stack: a hostile payload must not overflow ours.
    let mut stack: Vec<(&Value, usize, String)> = vec![(value, 0, String::new())];
    while let Some((v, depth, pointer)) = stack.pop() {
        let children: Box<dyn Iterator<Item = (String, &Value)>> = match v {
            Value::Array(a) => Box::new(a.iter().enumerate().map(|(i, v)| (i.to_string(), v))),
            Value::Object(o) => Box::new(o.iter().map(|(k, v)| (escape(k), v))),
            _ => continue,
        };
        if depth + 1 > max_depth {
            return Err(PacketProblem::TooDeep {
                limit: max_depth,
                pointer,
            });
        }
        for (key, child) in children {
            if matches!(child, Value::Array(_) | Value::Object(_)) {
                stack.push((child, depth + 1, format!("{pointer}/{key}")));
            }
        }
    }
    Ok(())
}

/// Escapes a key for a JSON Pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON Schema of [`HandoffPacket`], as checked into `schemas/handoff-packet.json`.
pub fn packet_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(HandoffPacket)).expect("schemas serialize")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn depth_counts_containers_and_names_the_place() {
        let v = json!({"a": [{"b": [1]}]});
        assert!(check_depth(&v, 4).is_ok());
        match check_depth(&v, 3) {
            Err(PacketProblem::TooDeep { limit: 3, pointer }) => assert_eq!(pointer, "/a/0/b"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(check_depth(&json!("scalar"), 0).is_ok());
    }
}
