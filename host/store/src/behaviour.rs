//! The store's behaviour, one suite for every backend: leases and fencing, commits, fuel, tenants, webhooks, rate state and artifacts. Each backend's tests call `behaviour_tests!` with a way to open a fresh store and to run raw SQL on it.

use serde_json::json;

use crate::*;

pub(crate) fn new_run(id: &str) -> NewRun {
    NewRun {
        id: id.into(),
        workflow: "w".into(),
        file: "w.yaml".into(),
        definition: "version: 1".into(),
        digest: "sha256:0".into(),
        params: json!({}),
        components: json!({}),
        tenant: String::new(),
        idempotency_key: None,
        max_running: None,
    }
}

/// The tenants a claiming process serves, in these tests.
fn acme() -> Vec<String> {
    vec!["acme".into()]
}

fn tenant_run(id: &str, tenant: &str, key: Option<&str>) -> NewRun {
    NewRun {
        tenant: tenant.into(),
        idempotency_key: key.map(Into::into),
        ..new_run(id)
    }
}

/// A fresh store of one backend, and raw SQL on it (for what only a
/// damaged or paused world would do).
pub(crate) trait Fixture {
    fn store(&self) -> &dyn Store;
    fn sql(&self, sql: &str);
}

pub(crate) fn a_live_owner_keeps_its_lease_and_a_dead_one_loses_it(f: &dyn Fixture) {
    let store = f.store();
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    assert!(matches!(
        store.create_run(&new_run("r"), &me),
        Err(StoreError::RunExists(_))
    ));
    // Another driver in a live process (this one) is refused.
    let rival = Owner {
        token: "other".into(),
        ..me.clone()
    };
    let err = store.claim("r", &rival, LEASE).unwrap_err();
    assert!(
        err.to_string().contains("is being driven by process"),
        "{err}"
    );
    assert!(matches!(store.heartbeat("r", &mine), Ok(0)));
    // A driver whose process is gone is taken over at once.
    let ghost = Owner {
        pid: u32::MAX - 1,
        ..me.clone()
    };
    store.release("r", &mine).unwrap();
    let (_, haunted) = store.claim("r", &ghost, LEASE).unwrap();
    let (rec, _) = store.claim("r", &rival, LEASE).unwrap();
    assert_eq!(rec.sessions, 3);
    assert_eq!(rec.epoch, 3, "every claim bumps the epoch");
    assert!(matches!(
        store.heartbeat("r", &haunted),
        Err(StoreError::LeaseLost(_))
    ));
}

pub(crate) fn only_the_runs_owner_commits(f: &dyn Fixture) {
    let store = f.store();
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    let good = Entry::new("step_started", Some("a".into()), "{}".into());
    let other = Lease {
        owner: Owner {
            token: "other".into(),
            ..me.clone()
        },
        epoch: mine.epoch,
    };
    assert!(matches!(
        store.commit("r", &other, std::slice::from_ref(&good)),
        Err(StoreError::LeaseLost(_))
    ));
    let stale = Lease {
        epoch: mine.epoch - 1,
        ..mine.clone()
    };
    assert!(matches!(
        store.commit("r", &stale, std::slice::from_ref(&good)),
        Err(StoreError::LeaseLost(_))
    ));
    assert!(store.journal("r", 0, 10).unwrap().is_empty());
    store.commit("r", &mine, &[good]).unwrap();
    assert_eq!(store.journal("r", 0, 10).unwrap().len(), 1);
}

