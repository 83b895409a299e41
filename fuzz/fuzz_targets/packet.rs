//! Fuzzes the packet checks: deserializing a handoff packet, its depth cap and its payload schema, on any bytes.

#![no_main]

use std::sync::OnceLock;

use corral_runtime::HandoffPacket;
use corral_runtime::packet::check_depth;
use corral_runtime::schema::PayloadSchema;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// Schemas like the agents declare: objects, arrays, `$ref`s (one recursive).
fn schemas() -> &'static [PayloadSchema] {
    static SCHEMAS: OnceLock<Vec<PayloadSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        [
            json!({"type": "object", "properties": {"text": {"type": "string", "maxLength": 64}},
                   "required": ["text"], "additionalProperties": false}),
            json!({"type": "object", "properties": {"items": {"type": "array",
                   "items": {"$ref": "#/$defs/item"}, "maxItems": 8}},
                   "$defs": {"item": {"type": "object", "properties": {
                       "n": {"type": "integer", "minimum": 0}, "tag": {"enum": ["a", "b"]}}}}}),
            json!({"$ref": "#/$defs/tree", "$defs": {"tree": {"type": "object", "properties": {
                   "children": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}}}}),
            json!({"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "number", "multipleOf": 0.5}]}),
        ]
        .into_iter()
        .map(|s| PayloadSchema::compile(s).expect("the fixture schemas compile"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = serde_json::from_slice::<HandoffPacket>(data) else {
        return;
    };
    if check_depth(&packet.payload, 64).is_err() {
        return;
    }
    for schema in schemas() {
        if let Err(problem) = schema.check(&packet.payload) {
            assert!(!problem.to_string().is_empty());
        }
    }
    // What the host sends on is the packet serialized again: it must be
    // JSON that reads back as a packet. (Equality is not asserted: without
    // serde_json's `float_roundtrip` a float may move by one unit in the
    // last place.)
    let text = serde_json::to_string(&packet).expect("a checked packet serializes");
    serde_json::from_str::<HandoffPacket>(&text).expect("and reads back");
});
