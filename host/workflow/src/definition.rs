//! The workflow file: strict, versioned serde types, with the JSON Schema in `schemas/workflow.json` generated from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::units::{Bytes, Count, Dur};

/// The workflow file version this host reads.
pub const WORKFLOW_VERSION: u32 = 1;

/// A workflow: agents chained into a DAG of steps by validated handoffs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "corral workflow")]
pub struct WorkflowDef {
    /// File format version, checked before anything else. Example: `version: 1`.
    pub version: u32,
    /// Example: `name: triage`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The agents steps may use, by name.
    pub agents: BTreeMap<String, AgentDef>,
    /// Typed inputs of the workflow, set with `--param name=value`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDef>,
    /// Limits for the whole run.
    #[serde(default)]
    pub budget: WorkflowBudget,
    /// The steps; their order in the file does not matter, references and
    /// `depends_on` decide it.
    pub steps: Vec<StepDef>,
    /// What the run returns: names mapped to references such as
    /// `$steps.summarize.output.summary`.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
}

/// An agent component and what it may use.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// Path of the component, relative to the workflow file.
    /// Example: `component: agents/summarize.wasm`.
    pub component: PathBuf,
    /// Optional pin: the component's `sha256:` digest must match.
    #[serde(default)]
    pub digest: Option<String>,
    /// Capabilities granted to this agent. Nothing is granted by default.
    #[serde(default)]
    pub grants: GrantsDef,
    /// Default limits for every call of this agent.
    #[serde(default)]
    pub budget: BudgetDef,
    /// When calls to this agent fail fast.
    #[serde(default)]
    pub breaker: BreakerDef,
}

/// Directories and environment variables granted to an agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsDef {
    #[serde(default)]
    pub dirs: Vec<DirGrantDef>,
    /// `NAME` (its value from corral's environment) or `NAME=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Model aliases the agent may ask the host for (contract 0.2.0).
    /// Example: `models: [fast]`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Where the agent may send HTTP requests (contract 0.2.0), as
    /// `[METHODS ]scheme://host[:port][/path-prefix]`. Example:
    /// `http: ["https://api.example.com/v1", "GET https://*.example.org"]`.
    #[serde(default)]
    pub http: Vec<String>,
}

/// A host directory opened in the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrantDef {
    /// Host path, relative to the workflow file.
    pub host: PathBuf,
    /// Path inside the sandbox. Example: `guest: /data`.
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
}

/// Per-call limits; unset fields fall back to the agent's, then the defaults.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetDef {
    /// Example: `fuel: 50M`.
    #[serde(default)]
    pub fuel: Option<Count>,
    /// Example: `memory: 64MiB`.
    #[serde(default)]
    pub memory: Option<Bytes>,
    /// Example: `timeout: 5s`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Model tokens a call may use (contract 0.2.0 agents). Example: `tokens: 20K`.
    #[serde(default)]
    pub tokens: Option<Count>,
    /// Outbound HTTP requests a call may send (default 64). Example: `http_requests: 10`.
    #[serde(default)]
    pub http_requests: Option<u32>,
    /// Bytes of HTTP request bodies a call may send (default 1MiB).
    #[serde(default)]
    pub http_request_bytes: Option<Bytes>,
    /// Bytes of HTTP response bodies a call may read (default 8MiB).
    #[serde(default)]
    pub http_response_bytes: Option<Bytes>,
}

/// The circuit breaker of an agent: after `failure_threshold` consecutive
/// failures its calls fail fast for `cooldown`, then trial calls decide.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerDef {
    pub failure_threshold: u32,
    pub cooldown: Dur,
    /// Consecutive successful trials that close the breaker again.
    pub success_threshold: u32,
}

impl Default for BreakerDef {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cooldown: Dur(std::time::Duration::from_secs(30)),
            success_threshold: 1,
        }
    }
}

/// A typed workflow input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    /// `string`, `integer`, `number`, `boolean`, `array`, `object`, or
    /// `artifact` (a file given as `--param NAME=FILE`, stored in the run;
    /// the value is its reference). Example: `type: string`.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Used when `--param` does not set it; without one the param is required.
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
    /// For `type: artifact`: the media type the file is stored with.
    /// Unset, it is taken from the file's extension (`.txt` is
    /// `text/plain`), else `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    // A file given on the command line, stored as an artifact of the run;
    // the param's value is its reference (`{"$artifact": ...}`). A plain
    // comment: a doc comment would split the schema's enum.
    Artifact,
}

impl ParamType {
    pub fn json_type(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object | ParamType::Artifact => "object",
        }
    }

    /// The type as a workflow file names it.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Artifact => "artifact",
            other => other.json_type(),
        }
    }
}