/// A driver whose lease went stale (paused past it, then woken) must
/// not write over a `corral cancel` made meanwhile.
pub(crate) fn a_cancel_fences_off_a_stale_driver(f: &dyn Fixture) {
    let store = f.store();
    // A live process of this host, so only the lease's age can make it stale.
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    // Its heartbeat stopped: no renewal for longer than the lease.
    f.sql(&format!(
        "UPDATE runs SET heartbeat_ms = heartbeat_ms - {}",
        2 * LEASE.as_millis()
    ));
    let rec = store.request_cancel("r", LEASE, false).unwrap();
    assert_eq!(rec.status, RunState::Cancelled);
    // The woken driver's commit and heartbeat are refused; the cancel stands.
    let late = Entry {
        run_state: Some((RunState::Completed, None)),
        ..Entry::new("run_finished", None, "{}".into())
    };
    assert!(matches!(
        store.commit("r", &mine, &[late]),
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.heartbeat("r", &mine),
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(store.run("r").unwrap().status, RunState::Cancelled);
}

pub(crate) fn fuel_charges_add_up_across_commits(f: &dyn Fixture) {
    let store = f.store();
    let mine = store
        .create_run(&new_run("r"), &Owner::this_process())
        .unwrap();
    let charge = |n: i64| Entry {
        fuel_charge: n,
        ..Entry::new("call_started", Some("a".into()), "{}".into())
    };
    store
        .commit("r", &mine, &[charge(500), charge(-120)])
        .unwrap();
    store.commit("r", &mine, &[charge(300)]).unwrap();
    assert_eq!(store.run("r").unwrap().fuel_charged, 680);
}

pub(crate) fn steps_blobs_and_the_cache_are_written_with_their_entries(f: &dyn Fixture) {
    let store = f.store();
    let mine = store
        .create_run(&new_run("r"), &Owner::this_process())
        .unwrap();
    let step = StepRecord {
        step: "a".into(),
        status: StepState::Completed,
        attempts: 2,
        fuel_used: 1234,
        tokens_used: 56,
        output: Some("sha256:out".into()),
        completed_order: Some(1),
        ..Default::default()
    };
    let e = Entry {
        blob: Some(("sha256:out".into(), b"{\"x\":1}".to_vec())),
        step_state: Some(step.clone()),
        cache: Some(("key".into(), "sha256:out".into(), None)),
        ..Entry::new(
            "step_completed",
            Some("a".into()),
            "{\"step\":\"a\"}".into(),
        )
    };
    let done = Entry {
        run_state: Some((RunState::Completed, None)),
        run_params: Some("{\"p\":2}".into()),
        ..Entry::new("run_finished", None, "{}".into())
    };
    store.commit("r", &mine, &[e, done]).unwrap();
    assert_eq!(store.steps("r").unwrap(), [step]);
    assert_eq!(store.blob("sha256:out").unwrap().unwrap(), b"{\"x\":1}");
    assert_eq!(
        store.cache_get("key", now_ms()).unwrap().as_deref(),
        Some("sha256:out")
    );
    let rec = store.run("r").unwrap();
    assert_eq!(rec.status, RunState::Completed);
    assert_eq!(rec.params, json!({"p": 2}));
    let j = store.journal("r", 0, 10).unwrap();
    assert_eq!(j.len(), 2);
    assert_eq!(j[0].data, json!({"step": "a"}));
    assert_eq!(store.journal("r", j[0].seq, 10).unwrap().len(), 1);
}

pub(crate) fn a_tenant_sees_only_its_own_runs_page_by_page(f: &dyn Fixture) {
    let store = f.store();
    let owner = Owner::this_process();
    for i in 0..5 {
        store
            .create_run(&tenant_run(&format!("a{i}"), "acme", None), &owner)
            .unwrap();
    }
    store
        .create_run(&tenant_run("b0", "globex", None), &owner)
        .unwrap();
    store.create_run(&new_run("local"), &owner).unwrap();

    let mut q = RunQuery {
        tenant: "acme".into(),
        limit: 2,
        ..RunQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.tenant_runs(&q).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|r| r.tenant == "acme"), "{page:?}");
        let last = page.last().unwrap();
        q.before = Some((last.created_ms, last.id.clone()));
        seen.extend(page.into_iter().map(|r| r.id));
    }
    seen.sort();
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4"]);

    let globex = store
        .tenant_runs(&RunQuery {
            tenant: "globex".into(),
            limit: 10,
            ..RunQuery::default()
        })
        .unwrap();
    assert_eq!(globex.len(), 1);
    let done = store
        .tenant_runs(&RunQuery {
            tenant: "acme".into(),
            status: Some(RunState::Completed),
            limit: 10,
            ..RunQuery::default()
        })
        .unwrap();
    assert!(done.is_empty(), "no acme run has completed: {done:?}");
}

