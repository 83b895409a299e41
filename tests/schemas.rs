//! The checked-in JSON Schemas and OpenAPI document in `schemas/` match the Rust types; `BLESS=1` rewrites them.

use std::path::PathBuf;

fn check(file: &str, generated: serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(file);
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        on_disk == text,
        "{} is out of date with the Rust types; run `BLESS=1 cargo test --test schemas` and commit it",
        path.display()
    );
}

#[test]
fn handoff_packet_schema_is_current() {
    check("handoff-packet.json", corral::packet::packet_schema());
}

#[test]
fn workflow_schema_is_current() {
    let schema = schemars::schema_for!(corral::workflow::definition::WorkflowDef);
    check("workflow.json", serde_json::to_value(schema).unwrap());
}

#[test]
fn the_packet_schema_accepts_what_the_host_sends() {
    let schema = corral::packet::packet_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let packet = corral::HandoffPacket::new("r", "s", serde_json::json!({"any": ["thing"]}));
    assert!(validator.is_valid(&serde_json::to_value(&packet).unwrap()));
    let bad = serde_json::json!({"version": 2, "run_id": "r", "step_id": "s", "payload": 1});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn the_openapi_document_is_current() {
    let doc: serde_json::Value = serde_json::from_str(&corral_server::api::openapi_json()).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    for path in [
        "/v1/runs",
        "/v1/runs/{id}/events",
        "/v1/agents/{name}",
        "/v1/workflows",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    check("openapi.json", doc);
}
