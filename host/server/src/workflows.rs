//! `/v1/workflows`: a tenant registers a workflow by name (validated in its scope when registered), lists and reads them, and submits runs of one by name.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use corral_store::{WorkflowRecord, now_ms};

use crate::api::{RegisterRequest, WorkflowList, WorkflowView};
use crate::auth::Caller;
use crate::extract::Body;
use crate::problem::{Kind, Problem};
use crate::runs::{check, file_name};
use crate::state::{AppState, blocking};
use crate::tenant::Tenant;

type Shared = State<Arc<AppState>>;

/// `PUT /v1/workflows/{name}`: checked as a submission would be, then kept.
#[utoipa::path(put, path = "/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path)),
    request_body = RegisterRequest,
    responses(
        (status = 201, body = WorkflowView),
        (status = 403, body = crate::api::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = crate::api::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
    Body(req): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<WorkflowView>), Problem> {
    if !crate::agents::valid_name(&name) {
        return Err(Problem::new(
            Kind::InvalidRequest,
            format!("`{name}` is not a workflow name: use 1 to 64 of a-z, A-Z, 0-9, `-` and `_`"),
        ));
    }
    let file = file_name(req.format.as_deref(), &name)?;
    let w = check(&st, &tenant, &file, &req.workflow).await?;
    let record = WorkflowRecord {
        tenant: tenant.id.clone(),
        name: name.clone(),
        text: req.workflow,
        format: req.format.unwrap_or_else(|| "yaml".into()),
        digest: w.digest.clone(),
        created_ms: now_ms(),
    };
    let view = WorkflowView {
        name: record.name.clone(),
        digest: record.digest.clone(),
        format: record.format.clone(),
        workflow: None,
        created_ms: record.created_ms,
    };
    let store = st.store.clone();
    blocking(move || store.put_workflow(&record)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A tenant's registered workflow, or 404.
pub async fn registered(
    st: &AppState,
    tenant: &Tenant,
    name: &str,
) -> Result<WorkflowRecord, Problem> {
    let store = st.store.clone();
    let id = tenant.id.clone();
    blocking(move || store.workflows(&id))
        .await?
        .into_iter()
        .find(|w| w.name == name)
        .ok_or_else(|| Problem::not_found("workflow", name))
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", responses((status = 200, body = WorkflowList)))]
pub async fn list(
    State(st): Shared,
    Caller(tenant): Caller,
) -> Result<Json<WorkflowList>, Problem> {
    let store = st.store.clone();
    let id = tenant.id.clone();
    let all = blocking(move || store.workflows(&id)).await?;
    let workflows = all
        .into_iter()
        .map(|w| WorkflowView {
            name: w.name,
            digest: w.digest,
            format: w.format,
            workflow: None,
            created_ms: w.created_ms,
        })
        .collect();
    Ok(Json(WorkflowList { workflows }))
}

#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn get(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<WorkflowView>, Problem> {
    let w = registered(&st, &tenant, &name).await?;
    Ok(Json(WorkflowView {
        name: w.name,
        digest: w.digest,
        format: w.format,
        workflow: Some(w.text),
        created_ms: w.created_ms,
    }))
}
