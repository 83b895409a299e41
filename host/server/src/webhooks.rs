//! Webhooks: each tenant's endpoints hear about its runs (started, waiting, completed, failed, cancelled), signed the Standard Webhooks way, through an outbox in the store so that a slow or dead endpoint never slows a run.
//!
//! A run event becomes one message per endpoint that wants it, queued in
//! the store in one transaction ([`Webhooks::emit`]). The worker in
//! [`deliver`] claims due messages, posts them, records every attempt, and
//! retries failures with exponential backoff; a message survives restarts
//! because it lives in the store, not in memory.

pub mod deliver;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use corral_store::{DeliveryState, RunRecord, RunState, Store, WebhookMessage, now_ms};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use sign::Secret;

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub enum RunEvent {
    #[serde(rename = "run.started")]
    Started,
    /// An approval (or a paused step) waits for a human.
    #[serde(rename = "run.waiting")]
    Waiting,
    /// Completed or degraded.
    #[serde(rename = "run.completed")]
    Completed,
    /// Failed, or out of fuel.
    #[serde(rename = "run.failed")]
    Failed,
    #[serde(rename = "run.cancelled")]
    Cancelled,
}

impl RunEvent {
    pub const ALL: [RunEvent; 5] = [
        RunEvent::Started,
        RunEvent::Waiting,
        RunEvent::Completed,
        RunEvent::Failed,
        RunEvent::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunEvent::Started => "run.started",
            RunEvent::Waiting => "run.waiting",
            RunEvent::Completed => "run.completed",
            RunEvent::Failed => "run.failed",
            RunEvent::Cancelled => "run.cancelled",
        }
    }

    /// The event a run that stopped in `state` announces.
    pub fn of_stop(state: RunState) -> Option<Self> {
        Some(match state {
            RunState::Running => return None,
            RunState::Waiting | RunState::Paused => RunEvent::Waiting,
            RunState::Completed | RunState::Degraded => RunEvent::Completed,
            RunState::Failed | RunState::FuelExhausted => RunEvent::Failed,
            RunState::Cancelled => RunEvent::Cancelled,
        })
    }
}

impl std::str::FromStr for RunEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|e| e.name()).collect();
                format!("unknown event `{s}`; the events are {}", names.join(", "))
            })
    }
}

/// One endpoint of a tenant, from `corral.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub secret: Secret,
    /// The events it wants; all of them when the config lists none.
    pub events: Vec<RunEvent>,
}

/// How deliveries are retried (`server.webhook_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long one attempt may take, connection included.
    pub timeout: Duration,
    /// Attempts per message before it is given up.
    pub attempts: u32,
    /// The wait before the first retry; each later one doubles, up to an hour.
    pub backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 8,
            backoff: Duration::from_secs(5),
        }
    }
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How far back a starting server looks for runs whose last event may not
/// have been queued (the process died between the commit and the queue).
pub const RECONCILE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most of a run's error a payload carries.
const MAX_ERROR_CHARS: usize = 2048;

/// The body every endpoint receives.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: PayloadData<'a>,
}

#[derive(Serialize)]
struct PayloadData<'a> {
    run: &'a str,
    workflow: &'a str,
    status: RunState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    fuel_charged: u64,
}

/// Queues run events for delivery and wakes the worker.
#[derive(Default)]
pub struct Webhooks {
    pub(crate) wake: Notify,
}

