//! Human and JSON rendering of receipts and errors, with whole cause chains.

use bytesize::ByteSize;
use corral::{CallError, LoadError, Receipt, human};
use serde_json::{Value, json};

use super::Exit;

/// Prints an error and every cause under it. Messages can quote what a
/// guest wrote (its error or panic message), so they are escaped.
pub fn error(e: &dyn std::error::Error) {
    eprintln!("error: {}", printable(&e.to_string()));
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {}", printable(&s.to_string()));
        source = s.source();
    }
}

/// A message made safe for the terminal: control characters escaped, and
/// cut at a few screens.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    corral::display::guest_text(s, 4 * corral::display::MAX_GUEST_TEXT_CHARS)
}

pub fn error_json(e: &CallError) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("message".into(), Value::String(e.to_string()));
    }
    v
}

pub fn load_error(e: &LoadError, json: bool) -> Exit {
    let exit = match e {
        LoadError::Read { .. } => Exit::Usage,
        LoadError::Describe { cause, .. } => match cause.kind() {
            corral::FailureKind::Host => Exit::Host,
            _ => Exit::NotAnAgent,
        },
        LoadError::Cache(_) | LoadError::UnsafeCache { .. } => Exit::Host,
        _ => Exit::NotAnAgent,
    };
    if json {
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        let doc = json!({
            "status": "error",
            "exit_code": exit as u8,
            "error": { "kind": "load", "message": e.to_string(), "causes": chain },
        });
        println!("{doc}");
    } else {
        error(e);
    }
    exit
}

pub fn receipt(r: &Receipt) {
    let pct = |used: u64, limit: u64| {
        if limit == 0 {
            0.0
        } else {
            used as f64 * 100.0 / limit as f64
        }
    };
    eprintln!("receipt for `{}`", r.agent);
    eprintln!(
        "  fuel     {} of {} instructions ({:.2}%)",
        human::count(r.fuel_used),
        human::count(r.fuel_limit),
        pct(r.fuel_used, r.fuel_limit)
    );
    eprintln!(
        "  memory   {} peak of {}",
        ByteSize(r.peak_memory_bytes),
        ByteSize(r.memory_limit_bytes)
    );
    eprintln!(
        "  time     {} of {}",
        human::duration(r.wall_time()),
        human::duration(std::time::Duration::from_millis(r.timeout_ms))
    );
    eprintln!(
        "  packets  {} in, {} out",
        ByteSize(r.bytes_in),
        ByteSize(r.bytes_out)
    );
    eprintln!(
        "  logs     {} kept, {} dropped",
        ByteSize(r.log_bytes),
        ByteSize(r.log_bytes_dropped)
    );
    for m in &r.model_calls {
        eprintln!(
            "  model    {} ({}): {} tokens ({} prompt, {} completion), {} attempt(s), {} ms, {}",
            m.alias,
            m.model,
            m.charged_tokens,
            m.prompt_tokens,
            m.completion_tokens,
            m.attempts,
            m.latency_ms,
            m.outcome
        );
    }
    for h in &r.http_calls {
        // The path is the guest's text.
        let status = h.status.map_or("-".to_owned(), |s| s.to_string());
        eprintln!(
            "  http     {} {}{} -> {status}, {} out, {} in, {} ms, {}{}",
            h.method,
            h.origin,
            corral::display::guest(&h.path),
            ByteSize(h.bytes_out),
            ByteSize(h.bytes_in),
            h.latency_us / 1000,
            h.outcome,
            h.detail
                .as_deref()
                .map(|d| format!(": {}", corral::display::guest(d)))
                .unwrap_or_default()
        );
    }
    if r.http_calls_dropped > 0 {
        eprintln!(
            "  http     … {} more requests, counted but not recorded",
            r.http_calls_dropped
        );
    }
}

/// One row of a step table, as `corral run` and `corral show` print them.
pub struct StepLine<'a> {
    pub id: &'a str,
    pub status: &'a str,
    pub attempts: u32,
    pub fuel: u64,
    /// Model tokens charged to the step's calls.
    pub tokens: u64,
    pub peak_memory_bytes: u64,
    pub wall_time_us: u64,
    pub note: String,
}

/// Prints the step table; `status_width` fits the longest status shown.
pub fn step_table(status_width: usize, rows: &[StepLine<'_>]) {
    println!(
        "  {:<16} {:<status_width$} {:>8} {:>14} {:>8} {:>10} {:>11}  note",
        "step", "status", "attempts", "fuel", "tokens", "peak mem", "wall"
    );
    for s in rows {
        println!(
            "  {:<16} {:<status_width$} {:>8} {:>14} {:>8} {:>10} {:>11}  {}",
            s.id,
            s.status,
            s.attempts,
            human::count(s.fuel),
            human::count(s.tokens),
            ByteSize(s.peak_memory_bytes).to_string(),
            human::duration(std::time::Duration::from_micros(s.wall_time_us)),
            printable(&s.note)
        );
    }
}

/// A step's note: the first of its error, skip reason and provenance.
pub fn step_note(
    error: Option<&str>,
    reused: bool,
    cached: bool,
    fallback: Option<&str>,
) -> String {
    error
        .map(str::to_owned)
        .or_else(|| reused.then(|| "reused from an earlier session".to_owned()))
        .or_else(|| cached.then(|| "from the step cache".to_owned()))
        .or_else(|| fallback.map(|f| format!("output from fallback `{f}`")))
        .unwrap_or_default()
}
