//! The API's request and response types, and the OpenAPI document generated from them and the handlers (utoipa), checked in as `schemas/openapi.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// A run to start: a workflow's text (or a registered workflow's name) and its params.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The workflow, as YAML (or JSON) text.
    #[serde(default)]
    pub workflow: Option<String>,
    /// `yaml` (the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// Instead of `workflow`: a workflow the tenant registered by name.
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// Param values by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, Value>,
}

/// New param values (resume) or steps to run again (retry).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// New param values; only steps whose inputs change run again.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, Value>,
    /// Steps to run again, and what reads them.
    #[serde(default)]
    pub steps: Vec<String>,
}

/// A human's answer to a waiting step.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// The approver's input (approve), checked against the step's schema.
    #[serde(default)]
    pub input: Option<Value>,
    /// Why (reject).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A workflow to keep under a name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The workflow, as YAML (or JSON) text.
    pub workflow: String,
    /// `yaml` (the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

/// A run: its status, progress and steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub workflow: String,
    /// queued (no process drives it yet), running, interrupted, waiting, paused, completed, degraded, failed, fuel_exhausted or cancelled.
    pub status: String,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// How many times the run was driven (submission, resumes, restarts).
    pub sessions: u32,
    /// Fuel charged to the run across all its sessions.
    pub fuel_used: u64,
    pub params: Value,
    pub progress: Progress,
    pub steps: Vec<StepView>,
}

/// How far a run is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub steps: usize,
    /// Steps that settled (completed, failed, skipped, ...).
    pub finished: usize,
    pub percent: f64,
    /// Seconds left at the pace so far, while the run is running.
    pub eta_secs: Option<f64>,
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub step: String,
    pub status: String,
    pub attempts: u32,
    pub retries: u32,
    pub fuel_used: u64,
    /// Model tokens charged to the step's calls.
    pub tokens_used: u64,
    pub peak_memory_bytes: u64,
    pub wall_time_us: u64,
    /// The step's output payload, once it has one.
    pub output: Option<Value>,
    pub cached: bool,
    pub fallback: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// What an approval step waits for (its prompt and input schema).
    pub waiting: Option<Value>,
    pub answer: Option<Value>,
}

/// One page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// The `cursor` of the next page, if there may be one.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub workflow: String,
    pub status: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A registered agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub created_ms: i64,
    /// What its `describe` declared: name, version, schemas, capabilities.
    pub describe: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// A registered workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub name: String,
    pub digest: String,
    pub format: String,
    /// Its text (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
}

/// An RFC 9457 problem document; `type` is stable per kind of error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub ty: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Validation errors (file, line, field, message), when there are some.
    pub errors: Option<Vec<Value>>,
    /// A spent quota: `{quota, limit, used, resets_in_secs}`.
    pub quota: Option<Value>,
}

/// The data of one event on `/v1/runs/{id}/events`; the SSE id is `seq`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    pub seq: i64,
    pub at_ms: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub step: Option<String>,
    pub data: Value,
}

/// One webhook attempt (documentation of `/v1/runs/{id}/deliveries`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDoc {
    pub message: String,
    /// 1 for the first try.
    pub attempt: u32,
    pub at_ms: i64,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One webhook message of a run: a run event on its way to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDoc {
    /// The `webhook-id` every attempt carries.
    pub id: String,
    pub tenant: String,
    pub run: String,
    /// `run.started`, `run.waiting`, `run.completed`, `run.failed` or `run.cancelled`.
    pub event: String,
    pub url: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub created_ms: i64,
    pub attempts: u32,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// When the next attempt is due (pending only).
    pub next_ms: Option<i64>,
    pub tries: Vec<AttemptDoc>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "corral", description = "Run AI agents as sandboxed WebAssembly components, for many tenants."),
    paths(
        crate::runs::submit,
        crate::runs::list,
        crate::runs::get,
        crate::runs::cancel,
        crate::runs::resume,
        crate::runs::approve,
        crate::runs::reject,
        crate::runs::deliveries,
        crate::events::events,
        crate::agents::upload,
        crate::agents::list,
        crate::agents::get,
        crate::agents::delete,
        crate::workflows::register,
        crate::workflows::list,
        crate::workflows::get,
    ),
    components(schemas(EventData, ProblemDoc)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as served at `/v1/openapi.json` and checked in.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    // Stable across builds: the crate version, not whatever Cargo says.
    doc.info.version = "v1".into();
    doc.to_pretty_json().unwrap_or_default() + "\n"
}
