//! A provider that replays responses from a file, so tests, the demo and offline users run model-using agents with no network, through the same gateway path as a real provider.
//!
//! The file is JSON: `{"responses": [ ... ]}`. An entry with `when` answers
//! every request whose messages contain `when.contains` (and, if given,
//! whose provider model is `when.model`); the first such entry wins. The
//! entries without `when` answer the other requests in order, one each;
//! once they are used up, a request is refused. An entry gives the answer's
//! `content`, optional `tool_calls`, `finish_reason` (default `stop`),
//! `usage` (default: estimated from the request and the content), and
//! `latency_ms` to wait before answering (the wait is cut off at the
//! call's deadline).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{
    FinishReason, Message, ModelRequest, ModelResponse, Provider, ProviderError,
    ProviderErrorKind as K, Role, ToolCall, Usage, estimate_prompt_tokens,
};

/// The largest script read.
const MAX_SCRIPT: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    responses: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    when: Option<When>,
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    latency_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    contains: String,
    #[serde(default)]
    model: Option<String>,
}

/// Responses from a script.
pub struct Scripted {
    entries: Vec<Entry>,
    /// The next unconditional entry.
    next: AtomicUsize,
}

impl Scripted {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_SCRIPT {
            return Err(format!(
                "{}: {} bytes; a script may have at most {MAX_SCRIPT}",
                path.display(),
                meta.len()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let script: Script = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self {
            entries: script.responses,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self, model: &str, req: &ModelRequest) -> Option<&Entry> {
        let matches = |w: &When| {
            w.model.as_deref().is_none_or(|m| m == model)
                && req.messages.iter().any(|m| m.content.contains(&w.contains))
        };
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.when.as_ref().is_some_and(matches))
        {
            return Some(e);
        }
        let n = self.next.fetch_add(1, Ordering::AcqRel);
        self.entries.iter().filter(|e| e.when.is_none()).nth(n)
    }
}

impl Provider for Scripted {
    fn complete<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Result<ModelResponse, ProviderError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(e) = self.pick(model, request) else {
                return Err(ProviderError::new(
                    K::BadRequest,
                    "the script has no response for this request (no `when` matches, and the ones in order are used up)",
                ));
            };
            let wait = Duration::from_millis(e.latency_ms);
            if Instant::now() + wait > deadline {
                tokio::time::sleep_until(deadline.into()).await;
                return Err(ProviderError::new(
                    K::Timeout,
                    "the scripted latency outlasts the deadline",
                ));
            }
            tokio::time::sleep(wait).await;
            let usage = e.usage.unwrap_or(Usage {
                prompt_tokens: estimate_prompt_tokens(request),
                completion_tokens: (e.content.len() as u64).div_ceil(4),
            });
            Ok(ModelResponse {
                message: Message {
                    role: Role::Assistant,
                    content: e.content.clone(),
                    tool_calls: e.tool_calls.clone(),
                    tool_call_id: None,
                },
                finish_reason: e.finish_reason.unwrap_or(if e.tool_calls.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                }),
                usage: Some(usage),
            })
        })
    }
}