/// Limits for the whole run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowBudget {
    /// Fuel for all steps together; each call gets at most what is left.
    pub fuel: Count,
    /// Agent calls running at once, across all steps (1 to 64).
    pub max_concurrency: u32,
    /// Model tokens for all steps together; each model request reserves
    /// from it as well as from its call's budget.
    pub tokens: Count,
    /// Bytes of artifacts the run's agents may store, all together (a
    /// tenant's ceiling also holds). Example: `artifact_bytes: 10GiB`.
    pub artifact_bytes: Bytes,
}

impl Default for WorkflowBudget {
    fn default() -> Self {
        Self {
            fuel: Count(100_000_000_000),
            max_concurrency: 5,
            tokens: Count(10_000_000),
            artifact_bytes: Bytes(crate::limits::DEFAULT_ARTIFACT_BYTES),
        }
    }
}

/// One step: an agent called with an input built from params, earlier outputs and literals.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique step name. Example: `id: summarize`.
    pub id: String,
    /// A key of `agents`. Every step has one, except approval steps.
    #[serde(default)]
    pub agent: String,
    /// Makes this an approval step: the run waits for a human to answer
    /// with `corral approve` or `corral reject`; the answer is its output.
    #[serde(default)]
    pub approval: Option<ApprovalDef>,
    /// An agent that undoes this step: when the run fails (or is cancelled
    /// with `--compensate`), it is called with this step's output, in
    /// reverse completion order.
    #[serde(default)]
    pub compensate: Option<String>,
    /// Reuse an earlier output for the same component and input:
    /// `cache: true`, or `cache: {ttl: 1h}`.
    #[serde(default)]
    pub cache: Option<CacheDef>,
    /// The payload: literals and references (`$params.x`,
    /// `$steps.<id>.output.<path>`, `$item`). A string starting with `$$` is
    /// a literal starting with `$`.
    #[serde(default)]
    pub input: Value,
    /// Steps that must finish first, beyond those the input references.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A CEL condition over `params` and `steps`; the step is skipped when false.
    /// Example: `when: steps.route.output.label == "bug"`.
    #[serde(default)]
    pub when: Option<String>,
    /// Run once per element of this list reference, with `$item` bound.
    #[serde(default)]
    pub for_each: Option<String>,
    /// Elements of `for_each` processed at once.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Most elements `for_each` may have (the bound used for fuel estimates).
    #[serde(default)]
    pub max_items: Option<u32>,
    /// Limits for each call of this step, over the agent's.
    #[serde(default)]
    pub budget: BudgetDef,
    /// Agents (keys of `agents`) this step's agent may call through the
    /// host's `delegate` interface (contract 0.2.0), and they in turn.
    /// Example: `delegates: [summarize, critic]`.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Delegated calls the step may make in all, across its attempts and
    /// its whole tree of delegations (1 to 10,000; default 64).
    #[serde(default)]
    pub max_delegations: Option<u32>,
    /// How deep delegations may nest: 1 lets the step's agent delegate but
    /// not its callees (1 to 16; default 4).
    #[serde(default)]
    pub delegation_depth: Option<u32>,
    /// Model tokens for all of this step's calls together: its retries,
    /// fallback, `for_each` items, `repeat` iterations and critic calls
    /// (each call is also held to `budget.tokens`). Unset: only the call's
    /// and the workflow's budgets bind. Example: `tokens: 100K`.
    #[serde(default)]
    pub tokens: Option<Count>,
    #[serde(default)]
    pub retry: Option<RetryDef>,
    /// An agent called with the same input when this step finally fails.
    #[serde(default)]
    pub fallback: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
    /// A quality gate: rerun the step with a critic's feedback until a condition holds.
    #[serde(default)]
    pub repeat: Option<RepeatDef>,
    /// How many dependencies must complete before this step starts.
    #[serde(default)]
    pub join: Join,
}

/// Retries with exponential backoff and jitter.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryDef {
    /// Attempts in all, the first included (1 to 20).
    pub max_attempts: u32,
    pub initial_delay: Dur,
    /// Each delay is the previous one times this factor.
    pub backoff: f64,
    pub max_delay: Dur,
    /// Each delay is scaled by a random factor in `1 ± jitter` (0 to 1).
    pub jitter: f64,
    /// Failures that are retried: error classes (`transient`, `permanent`,
    /// `degradable`) or kinds (`deadline_exceeded`, `fuel_exhausted`,
    /// `memory_limit`, `guest_trap`, `invalid_output`, ...).
    pub on: Vec<String>,
}

impl Default for RetryDef {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Dur(std::time::Duration::from_millis(200)),
            backoff: 2.0,
            max_delay: Dur(std::time::Duration::from_secs(10)),
            jitter: 0.1,
            on: vec!["transient".into()],
        }
    }
}

/// What a step's final failure does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The run fails.
    #[default]
    Fail,
    /// The step is marked degraded; dependents run and see its status.
    Continue,
    /// The run pauses at this step for a human.
    Pause,
}