pub(crate) fn the_same_idempotency_key_names_the_first_run_and_only_within_its_tenant(
    f: &dyn Fixture,
) {
    let store = f.store();
    let owner = Owner::this_process();
    store
        .create_run(&tenant_run("r1", "acme", Some("k")), &owner)
        .unwrap();
    match store.create_run(&tenant_run("r2", "acme", Some("k")), &owner) {
        Err(StoreError::SameRequest { run }) => assert_eq!(run, "r1"),
        other => panic!("expected SameRequest, got {other:?}"),
    }
    // Another tenant's identical key is its own.
    store
        .create_run(&tenant_run("r3", "globex", Some("k")), &owner)
        .unwrap();
    assert_eq!(store.run("r3").unwrap().tenant, "globex");
}

pub(crate) fn agents_and_workflows_are_registered_per_tenant(f: &dyn Fixture) {
    let store = f.store();
    let agent = |tenant: &str, digest: &str| AgentRecord {
        tenant: tenant.into(),
        name: "echo".into(),
        digest: digest.into(),
        info: json!({"name": "echo"}),
        size: 10,
        created_ms: 1,
    };
    store.put_agent(&agent("acme", "sha256:1")).unwrap();
    store.put_agent(&agent("acme", "sha256:2")).unwrap();
    store.put_agent(&agent("globex", "sha256:3")).unwrap();
    assert_eq!(store.agents("acme").unwrap(), [agent("acme", "sha256:2")]);
    assert!(store.delete_agent("acme", "echo").unwrap());
    assert!(!store.delete_agent("acme", "echo").unwrap());
    assert_eq!(store.agents("globex").unwrap().len(), 1);
    let w = WorkflowRecord {
        tenant: "acme".into(),
        name: "nightly".into(),
        text: "version: 1".into(),
        format: "yaml".into(),
        digest: "sha256:w".into(),
        created_ms: 2,
    };
    store.put_workflow(&w).unwrap();
    store
        .put_workflow(&WorkflowRecord {
            text: "version: 1 # new".into(),
            ..w.clone()
        })
        .unwrap();
    let wasm = b"\0asm not really".to_vec();
    store.put_component("sha256:c", &wasm).unwrap();
    store.put_component("sha256:c", &wasm).unwrap();
    assert_eq!(store.component("sha256:c").unwrap(), Some(wasm));
    assert_eq!(store.component("sha256:none").unwrap(), None);
    let listed = store.workflows("acme").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, "version: 1 # new");
    assert!(store.workflows("globex").unwrap().is_empty());
}

pub(crate) fn a_tenant_at_its_limit_of_running_runs_is_refused_in_the_same_transaction(
    f: &dyn Fixture,
) {
    let store = f.store();
    let owner = Owner::this_process();
    let limited = |id: &str, tenant: &str| NewRun {
        max_running: Some(2),
        ..tenant_run(id, tenant, None)
    };
    store.create_run(&limited("a1", "acme"), &owner).unwrap();
    store.create_run(&limited("a2", "acme"), &owner).unwrap();
    match store.create_run(&limited("a3", "acme"), &owner) {
        Err(StoreError::TooManyRuns { tenant, running }) => {
            assert_eq!((tenant.as_str(), running), ("acme", 2))
        }
        other => panic!("expected TooManyRuns, got {other:?}"),
    }
    assert!(matches!(store.run("a3"), Err(StoreError::UnknownRun(_))));
    // Another tenant's runs do not count.
    store.create_run(&limited("b1", "globex"), &owner).unwrap();
}

pub(crate) fn fuel_windows_never_grant_beyond_the_limit_and_take_refunds(f: &dyn Fixture) {
    let store = f.store();
    let hour = std::time::Duration::from_secs(3600);
    let a = store.reserve_fuel("acme", hour, 100, 60).unwrap();
    assert_eq!((a.granted, a.charged), (60, 60));
    let b = store.reserve_fuel("acme", hour, 100, 60).unwrap();
    assert_eq!((b.granted, b.charged), (40, 100), "only what is left");
    let c = store.reserve_fuel("acme", hour, 100, 1).unwrap();
    assert_eq!(c.granted, 0, "spent");
    assert!(c.end_ms > c.start_ms);
    store.settle_fuel("acme", a.start_ms, 60, 10).unwrap();
    assert_eq!(store.fuel_window("acme", hour, 100).unwrap().charged, 50);
    assert_eq!(
        store
            .reserve_fuel("globex", hour, 100, 100)
            .unwrap()
            .granted,
        100,
        "per tenant"
    );
}

