//! `corral serve` under pressure: spent quotas answer 429, the fuel window holds across runs and restarts, one tenant's flood does not starve another, and a thousand runs from fifty clients all complete.

#[path = "serve_support.rs"]
mod serve;
#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use serve::*;

#[test]
fn spent_quotas_answer_429_with_the_quota_and_when_it_resets() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(TINY, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s.submit(TINY, &echo_workflow("echo"));
        assert!(matches!(r.status, 201 | 429), "{}", r.body);
        if r.status == 201 {
            ids.push(r.body["id"].as_str().unwrap().to_owned());
            s.wait_run(TINY, ids.last().unwrap());
        } else {
            // Only the concurrent-runs quota may refuse these two.
            assert_eq!(r.body["quota"]["quota"], "concurrent_runs", "{}", r.body);
        }
    }
    let third = s.submit(TINY, &echo_workflow("echo"));
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(problem_type(&third).ends_with("/quota-exceeded"));
    assert_eq!(third.body["quota"]["quota"], "runs_per_minute");
    assert_eq!(third.body["quota"]["limit"], 2);
    let after: u64 = third.retry_after.as_deref().unwrap().parse().unwrap();
    let metrics = s.call("GET", "/metrics", None, None).body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"corral_quota_refusals_total{tenant="tiny",quota="runs_per_minute"} 1"#),
        "{metrics}"
    );
    assert!((1..=60).contains(&after), "{after}");
    // A restart does not refill the allowance: its state is in the store.
    s.kill9();
    s.spawn();
    let fourth = s.submit(TINY, &echo_workflow("echo"));
    assert_eq!(fourth.status, 429, "{}", fourth.body);
    assert_eq!(fourth.body["quota"]["quota"], "runs_per_minute");
    // Another tenant is not affected.
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    assert_eq!(s.submit(ACME, &echo_workflow("echo")).status, 201);
}

#[test]
fn the_fuel_quota_holds_across_concurrent_runs_and_a_restart() {
    let mut s = Serve::start();
    assert_eq!(
        s.upload(METERED, "echo", &bytes(support::agents::ECHO))
            .status,
        201
    );
    // Two runs that would each need about 120K, against 100K per hour.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let r = s.submit(METERED, &echo_chain(10));
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let runs: Vec<Value> = ids.iter().map(|id| s.wait_run(METERED, id)).collect();
    let used: u64 = runs.iter().map(|r| r["fuel_used"].as_u64().unwrap()).sum();
    assert!(used <= 100_000, "the tenant's runs used {used} of 100K");
    assert!(used > 80_000, "the window was spent, not left idle: {used}");
    assert!(
        runs.iter().any(|r| r["status"] == "fuel_exhausted"),
        "{runs:?}"
    );
    let cut = runs
        .iter()
        .find(|r| r["status"] == "fuel_exhausted")
        .unwrap();
    assert!(
        cut["error"].as_str().unwrap().contains("fuel_per_window")
            || cut.to_string().contains("fuel_per_window"),
        "{cut}"
    );

    // Spent: a new run is refused at the door, with when it resets...
    let refused = s.submit(METERED, &echo_chain(1));
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["quota"]["quota"], "fuel_per_window");
    assert_eq!(refused.body["quota"]["limit"], 100_000);
    assert!(refused.retry_after.is_some());
    // ...and still after a restart: the ledger is in the store.
    s.kill9();
    s.spawn();
    let again = s.submit(METERED, &echo_chain(1));
    assert_eq!(again.status, 429, "{}", again.body);
    // Other tenants are untouched.
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    assert_eq!(s.submit(ACME, &echo_chain(3)).status, 201);
}

