//! `/v1/agents`: a tenant uploads a component (checked, compiled and described on upload, kept by digest), then lists, reads and deletes its registrations.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use corral_runtime::inspect::Inspection;
use corral_store::{AgentRecord, now_ms};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{AgentList, AgentView};
use crate::auth::Caller;
use crate::problem::{Kind, Problem};
use crate::quota::Spent;
use crate::state::{AppState, blocking};
use crate::tenant::component_path;

type Shared = State<Arc<AppState>>;

/// `PUT /v1/agents/{name}` with the component's bytes as the body.
#[utoipa::path(put, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "The name workflows use for it")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, body = AgentView),
        (status = 413, description = "Larger than the tenant's max_upload", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Not a usable agent", body = crate::api::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn upload(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Result<(StatusCode, Json<AgentView>), Problem> {
    if !valid_name(&name) {
        return Err(Problem::new(
            Kind::InvalidRequest,
            format!("`{name}` is not an agent name: use 1 to 64 of a-z, A-Z, 0-9, `-` and `_`"),
        ));
    }
    let limit = tenant.quota.max_upload;
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| {
            Spent {
                quota: "max_upload",
                limit,
                used: limit,
                resets_in_secs: None,
            }
            .problem(
                &tenant.id,
                format!("the component is larger than {limit} bytes"),
            )
            .with_kind(Kind::TooLarge)
        })?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let path = component_path(&st.components, &digest);
    // Written aside and loaded from there: a component that is not a usable
    // agent never reaches the directory workflows load from.
    let (dir, b) = (st.components.clone(), bytes.clone());
    let tmp = tokio::task::spawn_blocking(move || write_aside(&dir, &b))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| Problem::internal(format!("cannot keep the component: {e}")))?;
    let loaded = st.rt.load(&tmp).await;
    let kept = match &loaded {
        Ok(_) => std::fs::rename(&tmp, &path),
        Err(_) => std::fs::remove_file(&tmp),
    };
    let agent = loaded
        .map_err(|e| Problem::new(Kind::InvalidAgent, format!("agent `{name}`: {}", chain(&e))))?;
    kept.map_err(|e| Problem::internal(format!("cannot keep the component: {e}")))?;
    // In the store too: every server and worker sharing it can then load it.
    let (store, d, b) = (st.store.clone(), digest.clone(), bytes.clone());
    blocking(move || store.put_component(&d, &b)).await?;
    let mut info =
        serde_json::to_value(Inspection::of(&agent, st.rt.engine())).unwrap_or(Value::Null);
    if let Some(o) = info.as_object_mut() {
        o.remove("path");
    }
    let record = AgentRecord {
        tenant: tenant.id.clone(),
        name: name.clone(),
        digest: digest.clone(),
        info: info.clone(),
        size: bytes.len() as u64,
        created_ms: now_ms(),
    };
    let store = st.store.clone();
    blocking(move || store.put_agent(&record)).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentView {
            name,
            digest,
            size: bytes.len() as u64,
            created_ms: now_ms(),
            describe: info,
        }),
    ))
}

/// Writes `bytes` to a new file in `dir`, readable by this user only, synced.
pub(crate) fn write_aside(dir: &Path, bytes: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let p = dir.join(format!(".upload-{:016x}.wasm", fastrand::u64(..)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(p)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
pub async fn list(State(st): Shared, Caller(tenant): Caller) -> Result<Json<AgentList>, Problem> {
    let store = st.store.clone();
    let id = tenant.id.clone();
    let agents = blocking(move || store.agents(&id)).await?;
    Ok(Json(AgentList {
        agents: agents.iter().map(view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn get(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<AgentView>, Problem> {
    let store = st.store.clone();
    let id = tenant.id.clone();
    let agents = blocking(move || store.agents(&id)).await?;
    agents
        .iter()
        .find(|a| a.name == name)
        .map(|a| Json(view(a)))
        .ok_or_else(|| Problem::not_found("agent", &name))
}

#[utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path)),
    responses((status = 204, description = "Forgotten"), (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn delete(
    State(st): Shared,
    Caller(tenant): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, Problem> {
    let store = st.store.clone();
    let (id, n) = (tenant.id.clone(), name.clone());
    if blocking(move || store.delete_agent(&id, &n)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("agent", &name))
    }
}

fn view(a: &AgentRecord) -> AgentView {
    AgentView {
        name: a.name.clone(),
        digest: a.digest.clone(),
        size: a.size,
        created_ms: a.created_ms,
        describe: a.info.clone(),
    }
}
