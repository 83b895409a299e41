//! The typed errors of loading and calling agents: each names the agent, the limit and the knob that raises it.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Serialize;

use crate::capability::Capability;
use crate::wit::latest as wit;

/// What is wrong with a packet, in or out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum PacketProblem {
    #[error("payload at `{pointer}` violates the schema (keyword `{keyword}`): {message}")]
    Schema {
        pointer: String,
        keyword: String,
        schema_path: String,
        message: String,
    },
    #[error("not valid JSON: {message}")]
    Json { message: String },
    #[error("{actual} bytes exceed the packet limit of {limit} bytes")]
    TooLarge { limit: u64, actual: u64 },
    #[error("nesting at `{pointer}` exceeds the depth limit of {limit}")]
    TooDeep { limit: usize, pointer: String },
    #[error("bad envelope: {message}")]
    Envelope { message: String },
    #[error("the artifact reference at `{pointer}`: {message}")]
    Artifact { pointer: String, message: String },
}

/// A capability an agent requests and its grants do not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub capability: Capability,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.capability {
            Capability::Env { name } => write!(
                f,
                "environment variable `{name}` (grant it with `--allow-env {name}`)"
            ),
            Capability::Dir {
                guest_path,
                writable: true,
            } => write!(
                f,
                "writable directory `{guest_path}` (grant it with `--allow-dir <host-dir>:{guest_path}`)"
            ),
            Capability::Dir {
                guest_path,
                writable: false,
            } => write!(
                f,
                "directory `{guest_path}` (grant it with `--allow-dir <host-dir>:{guest_path}:ro`)"
            ),
            Capability::Model { alias } => {
                write!(f, "model `{alias}` (grant it with `--allow-model {alias}`)")
            }
            Capability::Http { url } if url == "*" => write!(
                f,
                "outbound HTTP (grant where it may go with `--allow-http <scheme://host[:port]>` or `grants.http`)"
            ),
            Capability::Http { url } => write!(
                f,
                "outbound HTTP to `{url}` (grant it with `--allow-http {url}` or `grants.http: [\"{url}\"]`)"
            ),
        }
    }
}

fn list(denied: &[Denial]) -> String {
    denied
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an agent call did not return a valid output packet.
///
/// Budget breaches, traps, contract violations and the agent's own errors are
/// distinct variants: nothing here is told apart by matching strings.
#[derive(Debug, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallError {
    #[error(
        "agent `{agent}` ran out of fuel: used {used} of {limit} instructions; raise the limit with `--fuel` (budget.fuel)"
    )]
    FuelExhausted {
        agent: String,
        used: u64,
        limit: u64,
    },

    #[error(
        "agent `{agent}` hit its memory limit of {}: it asked for {} in all; raise the limit with `--memory` (budget.memory)",
        ByteSize(*limit), ByteSize(*requested)
    )]
    MemoryLimit {
        agent: String,
        limit: u64,
        requested: u64,
    },

    #[error(
        "agent `{agent}` exceeded its deadline of {}; raise it with `--timeout` (budget.timeout)",
        humantime::format_duration(*limit)
    )]
    DeadlineExceeded {
        agent: String,
        #[serde(serialize_with = "as_millis")]
        limit: Duration,
    },

    #[error(
        "agent `{agent}` overflowed its wasm stack of {}: it recursed too deep; raise it with `--max-stack` (engine setting)",
        ByteSize(*max_stack as u64)
    )]
    StackOverflow { agent: String, max_stack: usize },

    #[error("agent `{agent}` trapped ({trap}){}", panic_suffix(.message))]
    GuestTrap {
        agent: String,
        trap: String,
        message: Option<String>,
    },

    #[error(
        "agent `{agent}` produced {actual} bytes of output, over its limit of {limit}; raise it with `--max-output` (budget.max_output_bytes)"
    )]
    OutputTooLarge {
        agent: String,
        limit: u64,
        actual: u64,
    },

    #[error("input for agent `{agent}` is invalid: {problem}")]
    InvalidInput {
        agent: String,
        problem: PacketProblem,
    },

    #[error("agent `{agent}` returned invalid output: {problem}")]
    InvalidOutput {
        agent: String,
        problem: PacketProblem,
    },

    #[error("agent `{agent}` requests capabilities that are not granted: {}", list(.denied))]
    PolicyDenied { agent: String, denied: Vec<Denial> },

    #[error("agent `{agent}` failed ({class}): {message}")]
    Agent {
        agent: String,
        class: ErrorClass,
        message: String,
    },

    #[error(
        "agent `{agent}` broke the component ABI: {reason}; this is a bug in the agent or the toolchain that built it"
    )]
    AbiViolation { agent: String, reason: String },

    #[error(
        "the host had no free instance slot for agent `{agent}`: {reason}; the agent did not run, try again later (EngineConfig::max_instances sizes the pool)"
    )]
    Overloaded { agent: String, reason: String },

    #[error("the host failed while calling agent `{agent}`: {message}")]
    Host { agent: String, message: String },
}

