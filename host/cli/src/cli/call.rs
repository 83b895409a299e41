//! `corral call`: one agent, one payload, one receipt.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use corral::{
    Budget, CallError, DirGrant, EnvGrant, Grants, HandoffPacket, PacketProblem, Runtime,
};
use serde_json::{Value, json};

use super::{Exit, parse_bytes, parse_count, render};

#[derive(Args)]
pub struct CallArgs {
    /// The agent component (.wasm).
    agent: PathBuf,

    /// The payload: JSON text, `@file` to read a file, or `@-` for stdin.
    #[arg(long, short, value_name = "JSON|@FILE")]
    input: String,

    /// Wasm instructions the call may execute.
    #[arg(long, value_name = "N", default_value = "1G", value_parser = parse_count)]
    fuel: u64,

    /// Memory for the whole instance (all memories and tables).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    memory: u64,

    /// Wall-clock limit for the call, host calls included.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Largest output packet.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_bytes)]
    max_output: u64,

    /// Bytes of agent logs, stdout and stderr kept; the rest is dropped and counted.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_bytes)]
    max_log: u64,

    /// Open a host directory in the sandbox: host[:guest][:ro]. Repeatable.
    #[arg(long, value_name = "SPEC", value_parser = DirGrant::parse)]
    allow_dir: Vec<DirGrant>,

    /// Pass an environment variable: NAME (its value here) or NAME=VALUE. Repeatable.
    #[arg(long, value_name = "NAME[=VALUE]", value_parser = EnvGrant::parse)]
    allow_env: Vec<EnvGrant>,

    /// Let the agent ask for completions from a model alias of `--models`. Repeatable.
    #[arg(long, value_name = "ALIAS")]
    allow_model: Vec<String>,

    /// Model tokens (prompt and completion) the call's model requests may use in all.
    #[arg(long, value_name = "N", default_value = "100K", value_parser = parse_count)]
    tokens: u64,

    /// Let the agent send HTTP requests within `[METHODS ]scheme://host[:port][/path-prefix]`,
    /// such as `https://api.example.com/v1` or `GET http://127.0.0.1:8080`. Repeatable.
    /// Loopback, private and link-local addresses are reached only by a grant naming the address.
    #[arg(long, value_name = "GRANT", value_parser = corral::http::HttpGrant::parse)]
    allow_http: Vec<corral::http::HttpGrant>,

    /// Outbound HTTP requests the call may send.
    #[arg(long, value_name = "N", default_value = "64")]
    http_requests: u32,

    /// Bytes of HTTP request bodies the call may send in all.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_bytes)]
    http_request_bytes: u64,

    /// Bytes of HTTP response bodies the call may read in all.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_bytes)]
    http_response_bytes: u64,

    /// Run identifier written into the packet.
    #[arg(long, default_value = "call")]
    run_id: String,

    /// Step identifier written into the packet.
    #[arg(long, default_value = "call")]
    step_id: String,

    /// Print one JSON object (output, error, receipt, logs) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(rt: &Runtime, args: CallArgs) -> Exit {
    let raw = match read_input(&args.input) {
        Ok(raw) => raw,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let agent = match rt.load(&args.agent).await {
        Ok(agent) => agent,
        Err(e) => return render::load_error(&e, args.json),
    };
    let budget = Budget {
        fuel: args.fuel,
        memory_bytes: args.memory,
        timeout: args.timeout,
        max_output_bytes: args.max_output,
        max_log_bytes: args.max_log,
        tokens: args.tokens,
        http_requests: args.http_requests,
        http_request_bytes: args.http_request_bytes,
        http_response_bytes: args.http_response_bytes,
    };
    let max = rt.config().engine.max_memory_bytes;
    if budget.memory_bytes > max {
        eprintln!(
            "error: --memory {} is over the engine's maximum of {}",
            bytesize::ByteSize(budget.memory_bytes),
            bytesize::ByteSize(max)
        );
        return Exit::Usage;
    }
    let payload: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => {
            let err = CallError::InvalidInput {
                agent: agent.name().into(),
                problem: PacketProblem::Json {
                    message: format!("{e} (in --input)"),
                },
            };
            // Nothing ran: the receipt shows the limits and no use.
            let receipt = corral::Receipt {
                agent: agent.name().into(),
                fuel_limit: budget.fuel,
                memory_limit_bytes: budget.memory_bytes,
                timeout_ms: budget.timeout.as_millis() as u64,
                bytes_in: raw.len() as u64,
                ..Default::default()
            };
            let outcome = corral::CallOutcome {
                result: Err(err),
                receipt,
                logs: Vec::new(),
            };
            return finish(&outcome, args.json);
        }
    };
    let grants = Grants {
        dirs: args.allow_dir,
        env: args.allow_env,
        models: args.allow_model,
        http: args.allow_http,
    };
    let packet = HandoffPacket::new(args.run_id, args.step_id, payload);
    let outcome = rt.call(&agent, &packet, &budget, &grants).await;
    finish(&outcome, args.json)
}

fn finish(outcome: &corral::CallOutcome, json: bool) -> Exit {
    let exit = match &outcome.result {
        Ok(_) => Exit::Success,
        Err(e) => e.kind().into(),
    };
    if json {
        let (output, error) = match &outcome.result {
            Ok(p) => (serde_json::to_value(p).unwrap(), Value::Null),
            Err(e) => (Value::Null, render::error_json(e)),
        };
        let doc = json!({
            "status": if exit == Exit::Success { "ok" } else { "error" },
            "exit_code": exit as u8,
            "output": output,
            "error": error,
            "receipt": outcome.receipt,
            "logs": outcome.logs,
        });
        println!("{doc}");
    } else {
        match &outcome.result {
            Ok(p) => println!("{}", serde_json::to_string_pretty(p).unwrap()),
            Err(e) => render::error(e),
        }
        render::receipt(&outcome.receipt);
    }
    exit
}

fn read_input(spec: &str) -> Result<String, String> {
    match spec.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read the input from stdin: {e}")),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the input file `{path}` (from --input): {e}")),
        None => Ok(spec.to_owned()),
    }
}
