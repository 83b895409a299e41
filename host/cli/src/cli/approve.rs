//! `corral approve` and `corral reject`: a human's answer to a waiting approval or a paused step, checked against its schema.

use clap::Args;
use serde_json::{Value, json};

use super::{Exit, StateArgs};

#[derive(Args)]
pub struct ApproveArgs {
    /// The run (see `corral runs`).
    pub(crate) run_id: String,
    /// The waiting step (see `corral show <run-id>`).
    pub(crate) step: String,
    /// The answer, as JSON; it must match the schema `corral show` prints, and becomes the step's output.
    #[arg(long, default_value = "{}")]
    pub(crate) input: String,
}

#[derive(Args)]
pub struct RejectArgs {
    /// The run (see `corral runs`).
    pub(crate) run_id: String,
    /// The waiting step (see `corral show <run-id>`).
    pub(crate) step: String,
    /// Why; recorded in the journal and in the step's error.
    #[arg(long)]
    pub(crate) reason: String,
}

pub fn approve(args: ApproveArgs, state: &StateArgs) -> Exit {
    let input: Value = match serde_json::from_str(&args.input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: `--input` is not valid JSON: {e}");
            return Exit::Contract;
        }
    };
    let store = match state.open() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let steps = match store.steps(&args.run_id) {
        Ok(s) => s,
        Err(e) => return super::store_error(&e),
    };
    if let Err(e) = store.run(&args.run_id) {
        return super::store_error(&e);
    }
    let schema = steps
        .iter()
        .find(|s| s.step == args.step)
        .and_then(|s| s.waiting.as_ref())
        .map(|w| w["schema"].clone())
        .unwrap_or(Value::Null);
    if !schema.is_null() {
        let validator = match jsonschema::validator_for(&schema) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: the step's schema is not usable: {e}");
                return Exit::Host;
            }
        };
        let problems: Vec<String> = validator
            .iter_errors(&input)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("  at {}: {e}", if at.is_empty() { "(root)" } else { &at })
            })
            .collect();
        if !problems.is_empty() {
            eprintln!(
                "error: run `{}`, step `{}`: `--input` does not match the step's schema; nothing was recorded and the step still waits:\n{}",
                args.run_id,
                args.step,
                problems.join("\n")
            );
            eprintln!("the schema: {schema}");
            return Exit::Contract;
        }
    }
    answer(
        state,
        &args.run_id,
        &args.step,
        json!({ "approved": true, "input": input }),
    )
}

pub fn reject(args: RejectArgs, state: &StateArgs) -> Exit {
    answer(
        state,
        &args.run_id,
        &args.step,
        json!({ "approved": false, "reason": args.reason }),
    )
}

fn answer(state: &StateArgs, run: &str, step: &str, answer: Value) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    if let Err(e) = store.answer(run, step, &answer) {
        return super::store_error(&e);
    }
    let verb = if answer["approved"] == Value::Bool(true) {
        "approved"
    } else {
        "rejected"
    };
    let live = store
        .run(run)
        .map(|r| r.lease_live(corral::store::now_ms(), corral::store::LEASE))
        .unwrap_or(false);
    if live {
        println!("{verb} step `{step}` of run `{run}`; the process driving it continues");
    } else {
        println!("{verb} step `{step}` of run `{run}`; continue it with `corral resume {run}`");
    }
    Exit::Success
}