fn panic_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The broad kind of a failure, which decides the CLI's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The agent reported an error of its own.
    Agent,
    /// A budget limit was hit: fuel, memory, deadline, stack, output size.
    Budget,
    /// A packet broke the contract: schema, JSON, size or depth.
    Contract,
    /// A requested capability was not granted.
    Policy,
    /// The guest trapped (a panic, an abort) outside any budget, or broke
    /// the component ABI.
    Trap,
    /// The host itself failed.
    Host,
}

impl CallError {
    pub fn kind(&self) -> FailureKind {
        match self {
            CallError::FuelExhausted { .. }
            | CallError::MemoryLimit { .. }
            | CallError::DeadlineExceeded { .. }
            | CallError::StackOverflow { .. }
            | CallError::OutputTooLarge { .. } => FailureKind::Budget,
            CallError::InvalidInput { .. } | CallError::InvalidOutput { .. } => {
                FailureKind::Contract
            }
            CallError::PolicyDenied { .. } => FailureKind::Policy,
            CallError::GuestTrap { .. } | CallError::AbiViolation { .. } => FailureKind::Trap,
            CallError::Agent { .. } => FailureKind::Agent,
            CallError::Overloaded { .. } | CallError::Host { .. } => FailureKind::Host,
        }
    }

    /// The kind as written in `--json` output and `retry.on`, such as `fuel_exhausted`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CallError::FuelExhausted { .. } => "fuel_exhausted",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::DeadlineExceeded { .. } => "deadline_exceeded",
            CallError::StackOverflow { .. } => "stack_overflow",
            CallError::GuestTrap { .. } => "guest_trap",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::InvalidInput { .. } => "invalid_input",
            CallError::InvalidOutput { .. } => "invalid_output",
            CallError::PolicyDenied { .. } => "policy_denied",
            CallError::Agent { .. } => "agent",
            CallError::AbiViolation { .. } => "abi_violation",
            CallError::Overloaded { .. } => "overloaded",
            CallError::Host { .. } => "host",
        }
    }

    /// How a workflow treats this failure: a deadline and a full instance
    /// pool are transient, an agent's own error has its class, the rest is
    /// permanent (host errors here are configuration problems a retry
    /// cannot fix).
    pub fn class(&self) -> ErrorClass {
        match self {
            CallError::DeadlineExceeded { .. } | CallError::Overloaded { .. } => {
                ErrorClass::Transient
            }
            CallError::Agent { class, .. } => *class,
            _ => ErrorClass::Permanent,
        }
    }

    /// Whether the failure says something about the agent, so that it
    /// counts against the agent's circuit breaker. A full instance pool, a
    /// host failure, an ungranted capability or an input the caller built
    /// wrong are not the agent's doing.
    pub fn blames_agent(&self) -> bool {
        !matches!(
            self,
            CallError::Overloaded { .. }
                | CallError::Host { .. }
                | CallError::PolicyDenied { .. }
                | CallError::InvalidInput { .. }
        )
    }

    /// The agent this error is about.
    pub fn agent(&self) -> &str {
        match self {
            CallError::FuelExhausted { agent, .. }
            | CallError::MemoryLimit { agent, .. }
            | CallError::DeadlineExceeded { agent, .. }
            | CallError::StackOverflow { agent, .. }
            | CallError::GuestTrap { agent, .. }
            | CallError::OutputTooLarge { agent, .. }
            | CallError::InvalidInput { agent, .. }
            | CallError::InvalidOutput { agent, .. }
            | CallError::PolicyDenied { agent, .. }
            | CallError::Agent { agent, .. }
            | CallError::AbiViolation { agent, .. }
            | CallError::Overloaded { agent, .. }
            | CallError::Host { agent, .. } => agent,
        }
    }
}

