//! The `corral` CLI as a client of `corral serve` (`--server`, `CORRAL_TOKEN`): run, runs, show, events, approve, reject and cancel behave as they do locally, with the same exit codes.

#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::process::{Command, Output};

use serde_json::Value;

use serve::*;

const APPROVAL: &str = "version: 1\nname: gated\nagents:\n  echo: { component: echo }\nsteps:\n  - { id: draft, agent: echo, input: { text: $params.text } }\n  - id: sign_off\n    approval:\n      prompt: Ship it?\n      schema: { type: object, properties: { approver: { type: string } }, required: [approver] }\n    input: { text: $steps.draft.output.text }\n  - { id: ship, agent: echo, depends_on: [sign_off], input: { text: $steps.draft.output.text } }\nparams:\n  text: { type: string }\n";

/// `corral --server <s> <args>` as tenant `token`.
fn corral(s: &Serve, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_corral"));
    c.arg("--server").arg(&s.base).args(args);
    c.env_remove("CORRAL_TOKEN");
    if let Some(t) = token {
        c.env("CORRAL_TOKEN", t);
    }
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run_id(o: &Output) -> String {
    let err = stderr(o);
    err.split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {err}"))
        .to_owned()
}

#[test]
fn run_show_runs_and_events_speak_to_the_server() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let file = s.dir.path().join("hello.yaml");
    std::fs::write(&file, echo_workflow("echo")).unwrap();

    let run = corral(&s, Some(ACME), &["run", file.to_str().unwrap()]);
    assert_eq!(code(&run), 0, "{}{}", stdout(&run), stderr(&run));
    assert!(stdout(&run).contains(": completed"), "{}", stdout(&run));
    let id = run_id(&run);
    // Progress came from the event stream.
    assert!(stderr(&run).contains("step_completed"), "{}", stderr(&run));

    let runs = corral(&s, Some(ACME), &["runs", "--json"]);
    assert_eq!(code(&runs), 0, "{}", stderr(&runs));
    let listed: Vec<Value> = stdout(&runs)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    let show = corral(&s, Some(ACME), &["show", &id]);
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    let text = stdout(&show);
    assert!(
        text.contains(&format!("run `{id}` of workflow `hello`: completed")),
        "{text}"
    );
    assert!(
        text.contains("completed") && text.lines().any(|l| l.trim_start().starts_with('b')),
        "{text}"
    );

    let events = corral(&s, Some(ACME), &["events", &id]);
    assert_eq!(code(&events), 0, "{}", stderr(&events));
    let seqs: Vec<i64> = stdout(&events)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.len() >= 4, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Another tenant sees none of it: the same exit code as a missing run.
    let other = corral(&s, Some(GLOBEX), &["show", &id]);
    assert_eq!(code(&other), 2, "{}", stderr(&other));
    assert!(stderr(&other).contains("404"), "{}", stderr(&other));
}

#[test]
fn approvals_and_cancels_go_through_the_server_with_local_exit_codes() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let file = s.dir.path().join("gated.yaml");
    std::fs::write(&file, APPROVAL).unwrap();
    let path = file.to_str().unwrap();

    // Waits for a human: exit 10, as locally.
    let run = corral(&s, Some(ACME), &["run", path, "-p", "text=ship me"]);
    assert_eq!(code(&run), 10, "{}{}", stdout(&run), stderr(&run));
    let id = run_id(&run);
    assert!(
        stdout(&run).contains("waiting: step `sign_off`: Ship it?"),
        "{}",
        stdout(&run)
    );

    // An answer that does not match the schema is refused.
    let bad = corral(
        &s,
        Some(ACME),
        &["approve", &id, "sign_off", "--input", r#"{"who": 1}"#],
    );
    assert_ne!(code(&bad), 0, "{}", stdout(&bad));
    let ok = corral(
        &s,
        Some(ACME),
        &[
            "approve",
            &id,
            "sign_off",
            "--input",
            r#"{"approver": "ana"}"#,
        ],
    );
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let follow = corral(&s, Some(ACME), &["events", &id, "--follow"]);
    assert_eq!(code(&follow), 0, "{}", stderr(&follow));
    assert!(
        stdout(&follow).contains("run_finished"),
        "{}",
        stdout(&follow)
    );
    let show = corral(&s, Some(ACME), &["show", &id, "--json"]);
    let view: Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(view["status"], "completed", "{view}");

    // A second run, rejected; a third, cancelled while it waits.
    let second = run_id(&corral(&s, Some(ACME), &["run", path, "-p", "text=no"]));
    let rejected = corral(
        &s,
        Some(ACME),
        &["reject", &second, "sign_off", "--reason", "not now"],
    );
    assert_eq!(code(&rejected), 0, "{}", stderr(&rejected));
    let third = run_id(&corral(&s, Some(ACME), &["run", path, "-p", "text=later"]));
    let cancel = corral(&s, Some(ACME), &["cancel", &third]);
    assert_eq!(code(&cancel), 0, "{}", stderr(&cancel));
    assert!(stdout(&cancel).contains("cancelled"), "{}", stdout(&cancel));
}

#[test]
fn a_missing_or_wrong_token_and_local_only_commands_say_what_to_do() {
    let s = Serve::start();
    let none = corral(&s, None, &["runs"]);
    assert_eq!(code(&none), 2);
    assert!(stderr(&none).contains("CORRAL_TOKEN"), "{}", stderr(&none));
    let wrong = corral(&s, Some("not-a-token"), &["runs"]);
    assert_eq!(code(&wrong), 5, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("401"), "{}", stderr(&wrong));
    let gc = corral(&s, Some(ACME), &["gc", "--older-than", "1d"]);
    assert_eq!(code(&gc), 2);
    assert!(
        stderr(&gc).contains("`corral gc` works on this machine only"),
        "{}",
        stderr(&gc)
    );
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let invalid = s.dir.path().join("bad.yaml");
    std::fs::write(&invalid, "version: 1\nname: bad\nagents:\n  echo: { component: echo }\nsteps:\n  - { id: a, agent: nobody }\n").unwrap();
    let bad = corral(&s, Some(ACME), &["run", invalid.to_str().unwrap()]);
    assert_eq!(code(&bad), 9, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("nobody"), "{}", stderr(&bad));
    // Named as the user's file, with its line.
    assert!(
        stderr(&bad).contains("bad.yaml:6: steps[0].agent"),
        "{}",
        stderr(&bad)
    );
}
