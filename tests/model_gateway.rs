//! The model gateway against a mock OpenAI-compatible server on loopback: the key goes to the provider, the alias maps to its model, tokens are reserved before and settled after, budgets refuse before sending, 429s and 5xx are retried inside the deadline, a hanging provider is cut off, and the scripted provider replays a file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use corral::model::{
    FinishReason, Gateway, MemoryPool, Message, ModelConfig, ModelError, ModelRequest, Role,
    TokenPool, Tool,
};
use serde_json::{Value, json};

/// What the mock answers next: status, body, delay.
type Reply = (u16, Value, Duration);

#[derive(Clone, Default)]
struct Mock {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    /// (authorization header, body) of each request.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Mock {
    fn then(&self, status: u16, body: Value) -> &Self {
        self.replies
            .lock()
            .unwrap()
            .push_back((status, body, Duration::ZERO));
        self
    }

    fn hang(&self) {
        self.replies
            .lock()
            .unwrap()
            .push_back((200, ok("late", None), Duration::from_secs(30)));
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

fn ok(content: &str, usage: Option<(u64, u64)>) -> Value {
    let mut v = json!({
        "id": "chatcmpl-1",
        "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }]
    });
    if let Some((p, c)) = usage {
        v["usage"] = json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c });
    }
    v
}

async fn completions(
    axum::extract::State(m): axum::extract::State<Mock>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, HeaderMap, axum::Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    m.seen.lock().unwrap().push((auth, body));
    let (status, reply, delay) = m.replies.lock().unwrap().pop_front().unwrap_or((
        500,
        json!({"error": {"message": "no reply queued"}}),
        Duration::ZERO,
    ));
    tokio::time::sleep(delay).await;
    let mut h = HeaderMap::new();
    if status == 429 {
        h.insert("retry-after", "0".parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), h, axum::Json(reply))
}

/// Starts the mock on loopback; returns it and its base URL (`…/v1`).
async fn mock() -> (Mock, String) {
    let m = Mock::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, base)
}

const KEY_VAR: &str = "CORRAL_TEST_MODEL_KEY";

fn gateway(base: &str, extra: &str) -> Gateway {
    // SAFETY: tests in this binary set only this variable, to one value.
    unsafe { std::env::set_var(KEY_VAR, "sk-test-secret") };
    let config: ModelConfig = toml::from_str(&format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{base}\"\napi_key_env = \"{KEY_VAR}\"\n\n[models.fast]\nprovider = \"mock\"\nmodel = \"gpt-test-mini\"\n{extra}"
    ))
    .unwrap();
    Gateway::new(&config).unwrap()
}

fn request(text: &str, max_tokens: u32) -> ModelRequest {
    ModelRequest {
        model: "fast".into(),
        messages: vec![
            Message::new(Role::System, "Answer briefly."),
            Message::new(Role::User, text),
        ],
        max_tokens,
        temperature: Some(0.0),
        stop: vec![],
        tools: vec![],
        response_schema: None,
    }
}

fn granted() -> Vec<String> {
    vec!["fast".into()]
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test]
async fn the_alias_maps_to_the_providers_model_and_the_key_reaches_only_the_provider() {
    let (m, base) = mock().await;
    m.then(200, ok("four", Some((21, 2))));
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let mut req = request("What is 2+2?", 50);
    req.tools = vec![Tool {
        name: "calc".into(),
        description: "adds".into(),
        parameters: json!({"type": "object"}),
    }];
    req.response_schema = Some(json!({"type": "object"}));
    let (r, rec) = g.complete(&req, &granted(), &[&call], soon()).await;
    let r = r.unwrap();
    assert_eq!(r.message.content, "four");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    let seen = m.seen();
    assert_eq!(seen[0].0, "Bearer sk-test-secret");
    let body = &seen[0].1;
    assert_eq!(
        body["model"], "gpt-test-mini",
        "the alias never leaves the host"
    );
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["tools"][0]["function"]["name"], "calc");
    assert_eq!(body["response_format"]["type"], "json_schema");
    // Settled to the reported usage.
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens, rec.charged_tokens),
        (21, 2, 23)
    );
    assert_eq!(call.used(), 23);
    assert!(rec.reserved_tokens >= 50, "{rec:?}");
    assert_eq!((rec.outcome.as_str(), rec.attempts), ("ok", 1));
    // The record an agent's receipt gets carries no key.
    assert!(!serde_json::to_string(&rec).unwrap().contains("sk-test"));
    assert!(!format!("{g:?}").contains("sk-test"));
}

