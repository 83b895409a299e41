//! `/v1/workflows`: a tenant registers a workflow by name (validated in its scope when registered), lists and reads them, and submits runs of one by name.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use corral_store::{WorkflowRecord, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::Body;
use crate::problem::{Kind, Problem};
use crate::runs::{check, file_name};
use crate::state::{AppState, blocking};
use crate::tenant::Tenant;

type Shared = State<Arc<AppState>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The workflow, as YAML (or JSON) text.
    workflow: String,
    /// `yaml` (the default) or `json`.
    #[serde(default)]
    format: Option<String>,
}

/// `PUT /v1/workflows/{name}`: checked as a submission would be, then kept.
pub async fn register(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
    Body(req): Body<Register>,
) -> Result<(StatusCode, Json<Value>), Problem> {
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
    let store = st.store.clone();
    blocking(move || store.put_workflow(&record)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "digest": w.digest, "workflow": w.name })),
    ))
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

pub async fn list(State(st): Shared, Caller(tenant): Caller) -> Result<Json<Value>, Problem> {
    let store = st.store.clone();
    let id = tenant.id.clone();
    let all = blocking(move || store.workflows(&id)).await?;
    let items: Vec<Value> = all
        .iter()
        .map(|w| json!({ "name": w.name, "digest": w.digest, "created_ms": w.created_ms }))
        .collect();
    Ok(Json(json!({ "workflows": items })))
}

pub async fn get(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, Problem> {
    let w = registered(&st, &tenant, &name).await?;
    Ok(Json(json!({
        "name": w.name,
        "digest": w.digest,
        "format": w.format,
        "workflow": w.text,
        "created_ms": w.created_ms,
    })))
}
