//! `corral run`: validate, then run a workflow with a progress bar (or JSON events), and print the report.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use corral::Runtime;
use corral::store::ArtifactLimits;
use corral::workflow::durable::{ResumeError, ResumeRequest, begin, reopen};
use corral::workflow::events::{Event, EventSink};
use corral::workflow::model::Workflow;
use corral::workflow::param_files;
use corral::workflow::report::{RunReport, RunStatus};
use corral::workflow::run::{RunOptions, resolve_params, run as run_workflow};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::validate::Report;
use super::{Exit, StateArgs, render};

#[derive(Args)]
pub struct RunArgs {
    /// The workflow file (YAML or JSON).
    pub(crate) workflow: PathBuf,

    /// Set a param: `name=value`. Strings are taken as they are; an artifact param takes the path of a file, stored in the run; other types are JSON. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub(crate) params: Vec<(String, String)>,

    /// Identifier of this run [default: generated].
    #[arg(long)]
    pub(crate) run_id: Option<String>,

    /// Seed of the retry jitter.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,

    /// Run in memory only: no journal, so no resume, approvals or step cache.
    #[arg(long)]
    pub(crate) ephemeral: bool,

    #[command(flatten)]
    pub(crate) drive: DriveArgs,
}

/// How a run is driven and shown; shared by `run`, `resume` and `retry`.
#[derive(Args)]
pub struct DriveArgs {
    /// Print one JSON object per event, then the report as `{"type": "report", ...}`.
    #[arg(long)]
    pub(crate) json: bool,

    /// When only approval steps are left, wait for their answers (and
    /// deadlines) instead of exiting with status `waiting`.
    #[arg(long)]
    pub(crate) wait: bool,

    /// On Ctrl-C, run the compensations of completed steps.
    #[arg(long)]
    pub(crate) compensate_on_cancel: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The run to continue (see `corral runs`).
    run_id: String,

    /// Give a param a new value; only steps whose resolved inputs change run again. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,

    /// Accept components whose digest changed since the run started (recorded in the journal).
    #[arg(long)]
    allow_changed_components: bool,

    #[command(flatten)]
    drive: DriveArgs,
}

#[derive(Args)]
pub struct RetryArgs {
    /// The run (see `corral runs`).
    run_id: String,

    /// The step to run again; steps that read its output run again if it changes. Repeatable.
    #[arg(long = "step", required = true)]
    steps: Vec<String>,

    /// Accept components whose digest changed since the run started (recorded in the journal).
    #[arg(long)]
    allow_changed_components: bool,

    /// Answer model requests from the run's journal, never a provider: a request identical to one the run made (same alias, messages, tools, schema, settings) gets the answer recorded for it, charged as before; any other fails with `not_recorded`. `--models` is not used.
    #[arg(long)]
    pub(crate) replay_models: bool,

    #[command(flatten)]
    drive: DriveArgs,
}

impl RetryArgs {
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }
}

/// Prints why the params cannot start a run.
fn param_errors(errors: &[String], json: bool) -> Exit {
    if json {
        println!(
            "{}",
            json!({ "type": "error", "data": { "errors": errors } })
        );
    } else {
        for e in errors {
            eprintln!("error: {e}");
        }
    }
    Exit::InvalidWorkflow
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not of the form name=value"))
}

