//! The history commands: `runs`, `show`, `events`, `cancel` and `gc`, read from (and pruning) the state store.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use corral::Runtime;
use corral::store::{LEASE, RunRecord, StepRecord, StepState, now_ms};
use corral::workflow::durable::{ResumeError, ResumeRequest, reopen};
use corral::workflow::run::{RunOptions, run as run_workflow};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Exit, StateArgs, render};

#[derive(Args)]
pub struct RunsArgs {
    /// One JSON object per run.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    pub(crate) run_id: String,
    /// One JSON object: the run, its steps (with outputs) and waiting approvals.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub struct EventsArgs {
    pub(crate) run_id: String,
    /// Keep printing new entries until the run stops.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    pub(crate) run_id: String,
    /// Also run the compensations of the steps that completed.
    #[arg(long)]
    pub(crate) compensate: bool,
}

#[derive(Args)]
pub struct GcArgs {
    /// Delete finished runs last updated longer ago than this. Example: `--older-than 7d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Duration,
    /// Print what was deleted as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn age(ms: i64) -> String {
    let secs = ((now_ms() - ms).max(0) / 1000) as u64;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

pub fn runs(args: RunsArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let runs = match store.runs() {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    let now = now_ms();
    if args.json {
        for r in &runs {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["status"] = json!(r.display_status(now, LEASE));
            println!("{v}");
        }
        return Exit::Success;
    }
    if runs.is_empty() {
        println!("no runs in {}", state.dir.display());
        return Exit::Success;
    }
    println!(
        "{:<28} {:<16} {:<14} {:>8}  {:<16} note",
        "run", "workflow", "status", "sessions", "updated"
    );
    for r in &runs {
        let status = r.display_status(now, LEASE);
        let note = match status {
            "interrupted" => format!("its process died; `corral resume {}`", r.id),
            "running" => "a process is driving it".to_owned(),
            "queued" => {
                "no process drives it yet: the next server or worker to claim a run takes it"
                    .to_owned()
            }
            _ => r.error.clone().unwrap_or_default(),
        };
        println!(
            "{:<28} {:<16} {:<14} {:>8}  {:<16} {}",
            r.id,
            r.workflow,
            status,
            r.sessions,
            age(r.updated_ms),
            note
        );
    }
    Exit::Success
}

/// Step ids in the order of the run's definition.
fn step_order(r: &RunRecord) -> Vec<String> {
    corral::workflow::source::parse(Path::new(&r.file), &r.definition)
        .map(|src| src.def.steps.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default()
}

pub fn show(args: ShowArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let (run, steps) = match store
        .run(&args.run_id)
        .and_then(|r| Ok((r, store.steps(&args.run_id)?)))
    {
        Ok(x) => x,
        Err(e) => return super::store_error(&e),
    };
    let mut by_id: HashMap<String, StepRecord> =
        steps.into_iter().map(|s| (s.step.clone(), s)).collect();
    let mut ordered: Vec<StepRecord> = step_order(&run)
        .into_iter()
        .map(|id| {
            by_id.remove(&id).unwrap_or(StepRecord {
                step: id,
                status: StepState::Pending,
                ..StepRecord::default()
            })
        })
        .collect();
    ordered.extend(by_id.into_values());
    let status = run.display_status(now_ms(), LEASE);
    let waiting: Vec<&StepRecord> = ordered
        .iter()
        .filter(|s| s.waiting.is_some() && s.answer.is_none())
        .collect();
    if args.json {
        let steps: Vec<Value> = ordered
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                if let Some(d) = &s.output {
                    v["output_value"] = store
                        .blob(d)
                        .ok()
                        .flatten()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or(Value::Null);
                }
                v
            })
            .collect();
        let mut r = serde_json::to_value(&run).unwrap_or(Value::Null);
        r["status"] = json!(status);
        let artifacts: Vec<Value> = store
            .artifacts(&run.id)
            .unwrap_or_default()
            .into_iter()
            .map(|a| json!({ "$artifact": a.digest, "media_type": a.media_type, "size": a.size }))
            .collect();
        println!(
            "{}",
            json!({ "run": r, "steps": steps, "artifacts": artifacts, "waiting": waiting.iter().map(|s| json!({ "step": s.step, "request": s.waiting })).collect::<Vec<_>>() })
        );
        return Exit::Success;
    }
    println!(
        "run `{}` of workflow `{}`: {status}{}",
        run.id,
        run.workflow,
        run.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!(
        "  started {}, updated {}, {} session(s); definition {}",
        age(run.created_ms),
        age(run.updated_ms),
        run.sessions,
        run.digest
    );
    let rows: Vec<render::StepLine> = ordered
        .iter()
        .map(|s| render::StepLine {
            id: &s.step,
            status: s.status.as_str(),
            attempts: s.attempts,
            fuel: s.fuel_used,
            tokens: s.tokens_used,
            peak_memory_bytes: s.peak_memory_bytes,
            wall_time_us: s.wall_time_us,
            note: render::step_note(s.error.as_deref(), false, s.cached, s.fallback.as_deref()),
        })
        .collect();
    render::step_table(20, &rows);
    calls(store.as_ref(), &run.id);
    if let Ok(artifacts) = store.artifacts(&run.id) {
        for a in &artifacts {
            println!(
                "  artifact {}  {}  {}",
                a.digest,
                a.media_type,
                bytesize::ByteSize(a.size)
            );
        }
    }
    for s in waiting {
        let w = s.waiting.as_ref().expect("filtered");
        println!(
            "waiting: step `{}`: {}",
            s.step,
            w["prompt"].as_str().unwrap_or("")
        );
        if !w["context"].is_null() {
            println!("  context: {}", w["context"]);
        }
        if !w["schema"].is_null() {
            println!("  input schema: {}", w["schema"]);
        }
        if let Some(d) = w["deadline_ms"].as_i64() {
            let left = (d - now_ms()).max(0) as u64;
            println!(
                "  deadline: in {}",
                humantime::format_duration(Duration::from_secs(left / 1000))
            );
        }
        println!(
            "  answer: corral approve {} {} --input '<json>'   or   corral reject {} {} --reason '...'",
            run.id, s.step, run.id, s.step
        );
    }
    Exit::Success
}

/// The delegated calls in `receipt`, as a tree indented by depth.
fn delegations(lines: &mut Vec<String>, step: &str, receipt: &serde_json::Value, depth: usize) {
    for d in receipt["delegations"].as_array().into_iter().flatten() {
        let inner = &d["receipt"];
        let reused = d["outcome"] == "reused";
        lines.push(format!(
            "  call   {step:<16} {}{} (depth {}): fuel {} of {} carved, {}{}",
            "  ".repeat(depth - 1),
            d["agent"].as_str().unwrap_or(""),
            d["depth"],
            // A reused answer spent nothing in this session.
            if reused {
                0
            } else {
                inner["fuel_used"].as_u64().unwrap_or(0)
            },
            d["fuel_carved"],
            if reused {
                "reused (answered as in an earlier session)"
            } else {
                d["outcome"].as_str().unwrap_or("")
            },
            d["error"]
                .as_str()
                .map(|e| format!(": {}", corral::display::guest(e)))
                .unwrap_or_default()
        ));
        // A journal holds no deeper tree than the limit allows.
        if !reused && depth < corral::workflow::limits::MAX_DELEGATION_DEPTH as usize {
            delegations(lines, step, inner, depth + 1);
        }
    }
}

/// The most model and HTTP calls `show` lists; `corral events` has them all.
const MAX_CALL_LINES: usize = 50;

/// Every model and HTTP call the run's agents made, from the receipts in
/// its journal: step, alias or request, tokens or bytes, time and outcome.
fn calls(store: &dyn corral::store::Store, run: &str) {
    let Ok(entries) = store.journal(run, 0, 100_000) else {
        return;
    };
    let mut lines = Vec::new();
    for e in entries.iter().filter(|e| e.kind == "call_finished") {
        let step = e.step.as_deref().unwrap_or("");
        let receipt = &e.data["receipt"];
        for m in receipt["model_calls"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  model  {step:<16} {} ({}): {} tokens, {} ms, {}",
                m["alias"].as_str().unwrap_or(""),
                m["model"].as_str().unwrap_or(""),
                m["charged_tokens"],
                m["latency_ms"],
                m["outcome"].as_str().unwrap_or("")
            ));
        }
        delegations(&mut lines, step, receipt, 1);
        for h in receipt["http_calls"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  http   {step:<16} {} {}{} -> {}, {} B in, {}",
                h["method"].as_str().unwrap_or(""),
                h["origin"].as_str().unwrap_or(""),
                corral::display::guest(h["path"].as_str().unwrap_or("")),
                h["status"].as_u64().map_or("-".into(), |s| s.to_string()),
                h["bytes_in"],
                h["outcome"].as_str().unwrap_or("")
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!("calls:");
    for l in lines.iter().take(MAX_CALL_LINES) {
        println!("{l}");
    }
    if lines.len() > MAX_CALL_LINES {
        println!(
            "  … {} more (`corral events {run}` has every receipt)",
            lines.len() - MAX_CALL_LINES
        );
    }
}

pub async fn events(args: EventsArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    if let Err(e) = store.run(&args.run_id) {
        return super::store_error(&e);
    }
    let mut after = 0;
    loop {
        let entries = match store.journal(&args.run_id, after, 1000) {
            Ok(e) => e,
            Err(e) => return super::store_error(&e),
        };
        for e in &entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
            after = e.seq;
        }
        if entries.len() == 1000 {
            continue;
        }
        if !args.follow {
            return Exit::Success;
        }
        match store.run(&args.run_id) {
            // Keep following while a process drives the run.
            Ok(r) if r.lease_live(now_ms(), LEASE) => {}
            Ok(_) => {
                // One last read: entries committed just before the driver let go.
                if store
                    .journal(&args.run_id, after, 1)
                    .map(|e| e.is_empty())
                    .unwrap_or(true)
                {
                    return Exit::Success;
                }
                continue;
            }
            Err(e) => return super::store_error(&e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn cancel(rt: Runtime, args: CancelArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let run = match store.run(&args.run_id) {
        Ok(r) => r,
        Err(e) => return super::store_error(&e),
    };
    if run.is_finished() {
        eprintln!("run `{}` is already {}", run.id, run.status);
        return Exit::Usage;
    }
    let live = run.lease_live(now_ms(), LEASE);
    if !live && args.compensate {
        // Nobody drives it: drive it just long enough to cancel and compensate.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let req = ResumeRequest {
            run_id: run.id.clone(),
            ..ResumeRequest::default()
        };
        let r = match reopen(&rt, store, &req, cancel.clone()).await {
            Ok(r) => r,
            Err(ResumeError::Store(e)) => return super::store_error(&e),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::InvalidWorkflow;
            }
        };
        let journal = r.journal.clone();
        let mut opts = RunOptions::new(run.id.clone(), r.params);
        opts.cancel = cancel;
        opts.journal = Some(r.journal);
        opts.resume = Some(r.resume);
        opts.compensate_on_cancel = true;
        let report = run_workflow(std::sync::Arc::new(rt), r.workflow, opts).await;
        if let Err(e) = journal.close().await {
            eprintln!("error: the run's journal is incomplete: {e}");
            return Exit::Host;
        }
        println!("{}", report.summary);
        return if report.compensations.iter().all(|c| c.outcome == "ok") {
            Exit::Cancelled
        } else {
            Exit::AgentError
        };
    }
    match store.request_cancel(&run.id, LEASE, args.compensate) {
        // Whether a driver was live is decided inside the store's transaction.
        Ok(rec) if rec.cancel_requested => {
            println!(
                "asked the process driving run `{}` to cancel it; it stops within about {}",
                run.id,
                humantime::format_duration(corral::store::HEARTBEAT)
            );
            Exit::Success
        }
        Ok(_) => {
            println!("run `{}` cancelled", run.id);
            Exit::Success
        }
        Err(e) => super::store_error(&e),
    }
}

pub fn gc(args: GcArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let before = now_ms() - args.older_than.as_millis() as i64;
    match store.gc(before) {
        Ok(stats) => {
            if args.json {
                println!("{}", serde_json::to_string(&stats).unwrap_or_default());
            } else {
                println!(
                    "deleted {} run(s), {} journal entries, {} blob(s) ({}), {} expired cache entries, {} artifact(s) ({})",
                    stats.runs,
                    stats.journal_entries,
                    stats.blobs,
                    bytesize::ByteSize(stats.blob_bytes),
                    stats.cache_entries,
                    stats.artifacts,
                    bytesize::ByteSize(stats.artifact_bytes)
                );
            }
            Exit::Success
        }
        Err(e) => super::store_error(&e),
    }
}
