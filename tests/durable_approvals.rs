//! Durable runs that wait for a human: approvals approved, rejected, answered by another process or past their deadline, and paused steps answered with an output.

#[path = "durable_support.rs"]
mod durable;
#[path = "support.rs"]
mod support;

use std::time::Duration;

use durable::*;
use serde_json::{Value, json};

#[test]
fn approval_pauses_rejects_bad_input_then_continues_after_approve() {
    let env = Env::new();
    let wf = env.workflow("gated.yaml", GATED);
    let out = env.corral(&["run", &wf, "--json", "--run-id", "a"]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    let r = env.report(&out);
    assert_eq!(r["status"], "waiting");
    assert_eq!(r["waiting"], json!(["sign_off"]));
    assert_eq!(step(&r, "publish")["status"], "pending");

    let show = env.corral(&["show", "a", "--json"]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    let w = &shown["waiting"][0];
    assert_eq!(w["step"], "sign_off");
    assert_eq!(w["request"]["prompt"], "Publish the draft?");
    assert_eq!(w["request"]["context"], json!({ "draft": "draft" }));
    assert_eq!(w["request"]["schema"]["required"], json!(["approver"]));

    // Invalid JSON, then input that breaks the schema: refused, still waiting.
    let bad = env.corral(&["approve", "a", "sign_off", "--input", "{nope"]);
    assert_eq!(code(&bad), 4);
    assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));
    let bad = env.corral(&["approve", "a", "sign_off", "--input", r#"{"approver": 7}"#]);
    assert_eq!(code(&bad), 4);
    assert!(
        stderr(&bad).contains("/approver") && stderr(&bad).contains("still waits"),
        "{}",
        stderr(&bad)
    );
    let unknown = env.corral(&["approve", "a", "draft", "--input", "{}"]);
    assert_eq!(code(&unknown), 2);
    assert!(
        stderr(&unknown).contains("not waiting for a human"),
        "{}",
        stderr(&unknown)
    );
    let shown: Value =
        serde_json::from_slice(&env.corral(&["show", "a", "--json"]).stdout).unwrap();
    assert_eq!(shown["waiting"][0]["step"], "sign_off");

    let ok = env.corral(&[
        "approve",
        "a",
        "sign_off",
        "--input",
        r#"{"approver": "ana"}"#,
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let again = env.corral(&[
        "approve",
        "a",
        "sign_off",
        "--input",
        r#"{"approver": "bo"}"#,
    ]);
    assert_eq!(code(&again), 2, "a second answer is refused");
    let done = env.corral(&["resume", "a", "--json"]);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let r = env.report(&done);
    assert_eq!(r["outputs"]["published"], "ana approved");
    let j = env.journal("a");
    assert_eq!(count(&j, "approval_answered", "sign_off"), 1);
    assert_eq!(count(&j, "step_completed", "draft"), 1, "draft ran once");

    // Asking again asks a human again: the old answer is not reused.
    let again = env.corral(&["retry", "a", "--step", "sign_off", "--json"]);
    assert_eq!(code(&again), 10, "{}", stderr(&again));
    assert_eq!(env.report(&again)["waiting"], json!(["sign_off"]));
}

#[test]
fn a_rejected_approval_fails_the_run_with_the_reason() {
    let env = Env::new();
    let wf = env.workflow("gated.yaml", GATED);
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "r"])), 10);
    let rej = env.corral(&["reject", "r", "sign_off", "--reason", "too vague"]);
    assert_eq!(code(&rej), 0, "{}", stderr(&rej));
    let out = env.corral(&["resume", "r", "--json"]);
    assert_eq!(code(&out), 1);
    let r = env.report(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(step(&r, "sign_off")["error_kind"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("too vague"), "{r}");
    // A failed run schedules nothing more.
    assert_eq!(step(&r, "publish")["status"], "pending");
}

#[test]
fn a_waiting_process_continues_when_another_process_approves() {
    let env = Env::new();
    let wf = env.workflow("gated.yaml", GATED);
    let mut waiting = env.spawn(&["run", &wf, "--wait", "--run-id", "w"]);
    env.wait_for("w", "the approval request", |j| {
        count(j, "approval_requested", "sign_off") == 1
    });
    // Another process cannot drive the run while this one does.
    let second = env.corral(&["resume", "w"]);
    assert_eq!(code(&second), 11, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("is being driven by process"),
        "{}",
        stderr(&second)
    );

    let ok = env.corral(&[
        "approve",
        "w",
        "sign_off",
        "--input",
        r#"{"approver": "li"}"#,
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("the process driving it continues"));
    let status = waiting.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let shown: Value =
        serde_json::from_slice(&env.corral(&["show", "w", "--json"]).stdout).unwrap();
    assert_eq!(shown["run"]["status"], "completed");
    assert_eq!(shown["run"]["sessions"], 1, "no resume was needed");
}

const DEADLINE: &str = r#"
version: 1
name: deadline
agents:
  relay: { component: "@RELAY@" }
steps:
  - id: gate
    approval:
      prompt: Go ahead?
      schema: { type: object, properties: { go: { type: boolean } }, required: [go] }
      timeout: 300ms
      on_timeout: @ON_TIMEOUT@
  - { id: after, agent: relay, input: { text: "after" }, depends_on: [gate] }
outputs:
  go: $steps.gate.output.go
"#;

#[test]
fn approval_deadlines_default_or_fail_the_step() {
    let env = Env::new();
    let wf = env.workflow(
        "default.yaml",
        &DEADLINE.replace("@ON_TIMEOUT@", "default\n      default: { go: false }"),
    );
    let out = env.corral(&["run", &wf, "--wait", "--json", "--run-id", "d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = env.report(&out);
    assert_eq!(r["outputs"]["go"], false);
    assert_eq!(count(&env.journal("d"), "approval_expired", "gate"), 1);

    let wf = env.workflow("fail.yaml", &DEADLINE.replace("@ON_TIMEOUT@", "fail"));
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "f"])), 10);
    std::thread::sleep(Duration::from_millis(400));
    let out = env.corral(&["resume", "f", "--json"]);
    assert_eq!(code(&out), 1);
    let r = env.report(&out);
    assert_eq!(step(&r, "gate")["error_kind"], "approval_timeout");
    assert!(
        step(&r, "gate")["error"]
            .as_str()
            .unwrap()
            .contains("approval.timeout"),
        "{r}"
    );
}

#[test]
fn a_paused_step_can_be_answered_with_the_output_it_should_have_produced() {
    let env = Env::new();
    let wf = env.workflow(
        "pause.yaml",
        r#"
version: 1
name: pause
agents:
  relay: { component: "@RELAY@" }
steps:
  - { id: flaky, agent: relay, input: { text: "x", fail: true }, on_error: pause }
  - { id: after, agent: relay, input: { text: $steps.flaky.output.text, mark: "+" } }
outputs:
  text: $steps.after.output.text
"#,
    );
    let out = env.corral(&["run", &wf, "--json", "--run-id", "p"]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert_eq!(env.report(&out)["status"], "paused");
    // The answer must match the agent's output schema.
    let bad = env.corral(&["approve", "p", "flaky", "--input", r#"{"hops": 1}"#]);
    assert_eq!(code(&bad), 4, "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("\"text\" is a required property"),
        "{}",
        stderr(&bad)
    );
    // Rejecting fails the run for good, it does not pause it again.
    assert_eq!(code(&env.corral(&["run", &wf, "--run-id", "p2"])), 10);
    assert_eq!(
        code(&env.corral(&["reject", "p2", "flaky", "--reason", "no"])),
        0
    );
    let rejected = env.corral(&["resume", "p2", "--json"]);
    assert_eq!(code(&rejected), 1, "{}", stderr(&rejected));
    assert_eq!(
        step(&env.report(&rejected), "flaky")["error_kind"],
        "rejected"
    );

    let ok = env.corral(&[
        "approve",
        "p",
        "flaky",
        "--input",
        r#"{"text": "by hand", "hops": 1}"#,
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let done = env.corral(&["resume", "p", "--json"]);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let r = env.report(&done);
    assert_eq!(r["outputs"]["text"], "by hand+");
    assert_eq!(
        count(&env.journal("p"), "call_started", "flaky"),
        1,
        "not rerun"
    );
}
