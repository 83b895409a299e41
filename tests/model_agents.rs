//! Agents of contract 0.2.0 that ask the host for completions: the alias is granted or the call refused, the call's token budget refuses before sending, the key reaches only the provider, every model call lands in the receipt; and agents of 0.1.0 run unchanged beside them.

#[path = "support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use corral::model::{Gateway, ModelConfig};
use corral::{Budget, CallError, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use support::agents;

/// A runtime whose gateway has alias `fast` on `provider`.
fn runtime_with(provider: &str) -> Runtime {
    Runtime::new(config_with(provider)).unwrap()
}

/// The runtime configuration of [`runtime_with`]: the shared compile cache,
/// the built agents allowed by path, and the gateway.
fn config_with(provider: &str) -> RuntimeConfig {
    let config: ModelConfig = toml::from_str(&format!(
        "{provider}\n[models.fast]\nprovider = \"p\"\nmodel = \"tiny-model\"\n"
    ))
    .unwrap();
    RuntimeConfig {
        cache_dir: Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache")),
        allowed_paths: vec![support::wasm_agents_dir()],
        models: Some(Arc::new(Gateway::new(&config).unwrap())),
        ..Default::default()
    }
}

fn scripted(dir: &std::path::Path, answer: &str) -> String {
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        json!({"responses": [{"content": answer}]}).to_string(),
    )
    .unwrap();
    format!(
        "[providers.p]\nkind = \"scripted\"\nfile = {:?}\n",
        script.display().to_string()
    )
}

fn grants(models: &[&str]) -> Grants {
    Grants {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Grants::default()
    }
}

fn packet(text: &str) -> HandoffPacket {
    HandoffPacket::new("r", "s", json!({ "text": text, "max_tokens": 64 }))
}

#[tokio::test]
async fn a_0_2_0_agent_gets_a_completion_and_the_receipt_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(&scripted(
        dir.path(),
        r#"{"summary": "Backups slowed the export.", "keywords": ["backup", "export"]}"#,
    ));
    let agent = rt.load(agents::EXTRACT).await.unwrap();
    assert_eq!(agent.contract_version(), "0.2.0");
    let out = rt
        .call(
            &agent,
            &packet("The export failed during backups."),
            &Budget::default(),
            &grants(&["fast"]),
        )
        .await;
    let payload = out.result.unwrap().payload;
    assert_eq!(payload["keywords"], json!(["backup", "export"]));
    let calls = &out.receipt.model_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (
            calls[0].alias.as_str(),
            calls[0].model.as_str(),
            calls[0].outcome.as_str()
        ),
        ("fast", "tiny-model", "ok")
    );
    assert!(calls[0].charged_tokens > 0);
    assert!(
        out.receipt
            .granted
            .iter()
            .any(|c| matches!(c, corral::Capability::Model { alias } if alias == "fast"))
    );
}

#[tokio::test]
async fn an_alias_not_granted_is_refused_before_the_call_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(&scripted(dir.path(), "{}"));
    let agent = rt.load(agents::EXTRACT).await.unwrap();
    let out = rt
        .call(&agent, &packet("x"), &Budget::default(), &Grants::default())
        .await;
    let e = out.result.unwrap_err();
    assert!(matches!(e, CallError::PolicyDenied { .. }), "{e}");
    assert!(e.to_string().contains("--allow-model fast"), "{e}");
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

/// A provider on loopback that records the authorization it gets.
async fn provider() -> (Seen, String) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            axum::routing::post(
                |axum::extract::State(s): axum::extract::State<Seen>, h: HeaderMap| async move {
                    let auth = h
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    s.0.lock().unwrap().push(auth.to_owned());
                    axum::Json(json!({
                        "choices": [{ "finish_reason": "stop", "message": { "role": "assistant",
                            "content": "{\"summary\": \"ok\", \"keywords\": []}" } }],
                        "usage": { "prompt_tokens": 30, "completion_tokens": 9 }
                    }))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, base)
}