fn message(id: &str, tenant: &str, run: &str) -> WebhookMessage {
    WebhookMessage {
        id: id.into(),
        tenant: tenant.into(),
        run: run.into(),
        event: "run.completed".into(),
        url: "http://127.0.0.1:9/hook".into(),
        payload: "{}".into(),
        created_ms: 1,
        attempts: 0,
        state: DeliveryState::Pending,
        next_ms: Some(1_000),
    }
}

pub(crate) fn webhook_messages_are_claimed_once_retried_when_due_and_recorded(f: &dyn Fixture) {
    let store = f.store();
    let queued = [message("m1", "acme", "r1"), message("m2", "globex", "r2")];
    store.enqueue_webhooks(&queued).unwrap();
    // Queuing the same message again changes nothing.
    store.enqueue_webhooks(&queued[..1]).unwrap();
    assert!(
        store.claim_webhooks(999, LEASE, 10).unwrap().is_empty(),
        "not due yet"
    );
    let claimed = store.claim_webhooks(1_000, LEASE, 10).unwrap();
    assert_eq!(claimed.len(), 2);
    // Held: a second worker gets nothing until the hold ends.
    assert!(store.claim_webhooks(1_000, LEASE, 10).unwrap().is_empty());
    let failed = DeliveryAttempt {
        message: "m1".into(),
        attempt: 1,
        at_ms: 1_000,
        status: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 3,
    };
    store
        .record_delivery(&failed, DeliveryState::Pending, Some(2_000))
        .unwrap();
    let ok = DeliveryAttempt {
        message: "m2".into(),
        status: Some(204),
        error: None,
        ..failed.clone()
    };
    store
        .record_delivery(&ok, DeliveryState::Delivered, None)
        .unwrap();
    let again = store.claim_webhooks(2_000, LEASE, 10).unwrap();
    assert_eq!(
        again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["m1"]
    );
    assert_eq!(again[0].attempts, 1);
    let d = store.deliveries("acme", "r1").unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].tries, [failed]);
    assert!(
        store.deliveries("acme", "r2").unwrap().is_empty(),
        "per tenant"
    );
    assert_eq!(
        store.deliveries("globex", "r2").unwrap()[0].message.state,
        DeliveryState::Delivered
    );
}

pub(crate) fn rate_state_is_read_and_replaced(f: &dyn Fixture) {
    let store = f.store();
    let mut seen = Vec::new();
    store
        .update_rate("k", &mut |old| {
            seen.push(old);
            Some(7)
        })
        .unwrap();
    // `None` leaves the value as it is.
    store
        .update_rate("k", &mut |old| {
            seen.push(old);
            None
        })
        .unwrap();
    store
        .update_rate("k", &mut |old| {
            seen.push(old);
            old.map(|v| v + 1)
        })
        .unwrap();
    store
        .update_rate("other", &mut |old| {
            seen.push(old);
            None
        })
        .unwrap();
    assert_eq!(seen, [None, Some(7), Some(7), None]);
}

