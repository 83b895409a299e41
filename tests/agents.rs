//! The example agents do real, deterministic work that a workflow can use.

#[path = "support.rs"]
mod support;

use serde_json::json;
use support::*;

const TEXT: &str = "Corral runs agents in sandboxes. Each agent gets a budget of fuel and memory. \
    Agents that exceed the budget are stopped. The sandbox keeps agents honest!";

async fn run(path: &str, payload: serde_json::Value) -> serde_json::Value {
    let out = call(path, payload, &budget()).await;
    out.result.unwrap_or_else(|e| panic!("{e}")).payload
}

#[tokio::test]
async fn keywords_counts_and_ranks() {
    let out = run(agents::KEYWORDS, json!({"text": TEXT, "top_k": 3})).await;
    assert_eq!(out["word_count"], 26);
    assert_eq!(out["sentence_count"], 4);
    assert_eq!(
        out["keywords"],
        json!([
            {"word": "agents", "count": 3},
            {"word": "budget", "count": 2},
            {"word": "agent", "count": 1},
        ])
    );
}

#[tokio::test]
async fn classify_routes_by_rules() {
    let out = run(
        agents::CLASSIFY,
        json!({"text": "The app crashes with an error when I save"}),
    )
    .await;
    assert_eq!(out["label"], "bug");
    assert_eq!(out["matched"], json!(["crashes", "error"]));

    let rules = json!([
        {"label": "billing", "any_of": ["invoice", "refund"]},
        {"label": "shipping", "any_of": ["parcel", "delivery"], "weight": 2.0}
    ]);
    let out = run(
        agents::CLASSIFY,
        json!({"text": "Where is my parcel? I want a refund", "rules": rules}),
    )
    .await;
    assert_eq!(out["label"], "shipping");
    assert_eq!(out["scores"], json!({"billing": 1.0, "shipping": 2.0}));
    assert_eq!(out["confidence"], 0.667);

    let out = run(
        agents::CLASSIFY,
        json!({"text": "lovely weather", "default_label": "chat"}),
    )
    .await;
    assert_eq!(
        (out["label"].as_str(), out["confidence"].as_f64()),
        (Some("chat"), Some(0.0))
    );
}

#[tokio::test]
async fn summarize_keeps_the_richest_sentences_in_order() {
    let out = run(agents::SUMMARIZE, json!({"text": TEXT, "max_sentences": 2})).await;
    let kept: Vec<u64> = out["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["index"].as_u64().unwrap())
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(
        kept[0] < kept[1],
        "kept sentences stay in text order: {kept:?}"
    );
    assert_eq!(out["compression"], 0.5);
    let summary = out["summary"].as_str().unwrap();
    for s in out["sentences"].as_array().unwrap() {
        assert!(summary.contains(s["text"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn critic_scores_against_rules() {
    let rules = json!({"min_words": 5, "max_words": 40, "max_sentence_words": 12,
        "required_terms": ["budget", "receipt"], "forbidden_terms": ["magic"], "pass_score": 0.8});
    let out = run(agents::CRITIC, json!({"draft": TEXT, "rules": rules})).await;
    // 6 checks: min, max, sentence length, two required terms, one forbidden; `receipt` is missing.
    assert_eq!(out["checks"], 6);
    assert_eq!(
        out["issues"],
        json!([{"rule": "required_terms", "message": "missing `receipt`", "term": "receipt"}])
    );
    assert_eq!(out["score"], 0.833);
    assert_eq!(out["passed"], true);

    let out = call(
        agents::CRITIC,
        json!({"draft": "x", "rules": {"min_words": 9, "max_words": 3}}),
        &budget(),
    )
    .await;
    match out.result {
        Err(corral::CallError::Agent { class, message, .. }) => {
            assert_eq!(class, corral::ErrorClass::Permanent);
            assert!(message.contains("rules.min_words"), "{message}");
        }
        other => panic!("expected a permanent agent error, got {other:?}"),
    }
}
