//! The commands `--server` serves: `run`, `runs`, `show`, `events`, `approve`, `reject` and `cancel`, each printing what its local form prints and exiting with its code.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::sse::{self, End};
use super::{Failed, Remote};
use crate::cli::render;
use crate::cli::{Command, Exit};

/// The largest workflow file sent (the server's own limit is the same).
const MAX_WORKFLOW: u64 = 1 << 20;
/// Pages of runs read for `corral runs` (100 each).
const MAX_PAGES: usize = 100;

/// Runs `command` against the server; commands that only make sense on
/// this machine say so.
pub fn dispatch(remote: &Remote, command: Command) -> Exit {
    let done = match command {
        Command::Run(a) => run(remote, a),
        Command::Runs(a) => runs(remote, a.json),
        Command::Show(a) => show(remote, &a.run_id, a.json),
        Command::Events(a) => events(remote, &a.run_id, a.follow),
        Command::Approve(a) => answer(
            remote,
            &a.run_id,
            &a.step,
            "approve",
            match serde_json::from_str::<Value>(&a.input) {
                Ok(v) => json!({ "input": v }),
                Err(e) => {
                    eprintln!("error: `--input` is not valid JSON: {e}");
                    return Exit::Contract;
                }
            },
        ),
        Command::Reject(a) => answer(
            remote,
            &a.run_id,
            &a.step,
            "reject",
            json!({ "reason": a.reason }),
        ),
        Command::Cancel(a) => cancel(remote, &a.run_id, a.compensate),
        other => {
            eprintln!(
                "error: `corral {}` works on this machine only; run it without --server (the commands --server serves: run, runs, show, events, approve, reject, cancel)",
                other.name()
            );
            return Exit::Usage;
        }
    };
    done.unwrap_or_else(|Failed(exit)| exit)
}

/// The exit code of a run that stopped in `status`, as `corral run` has it.
fn exit_of(status: &str) -> Exit {
    match status {
        "completed" | "degraded" => Exit::Success,
        "failed" => Exit::AgentError,
        "fuel_exhausted" => Exit::Budget,
        "waiting" | "paused" => Exit::Paused,
        "cancelled" => Exit::Cancelled,
        _ => Exit::Host,
    }
}

