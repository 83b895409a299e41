//! What a call's receipt and the run's journal keep of its model calls: one record per call (alias, tokens, latency, outcome, the request's digest and the answer), bounded in records and in bytes of answers, while the tokens charged are counted in full.

use serde::{Deserialize, Serialize};

use super::{ModelOutcome, ModelResponse};

/// The most model calls one receipt lists; later ones are counted only.
pub const MAX_MODEL_RECORDS: usize = 256;

/// The most bytes of answers (content and tool calls) one receipt keeps
/// for replay; later answers are recorded without their text.
pub const MAX_RECORDED_ANSWER_BYTES: usize = 1 << 20;

/// A model call as receipts and the journal record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCallRecord {
    pub alias: String,
    /// The provider's model name.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What was reserved before the request was sent.
    pub reserved_tokens: u64,
    /// Tokens charged to the budgets: the usage, or the reservation when the
    /// provider reported none.
    pub charged_tokens: u64,
    pub attempts: u32,
    pub latency_ms: u64,
    /// `ok`, `cached`, `replayed`, or the error's kind (`rate_limited`, ...).
    pub outcome: ModelOutcome,
    /// Answered from the gateway's cache: no provider call, no tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// `sha256:` of the alias and the canonical request: what a replay
    /// matches a new request against. Empty for a request refused before
    /// it was read (an alias not granted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// The answer the agent got, kept so the step can be replayed without
    /// the provider; absent for a failed call, or past the receipt's
    /// [`MAX_RECORDED_ANSWER_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ModelResponse>,
}

impl ModelCallRecord {
    /// A record of a call to `alias` that has not happened yet.
    pub(crate) fn new(alias: &str) -> Self {
        Self {
            alias: alias.to_owned(),
            model: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            reserved_tokens: 0,
            charged_tokens: 0,
            attempts: 0,
            latency_ms: 0,
            outcome: ModelOutcome::Ok,
            cached: false,
            request: String::new(),
            response: None,
        }
    }
}

/// The model calls of one call so far.
#[derive(Debug, Default)]
pub(crate) struct ModelLog {
    pub records: Vec<ModelCallRecord>,
    /// Calls past [`MAX_MODEL_RECORDS`], counted only.
    pub dropped: u64,
    /// Tokens charged over every call, the dropped ones included.
    pub charged: u64,
    answer_bytes: usize,
}

impl ModelLog {
    pub fn push(&mut self, mut r: ModelCallRecord) {
        self.charged = self.charged.saturating_add(r.charged_tokens);
        if self.records.len() >= MAX_MODEL_RECORDS {
            self.dropped += 1;
            return;
        }
        if let Some(answer) = &r.response {
            let size = answer.size();
            if self.answer_bytes + size > MAX_RECORDED_ANSWER_BYTES {
                r.response = None;
            } else {
                self.answer_bytes += size;
            }
        }
        self.records.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FinishReason, Message, Role};

    fn answered(text: &str, tokens: u64) -> ModelCallRecord {
        ModelCallRecord {
            charged_tokens: tokens,
            response: Some(ModelResponse {
                message: Message {
                    role: Role::Assistant,
                    content: text.to_owned(),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                },
                finish_reason: FinishReason::Stop,
                usage: None,
            }),
            ..ModelCallRecord::new("fast")
        }
    }

    #[test]
    fn records_and_answer_bytes_are_bounded_and_tokens_counted_in_full() {
        let mut log = ModelLog::default();
        let big = "x".repeat(MAX_RECORDED_ANSWER_BYTES / 2 + 1);
        log.push(answered(&big, 10));
        log.push(answered(&big, 10));
        assert!(log.records[0].response.is_some());
        assert!(
            log.records[1].response.is_none(),
            "past the byte bound the answer is not kept"
        );
        for _ in 0..MAX_MODEL_RECORDS {
            log.push(answered("ok", 1));
        }
        assert_eq!(log.records.len(), MAX_MODEL_RECORDS);
        assert_eq!(log.dropped, 2);
        assert_eq!(log.charged, 20 + MAX_MODEL_RECORDS as u64);
    }
}
