//! The durable store behind runs: a journal per run, the state it implies, content-addressed blobs, a step cache, and leases.
//!
//! The engine talks to a `dyn Store` only. Every method is one transaction,
//! coarse enough for a networked database (the planned PostgreSQL backend)
//! and with no SQLite-specific semantics: leases expire by time, sequence
//! numbers come from the store, and blobs are keyed by their digest.

mod artifact;
#[cfg(test)]
mod behaviour;
pub mod postgres;
mod rules;
pub mod sqlite;
mod status;
mod webhook;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

pub use artifact::{ArtifactLimits, ArtifactRefusal, ArtifactRow, ArtifactUpload};
pub use postgres::PgStore;
pub use sqlite::{Durability, SqliteStore};
pub use status::{DeliveryState, RunState, StepState, UnknownStatus};
pub use webhook::{Delivery, DeliveryAttempt, WebhookMessage};

/// The cause behind a backend failure, kept so callers can tell kinds apart.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no run `{0}` in the state directory (list them with `corral runs`)")]
    UnknownRun(String),
    #[error("a run `{0}` already exists; pick another `--run-id`")]
    RunExists(String),
    /// The tenant already runs as many runs as it may.
    #[error("tenant `{tenant}` already has {running} runs running, its limit")]
    TooManyRuns { tenant: String, running: u32 },
    /// A submission repeated with the idempotency key of an earlier one.
    #[error("run `{run}` was already submitted with this idempotency key")]
    SameRequest { run: String },
    #[error(
        "run `{run}` is being driven by {owner} (last heartbeat {age:.1?} ago); wait for it to finish, or `corral cancel {run}`"
    )]
    Leased {
        run: String,
        owner: String,
        age: Duration,
    },
    #[error(
        "run `{0}`: this process no longer holds the run (another process took it over after its lease expired, or it was cancelled); this one stops driving it"
    )]
    LeaseLost(String),
    #[error("run `{run}`, step `{step}`: {message}")]
    Step {
        run: String,
        step: String,
        message: String,
    },
    /// Another process held the store's write lock for longer than the wait.
    #[error(
        "the state store at {path} is busy: another process held it for too long ({source}); try again"
    )]
    Busy {
        path: String,
        #[source]
        source: BoxError,
    },
    /// The file is damaged, or not a corral store, or from a newer corral.
    #[error("the state store at {path} is damaged or not a corral store: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("the state store at {path}: {source}")]
    Backend {
        path: String,
        #[source]
        source: BoxError,
    },
}

/// A run as first recorded: enough to rebuild it in another process.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow: String,
    /// The workflow file's path when the run started.
    pub file: String,
    /// The definition's text, so a resume does not depend on the file.
    pub definition: String,
    pub digest: String,
    pub params: Value,
    /// Agent name → `sha256:` digest of its component.
    pub components: Value,
    /// Who the run belongs to; empty for the operator's own (the CLI).
    pub tenant: String,
    /// A client's key for the submission: the same key again names this run.
    pub idempotency_key: Option<String>,
    /// Refuse the run (`StoreError::TooManyRuns`) if its tenant already has
    /// this many running, counted in the same transaction.
    pub max_running: Option<u32>,
}

/// Who drives a run: a process on a host, with a random token so a reused pid is not mistaken for its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub token: String,
}

impl Owner {
    pub fn this_process() -> Self {
        Self {
            host: hostname(),
            pid: std::process::id(),
            token: format!("{:016x}", fastrand::u64(..)),
        }
    }

    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.host, self.pid, self.token)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut it = s.rsplitn(3, ':');
        let token = it.next()?.to_owned();
        let pid = it.next()?.parse().ok()?;
        let host = it.next()?.to_owned();
        Some(Self { host, pid, token })
    }

    /// Whether this owner is certainly gone: a process of this host that no longer exists.
    /// Owners on other hosts are only known gone when their lease expires.
    pub fn is_dead(&self) -> bool {
        if self.host != hostname() {
            return false;
        }
        if cfg!(target_os = "linux") {
            !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
        } else {
            false
        }
    }

    pub fn describe(&self) -> String {
        // The pid namespace is for matching, not for people.
        let host = self.host.split('#').next().unwrap_or(&self.host);
        format!("process {} on {}", self.pid, host)
    }
}

/// A claim on a run: who holds it and the fencing token (epoch) it was
/// granted with. Every claim and every cancel of a stale lease bumps the
/// run's epoch, and every commit checks it in its transaction, so a driver
/// that lost the run (paused past its lease, then woken) writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: Owner,
    pub epoch: i64,
}

