//! The delivery worker: claims due messages from the store, posts each signed to its endpoint on the blocking pool, records the attempt, and schedules the next one with exponential backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_store::{DeliveryAttempt, DeliveryState, WebhookMessage, now_ms};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, MAX_BACKOFF, Settings};
use crate::state::AppState;

/// Messages claimed per round.
const BATCH: usize = 32;
/// Deliveries in flight at once, across tenants.
const IN_FLIGHT: usize = 8;
/// How often the store is polled when nobody wakes the worker (retries
/// falling due, messages another process queued).
const POLL: Duration = Duration::from_millis(250);
/// The most of a receiver's error text kept with an attempt.
const MAX_ERROR_CHARS: usize = 512;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Seconds the receiver asked us to wait (`Retry-After` on 429 or 503).
    pub retry_after: Option<u64>,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Delivers until `stop`; in-flight attempts finish on their own, and a
/// message they did not record is claimed again once its hold ends.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let settings = state.config.webhooks;
    let agent = agent(settings.timeout);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A claimed message is held for longer than one attempt can take.
    let hold = settings.timeout * 2 + Duration::from_secs(5);
    loop {
        let store = state.store.clone();
        let due =
            tokio::task::spawn_blocking(move || store.claim_webhooks(now_ms(), hold, BATCH)).await;
        let due = match due {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot claim webhook messages");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "the webhook claim task failed");
                Vec::new()
            }
        };
        let idle = due.is_empty();
        for message in due {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (st, agent) = (state.clone(), agent.clone());
            tokio::task::spawn_blocking(move || {
                attempt(&st, &agent, settings, message);
                drop(permit);
            });
        }
        if idle {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = state.webhooks.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A redirect is an answer from the wrong place: a failed attempt.
        .max_redirects(0)
        .user_agent(concat!("corral-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One attempt at `message`, recorded with where the message stands after it.
fn attempt(state: &AppState, agent: &ureq::Agent, settings: Settings, message: WebhookMessage) {
    let number = message.attempts + 1;
    let endpoint = state
        .tenants
        .get(&message.tenant)
        .and_then(|t| t.webhooks.iter().find(|e| e.url == message.url).cloned());
    let started = Instant::now();
    let at_ms = now_ms();
    let outcome = match &endpoint {
        Some(e) => post(agent, e, &message),
        None => Outcome {
            status: None,
            error: Some("the endpoint is no longer in the tenant's config".into()),
            retry_after: None,
        },
    };
    let (state_after, next_ms) = if outcome.delivered() {
        (DeliveryState::Delivered, None)
    } else if endpoint.is_none() || number >= settings.attempts {
        (DeliveryState::Failed, None)
    } else {
        let wait = backoff(settings.backoff, number, outcome.retry_after);
        (
            DeliveryState::Pending,
            Some(now_ms() + wait.as_millis() as i64),
        )
    };
    let record = DeliveryAttempt {
        message: message.id.clone(),
        attempt: number,
        at_ms,
        status: outcome.status,
        error: outcome.error.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if let Err(e) = state.store.record_delivery(&record, state_after, next_ms) {
        tracing::error!(message = %message.id, error = %e, "cannot record a webhook attempt");
    }
    state.metrics.webhook(&message.tenant, state_after);
    match state_after {
        DeliveryState::Delivered => {
            tracing::debug!(message = %message.id, attempt = number, "webhook delivered")
        }
        _ => tracing::warn!(
            message = %message.id, url = %message.url, attempt = number,
            status = ?outcome.status, error = ?outcome.error, next = ?next_ms,
            "webhook attempt failed"
        ),
    }
}

/// Posts `message` to `endpoint`, signed; the body of the answer is not read.
pub fn post(agent: &ureq::Agent, endpoint: &Endpoint, message: &WebhookMessage) -> Outcome {
    let timestamp = now_ms() / 1000;
    let signature = endpoint
        .secret
        .sign(&message.id, timestamp, &message.payload);
    let sent = agent
        .post(&message.url)
        .header("content-type", "application/json")
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .send(message.payload.as_str());
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = matches!(status, 429 | 503)
                .then(|| resp.headers().get("retry-after"))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            Outcome {
                status: Some(status),
                error: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
                retry_after,
            }
        }
        Err(e) => Outcome {
            status: None,
            error: Some(e.to_string().chars().take(MAX_ERROR_CHARS).collect()),
            retry_after: None,
        },
    }
}

/// The wait after failed attempt `n` (1-based): `base · 2^(n-1)`, up to an
/// hour, with ±10% jitter so that retries of many messages spread out; never
/// shorter than what the receiver asked for.
pub fn backoff(base: Duration, n: u32, retry_after: Option<u64>) -> Duration {
    let exp = base.saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
    let jitter = 0.9 + fastrand::f64() * 0.2;
    let wait = exp.min(MAX_BACKOFF).mul_f64(jitter);
    let asked = Duration::from_secs(retry_after.unwrap_or(0)).min(MAX_BACKOFF);
    wait.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_and_honours_retry_after() {
        let base = Duration::from_secs(5);
        let near = |d: Duration, s: f64| (d.as_secs_f64() - s).abs() <= s * 0.1 + 1e-9;
        assert!(near(backoff(base, 1, None), 5.0));
        assert!(near(backoff(base, 2, None), 10.0));
        assert!(near(backoff(base, 4, None), 40.0));
        assert!(near(backoff(base, 30, None), 3600.0));
        assert_eq!(backoff(base, 1, Some(120)), Duration::from_secs(120));
        assert_eq!(backoff(base, 1, Some(u64::MAX)), MAX_BACKOFF);
    }
}