#[tokio::test]
async fn an_alias_not_granted_or_not_configured_is_refused_before_sending() {
    let (m, base) = mock().await;
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let (r, rec) = g.complete(&request("hi", 10), &[], &[&call], soon()).await;
    let e = r.unwrap_err();
    assert!(matches!(e, ModelError::NotGranted { .. }), "{e}");
    assert!(e.to_string().contains("--allow-model fast"), "{e}");
    assert_eq!(rec.outcome, "not_granted");
    let mut other = request("hi", 10);
    other.model = "huge".into();
    let (r, _) = g.complete(&other, &["huge".into()], &[&call], soon()).await;
    assert!(r.unwrap_err().to_string().contains("configured: fast"));
    assert!(m.seen().is_empty());
    assert_eq!(call.used(), 0);
}

#[tokio::test]
async fn each_budget_refuses_a_request_that_may_not_fit_before_it_is_sent() {
    let (m, base) = mock().await;
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let step = MemoryPool::new("step token budget", "steps[0].budget.tokens", 100);
    let run = MemoryPool::new("workflow token budget", "budget.tokens", 1_000_000);
    let pools: [&dyn TokenPool; 3] = [&call, &step, &run];
    let (r, rec) = g
        .complete(&request("hi", 500), &granted(), &pools, soon())
        .await;
    match r.unwrap_err() {
        ModelError::TokenBudgetExhausted {
            budget,
            field,
            limit,
            needed,
            ..
        } => {
            assert_eq!(
                (budget.as_str(), field.as_str(), limit),
                ("step token budget", "steps[0].budget.tokens", 100)
            );
            assert!(needed > 500);
        }
        other => panic!("{other}"),
    }
    assert_eq!(rec.outcome, "token_budget_exhausted");
    assert!(m.seen().is_empty(), "nothing was sent");
    // The call's reservation was given back when the step's failed.
    assert_eq!((call.used(), step.used(), run.used()), (0, 0, 0));
}

#[tokio::test]
async fn a_provider_that_reports_no_usage_is_charged_the_reservation() {
    let (m, base) = mock().await;
    m.then(200, ok("fine", None));
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let (r, rec) = g
        .complete(&request("hi", 40), &granted(), &[&call], soon())
        .await;
    assert!(r.unwrap().usage.is_none());
    assert_eq!(rec.charged_tokens, rec.reserved_tokens);
    assert_eq!(call.used(), rec.reserved_tokens);
}

#[tokio::test]
async fn rate_limits_and_outages_are_retried_and_bad_requests_are_not() {
    let (m, base) = mock().await;
    m.then(429, json!({"error": {"message": "slow down"}}))
        .then(503, json!({"error": {"message": "overloaded"}}))
        .then(200, ok("made it", Some((5, 2))));
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let (r, rec) = g
        .complete(&request("hi", 10), &granted(), &[&call], soon())
        .await;
    assert_eq!(r.unwrap().message.content, "made it");
    assert_eq!(rec.attempts, 3);

    m.then(400, json!({"error": {"message": "unknown parameter: foo"}}));
    let (r, rec) = g
        .complete(&request("hi", 10), &granted(), &[&call], soon())
        .await;
    let e = r.unwrap_err();
    assert!(matches!(e, ModelError::BadRequest { .. }), "{e}");
    assert!(e.to_string().contains("unknown parameter: foo"), "{e}");
    assert!(!e.is_transient());
    assert_eq!(rec.attempts, 1);
    // An unanswered request gives its tokens back.
    assert_eq!(call.used(), 7);

    // Outages that outlast the attempts end transient, for the step's retries.
    for _ in 0..4 {
        m.then(500, json!({"error": "down"}));
    }
    let (r, rec) = g
        .complete(&request("hi", 10), &granted(), &[&call], soon())
        .await;
    let e = r.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(rec.attempts, 4);
}

