//! Durable runs: recording a new run in the store, and rebuilding a stored run (same definition, pinned components) to resume it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use corral_runtime::Runtime;
use corral_store::{LEASE, Lease, NewRun, Owner, RunRecord, RunState, Store, StoreError};

use super::journal::Journal;
use super::model::Workflow;
use super::run::{Prior, Resume};
use super::scope::Scope;
use super::source::{self, Diagnostic};
use super::validate::{param_value, validate, validate_in};

/// Why a stored run cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run `{run}` is {status}: there is nothing to resume{hint}")]
    Finished {
        run: String,
        status: RunState,
        hint: String,
    },
    #[error("run `{run}`: its workflow no longer validates")]
    Invalid {
        run: String,
        diagnostics: Vec<Diagnostic>,
    },
    #[error(
        "run `{run}` is pinned to the components it started with, and {} changed:\n{}\nRebuild the original components, or resume with `--allow-changed-components` to accept the new ones (this is recorded in the journal)",
        if .changed.len() == 1 { "one" } else { "some" },
        .changed.iter().map(|c| format!("  agent `{}`: was {}, now {}", c.0, c.1, c.2)).collect::<Vec<_>>().join("\n")
    )]
    ChangedComponents {
        run: String,
        changed: Vec<(String, String, String)>,
    },
    #[error("run `{run}`: {}", .errors.join("; "))]
    Params { run: String, errors: Vec<String> },
    #[error("run `{run}` has no step `{step}`; its steps are: {known}")]
    UnknownStep {
        run: String,
        step: String,
        known: String,
    },
}

/// Records a new run of the operator's own and starts its journal.
pub fn begin(
    store: Arc<dyn Store>,
    w: &Workflow,
    params: &Value,
    run_id: &str,
    cancel: CancellationToken,
) -> Result<Arc<Journal>, StoreError> {
    begin_as(store, w, params, run_id, cancel, &Origin::default())
}

/// Who submitted a run, and how to recognise the same submission again.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The tenant the run belongs to; empty for the operator's own.
    pub tenant: String,
    /// A client's idempotency key; a second `begin_as` with it fails with
    /// `StoreError::SameRequest` naming the first run.
    pub idempotency_key: Option<String>,
    /// The most runs the tenant may have running, this one included
    /// (`StoreError::TooManyRuns` otherwise).
    pub max_running: Option<u32>,
}

/// [`begin`] for a run submitted by `origin`.
pub fn begin_as(
    store: Arc<dyn Store>,
    w: &Workflow,
    params: &Value,
    run_id: &str,
    cancel: CancellationToken,
    origin: &Origin,
) -> Result<Arc<Journal>, StoreError> {
    let lease = store.create_run(&new_run(w, params, run_id, origin), &Owner::this_process())?;
    Ok(Arc::new(Journal::start(
        store,
        run_id.into(),
        lease,
        Vec::new(),
        cancel,
    )))
}

/// Records a tenant's run for another process to drive: it stays `queued`
/// until a server or worker sharing the store claims it
/// ([`Store::claim_next`]) and picks it up with [`reopen_claimed`].
pub fn submit_as(
    store: &dyn Store,
    w: &Workflow,
    params: &Value,
    run_id: &str,
    origin: &Origin,
) -> Result<(), StoreError> {
    store.submit_run(&new_run(w, params, run_id, origin))
}

fn new_run(w: &Workflow, params: &Value, run_id: &str, origin: &Origin) -> NewRun {
    let file = std::fs::canonicalize(&w.file).unwrap_or_else(|_| w.file.clone());
    NewRun {
        id: run_id.into(),
        workflow: w.name.clone(),
        file: file.display().to_string(),
        definition: w.text.to_string(),
        digest: w.digest.clone(),
        params: params.clone(),
        components: components(w),
        tenant: origin.tenant.clone(),
        idempotency_key: origin.idempotency_key.clone(),
        max_running: origin.max_running,
    }
}

fn components(w: &Workflow) -> Value {
    Value::Object(
        w.agents
            .iter()
            .map(|(n, a)| (n.clone(), Value::String(a.agent.digest().to_owned())))
            .collect(),
    )
}

