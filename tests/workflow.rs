//! Running workflows: ordering, caps, for-each, conditions and joins, retries, fallbacks, degradation, breakers, quality gates, budgets, cancellation.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::workflow::events::{Event, EventSink};
use corral::workflow::model::Workflow;
use corral::workflow::report::{RunReport, RunStatus, StepStatus};
use corral::workflow::run::{RunOptions, resolve_params, run};
use corral::workflow::{source, validate::validate};
use serde_json::{Value, json};
use support::*;
use tokio_util::sync::CancellationToken;

struct Recorded {
    report: RunReport,
    events: Vec<Event>,
}

async fn run_with(
    w: Arc<Workflow>,
    params: &[(&str, &str)],
    cancel: CancellationToken,
) -> Recorded {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    let sink: EventSink = Arc::new(move |e: &Event| sink_events.lock().unwrap().push(e.clone()));
    let given: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let params = resolve_params(&w, &given).unwrap();
    let opts = RunOptions {
        run_id: "run-test".into(),
        params,
        events: sink,
        cancel,
        seed: 7,
        ..RunOptions::new("", serde_json::Value::Null)
    };
    let report = run(runtime().clone(), w, opts).await;
    let events = events.lock().unwrap().clone();
    Recorded { report, events }
}

async fn run_wf(text: &str, params: &[(&str, &str)]) -> Recorded {
    run_with(workflow(text).await, params, CancellationToken::new()).await
}

fn position(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().position(pred).expect("event not found")
}

fn started(step: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::StepStarted { step: s } if s == step)
}

fn completed(step: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::StepCompleted { step: s, .. } if s == step)
}

/// The most calls in flight at once, from call start and finish events.
fn max_in_flight(events: &[Event]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for e in events {
        match e {
            Event::CallStarted { .. } => {
                now += 1;
                max = max.max(now);
            }
            Event::CallFinished { .. } => now -= 1,
            _ => {}
        }
    }
    max
}

const HEADER: &str = "version: 1\nname: t\nagents:\n  echo: { component: '@AGENTS@/echo.wasm' }\n  keywords: { component: '@AGENTS@/keywords.wasm' }\n  summarize: { component: '@AGENTS@/summarize.wasm' }\n  lead: { component: '@AGENTS@/lead.wasm' }\n  critic: { component: '@AGENTS@/critic.wasm' }\n  classify: { component: '@AGENTS@/classify.wasm' }\n  merge: { component: '@AGENTS@/merge.wasm' }\n  hostile: { component: '@AGENTS@/hostile.wasm' }\n";