#[tokio::test]
async fn a_hanging_provider_is_cut_off_at_the_deadline() {
    let (m, base) = mock().await;
    m.hang();
    let g = gateway(&base, "");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(300);
    let (r, rec) = g
        .complete(&request("hi", 10), &granted(), &[&call], deadline)
        .await;
    assert!(matches!(r.unwrap_err(), ModelError::Timeout { .. }));
    assert_eq!(rec.outcome, "timeout");
    // Returned at the deadline, not when the provider would have answered.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(call.used(), 0);
}

#[tokio::test]
async fn an_aliases_request_rate_holds_inside_the_deadline() {
    let (m, base) = mock().await;
    m.then(200, ok("one", Some((1, 1))));
    let g = gateway(&base, "requests_per_minute = 1\n");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let (r, _) = g
        .complete(&request("hi", 10), &granted(), &[&call], soon())
        .await;
    assert!(r.is_ok());
    let deadline = Instant::now() + Duration::from_secs(2);
    let (r, _) = g
        .complete(&request("hi", 10), &granted(), &[&call], deadline)
        .await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("requests_per_minute"), "{e}");
    assert!(e.is_transient());
    assert_eq!(m.seen().len(), 1, "the second was never sent");
}

#[tokio::test]
async fn the_scripted_provider_answers_by_match_then_in_order_through_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        json!({"responses": [
            {"when": {"contains": "weather"}, "content": "sunny"},
            {"content": "first"},
            {"content": "", "tool_calls": [{"id": "c1", "name": "calc", "arguments": "{\"a\":1}"}]},
            {"content": "slow", "latency_ms": 5000}
        ]})
        .to_string(),
    )
    .unwrap();
    let config: ModelConfig = toml::from_str(&format!(
        "[providers.offline]\nkind = \"scripted\"\nfile = {:?}\n[models.fast]\nprovider = \"offline\"\nmodel = \"script\"\n",
        script.display().to_string()
    ))
    .unwrap();
    let g = Gateway::new(&config).unwrap();
    let call = MemoryPool::new("call token budget", "budget.tokens", 100_000);
    let ask = |text: &str| request(text, 20);
    let (r, _) = g
        .complete(&ask("the weather?"), &granted(), &[&call], soon())
        .await;
    assert_eq!(r.unwrap().message.content, "sunny");
    let (r, _) = g
        .complete(&ask("anything"), &granted(), &[&call], soon())
        .await;
    assert_eq!(r.unwrap().message.content, "first");
    let (r, _) = g.complete(&ask("more"), &granted(), &[&call], soon()).await;
    let r = r.unwrap();
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.message.tool_calls[0].name, "calc");
    // The weather entry matches again; usage is estimated, so tokens count.
    let (_, rec) = g
        .complete(&ask("weather again"), &granted(), &[&call], soon())
        .await;
    assert!(rec.charged_tokens > 0);
    let deadline = Instant::now() + Duration::from_millis(200);
    let (r, _) = g.complete(&ask("x"), &granted(), &[&call], deadline).await;
    assert!(matches!(r.unwrap_err(), ModelError::Timeout { .. }));
    let (r, _) = g.complete(&ask("y"), &granted(), &[&call], soon()).await;
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("no response for this request")
    );
}