pub async fn run(rt: Runtime, args: RunArgs, state: &StateArgs) -> Exit {
    let report = if args.drive.json {
        Report::RunJson
    } else {
        Report::Text
    };
    let w = match super::validate::load(&rt, &args.workflow, report).await {
        Ok(w) => Arc::new(w),
        Err(exit) => return exit,
    };
    let store = if args.ephemeral {
        None
    } else {
        match state.open() {
            Ok(s) => Some(s),
            Err(exit) => return exit,
        }
    };
    let json = args.drive.json;
    let staged = match &store {
        Some(store) => match param_files::stage(&**store, &w, &args.params) {
            Ok(staged) => staged,
            Err(errors) => return param_errors(&errors, json),
        },
        None => match param_files::names_artifact(&w, &args.params) {
            Some(name) => {
                let e = format!(
                    "param `{name}` is an artifact, and an --ephemeral run has no store to keep it: run without --ephemeral"
                );
                return param_errors(&[e], json);
            }
            None => param_files::Staged::plain(args.params.clone()),
        },
    };
    let params = match resolve_params(&w, &staged.params) {
        Ok(p) => p,
        Err(errors) => return param_errors(&errors, json),
    };
    let run_id = args.run_id.unwrap_or_else(new_run_id);
    let cancel = CancellationToken::new();
    let journal = match store {
        None => None,
        Some(store) => {
            let journal = match begin(store.clone(), &w, &params, &run_id, cancel.clone()) {
                Ok(j) => j,
                Err(e) => return super::store_error(&e),
            };
            let limits = ArtifactLimits {
                run: w.artifact_budget,
                tenant: u64::MAX,
            };
            if let Err(e) = staged.place(&*store, &run_id, limits) {
                return param_errors(&[e], json);
            }
            Some(journal)
        }
    };
    let mut opts = RunOptions::new(run_id, params);
    opts.seed = args.seed;
    opts.cancel = cancel;
    opts.journal = journal;
    drive(Arc::new(rt), w, opts, &args.drive).await
}

pub async fn resume(rt: Runtime, args: ResumeArgs, state: &StateArgs) -> Exit {
    let req = ResumeRequest {
        run_id: args.run_id,
        params: args.params,
        allow_changed_components: args.allow_changed_components,
        force: BTreeSet::new(),
    };
    reopen_and_drive(rt, req, state, &args.drive).await
}

pub async fn retry(rt: Runtime, args: RetryArgs, state: &StateArgs) -> Exit {
    let req = ResumeRequest {
        run_id: args.run_id,
        params: Vec::new(),
        allow_changed_components: args.allow_changed_components,
        force: args.steps.into_iter().collect(),
    };
    reopen_and_drive(rt, req, state, &args.drive).await
}

async fn reopen_and_drive(
    rt: Runtime,
    req: ResumeRequest,
    state: &StateArgs,
    d: &DriveArgs,
) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let cancel = CancellationToken::new();
    let r = match reopen(&rt, store, &req, cancel.clone()).await {
        Ok(r) => r,
        Err(e) => return resume_error(&e, d.json),
    };
    let mut opts = RunOptions::new(req.run_id.clone(), r.params);
    opts.cancel = cancel;
    opts.journal = Some(r.journal);
    opts.resume = Some(r.resume);
    drive(Arc::new(rt), r.workflow, opts, d).await
}

fn resume_error(e: &ResumeError, json: bool) -> Exit {
    let exit = match e {
        ResumeError::Store(s) => return super::store_error(s),
        ResumeError::Finished { .. } | ResumeError::UnknownStep { .. } => Exit::Usage,
        ResumeError::Invalid { .. }
        | ResumeError::ChangedComponents { .. }
        | ResumeError::Params { .. } => Exit::InvalidWorkflow,
    };
    if json {
        println!(
            "{}",
            json!({ "type": "error", "data": { "errors": [e.to_string()] } })
        );
    } else {
        eprintln!("error: {e}");
        if let ResumeError::Invalid { diagnostics, .. } = e {
            super::validate::print_diagnostics(diagnostics);
        }
    }
    exit
}