/// How to pick a stored run up again.
#[derive(Debug, Clone, Default)]
pub struct ResumeRequest {
    pub run_id: String,
    /// `--param name=value` overrides.
    pub params: Vec<(String, String)>,
    pub allow_changed_components: bool,
    /// Steps to run again whatever they read (`corral retry --step`); a
    /// finished run may be resumed only with some.
    pub force: BTreeSet<String>,
}

/// A stored run, claimed and ready to run again.
pub struct Resumed {
    pub workflow: Arc<Workflow>,
    pub params: Value,
    pub resume: Resume,
    pub journal: Arc<Journal>,
    pub record: RunRecord,
}

/// Claims a stored run, rebuilds its workflow from the recorded definition,
/// checks the component pins and loads what earlier sessions committed.
pub async fn reopen(
    rt: &Runtime,
    store: Arc<dyn Store>,
    req: &ResumeRequest,
    cancel: CancellationToken,
) -> Result<Resumed, ResumeError> {
    reopen_in(rt, store, req, cancel, None).await
}

/// [`reopen`], resolving the stored workflow's names through `scope` (a
/// tenant's) instead of the operator's files next to the recorded path.
pub async fn reopen_in(
    rt: &Runtime,
    store: Arc<dyn Store>,
    req: &ResumeRequest,
    cancel: CancellationToken,
    scope: Option<&dyn Scope>,
) -> Result<Resumed, ResumeError> {
    let id = req.run_id.as_str();
    let record = store.run(id)?;
    finished(&record, req)?;
    // Validation loads (maybe compiles) components: do it before taking the
    // lease, which nothing renews until the journal starts.
    let w = validated(rt, &record, scope).await?;
    let (record, lease) = store.claim(id, &Owner::this_process(), LEASE)?;
    rebuild(store, w, record, lease, req, cancel, OnRefusal::Release)
}

/// What a refused resume does with the lease it took.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnRefusal {
    /// Gives it up: the caller asked for this run and was told why not.
    Release,
    /// Keeps it, unrenewed, until it expires: a run claimed from the queue
    /// that cannot be resumed is then not claimed again at once (by this
    /// process or another), so it cannot spin or hide the runs behind it.
    Hold,
}

/// Picks up a run this process claimed with [`Store::claim_next`]: as
/// [`reopen_in`] with no changes asked for. The lease is renewed while the
/// workflow validates (it may compile components); if the run cannot be
/// resumed, the lease is kept unrenewed, so the run is claimed again only
/// once it expires.
pub async fn reopen_claimed(
    rt: &Runtime,
    store: Arc<dyn Store>,
    record: RunRecord,
    lease: Lease,
    cancel: CancellationToken,
    scope: Option<&dyn Scope>,
) -> Result<Resumed, ResumeError> {
    let req = ResumeRequest {
        run_id: record.id.clone(),
        ..ResumeRequest::default()
    };
    let renewing = {
        let (store, id, lease) = (store.clone(), record.id.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let (store, id, lease) = (store.clone(), id.clone(), lease.clone());
                let renewed =
                    tokio::task::spawn_blocking(move || store.heartbeat(&id, &lease)).await;
                if !matches!(renewed, Ok(Ok(_))) {
                    return;
                }
            }
        })
    };
    let validated = validated(rt, &record, scope).await;
    renewing.abort();
    let _ = renewing.await;
    rebuild(
        store,
        validated?,
        record,
        lease,
        &req,
        cancel,
        OnRefusal::Hold,
    )
}

/// The run's stored workflow, parsed and validated again (through `scope`
/// for a tenant's run).
async fn validated(
    rt: &Runtime,
    record: &RunRecord,
    scope: Option<&dyn Scope>,
) -> Result<Workflow, ResumeError> {
    let id = record.id.as_str();
    let src = source::parse(Path::new(&record.file), &record.definition).map_err(|d| {
        ResumeError::Invalid {
            run: id.into(),
            diagnostics: d,
        }
    })?;
    let validated = match scope {
        Some(scope) => validate_in(&src, rt, scope).await,
        None => validate(&src, rt).await,
    };
    validated.map_err(|d| ResumeError::Invalid {
        run: id.into(),
        diagnostics: d,
    })
}

