//! `corral run`: validate, then run a workflow with a progress bar (or JSON events), and print the report.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use corral::Runtime;
use corral::workflow::events::{Event, EventSink};
use corral::workflow::report::{RunReport, RunStatus};
use corral::workflow::run::{RunOptions, resolve_params, run as run_workflow};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Exit;
use super::validate::Report;

#[derive(Args)]
pub struct RunArgs {
    /// The workflow file (YAML or JSON).
    workflow: PathBuf,

    /// Set a param: `name=value`. Strings are taken as they are; other types as JSON. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,

    /// Print one JSON object per event, then the report as `{"type": "report", ...}`.
    #[arg(long)]
    json: bool,

    /// Identifier of this run [default: generated].
    #[arg(long)]
    run_id: Option<String>,

    /// Seed of the retry jitter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not of the form name=value"))
}

pub async fn run(rt: Runtime, args: RunArgs) -> Exit {
    let report = if args.json {
        Report::RunJson
    } else {
        Report::Text
    };
    let w = match super::validate::load(&rt, &args.workflow, report).await {
        Ok(w) => Arc::new(w),
        Err(exit) => return exit,
    };
    let params = match resolve_params(&w, &args.params) {
        Ok(p) => p,
        Err(errors) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "type": "error", "data": { "errors": errors } })
                );
            } else {
                for e in &errors {
                    eprintln!("error: {e}");
                }
            }
            return Exit::InvalidWorkflow;
        }
    };
    let run_id = args.run_id.unwrap_or_else(new_run_id);
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling the run (Ctrl-C again to abort at once)");
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Cancelled as i32);
            }
        }
    });

    let (events, bar) = if args.json {
        let sink: EventSink =
            Arc::new(|e: &Event| println!("{}", serde_json::to_string(e).unwrap()));
        (sink, None)
    } else if std::io::stderr().is_terminal() {
        let (sink, bar) = progress(w.steps.len());
        (sink, Some(bar))
    } else {
        let sink: EventSink = Arc::new(|e: &Event| match e {
            Event::StepFailed { step, error } => eprintln!("step `{step}` failed: {error}"),
            Event::StepRetrying {
                step,
                next_attempt,
                delay_ms,
                error,
                ..
            } => {
                eprintln!(
                    "step `{step}` retrying (attempt {next_attempt} in {delay_ms} ms): {error}"
                )
            }
            _ => {}
        });
        (sink, None)
    };

    let rt = Arc::new(rt);
    let opts = RunOptions {
        run_id,
        params,
        events,
        cancel,
        seed: args.seed,
    };
    let report = run_workflow(rt, w, opts).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", json!({ "type": "report", "data": report }));
    } else {
        print_report(&report);
    }
    match report.status {
        RunStatus::Completed | RunStatus::Degraded => Exit::Success,
        RunStatus::Failed => Exit::AgentError,
        RunStatus::FuelExhausted => Exit::Budget,
        RunStatus::Paused => Exit::Paused,
        RunStatus::Cancelled => Exit::Cancelled,
    }
}

fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("run-{:x}-{:04x}", nanos, fastrand::u16(..))
}

/// A progress bar fed by events: steps done, the running steps, fuel spent.
fn progress(total: usize) -> (EventSink, ProgressBar) {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps · {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let state = Arc::new(Mutex::new((BTreeSet::<String>::new(), 0u64)));
    let b = bar.clone();
    let sink: EventSink = Arc::new(move |e: &Event| {
        let mut s = state.lock().unwrap();
        match e {
            Event::StepStarted { step } => {
                s.0.insert(step.clone());
            }
            Event::CallFinished { fuel_used, .. } => s.1 += fuel_used,
            Event::StepCompleted { step }
            | Event::StepFailed { step, .. }
            | Event::StepDegraded { step, .. }
            | Event::StepPaused { step, .. } => {
                s.0.remove(step);
                b.inc(1);
            }
            Event::StepSkipped { .. } => b.inc(1),
            Event::StepRetrying {
                step, next_attempt, ..
            } => {
                b.println(format!("  retrying `{step}` (attempt {next_attempt})"));
            }
            _ => {}
        }
        let running: Vec<&str> = s.0.iter().map(String::as_str).take(4).collect();
        b.set_message(format!(
            "running: {} · fuel {}",
            if running.is_empty() {
                "-".into()
            } else {
                running.join(", ")
            },
            s.1
        ));
    });
    (sink, bar)
}

fn print_report(r: &RunReport) {
    println!("{}", r.summary);
    println!(
        "  {:<16} {:<11} {:>8} {:>14} {:>10} {:>11}  note",
        "step", "status", "attempts", "fuel", "peak mem", "wall"
    );
    for s in &r.steps {
        let note = s
            .error
            .clone()
            .or_else(|| s.skip_reason.clone())
            .or_else(|| {
                s.fallback
                    .as_ref()
                    .map(|f| format!("output from fallback `{f}`"))
            })
            .unwrap_or_default();
        println!(
            "  {:<16} {:<11} {:>8} {:>14} {:>10} {:>11}  {}",
            s.id,
            serde_json::to_value(s.status)
                .unwrap()
                .as_str()
                .unwrap_or_default(),
            s.attempts,
            s.fuel_used,
            bytesize::ByteSize(s.peak_memory_bytes).to_string(),
            format!("{:.2?}", std::time::Duration::from_micros(s.wall_time_us)),
            note
        );
    }
    for b in r.breakers.iter().filter(|b| !b.transitions.is_empty()) {
        println!(
            "  breaker `{}`: {} ({})",
            b.agent,
            b.transitions.join(", "),
            serde_json::to_value(b.state).unwrap()
        );
    }
    println!(
        "outputs:\n{}",
        serde_json::to_string_pretty(&r.outputs).unwrap()
    );
}
