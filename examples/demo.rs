//! The demo: a workflow of real agents (`examples/triage.yaml`) validated, planned and run, then a hostile agent contained.
//!
//! Run it with `cargo run --release -p corral --example demo`. It builds the
//! agents in `plugins/` for `wasm32-wasip2` (installing the target if needed),
//! then:
//!
//! 1. validates `examples/triage.yaml`: every reference, every edge's types
//!    against the agents' schemas, the CEL conditions, the components;
//! 2. prints the plan: the waves of steps that can run in parallel and the
//!    worst-case fuel against the workflow budget;
//! 3. runs it, journaled in the embedded SQLite store (`.corral/` in the
//!    working directory): a support ticket is classified, routed to the
//!    summarizer its label selects, merged and reviewed by a critic, each step
//!    in a fresh sandbox with its own budget, each handoff checked against the
//!    schemas;
//! 4. runs `examples/approval.yaml` until it waits for a human, approves it
//!    the way `corral approve` does, and resumes it from the store: the steps
//!    committed before the pause are reused, not rerun;
//! 5. runs `examples/research.yaml` offline: agents in three languages ask
//!    the host's model gateway (`examples/models.toml`, the scripted
//!    provider replaying `examples/responses.json`) and fetch a page the
//!    demo serves on 127.0.0.1:18080, only because the workflow grants it;
//! 6. runs the `hostile` fixture's infinite loop, memory bomb and panic to
//!    show the typed errors a breach produces.
//!
//! The same workflows run from the command line with
//! `corral --allow-path target/wasm-agents run examples/triage.yaml` (the
//! agents are built outside `examples/`); `corral runs` lists the demo's runs.

use std::path::Path;
use std::sync::Arc;

