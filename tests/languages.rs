//! Agents in Python and JavaScript pass the same contract as Rust ones, and a workflow chains all three languages.

#[path = "support.rs"]
mod support;

use std::sync::Arc;

use corral::workflow::report::RunStatus;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Budget, CallError, ErrorClass};
use serde_json::{Value, json};
use support::{agents, budget, call, load};

/// The contract fixtures: one per non-Rust language, same actions, same expectations.
const CONTRACT: &[(&str, &str)] = &[("python", agents::PY_CONTRACT), ("js", agents::JS_CONTRACT)];

fn roomy() -> Budget {
    Budget {
        timeout: std::time::Duration::from_secs(20),
        ..Budget::default()
    }
}

#[tokio::test]
async fn describe_gives_name_schemas_and_no_capabilities() {
    for (lang, path) in CONTRACT {
        let a = load(path).await;
        let info = a.info();
        assert!(info.name.starts_with("contract"), "{lang}: {}", info.name);
        assert_eq!(info.version, "0.1.0", "{lang}");
        assert!(info.capabilities.is_empty(), "{lang}");
        assert_eq!(
            info.output_schema.source()["properties"]["ok"]["type"],
            "boolean",
            "{lang}"
        );
        assert_eq!(
            info.input_schema.source()["required"],
            json!(["action"]),
            "{lang}"
        );
    }
}

#[tokio::test]
async fn a_valid_run_returns_a_checked_packet_and_a_receipt() {
    for (lang, path) in CONTRACT {
        let out = call(path, json!({ "action": "log" }), &roomy()).await;
        let p = out.result.unwrap_or_else(|e| panic!("{lang}: {e}"));
        assert_eq!(p.payload, json!({ "ok": true }), "{lang}");
        assert_eq!(p.run_id, "run-test", "{lang}: the envelope is echoed");
        let r = &out.receipt;
        assert!(r.fuel_used > 0, "{lang}");
        assert!(r.log_bytes > 0, "{lang}: the log record reached the host");
        assert_eq!(r.progress, Some(50), "{lang}");
    }
}

#[tokio::test]
async fn agent_errors_keep_their_class() {
    for (lang, path) in CONTRACT {
        for (class, expected) in [
            ("transient", ErrorClass::Transient),
            ("permanent", ErrorClass::Permanent),
            ("degradable", ErrorClass::Degradable),
        ] {
            let out = call(path, json!({ "action": "error", "class": class }), &roomy()).await;
            match out.result {
                Err(CallError::Agent {
                    class: c, message, ..
                }) => {
                    assert_eq!(c, expected, "{lang} {class}");
                    assert!(message.contains("asked to fail"), "{lang}: {message}");
                }
                other => panic!("{lang} {class}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn output_that_breaks_the_schema_is_rejected_by_the_host() {
    for (lang, path) in CONTRACT {
        let out = call(path, json!({ "action": "violate" }), &roomy()).await;
        match out.result {
            Err(e @ CallError::InvalidOutput { .. }) => {
                assert!(e.to_string().contains("/ok"), "{lang}: {e}")
            }
            other => panic!("{lang}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_input_is_rejected_before_the_agent_runs() {
    for (lang, path) in CONTRACT {
        let out = call(path, json!({ "action": "dance" }), &roomy()).await;
        assert!(
            matches!(out.result, Err(CallError::InvalidInput { .. })),
            "{lang}: {:?}",
            out.result
        );
        assert_eq!(out.receipt.fuel_used, 0, "{lang}: never started");
    }
}

#[tokio::test]
async fn a_loop_stops_at_the_fuel_limit() {
    for (lang, path) in CONTRACT {
        let b = Budget {
            fuel: 500_000_000,
            ..roomy()
        };
        let out = call(path, json!({ "action": "loop" }), &b).await;
        match out.result {
            Err(CallError::FuelExhausted { .. }) => {}
            other => panic!("{lang}: {other:?}"),
        }
        assert_eq!(out.receipt.fuel_used, 500_000_000, "{lang}");
    }
}

#[tokio::test]
async fn a_memory_hoard_stops_at_the_memory_limit() {
    for (lang, path) in CONTRACT {
        let b = Budget {
            memory_bytes: 96 << 20,
            ..roomy()
        };
        let out = call(path, json!({ "action": "alloc" }), &b).await;
        match out.result {
            Err(CallError::MemoryLimit { .. }) => {}
            other => panic!("{lang}: {other:?}"),
        }
        assert!(out.receipt.peak_memory_bytes <= 96 << 20, "{lang}");
    }
}

#[tokio::test]
async fn the_python_aggregator_dedupes_sorts_and_counts() {
    let input = json!({ "findings": [
        { "key": "disk", "severity": "medium", "message": "disk slow" },
        { "key": "auth", "severity": "low", "message": "login page typo" },
        { "key": "disk", "severity": "critical", "message": "disk corrupt" },
        { "key": "api", "severity": "high", "message": "api error" },
    ]});
    let p = call(agents::PY_AGGREGATE, input, &roomy())
        .await
        .result
        .unwrap();
    let keys: Vec<&str> = p.payload["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["disk", "api", "auth"]);
    assert_eq!(p.payload["findings"][0]["message"], "disk corrupt");
    assert_eq!(
        p.payload["counts"],
        json!({ "critical": 1, "high": 1, "medium": 0, "low": 1 })
    );
    assert_eq!(p.payload["duplicates"], 1);
    let empty = call(agents::PY_AGGREGATE, json!({ "findings": [] }), &budget()).await;
    assert!(
        matches!(&empty.result, Err(CallError::Agent { class: ErrorClass::Permanent, message, .. }) if message.contains("empty")),
        "{:?}",
        empty.result
    );
}

#[tokio::test]
async fn the_js_severity_agent_grades_lines() {
    let input = json!({ "lines": [
        "App crash on export",
        "Export slow today",
        "Login error 42",
        "Typo on the pricing page",
    ]});
    let p = call(agents::JS_SEVERITY, input, &roomy())
        .await
        .result
        .unwrap();
    let sev: Vec<&str> = p.payload["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    assert_eq!(sev, ["critical", "medium", "high", "low"]);
    assert_eq!(p.payload["findings"][2]["key"], "login-error");
}

#[tokio::test]
async fn a_workflow_chains_rust_python_and_javascript_agents() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mixed.yaml");
    let src = source::load(&file).unwrap_or_else(|d| panic!("{d:#?}"));
    let w = Arc::new(
        validate(&src, support::runtime())
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    );
    let params = resolve_params(&w, &[]).unwrap();
    let report = run(
        support::runtime().clone(),
        w,
        RunOptions::new("mixed", params),
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    let out: &Value = &report.outputs;
    assert_eq!(out["worst"], "critical", "{out}");
    assert!(
        out["report"].as_str().unwrap().contains("unique findings"),
        "{out}"
    );
    assert!(
        out["keywords"].as_array().is_some_and(|k| !k.is_empty()),
        "{out}"
    );
    let agents_used: Vec<&str> = report.steps.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(agents_used, ["severity", "aggregate", "keywords"]);
}