/// Fan-in: how many dependencies must complete before the step starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(into = "JoinRepr")]
#[schemars(with = "JoinRepr")]
pub enum Join {
    /// Every dependency; a skipped dependency skips this step.
    #[default]
    All,
    /// The first dependency to complete (the discriminator pattern).
    Any,
    /// At least N of the dependencies. Example: `join: {at_least: 2}`.
    AtLeast(u32),
}

/// How `join` is written: `all`, `any`, or `{at_least: N}` (serialized
/// and described by this; read by [`Join`]'s own `Deserialize`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
enum JoinRepr {
    /// `all` or `any`.
    Mode(JoinMode),
    AtLeast {
        at_least: u32,
    },
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum JoinMode {
    All,
    Any,
}

const JOIN_FORMS: &str = "write `all`, `any` or `{at_least: N}`";

/// Reads `join` by visiting its one node, so that an error names the
/// field, its line and the accepted forms (an untagged enum would say only
/// that no variant matched, at the step's first line).
impl<'de> Deserialize<'de> for Join {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Join;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a join: {JOIN_FORMS}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Join, E> {
                match s {
                    "all" => Ok(Join::All),
                    "any" => Ok(Join::Any),
                    _ => Err(E::custom(format!("`{s}` is not a join: {JOIN_FORMS}"))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Join, A::Error> {
                let n = only_key(&mut map, "at_least", "a join", JOIN_FORMS)?;
                Ok(Join::AtLeast(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// The value of a mapping that must have exactly the key `key`.
fn only_key<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    key: &str,
    what: &str,
    forms: &str,
) -> Result<T, A::Error> {
    match map.next_key::<String>()? {
        Some(k) if k == key => {}
        Some(k) => {
            return Err(de::Error::custom(format!(
                "unknown field `{k}` in {what}: {forms}"
            )));
        }
        None => {
            return Err(de::Error::custom(format!(
                "an empty mapping is not {what}: {forms}"
            )));
        }
    }
    let value = map.next_value()?;
    if let Some(k) = map.next_key::<String>()? {
        return Err(de::Error::custom(format!(
            "unknown field `{k}` in {what}: {forms}"
        )));
    }
    Ok(value)
}

impl From<Join> for JoinRepr {
    fn from(j: Join) -> Self {
        match j {
            Join::All => JoinRepr::Mode(JoinMode::All),
            Join::Any => JoinRepr::Mode(JoinMode::Any),
            Join::AtLeast(at_least) => JoinRepr::AtLeast { at_least },
        }
    }
}

/// A quality-gate loop: generator, then critic, until `until` holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatDef {
    pub critic: CriticDef,
    /// A CEL condition over `critic` (the critic's output), `output` (this
    /// iteration's output), `iteration` (from 1) and `params`. Example:
    /// `until: critic.passed`.
    pub until: String,
    /// Iterations at most (1 to 20); when reached the step fails, or is
    /// degraded with `on_error: continue`.
    pub max_iterations: u32,
    /// Input field of the step's agent that receives the critic's output on
    /// the next iteration. Example: `feedback: feedback`.
    #[serde(default)]
    pub feedback: Option<String>,
}

/// The critic of a quality gate.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CriticDef {
    /// A key of `agents`.
    pub agent: String,
    /// The critic's payload; `$output` is the iteration's output.
    pub input: Value,
}

/// A human decision the run waits for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDef {
    /// What the human is asked. Example: `prompt: Publish this summary?`.
    pub prompt: String,
    /// JSON Schema of the input `corral approve --input` must give; the
    /// input becomes the step's output. Default: any object.
    #[serde(default)]
    pub schema: Option<Value>,
    /// How long to wait. Example: `timeout: 24h`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// What a timeout does: `fail` the step, or complete it with `default`.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// The output used when `on_timeout: default`.
    #[serde(default)]
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Fail,
    Default,
}

/// Step caching: `true`, or a table with a time to live.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CacheDef {
    Enabled(bool),
    Ttl {
        /// How long an entry stays usable. Example: `ttl: 1h`.
        ttl: Dur,
    },
}

const CACHE_FORMS: &str = "write `true`, `false` or `{ttl: <duration>}` such as `{ttl: 1h}`";

/// Reads `cache` by visiting its one node (see [`Join`]'s).
impl<'de> Deserialize<'de> for CacheDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CacheDef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a cache setting: {CACHE_FORMS}")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<CacheDef, E> {
                Ok(CacheDef::Enabled(b))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CacheDef, A::Error> {
                let ttl = only_key(&mut map, "ttl", "a cache setting", CACHE_FORMS)?;
                Ok(CacheDef::Ttl { ttl })
            }
        }
        d.deserialize_any(V)
    }
}