use corral::store::{Durability, SqliteStore, Store};
use corral::workflow::durable::{ResumeRequest, begin, reopen};
use corral::workflow::events::{Event, EventSink};
use corral::workflow::plan::plan;
use corral::workflow::report::RunStatus;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Budget, Grants, HandoffPacket, Runtime, RuntimeConfig, human};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The example workflows name components under target/; make sure they are built.
    let _ = corral_plugins::ALL;
    // The examples name components under target/wasm-agents, outside
    // examples/: the operator allows that directory, as `--allow-path` does.
    let built = Path::new(corral_plugins::ECHO).ancestors().nth(3).unwrap();
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        allowed_paths: vec![built.to_path_buf()],
        ..RuntimeConfig::with_default_cache()
    })?);
    let file = examples_dir().join("triage.yaml");

    println!("corral demo\n\n1. validate {}", file.display());
    let src = source::load(&file).map_err(|d| anyhow::anyhow!("{d:#?}"))?;
    let workflow = match validate(&src, &runtime).await {
        Ok(w) => Arc::new(w),
        Err(diags) => {
            for d in diags {
                eprintln!("error: {d}");
            }
            anyhow::bail!("the demo workflow is invalid");
        }
    };
    let p = plan(&workflow);
    println!(
        "   valid: {} steps, {} agents, every edge type-checked",
        workflow.steps.len(),
        workflow.agents.len()
    );
    println!("\n2. plan");
    for (i, wave) in p.waves.iter().enumerate() {
        println!("   wave {}: {}", i + 1, wave.join(", "));
    }
    println!(
        "   worst-case fuel {} of the budget {}",
        p.fuel.worst_case, p.fuel.budget
    );

    println!("\n3. run");
    let events: EventSink = Arc::new(|e: &Event| match e {
        Event::StepCompleted { step, .. } => println!("   ✓ {step}"),
        Event::StepReused { step } => println!("   ≡ {step} (committed earlier, reused)"),
        Event::ApprovalRequested { step, prompt, .. } => {
            println!("   ? {step} waits for a human: {prompt}")
        }
        Event::StepSkipped { step, reason } => println!("   – {step} skipped: {reason}"),
        Event::StepFailed { step, error, .. } => println!("   ✗ {step}: {error}"),
        Event::StepRetrying {
            step, next_attempt, ..
        } => println!("   ↻ {step} retrying (attempt {next_attempt})"),
        _ => {}
    });
    let state = Path::new(corral::store::DEFAULT_STATE_DIR);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(state, Durability::Normal)?);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let run_id = format!("demo-{}", stamp.as_millis());
    let params = resolve_params(&workflow, &[]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let cancel = CancellationToken::new();
    let journal = begin(store.clone(), &workflow, &params, &run_id, cancel.clone())?;
    let mut opts = RunOptions::new(run_id.clone(), params);
    opts.events = events.clone();
    opts.cancel = cancel;
    opts.journal = Some(journal.clone());
    let report = run(runtime.clone(), workflow, opts).await;
    journal.close().await?;
    println!("   {}", report.summary);
    println!(
        "   journaled as `{run_id}` in {}/: {} entries (`corral show {run_id}`)",
        state.display(),
        store.journal(&run_id, 0, 100_000)?.len()
    );
    for s in &report.steps {
        println!(
            "     {:<14} {:<10} fuel {:>7}  peak {:>10}  {:>10}",
            s.id,
            serde_json::to_value(s.status)?.as_str().unwrap_or_default(),
            human::count(s.fuel_used),
            human::bytes(s.peak_memory_bytes),
            human::duration(std::time::Duration::from_micros(s.wall_time_us))
        );
    }
    println!(
        "   outputs: {}",
        serde_json::to_string_pretty(&report.outputs)?.replace('\n', "\n   ")
    );

    println!("\n4. a human in the loop, across two sessions");
    let file = examples_dir().join("approval.yaml");
    let src = source::load(&file).map_err(|d| anyhow::anyhow!("{d:#?}"))?;
    let gated = Arc::new(
        validate(&src, &runtime)
            .await
            .map_err(|d| anyhow::anyhow!("{d:#?}"))?,
    );
    let gated_id = format!("{run_id}-approval");
    let params = resolve_params(&gated, &[]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let cancel = CancellationToken::new();
    let journal = begin(store.clone(), &gated, &params, &gated_id, cancel.clone())?;
    let mut opts = RunOptions::new(gated_id.clone(), params);
    opts.events = events.clone();
    opts.cancel = cancel;
    opts.journal = Some(journal.clone());
    let first = run(runtime.clone(), gated, opts).await;
    journal.close().await?;
    anyhow::ensure!(first.status == RunStatus::Waiting, "{}", first.summary);
    println!("   session 1 stops: {}", first.error.unwrap_or_default());
    store.answer(
        &gated_id,
        "sign_off",
        &json!({ "approved": true, "input": { "approver": "the demo" } }),
    )?;
    println!(
        "   approved as `corral approve {gated_id} sign_off --input '{{\"approver\": \"the demo\"}}'` would"
    );
    let req = ResumeRequest {
        run_id: gated_id.clone(),
        ..ResumeRequest::default()
    };
    let cancel = CancellationToken::new();
    let r = reopen(&runtime, store.clone(), &req, cancel.clone()).await?;
    let journal = r.journal.clone();
    let mut opts = RunOptions::new(gated_id.clone(), r.params);
    opts.events = events;
    opts.cancel = cancel;
    opts.journal = Some(r.journal);
    opts.resume = Some(r.resume);
    let second = run(runtime.clone(), r.workflow, opts).await;
    journal.close().await?;
    anyhow::ensure!(second.status == RunStatus::Completed, "{}", second.summary);
    let reused: Vec<&str> = second
        .steps
        .iter()
        .filter(|s| s.reused)
        .map(|s| s.id.as_str())
        .collect();
    println!(
        "   session 2 (`corral resume {gated_id}`): {}; reused without rerunning: {}",
        second.summary,
        reused.join(", ")
    );

    println!("\n5. agents that do AI work: a model gateway and outbound HTTP, offline");
    research(built).await?;

    println!("\n6. a hostile agent, contained");
    let hostile = runtime.load(corral_plugins::HOSTILE).await?;
    let tight = Budget {
        fuel: 50_000_000,
        memory_bytes: 32 << 20,
        ..Budget::default()
    };
    for action in ["loop", "alloc", "panic"] {
        let packet = HandoffPacket::new("demo", action, json!({ "action": action }));
        let out = runtime
            .call(&hostile, &packet, &tight, &Grants::default())
            .await;
        match &out.result {
            Err(e) => println!("   {action:<6} → {e}"),
            Ok(_) => anyhow::bail!("the hostile `{action}` was not stopped"),
        }
    }
    let s = runtime.cache_stats();
    println!(
        "\ncompile cache: {} compiled, {} from disk (a second run loads everything from disk)",
        s.compiled, s.disk_hits
    );
    Ok(())
}

/// Runs `examples/research.yaml` against the scripted provider of
/// `examples/models.toml`, with the page its JavaScript agent fetches
/// served on loopback.
async fn research(built: &Path) -> anyhow::Result<()> {
    let models = corral::model::ModelConfig::load(&examples_dir().join("models.toml"))
        .map_err(|e| anyhow::anyhow!("examples/models.toml: {e}"))?;
    let gateway = corral::model::Gateway::new(&models)
        .map_err(|e| anyhow::anyhow!("examples/models.toml: {}", e.join("; ")))?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        allowed_paths: vec![built.to_path_buf()],
        models: Some(Arc::new(gateway)),
        ..RuntimeConfig::with_default_cache()
    })?);
    // The workflow grants exactly this origin and path prefix.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:18080").await {
        Ok(l) => l,
        Err(e) => {
            println!("   skipped: cannot serve the page on 127.0.0.1:18080 ({e})");
            return Ok(());
        }
    };
    let page = axum::Router::new().route(
        "/notes/release",
        axum::routing::get(|| async {
            "corral 0.2: agents call models through the host's gateway, and reach only the URLs they are granted."
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, page).await });
    let file = examples_dir().join("research.yaml");
    let src = source::load(&file).map_err(|d| anyhow::anyhow!("{d:#?}"))?;
    let workflow = Arc::new(
        validate(&src, &runtime)
            .await
            .map_err(|d| anyhow::anyhow!("{d:#?}"))?,
    );
    let params = resolve_params(&workflow, &[]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let report = run(runtime, workflow, RunOptions::new("demo-research", params)).await;
    server.abort();
    anyhow::ensure!(report.status == RunStatus::Completed, "{}", report.summary);
    println!("   {}", report.summary);
    println!(
        "   outputs: {}",
        serde_json::to_string_pretty(&report.outputs)?.replace('\n', "\n   ")
    );
    println!(
        "   with a real endpoint: change one line of examples/models.toml (`provider = \"openai\"`)"
    );
    Ok(())
}

/// `examples/` of the checkout, printed without a `..` in it.
fn examples_dir() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/cli sits two levels below the workspace root");
    let dir = root.join("examples");
    dir.canonicalize().unwrap_or(dir)
}
