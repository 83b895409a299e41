//! The scheduler under a slow host: a step-cache read that blocks the store, and a full instance pool; neither may stall other steps or trip a breaker.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::workflow::events::{Event, EventSink};
use corral::workflow::report::{RunStatus, StepStatus};
use corral::workflow::run::{RunOptions, run};
use corral::workflow::{source, validate::validate};
use serde_json::{Value, json};
use support::*;
use tokio_util::sync::CancellationToken;

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
    fn submit_run(&self, run: &corral::store::NewRun) -> Result<(), corral::store::StoreError> {
        self.inner.submit_run(run)
    }
    #[allow(clippy::type_complexity)]
    fn claim_next(
        &self,
        owner: &corral::store::Owner,
        lease: Duration,
        tenants: &[String],
    ) -> Result<Option<(corral::store::RunRecord, corral::store::Lease)>, corral::store::StoreError>
    {
        self.inner.claim_next(owner, lease, tenants)
    }
    fn wake(&self, run: &str) -> Result<bool, corral::store::StoreError> {
        self.inner.wake(run)
    }
    fn hold_slots(
        &self,
        key: &str,
        holder: &str,
        want: u32,
        limit: u32,
        ttl: Duration,
    ) -> Result<u32, corral::store::StoreError> {
        self.inner.hold_slots(key, holder, want, limit, ttl)
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
    fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), corral::store::StoreError> {
        self.inner.put_component(digest, bytes)
    }
    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, corral::store::StoreError> {
        self.inner.component(digest)
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
    fn artifact_upload(&self) -> Result<corral::store::ArtifactUpload, corral::store::StoreError> {
        self.inner.artifact_upload()
    }
    fn artifact_finish(
        &self,
        run: &str,
        upload: corral::store::ArtifactUpload,
        media_type: &str,
        limits: corral::store::ArtifactLimits,
    ) -> Result<
        Result<corral::store::ArtifactRow, corral::store::ArtifactRefusal>,
        corral::store::StoreError,
    > {
        self.inner.artifact_finish(run, upload, media_type, limits)
    }
    fn artifact(
        &self,
        run: &str,
        digest: &str,
    ) -> Result<Option<corral::store::ArtifactRow>, corral::store::StoreError> {
        self.inner.artifact(run, digest)
    }
    fn artifacts(
        &self,
        run: &str,
    ) -> Result<Vec<corral::store::ArtifactRow>, corral::store::StoreError> {
        self.inner.artifacts(run)
    }
    fn artifact_read(
        &self,
        digest: &str,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>, corral::store::StoreError> {
        self.inner.artifact_read(digest, offset, max)
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