/// The rest of a resume, once `lease` holds the run: pins, params, what
/// earlier sessions committed, and a journal. The lease is given up on
/// any refusal.
fn rebuild(
    store: Arc<dyn Store>,
    mut w: Workflow,
    record: RunRecord,
    lease: Lease,
    req: &ResumeRequest,
    cancel: CancellationToken,
    on_refusal: OnRefusal,
) -> Result<Resumed, ResumeError> {
    let id = req.run_id.as_str();
    let release = |e: ResumeError| {
        if on_refusal == OnRefusal::Release {
            let _ = store.release(id, &lease);
        }
        e
    };
    // It may have finished (or been cancelled) while this process validated.
    finished(&record, req).map_err(release)?;
    // The definition comes from the store; the file may have changed since.
    w.file = PathBuf::from(&record.file);
    let w = Arc::new(w);
    for s in &req.force {
        if !w.steps.iter().any(|x| &x.id == s) {
            let known: Vec<&str> = w.steps.iter().map(|x| x.id.as_str()).collect();
            return Err(release(ResumeError::UnknownStep {
                run: id.into(),
                step: s.clone(),
                known: known.join(", "),
            }));
        }
    }

    let mut changed = Vec::new();
    for (name, a) in &w.agents {
        let was = record.components[name].as_str().unwrap_or("(none)");
        if was != a.agent.digest() {
            changed.push((name.clone(), was.to_owned(), a.agent.digest().to_owned()));
        }
    }
    if !changed.is_empty() && !req.allow_changed_components {
        return Err(release(ResumeError::ChangedComponents {
            run: id.into(),
            changed,
        }));
    }

    let mut params = match &record.params {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut errors = Vec::new();
    let mut changed_params = Vec::new();
    for (name, raw) in &req.params {
        match w.params.get(name) {
            None => errors.push(format!("unknown param `{name}`")),
            Some(p) => match param_value(name, p.ty, raw) {
                Ok(v) => {
                    if params.get(name) != Some(&v) {
                        changed_params.push(name.clone());
                    }
                    params.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            },
        }
    }
    if !errors.is_empty() {
        return Err(release(ResumeError::Params {
            run: id.into(),
            errors,
        }));
    }

    let mut steps = HashMap::new();
    for rec in store.steps(id).map_err(|e| release(e.into()))? {
        let output = match &rec.output {
            Some(d) => store
                .blob(d)
                .map_err(|e| release(e.into()))?
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .map(Arc::new),
            None => None,
        };
        steps.insert(
            rec.step.clone(),
            Prior {
                record: rec,
                output,
            },
        );
    }
    let delegated = super::prior_delegates::prior_delegates(store.as_ref(), id, &steps, &req.force)
        .map_err(|e| release(e.into()))?;
    let journal = Arc::new(Journal::start(
        store.clone(),
        id.into(),
        lease,
        steps.values().map(|p| p.record.clone()).collect(),
        cancel,
    ));
    Ok(Resumed {
        workflow: w,
        params: Value::Object(params),
        resume: Resume {
            session: record.sessions,
            steps,
            force: req.force.clone(),
            changed_components: changed.into_iter().map(|c| c.0).collect(),
            changed_params,
            fuel_charged: record.fuel_charged,
            delegated,
        },
        journal,
        record,
    })
}

/// A finished run can be picked up again only to change something: a param
/// (`resume --param`) or a step to rerun (`retry --step`). A cancelled run
/// can also simply be continued.
fn finished(record: &RunRecord, req: &ResumeRequest) -> Result<(), ResumeError> {
    let id = &record.id;
    if !record.is_finished()
        || record.status == RunState::Cancelled
        || !req.force.is_empty()
        || !req.params.is_empty()
    {
        return Ok(());
    }
    Err(ResumeError::Finished {
        run: id.clone(),
        status: record.status,
        hint: if record.status == RunState::Completed {
            format!("; `corral resume {id} --param k=v` reruns the steps that read a changed param")
        } else {
            format!(
                "; `corral retry {id} --step <id>` runs a step and what depends on it again, `corral resume {id} --param k=v` reruns what reads a changed param"
            )
        },
    })
}