#[tokio::test]
async fn the_key_reaches_the_provider_and_never_the_agent_and_budgets_refuse_before_sending() {
    let (seen, base) = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sk-only-the-host-knows\n").unwrap();
    let rt = runtime_with(&format!(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"{base}\"\napi_key_file = {:?}\n",
        key_file.display().to_string()
    ));
    let agent = rt.load(agents::EXTRACT).await.unwrap();
    let out = rt
        .call(
            &agent,
            &packet("hello"),
            &Budget::default(),
            &grants(&["fast"]),
        )
        .await;
    let payload = out.result.unwrap().payload;
    assert_eq!(
        seen.0.lock().unwrap().as_slice(),
        ["Bearer sk-only-the-host-knows"]
    );
    let everything = format!("{payload} {:?} {:?}", out.receipt, out.logs);
    assert!(!everything.contains("sk-only"), "{everything}");
    assert_eq!(out.receipt.model_calls[0].charged_tokens, 39);

    // A call token budget too small for the request: refused in the host,
    // nothing sent, and the agent's error names the budget and the field.
    let tight = Budget {
        tokens: 10,
        ..Budget::default()
    };
    let out = rt
        .call(&agent, &packet("hello"), &tight, &grants(&["fast"]))
        .await;
    let e = out.result.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("call token budget") && text.contains("budget.tokens"),
        "{text}"
    );
    assert_eq!(seen.0.lock().unwrap().len(), 1, "nothing more was sent");
    assert_eq!(out.receipt.model_calls[0].outcome, "token_budget_exhausted");
}

#[tokio::test]
async fn agents_of_contract_0_1_0_run_unchanged_beside_0_2_0() {
    let rt = support::runtime();
    // The hostile fixture is built against the frozen 0.1.0 contract with
    // raw bindings, as an agent from before 0.2.0 was.
    let old = rt.load(agents::HOSTILE).await.unwrap();
    assert_eq!(old.contract_version(), "0.1.0");
    let out = rt
        .call(
            &old,
            &HandoffPacket::new("r", "s", json!({ "action": "ok" })),
            &Budget::default(),
            &Grants::default(),
        )
        .await;
    assert_eq!(out.result.unwrap().payload, json!({ "ok": true }));
    // Every SDK now builds 0.2.0 agents, served by the same host.
    for new in [agents::ECHO, agents::PY_CONTRACT, agents::JS_CONTRACT] {
        let agent = rt.load(new).await.unwrap();
        assert_eq!(agent.contract_version(), "0.2.0", "{new}");
    }
    let inspected = corral::inspect::Inspection::of(&old, rt.engine());
    assert_eq!(inspected.world_version, "0.1.0");
    let _: Value = serde_json::to_value(&inspected).unwrap();
}

/// Runs `yaml` (with `@EXTRACT@` for the agent's path) on `rt`.
async fn run_workflow(rt: Runtime, yaml: &str) -> corral::workflow::report::RunReport {
    run_journaled(rt, yaml, None).await
}

/// [`run_workflow`], journaled in `store` when one is given.
async fn run_journaled(
    rt: Runtime,
    yaml: &str,
    store: Option<Arc<dyn corral::store::Store>>,
) -> corral::workflow::report::RunReport {
    use corral::workflow::run::{RunOptions, resolve_params, run};
    use corral::workflow::{durable::begin, source, validate::validate};
    let text = yaml.replace("@EXTRACT@", agents::EXTRACT);
    let src = source::parse(std::path::Path::new("w.yaml"), &text).unwrap();
    let rt = Arc::new(rt);
    let w = Arc::new(
        validate(&src, &rt)
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    );
    let params = resolve_params(&w, &[]).unwrap();
    let mut opts = RunOptions::new("run", params.clone());
    let journal = store.map(|store| {
        let cancel = tokio_util::sync::CancellationToken::new();
        opts.cancel = cancel.clone();
        begin(store, &w, &params, "run", cancel).unwrap()
    });
    opts.journal = journal.clone();
    let report = run(rt, w, opts).await;
    if let Some(j) = journal {
        j.close().await.unwrap();
    }
    report
}