/// Runs to the end with progress (or JSON events), prints the report, closes the journal.
async fn drive(rt: Arc<Runtime>, w: Arc<Workflow>, mut opts: RunOptions, d: &DriveArgs) -> Exit {
    let on_signal = opts.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling the run (Ctrl-C again to abort at once)");
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Cancelled as i32);
            }
        }
    });

    let (events, bar) = if d.json {
        let sink: EventSink =
            Arc::new(|e: &Event| println!("{}", serde_json::to_string(e).unwrap()));
        (sink, None)
    } else if std::io::stderr().is_terminal() {
        let (sink, bar) = progress(w.steps.len());
        (sink, Some(bar))
    } else {
        let sink: EventSink = Arc::new(|e: &Event| match e {
            Event::StepFailed { step, error, .. } => eprintln!("step `{step}` failed: {error}"),
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
            Event::ApprovalRequested { step, prompt, .. } => {
                eprintln!("step `{step}` waits for a human: {prompt}")
            }
            _ => {}
        });
        (sink, None)
    };
    opts.events = events;
    opts.wait_for_approvals = d.wait;
    opts.compensate_on_cancel = d.compensate_on_cancel;
    let journal = opts.journal.clone();
    let report = run_workflow(rt, w, opts).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let journaled = match &journal {
        Some(j) => j.close().await,
        None => Ok(()),
    };
    if d.json {
        println!("{}", json!({ "type": "report", "data": report }));
    } else {
        print_report(&report);
        if journal.is_some() && report.status != RunStatus::Completed {
            eprintln!(
                "run `{}` is journaled: `corral show {}` for details{}",
                report.run_id,
                report.run_id,
                match report.status {
                    RunStatus::Waiting | RunStatus::Paused => format!(
                        "; answer with `corral approve {} <step> --input <json>` or `corral reject`, then `corral resume {}`",
                        report.run_id, report.run_id
                    ),
                    RunStatus::Cancelled =>
                        format!(", `corral resume {}` to continue", report.run_id),
                    _ => String::new(),
                }
            );
        }
    }
    if let Err(e) = journaled {
        eprintln!("error: the run's journal is incomplete: {e}");
        return Exit::Host;
    }
    match report.status {
        RunStatus::Completed | RunStatus::Degraded => Exit::Success,
        RunStatus::Failed => Exit::AgentError,
        RunStatus::FuelExhausted => Exit::Budget,
        RunStatus::Paused | RunStatus::Waiting => Exit::Paused,
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

/// A progress bar fed by events: steps done, time left (estimated from the
/// pace of finished steps), the running steps, fuel spent.
fn progress(total: usize) -> (EventSink, ProgressBar) {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps · ETA {eta} · {msg}")
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
            Event::CallFinished { receipt, .. } => s.1 += receipt.fuel_used,
            Event::StepCompleted { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepDegraded { step, .. }
            | Event::StepPaused { step, .. } => {
                s.0.remove(step);
                b.inc(1);
            }
            Event::StepSkipped { .. } | Event::StepReused { .. } => b.inc(1),
            Event::ApprovalRequested { step, prompt, .. } => {
                b.println(format!("  `{step}` waits for a human: {prompt}"));
            }
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
            corral::human::count(s.1)
        ));
    });
    (sink, bar)
}

fn print_report(r: &RunReport) {
    println!("{}", r.summary);
    let statuses: Vec<serde_json::Value> = r
        .steps
        .iter()
        .map(|s| serde_json::to_value(s.status).unwrap_or_default())
        .collect();
    let rows: Vec<render::StepLine> = r
        .steps
        .iter()
        .zip(&statuses)
        .map(|(s, status)| render::StepLine {
            id: &s.id,
            status: status.as_str().unwrap_or_default(),
            attempts: s.attempts,
            fuel: s.fuel_used,
            tokens: s.tokens_used,
            peak_memory_bytes: s.peak_memory_bytes,
            wall_time_us: s.wall_time_us,
            note: render::step_note(
                s.error.as_deref().or(s.skip_reason.as_deref()),
                s.reused,
                s.cached,
                s.fallback.as_deref(),
            ),
        })
        .collect();
    render::step_table(11, &rows);
    for b in r.breakers.iter().filter(|b| !b.transitions.is_empty()) {
        println!(
            "  breaker `{}`: {} ({})",
            b.agent,
            b.transitions.join(", "),
            serde_json::to_value(b.state).unwrap()
        );
    }
    for c in &r.compensations {
        println!(
            "  compensated `{}` with `{}`: {}",
            c.step,
            c.agent,
            c.error.as_deref().unwrap_or("ok")
        );
    }
    println!(
        "outputs:\n{}",
        serde_json::to_string_pretty(&r.outputs).unwrap()
    );
}