/// This machine's name, read once: lease checks ask for it per run. On
/// Linux it carries the process's pid namespace (`name#4026531836`):
/// containers that share a host name but not their pids must not take
/// each other's live processes for dead.
fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        match pid_namespace() {
            Some(ns) => format!("{name}#{ns}"),
            None => name,
        }
    })
    .clone()
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` reads
/// `pid:[4026531836]`), where there is one.
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    let ns = text.strip_prefix("pid:[")?.strip_suffix(']')?;
    ns.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| ns.to_owned())
}

/// The stored state of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub file: String,
    #[serde(skip)]
    pub definition: String,
    pub digest: String,
    pub params: Value,
    pub components: Value,
    pub status: RunState,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub owner: Option<String>,
    pub heartbeat_ms: Option<i64>,
    pub cancel_requested: bool,
    /// How many processes have driven it: 1, plus one per resume.
    pub sessions: u32,
    /// The fencing token of the current lease (see [`Lease`]).
    pub epoch: i64,
    /// Fuel charged to the workflow's pool across all sessions: what
    /// settled calls used, plus the whole reservation of calls that never
    /// settled (cut off by a crash). A later session gets only the rest.
    pub fuel_charged: u64,
    /// Who the run belongs to; empty for the operator's own (the CLI).
    pub tenant: String,
}

impl RunRecord {
    /// Whether the run stopped for good (as opposed to running, waiting or paused).
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// A `running` run whose driver is gone: it was killed or crashed.
    pub fn is_interrupted(&self, now_ms: i64, lease: Duration) -> bool {
        self.status == RunState::Running && !self.lease_live(now_ms, lease)
    }

    /// Whether a live process still holds the run.
    pub fn lease_live(&self, now_ms: i64, lease: Duration) -> bool {
        let Some(owner) = self.owner.as_deref() else {
            return false;
        };
        if Owner::decode(owner).is_some_and(|o| o.is_dead()) {
            return false;
        }
        self.heartbeat_ms
            .is_some_and(|h| now_ms - h < lease.as_millis() as i64)
    }

    /// `status`; for a running run with no live driver, `queued` when it is
    /// a tenant's and no process holds it (submitted for a worker, woken by
    /// an answer, or released at shutdown: the next claim takes it), and
    /// `interrupted` otherwise (its driver died, or `corral resume` it).
    pub fn display_status(&self, now_ms: i64, lease: Duration) -> &'static str {
        if self.is_interrupted(now_ms, lease) {
            if self.owner.is_none() && !self.tenant.is_empty() {
                "queued"
            } else {
                "interrupted"
            }
        } else {
            self.status.as_str()
        }
    }
}

/// The stored state of one step, as the journal left it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StepRecord {
    pub step: String,
    pub status: StepState,
    pub attempts: u32,
    pub retries: u32,
    pub fuel_used: u64,
    /// Model tokens charged to the step's calls.
    pub tokens_used: u64,
    pub peak_memory_bytes: u64,
    pub wall_time_us: u64,
    /// Digest of the output packet's payload in the blob table.
    pub output: Option<String>,
    /// Digest of everything the step read, to decide whether a resume may reuse it.
    pub fingerprint: Option<String>,
    pub cached: bool,
    pub fallback: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    /// Order of completion within the run, for compensation.
    pub completed_order: Option<u64>,
    /// An approval this step waits for: prompt, schema, context, deadline.
    pub waiting: Option<Value>,
    /// The human's answer: `{"approved": true, "input": ...}` or `{"approved": false, "reason": ...}`.
    pub answer: Option<Value>,
}

/// One journal line.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub seq: i64,
    pub at_ms: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub step: Option<String>,
    pub data: Value,
}

/// A journal line to append, with the state change it records: both land in one transaction.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at_ms: i64,
    pub kind: String,
    pub step: Option<String>,
    /// JSON text of the event's data, outputs replaced by blob digests.
    pub data: String,
    /// A payload this entry references: digest and bytes, stored once.
    pub blob: Option<(String, Vec<u8>)>,
    pub step_state: Option<StepRecord>,
    pub run_state: Option<(RunState, Option<String>)>,
    /// Fuel charged to the run's pool (a reservation) or given back (the
    /// unused part, when the call settles).
    pub fuel_charge: i64,
    /// New params for the run (a resume with `--param`), as JSON text.
    pub run_params: Option<String>,
    /// A cache entry: key, output digest, expiry.
    pub cache: Option<(String, String, Option<i64>)>,
}

impl Entry {
    pub fn new(kind: impl Into<String>, step: Option<String>, data: String) -> Self {
        Self {
            at_ms: now_ms(),
            kind: kind.into(),
            step,
            data,
            blob: None,
            step_state: None,
            run_state: None,
            run_params: None,
            cache: None,
            fuel_charge: 0,
        }
    }
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcStats {
    pub runs: u64,
    pub journal_entries: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub cache_entries: u64,
    /// Artifact files no run held any more, and their bytes.
    pub artifacts: u64,
    pub artifact_bytes: u64,
}

/// One page of a tenant's runs, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub tenant: String,
    pub status: Option<RunState>,
    /// Runs created before this `(created_ms, id)`: the last one of the
    /// previous page.
    pub before: Option<(i64, String)>,
    pub limit: usize,
}

/// A component a tenant registered under a name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRecord {
    pub tenant: String,
    pub name: String,
    /// `sha256:` of the component's bytes, which are kept by that digest.
    pub digest: String,
    /// What its `describe` declared.
    pub info: Value,
    pub size: u64,
    pub created_ms: i64,
}

/// A workflow a tenant registered under a name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRecord {
    pub tenant: String,
    pub name: String,
    /// The text as registered (validated then).
    pub text: String,
    /// `yaml` or `json`.
    pub format: String,
    pub digest: String,
    pub created_ms: i64,
}

/// A tenant's fuel in its current quota window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Reserved or used in this window so far (a grant included).
    pub charged: u64,
    pub limit: u64,
    /// What this reservation got (0 when the window is spent).
    pub granted: u64,
}

/// A durable home for runs. Each method is one transaction.
pub trait Store: Send + Sync {
    /// Records a new run, leased to `owner`.
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<Lease, StoreError>;
    /// Records a new tenant run that no process drives yet (`queued`): the
    /// next [`Store::claim_next`] of any process sharing the store takes it.
    fn submit_run(&self, run: &NewRun) -> Result<(), StoreError>;
    /// Takes the run's lease for `owner`, unless a live owner holds it; the
    /// run's epoch is bumped, fencing off any earlier holder.
    fn claim(
        &self,
        run: &str,
        owner: &Owner,
        lease: Duration,
    ) -> Result<(RunRecord, Lease), StoreError>;
    /// Takes the oldest run of one of `tenants` that is running with no live driver
    /// (queued, released, or its lease expired by the store's clock), as
    /// [`Store::claim`] would. Processes claiming at once each get a
    /// different run (PostgreSQL: `FOR UPDATE SKIP LOCKED`). `None`: no run
    /// is waiting for a driver.
    fn claim_next(
        &self,
        owner: &Owner,
        lease: Duration,
        tenants: &[String],
    ) -> Result<Option<(RunRecord, Lease)>, StoreError>;
    /// Hands a waiting or paused run (an answer came, or a human resumed
    /// it) to whichever process claims a run next; false if it was neither.
    fn wake(&self, run: &str) -> Result<bool, StoreError>;
    /// Notified when a run becomes claimable through another process
    /// (submitted, woken or released), so that drivers need not poll
    /// often; `None` when the backend cannot tell (poll instead).
    fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// Renews the lease; fails if it was lost. Returns the cancel
    /// request: 0 none, 1 cancel, 2 cancel and compensate.
    fn heartbeat(&self, run: &str, lease: &Lease) -> Result<u8, StoreError>;
    /// Drops the lease if it is still held.
    fn release(&self, run: &str, lease: &Lease) -> Result<(), StoreError>;
    /// Appends journal entries and applies their state changes atomically,
    /// only while `lease` holds the run (else `LeaseLost`, nothing written).
    fn commit(&self, run: &str, lease: &Lease, entries: &[Entry]) -> Result<(), StoreError>;
    fn run(&self, run: &str) -> Result<RunRecord, StoreError>;
    /// Every run, oldest first (the operator's view).
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// One page of one tenant's runs.
    fn tenant_runs(&self, q: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;
    /// Keeps an uploaded component's bytes under `digest` (once, however
    /// many tenants register it), so that every process sharing the store
    /// can load it.
    fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The component stored under `digest`, if any.
    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets how many of the `limit` slots under `key` `holder` holds: as
    /// many of `want` as fit beside what live holders hold, for `ttl` by
    /// the store's clock (a holder that stops renewing gives its slots
    /// back when the hold expires). Returns how many it holds now; 0
    /// drops its hold.
    fn hold_slots(
        &self,
        key: &str,
        holder: &str,
        want: u32,
        limit: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError>;
    /// Registers (or replaces) a tenant's agent under its name.
    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// A tenant's agents, by name.
    fn agents(&self, tenant: &str) -> Result<Vec<AgentRecord>, StoreError>;
    /// Reserves up to `want` fuel from `tenant`'s current window of length
    /// `window`, which may charge at most `limit`; `granted` may be 0.
    fn reserve_fuel(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
        want: u64,
    ) -> Result<FuelWindow, StoreError>;
    /// Gives back to the window that started at `start_ms` what a call did
    /// not use of its reservation.
    fn settle_fuel(
        &self,
        tenant: &str,
        start_ms: i64,
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError>;
    /// `tenant`'s current window, read only.
    fn fuel_window(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
    ) -> Result<FuelWindow, StoreError>;
    /// Registers (or replaces) a tenant's workflow under its name.
    fn put_workflow(&self, w: &WorkflowRecord) -> Result<(), StoreError>;
    /// A tenant's registered workflows, by name.
    fn workflows(&self, tenant: &str) -> Result<Vec<WorkflowRecord>, StoreError>;
    /// Forgets a tenant's agent; false if it had none of that name.
    fn delete_agent(&self, tenant: &str, name: &str) -> Result<bool, StoreError>;
    fn steps(&self, run: &str) -> Result<Vec<StepRecord>, StoreError>;
    /// Journal entries with `seq > after`, oldest first, at most `limit`.
    fn journal(&self, run: &str, after: i64, limit: usize)
    -> Result<Vec<JournalEntry>, StoreError>;
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Starts storing an artifact's bytes, written in chunks.
    fn artifact_upload(&self) -> Result<ArtifactUpload, StoreError>;
    /// Stores the upload's bytes under their digest (once, however many
    /// runs hold them) and records that `run` holds them, unless that would
    /// take the run or its tenant past `limits`: then nothing is stored.
    fn artifact_finish(
        &self,
        run: &str,
        upload: ArtifactUpload,
        media_type: &str,
        limits: ArtifactLimits,
    ) -> Result<Result<ArtifactRow, ArtifactRefusal>, StoreError>;
    /// The artifact `digest` as `run` holds it; `None` if `run` holds no such artifact.
    fn artifact(&self, run: &str, digest: &str) -> Result<Option<ArtifactRow>, StoreError>;
    /// Every artifact `run` holds, oldest first.
    fn artifacts(&self, run: &str) -> Result<Vec<ArtifactRow>, StoreError>;
    /// Up to `max` bytes of the stored artifact `digest` from `offset`
    /// (empty past its end). Whether a caller may read it is decided above.
    fn artifact_read(&self, digest: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError>;
    /// A live cache entry's output digest.
    fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError>;
    /// Records a human's answer to a waiting approval; fails unless the step waits.
    fn answer(&self, run: &str, step: &str, answer: &Value) -> Result<(), StoreError>;
    /// Asks the run's driver to cancel; a run nobody drives is cancelled at once.
    fn request_cancel(
        &self,
        run: &str,
        lease: Duration,
        compensate: bool,
    ) -> Result<RunRecord, StoreError>;
    /// Reads the number kept under `key` (a rate limiter's state) and, in
    /// the same transaction, stores what `f` makes of it (`None`: unchanged).
    fn update_rate(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<u64>) -> Option<u64>,
    ) -> Result<(), StoreError>;
    /// Queues webhook messages for delivery.
    fn enqueue_webhooks(&self, messages: &[WebhookMessage]) -> Result<(), StoreError>;
    /// Takes up to `limit` pending messages due by `now_ms`, and holds them
    /// for `hold` (their next attempt moves past it) so that no other
    /// worker takes them meanwhile.
    fn claim_webhooks(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookMessage>, StoreError>;
    /// Records one delivery attempt and where its message stands after it:
    /// `next_ms` is when to try again (pending only).
    fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
        state: DeliveryState,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// A tenant's webhook messages for one run, oldest first, with every attempt.
    fn deliveries(&self, tenant: &str, run: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Deletes finished runs last updated before `before_ms`, then blobs and cache entries nothing references.
    fn gc(&self, before_ms: i64) -> Result<GcStats, StoreError>;
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The default state directory: `.corral` in the working directory.
pub const DEFAULT_STATE_DIR: &str = ".corral";

/// How long a lease lasts without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a driver renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