impl Webhooks {
    /// Queues `event` of `run` for each of `endpoints` that wants it. The
    /// message id depends only on the run, its session, the event and the
    /// endpoint, so announcing the same thing twice queues it once.
    pub fn emit(
        &self,
        store: &Arc<dyn Store>,
        endpoints: &[Endpoint],
        run: &RunRecord,
        event: RunEvent,
    ) -> Result<(), corral_store::StoreError> {
        let messages = messages(endpoints, run, event);
        if messages.is_empty() {
            return Ok(());
        }
        store.enqueue_webhooks(&messages)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Queues, for every tenant run that stopped since `since_ms`, the
    /// event of where it stands now. A process that died between a run's
    /// last commit and its announcement left that event unsent; for every
    /// other run the ids match what is queued already, and nothing changes.
    pub fn reconcile(
        &self,
        store: &Arc<dyn Store>,
        tenants: &crate::tenant::Tenants,
        runs: &[RunRecord],
        since_ms: i64,
    ) -> Result<usize, corral_store::StoreError> {
        let mut all = Vec::new();
        for run in runs.iter().filter(|r| r.updated_ms >= since_ms) {
            let (Some(tenant), Some(event)) =
                (tenants.get(&run.tenant), RunEvent::of_stop(run.status))
            else {
                continue;
            };
            all.extend(messages(&tenant.webhooks, run, event));
        }
        if !all.is_empty() {
            store.enqueue_webhooks(&all)?;
            self.wake.notify_one();
        }
        Ok(all.len())
    }
}

/// One message of `event` of `run` for each of `endpoints` that wants it.
fn messages(endpoints: &[Endpoint], run: &RunRecord, event: RunEvent) -> Vec<WebhookMessage> {
    let wanted: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.events.contains(&event))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let now = now_ms();
    let payload = serde_json::to_string(&Payload {
        kind: event.name(),
        timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        data: PayloadData {
            run: &run.id,
            workflow: &run.workflow,
            status: run.status,
            error: run
                .error
                .as_ref()
                .map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
            fuel_charged: run.fuel_charged,
        },
    })
    .unwrap_or_default();
    wanted
        .into_iter()
        .map(|e| WebhookMessage {
            id: message_id(run, event, &e.url),
            tenant: run.tenant.clone(),
            run: run.id.clone(),
            event: event.name().into(),
            url: e.url.clone(),
            payload: payload.clone(),
            created_ms: now,
            attempts: 0,
            state: DeliveryState::Pending,
            next_ms: Some(now),
        })
        .collect()
}

fn message_id(run: &RunRecord, event: RunEvent, url: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        run.tenant.as_str(),
        run.id.as_str(),
        &run.sessions.to_string(),
        event.name(),
        url,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("msg_{}", &hex::encode(h.finalize())[..32])
}

/// Queues what a stopped process may have left unannounced (see
/// [`Webhooks::reconcile`]); a failure is logged, never fatal.
pub async fn reconcile_at_start(state: &Arc<crate::state::AppState>) {
    let st = state.clone();
    let queued = tokio::task::spawn_blocking(move || {
        let runs = st.store.runs()?;
        let since = now_ms() - RECONCILE_WINDOW.as_millis() as i64;
        st.webhooks.reconcile(&st.store, &st.tenants, &runs, since)
    })
    .await;
    match queued {
        Ok(Ok(n)) => tracing::debug!(messages = n, "webhook messages reconciled at start"),
        Ok(Err(e)) => tracing::error!(error = %e, "cannot reconcile webhook messages"),
        Err(e) => tracing::error!(error = %e, "the webhook reconcile task failed"),
    }
}

#[cfg(test)]
mod tests {
    use corral_store::{Durability, SqliteStore};
    use serde_json::Value;

    use super::*;
    use crate::tenant::{Quota, Tenant, Tenants};

    fn record(id: &str, tenant: &str, status: RunState, updated_ms: i64) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: "w".into(),
            file: "submitted.yaml".into(),
            definition: String::new(),
            digest: String::new(),
            params: Value::Null,
            components: Value::Null,
            status,
            error: None,
            created_ms: 0,
            updated_ms,
            owner: None,
            heartbeat_ms: None,
            cancel_requested: false,
            sessions: 1,
            epoch: 1,
            fuel_charged: 0,
            tenant: tenant.into(),
        }
    }

    #[test]
    fn a_start_queues_what_a_dead_process_left_unannounced_and_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path(), Durability::Normal).unwrap());
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let tenants = Tenants::new(vec![Tenant {
            id: "acme".into(),
            token_hashes: Vec::new(),
            secrets: Default::default(),
            quota: Quota::default(),
            webhooks: vec![Endpoint {
                url: "http://127.0.0.1:9/hook".into(),
                secret,
                events: vec![RunEvent::Completed],
            }],
        }]);
        let w = Webhooks::default();
        let now = now_ms();
        let runs = [
            record("done", "acme", RunState::Completed, now),
            record("old", "acme", RunState::Completed, now - 3_600_000),
            record("going", "acme", RunState::Running, now),
            record("failed", "acme", RunState::Failed, now),
            record("theirs", "globex", RunState::Completed, now),
        ];
        let since = now - RECONCILE_WINDOW.as_millis() as i64;
        // Only the recent completed run of a configured tenant, for the
        // endpoint that wants completions.
        assert_eq!(w.reconcile(&store, &tenants, &runs, since).unwrap(), 1);
        // The driver's own announcement and a second start add nothing.
        let tenant = tenants.get("acme").unwrap();
        w.emit(&store, &tenant.webhooks, &runs[0], RunEvent::Completed)
            .unwrap();
        w.reconcile(&store, &tenants, &runs, since).unwrap();
        assert_eq!(store.deliveries("acme", "done").unwrap().len(), 1);
        assert!(store.deliveries("acme", "old").unwrap().is_empty());
    }
}