/// Bytes in, a run's hold, reads across chunk boundaries, the run's and
/// the tenant's limits, and `gc` once no run holds them.
pub(crate) fn artifacts_are_held_by_runs_under_limits_and_swept_when_unheld(f: &dyn Fixture) {
    let store = f.store();
    let owner = Owner::this_process();
    let mine = store
        .create_run(&tenant_run("r", "acme", None), &owner)
        .unwrap();
    store
        .create_run(&tenant_run("s", "acme", None), &owner)
        .unwrap();
    let bytes: Vec<u8> = (0..(2 * 1024 * 1024 + 5))
        .map(|i| (i % 251) as u8)
        .collect();
    let limits = ArtifactLimits {
        run: 10 << 20,
        tenant: 12 << 20,
    };
    let put = |run: &str, data: &[u8], limits| {
        let mut up = store.artifact_upload().unwrap();
        for c in data.chunks(300_000) {
            up.write(c).unwrap();
        }
        store
            .artifact_finish(run, up, "application/x-test", limits)
            .unwrap()
    };
    let a = put("r", &bytes, limits).unwrap();
    assert_eq!(a.size, bytes.len() as u64);
    assert_eq!(
        store.artifact("r", &a.digest).unwrap().unwrap().size,
        a.size
    );
    assert!(
        store.artifact("s", &a.digest).unwrap().is_none(),
        "held by `r` only"
    );
    // Reads at any offset, across chunk boundaries, end empty.
    let mut back = Vec::new();
    let mut offset = 0;
    loop {
        let chunk = store.artifact_read(&a.digest, offset, 700_000).unwrap();
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        back.extend(chunk);
    }
    assert_eq!(back, bytes);
    // The same bytes for another run are stored once and held twice.
    assert_eq!(put("s", &bytes, limits).unwrap().digest, a.digest);
    // Past the run's limit, then past the tenant's (two runs' holds).
    let small = ArtifactLimits { run: 100, ..limits };
    match put("r", &[7u8; 200], small) {
        Err(ArtifactRefusal::Run { limit: 100, .. }) => {}
        other => panic!("expected a run refusal, got {other:?}"),
    }
    let tight = ArtifactLimits {
        run: 10 << 20,
        tenant: (2 * bytes.len() + 10) as u64,
    };
    match put("r", &[8u8; 20], tight) {
        Err(ArtifactRefusal::Tenant { .. }) => {}
        other => panic!("expected a tenant refusal, got {other:?}"),
    }
    // Finished and old: gc drops the runs' holds, then the bytes.
    let done = Entry {
        run_state: Some((RunState::Completed, None)),
        ..Entry::new("run_finished", None, "{}".into())
    };
    store.commit("r", &mine, &[done]).unwrap();
    store.release("r", &mine).unwrap();
    let kept = store.gc(now_ms() + 60_000).unwrap();
    assert_eq!(kept.runs, 1);
    assert_eq!(kept.artifacts, 0, "run `s` still holds the bytes");
    assert_eq!(store.artifact_read(&a.digest, 0, 10).unwrap().len(), 10);
}

pub(crate) fn runs_nobody_renews_are_claimed(f: &dyn Fixture) {
    let store = f.store();
    let me = Owner::this_process();
    let live = store
        .create_run(&tenant_run("live", "acme", None), &me)
        .unwrap();
    store
        .create_run(&tenant_run("stale", "acme", None), &me)
        .unwrap();
    store.create_run(&new_run("operator"), &me).unwrap();
    let done = store
        .create_run(&tenant_run("done", "acme", None), &me)
        .unwrap();
    let finished = Entry {
        run_state: Some((RunState::Completed, None)),
        ..Entry::new("run_finished", None, "{}".into())
    };
    store.commit("done", &done, &[finished]).unwrap();
    let me_too = Owner {
        token: "claimer".into(),
        ..me.clone()
    };
    assert!(store.claim_next(&me_too, LEASE, &acme()).unwrap().is_none());
    f.sql(&format!(
        "UPDATE runs SET heartbeat_ms = heartbeat_ms - {} WHERE id != 'live'",
        2 * LEASE.as_millis()
    ));
    let mut ids = Vec::new();
    while let Some((rec, _)) = store.claim_next(&me_too, LEASE, &acme()).unwrap() {
        ids.push(rec.id);
    }
    assert_eq!(ids, ["stale"], "a tenant's running run whose lease expired");
    store.heartbeat("live", &live).unwrap();
}