#[tokio::test]
async fn a_workflow_grants_the_alias_and_its_token_budget_encloses_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let provider = scripted(dir.path(), r#"{"summary": "s", "keywords": ["k"]}"#);
    let ok = "version: 1\nname: m\nagents:\n  extract: { component: '@EXTRACT@', grants: { models: [fast] } }\nsteps:\n  - { id: a, agent: extract, input: { text: hello, max_tokens: 64 } }\n";
    let state = tempfile::tempdir().unwrap();
    let store: Arc<dyn corral::store::Store> = Arc::new(
        corral::store::SqliteStore::open(state.path(), corral::store::Durability::Normal).unwrap(),
    );
    let report = run_journaled(runtime_with(&provider), ok, Some(store.clone())).await;
    assert_eq!(
        report.status,
        corral::workflow::report::RunStatus::Completed,
        "{}",
        report.summary
    );
    // The tokens the step was charged: in its report, the run's total, the
    // summary, and the journal's step row (what `corral show` prints).
    let used = report.step("a").unwrap().tokens_used;
    assert!(used > 0);
    assert_eq!(
        (report.tokens.used, report.tokens.budget),
        (used, 10_000_000)
    );
    assert!(
        report.summary.contains("model tokens"),
        "{}",
        report.summary
    );
    let rows = store.steps("run").unwrap();
    assert_eq!(rows[0].tokens_used, used);
    // `corral show` lists the model call from the journaled receipt.
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["show", "run"])
        .env("CORRAL_STATE_DIR", state.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&format!(
            "model  a                fast (tiny-model): {used} tokens"
        )),
        "{text}"
    );

    // The run's token budget is smaller than one request: the step fails
    // with the budget named, and the request never left the host.
    let tight = ok.replace("name: m\n", "name: m\nbudget: { tokens: 30 }\n");
    let report = run_workflow(runtime_with(&provider), &tight).await;
    let a = report.step("a").unwrap();
    let error = a.error.as_deref().unwrap_or_default();
    assert!(error.contains("workflow token budget"), "{error}");

    // Without the grant, validation names the field to add.
    let ungranted = ok.replace(", grants: { models: [fast] }", "");
    let text = ungranted.replace("@EXTRACT@", agents::EXTRACT);
    let src = corral::workflow::source::parse(std::path::Path::new("w.yaml"), &text).unwrap();
    let rt = runtime_with(&provider);
    let d = corral::workflow::validate::validate(&src, &rt)
        .await
        .unwrap_err();
    assert!(format!("{d:?}").contains("models: [fast]"), "{d:?}");
}

#[tokio::test]
async fn a_steps_token_budget_encloses_all_of_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    // Every answer is charged 1,000 tokens; each request reserves its
    // 600 max_tokens plus the prompt first.
    let rt = || {
        runtime_with(&script(
            dir.path(),
            json!([{ "when": { "contains": "item" },
                     "content": "{\"summary\": \"s\", \"keywords\": [\"k\"]}",
                     "usage": { "prompt_tokens": 500, "completion_tokens": 500 } }]),
        ))
    };
    let yaml = "version: 1\nname: m\nparams:\n  texts: { type: array, default: [item one, item two, item three] }\nagents:\n  extract: { component: '@EXTRACT@', grants: { models: [fast] } }\nsteps:\n  - { id: a, agent: extract, for_each: $params.texts, max_concurrency: 1, input: { text: $item, max_tokens: 600 } }\n";
    let report = run_workflow(rt(), yaml).await;
    assert_eq!(
        report.status,
        corral::workflow::report::RunStatus::Completed,
        "{}",
        report.summary
    );
    assert_eq!(report.step("a").unwrap().tokens_used, 3_000);

    // With room for two items' answers, the third item's request cannot
    // reserve: the step fails naming its budget and the field to raise.
    let limited = yaml.replace("max_concurrency: 1,", "max_concurrency: 1, tokens: 2500,");
    let report = run_workflow(rt(), &limited).await;
    let a = report.step("a").unwrap();
    let error = a.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("step `a` token budget") && error.contains("steps[0].tokens"),
        "{error}"
    );
    assert_eq!(a.tokens_used, 2_000, "the refused request was never sent");
}

