//! Webhook messages as the store keeps them: an outbox of run events per endpoint, and a record of every delivery attempt.

use serde::Serialize;

use crate::DeliveryState;

/// One run event on its way to one endpoint. Its id is the `webhook-id`
/// every attempt carries, so a receiver can drop repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookMessage {
    pub id: String,
    pub tenant: String,
    pub run: String,
    /// `run.started`, `run.completed`, ...
    pub event: String,
    pub url: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub created_ms: i64,
    pub attempts: u32,
    pub state: DeliveryState,
    /// When the next attempt is due (pending only).
    pub next_ms: Option<i64>,
}

/// One try at delivering a message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    pub message: String,
    /// 1 for the first try.
    pub attempt: u32,
    pub at_ms: i64,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A message with every attempt made so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub message: WebhookMessage,
    pub tries: Vec<DeliveryAttempt>,
}