pub(crate) fn a_submitted_run_waits_for_its_first_claim(f: &dyn Fixture) {
    let store = f.store();
    store.submit_run(&tenant_run("q", "acme", None)).unwrap();
    let rec = store.run("q").unwrap();
    assert_eq!(rec.display_status(now_ms(), LEASE), "queued");
    assert_eq!((rec.sessions, rec.epoch, rec.owner), (0, 0, None));
    let worker = Owner::this_process();
    let others = vec!["globex".to_owned()];
    assert!(
        store.claim_next(&worker, LEASE, &others).unwrap().is_none(),
        "a process claims only the runs of the tenants it serves"
    );
    let (rec, lease) = store
        .claim_next(&worker, LEASE, &acme())
        .unwrap()
        .expect("claimable");
    assert_eq!((rec.id.as_str(), rec.sessions, rec.epoch), ("q", 1, 1));
    assert_eq!(rec.display_status(now_ms(), LEASE), "running");
    let rival = Owner {
        token: "rival".into(),
        ..worker.clone()
    };
    assert!(
        store.claim_next(&rival, LEASE, &acme()).unwrap().is_none(),
        "taken"
    );
    store
        .commit(
            "q",
            &lease,
            &[Entry::new("step_started", None, "{}".into())],
        )
        .unwrap();
    // The operator's own runs are never claimed by a server or worker.
    store.create_run(&new_run("mine"), &worker).unwrap();
    f.sql("UPDATE runs SET owner = NULL, heartbeat_ms = NULL WHERE id = 'mine'");
    assert!(store.claim_next(&rival, LEASE, &acme()).unwrap().is_none());
}

pub(crate) fn processes_claiming_at_once_each_take_a_different_run(f: &dyn Fixture) {
    let store = f.store();
    for i in 0..6 {
        store
            .submit_run(&tenant_run(&format!("q{i}"), "acme", None))
            .unwrap();
    }
    let claimed: Vec<String> = std::thread::scope(|s| {
        let claims: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    let me = Owner {
                        token: format!("worker{i}"),
                        ..Owner::this_process()
                    };
                    store
                        .claim_next(&me, LEASE, &acme())
                        .unwrap()
                        .map(|(r, _)| r.id)
                })
            })
            .collect();
        claims
            .into_iter()
            .filter_map(|c| c.join().unwrap())
            .collect()
    });
    let mut ids = claimed.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), claimed.len(), "a run claimed twice: {claimed:?}");
    // Under contention a claim may find every candidate locked and come
    // back empty; the runs it skipped are still there for the next one.
    let mut rest = 0;
    let me = Owner::this_process();
    while store.claim_next(&me, LEASE, &acme()).unwrap().is_some() {
        rest += 1;
    }
    assert_eq!(claimed.len() + rest, 6);
}

pub(crate) fn a_waiting_run_is_woken_for_the_next_claim_and_a_released_one_is_claimable(
    f: &dyn Fixture,
) {
    let store = f.store();
    let me = Owner::this_process();
    let lease = store
        .create_run(&tenant_run("w", "acme", None), &me)
        .unwrap();
    let waiting = Entry {
        run_state: Some((RunState::Waiting, None)),
        ..Entry::new("run_waiting", None, "{}".into())
    };
    store.commit("w", &lease, &[waiting]).unwrap();
    store.release("w", &lease).unwrap();
    let other = Owner {
        token: "other".into(),
        ..me.clone()
    };
    assert!(
        store.claim_next(&other, LEASE, &acme()).unwrap().is_none(),
        "waiting"
    );
    assert!(store.wake("w").unwrap());
    assert!(!store.wake("w").unwrap(), "woken once");
    assert_eq!(
        store.run("w").unwrap().display_status(now_ms(), LEASE),
        "queued"
    );
    let (rec, lease) = store
        .claim_next(&other, LEASE, &acme())
        .unwrap()
        .expect("woken");
    assert_eq!((rec.id.as_str(), rec.sessions), ("w", 2));
    // Given up unfinished (its process stopping): claimable at once.
    store.release("w", &lease).unwrap();
    let (_, lease) = store
        .claim_next(&me, LEASE, &acme())
        .unwrap()
        .expect("released");
    let done = Entry {
        run_state: Some((RunState::Completed, None)),
        ..Entry::new("run_finished", None, "{}".into())
    };
    store.commit("w", &lease, &[done]).unwrap();
    store.release("w", &lease).unwrap();
    assert!(
        store.claim_next(&other, LEASE, &acme()).unwrap().is_none(),
        "finished"
    );
    assert!(!store.wake("w").unwrap(), "a finished run is not woken");
}

