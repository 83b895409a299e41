//! Benchmarks of the host's mediation, read as ratios within one run: a model call through the gateway against the same HTTP request made directly, and an agent's outbound request through corral's hook against a direct request.
//!
//! Run with `cargo bench -p corral --bench outbound` (unset `RUST_BACKTRACE`
//! first). Both servers are axum on loopback, answering at once.
//!
//! - `model/direct`: the chat-completions POST sent with ureq on the
//!   blocking pool, as the gateway's provider sends it.
//! - `model/gateway`: `Gateway::complete` for the same request: grant
//!   check, token reservation in a pool, rate limits, the same POST,
//!   settlement, the call record.
//! - `http/direct`: a GET of a small page with ureq on the blocking pool.
//! - `http/agent_0` and `http/agent_1`: the `fetch` agent called with no
//!   request and with one GET of that page; their difference is what one
//!   request through the hook (grant match, resolve-and-check, connect,
//!   counted bodies, record) costs a guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::http::HttpGrant;
use corral::model::{Gateway, MemoryPool, Message, ModelConfig, ModelRequest, Role, TokenPool};
use corral::{Budget, Grants, HandoffPacket, Runtime, RuntimeConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

#[path = "../tests/support.rs"]
mod support;

const ANSWER: &str = r#"{"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}], "usage": {"prompt_tokens": 12, "completion_tokens": 1}}"#;

/// Serves `/v1/chat/completions` and `/page` on loopback; the port.
fn servers(tokio: &tokio::runtime::Runtime) -> u16 {
    tokio.block_on(async {
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        ANSWER,
                    )
                }),
            )
            .route("/page", axum::routing::get(|| async { "a small page" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    })
}

fn outbound(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = servers(&tokio);
    let base = format!("http://127.0.0.1:{port}");
    let config: ModelConfig = toml::from_str(&format!(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"{base}/v1\"\n[models.fast]\nprovider = \"p\"\nmodel = \"m\"\n"
    ))
    .unwrap();
    let gateway = Arc::new(Gateway::new(&config).unwrap());
    let request = ModelRequest {
        model: "fast".into(),
        messages: vec![Message {
            role: Role::User,
            content: "hello".into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }],
        max_tokens: 16,
        temperature: None,
        stop: Vec::new(),
        tools: Vec::new(),
        response_schema: None,
    };
    let agent = ureq::Agent::new_with_defaults();
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16})
            .to_string();

    let mut g = c.benchmark_group("model");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("direct", |b| {
        b.iter(|| {
            let (agent, body, url) = (
                agent.clone(),
                body.clone(),
                format!("{base}/v1/chat/completions"),
            );
            let _guard = tokio.enter();
            tokio
                .block_on(tokio::task::spawn_blocking(move || {
                    let mut r = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body.as_bytes())
                        .unwrap();
                    let _: serde_json::Value = r.body_mut().read_json().unwrap();
                }))
                .unwrap()
        })
    });
    g.bench_function("gateway", |b| {
        let granted = vec!["fast".to_string()];
        b.iter(|| {
            let pool = MemoryPool::new("bench", "budget.tokens", u64::MAX / 2);
            let pools: [&dyn TokenPool; 1] = [&pool];
            let deadline = Instant::now() + Duration::from_secs(10);
            let (r, _) = tokio.block_on(gateway.complete(&request, &granted, &pools, deadline));
            r.unwrap();
        })
    });
    g.finish();

    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache")),
        ..Default::default()
    })
    .unwrap();
    let fetch = tokio.block_on(rt.load(support::agents::FETCH)).unwrap();
    let grants = Grants {
        http: vec![HttpGrant::parse(&base).unwrap()],
        ..Grants::default()
    };
    let budget = Budget::default();
    let none = HandoffPacket::new("b", "b", json!({"requests": []}));
    let one = HandoffPacket::new(
        "b",
        "b",
        json!({"requests": [{"url": format!("{base}/page")}]}),
    );
    let mut g = c.benchmark_group("http");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("direct", |b| {
        b.iter(|| {
            let (agent, url) = (agent.clone(), format!("{base}/page"));
            let _guard = tokio.enter();
            tokio
                .block_on(tokio::task::spawn_blocking(move || {
                    agent
                        .get(&url)
                        .call()
                        .unwrap()
                        .body_mut()
                        .read_to_string()
                        .unwrap()
                }))
                .unwrap()
        })
    });
    g.bench_function("agent_0", |b| {
        b.iter(|| {
            tokio
                .block_on(rt.call(&fetch, &none, &budget, &grants))
                .result
                .unwrap()
        })
    });
    g.bench_function("agent_1", |b| {
        b.iter(|| {
            let out = tokio.block_on(rt.call(&fetch, &one, &budget, &grants));
            assert_eq!(out.result.unwrap().payload["results"][0]["status"], 200);
        })
    });
    g.finish();
}

criterion_group!(benches, outbound);
criterion_main!(benches);