#[test]
fn a_recorded_step_is_replayed_from_the_journal_without_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    // Each item's request gets its own answer, matched by its text: the
    // items' calls may start in either order, even one at a time.
    let provider = script(
        dir.path(),
        json!([
            { "when": { "contains": "item one" }, "content": "{\"summary\": \"first\", \"keywords\": [\"a\"]}" },
            { "when": { "contains": "item two" }, "content": "{\"summary\": \"second\", \"keywords\": [\"b\"]}" }
        ]),
    );
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!("{provider}\n[models.fast]\nprovider = \"p\"\nmodel = \"tiny-model\"\n"),
    )
    .unwrap();
    let wf = dir.path().join("w.yaml");
    std::fs::write(
        &wf,
        format!("version: 1\nname: m\nparams:\n  texts: {{ type: array, default: [item one, item two] }}\nagents:\n  extract: {{ component: '{}', grants: {{ models: [fast] }} }}\nsteps:\n  - {{ id: a, agent: extract, for_each: $params.texts, max_concurrency: 1, input: {{ text: $item, max_tokens: 64 }} }}\noutputs:\n  all: $steps.a.output\n", agents::EXTRACT),
    )
    .unwrap();
    let corral = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .env("CORRAL_STATE_DIR", dir.path().join("state"))
            .env("CORRAL_ALLOW_PATHS", support::wasm_agents_dir())
            .env_remove("CORRAL_MODELS")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let last = stdout.lines().last().unwrap_or_default().to_owned();
        let report: Value = serde_json::from_str(&last)
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let wf = wf.display().to_string();
    let models = models.display().to_string();
    let (code, first) = corral(&["--models", &models, "run", &wf, "--run-id", "r", "--json"]);
    assert_eq!(code, Some(0), "{first}");
    let outputs = first["data"]["outputs"].clone();
    assert_eq!(outputs["all"][1]["summary"], "second", "{first}");

    // The provider is gone: the replay answers each item's request with
    // the answer recorded for it, so the step's output is the same.
    std::fs::remove_file(dir.path().join("script.json")).unwrap();
    let (code, again) = corral(&["retry", "r", "--step", "a", "--replay-models", "--json"]);
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["data"]["outputs"], outputs);
    let store = corral::store::SqliteStore::open(
        &dir.path().join("state"),
        corral::store::Durability::Normal,
    )
    .unwrap();
    use corral::store::Store;
    let outcomes: Vec<String> = store
        .journal("r", 0, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == "call_finished")
        .flat_map(|e| {
            e.data["receipt"]["model_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|m| m["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "replayed", "replayed"]);

    // Without the replay there is no provider: the step fails, naming why.
    let (code, failed) = corral(&["retry", "r", "--step", "a", "--json"]);
    assert_eq!(code, Some(1), "{failed}");
    assert!(failed.to_string().contains("no model gateway"), "{failed}");
}

/// A scripted provider from `responses` (the script's entries).
fn script(dir: &std::path::Path, responses: Value) -> String {
    let file = dir.join("script.json");
    std::fs::write(&file, json!({ "responses": responses }).to_string()).unwrap();
    format!(
        "[providers.p]\nkind = \"scripted\"\nfile = {:?}\n",
        file.display().to_string()
    )
}

#[tokio::test]
async fn a_python_agent_loops_through_tool_calls_until_the_model_answers() {
    let dir = tempfile::tempdir().unwrap();
    // The first request is answered with a tool call; the second only
    // matches once the tool's result is among the messages.
    let rt = runtime_with(&script(
        dir.path(),
        json!([
            { "when": { "contains": "portable, sandboxed binary format" },
              "content": "WebAssembly is a portable sandboxed format." },
            { "content": "", "finish_reason": "tool_calls",
              "tool_calls": [{ "id": "c1", "name": "lookup", "arguments": "{\"term\": \"wasm\"}" }] }
        ]),
    ));
    let agent = rt.load(agents::PY_RESEARCHER).await.unwrap();
    assert_eq!(agent.contract_version(), "0.2.0");
    let out = rt
        .call(
            &agent,
            &HandoffPacket::new("r", "s", json!({ "question": "What is wasm?" })),
            &Budget {
                timeout: Duration::from_secs(30),
                ..Budget::default()
            },
            &grants(&["fast"]),
        )
        .await;
    let payload = out.result.unwrap().payload;
    assert_eq!(
        payload,
        json!({ "answer": "WebAssembly is a portable sandboxed format.", "rounds": 2, "tool_calls": ["lookup"] })
    );
    assert_eq!(out.receipt.model_calls.len(), 2);

    // The loop is bounded by the token budget: a budget too small for a
    // second round ends the call with the agent's permanent error naming it.
    let out = rt
        .call(
            &agent,
            &HandoffPacket::new("r", "s", json!({ "question": "What is wasm?" })),
            &Budget {
                timeout: Duration::from_secs(30),
                tokens: 300,
                ..Budget::default()
            },
            &grants(&["fast"]),
        )
        .await;
    let e = out.result.unwrap_err();
    assert!(e.to_string().contains("token_budget_exhausted"), "{e}");
    assert_eq!(out.receipt.model_calls.len(), 1);
}

