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
//! 3. runs it: a support ticket is classified, routed to the summarizer its
//!    label selects, merged and reviewed by a critic, each step in a fresh
//!    sandbox with its own budget, each handoff checked against the schemas;
//! 4. runs the `hostile` fixture's infinite loop, memory bomb and panic to
//!    show the typed errors a breach produces.
//!
//! The same workflow runs from the command line with
//! `corral run examples/triage.yaml`.

use std::path::Path;
use std::sync::Arc;

use corral::workflow::events::{Event, EventSink};
use corral::workflow::plan::plan;
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use corral::{Budget, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The example workflows name components under target/; make sure they are built.
    let _ = corral_plugins::ALL;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::with_default_cache())?);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/triage.yaml");

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
        Event::StepSkipped { step, reason } => println!("   – {step} skipped: {reason}"),
        Event::StepFailed { step, error, .. } => println!("   ✗ {step}: {error}"),
        Event::StepRetrying {
            step, next_attempt, ..
        } => println!("   ↻ {step} retrying (attempt {next_attempt})"),
        _ => {}
    });
    let params = resolve_params(&workflow, &[]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let opts = RunOptions {
        run_id: "demo".into(),
        params,
        events,
        cancel: CancellationToken::new(),
        seed: 0,
        ..RunOptions::new("", serde_json::Value::Null)
    };
    let report = run(runtime.clone(), workflow, opts).await;
    println!("   {}", report.summary);
    for s in &report.steps {
        println!(
            "     {:<14} {:<10} fuel {:>9}  peak {:>5} KiB  {:>9.2?}",
            s.id,
            serde_json::to_value(s.status)?.as_str().unwrap_or_default(),
            s.fuel_used,
            s.peak_memory_bytes / 1024,
            std::time::Duration::from_micros(s.wall_time_us)
        );
    }
    println!(
        "   outputs: {}",
        serde_json::to_string_pretty(&report.outputs)?.replace('\n', "\n   ")
    );

    println!("\n4. a hostile agent, contained");
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
