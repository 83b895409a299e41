//! An OpenAI-compatible provider: `POST {base_url}/chat/completions` with the key in a bearer header, on the blocking pool, cut off at the call's deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    FinishReason, Message, ModelRequest, ModelResponse, Provider, ProviderError,
    ProviderErrorKind as K, Role, ToolCall, Usage,
};

/// The largest answer read from a provider.
const MAX_ANSWER: u64 = 16 << 20;

/// An API key; never printed.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

#[derive(Clone)]
pub struct OpenAi {
    endpoint: String,
    key: Option<ApiKey>,
    agent: ureq::Agent,
}

impl OpenAi {
    pub fn new(base_url: &str, key: Option<ApiKey>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            key,
            agent,
        }
    }

    fn send(&self, body: &Value, timeout: Duration) -> Result<Value, ProviderError> {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {}", k.0));
        }
        let mut res = req.send_json(body).map_err(|e| match e {
            ureq::Error::Timeout(_) => {
                ProviderError::new(K::Timeout, "the provider did not answer in time")
            }
            other => ProviderError::new(
                K::Unavailable,
                format!("cannot reach the provider: {other}"),
            ),
        })?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let text = res
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => {
                    ProviderError::new(K::Timeout, "the provider's answer did not finish in time")
                }
                other => ProviderError::new(
                    K::Unavailable,
                    format!("cannot read the provider's answer: {other}"),
                ),
            })?;
        let detail = || provider_message(&text).unwrap_or_else(|| format!("HTTP {status}"));
        let kind = match status {
            200..=299 => {
                return serde_json::from_str(&text).map_err(|e| {
                    ProviderError::new(K::Malformed, format!("the answer is not JSON: {e}"))
                });
            }
            429 => K::RateLimited,
            408 | 500..=599 => K::Unavailable,
            _ => K::BadRequest,
        };
        Err(ProviderError {
            kind,
            message: format!("HTTP {status}: {}", detail()),
            retry_after,
        })
    }
}

/// `error.message` of an OpenAI-style error body, shortened.
fn provider_message(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let m = v["error"]["message"].as_str().or(v["error"].as_str())?;
    Some(m.chars().take(500).collect())
}

impl Provider for OpenAi {
    fn complete<'a>(
        &'a self,
        model: &'a str,
        request: &'a ModelRequest,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Result<ModelResponse, ProviderError>> + Send + 'a>> {
        Box::pin(async move {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                return Err(ProviderError::new(
                    K::Timeout,
                    "no time left for the request",
                ));
            }
            let body = request_body(model, request);
            let me = self.clone();
            let answer = tokio::task::spawn_blocking(move || me.send(&body, timeout))
                .await
                .map_err(|e| {
                    ProviderError::new(K::Unavailable, format!("the request task failed: {e}"))
                })??;
            parse_answer(&answer)
        })
    }
}

/// The OpenAI chat-completions body for `request`, naming `model`.
pub fn request_body(model: &str, r: &ModelRequest) -> Value {
    let messages: Vec<Value> = r
        .messages
        .iter()
        .map(|m| {
            let mut v = json!({ "role": m.role, "content": m.content });
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
                    .collect();
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = json!(id);
            }
            v
        })
        .collect();
    let mut body = json!({ "model": model, "messages": messages, "max_tokens": r.max_tokens });
    if let Some(t) = r.temperature {
        body["temperature"] = json!(t);
    }
    if !r.stop.is_empty() {
        body["stop"] = json!(r.stop);
    }
    if !r.tools.is_empty() {
        body["tools"] = r
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
            .collect();
    }
    if let Some(s) = &r.response_schema {
        body["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "response", "schema": s, "strict": true } });
    }
    body
}

/// The first choice of an OpenAI chat-completions answer.
pub fn parse_answer(v: &Value) -> Result<ModelResponse, ProviderError> {
    let bad = |what: &str| ProviderError::new(K::Malformed, format!("the answer has no {what}"));
    let choice = v["choices"].get(0).ok_or_else(|| bad("`choices[0]`"))?;
    let m = &choice["message"];
    if !m.is_object() {
        return Err(bad("`choices[0].message`"));
    }
    let tool_calls = m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            name: c["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            arguments: match &c["function"]["arguments"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        })
        .collect();
    let finish_reason = match choice["finish_reason"].as_str() {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
    let usage = v["usage"].as_object().map(|u| Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    });
    Ok(ModelResponse {
        message: Message {
            role: Role::Assistant,
            content: m["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls,
            tool_call_id: None,
        },
        finish_reason,
        usage,
    })
}
