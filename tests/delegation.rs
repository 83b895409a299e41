//! Delegation: an orchestrator agent calls other agents through the host under budgets carved from its own, refunded when they finish; limits on whom, how deep and how many, each a typed refusal naming its field; every delegated call in the caller's receipt, as a tree.

#[path = "support.rs"]
mod support;

use std::sync::{Arc, Mutex};

use corral::Receipt;
use corral::delegate::DelegationOutcome;
use corral::workflow::events::Event;
use corral::workflow::report::{RunReport, RunStatus};
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use support::agents;

/// A document of `n` sections.
fn document(n: usize) -> String {
    (0..n)
        .map(|i| format!("Section {i} explains the export. The export failed twice during backups. Nobody noticed until Monday."))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Runs a one-step workflow: `orchestrate` over `input`, with `step` added
/// to the step's fields; returns the report and the step's receipts.
async fn orchestrate(
    step: &str,
    input: serde_json::Value,
    budget: &str,
) -> (RunReport, Vec<Receipt>) {
    let yaml = format!(
        "version: 1\nname: d\nagents:\n  orchestrate: {{ component: '{}', budget: {{ {budget} }} }}\n  summarize: {{ component: '{}' }}\nsteps:\n  - {{ id: o, agent: orchestrate, input: {input}{step} }}\noutputs:\n  o: $steps.o.output\n",
        agents::ORCHESTRATE,
        agents::SUMMARIZE,
    );
    let src = source::parse(std::path::Path::new("d.yaml"), &yaml).unwrap();
    let rt = support::runtime().clone();
    let w = Arc::new(
        validate(&src, &rt)
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    );
    let mut opts = RunOptions::new("run", resolve_params(&w, &[]).unwrap());
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let seen = receipts.clone();
    opts.events = Arc::new(move |e: &Event| {
        if let Event::CallFinished { receipt, .. } = e {
            seen.lock().unwrap().push(receipt.clone());
        }
    });
    let report = run(rt, w, opts).await;
    let receipts = receipts.lock().unwrap().clone();
    (report, receipts)
}

const DELEGATES: &str = ", delegates: [summarize, orchestrate]";

#[tokio::test]
async fn an_orchestrator_delegates_sections_and_unused_fuel_comes_back() {
    let input = serde_json::json!({ "text": document(3), "section_fuel": 300_000_000u64 });
    let (report, receipts) = orchestrate(DELEGATES, input, "fuel: 1G").await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    let out = &report.outputs["o"];
    assert_eq!(out["sections"], 3, "{out}");
    assert_eq!(out["summary"].as_str().unwrap().lines().count(), 3);

    let r = &receipts[0];
    assert_eq!(r.delegations.len(), 3);
    let carved: u64 = r.delegations.iter().map(|d| d.fuel_carved).sum();
    let used: u64 = r
        .delegations
        .iter()
        .map(|d| d.receipt.as_ref().unwrap().fuel_used)
        .sum();
    assert_eq!(carved, 900_000_000, "each got what it asked for");
    for d in &r.delegations {
        assert_eq!((d.depth, d.outcome), (1, DelegationOutcome::Ok));
        assert_eq!(d.receipt.as_ref().unwrap().fuel_limit, 300_000_000);
    }
    // The callees' fuel is the caller's, and what they did not use came
    // back: the caller spent its own work plus theirs, far less than it carved.
    assert!(r.fuel_used >= used, "{} < {used}", r.fuel_used);
    assert!(
        r.fuel_used < used + 100_000_000,
        "{} of {carved} carved: refunds missing",
        r.fuel_used
    );
}

#[tokio::test]
async fn a_sub_budget_never_exceeds_what_the_caller_has_left() {
    // Asks 1G per section with 60M in all: the first gets what is left,
    // the rest get nothing and fail; the caller goes on and reports them.
    let input = serde_json::json!({ "text": document(3), "section_fuel": 1_000_000_000u64 });
    let (report, receipts) = orchestrate(DELEGATES, input, "fuel: 60M").await;
    let r = &receipts[0];
    let carved: Vec<u64> = r.delegations.iter().map(|d| d.fuel_carved).collect();
    assert!(carved[0] <= 60_000_000, "{carved:?}");
    assert_eq!(&carved[1..], [0, 0], "{carved:?}");
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    let out = &report.outputs["o"];
    assert_eq!(out["failed"], 2, "{out}");
    for d in &r.delegations[1..] {
        assert_eq!(d.outcome, DelegationOutcome::Breached);
        assert!(
            d.error.as_deref().unwrap().contains("fuel"),
            "{:?}",
            d.error
        );
    }
}

#[tokio::test]
async fn a_delegate_that_breaches_its_sub_budget_fails_and_the_caller_continues() {
    let input = serde_json::json!({ "text": document(2), "section_fuel": 1_000u64 });
    let (report, receipts) = orchestrate(DELEGATES, input, "fuel: 1G").await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    assert_eq!(report.outputs["o"]["failed"], 2);
    let d = &receipts[0].delegations[0];
    assert_eq!(d.outcome, DelegationOutcome::Breached);
    let error = d.error.as_deref().unwrap();
    assert!(error.contains("fuel") && error.contains("1000"), "{error}");
}

#[tokio::test]
async fn a_recursion_bomb_stops_at_the_depth_limit_naming_the_field() {
    let input = serde_json::json!({ "text": document(64), "levels": 20 });
    let (report, receipts) = orchestrate(DELEGATES, input, "fuel: 5G, timeout: 60s").await;
    assert_eq!(report.status, RunStatus::Failed, "{}", report.summary);
    let error = report.step("o").unwrap().error.clone().unwrap_or_default();
    assert!(
        error.contains("levels deep; the limit is 4 (`steps[0].delegation_depth`)"),
        "{error}"
    );
    // The tree in the receipt goes exactly 4 deep.
    fn deepest(r: &Receipt) -> u32 {
        r.delegations
            .iter()
            .filter_map(|d| {
                d.receipt
                    .as_deref()
                    .map(|inner| deepest(inner).max(d.depth))
            })
            .max()
            .unwrap_or(0)
    }
    assert_eq!(deepest(&receipts[0]), 4);

    // A count limit stops a wide bomb the same way.
    let input = serde_json::json!({ "text": document(8) });
    let (report, _) = orchestrate(
        &format!("{DELEGATES}, max_delegations: 5"),
        input,
        "fuel: 1G",
    )
    .await;
    let error = report.step("o").unwrap().error.clone().unwrap_or_default();
    assert!(
        error.contains("made its 5 delegated calls (`steps[0].max_delegations`)"),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_the_step_does_not_grant_is_refused_naming_the_field() {
    let input = serde_json::json!({ "text": document(2) });
    let (report, receipts) = orchestrate(", delegates: [orchestrate]", input, "fuel: 1G").await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    let d = &receipts[0].delegations[0];
    assert_eq!(d.outcome, DelegationOutcome::NotGranted);
    assert!(d.receipt.is_none(), "never called");
    let error = d.error.as_deref().unwrap();
    assert!(error.contains("add it to `steps[0].delegates`"), "{error}");
}

#[tokio::test]
async fn the_two_level_example_summarizes_every_section_through_its_tree() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digest.yaml");
    let src = source::load(&file).unwrap_or_else(|d| panic!("{d:#?}"));
    let rt = support::runtime().clone();
    let w = Arc::new(
        validate(&src, &rt)
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    );
    let report = run(
        rt,
        w.clone(),
        RunOptions::new("run", resolve_params(&w, &[]).unwrap()),
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    assert_eq!(report.outputs["sections"], 4);
    assert_eq!(
        report.outputs["summary"].as_str().unwrap().lines().count(),
        4
    );
}

#[tokio::test]
async fn a_python_agent_delegates_through_its_sdk() {
    let run_fanout = |fuel_each: &'static str| async move {
        let yaml = format!(
            "version: 1\nname: f\nagents:\n  fanout: {{ component: '{}', budget: {{ fuel: 2G, timeout: 30s }} }}\n  summarize: {{ component: '{}' }}\nsteps:\n  - {{ id: f, agent: fanout, delegates: [summarize], input: {{ texts: [One sentence here. Another one., Short text here.]{fuel_each} }} }}\noutputs:\n  f: $steps.f.output\n",
            agents::PY_FANOUT,
            agents::SUMMARIZE,
        );
        let src = source::parse(std::path::Path::new("f.yaml"), &yaml).unwrap();
        let rt = support::runtime().clone();
        let w = Arc::new(
            validate(&src, &rt)
                .await
                .unwrap_or_else(|d| panic!("{d:#?}")),
        );
        run(
            rt,
            w.clone(),
            RunOptions::new("run", resolve_params(&w, &[]).unwrap()),
        )
        .await
    };
    let report = run_fanout("").await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    assert_eq!(
        report.outputs["f"]["summaries"].as_array().unwrap().len(),
        2,
        "{}",
        report.outputs
    );
    // Too little fuel carved for each: both breach, the agent reports it.
    let report = run_fanout(", fuel_each: 1000").await;
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    assert_eq!(
        report.outputs["f"]["errors"],
        serde_json::json!(["breached", "breached"])
    );
}
