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
///
/// A depth-first walk whose stack holds one frame per open container, so
/// it costs memory in the depth, not in the size: the pointer is built
/// only for the container that fails.
pub fn check_depth(value: &Value, max_depth: usize) -> Result<(), PacketProblem> {
    let Some(root) = Children::of(value) else {
        return Ok(());
    };
    let too_deep = |frames: &[(Children<'_>, Option<Key<'_>>)], last: Option<Key<'_>>| {
        let mut pointer = String::new();
        for key in frames
            .iter()
            .filter_map(|(_, k)| k.as_ref())
            .chain(last.as_ref())
        {
            pointer.push('/');
            pointer.push_str(&key.escaped());
        }
        PacketProblem::TooDeep {
            limit: max_depth,
            pointer,
        }
    };
    if max_depth == 0 {
        return Err(too_deep(&[], None));
    }
    let mut frames = vec![(root, None)];
    while let Some((children, _)) = frames.last_mut() {
        let Some((key, child)) = children.next() else {
            frames.pop();
            continue;
        };
        if let Some(grandchildren) = Children::of(child) {
            if frames.len() + 1 > max_depth {
                return Err(too_deep(&frames, Some(key)));
            }
            frames.push((grandchildren, Some(key)));
        }
    }
    Ok(())
}

/// A step into a container: an array index or an object key.
enum Key<'a> {
    Index(usize),
    Name(&'a str),
}

impl Key<'_> {
    fn escaped(&self) -> String {
        match self {
            Key::Index(i) => i.to_string(),
            Key::Name(k) => escape(k),
        }
    }
}

/// The children of an array or an object, in order.
enum Children<'a> {
    Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    Object(serde_json::map::Iter<'a>),
}

impl<'a> Children<'a> {
    fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::Array(a) => Some(Children::Array(a.iter().enumerate())),
            Value::Object(o) => Some(Children::Object(o.iter())),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<(Key<'a>, &'a Value)> {
        match self {
            Children::Array(it) => it.next().map(|(i, v)| (Key::Index(i), v)),
            Children::Object(it) => it.next().map(|(k, v)| (Key::Name(k.as_str()), v)),
        }
    }
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
