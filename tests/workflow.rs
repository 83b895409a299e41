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

/// The directory the agent components are built into.
fn agents_dir() -> String {
    Path::new(agents::ECHO)
        .parent()
        .unwrap()
        .display()
        .to_string()
}

/// Parses and validates workflow text (with `@AGENTS@` standing for the
/// components' directory), panicking with the diagnostics if invalid.
async fn workflow(text: &str) -> Arc<Workflow> {
    let text = text.replace("@AGENTS@", &agents_dir());
    let src = source::parse(Path::new("test.yaml"), &text).unwrap_or_else(|d| panic!("{d:#?}"));
    Arc::new(
        validate(&src, runtime())
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    )
}

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

/// A store whose step-cache lookups block until the test lets them go.
struct SlowCache {
    inner: corral::store::SqliteStore,
    released: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// Whether a lookup had to give up waiting (it blocked the scheduler).
    gave_up: Arc<Mutex<bool>>,
}

impl corral::store::Store for SlowCache {
    fn cache_get(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<String>, corral::store::StoreError> {
        let (lock, cv) = &*self.released;
        let (released, timeout) = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |r| !*r)
            .unwrap();
        if timeout.timed_out() && !*released {
            *self.gave_up.lock().unwrap() = true;
        }
        self.inner.cache_get(key, now_ms)
    }
    fn create_run(
        &self,
        run: &corral::store::NewRun,
        owner: &corral::store::Owner,
    ) -> Result<corral::store::Lease, corral::store::StoreError> {
        self.inner.create_run(run, owner)
    }
    fn claim(
        &self,
        run: &str,
        owner: &corral::store::Owner,
        lease: Duration,
    ) -> Result<(corral::store::RunRecord, corral::store::Lease), corral::store::StoreError> {
        self.inner.claim(run, owner, lease)
    }
    fn heartbeat(
        &self,
        run: &str,
        lease: &corral::store::Lease,
    ) -> Result<u8, corral::store::StoreError> {
        self.inner.heartbeat(run, lease)
    }
    fn release(
        &self,
        run: &str,
        lease: &corral::store::Lease,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.release(run, lease)
    }
    fn commit(
        &self,
        run: &str,
        lease: &corral::store::Lease,
        entries: &[corral::store::Entry],
    ) -> Result<(), corral::store::StoreError> {
        self.inner.commit(run, lease, entries)
    }
    fn run(&self, run: &str) -> Result<corral::store::RunRecord, corral::store::StoreError> {
        self.inner.run(run)
    }
    fn runs(&self) -> Result<Vec<corral::store::RunRecord>, corral::store::StoreError> {
        self.inner.runs()
    }
    fn tenant_runs(
        &self,
        q: &corral::store::RunQuery,
    ) -> Result<Vec<corral::store::RunRecord>, corral::store::StoreError> {
        self.inner.tenant_runs(q)
    }
    fn put_agent(&self, a: &corral::store::AgentRecord) -> Result<(), corral::store::StoreError> {
        self.inner.put_agent(a)
    }
    fn agents(
        &self,
        tenant: &str,
    ) -> Result<Vec<corral::store::AgentRecord>, corral::store::StoreError> {
        self.inner.agents(tenant)
    }
    fn delete_agent(&self, tenant: &str, name: &str) -> Result<bool, corral::store::StoreError> {
        self.inner.delete_agent(tenant, name)
    }
    fn update_rate(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<u64>) -> Option<u64>,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.update_rate(key, f)
    }
    fn enqueue_webhooks(
        &self,
        messages: &[corral::store::WebhookMessage],
    ) -> Result<(), corral::store::StoreError> {
        self.inner.enqueue_webhooks(messages)
    }
    fn claim_webhooks(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<corral::store::WebhookMessage>, corral::store::StoreError> {
        self.inner.claim_webhooks(now_ms, hold, limit)
    }
    fn record_delivery(
        &self,
        attempt: &corral::store::DeliveryAttempt,
        state: corral::store::DeliveryState,
        next_ms: Option<i64>,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.record_delivery(attempt, state, next_ms)
    }
    fn deliveries(
        &self,
        tenant: &str,
        run: &str,
    ) -> Result<Vec<corral::store::Delivery>, corral::store::StoreError> {
        self.inner.deliveries(tenant, run)
    }
    fn put_workflow(
        &self,
        w: &corral::store::WorkflowRecord,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.put_workflow(w)
    }
    fn workflows(
        &self,
        tenant: &str,
    ) -> Result<Vec<corral::store::WorkflowRecord>, corral::store::StoreError> {
        self.inner.workflows(tenant)
    }
    fn reserve_fuel(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
        want: u64,
    ) -> Result<corral::store::FuelWindow, corral::store::StoreError> {
        self.inner.reserve_fuel(tenant, window, limit, want)
    }
    fn settle_fuel(
        &self,
        tenant: &str,
        start_ms: i64,
        reserved: u64,
        used: u64,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.settle_fuel(tenant, start_ms, reserved, used)
    }
    fn fuel_window(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
    ) -> Result<corral::store::FuelWindow, corral::store::StoreError> {
        self.inner.fuel_window(tenant, window, limit)
    }
    fn steps(
        &self,
        run: &str,
    ) -> Result<Vec<corral::store::StepRecord>, corral::store::StoreError> {
        self.inner.steps(run)
    }
    fn journal(
        &self,
        run: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<corral::store::JournalEntry>, corral::store::StoreError> {
        self.inner.journal(run, after, limit)
    }
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, corral::store::StoreError> {
        self.inner.blob(digest)
    }
    fn answer(
        &self,
        run: &str,
        step: &str,
        answer: &Value,
    ) -> Result<(), corral::store::StoreError> {
        self.inner.answer(run, step, answer)
    }
    fn request_cancel(
        &self,
        run: &str,
        lease: Duration,
        compensate: bool,
    ) -> Result<corral::store::RunRecord, corral::store::StoreError> {
        self.inner.request_cancel(run, lease, compensate)
    }
    fn gc(&self, before_ms: i64) -> Result<corral::store::GcStats, corral::store::StoreError> {
        self.inner.gc(before_ms)
    }
}

/// The scheduler never waits for the disk: while one step's cache lookup
/// is stuck in the store, a parallel step still runs to completion (on
/// this single-threaded runtime, a blocking lookup would stall both).
#[tokio::test(flavor = "current_thread")]
async fn a_slow_store_read_does_not_stall_other_steps() {
    let w = workflow(
        r#"
version: 1
name: slow-store
agents:
  echo: { component: "@AGENTS@/echo.wasm" }
steps:
  - { id: looked_up, agent: echo, input: { text: "a" }, cache: true }
  - { id: other, agent: echo, input: { text: "b" } }
"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let released = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let gave_up = Arc::new(Mutex::new(false));
    let store: Arc<dyn corral::store::Store> = Arc::new(SlowCache {
        inner: corral::store::SqliteStore::open(dir.path(), corral::store::Durability::Normal)
            .unwrap(),
        released: released.clone(),
        gave_up: gave_up.clone(),
    });
    let cancel = CancellationToken::new();
    let journal =
        corral::workflow::durable::begin(store, &w, &json!({}), "slow-store", cancel.clone())
            .unwrap();
    // `other` completing lets the lookup go.
    let sink: EventSink = Arc::new(move |e: &Event| {
        if matches!(e, Event::StepCompleted { step, .. } if step == "other") {
            let (lock, cv) = &*released;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
    });
    let opts = RunOptions {
        events: sink,
        cancel,
        journal: Some(journal.clone()),
        ..RunOptions::new("slow-store", json!({}))
    };
    let report = run(runtime().clone(), w, opts).await;
    journal.close().await.unwrap();
    assert_eq!(report.status, RunStatus::Completed, "{}", report.summary);
    assert!(
        !*gave_up.lock().unwrap(),
        "the cache lookup blocked the scheduler's thread"
    );
}

/// A full instance pool is the host's limit, not the agent's fault: a call
/// that finds no free slot before its deadline fails as `overloaded`
/// (transient), and its agent's circuit breaker does not count it.
#[tokio::test(flavor = "current_thread")]
async fn a_full_instance_pool_never_trips_a_breaker() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corral-cache");
    let mut config = corral::RuntimeConfig {
        cache_dir: Some(dir),
        allowed_paths: vec![wasm_agents_dir()],
        ..Default::default()
    };
    config.engine.max_instances = 1;
    let rt = Arc::new(corral::Runtime::new(config).unwrap());
    let text = r#"
version: 1
name: full-pool
agents:
  hog: { component: "@AGENTS@/hostile.wasm", budget: { timeout: 5s } }
  echo: { component: "@AGENTS@/echo.wasm", budget: { timeout: 100ms }, breaker: { failure_threshold: 1, cooldown: 1h } }
budget: { max_concurrency: 4 }
steps:
  - { id: hold, agent: hog, input: { action: nap, ms: 600 } }
  - { id: starved, agent: echo, input: { text: "a" }, on_error: continue }
  - { id: after, agent: echo, input: { text: "b" }, depends_on: [hold, starved] }
"#
    .replace("@AGENTS@", &agents_dir());
    let src = source::parse(Path::new("pool.yaml"), &text).unwrap_or_else(|d| panic!("{d:#?}"));
    let w = Arc::new(
        validate(&src, &rt)
            .await
            .unwrap_or_else(|d| panic!("{d:#?}")),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let opts = RunOptions {
        events: Arc::new(move |e: &Event| seen.lock().unwrap().push(e.clone())),
        ..RunOptions::new("pool", json!({}))
    };
    let report = run(rt, w, opts).await;
    let starved = report.steps.iter().find(|s| s.id == "starved").unwrap();
    assert_eq!(starved.status, StepStatus::Degraded, "{}", report.summary);
    assert_eq!(starved.error_kind.as_deref(), Some("overloaded"));
    let after = report.steps.iter().find(|s| s.id == "after").unwrap();
    assert_eq!(after.status, StepStatus::Completed, "{}", report.summary);
    let events = events.lock().unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Breaker { .. })),
        "the breaker moved: {events:?}"
    );
}