#[test]
fn a_tenant_flooding_the_server_does_not_hold_back_another_tenants_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Serve::unstarted(dir);
    // Two call slots in all, so the flood queues.
    std::fs::write(
        s.dir.path().join("corral.toml"),
        config().replace("[server]\n", "[server]\ncall_slots = 2\n"),
    )
    .unwrap();
    s.spawn();
    assert_eq!(
        s.upload(GLOBEX, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let gates = s.data("globex").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    // Globex floods: ten runs whose one call each waits at its own gate.
    let flood: Vec<String> = (0..10)
        .map(|i| {
            let wf = format!(
                "version: 1\nname: flood\nagents:\n  latch: {{ component: latch, grants: {{ dirs: [ {{ host: gates, guest: /gates }} ] }}, budget: {{ timeout: 30s }} }}\nsteps:\n  - {{ id: a, agent: latch, input: {{ text: x, gate: f{i} }} }}\n"
            );
            let r = s.submit(GLOBEX, &wf);
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Two hold the slots; eight wait behind them.
    s.wait_metric(r#"corral_calls_waiting{tenant="globex"} 8"#);
    let mine = s.submit(ACME, &echo_chain(1));
    assert_eq!(mine.status, 201, "{}", mine.body);
    // Free the two slots by letting the running calls finish. Served in
    // turn, globex gets the first slot and acme the second; first come,
    // first served would give both to globex's queue, and acme's run would
    // wait for gates this test never opens.
    let running: Vec<usize> = (0..flood.len())
        .filter(|&i| {
            events_so_far(&s, GLOBEX, &flood[i])
                .iter()
                .any(|e| e["type"] == "call_started")
        })
        .collect();
    assert_eq!(running.len(), 2, "two call slots, two calls running");
    for i in running {
        std::fs::write(gates.join(format!("f{i}")), "").unwrap();
    }
    let done = s.wait_run(ACME, mine.body["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    // Globex's queue is still there behind it.
    let finished = flood
        .iter()
        .filter(|id| s.get(&format!("/v1/runs/{id}"), GLOBEX).body["status"] == "completed")
        .count();
    assert!(finished <= 3, "{finished} of globex's runs finished first");
    for i in 0..10 {
        std::fs::write(gates.join(format!("f{i}")), "").unwrap();
    }
    for id in &flood {
        assert_eq!(s.wait_run(GLOBEX, id)["status"], "completed");
    }
}

#[test]
fn a_thousand_runs_from_fifty_clients_across_five_tenants_all_complete() {
    let runs: usize = std::env::var("CORRAL_LOAD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<String> = (0..5).map(|i| format!("load{i}")).collect();
    let mut toml = String::new();
    for t in &tenants {
        toml.push_str(&format!(
            "[[tenant]]\nid = \"{t}\"\ntokens = [\"{}\"]\n[tenant.quota]\nruns_per_minute = 100000\nconcurrent_runs = 1000\nfuel_per_window = \"1000G\"\n",
            hash(t)
        ));
    }
    std::fs::write(dir.path().join("corral.toml"), toml).unwrap();
    let mut s = Serve::unstarted(dir);
    s.spawn();
    let pid = s.child.as_ref().unwrap().id();
    for t in &tenants {
        assert_eq!(
            s.upload(t, "echo", &bytes(support::agents::ECHO)).status,
            201
        );
    }
    // Warm up (compile cache, first runs), then take the baseline.
    for t in &tenants {
        let r = s.submit(t, &echo_chain(10));
        s.wait_run(t, r.body["id"].as_str().unwrap());
    }
    let baseline = rss(pid);

    let next = std::sync::atomic::AtomicUsize::new(0);
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= runs {
                        break;
                    }
                    let t = &tenants[n % tenants.len()];
                    let r = s.submit(t, &echo_chain(10));
                    assert_eq!(r.status, 201, "run {n}: {}", r.body);
                    ids.lock()
                        .unwrap()
                        .push((t.clone(), r.body["id"].as_str().unwrap().to_owned()));
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), runs);
    for (t, id) in &ids {
        let done = s.wait_run(t, id);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["progress"]["finished"], 10);
    }
    let after = rss(pid);
    eprintln!(
        "{runs} runs: resident memory {} MiB before, {} MiB after",
        baseline >> 20,
        after >> 20
    );
    assert!(
        after < baseline + (256 << 20),
        "resident memory grew from {} MiB to {} MiB",
        baseline >> 20,
        after >> 20
    );
}

#[test]
fn a_tenant_holds_at_most_its_share_of_event_streams() {
    let s = Serve::start();
    assert_eq!(
        s.upload(TINY, "latch", &bytes(support::agents::LATCH))
            .status,
        201
    );
    let gates = s.data("tiny").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let run = s.submit(TINY, &LATCHED.replace("timeout: 30s", "timeout: 20s"));
    assert_eq!(run.status, 201, "{}", run.body);
    let id = run.body["id"].as_str().unwrap().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let open = || {
        agent
            .get(s.url(&format!("/v1/runs/{id}/events")))
            .header("Authorization", format!("Bearer {TINY}"))
            .call()
            .unwrap()
    };
    // The run is held at its first gate: its streams stay open.
    let (a, b) = (open(), open());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let third = Reply::from(open());
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.body["quota"]["quota"], "event_streams");
    // Closing one frees its place.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open();
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(b);
    for g in ["s1", "s2", "s3"] {
        std::fs::write(gates.join(g), "").unwrap();
    }
    assert_eq!(s.wait_run(TINY, &id)["status"], "completed");
}

#[test]
fn max_packet_holds_on_every_path_that_takes_params() {
    let s = Serve::start();
    assert_eq!(
        s.upload(ACME, "echo", &bytes(support::agents::ECHO)).status,
        201
    );
    let big = "x".repeat(2 << 20);
    let submitted = s.post(
        "/v1/runs",
        ACME,
        &serde_json::json!({ "workflow": echo_workflow("echo"), "params": { "text": big } }),
    );
    assert_eq!(submitted.status, 429, "{}", submitted.body);
    let run = s.submit(ACME, &echo_workflow("echo"));
    let id = run.body["id"].as_str().unwrap().to_owned();
    s.wait_run(ACME, &id);
    let resumed = s.post(
        &format!("/v1/runs/{id}/resume"),
        ACME,
        &serde_json::json!({ "params": { "text": big } }),
    );
    assert_eq!(resumed.status, 429, "{}", resumed.body);
    assert_eq!(resumed.body["quota"]["quota"], "max_packet");
}

/// A tenant's model tokens per window hold across its runs and a restart:
/// the window lives in the store, and a request that cannot fit is refused
/// before it is sent, naming `quota.tokens_per_window`.
#[test]
fn the_token_window_holds_across_runs_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        r#"{"responses": [{"when": {"contains": ""}, "content": "{\"summary\": \"s\", \"keywords\": []}", "usage": {"prompt_tokens": 50, "completion_tokens": 10}}]}"#,
    )
    .unwrap();
    let config = format!(
        "{}\n[[tenant]]\nid = \"thrifty\"\ntokens = [\"{}\"]\n[tenant.quota]\nmodels = [\"fast\"]\ntokens_per_window = \"400\"\n",
        config(),
        hash("thrifty-token")
    );
    let mut s = Serve::start_with(&config);
    std::fs::write(
        s.dir.path().join("models.toml"),
        format!(
            "[providers.p]\nkind = \"scripted\"\nfile = {:?}\n[models.fast]\nprovider = \"p\"\nmodel = \"m\"\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    s.kill9();
    s.spawn();
    let token = "thrifty-token";
    assert_eq!(
        s.upload(token, "extract", &bytes(support::agents::EXTRACT))
            .status,
        201
    );
    let workflow = "version: 1\nname: t\nagents:\n  extract: { component: extract, grants: { models: [fast] } }\nsteps:\n  - { id: a, agent: extract, input: { text: hello, max_tokens: 16 } }\n";
    let run = |s: &Serve| {
        let r = s.submit(token, workflow);
        assert_eq!(r.status, 201, "{}", r.body);
        s.wait_run(token, r.body["id"].as_str().unwrap())
    };
    // Each run is charged the provider's 60 tokens; runs complete until the
    // next reservation (the prompt's estimate plus max_tokens) no longer
    // fits in what is left of the 400.
    let mut completed = 0;
    let refused = loop {
        let r = run(&s);
        if r["status"] != "completed" {
            break r;
        }
        assert_eq!(r["steps"][0]["tokens_used"], 60, "{r}");
        completed += 1;
        assert!(completed < 7, "400 tokens cannot pay for 7 runs of 60");
    };
    assert!(completed >= 1);
    assert_eq!(refused["status"], "failed", "{refused}");
    let error = refused["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("quota.tokens_per_window"), "{error}");
    // A restart does not refill the window.
    s.kill9();
    s.spawn();
    let fourth = run(&s);
    let error = fourth["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("quota.tokens_per_window"), "{fourth}");
}