#[tokio::test]
async fn a_javascript_agent_fetches_a_granted_url_and_asks_the_model_about_it() {
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(|| async { "Corral runs agents in a sandbox." }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(&script(
        dir.path(),
        json!([{ "when": { "contains": "Corral runs agents" }, "content": "Corral sandboxes agents." }]),
    ));
    let agent = rt.load(agents::JS_BRIEFING).await.unwrap();
    assert_eq!(agent.contract_version(), "0.2.0");
    let url = format!("http://127.0.0.1:{port}/page");
    let budget = Budget {
        timeout: Duration::from_secs(30),
        ..Budget::default()
    };
    let granted = |origin: String| Grants {
        http: vec![corral::http::HttpGrant::parse(&origin).unwrap()],
        ..grants(&["fast"])
    };
    let out = rt
        .call(
            &agent,
            &HandoffPacket::new("r", "s", json!({ "url": url })),
            &budget,
            &granted(format!("http://127.0.0.1:{port}")),
        )
        .await;
    let payload = out.result.unwrap().payload;
    assert_eq!(payload["briefing"], "Corral sandboxes agents.");
    assert_eq!(payload["status"], 200);
    assert_eq!(out.receipt.http_calls.len(), 1);
    assert_eq!(out.receipt.model_calls.len(), 1);

    // Granted elsewhere: the fetch is refused and the host names the grant.
    let out = rt
        .call(
            &agent,
            &HandoffPacket::new("r", "s", json!({ "url": url })),
            &budget,
            &granted("https://example.com".into()),
        )
        .await;
    let e = out.result.unwrap_err();
    assert!(matches!(e, CallError::PolicyDenied { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("--allow-http http://127.0.0.1:{port}")),
        "{e}"
    );
    assert!(out.receipt.model_calls.is_empty());
}

/// A call waiting on a model gives its place among the running calls up:
/// with one place only, another call runs to completion meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_on_the_model_does_not_hold_a_running_place() {
    let dir = tempfile::tempdir().unwrap();
    let provider = script(
        dir.path(),
        json!([{ "when": { "contains": "" }, "latency_ms": 60000,
                 "content": "{\"summary\": \"s\", \"keywords\": []}" }]),
    );
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            engine: corral::EngineConfig {
                max_running: 1,
                ..Default::default()
            },
            ..config_with(&provider)
        })
        .unwrap(),
    );
    let extract = rt.load(agents::EXTRACT).await.unwrap();
    let echo = rt.load(agents::ECHO).await.unwrap();
    let waiting = {
        let (rt, extract) = (rt.clone(), extract.clone());
        tokio::spawn(async move {
            rt.call(
                &extract,
                &packet("x"),
                &Budget::default(),
                &grants(&["fast"]),
            )
            .await
        })
    };
    // Let the first call reach its model request; it then waits a minute,
    // longer than the second call's deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A deadline well inside the first call's wait: held up by it, the
    // second call would end `Overloaded`.
    let short = Budget {
        timeout: Duration::from_secs(3),
        ..Budget::default()
    };
    let out = rt
        .call(
            &echo,
            &HandoffPacket::new("r", "s", json!({ "text": "hi", "tags": [] })),
            &short,
            &Grants::default(),
        )
        .await;
    assert!(
        out.result.is_ok(),
        "the second call could not run while the first waited on the model: {:?}",
        out.result
    );
    if waiting.is_finished() {
        let first = waiting.await.unwrap();
        panic!(
            "the first call ended first: {:?} {:?}",
            first.result, first.receipt.model_calls
        );
    }
    waiting.abort();
}
