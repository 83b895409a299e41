//! Property tests: the workflow parser and validator, the packet checks and CEL conditions answer every generated or mutated input with a result or a diagnostic, never a panic.
//!
//! Each property runs 256 cases of small inputs, so the suite stays fast;
//! `fuzz/` explores the same entry points without those bounds.

#[path = "support.rs"]
mod support;

use std::path::Path;

use corral::HandoffPacket;
use corral::packet::check_depth;
use corral::schema::PayloadSchema;
use corral::workflow::condition::{Binding, CompileError, Condition, EvalError};
use corral::workflow::{source, validate::validate};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};
use support::*;

/// 256 cases unless `CORRAL_PROPTEST_CASES` asks for a longer campaign.
fn config() -> Config {
    let cases = std::env::var("CORRAL_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Small JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Random edits of `text`: characters replaced, inserted and removed.
fn mutated(text: String) -> impl Strategy<Value = String> {
    let len = text.chars().count().max(1);
    prop::collection::vec((0..len, any::<char>(), 0..3u8), 0..8).prop_map(move |edits| {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, c, op) in edits {
            let at = at.min(chars.len());
            match op {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

// ---- CEL conditions -------------------------------------------------------

/// CEL expressions from a small grammar over the variables a `when` sees.
fn cel_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("params.n".to_owned()),
        Just("params.s".to_owned()),
        Just("params.xs".to_owned()),
        Just("steps.a.output.text".to_owned()),
        Just("steps.a.output.tags".to_owned()),
        Just("steps.a.status".to_owned()),
        Just("steps['a'].output".to_owned()),
        (-5i64..100).prop_map(|n| n.to_string()),
        "[a-z]{0,4}".prop_map(|s| format!("'{s}'")),
        Just(r#"r"\""#.to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("1.5".to_owned()),
    ];
    leaf.prop_recursive(6, 48, 3, |inner| {
        let op = prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just(">="),
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("&&"),
            Just("||"),
            Just("in"),
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("size({a})")),
            inner.clone().prop_map(|a| format!("[{a}, {a}]")),
            inner.clone().prop_map(|a| format!("{{'k': {a}}}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("({c}) ? ({a}) : ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(r, p)| format!("({r}).all(x, {p})")),
            (inner.clone(), inner.clone()).prop_map(|(r, p)| format!("({r}).exists(x, x == {p})")),
            (inner.clone(), inner.clone()).prop_map(|(r, p)| format!("({r}).map(x, {p})")),
            (inner.clone(), inner).prop_map(|(r, p)| format!("({r}).filter(x, {p})")),
        ]
    })
}

/// Compiles and evaluates; every outcome must carry a reason.
fn answer(expr: &str, data: &Value) {
    let c = match Condition::compile(expr) {
        Ok(c) => c,
        Err(CompileError::ParserFailed) => panic!("the parser panicked on {expr:?}"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let lookup = |_: &str| Some((json!("completed"), Some(data)));
    let vars = [
        ("params", Binding::Json(data)),
        ("steps", Binding::Steps(&lookup)),
    ];
    match c.eval_with(&vars) {
        Ok(_) => {}
        Err(EvalError::Panicked { .. }) => panic!("the interpreter panicked on {expr:?}"),
        Err(e) => assert!(e.to_string().contains(expr), "{e}"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_conditions_answer(expr in cel_expr(), data in json_value()) {
        answer(&expr, &data);
    }

    #[test]
    fn mutated_conditions_answer(
        expr in cel_expr().prop_flat_map(mutated),
        data in json_value(),
    ) {
        answer(&expr, &data);
    }

    #[test]
    fn arbitrary_text_conditions_answer(expr in "\\PC{0,64}") {
        answer(&expr, &json!({"n": 1, "s": "x", "xs": [1, 2]}));
    }
}

// ---- Packets --------------------------------------------------------------

fn packet_schemas() -> Vec<PayloadSchema> {
    [
        json!({"type": "object", "properties": {"text": {"type": "string"},
               "tags": {"type": "array", "items": {"type": "string"}}},
               "required": ["text"], "additionalProperties": false}),
        json!({"$ref": "#/$defs/t", "$defs": {"t": {"type": "object",
               "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}}}),
        json!({"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 0}]}),
    ]
    .into_iter()
    .map(|s| PayloadSchema::compile(s).unwrap())
    .collect()
}

fn check_packet_text(text: &str, schemas: &[PayloadSchema]) {
    let Ok(packet) = serde_json::from_str::<HandoffPacket>(text) else {
        return;
    };
    match check_depth(&packet.payload, 8) {
        Err(problem) => assert!(!problem.to_string().is_empty()),
        Ok(()) => {
            for schema in schemas {
                if let Err(problem) = schema.check(&packet.payload) {
                    assert!(!problem.to_string().is_empty());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_packets_are_checked(payload in json_value()) {
        let schemas = packet_schemas();
        let text = serde_json::to_string(&packet(payload)).unwrap();
        check_packet_text(&text, &schemas);
    }

    #[test]
    fn mutated_packets_are_checked(
        text in json_value()
            .prop_map(|p| serde_json::to_string(&packet(p)).unwrap())
            .prop_flat_map(mutated),
    ) {
        check_packet_text(&text, &packet_schemas());
    }
}

// ---- Workflow files -------------------------------------------------------

/// A workflow over the echo agent: steps reading params and earlier (or
/// later: cycles are generated too) steps, with generated conditions.
fn workflow_text() -> impl Strategy<Value = String> {
    let step = (
        0..4usize,
        prop::option::of(0..4usize),
        prop::option::of(cel_expr()),
        prop::option::of(prop_oneof![Just("continue"), Just("fail"), Just("explode")]),
    );
    (prop::collection::vec(step, 1..4), any::<bool>()).prop_map(|(steps, with_param)| {
        let mut text = String::from(
            "version: 1\nname: prop\nagents:\n  echo: { component: \"@AGENTS@/echo.wasm\" }\n",
        );
        if with_param {
            text.push_str("params:\n  n: { type: integer, default: 3 }\n");
        }
        text.push_str("steps:\n");
        for (i, (id, reads, when, on_error)) in steps.into_iter().enumerate() {
            let source = match reads {
                Some(r) => format!("$steps.s{r}.output.text"),
                None => "hello".to_owned(),
            };
            text.push_str(&format!(
                "  - id: s{id}\n    agent: echo\n    input: {{ text: {source:?} }}\n"
            ));
            if let Some(w) = when {
                text.push_str(&format!("    when: {}\n", json!(w)));
            }
            if let Some(e) = on_error {
                text.push_str(&format!("    on_error: {e}\n"));
            }
            let _ = i;
        }
        text
    })
}

fn agents_dir() -> String {
    Path::new(agents::ECHO)
        .parent()
        .unwrap()
        .display()
        .to_string()
}

/// Parses and validates; a refusal must name at least one problem.
fn parse_and_validate(text: &str, executor: &tokio::runtime::Runtime) {
    let text = text.replace("@AGENTS@", &agents_dir());
    let src = match source::parse(Path::new("prop.yaml"), &text) {
        Ok(src) => src,
        Err(diags) => {
            assert!(!diags.is_empty());
            return;
        }
    };
    if let Err(diags) = executor.block_on(validate(&src, runtime())) {
        assert!(!diags.is_empty());
        assert!(diags.iter().all(|d| !d.message.is_empty()));
    }
}

fn executor() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_workflows_validate_or_explain(text in workflow_text()) {
        parse_and_validate(&text, &executor());
    }

    #[test]
    fn mutated_workflows_validate_or_explain(text in workflow_text().prop_flat_map(mutated)) {
        parse_and_validate(&text, &executor());
    }

    #[test]
    fn arbitrary_text_is_not_a_workflow_or_explains(text in "\\PC{0,200}") {
        parse_and_validate(&text, &executor());
    }
}
