//! Run drivers: one task per run this server is driving, started on submission, on resume or approval, and at startup for runs a stopped server left behind.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{LEASE, RunState, now_ms};
use corral_workflow::durable::{ResumeRequest, reopen_in};
use corral_workflow::journal::Journal;
use corral_workflow::model::Workflow;
use corral_workflow::run::{RunOptions, run};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::problem::{Kind, Problem};
use crate::state::{AppState, blocking};
use crate::tenant::Tenant;
use crate::webhooks::RunEvent;

/// The runs this process drives, by id: each one's task, and its journal
/// so that a run cut off at shutdown still commits what it has and gives
/// up its lease.
#[derive(Default)]
pub struct Drivers {
    running: Mutex<HashMap<String, Driven>>,
}

/// A run's task and journal.
type Driven = (JoinHandle<()>, Option<Arc<Journal>>);

impl Drivers {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_driving(&self, run: &str) -> bool {
        self.lock().contains_key(run)
    }

    /// Wakes on each journal commit of `run`, if this process drives it.
    pub fn commits(&self, run: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.lock()
            .get(run)
            .and_then(|(_, j)| j.as_ref().map(|j| j.commits()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Driven>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `grace` for every run to stop on its own, then stops the
    /// rest: each one's journal commits what it holds and gives up the
    /// lease, so the next start (here or on another machine) resumes it at
    /// once, with no committed step run again.
    pub async fn drain(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<_> = self.lock().drain().collect();
        let count = left.len();
        for (run, (task, journal)) in left {
            task.abort();
            // Stopped for sure before its journal is closed.
            let _ = task.await;
            if let Some(j) = journal
                && let Err(e) = j.close().await
            {
                tracing::warn!(run = %run, error = %e, "could not release an interrupted run");
            }
        }
        count
    }
}

/// Drives `w` in the background; its events reach clients through the journal.
pub fn start(state: &Arc<AppState>, tenant: &Arc<Tenant>, w: Arc<Workflow>, mut opts: RunOptions) {
    let id = opts.run_id.clone();
    opts.cache_scope = format!("tenant:{}", tenant.id);
    opts.admission = Some(Arc::new(crate::fair::TenantAdmission {
        fair: state.fair.clone(),
        tenant: tenant.id.clone(),
        waits: Some(
            state
                .metrics
                .admission_wait
                .get_or_create(&crate::metrics::TenantLabel {
                    tenant: tenant.id.clone(),
                })
                .clone(),
        ),
    }));
    let (st, tid) = (state.clone(), tenant.id.clone());
    opts.events = Arc::new(move |e| {
        if let corral_workflow::events::Event::Breaker { agent, from, to } = e {
            st.metrics.breaker(&tid, agent, from, to);
        }
    });
    opts.ledger = state.fuel.get(&tenant.id).cloned().map(|f| f as _);
    opts.artifact_tenant_bytes = tenant.quota.artifact_bytes;
    opts.token_pools = state
        .tokens
        .get(&tenant.id)
        .cloned()
        .map(|t| t as _)
        .into_iter()
        .collect();
    let cancel = opts.cancel.clone();
    let limit = tenant.quota.run_timeout;
    let st = state.clone();
    let run_id = id.clone();
    let tenant = tenant.clone();
    let first_session = opts.resume.is_none();
    let journal = opts.journal.clone();
    let journal_for_drain = opts.journal.clone();
    let task = tokio::spawn(async move {
        if first_session {
            st.announce(&tenant, &run_id, Some(RunEvent::Started)).await;
        }
        let rt = st.rt.clone();
        let driven = run(rt, w, opts);
        tokio::pin!(driven);
        let report = tokio::select! {
            r = &mut driven => r,
            _ = tokio::time::sleep(limit) => {
                tracing::warn!(run = %run_id, ?limit, "run timeout reached; cancelling");
                cancel.cancel();
                driven.await
            }
        };
        tracing::info!(run = %run_id, status = ?report.status, "run stopped");
        // Commit what is left of the journal and give up the lease before
        // anyone hears the run stopped: a client, a webhook or the next
        // session then reads the final state.
        if let Some(j) = journal
            && let Err(e) = j.close().await
        {
            tracing::error!(run = %run_id, error = %e, "cannot close the run's journal");
        }
        st.metrics.run_stopped(&tenant.id, &report);
        // Announced from the stored record, which says how the run stands
        // now (a run interrupted by shutdown stays running: nothing to say).
        st.announce(&tenant, &run_id, None).await;
        st.drivers.lock().remove(&run_id);
    });
    state.drivers.lock().insert(id, (task, journal_for_drain));
}

/// Claims a stored run of `tenant` and drives it again.
pub async fn resume(
    state: &Arc<AppState>,
    tenant: &Arc<Tenant>,
    req: ResumeRequest,
) -> Result<(), Problem> {
    if state.drivers.is_driving(&req.run_id) {
        return Err(Problem::new(
            Kind::Conflict,
            format!("run `{}` is running on this server", req.run_id),
        ));
    }
    let scope = state.scope(tenant).await?;
    let cancel = CancellationToken::new();
    let r = reopen_in(
        &state.rt,
        state.store.clone(),
        &req,
        cancel.clone(),
        Some(&scope),
    )
    .await
    .map_err(resume_problem)?;
    let mut w = Arc::unwrap_or_clone(r.workflow);
    crate::quota::clamp(&mut w, &tenant.quota);
    let mut opts = RunOptions::new(req.run_id.clone(), r.params);
    opts.cancel = cancel;
    opts.journal = Some(r.journal);
    opts.resume = Some(r.resume);
    start(state, tenant, Arc::new(w), opts);
    Ok(())
}

fn resume_problem(e: corral_workflow::durable::ResumeError) -> Problem {
    use corral_workflow::durable::ResumeError as E;
    match e {
        E::Store(s) => s.into(),
        E::Invalid { diagnostics, .. } => Problem::new(
            Kind::InvalidWorkflow,
            "the run's workflow no longer validates",
        )
        .with("errors", diagnostics),
        other => Problem::new(Kind::Conflict, other.to_string()),
    }
}

/// Picks up every tenant run that no live process drives (a server stopped
/// or killed mid-run); returns how many were resumed.
pub async fn resume_interrupted(state: &Arc<AppState>) -> usize {
    let store = state.store.clone();
    let runs = match blocking(move || store.runs()).await {
        Ok(r) => r,
        Err(p) => {
            tracing::error!(detail = %p.detail, "cannot list runs to resume");
            return 0;
        }
    };
    let now = now_ms();
    let mut resumed = 0;
    for rec in runs {
        if rec.tenant.is_empty() || rec.status != RunState::Running || rec.lease_live(now, LEASE) {
            continue;
        }
        resumed += usize::from(pick_up(state, &rec).await);
    }
    resumed
}

/// How often a server looks for runs whose driver stopped renewing its
/// lease (another server or worker sharing the store, killed or cut off).
const SWEEP: Duration = Duration::from_secs(2);

/// Until the server stops: every [`SWEEP`] (with jitter, so that servers
/// sharing a store do not all look at once), claims the tenants' runs whose
/// lease expired and drives them here. A run another process claims first
/// is left to it.
pub async fn sweep(state: Arc<AppState>) {
    loop {
        let pause = SWEEP + Duration::from_millis(fastrand::u64(0..500));
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let store = state.store.clone();
        let runs = match blocking(move || store.interrupted(LEASE, 64)).await {
            Ok(r) => r,
            Err(p) => {
                tracing::warn!(detail = %p.detail, "cannot look for interrupted runs");
                continue;
            }
        };
        for rec in runs {
            if state.stopping.is_cancelled() {
                return;
            }
            if pick_up(&state, &rec).await {
                tracing::info!(run = %rec.id, tenant = %rec.tenant, "took over a run whose lease expired");
            }
        }
    }
}

/// Claims `rec` and drives it here; false if it is driven already (here,
/// or by a process that claimed it first) or cannot be resumed.
async fn pick_up(state: &Arc<AppState>, rec: &corral_store::RunRecord) -> bool {
    if state.drivers.is_driving(&rec.id) {
        return false;
    }
    let Some(tenant) = state.tenants.get(&rec.tenant) else {
        tracing::warn!(run = %rec.id, tenant = %rec.tenant, "run of a tenant no longer configured; left alone");
        return false;
    };
    let req = ResumeRequest {
        run_id: rec.id.clone(),
        params: Vec::new(),
        allow_changed_components: false,
        force: BTreeSet::new(),
    };
    match resume(state, &tenant, req).await {
        Ok(()) => true,
        // Most often another process claimed it first.
        Err(p) if p.kind == Kind::Conflict => {
            tracing::info!(run = %rec.id, detail = %p.detail, "left to another process");
            false
        }
        Err(p) => {
            tracing::warn!(run = %rec.id, detail = %p.detail, "could not resume");
            false
        }
    }
}
