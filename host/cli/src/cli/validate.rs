//! `corral validate`: the dry run. Diagnostics with file, line and field, or the plan and the fuel estimate.

use std::path::{Path, PathBuf};

use clap::Args;
use corral::workflow::model::Workflow;
use corral::workflow::plan::{Plan, plan};
use corral::workflow::source::{self, Diagnostic};
use corral::workflow::validate::validate;
use corral::{Runtime, human};
use serde_json::json;

use super::Exit;

#[derive(Args)]
pub struct ValidateArgs {
    /// The workflow file (YAML or JSON).
    workflow: PathBuf,

    /// Print one JSON object: `valid`, `errors` and the `plan`.
    #[arg(long)]
    json: bool,
}

/// How `load` prints diagnostics.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Text,
    /// `corral validate --json`: one `{"valid": false, ...}` object.
    ValidateJson,
    /// `corral run --json`: an event, `{"type": "error", ...}`.
    RunJson,
}

/// Parses and validates; on failure prints the diagnostics.
pub async fn load(rt: &Runtime, path: &Path, report: Report) -> Result<Workflow, Exit> {
    let result = match source::load(path) {
        Ok(src) => validate(&src, rt).await,
        Err(d) => Err(d),
    };
    result.map_err(|diags| {
        match report {
            Report::ValidateJson => println!("{}", json!({ "valid": false, "errors": diags })),
            Report::RunJson => println!(
                "{}",
                json!({ "type": "error", "data": { "errors": diags } })
            ),
            Report::Text => print_diagnostics(&diags),
        }
        Exit::InvalidWorkflow
    })
}

pub fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("error: {d}");
    }
    eprintln!(
        "{} error{} in the workflow",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
}

pub async fn run(rt: &Runtime, args: ValidateArgs) -> Exit {
    let report = if args.json {
        Report::ValidateJson
    } else {
        Report::Text
    };
    let w = match load(rt, &args.workflow, report).await {
        Ok(w) => w,
        Err(exit) => return exit,
    };
    let p = plan(&w);
    if args.json {
        println!(
            "{}",
            json!({ "valid": true, "errors": [], "workflow": w.name, "digest": w.digest, "plan": p })
        );
    } else {
        print_plan(&w, &p);
    }
    Exit::Success
}

pub fn print_plan(w: &Workflow, p: &Plan) {
    println!(
        "workflow `{}` ({}) is valid: {} steps, {} agents",
        w.name,
        w.file.display(),
        w.steps.len(),
        w.agents.len()
    );
    for (name, a) in &w.agents {
        println!(
            "  agent  {name:<12} {} {}",
            a.agent.info().version,
            a.agent.digest()
        );
    }
    for (name, p) in &w.params {
        let default = p
            .default
            .as_ref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_else(|| " (required)".into());
        println!("  param  {name}: {}{default}", p.ty.name());
    }
    for (i, wave) in p.waves.iter().enumerate() {
        println!("  wave {:<3} {}", i + 1, wave.join(", "));
    }
    let f = &p.fuel;
    println!(
        "  fuel   worst case {} of the budget {}{}",
        human::count(f.worst_case),
        human::count(f.budget),
        if f.fits {
            ""
        } else {
            " (over: the run stops scheduling when the budget is spent)"
        }
    );
}