#[tokio::test]
async fn steps_start_when_their_dependencies_finish() {
    let r = run_wf(
        &format!(
            "{HEADER}steps:
  - {{ id: a, agent: echo, input: {{ text: one }} }}
  - {{ id: b, agent: echo, input: {{ text: two }} }}
  - {{ id: c, agent: echo, input: {{ text: $steps.a.output.text, tags: [$steps.b.output.text] }} }}
outputs: {{ c: $steps.c.output }}
"
        ),
        &[],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    let e = &r.events;
    // a and b are independent: both start before either finishes.
    let first_done = position(e, completed("a")).min(position(e, completed("b")));
    assert!(position(e, started("a")) < first_done && position(e, started("b")) < first_done);
    // c waits for both.
    assert!(position(e, started("c")) > position(e, completed("a")));
    assert!(position(e, started("c")) > position(e, completed("b")));
    assert_eq!(
        r.report.outputs["c"],
        json!({"text": "one", "tags": ["two"]})
    );
}

#[tokio::test]
async fn the_global_concurrency_cap_is_never_exceeded() {
    let steps: String = (0..8)
        .map(|i| format!("  - {{ id: s{i}, agent: hostile, input: {{ action: nap, ms: 60 }} }}\n"))
        .collect();
    let r = run_wf(
        &format!("{HEADER}budget: {{ max_concurrency: 3 }}\nsteps:\n{steps}"),
        &[],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    assert_eq!(r.report.counts.completed, 8);
    // Calls sleep in the host far longer than scheduling takes, so the cap is reached, and held.
    assert_eq!(max_in_flight(&r.events), 3);
}

#[tokio::test]
async fn for_each_keeps_item_order_under_its_own_cap() {
    let r = run_wf(
        &format!(
            "{HEADER}params:
  words: {{ type: array, default: [alpha, beta, gamma, delta, epsilon, zeta, eta] }}
budget: {{ max_concurrency: 5 }}
steps:
  - id: each
    agent: echo
    for_each: $params.words
    max_concurrency: 2
    input: {{ text: $item, tags: [$params.words.0] }}
  - id: nap
    agent: hostile
    for_each: $params.words
    max_concurrency: 2
    input: {{ action: nap, ms: 30 }}
outputs: {{ third: $steps.each.output.2.text, all: $steps.each.output }}
"
        ),
        &[],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    assert_eq!(r.report.outputs["third"], "gamma");
    let texts: Vec<&str> = r.report.outputs["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
    );
    assert_eq!(r.report.step("each").unwrap().items, Some(7));
    assert_eq!(r.report.step("each").unwrap().attempts, 7);
    // Per step at most 2 items at once; with both steps, at most 4 calls.
    let nap_calls: Vec<Event> = r.events.iter().filter(|e| matches!(e, Event::CallStarted { step, .. } | Event::CallFinished { step, .. } if step == "nap")).cloned().collect();
    assert_eq!(max_in_flight(&nap_calls), 2);
    assert!(max_in_flight(&r.events) <= 4);
}

#[tokio::test]
async fn for_each_over_max_items_fails_clearly() {
    let r = run_wf(
        &format!(
            "{HEADER}params: {{ xs: {{ type: array, default: [a, b, c] }} }}
steps:
  - {{ id: each, agent: echo, for_each: $params.xs, max_items: 2, input: {{ text: $item }} }}
"
        ),
        &[],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    let err = r.report.step("each").unwrap().error.clone().unwrap();
    assert!(err.contains("3 items, over its `max_items` of 2"), "{err}");
}

const ROUTER: &str = "params: { text: { type: string } }
steps:
  - { id: route, agent: classify, input: { text: $params.text } }
  - { id: bug, agent: lead, when: 'steps.route.output.label == \"bug\"', input: { text: $params.text, max_sentences: 1 } }
  - { id: feature, agent: lead, when: 'steps.route.output.label == \"feature\"', input: { text: $params.text, max_sentences: 1 } }
  - { id: other, agent: lead, when: 'steps.route.output.label != \"bug\" && steps.route.output.label != \"feature\"', input: { text: $params.text, max_sentences: 1 } }
  - { id: after_bug, agent: echo, input: { text: $steps.bug.output.summary } }
  - { id: brief, agent: merge, join: any, input: { items: [$steps.bug.output, $steps.feature.output, $steps.other.output] } }
outputs: { brief: $steps.brief.output.text }
";

#[tokio::test]
async fn every_when_branch_routes_and_skips_propagate() {
    for (text, taken) in [
        ("The app crashes with an error.", "bug"),
        ("Please add a feature to export.", "feature"),
        ("Lovely weather today.", "other"),
    ] {
        let r = run_wf(&format!("{HEADER}{ROUTER}"), &[("text", text)]).await;
        assert_eq!(
            r.report.status,
            RunStatus::Completed,
            "{}",
            r.report.summary
        );
        for branch in ["bug", "feature", "other"] {
            let s = r.report.step(branch).unwrap();
            let expected = if branch == taken {
                StepStatus::Completed
            } else {
                StepStatus::Skipped
            };
            assert_eq!(s.status, expected, "{text}: branch {branch}");
        }
        // `join: all` (the default) skips a step whose dependency was skipped.
        let after = r.report.step("after_bug").unwrap().status;
        assert_eq!(
            after,
            if taken == "bug" {
                StepStatus::Completed
            } else {
                StepStatus::Skipped
            }
        );
        // `join: any` runs on the branch that completed.
        assert_eq!(
            r.report.step("brief").unwrap().status,
            StepStatus::Completed
        );
        assert_eq!(r.report.outputs["brief"], text);
    }
}

#[tokio::test]
async fn at_least_n_of_m_joins() {
    let r = run_wf(&format!("{HEADER}steps:
  - {{ id: a, agent: echo, input: {{ text: a }} }}
  - {{ id: b, agent: echo, when: 'false', input: {{ text: b }} }}
  - {{ id: c, agent: echo, input: {{ text: c }} }}
  - {{ id: two, agent: echo, depends_on: [a, b, c], join: {{ at_least: 2 }}, input: {{ text: two }} }}
  - {{ id: three, agent: echo, depends_on: [a, b, c], join: {{ at_least: 3 }}, input: {{ text: three }} }}
"), &[]).await;
    assert_eq!(r.report.step("two").unwrap().status, StepStatus::Completed);
    let three = r.report.step("three").unwrap();
    assert_eq!(three.status, StepStatus::Skipped);
    assert!(three.skip_reason.as_ref().unwrap().contains("at_least: 3"));
}

/// Agents for the flaky fixture; its breaker opens after `threshold` failures.
fn flaky_header_with(state: &Path, threshold: u32) -> String {
    format!(
        "version: 1\nname: t\nagents:\n  flaky:\n    component: '@AGENTS@/flaky.wasm'\n    grants: {{ dirs: [{{ host: '{}', guest: /state, writable: true }}] }}\n    breaker: {{ failure_threshold: {threshold}, cooldown: 150ms }}\n  echo: {{ component: '@AGENTS@/echo.wasm' }}\n  merge: {{ component: '@AGENTS@/merge.wasm' }}\n",
        state.display()
    )
}

fn flaky_header(state: &Path) -> String {
    flaky_header_with(state, 10)
}

#[tokio::test]
async fn retries_follow_the_backoff_schedule() {
    let state = tempfile::tempdir().unwrap();
    let r = run_wf(&format!("{}steps:
  - id: s
    agent: flaky
    input: {{ key: k, fail_first: 3 }}
    retry: {{ max_attempts: 5, initial_delay: 4ms, backoff: 2.0, max_delay: 10ms, jitter: 0, on: [transient] }}
", flaky_header(state.path())), &[]).await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    let s = r.report.step("s").unwrap();
    assert_eq!((s.attempts, s.retries), (4, 3));
    let delays: Vec<u64> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StepRetrying { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    // 4 ms, doubled, capped at 10 ms.
    assert_eq!(delays, [4, 8, 10]);
    assert_eq!(r.report.counts.retried, 1);
}

#[tokio::test]
async fn permanent_errors_are_not_retried_and_exhausted_retries_fail() {
    let state = tempfile::tempdir().unwrap();
    let r = run_wf(
        &format!(
            "{}steps:
  - id: p
    agent: flaky
    input: {{ key: p, fail_first: 1, class: permanent }}
    retry: {{ max_attempts: 5, initial_delay: 1ms, on: [transient] }}
",
            flaky_header(state.path())
        ),
        &[],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    let s = r.report.step("p").unwrap();
    assert_eq!(
        (s.attempts, s.status, s.error_kind.as_deref()),
        (1, StepStatus::Failed, Some("agent"))
    );
    assert!(r.report.error.as_ref().unwrap().contains("step `p` failed"));

    let r = run_wf(
        &format!(
            "{}steps:
  - id: t
    agent: flaky
    input: {{ key: t, fail_first: 9 }}
    retry: {{ max_attempts: 2, initial_delay: 1ms, on: [transient] }}
",
            flaky_header(state.path())
        ),
        &[],
    )
    .await;
    assert_eq!(r.report.step("t").unwrap().attempts, 2);
    assert_eq!(r.report.status, RunStatus::Failed);
}

#[tokio::test]
async fn a_final_failure_goes_to_the_fallback_agent() {
    let r = run_wf(
        &format!(
            "{}steps:
  - id: summary
    agent: summarize
    budget: {{ fuel: 50k }}
    input: {{ text: 'One sentence here. Another one there. A third to be sure.', max_sentences: 1 }}
    retry: {{ max_attempts: 2, initial_delay: 1ms, on: [fuel_exhausted] }}
    fallback: lead
outputs: {{ s: $steps.summary.output.summary }}
",
            HEADER
        ),
        &[],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    let s = r.report.step("summary").unwrap();
    assert_eq!(s.fallback.as_deref(), Some("lead"));
    assert_eq!((s.attempts, s.retries), (3, 1));
    assert_eq!(r.report.outputs["s"], "One sentence here.");
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::StepFallback { agent, .. } if agent == "lead"))
    );
}

#[tokio::test]
async fn degradable_and_continue_steps_degrade_and_dependents_see_it() {
    let state = tempfile::tempdir().unwrap();
    let r = run_wf(&format!("{}steps:
  - {{ id: optional, agent: flaky, input: {{ key: d, fail_first: 9, class: degradable }} }}
  - {{ id: tolerated, agent: flaky, on_error: continue, input: {{ key: c, fail_first: 9, class: permanent }} }}
  - id: next
    agent: echo
    when: steps.optional.status == \"degraded\"
    input: {{ text: seen }}
  - {{ id: gather, agent: merge, input: {{ items: [$steps.tolerated.output] }} }}
", flaky_header(state.path())), &[]).await;
    assert_eq!(r.report.status, RunStatus::Degraded, "{}", r.report.summary);
    assert_eq!(
        r.report.step("optional").unwrap().status,
        StepStatus::Degraded
    );
    assert_eq!(
        r.report.step("tolerated").unwrap().status,
        StepStatus::Degraded
    );
    // Dependents ran: `next`'s `when` saw the status ...
    assert_eq!(r.report.step("next").unwrap().status, StepStatus::Completed);
    // ... and `gather` read the degraded output as null, found nothing to
    // merge, and degraded in turn (merge's error is degradable).
    let gather = r.report.step("gather").unwrap();
    assert_eq!(gather.status, StepStatus::Degraded);
    assert!(gather.error.as_ref().unwrap().contains("nothing to merge"));
    assert_eq!(r.report.counts.degraded, 3);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes_after_a_trial() {
    let state = tempfile::tempdir().unwrap();
    let r = run_wf(&format!("{}steps:
  - {{ id: f1, agent: flaky, on_error: continue, input: {{ key: bad, fail_first: 99, class: permanent }} }}
  - {{ id: f2, agent: flaky, on_error: continue, depends_on: [f1], input: {{ key: bad, fail_first: 99, class: permanent }} }}
  - id: ok
    agent: flaky
    depends_on: [f2]
    input: {{ key: good, fail_first: 0 }}
    retry: {{ max_attempts: 3, initial_delay: 200ms, jitter: 0, on: [breaker_open] }}
", flaky_header_with(state.path(), 2)), &[]).await;
    assert_eq!(r.report.status, RunStatus::Degraded, "{}", r.report.summary);
    let ok = r.report.step("ok").unwrap();
    // The first attempt failed fast without a call; the retry after the cool-down was the trial.
    assert_eq!(
        (ok.status, ok.attempts, ok.retries),
        (StepStatus::Completed, 1, 1)
    );
    let b = r
        .report
        .breakers
        .iter()
        .find(|b| b.agent == "flaky")
        .unwrap();
    assert_eq!(
        b.transitions,
        ["closed → open", "open → half_open", "half_open → closed"]
    );
    let changes: Vec<(String, String)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Breaker { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 3);
    assert!(r.events.iter().any(|e| matches!(e, Event::StepRetrying { error, .. } if error.contains("circuit breaker is open"))));
}

const GATE: &str = "params:
  text: { type: string, default: 'Receipts record fuel. Capabilities are denied by default. Budgets hold.' }
  terms: { type: array }
steps:
  - id: draft
    agent: summarize
    input: { text: $params.text, max_sentences: 1 }
    repeat:
      critic: { agent: critic, input: { draft: $output.summary, rules: { required_terms: $params.terms, min_words: 2, pass_score: 1.0 } } }
      until: critic.passed
      max_iterations: 3
      feedback: feedback
";

#[tokio::test]
async fn a_quality_gate_feeds_the_critic_back_until_it_passes() {
    let r = run_wf(
        &format!("{HEADER}{GATE}outputs: {{ s: $steps.draft.output.summary }}\n"),
        &[("terms", r#"["capabilities", "budgets"]"#)],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::Completed,
        "{}",
        r.report.summary
    );
    let s = r.report.step("draft").unwrap();
    assert_eq!(s.iterations, Some(2));
    assert_eq!(s.attempts, 4, "two drafts and two verdicts");
    let out = r.report.outputs["s"].as_str().unwrap().to_lowercase();
    assert!(
        out.contains("capabilities") && out.contains("budgets"),
        "{out}"
    );
}

#[tokio::test]
async fn a_quality_gate_stops_at_its_bound() {
    let r = run_wf(&format!("{HEADER}{GATE}"), &[("terms", r#"["unicorns"]"#)]).await;
    assert_eq!(r.report.status, RunStatus::Failed);
    let s = r.report.step("draft").unwrap();
    assert_eq!((s.iterations, s.attempts), (Some(3), 6));
    assert_eq!(s.error_kind.as_deref(), Some("quality_gate"));
    assert!(
        s.error.as_ref().unwrap().contains("missing `unicorns`"),
        "the blockers are reported: {:?}",
        s.error
    );
}

#[tokio::test]
async fn the_workflow_fuel_budget_stops_scheduling_mid_run() {
    let steps: String = (0..8)
        .map(|i| {
            let dep = if i == 0 { String::new() } else { format!(", depends_on: [k{}]", i - 1) };
            format!("  - {{ id: k{i}, agent: keywords, input: {{ text: 'alpha beta gamma delta' }}{dep} }}\n")
        })
        .collect();
    // One keywords call costs about 30k instructions here; 100k is three steps.
    let r = run_wf(
        &format!("{HEADER}budget: {{ fuel: 100k }}\nsteps:\n{steps}"),
        &[],
    )
    .await;
    assert_eq!(
        r.report.status,
        RunStatus::FuelExhausted,
        "{}",
        r.report.summary
    );
    assert!(
        r.report.fuel.used <= 100_000,
        "spent {} of 100000",
        r.report.fuel.used
    );
    assert!(r.report.counts.completed >= 1, "{}", r.report.summary);
    let pending = r
        .report
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Pending)
        .count();
    assert!(
        pending >= 1,
        "later steps were never scheduled: {}",
        r.report.summary
    );
    assert!(
        r.report
            .error
            .as_ref()
            .unwrap()
            .contains("raise `budget.fuel` in the workflow")
    );
}

#[tokio::test]
async fn cancelling_stops_the_run() {
    let w = workflow(&format!(
        "{HEADER}steps:
  - {{ id: slow, agent: hostile, input: {{ action: nap, ms: 5000 }} }}
  - {{ id: after, agent: echo, depends_on: [slow], input: {{ text: x }} }}
"
    ))
    .await;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let started = std::time::Instant::now();
    let r = run_with(w, &[], cancel).await;
    assert_eq!(r.report.status, RunStatus::Cancelled);
    // The cut-off call's reservation is reported apart, never as spent fuel.
    assert!(r.report.fuel.unsettled > 0);
    assert!(r.report.fuel.used < r.report.fuel.unsettled);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the nap was cut short"
    );
    assert_eq!(r.report.step("after").unwrap().status, StepStatus::Pending);
}

#[tokio::test]
async fn on_error_pause_pauses_the_run() {
    let r = run_wf(
        &format!(
            "{HEADER}steps:
  - {{ id: risky, agent: hostile, on_error: pause, input: {{ action: error }} }}
  - {{ id: after, agent: echo, depends_on: [risky], input: {{ text: x }} }}
"
        ),
        &[],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Paused);
    assert_eq!(r.report.step("risky").unwrap().status, StepStatus::Paused);
    assert_eq!(r.report.step("after").unwrap().status, StepStatus::Pending);
}

#[tokio::test]
async fn params_are_checked_before_the_run() {
    let w = workflow(&format!(
        "{HEADER}params: {{ n: {{ type: integer }}, s: {{ type: string, default: x }} }}
steps:
  - {{ id: a, agent: echo, input: {{ text: $params.s }} }}
"
    ))
    .await;
    let errs = resolve_params(&w, &[]).unwrap_err();
    assert_eq!(
        errs,
        ["param `n` (integer) is required: pass `--param n=<value>`"]
    );
    let errs = resolve_params(
        &w,
        &[("n".into(), "many".into()), ("zz".into(), "1".into())],
    )
    .unwrap_err();
    assert!(
        errs[0].starts_with("param `n` must be integer (JSON)"),
        "{errs:?}"
    );
    assert!(errs[1].contains("unknown param `zz`"), "{errs:?}");
    let ok = resolve_params(&w, &[("n".into(), "5".into())]).unwrap();
    assert_eq!(ok, json!({"n": 5, "s": "x"}));
}

#[tokio::test]
async fn the_example_workflows_run() {
    for (file, output, expected) in [
        ("pipeline.yaml", "score", json!(1.0)),
        ("triage.yaml", "label", json!("bug")),
        ("reflection.yaml", "summary", Value::Null),
        ("map_reduce.yaml", "digest", Value::Null),
        ("retry_fallback.yaml", "summary", Value::Null),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(file);
        let src = source::load(&path).unwrap_or_else(|d| panic!("{file}: {d:#?}"));
        let w = Arc::new(
            validate(&src, runtime())
                .await
                .unwrap_or_else(|d| panic!("{file}: {d:#?}")),
        );
        let r = run_with(w, &[], CancellationToken::new()).await;
        assert_eq!(
            r.report.status,
            RunStatus::Completed,
            "{file}: {}",
            r.report.summary
        );
        if expected.is_null() {
            assert!(
                r.report.outputs[output].is_string(),
                "{file}: {}",
                r.report.outputs
            );
        } else {
            assert_eq!(r.report.outputs[output], expected, "{file}");
        }
    }
}
