//! Run drivers: one task per run this process drives, started on submission, on resume or approval, or when it claims a run no live process drives (queued for workers, or left by a process that stopped or died).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{LEASE, Owner};
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
    /// Notified when a run stops here: room to claim another.
    pub freed: tokio::sync::Notify,
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
        shared: state.calls.get(&tenant.id).cloned(),
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
    // A queued run's first driver resumes it as session 1.
    let first_session = opts.resume.as_ref().is_none_or(|r| r.session <= 1);
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
        st.drivers.freed.notify_one();
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
    drive_resumed(state, tenant, r, cancel);
    Ok(())
}

/// Drives a run picked up again, held to its tenant's ceilings as they are now.
fn drive_resumed(
    state: &Arc<AppState>,
    tenant: &Arc<Tenant>,
    r: corral_workflow::durable::Resumed,
    cancel: CancellationToken,
) {
    let mut w = Arc::unwrap_or_clone(r.workflow);
    crate::quota::clamp(&mut w, &tenant.quota);
    let mut opts = RunOptions::new(r.record.id.clone(), r.params);
    opts.cancel = cancel;
    opts.journal = Some(r.journal);
    opts.resume = Some(r.resume);
    start(state, tenant, Arc::new(w), opts);
}

/// [`resume`], unless this process leaves driving to workers and `req`
/// only continues a waiting or paused run: then the run is handed to the
/// next process that claims one.
pub async fn resume_or_hand_off(
    state: &Arc<AppState>,
    tenant: &Arc<Tenant>,
    req: ResumeRequest,
) -> Result<(), Problem> {
    let plain = req.params.is_empty() && req.force.is_empty() && !req.allow_changed_components;
    if state.drive.by_workers() && plain {
        let (store, id) = (state.store.clone(), req.run_id.clone());
        let woken = blocking(move || {
            let woken = store.wake(&id)?;
            Ok((woken, store.run(&id)?))
        })
        .await?;
        // Running already: a worker drives it, or will once its lease
        // expires; this server drives nothing itself.
        if woken.0 || woken.1.status == corral_store::RunState::Running {
            return Ok(());
        }
    }
    resume(state, tenant, req).await
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

/// How often a driving process looks for claimable runs when nothing
/// wakes it: a store that announces them ([`corral_store::Store::wakeups`])
/// wakes it at once, and this is the fallback (a lease that simply
/// expires is announced by nobody).
const POLL: Duration = Duration::from_secs(2);

/// Until the process stops: claims the runs no live process drives
/// (submitted for workers, woken by an answer, released, or left by a
/// process that died) and drives them here, while fewer than `max_runs`
/// are driven here. Starts at once, so a restart picks up what it left.
pub async fn claim_runs(state: Arc<AppState>, max_runs: usize) {
    let wakeups = state.store.wakeups();
    // Only the tenants this process serves: another's run would sit here.
    let tenants: Arc<[String]> = state.tenants.iter().map(|t| t.id.clone()).collect();
    loop {
        while state.drivers.len() < max_runs && !state.stopping.is_cancelled() {
            let (store, tenants) = (state.store.clone(), tenants.clone());
            let claimed =
                blocking(move || store.claim_next(&Owner::this_process(), LEASE, &tenants)).await;
            match claimed {
                Ok(Some((rec, lease))) => {
                    // After a refusal, wait for the next wake-up rather than
                    // claim at once: whatever refused may refuse again.
                    if !adopt(&state, rec, lease).await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(p) => {
                    tracing::warn!(detail = %p.detail, "cannot claim runs");
                    break;
                }
            }
        }
        // Jitter, so that processes sharing a store do not all poll at once.
        let pause = POLL + Duration::from_millis(fastrand::u64(0..500));
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            _ = notified(wakeups.as_deref()) => {}
            _ = state.drivers.freed.notified() => {}
        }
    }
}

async fn notified(wakeups: Option<&tokio::sync::Notify>) {
    match wakeups {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Drives a run this process claimed; false if it cannot. One that cannot
/// be resumed keeps its unrenewed lease, so that no process claims it again
/// before the lease expires (and the oldest runs, stuck, do not hide the
/// others).
async fn adopt(
    state: &Arc<AppState>,
    rec: corral_store::RunRecord,
    lease: corral_store::Lease,
) -> bool {
    let id = rec.id.clone();
    if state.drivers.is_driving(&id) {
        // This process's own driver stopped renewing (a stalled store): the
        // claim has fenced it off, and it stops at its next commit. The run
        // is claimable again once this unrenewed lease expires.
        tracing::warn!(run = %id, "claimed a run this process was driving, whose lease had expired; left for the lease to expire");
        return false;
    }
    let Some(tenant) = state.tenants.get(&rec.tenant) else {
        tracing::warn!(run = %id, tenant = %rec.tenant, "claimed a run of a tenant this process does not serve; left for its lease to expire");
        return false;
    };
    let scope = match state.scope(&tenant).await {
        Ok(s) => s,
        Err(p) => {
            tracing::warn!(run = %id, detail = %p.detail, "cannot open the tenant's scope; the run is left for its lease to expire");
            return false;
        }
    };
    let cancel = CancellationToken::new();
    let r = corral_workflow::durable::reopen_claimed(
        &state.rt,
        state.store.clone(),
        rec,
        lease,
        cancel.clone(),
        Some(&scope),
    )
    .await;
    match r {
        Ok(r) => {
            tracing::info!(run = %id, tenant = %tenant.id, session = r.resume.session, "claimed a run");
            drive_resumed(state, &tenant, r, cancel);
            true
        }
        Err(e) => {
            let p = resume_problem(e);
            tracing::warn!(run = %id, detail = %p.detail, "cannot resume a claimed run; left for its lease to expire");
            false
        }
    }
}