/// Why a component could not be loaded as an agent.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a WebAssembly file (it does not start with the `\\0asm` magic)", path.display())]
    NotWasm { path: PathBuf },
    #[error(
        "{} is a core WebAssembly module, not a component; build the agent for `wasm32-wasip2` (or wrap it with `wasm-tools component new`)",
        path.display()
    )]
    NotAComponent { path: PathBuf },
    #[error("{} is not a valid component: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{} does not implement a `corral:agent/agent` world (0.2.0 or 0.1.0): it does not export {expected} (it exports: {}); build it with the corral SDK",
        path.display(), if found.is_empty() { "nothing".to_owned() } else { found.join(", ") }
    )]
    WrongWorld {
        path: PathBuf,
        expected: String,
        found: Vec<String>,
    },
    #[error(
        "{} imports what corral does not provide: {reason}; agents may import the `corral:agent` host and model interfaces, WASI's cli, clocks, filesystem, io, random and (always denied) sockets interfaces, and (contract 0.2.0) `wasi:http`",
        path.display()
    )]
    UnsupportedImports { path: PathBuf, reason: String },
    /// `describe` did not return. The cause is in the message, phrased for
    /// a load: its budget is the load budget (`--load-fuel`, `--load-memory`,
    /// `--load-timeout`), not the call's.
    #[error("{}: `describe` failed: {}", path.display(), describe_failure(cause))]
    Describe {
        path: PathBuf,
        cause: Box<CallError>,
    },
    #[error(
        "{}: agent `{agent}`: the {field} its `describe` returns has {actual} {unit}, over the limit of {limit}; shrink it",
        path.display()
    )]
    DescribeTooLarge {
        path: PathBuf,
        agent: String,
        field: &'static str,
        unit: &'static str,
        limit: u64,
        actual: u64,
    },
    #[error("{}: agent `{agent}` declares an unusable {field} in `describe`: {problem}", path.display())]
    BadDescribe {
        path: PathBuf,
        agent: String,
        field: &'static str,
        problem: String,
    },
    #[error("agent `{agent}` ({}) declares an invalid {which} schema: {message}", path.display())]
    BadSchema {
        path: PathBuf,
        agent: String,
        which: &'static str,
        message: String,
    },
    #[error("the compile cache failed")]
    Cache(#[source] anyhow::Error),
    /// Artifacts are native code: one that someone else could have written
    /// is never loaded.
    #[error("refusing the compile cache at {}: {problem}; {fix}", path.display())]
    UnsafeCache {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// A failed `describe`, with the load budget's flags where a limit was hit.
fn describe_failure(e: &CallError) -> String {
    match e {
        CallError::FuelExhausted { used, limit, .. } => format!(
            "it ran out of fuel: used {used} of {limit} instructions; raise the load budget with `--load-fuel`"
        ),
        CallError::MemoryLimit {
            limit, requested, ..
        } => format!(
            "it hit the memory limit of {}: it asked for {} in all; raise the load budget with `--load-memory`",
            ByteSize(*limit),
            ByteSize(*requested)
        ),
        CallError::DeadlineExceeded { limit, .. } => format!(
            "it exceeded the deadline of {}; raise the load budget with `--load-timeout`",
            humantime::format_duration(*limit)
        ),
        other => other.to_string(),
    }
}

/// How an agent's own error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Permanent,
    Degradable,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Degradable => "degradable",
        })
    }
}

impl From<wit::corral::agent::types::ErrorClass> for ErrorClass {
    fn from(c: wit::corral::agent::types::ErrorClass) -> Self {
        use wit::corral::agent::types::ErrorClass as W;
        match c {
            W::Transient => ErrorClass::Transient,
            W::Permanent => ErrorClass::Permanent,
            W::Degradable => ErrorClass::Degradable,
        }
    }
}
