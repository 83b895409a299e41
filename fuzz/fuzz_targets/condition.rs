//! Fuzzes CEL conditions: any expression compiles or is refused with a reason, and any compiled one evaluates to an answer or an error, never a panic.
//!
//! The input is the expression, then optionally a NUL byte and the JSON
//! data that `params` and every step's output are bound to.

#![no_main]

use corral_workflow::condition::{Binding, CompileError, Condition, EvalError};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let (expr, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let value: Value = serde_json::from_slice(rest)
        .unwrap_or_else(|_| json!({"label": "bug", "n": 3, "xs": [1, 2, 3], "m": {"a": [true]}}));
    let condition = match Condition::compile(expr) {
        Ok(c) => c,
        // The parse thread catches panics: here they are findings.
        Err(CompileError::ParserFailed) => panic!("the CEL parser panicked on {expr:?}"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let lookup = |_: &str| Some((json!("completed"), Some(&value)));
    let vars = [
        ("params", Binding::Json(&value)),
        ("steps", Binding::Steps(&lookup)),
        ("critic", Binding::Json(&value)),
        ("output", Binding::Json(&value)),
    ];
    if let Err(EvalError::Panicked { .. }) = condition.eval_with(&vars) {
        panic!("the CEL interpreter panicked on {expr:?}");
    }
});
