//! `/v1/runs`: submit, list, get, cancel, resume, retry, approve and reject, each scoped to the caller's tenant.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_store::{LEASE, RunQuery, RunRecord, RunState, StepRecord, StoreError, now_ms};
use corral_workflow::durable::{Origin, ResumeRequest, begin_as, submit_as};
use corral_workflow::run::{RunOptions, resolve_params};
use corral_workflow::source::{self, Diagnostic};
use corral_workflow::validate::validate_in;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{
    AnswerRequest, ResumeRequest as ResumeBody, RunList, RunSummary, RunView, SubmitRequest,
};
use crate::auth::Caller;
use crate::driver;
use crate::extract::{Body, Params};
use crate::problem::{Kind, Problem};
use crate::quota;
use crate::state::{AppState, blocking};
use crate::tenant::Tenant;
use crate::webhooks::RunEvent;

type Shared = State<Arc<AppState>>;

#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    request_body = SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first run (200)")),
    responses(
        (status = 201, description = "Started", body = RunView),
        (status = 200, description = "Submitted before with this idempotency key", body = RunView),
        (status = 403, description = "Above the tenant's ceiling", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "The workflow or its params do not validate", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "A quota is spent", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn submit(
    State(st): Shared,
    Caller(tenant): Caller,
    headers: HeaderMap,
    Body(req): Body<SubmitRequest>,
) -> Result<Response, Problem> {
    let id = tenant.id.clone();
    let res = submit_checked(&st, tenant, headers, req).await;
    if res
        .as_ref()
        .is_ok_and(|r| r.status() == StatusCode::CREATED)
    {
        st.metrics
            .runs_submitted
            .get_or_create(&crate::metrics::TenantLabel { tenant: id.clone() })
            .inc();
    }
    res.map_err(|p| st.counted(&id, p))
}

async fn submit_checked(
    st: &Arc<AppState>,
    tenant: Arc<Tenant>,
    headers: HeaderMap,
    req: SubmitRequest,
) -> Result<Response, Problem> {
    admitting(st)?;
    within_packet(&tenant, &req.params, "the params")?;
    let key = idempotency_key(&headers)?;
    let (gate, who) = (st.clone(), tenant.clone());
    tokio::task::spawn_blocking(move || gate.gates.submit(&who))
        .await
        .map_err(Problem::internal)??;
    let fuel = quota::TenantFuel::new(st.store.clone(), tenant.clone());
    tokio::task::spawn_blocking(move || fuel.check())
        .await
        .map_err(Problem::internal)??;
    let (file, text) = source_of(st, &tenant, &req).await?;
    let w = check(st, &tenant, &file, &text).await?;
    let pairs = param_pairs(&req.params);
    if let Some(name) = corral_workflow::param_files::names_artifact(&w, &pairs) {
        // A reference would name bytes this run does not hold; the service
        // has no upload yet, so say so rather than fail at the first step.
        let e = format!(
            "param `{name}` is an artifact: the service does not take files yet; run this workflow with `corral run --param {name}=FILE`"
        );
        return Err(
            Problem::new(Kind::InvalidWorkflow, "the params do not fit the workflow")
                .with("errors", vec![e]),
        );
    }
    let params = resolve_params(&w, &pairs).map_err(|errors| {
        Problem::new(Kind::InvalidWorkflow, "the params do not fit the workflow")
            .with("errors", errors)
    })?;
    let run_id = new_run_id();
    let origin = Origin {
        tenant: tenant.id.clone(),
        idempotency_key: key,
        max_running: Some(tenant.quota.concurrent_runs),
    };
    let begun = record(st, &w, &params, &run_id, &origin).await?;
    let journal = match begun {
        Ok(j) => j,
        Err(StoreError::SameRequest { run }) => {
            let view = run_view(st, &tenant, &run).await?;
            return Ok((StatusCode::OK, Json(view)).into_response());
        }
        Err(StoreError::TooManyRuns { running, .. }) => {
            return Err(quota::Spent {
                quota: "concurrent_runs",
                limit: u64::from(tenant.quota.concurrent_runs),
                used: u64::from(running),
                resets_in_secs: None,
            }
            .problem(
                &tenant.id,
                format!("{running} runs are running, the most it may have"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some((journal, cancel)) = journal {
        let mut opts = RunOptions::new(run_id.clone(), params);
        opts.cancel = cancel;
        opts.journal = Some(journal);
        driver::start(st, &tenant, Arc::new(w), opts);
    }
    let view = run_view(st, &tenant, &run_id).await?;
    let mut res = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/runs/{run_id}")) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// A driven run's journal and its cancel token.
type Begun = Option<(Arc<corral_workflow::journal::Journal>, CancellationToken)>;

/// Records the new run: leased to this process, which drives it, or queued
/// for a worker when this server leaves driving to workers (`None`).
async fn record(
    st: &Arc<AppState>,
    w: &corral_workflow::model::Workflow,
    params: &Value,
    run_id: &str,
    origin: &Origin,
) -> Result<Result<Begun, StoreError>, Problem> {
    let store = st.store.clone();
    let by_workers = st.drive.by_workers();
    let (w, params, id, origin) = (w.clone(), params.clone(), run_id.to_owned(), origin.clone());
    tokio::task::spawn_blocking(move || {
        if by_workers {
            return submit_as(store.as_ref(), &w, &params, &id, &origin).map(|()| None);
        }
        let cancel = CancellationToken::new();
        begin_as(store, &w, &params, &id, cancel.clone(), &origin).map(|j| Some((j, cancel)))
    })
    .await
    .map_err(Problem::internal)
}

fn admitting(st: &AppState) -> Result<(), Problem> {
    if st.stopping.is_cancelled() {
        return Err(Problem::new(
            Kind::Unavailable,
            "the server is shutting down; submit again once it is back",
        )
        .retry_after(std::time::Duration::from_secs(5)));
    }
    Ok(())
}

/// Refuses data from a client (params, an answer) larger than the tenant's
/// `max_packet`, on every path that takes some.
fn within_packet(tenant: &Tenant, data: &impl serde::Serialize, what: &str) -> Result<(), Problem> {
    let size = serde_json::to_vec(data).map_or(0, |v| v.len()) as u64;
    if size <= tenant.quota.max_packet {
        return Ok(());
    }
    Err(quota::Spent {
        quota: "max_packet",
        limit: tenant.quota.max_packet,
        used: size,
        resets_in_secs: None,
    }
    .problem(&tenant.id, format!("{what} are {size} bytes")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 200 => Ok(Some(k.to_owned())),
        _ => Err(Problem::new(
            Kind::InvalidRequest,
            "`Idempotency-Key` must be 1 to 200 visible ASCII characters",
        )),
    }
}

/// The workflow a submission names: its text, or one the tenant registered.
async fn source_of(
    st: &AppState,
    tenant: &Tenant,
    req: &SubmitRequest,
) -> Result<(String, String), Problem> {
    match (&req.workflow, &req.workflow_name) {
        (Some(text), None) => Ok((file_name(req.format.as_deref(), "submitted")?, text.clone())),
        (None, Some(name)) => {
            let w = crate::workflows::registered(st, tenant, name).await?;
            Ok((file_name(Some(&w.format), &w.name)?, w.text))
        }
        _ => Err(Problem::new(
            Kind::InvalidRequest,
            "give exactly one of `workflow` (its text) and `workflow_name` (a registered one)",
        )),
    }
}

/// The name a tenant's workflow text is parsed (and reported) under.
pub fn file_name(format: Option<&str>, stem: &str) -> Result<String, Problem> {
    match format {
        None | Some("yaml") => Ok(format!("{stem}.yaml")),
        Some("json") => Ok(format!("{stem}.json")),
        Some(other) => Err(Problem::new(
            Kind::InvalidRequest,
            format!("`format` is `{other}`; use `yaml` or `json`"),
        )),
    }
}

/// Parses and validates a tenant's workflow within its scope and ceiling.
pub async fn check(
    st: &Arc<AppState>,
    tenant: &Arc<Tenant>,
    file: &str,
    text: &str,
) -> Result<corral_workflow::model::Workflow, Problem> {
    let invalid = |diags: Vec<Diagnostic>| {
        let denied = diags.iter().any(|d| d.denied);
        let (kind, detail) = if denied {
            (
                Kind::Forbidden,
                "the workflow asks for more than the tenant may have",
            )
        } else {
            (Kind::InvalidWorkflow, "the workflow does not validate")
        };
        Problem::new(kind, detail).with("errors", diags)
    };
    let src = source::parse(Path::new(file), text).map_err(invalid)?;
    let above = quota::above_ceiling(&src.def, &tenant.quota);
    if !above.is_empty() {
        return Err(Problem::new(
            Kind::Forbidden,
            "the workflow asks for more than the tenant may have",
        )
        .with("errors", above));
    }
    let scope = st.scope(tenant).await?;
    let mut w = validate_in(&src, &st.rt, &scope).await.map_err(invalid)?;
    quota::clamp(&mut w, &tenant.quota);
    Ok(w)
}

fn new_run_id() -> String {
    format!("run-{:016x}", fastrand::u64(..))
}

/// JSON param values as the `name=value` pairs `resolve_params` reads:
/// strings as they are, anything else as JSON text.
fn param_pairs(params: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

/// The caller's run, or 404 whether it is missing or another tenant's.
pub(crate) async fn own_run(
    st: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<RunRecord, Problem> {
    let store = st.store.clone();
    let rid = id.to_owned();
    match blocking(move || store.run(&rid)).await {
        Ok(r) if r.tenant == tenant.id => Ok(r),
        Ok(_)
        | Err(Problem {
            kind: Kind::NotFound,
            ..
        }) => Err(Problem::not_found("run", id)),
        Err(p) => Err(p),
    }
}

/// A run as the API shows it: status, progress, ETA, steps and outputs.
async fn run_view(st: &AppState, tenant: &Tenant, id: &str) -> Result<RunView, Problem> {
    let run = own_run(st, tenant, id).await?;
    let store = st.store.clone();
    let rid = id.to_owned();
    let driving = st.drivers.is_driving(id);
    blocking(move || {
        let steps = store.steps(&rid)?;
        let outputs: HashMap<String, Value> = steps
            .iter()
            .filter_map(|s| {
                let d = s.output.as_ref()?;
                let v = store.blob(d).ok().flatten()?;
                Some((s.step.clone(), serde_json::from_slice(&v).ok()?))
            })
            .collect();
        Ok(crate::run_view::view(&run, steps, &outputs, driving))
    })
    .await
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run")),
    responses((status = 200, body = RunView), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn get(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunView>, Problem> {
    Ok(Json(run_view(&st, &tenant, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(
        ("status" = Option<String>, Query, description = "Only runs with this status"),
        ("limit" = Option<usize>, Query, description = "At most this many (1 to 500; 50)"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
    ),
    responses((status = 200, body = RunList)))]
pub async fn list(
    State(st): Shared,
    Caller(tenant): Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<RunList>, Problem> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            Problem::new(
                Kind::InvalidRequest,
                format!("`status` is `{s}`; use running, waiting, completed, failed, cancelled or fuel_exhausted"),
            )
        })?),
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.split_once('/')
                .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    Problem::new(Kind::InvalidRequest, "`cursor` is not one this server gave")
                })?,
        ),
    };
    let query = RunQuery {
        tenant: tenant.id.clone(),
        status,
        before,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    };
    let limit = query.limit;
    let store = st.store.clone();
    let runs = blocking(move || store.tenant_runs(&query)).await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| format!("{}/{}", r.created_ms, r.id)))
        .flatten();
    let now = now_ms();
    let items: Vec<RunSummary> = runs
        .iter()
        .map(|r| RunSummary {
            id: r.id.clone(),
            workflow: r.workflow.clone(),
            status: if st.drivers.is_driving(&r.id) {
                r.status.as_str()
            } else {
                r.display_status(now, LEASE)
            }
            .to_owned(),
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
        .collect();
    Ok(Json(RunList { runs: items, next }))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path)),
    responses((status = 200, body = RunView), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn cancel(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunView>, Problem> {
    own_run(&st, &tenant, &id).await?;
    let store = st.store.clone();
    let rid = id.clone();
    let rec = blocking(move || store.request_cancel(&rid, LEASE, false)).await?;
    // A run nobody drove (waiting, paused) is cancelled at once; a driven
    // one is announced by its driver when it stops.
    if rec.status == RunState::Cancelled && !st.drivers.is_driving(&id) {
        st.announce(&tenant, &id, Some(RunEvent::Cancelled)).await;
    }
    Ok(Json(run_view(&st, &tenant, &id).await?))
}

#[utoipa::path(get, path = "/v1/runs/{id}/deliveries", tag = "runs",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<crate::api::DeliveryDoc>), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
/// Every webhook message of the run, with every delivery attempt.
pub async fn deliveries(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Vec<corral_store::Delivery>>, Problem> {
    own_run(&st, &tenant, &id).await?;
    let store = st.store.clone();
    let t = tenant.id.clone();
    Ok(Json(blocking(move || store.deliveries(&t, &id)).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path)),
    request_body(content = Option<crate::api::ResumeRequest>),
    responses((status = 200, body = RunView), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json"), (status = 409, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn resume(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(id): UrlPath<String>,
    body: Option<Body<ResumeBody>>,
) -> Result<Json<RunView>, Problem> {
    admitting(&st)?;
    own_run(&st, &tenant, &id).await?;
    let body = body.map(|Body(b)| b).unwrap_or_default();
    within_packet(&tenant, &body.params, "the params")?;
    let req = ResumeRequest {
        run_id: id.clone(),
        params: param_pairs(&body.params),
        allow_changed_components: false,
        force: body.steps.into_iter().collect::<BTreeSet<_>>(),
    };
    driver::resume_or_hand_off(&st, &tenant, req).await?;
    Ok(Json(run_view(&st, &tenant, &id).await?))
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/approve", tag = "runs",
    params(("id" = String, Path), ("step" = String, Path)),
    request_body(content = Option<AnswerRequest>),
    responses((status = 200, body = RunView), (status = 400, body = crate::api::ProblemDoc, content_type = "application/problem+json"), (status = 409, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn approve(
    st: Shared,
    caller: Caller,
    UrlPath((id, step)): UrlPath<(String, String)>,
    body: Option<Body<AnswerRequest>>,
) -> Result<Json<RunView>, Problem> {
    let input = body
        .and_then(|Body(a)| a.input)
        .unwrap_or_else(|| json!({}));
    answer(
        st,
        caller,
        id,
        step,
        json!({ "approved": true, "input": input }),
    )
    .await
}

#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}/reject", tag = "runs",
    params(("id" = String, Path), ("step" = String, Path)),
    request_body(content = Option<AnswerRequest>),
    responses((status = 200, body = RunView), (status = 409, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn reject(
    st: Shared,
    caller: Caller,
    UrlPath((id, step)): UrlPath<(String, String)>,
    body: Option<Body<AnswerRequest>>,
) -> Result<Json<RunView>, Problem> {
    let reason = body.and_then(|Body(a)| a.reason).unwrap_or_default();
    answer(
        st,
        caller,
        id,
        step,
        json!({ "approved": false, "reason": reason }),
    )
    .await
}

/// Records an answer (checked against the waiting step's schema), then
/// drives the run on from it.
async fn answer(
    State(st): Shared,
    Caller(tenant): Caller,
    id: String,
    step: String,
    answer: Value,
) -> Result<Json<RunView>, Problem> {
    admitting(&st)?;
    own_run(&st, &tenant, &id).await?;
    within_packet(&tenant, &answer, "the answer's contents")?;
    let store = st.store.clone();
    let (rid, sid, a) = (id.clone(), step.clone(), answer.clone());
    let steps = blocking(move || store.steps(&rid)).await?;
    let waiting = steps
        .iter()
        .find(|s| s.step == sid && s.waiting.is_some() && s.answer.is_none())
        .ok_or_else(|| {
            Problem::new(
                Kind::Conflict,
                format!("run `{id}` has no step `{step}` waiting for an answer"),
            )
        })?;
    if a["approved"] == true {
        check_answer(waiting, &a["input"])?;
    }
    let store = st.store.clone();
    let (rid, sid) = (id.clone(), step.clone());
    blocking(move || store.answer(&rid, &sid, &a)).await?;
    let req = ResumeRequest {
        run_id: id.clone(),
        ..ResumeRequest::default()
    };
    driver::resume_or_hand_off(&st, &tenant, req).await?;
    Ok(Json(run_view(&st, &tenant, &id).await?))
}

/// An approver's input against the step's schema, bounded first: the schema
/// came from a tenant's file.
fn check_answer(step: &StepRecord, input: &Value) -> Result<(), Problem> {
    let schema = step
        .waiting
        .as_ref()
        .map(|w| w["schema"].clone())
        .unwrap_or(Value::Null);
    if schema.is_null() {
        return Ok(());
    }
    corral_runtime::schema::bounded(&schema).map_err(|e| Problem::new(Kind::Conflict, e))?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        Problem::new(
            Kind::Conflict,
            format!("the step's schema is not usable: {e}"),
        )
    })?;
    let problems: Vec<String> = validator
        .iter_errors(input)
        .take(20)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problem::new(
            Kind::InvalidRequest,
            format!("the input does not match step `{}`'s schema; nothing was recorded and the step still waits", step.step),
        )
        .with("errors", problems))
    }
}
