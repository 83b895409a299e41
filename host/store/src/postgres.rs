//! The shared store: PostgreSQL through a connection pool, so that many `corral` processes on many machines drive runs from one database; leases are fenced by an epoch checked in every commit, and times come from the database's clock.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::Value;
use tokio_postgres::NoTls;

mod artifacts;
mod claims;
pub mod cluster;
mod gc;
mod listen;
mod rows;
mod schema;
mod webhooks;

use rows::{RUN_COLUMNS, RowError, Rows, STEP_COLUMNS, agent_row, get_run, insert_entry, now};
use schema::Refusal;

use super::{
    AgentRecord, ArtifactLimits, ArtifactRefusal, ArtifactRow, ArtifactUpload, Delivery,
    DeliveryAttempt, DeliveryState, Entry, FuelWindow, GcStats, JournalEntry, Lease, NewRun, Owner,
    RunQuery, RunRecord, RunState, StepRecord, Store, StoreError, WebhookMessage, WorkflowRecord,
};

/// Connections each process keeps at most.
const POOL_SIZE: usize = 16;
/// How long a query waits for a free connection, or for one to open.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// A store in a PostgreSQL database, shared by every process that opens it.
///
/// The `Store` trait is synchronous (SQLite needs nothing else); this store
/// runs its queries on a small runtime of its own and each call waits on a
/// channel, so it may be called from any thread, a tokio worker included,
/// without nesting runtimes.
pub struct PgStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: String,
    rt: Option<tokio::runtime::Runtime>,
    /// Where uploads wait, as files, until they are copied into chunks
    /// (see [`private_uploads`]).
    uploads: PathBuf,
    /// How to open the listening connection, which is not pooled.
    config: tokio_postgres::Config,
    /// Notified when another process makes a run claimable; the listener
    /// starts on first use.
    wakeups: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings its
    /// schema up to date; a database of a newer corral is refused.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let bad = |e: String| StoreError::Backend {
            path: shown.clone(),
            source: e.into(),
        };
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| bad(format!("{e}")))?;
        // Bounds on waiting, so that a process paused or cut off inside a
        // transaction cannot hold a run's row (and its takeover) for long:
        // the server ends such a session, and a lock wait gives up as busy.
        let given = config.get_options().unwrap_or_default().to_owned();
        config.options(format!(
            "{given} -c lock_timeout=5000 -c idle_in_transaction_session_timeout=5000 -c statement_timeout=60000"
        ).trim());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("corral-postgres")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start its runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| bad(format!("{e}")))?;
        let uploads =
            std::env::temp_dir().join(format!("corral-uploads-{:016x}", fastrand::u64(..)));
        let store = PgStore {
            pool,
            shown,
            rt: Some(rt),
            uploads,
            config,
            wakeups: std::sync::OnceLock::new(),
        };
        let shown = store.shown.clone();
        store.block(|mut c| async move {
            schema::migrate(&mut c).await.map_err(|r| match r {
                Refusal::Newer(v) => StoreError::Corrupt {
                    path: shown.clone(),
                    source: format!(
                        "the database has schema version {v}, newer than this corral knows ({}); upgrade corral",
                        schema::MIGRATIONS.len()
                    )
                    .into(),
                },
                Refusal::Sql(e) => sql_error(&shown, e),
            })
        })?;
        Ok(store)
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits.
    fn block<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let pool = self.pool.clone();
        let shown = self.shown.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .as_ref()
            .expect("the runtime lives as long as the store");
        rt.spawn(async move {
            let result = match pool.get().await {
                Ok(c) => f(c).await,
                Err(e) => Err(StoreError::Busy {
                    path: shown,
                    source: format!("no connection: {e}").into(),
                }),
            };
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend {
                path: self.shown.clone(),
                source: "the store's runtime stopped".into(),
            })
        })
    }

    /// The notifier that [`listen`] wakes, started on first use: most
    /// processes (the CLI, a submit-only server) never wait for runs.
    fn listener(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.wakeups
            .get_or_init(|| {
                let notify = std::sync::Arc::new(tokio::sync::Notify::new());
                let rt = self
                    .rt
                    .as_ref()
                    .expect("the runtime lives as long as the store");
                rt.spawn(listen::run(
                    self.config.clone(),
                    notify.clone(),
                    self.shown.clone(),
                ));
                notify
            })
            .clone()
    }

    /// [`Self::block`] for a body whose errors are row errors.
    fn rows<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Rows<T>> + Send,
    {
        let shown = self.shown.clone();
        self.block(move |c| async move { f(c).await.map_err(|e| row_error(&shown, e)) })
    }
}

/// Makes `dir`, this store's own (0700), where uploads wait as files until
/// they are copied into chunks; made on the first upload, since most
/// processes never upload.
fn private_uploads(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.uploads);
        // Dropping a runtime may block, which a tokio worker must not do.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `url` with any password replaced, fit for messages and logs; for a
/// `key=value` connection string, its `password=` is dropped.
fn redact(url: &str) -> String {
    if !url.contains("://") {
        return url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A database error as a store error of the right kind, its cause kept.
fn sql_error(path: &str, e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let path = path.to_owned();
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::QUERY_CANCELED =>
        {
            StoreError::Busy {
                path,
                source: e.into(),
            }
        }
        _ if e.is_closed() => StoreError::Busy {
            path,
            source: e.into(),
        },
        _ => StoreError::Backend {
            path,
            source: e.into(),
        },
    }
}

fn row_error(path: &str, e: RowError) -> StoreError {
    match e {
        RowError::Sql(e) => sql_error(path, e),
        RowError::Bad(why) => StoreError::Corrupt {
            path: path.to_owned(),
            source: why.into(),
        },
    }
}

fn big(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

mod runs;

#[cfg(test)]
mod tests;