pub(crate) fn a_dead_processs_runs_are_claimed_before_its_lease_ends(f: &dyn Fixture) {
    let store = f.store();
    let ghost = Owner {
        pid: u32::MAX - 1,
        ..Owner::this_process()
    };
    store
        .create_run(&tenant_run("orphan", "acme", None), &ghost)
        .unwrap();
    let me = Owner::this_process();
    store
        .create_run(&tenant_run("alive", "acme", None), &me)
        .unwrap();
    let (rec, _) = store
        .claim_next(&me, LEASE, &acme())
        .unwrap()
        .expect("the dead process's run");
    assert_eq!(rec.id, "orphan");
    assert!(
        store.claim_next(&me, LEASE, &acme()).unwrap().is_none(),
        "a live lease holds"
    );
    // A process of the same host name in another pid namespace (another
    // container) is not known dead: its pid means nothing here. Before
    // the namespace was part of the host, both wrote the bare name.
    let name = me.host.split('#').next().unwrap();
    let elsewhere = Owner {
        host: name.to_owned(),
        pid: u32::MAX - 1,
        ..me.clone()
    };
    assert!(!elsewhere.is_dead());
    store
        .create_run(&tenant_run("contained", "acme", None), &elsewhere)
        .unwrap();
    assert!(
        store.claim_next(&me, LEASE, &acme()).unwrap().is_none(),
        "its lease holds until it expires"
    );
}

pub(crate) fn shared_slots_never_exceed_their_limit_and_expire_with_their_holder(f: &dyn Fixture) {
    let store = f.store();
    let hold = |holder: &str, want: u32| {
        store
            .hold_slots("acme/calls", holder, want, 4, LEASE)
            .unwrap()
    };
    assert_eq!(hold("p1", 3), 3);
    assert_eq!(hold("p2", 3), 1, "only what p1 left");
    assert_eq!(hold("p2", 3), 1, "asking again changes nothing");
    assert_eq!(hold("p1", 1), 1, "p1 gives two back");
    assert_eq!(hold("p2", 3), 3);
    assert_eq!(
        store.hold_slots("globex/calls", "p1", 4, 4, LEASE).unwrap(),
        4,
        "keys are apart"
    );
    assert_eq!(hold("p1", 0), 0);
    assert_eq!(hold("p3", 4), 1);
    // p2 stops renewing (killed): its slots come back when its hold expires.
    f.sql("UPDATE slot_holds SET expires_ms = 0 WHERE holder = 'p2'");
    assert_eq!(hold("p3", 4), 4);
}

/// One `#[test]` per behaviour for a backend: `$open` gives a fresh
/// `impl Fixture`.
macro_rules! behaviour_tests {
    ($open:expr) => {
        behaviour_tests!(@each $open;
            a_live_owner_keeps_its_lease_and_a_dead_one_loses_it,
            only_the_runs_owner_commits,
            a_cancel_fences_off_a_stale_driver,
            fuel_charges_add_up_across_commits,
            steps_blobs_and_the_cache_are_written_with_their_entries,
            a_tenant_sees_only_its_own_runs_page_by_page,
            the_same_idempotency_key_names_the_first_run_and_only_within_its_tenant,
            agents_and_workflows_are_registered_per_tenant,
            a_tenant_at_its_limit_of_running_runs_is_refused_in_the_same_transaction,
            fuel_windows_never_grant_beyond_the_limit_and_take_refunds,
            webhook_messages_are_claimed_once_retried_when_due_and_recorded,
            rate_state_is_read_and_replaced,
            artifacts_are_held_by_runs_under_limits_and_swept_when_unheld,
            runs_nobody_renews_are_claimed,
            a_submitted_run_waits_for_its_first_claim,
            processes_claiming_at_once_each_take_a_different_run,
            a_waiting_run_is_woken_for_the_next_claim_and_a_released_one_is_claimable,
            a_dead_processs_runs_are_claimed_before_its_lease_ends,
            shared_slots_never_exceed_their_limit_and_expire_with_their_holder,
        );
    };
    (@each $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let fixture = $open;
                crate::behaviour::$name(&fixture);
            }
        )*
    };
}
pub(crate) use behaviour_tests;
