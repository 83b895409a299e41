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
        let wanted: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| e.events.contains(&event))
            .collect();
        if wanted.is_empty() {
            return Ok(());
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
        let messages: Vec<WebhookMessage> = wanted
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
            .collect();
        store.enqueue_webhooks(&messages)?;
        self.wake.notify_one();
        Ok(())
    }
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