fn run(remote: &Remote, a: crate::cli::run::RunArgs) -> Result<Exit, Failed> {
    if a.ephemeral || a.run_id.is_some() || a.drive.compensate_on_cancel {
        eprintln!(
            "error: --ephemeral, --run-id and --compensate-on-cancel are for local runs; a server journals every run and names it"
        );
        return Err(Failed(Exit::Usage));
    }
    let text = read_workflow(&a.workflow)?;
    let format = match a.workflow.extension().and_then(|e| e.to_str()) {
        Some("json") => "json",
        _ => "yaml",
    };
    // Values go as text: the server reads them by each param's declared
    // type, exactly as `--param` is read locally.
    let params: Map<String, Value> = a
        .params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    remote.submitting(&a.workflow);
    let submitted = remote.post(
        "/v1/runs",
        &json!({ "workflow": text, "format": format, "params": params }),
    )?;
    let id = submitted["id"].as_str().unwrap_or_default().to_owned();
    eprintln!("run `{id}` submitted to {}", remote.base);
    loop {
        let end = sse::read(remote, &id, true, |e| print_event(e, a.drive.json))?;
        let view = remote.get(&format!("/v1/runs/{}", seg(&id)))?;
        let status = match end {
            End::Stopped(s) | End::CaughtUp(s) if !s.is_empty() => s,
            _ => view["status"].as_str().unwrap_or("").to_owned(),
        };
        // `--wait`: a human answers on another terminal (or the web);
        // keep following until the run moves on.
        if a.drive.wait && matches!(status.as_str(), "waiting" | "paused") {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        if a.drive.json {
            let mut v = view.clone();
            v["type"] = json!("report");
            println!("{v}");
        } else {
            print_view(&view);
        }
        return Ok(exit_of(&status));
    }
}

fn read_workflow(path: &std::path::Path) -> Result<String, Failed> {
    let fail = |e: String| {
        eprintln!("error: {}: {e}", path.display());
        Failed(Exit::Usage)
    };
    let len = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if len > MAX_WORKFLOW {
        return Err(fail(format!(
            "{len} bytes; a workflow file may have at most {MAX_WORKFLOW}"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))
}

/// One progress line per event (or the event's JSON with `--json`).
fn print_event(e: &Value, json: bool) {
    if json {
        println!("{e}");
        return;
    }
    let kind = e["type"].as_str().unwrap_or("");
    match e["step"].as_str() {
        Some(step) => eprintln!("  {kind:<18} {step}"),
        None => eprintln!("  {kind}"),
    }
}

fn runs(remote: &Remote, json: bool) -> Result<Exit, Failed> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = match &cursor {
            Some(c) => format!("/v1/runs?limit=100&cursor={}", seg(c)),
            None => "/v1/runs?limit=100".to_owned(),
        };
        let page = remote.get(&path)?;
        all.extend(page["runs"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if json {
        for r in &all {
            println!("{r}");
        }
        return Ok(Exit::Success);
    }
    if all.is_empty() {
        println!("no runs on {}", remote.base);
        return Ok(Exit::Success);
    }
    println!(
        "{:<28} {:<16} {:<14} {:<16}",
        "run", "workflow", "status", "updated"
    );
    for r in &all {
        println!(
            "{:<28} {:<16} {:<14} {:<16}",
            r["id"].as_str().unwrap_or(""),
            r["workflow"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            crate::cli::history::age(r["updated_ms"].as_i64().unwrap_or(0)),
        );
    }
    Ok(Exit::Success)
}

fn show(remote: &Remote, id: &str, json: bool) -> Result<Exit, Failed> {
    let view = remote.get(&format!("/v1/runs/{}", seg(id)))?;
    if json {
        println!("{view}");
    } else {
        print_view(&view);
    }
    Ok(Exit::Success)
}

/// A run's view as `corral show` prints a local run.
fn print_view(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    let error = v["error"]
        .as_str()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    println!(
        "run `{}` of workflow `{}`: {}{error}",
        s("id"),
        s("workflow"),
        s("status")
    );
    println!(
        "  {}% of {} steps, {} session(s), {} fuel",
        v["progress"]["percent"], v["progress"]["steps"], v["sessions"], v["fuel_used"]
    );
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let rows: Vec<render::StepLine> = steps
        .iter()
        .map(|st| render::StepLine {
            id: st["step"].as_str().unwrap_or(""),
            status: st["status"].as_str().unwrap_or(""),
            attempts: st["attempts"].as_u64().unwrap_or(0) as u32,
            fuel: st["fuel_used"].as_u64().unwrap_or(0),
            tokens: st["tokens_used"].as_u64().unwrap_or(0),
            peak_memory_bytes: st["peak_memory_bytes"].as_u64().unwrap_or(0),
            wall_time_us: st["wall_time_us"].as_u64().unwrap_or(0),
            note: render::step_note(
                st["error"].as_str(),
                false,
                st["cached"].as_bool().unwrap_or(false),
                st["fallback"].as_str(),
            ),
        })
        .collect();
    render::step_table(20, &rows);
    for st in steps
        .iter()
        .filter(|st| st["waiting"].is_object() && st["answer"].is_null())
    {
        let (step, w) = (st["step"].as_str().unwrap_or(""), &st["waiting"]);
        println!(
            "waiting: step `{step}`: {}",
            w["prompt"].as_str().unwrap_or("")
        );
        if !w["schema"].is_null() {
            println!("  input schema: {}", w["schema"]);
        }
        println!(
            "  answer: corral approve {} {step} --input '<json>'   or   corral reject {} {step} --reason '...'",
            s("id"),
            s("id")
        );
    }
}

fn events(remote: &Remote, id: &str, follow: bool) -> Result<Exit, Failed> {
    sse::read(remote, id, follow, |e| println!("{e}"))?;
    Ok(Exit::Success)
}

fn answer(remote: &Remote, id: &str, step: &str, verb: &str, body: Value) -> Result<Exit, Failed> {
    let path = format!("/v1/runs/{}/steps/{}/{verb}", seg(id), seg(step));
    let view = remote.post(&path, &body)?;
    println!(
        "{} step `{step}` of run `{id}`; the run is {}",
        if verb == "approve" {
            "approved"
        } else {
            "rejected"
        },
        view["status"].as_str().unwrap_or("?")
    );
    Ok(Exit::Success)
}

fn cancel(remote: &Remote, id: &str, compensate: bool) -> Result<Exit, Failed> {
    if compensate {
        eprintln!("error: --compensate is not offered by the server's cancel; cancel without it");
        return Err(Failed(Exit::Usage));
    }
    let view = remote.post(&format!("/v1/runs/{}/cancel", seg(id)), &json!({}))?;
    println!(
        "cancel requested for run `{id}`; it is {}",
        view["status"].as_str().unwrap_or("?")
    );
    Ok(Exit::Success)
}

/// `s` as one URL path segment (or query value): anything but unreserved
/// characters percent-encoded, so an id cannot reach another endpoint.
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
