//! Handoff packets: schema checks in and out with the failing pointer, size and depth caps, the envelope.

#[path = "support.rs"]
mod support;

use corral::{CallError, Grants, HandoffPacket, PacketProblem};
use serde_json::{Value, json};
use support::*;

fn input_problem(result: Result<HandoffPacket, CallError>) -> PacketProblem {
    match result {
        Err(CallError::InvalidInput { problem, .. }) => problem,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn output_problem(result: Result<HandoffPacket, CallError>) -> PacketProblem {
    match result {
        Err(CallError::InvalidOutput { problem, .. }) => problem,
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
}

#[tokio::test]
async fn input_schema_violations_name_the_pointer_and_keyword() {
    let out = call(agents::KEYWORDS, json!({"text": 5}), &budget()).await;
    assert_eq!(
        out.receipt.fuel_used, 0,
        "invalid input never reaches the agent"
    );
    match input_problem(out.result) {
        PacketProblem::Schema {
            pointer, keyword, ..
        } => {
            assert_eq!((pointer.as_str(), keyword.as_str()), ("/text", "type"));
        }
        other => panic!("{other:?}"),
    }

    let out = call(agents::KEYWORDS, json!({"txt": "typo"}), &budget()).await;
    match input_problem(out.result) {
        PacketProblem::Schema { keyword, .. } => {
            assert!(
                keyword == "required" || keyword == "additionalProperties",
                "{keyword}"
            )
        }
        other => panic!("{other:?}"),
    }

    let out = call(
        agents::SUMMARIZE,
        json!({"text": "A. B.", "max_sentences": 0}),
        &budget(),
    )
    .await;
    match input_problem(out.result) {
        PacketProblem::Schema {
            pointer, keyword, ..
        } => {
            assert_eq!(
                (pointer.as_str(), keyword.as_str()),
                ("/max_sentences", "minimum")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_error_names_the_agent() {
    let out = call(agents::CLASSIFY, json!({"text": []}), &budget()).await;
    let err = out.result.unwrap_err();
    assert_eq!(err.agent(), "classify");
    let msg = err.to_string();
    assert!(msg.contains("`classify`") && msg.contains("/text"), "{msg}");
}

#[tokio::test]
async fn input_depth_and_size_are_capped() {
    let mut deep = json!("leaf");
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let out = call(agents::ECHO, json!({"text": "x", "tags": deep}), &budget()).await;
    match input_problem(out.result) {
        PacketProblem::TooDeep { limit, pointer } => {
            assert_eq!(limit, 64);
            assert!(pointer.starts_with("/tags/0/0"), "{pointer}");
        }
        other => panic!("{other:?}"),
    }

    let big = "x".repeat(2 << 20);
    let out = call(agents::ECHO, json!({"text": big}), &budget()).await;
    match input_problem(out.result) {
        PacketProblem::TooLarge { limit, actual } => {
            assert_eq!(limit, 1 << 20);
            assert!(actual > 2 << 20);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unsupported_envelope_version_is_refused() {
    let agent = load(agents::ECHO).await;
    let mut p = packet(json!({"text": "x"}));
    p.version = 2;
    let out = runtime()
        .call(&agent, &p, &budget(), &Grants::default())
        .await;
    assert!(matches!(
        input_problem(out.result),
        PacketProblem::Envelope { .. }
    ));
}

#[tokio::test]
async fn output_is_checked_against_the_agents_own_schema() {
    match output_problem(hostile("violate_schema", &budget()).await.result) {
        PacketProblem::Schema {
            pointer, keyword, ..
        } => {
            assert_eq!((pointer.as_str(), keyword.as_str()), ("/ok", "type"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        output_problem(hostile("bad_json", &budget()).await.result),
        PacketProblem::Json { .. }
    ));
    assert!(matches!(
        output_problem(hostile("wrong_step", &budget()).await.result),
        PacketProblem::Envelope { .. }
    ));
    match output_problem(hostile("deep_output", &budget()).await.result) {
        PacketProblem::TooDeep { limit, pointer } => {
            assert_eq!(limit, 64);
            assert!(pointer.starts_with("/nested/0"), "{pointer}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sdk_agents_declare_schemas_derived_from_their_types() {
    let agent = load(agents::KEYWORDS).await;
    let info = agent.info();
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("keywords", "0.1.0")
    );
    assert!(info.description.contains("keywords"));
    let input: &Value = info.input_schema.source();
    assert_eq!(input["properties"]["text"]["type"], "string");
    assert_eq!(input["required"], json!(["text"]));
    let output = info.output_schema.source();
    assert_eq!(output["properties"]["keywords"]["type"], "array");
}
