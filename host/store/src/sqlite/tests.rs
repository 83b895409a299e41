//! The SQLite store's behaviour: leases and fencing, migrations, atomic commits, fuel charges, busy and damaged files.

use serde_json::json;

use super::schema::MIGRATIONS;
use super::*;
use crate::{LEASE, Owner};

fn new_run(id: &str) -> NewRun {
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

fn tenant_run(id: &str, tenant: &str, key: Option<&str>) -> NewRun {
    NewRun {
        tenant: tenant.into(),
        idempotency_key: key.map(Into::into),
        ..new_run(id)
    }
}

#[test]
fn a_live_owner_keeps_its_lease_and_a_dead_one_loses_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn reopening_keeps_data_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        store
            .create_run(&new_run("kept"), &Owner::this_process())
            .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    assert_eq!(store.run("kept").unwrap().status, RunState::Running);
    drop(store);
    let conn = Connection::open(dir.path().join("corral.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path(), Durability::Normal)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("newer than this corral knows"),
        "{err}"
    );
}

#[test]
fn a_commit_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    let good = Entry::new("step_started", Some("a".into()), "{}".into());
    // A trigger makes the second entry of the batch fail.
    let conn = store.conn.lock().unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON journal WHEN NEW.kind = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .unwrap();
    drop(conn);
    let bad = Entry::new("boom", None, "{}".into());
    assert!(store.commit("r", &mine, &[good.clone(), bad]).is_err());
    assert!(store.journal("r", 0, 10).unwrap().is_empty());
    // Only the run's owner may write.
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
    store.commit("r", &mine, &[good]).unwrap();
    assert_eq!(store.journal("r", 0, 10).unwrap().len(), 1);
}

/// A driver whose lease went stale (paused past it, then woken) must
/// not write over a `corral cancel` made meanwhile.
#[test]
fn a_cancel_fences_off_a_stale_driver() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    // A live process of this host, so only the lease's age can make it stale.
    let me = Owner::this_process();
    let mine = store.create_run(&new_run("r"), &me).unwrap();
    // Its heartbeat stopped: no renewal for longer than the lease.
    let old = now_ms() - 2 * LEASE.as_millis() as i64;
    store
        .conn
        .lock()
        .unwrap()
        .execute("UPDATE runs SET heartbeat_ms = ?1", [old])
        .unwrap();
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

#[test]
fn fuel_charges_add_up_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn busy_and_damaged_stores_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corral.db"), vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(dir.path(), Durability::Normal)
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    store
        .conn
        .lock()
        .unwrap()
        .busy_timeout(Duration::ZERO)
        .unwrap();
    let other = Connection::open(dir.path().join("corral.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let err = store
        .create_run(&new_run("r"), &Owner::this_process())
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
}

#[test]
fn a_tenant_sees_only_its_own_runs_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn the_same_idempotency_key_names_the_first_run_and_only_within_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn agents_are_registered_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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
}

#[test]
fn a_tenant_at_its_limit_of_running_runs_is_refused_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn fuel_windows_never_grant_beyond_the_limit_and_take_refunds() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn a_store_of_the_previous_schema_is_upgraded_with_its_runs_intact() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("corral.db")).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO runs (id, workflow, file, definition, digest, params, components, status, created_ms, updated_ms, epoch, fuel_charged)
             VALUES ('old', 'w', 'w.yaml', 'version: 1 # the text', 'sha256:0', '{}', '{}', 'completed', 1, 1, 3, 42)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let r = store.run("old").unwrap();
    assert_eq!(r.definition, "version: 1 # the text");
    assert_eq!((r.tenant.as_str(), r.fuel_charged, r.epoch), ("", 42, 3));
    // And new runs keep their definitions apart from the row.
    store
        .create_run(&new_run("new"), &Owner::this_process())
        .unwrap();
    assert_eq!(store.run("new").unwrap().definition, "version: 1");
    assert_eq!(store.runs().unwrap().len(), 2);
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

#[test]
fn webhook_messages_are_claimed_once_retried_when_due_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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

#[test]
fn rate_state_is_read_and_replaced_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
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