#[tokio::test]
async fn a_repeated_deterministic_request_is_answered_from_the_cache() {
    let (m, base) = mock().await;
    m.then(200, ok("four", Some((21, 2))));
    m.then(200, ok("four again", Some((21, 2))));
    m.then(200, ok("warm", Some((21, 2))));
    let g = gateway(&base, "\n[cache]\nentries = 8\nttl = \"10m\"\n");
    let call = MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let mut req = request("What is 2+2?", 50);
    req.temperature = Some(0.0);
    let (first, rec) = g.complete(&req, &granted(), &[&call], soon()).await;
    assert_eq!(
        (
            first.unwrap().message.content.as_str(),
            rec.outcome.as_str()
        ),
        ("four", "ok")
    );
    // The same request: answered from memory, no provider call, no tokens.
    let (again, rec) = g.complete(&req, &granted(), &[&call], soon()).await;
    assert_eq!(again.unwrap().message.content, "four");
    assert_eq!(
        (rec.outcome.as_str(), rec.charged_tokens, rec.attempts),
        ("cached", 0, 0)
    );
    assert!(rec.cached);
    assert_eq!(m.seen().len(), 1);
    assert_eq!(call.used(), 23);
    // Another prompt, or a request that is not deterministic, is sent.
    let (other, _) = g
        .complete(&request("What is 3+3?", 50), &granted(), &[&call], soon())
        .await;
    assert_eq!(other.unwrap().message.content, "four again");
    req.temperature = Some(0.7);
    let (warm, _) = g.complete(&req, &granted(), &[&call], soon()).await;
    assert_eq!(warm.unwrap().message.content, "warm");
    assert_eq!(m.seen().len(), 3);
    // The cache never answers an alias the caller is not granted.
    req.temperature = Some(0.0);
    let (refused, _) = g.complete(&req, &[], &[&call], soon()).await;
    assert!(matches!(refused, Err(ModelError::NotGranted { .. })));
}

#[tokio::test]
async fn a_replay_answers_recorded_requests_without_the_provider_and_refuses_others() {
    let (m, base) = mock().await;
    m.then(200, ok("four", Some((21, 2))));
    m.then(200, ok("paris", Some((30, 1))));
    let g = gateway(&base, "");
    let pool = || MemoryPool::new("call token budget", "budget.tokens", 10_000);
    let mut recorded = Vec::new();
    for q in ["What is 2+2?", "Capital of France?"] {
        let (r, rec) = g
            .complete(&request(q, 50), &granted(), &[&pool()], soon())
            .await;
        assert!(r.is_ok());
        assert!(rec.request.starts_with("sha256:") && rec.response.is_some());
        // What the journal keeps is what a replay reads.
        let text = serde_json::to_string(&rec).unwrap();
        recorded.push(serde_json::from_str(&text).unwrap());
    }
    assert_eq!(m.seen().len(), 2);

    // Asked in another order, each gets its own answer, charged as before,
    // and the provider hears nothing.
    let replay = Gateway::replay(recorded);
    assert_eq!(replay.replay_left(), 2);
    let call = pool();
    let (r, rec) = replay
        .complete(
            &request("Capital of France?", 50),
            &granted(),
            &[&call],
            soon(),
        )
        .await;
    assert_eq!(r.unwrap().message.content, "paris");
    assert_eq!(
        (rec.outcome, rec.model.as_str(), rec.charged_tokens),
        (corral::model::ModelOutcome::Replayed, "gpt-test-mini", 31)
    );
    assert_eq!(call.used(), 31);
    let (r, _) = replay
        .complete(&request("What is 2+2?", 50), &granted(), &[&pool()], soon())
        .await;
    assert_eq!(r.unwrap().message.content, "four");
    assert_eq!(m.seen().len(), 2, "no request reached the provider");

    // A request the run never made, or one made more often than recorded,
    // fails as not recorded; grants and budgets still hold.
    for q in ["What is 3+3?", "What is 2+2?"] {
        let (r, rec) = replay
            .complete(&request(q, 50), &granted(), &[&pool()], soon())
            .await;
        let e = r.unwrap_err();
        assert!(matches!(e, ModelError::NotRecorded { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("no unused answer to this exact request"),
            "{e}"
        );
        assert_eq!(rec.outcome, "not_recorded");
    }
    let mut other = request("What is 2+2?", 50);
    other.temperature = Some(0.5);
    let (r, _) = replay.complete(&other, &[], &[&pool()], soon()).await;
    assert!(matches!(r, Err(ModelError::NotGranted { .. })));
    assert_eq!(replay.replay_left(), 0);
}
