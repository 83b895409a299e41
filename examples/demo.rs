//! The demo: real agents chained by validated handoffs under budgets, then a hostile agent contained.
//!
//! Run it with `cargo run --release -p corral --example demo`. It builds the
//! agents in `plugins/` for `wasm32-wasip2` (installing the target if needed),
//! then:
//!
//! 1. classifies a support ticket (`classify`),
//! 2. extracts its keywords (`keywords`),
//! 3. summarizes it (`summarize`),
//! 4. has a critic score the summary against rules built from the keywords
//!    (`critic`),
//!
//! each call on a fresh sandbox with its own budget and receipt, each output
//! checked against the agent's schema before the next step sees it. Last, it
//! runs the `hostile` fixture's infinite loop and memory bomb to show the
//! typed errors a breach produces.

use corral::{Budget, CallOutcome, Grants, HandoffPacket, Runtime, RuntimeConfig};
use serde_json::{Value, json};

const TICKET: &str = "Since the last update the desktop app crashes whenever I export a report. \
The export dialog opens, the progress bar reaches about half, and then the whole app closes \
without an error message. Reports with fewer than ten pages export fine. I need these reports \
for the quarterly review on Friday, so a workaround would help. The crash happens on two \
different laptops, both with the latest version.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::with_default_cache())?;
    let budget = Budget::default();
    let grants = Grants::default();
    let run_id = "demo-run";

    println!("corral demo: a support ticket through four sandboxed agents\n");

    let classify = runtime.load(corral_plugins::CLASSIFY).await?;
    let routed = step(
        &runtime,
        &classify,
        run_id,
        "classify",
        json!({ "text": TICKET }),
        &budget,
        &grants,
    )
    .await?;
    println!(
        "  route → {} (confidence {})\n",
        routed["label"], routed["confidence"]
    );

    let keywords = runtime.load(corral_plugins::KEYWORDS).await?;
    let stats = step(
        &runtime,
        &keywords,
        run_id,
        "keywords",
        json!({ "text": TICKET, "top_k": 4 }),
        &budget,
        &grants,
    )
    .await?;
    let top: Vec<String> = stats["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["word"].as_str().unwrap().to_owned())
        .collect();
    println!("  keywords → {}\n", top.join(", "));

    let summarize = runtime.load(corral_plugins::SUMMARIZE).await?;
    let summary = step(
        &runtime,
        &summarize,
        run_id,
        "summarize",
        json!({ "text": TICKET, "max_sentences": 2 }),
        &budget,
        &grants,
    )
    .await?;
    println!("  summary → {}\n", summary["summary"]);

    // The critic checks that the summary keeps the ticket's top keywords.
    let critic = runtime.load(corral_plugins::CRITIC).await?;
    let rules = json!({ "min_words": 10, "max_words": 80, "max_sentence_words": 40,
                        "required_terms": &top[..2], "forbidden_terms": ["lorem"], "pass_score": 0.8 });
    let verdict = step(
        &runtime,
        &critic,
        run_id,
        "critic",
        json!({ "draft": summary["summary"], "rules": rules }),
        &budget,
        &grants,
    )
    .await?;
    println!(
        "  verdict → score {} passed {} issues {}\n",
        verdict["score"], verdict["passed"], verdict["issues"]
    );

    println!("a hostile agent, contained:\n");
    let hostile = runtime.load(corral_plugins::HOSTILE).await?;
    let tight = Budget {
        fuel: 50_000_000,
        memory_bytes: 32 << 20,
        ..Budget::default()
    };
    for action in ["loop", "alloc", "panic"] {
        let packet = HandoffPacket::new(run_id, action, json!({ "action": action }));
        let out = runtime.call(&hostile, &packet, &tight, &grants).await;
        match &out.result {
            Err(e) => println!("  {action:<6} → {e}"),
            Ok(_) => anyhow::bail!("the hostile `{action}` was not stopped"),
        }
        print_receipt(&out);
    }
    let s = runtime.cache_stats();
    println!(
        "\ncompile cache: {} compiled, {} from disk (run the demo again: all from disk)",
        s.compiled, s.disk_hits
    );
    Ok(())
}

/// Calls one agent as one step and returns its validated output payload.
async fn step(
    runtime: &Runtime,
    agent: &corral::Agent,
    run_id: &str,
    step_id: &str,
    payload: Value,
    budget: &Budget,
    grants: &Grants,
) -> anyhow::Result<Value> {
    let packet = HandoffPacket::new(run_id, step_id, payload);
    let out = runtime.call(agent, &packet, budget, grants).await;
    println!(
        "step `{step_id}` ({} {})",
        agent.info().name,
        agent.info().version
    );
    print_receipt(&out);
    Ok(out.result?.payload)
}

fn print_receipt(out: &CallOutcome) {
    let r = &out.receipt;
    println!(
        "         fuel {} · peak memory {} KiB · {:.2?} · {} B in · {} B out",
        r.fuel_used,
        r.peak_memory_bytes / 1024,
        r.wall_time(),
        r.bytes_in,
        r.bytes_out
    );
}
