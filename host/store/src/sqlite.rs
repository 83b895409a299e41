//! The embedded store: one SQLite file in WAL mode, migrated by `user_version`, shared safely by many processes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::{
    AgentRecord, Entry, FuelWindow, GcStats, JournalEntry, Lease, NewRun, Owner, RunQuery,
    RunRecord, RunState, StepRecord, Store, StoreError, WorkflowRecord, now_ms,
};

/// How hard each commit pushes to disk (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL + `synchronous=NORMAL`: a commit survives the process being
    /// killed; an OS crash or power loss may lose the last commits, never
    /// corrupt the store.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; it survives power loss.
    Full,
}

/// The schema, one migration per entry; `PRAGMA user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    file TEXT NOT NULL,
    definition TEXT NOT NULL,
    digest TEXT NOT NULL,
    params TEXT NOT NULL,
    components TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    owner TEXT,
    heartbeat_ms INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX runs_updated ON runs(updated_ms);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    data TEXT NOT NULL,
    blob TEXT
);
CREATE INDEX journal_run ON journal(run_id, seq);
CREATE INDEX journal_blob ON journal(blob) WHERE blob IS NOT NULL;
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    fuel_used INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    wall_time_us INTEGER NOT NULL,
    output TEXT,
    fingerprint TEXT,
    cached INTEGER NOT NULL,
    fallback TEXT,
    error TEXT,
    error_kind TEXT,
    completed_order INTEGER,
    waiting TEXT,
    answer TEXT,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
);
"#,
    // Fencing tokens for leases, and fuel charged across sessions.
    r#"
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fuel_charged INTEGER NOT NULL DEFAULT 0;
"#,
    // Tenants: every run carries its tenant ('' is the operator's own);
    // idempotent submissions; the agents each tenant registered.
    r#"
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX runs_idempotency ON runs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_tenant ON runs(tenant, created_ms, id);
CREATE TABLE agents (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    info TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE workflows (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    format TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
-- The definition (up to a megabyte) lives apart from the run's row, which
-- every journal commit updates: SQLite rewrites a whole row on update.
CREATE TABLE run_definitions (run_id TEXT PRIMARY KEY, definition TEXT NOT NULL);
INSERT INTO run_definitions (run_id, definition) SELECT id, definition FROM runs;
ALTER TABLE runs DROP COLUMN definition;
CREATE TABLE fuel_windows (
    tenant TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    charged INTEGER NOT NULL,
    PRIMARY KEY (tenant, start_ms)
) WITHOUT ROWID;
"#,
];

/// A SQLite store in `<dir>/corral.db`.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the store in `dir`.
    pub fn open(dir: &Path, sync: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend {
            path: dir.display().to_string(),
            source: format!("cannot create it: {e}").into(),
        })?;
        let path = dir.join("corral.db");
        let fail = |e: rusqlite::Error| classify(&path, e);
        let mut conn = Connection::open(&path).map_err(fail)?;
        // Other processes may hold the write lock for a commit; wait for them.
        conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
        // auto_vacuum only takes effect before the first table exists; it
        // lets `gc` hand freed pages back to the file system.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;")
            .map_err(fail)?;
        conn.execute_batch(match sync {
            Durability::Normal => "PRAGMA synchronous = NORMAL;",
            Durability::Full => "PRAGMA synchronous = FULL;",
        })
        .map_err(fail)?;
        migrate(&mut conn).map_err(fail)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

/// A SQLite error as a store error of the right kind, its cause kept.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let path = path.display().to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            path,
            source: e.into(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path,
            source: e.into(),
        },
        _ if matches!(e, rusqlite::Error::FromSqlConversionFailure(..)) => StoreError::Corrupt {
            path,
            source: e.into(),
        },
        _ => StoreError::Backend {
            path,
            source: e.into(),
        },
    }
}

/// A status column, parsed; an unknown text is a damaged (or newer) store.
fn status<T: std::str::FromStr<Err = super::UnknownStatus>>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some(format!(
                "the store has schema version {version}, newer than this corral knows ({}); upgrade corral",
                MIGRATIONS.len()
            )),
        ));
    }
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}

const RUN_COLUMNS: &str = "id, workflow, file, coalesce((SELECT definition FROM run_definitions d WHERE d.run_id = runs.id), ''), digest, params, components, status, error, created_ms, updated_ms, owner, heartbeat_ms, cancel_requested, sessions, epoch, fuel_charged, tenant";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let s: String = r.get(i)?;
        Ok(serde_json::from_str(&s).unwrap_or(Value::Null))
    };
    Ok(RunRecord {
        id: r.get(0)?,
        workflow: r.get(1)?,
        file: r.get(2)?,
        definition: r.get(3)?,
        digest: r.get(4)?,
        params: json(5)?,
        components: json(6)?,
        status: status(r, 7)?,
        error: r.get(8)?,
        created_ms: r.get(9)?,
        updated_ms: r.get(10)?,
        owner: r.get(11)?,
        heartbeat_ms: r.get(12)?,
        cancel_requested: r.get(13)?,
        sessions: r.get(14)?,
        epoch: r.get(15)?,
        fuel_charged: r.get::<_, i64>(16)?.max(0) as u64,
        tenant: r.get(17)?,
    })
}

/// The current window of `tenant` (windows start at multiples of `window`
/// since the epoch, by the store's clock) and what it has charged.
fn window_of(
    conn: &Connection,
    tenant: &str,
    window: Duration,
    limit: u64,
) -> rusqlite::Result<FuelWindow> {
    let now = now_ms();
    let len = (window.as_millis() as i64).max(1);
    let start_ms = now - now.rem_euclid(len);
    let charged: i64 = conn
        .prepare_cached("SELECT charged FROM fuel_windows WHERE tenant = ?1 AND start_ms = ?2")?
        .query_row(params![tenant, start_ms], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(FuelWindow {
        start_ms,
        end_ms: start_ms.saturating_add(len),
        charged: charged.max(0) as u64,
        limit,
        granted: 0,
    })
}

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
    let info: String = r.get(3)?;
    Ok(AgentRecord {
        tenant: r.get(0)?,
        name: r.get(1)?,
        digest: r.get(2)?,
        info: serde_json::from_str(&info).unwrap_or(Value::Null),
        size: r.get::<_, i64>(4)?.max(0) as u64,
        created_ms: r.get(5)?,
    })
}

fn get_run(conn: &Connection, id: &str) -> Result<Option<RunRecord>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
        .query_row([id], run_row)
        .optional()
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

fn insert_entry(conn: &Connection, run: &str, e: &Entry) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO journal (run_id, at_ms, kind, step, data, blob) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run,
        e.at_ms,
        e.kind,
        e.step,
        e.data,
        e.blob.as_ref().map(|b| &b.0)
    ])?;
    if let Some((digest, bytes)) = &e.blob {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO blobs (digest, data, created_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![digest, bytes, e.at_ms])?;
    }
    if let Some(s) = &e.step_state {
        // A human's answer is written by `answer`, never by a driver's copy
        // of the row: while the step waits, the stored answer is kept.
        conn.prepare_cached(
            "INSERT INTO steps (run_id, step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (run_id, step) DO UPDATE SET
               status = excluded.status, attempts = excluded.attempts, retries = excluded.retries,
               fuel_used = excluded.fuel_used, peak_memory_bytes = excluded.peak_memory_bytes,
               wall_time_us = excluded.wall_time_us, output = excluded.output,
               fingerprint = excluded.fingerprint, cached = excluded.cached, fallback = excluded.fallback,
               error = excluded.error, error_kind = excluded.error_kind,
               completed_order = excluded.completed_order, waiting = excluded.waiting,
               answer = CASE WHEN excluded.status IN ('waiting', 'paused') AND excluded.answer IS NULL
                             THEN steps.answer ELSE excluded.answer END",
        )?
        .execute(params![
            run,
            s.step,
            s.status.as_str(),
            s.attempts,
            s.retries,
            s.fuel_used as i64,
            s.peak_memory_bytes as i64,
            s.wall_time_us as i64,
            s.output,
            s.fingerprint,
            s.cached,
            s.fallback,
            s.error,
            s.error_kind,
            s.completed_order.map(|o| o as i64),
            opt_json(&s.waiting),
            opt_json(&s.answer),
        ])?;
    }
    if let Some((status, error)) = &e.run_state {
        conn.prepare_cached(
            "UPDATE runs SET status = ?2, error = ?3, updated_ms = ?4 WHERE id = ?1",
        )?
        .execute(params![run, status.as_str(), error, e.at_ms])?;
    }
    if let Some(params) = &e.run_params {
        conn.prepare_cached("UPDATE runs SET params = ?2 WHERE id = ?1")?
            .execute(params![run, params])?;
    }
    if let Some((key, output, expires)) = &e.cache {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO cache (key, output, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![key, output, e.at_ms, expires])?;
    }
    Ok(())
}

/// The columns `step_row` reads, in its order.
const STEP_COLUMNS: &str = "step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer";

fn step_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRecord> {
    let json = |i: usize| -> rusqlite::Result<Option<Value>> {
        let s: Option<String> = r.get(i)?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    };
    Ok(StepRecord {
        step: r.get(0)?,
        status: status(r, 1)?,
        attempts: r.get(2)?,
        retries: r.get(3)?,
        fuel_used: r.get::<_, i64>(4)? as u64,
        peak_memory_bytes: r.get::<_, i64>(5)? as u64,
        wall_time_us: r.get::<_, i64>(6)? as u64,
        output: r.get(7)?,
        fingerprint: r.get(8)?,
        cached: r.get(9)?,
        fallback: r.get(10)?,
        error: r.get(11)?,
        error_kind: r.get(12)?,
        completed_order: r.get::<_, Option<i64>>(13)?.map(|o| o as u64),
        waiting: json(14)?,
        answer: json(15)?,
    })
}

impl Store for SqliteStore {
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<Lease, StoreError> {
        self.with(|conn| {
            // One transaction: the count of running runs and the insert.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let conn: &Connection = &tx;
            if let Some(max) = run.max_running {
                let running: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM runs WHERE tenant = ?1 AND status = 'running'",
                    )
                    .and_then(|mut s| s.query_row([&run.tenant], |r| r.get(0)))
                    .map_err(|e| self.err(e))?;
                if running >= i64::from(max) {
                    return Err(StoreError::TooManyRuns {
                        tenant: run.tenant.clone(),
                        running: running as u32,
                    });
                }
            }
            let now = now_ms();
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO runs (id, workflow, file, digest, params, components, status, created_ms, updated_ms, owner, heartbeat_ms, epoch, tenant, idempotency_key)
                     VALUES (?1, ?2, ?3, ?5, ?6, ?7, 'running', ?8, ?8, ?9, ?8, 1, ?10, ?11)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run.id,
                        run.workflow,
                        run.file,
                        run.definition,
                        run.digest,
                        run.params.to_string(),
                        run.components.to_string(),
                        now,
                        owner.encode(),
                        run.tenant,
                        run.idempotency_key,
                    ])
                })
                .map_err(|e| self.err(e))?;
            if inserted == 0 {
                // The same request again, or an id already taken.
                if let Some(key) = &run.idempotency_key {
                    let earlier: Option<String> = conn
                        .prepare_cached(
                            "SELECT id FROM runs WHERE tenant = ?1 AND idempotency_key = ?2",
                        )
                        .and_then(|mut s| s.query_row(params![run.tenant, key], |r| r.get(0)))
                        .optional()
                        .map_err(|e| self.err(e))?;
                    if let Some(run) = earlier {
                        return Err(StoreError::SameRequest { run });
                    }
                }
                return Err(StoreError::RunExists(run.id.clone()));
            }
            conn.prepare_cached("INSERT INTO run_definitions (run_id, definition) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![run.id, run.definition]))
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            Ok(Lease {
                owner: owner.clone(),
                epoch: 1,
            })
        })
    }

    fn claim(
        &self,
        run: &str,
        owner: &Owner,
        lease: Duration,
    ) -> Result<(RunRecord, Lease), StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let now = now_ms();
            let mut rec = get_run(&tx, run)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownRun(run.into()))?;
            let mine = owner.encode();
            if rec.owner.as_deref() != Some(mine.as_str()) {
                if rec.lease_live(now, lease) {
                    let held = rec.owner.clone().unwrap_or_default();
                    return Err(StoreError::Leased {
                        run: run.into(),
                        owner: Owner::decode(&held).map_or(held, |o| o.describe()),
                        age: Duration::from_millis(
                            (now - rec.heartbeat_ms.unwrap_or(now)).max(0) as u64
                        ),
                    });
                }
                rec.sessions += 1;
            }
            // A new driver starts with no cancel request pending, and a new
            // epoch: whoever held the run before can no longer commit.
            rec.epoch += 1;
            tx.execute(
                "UPDATE runs SET owner = ?2, heartbeat_ms = ?3, sessions = ?4, cancel_requested = 0, epoch = ?5 WHERE id = ?1",
                params![run, mine, now, rec.sessions, rec.epoch],
            )
            .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            rec.owner = Some(mine);
            rec.heartbeat_ms = Some(now);
            rec.cancel_requested = false;
            let lease = Lease {
                owner: owner.clone(),
                epoch: rec.epoch,
            };
            Ok((rec, lease))
        })
    }

    fn heartbeat(&self, run: &str, lease: &Lease) -> Result<u8, StoreError> {
        self.with(|conn| {
            let cancel: Option<u8> = conn
                .prepare_cached(
                    "UPDATE runs SET heartbeat_ms = ?3 WHERE id = ?1 AND owner = ?2 AND epoch = ?4 RETURNING cancel_requested",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![run, lease.owner.encode(), now_ms(), lease.epoch],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(|e| self.err(e))?;
            cancel.ok_or_else(|| StoreError::LeaseLost(run.into()))
        })
    }

    fn release(&self, run: &str, lease: &Lease) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE runs SET owner = NULL, heartbeat_ms = NULL WHERE id = ?1 AND owner = ?2 AND epoch = ?3",
                params![run, lease.owner.encode(), lease.epoch],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
        })
    }

    fn commit(&self, run: &str, lease: &Lease, entries: &[Entry]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            // A driver whose lease was taken or fenced off by a cancel
            // writes nothing more: the epoch is the fencing token.
            let held = tx
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND owner = ?2 AND epoch = ?3")
                .and_then(|mut s| {
                    s.query_row(params![run, lease.owner.encode(), lease.epoch], |_| Ok(()))
                        .optional()
                })
                .map_err(|e| self.err(e))?;
            if held.is_none() {
                return Err(StoreError::LeaseLost(run.into()));
            }
            for e in entries {
                insert_entry(&tx, run, e).map_err(|e| self.err(e))?;
            }
            // One update of the run's row per batch, not one per call.
            let charge: i64 = entries.iter().map(|e| e.fuel_charge).sum();
            if charge != 0 {
                tx.prepare_cached(
                    "UPDATE runs SET fuel_charged = max(0, fuel_charged + ?2) WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![run, charge]))
                .map_err(|e| self.err(e))?;
            }
            tx.commit().map_err(|e| self.err(e))
        })
    }

    fn run(&self, run: &str) -> Result<RunRecord, StoreError> {
        self.with(|conn| {
            get_run(conn, run)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownRun(run.into()))
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.with(|conn| {
            let mut s = conn
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_ms, id"
                ))
                .map_err(|e| self.err(e))?;
            s.query_map([], run_row)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))
        })
    }

    fn tenant_runs(&self, q: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.with(|conn| {
            // Newest first; the cursor is the last page's final (created_ms, id).
            let (before_ms, before_id) = q.before.clone().unwrap_or((i64::MAX, String::new()));
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2)
                       AND (created_ms < ?3 OR (created_ms = ?3 AND ?4 != '' AND id < ?4))
                     ORDER BY created_ms DESC, id DESC LIMIT ?5"
                ))
                .map_err(|e| self.err(e))?;
            s.query_map(
                params![
                    q.tenant,
                    q.status.map(|s| s.as_str()),
                    before_ms,
                    before_id,
                    q.limit as i64
                ],
                run_row,
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
        })
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO agents (tenant, name, digest, info, size, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, name) DO UPDATE SET digest = excluded.digest, info = excluded.info, size = excluded.size, created_ms = excluded.created_ms",
            )
            .and_then(|mut s| {
                s.execute(params![
                    agent.tenant,
                    agent.name,
                    agent.digest,
                    agent.info.to_string(),
                    agent.size as i64,
                    agent.created_ms
                ])
            })
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    fn agents(&self, tenant: &str) -> Result<Vec<AgentRecord>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT tenant, name, digest, info, size, created_ms FROM agents WHERE tenant = ?1 ORDER BY name",
            )
            .and_then(|mut s| s.query_map([tenant], agent_row)?.collect())
            .map_err(|e| self.err(e))
        })
    }

    fn reserve_fuel(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
        want: u64,
    ) -> Result<FuelWindow, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let mut w = window_of(&tx, tenant, window, limit).map_err(|e| self.err(e))?;
            w.granted = want.min(limit.saturating_sub(w.charged));
            if w.granted > 0 {
                tx.prepare_cached(
                    "INSERT INTO fuel_windows (tenant, start_ms, charged) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant, start_ms) DO UPDATE SET charged = charged + excluded.charged",
                )
                .and_then(|mut s| s.execute(params![tenant, w.start_ms, w.granted as i64]))
                .map_err(|e| self.err(e))?;
                w.charged += w.granted;
            }
            tx.commit().map_err(|e| self.err(e))?;
            Ok(w)
        })
    }

    fn settle_fuel(
        &self,
        tenant: &str,
        start_ms: i64,
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError> {
        let refund = reserved.saturating_sub(used) as i64;
        if refund == 0 {
            return Ok(());
        }
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE fuel_windows SET charged = max(0, charged - ?3) WHERE tenant = ?1 AND start_ms = ?2",
            )
            .and_then(|mut s| s.execute(params![tenant, start_ms, refund]))
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    fn fuel_window(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
    ) -> Result<FuelWindow, StoreError> {
        self.with(|conn| window_of(conn, tenant, window, limit).map_err(|e| self.err(e)))
    }

    fn put_workflow(&self, w: &WorkflowRecord) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO workflows (tenant, name, text, format, digest, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, name) DO UPDATE SET text = excluded.text, format = excluded.format, digest = excluded.digest, created_ms = excluded.created_ms",
            )
            .and_then(|mut s| {
                s.execute(params![w.tenant, w.name, w.text, w.format, w.digest, w.created_ms])
            })
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    fn workflows(&self, tenant: &str) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT tenant, name, text, format, digest, created_ms FROM workflows WHERE tenant = ?1 ORDER BY name",
            )
            .and_then(|mut s| {
                s.query_map([tenant], |r| {
                    Ok(WorkflowRecord {
                        tenant: r.get(0)?,
                        name: r.get(1)?,
                        text: r.get(2)?,
                        format: r.get(3)?,
                        digest: r.get(4)?,
                        created_ms: r.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
        })
    }

    fn delete_agent(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM agents WHERE tenant = ?1 AND name = ?2")
                .and_then(|mut s| s.execute([tenant, name]))
                .map(|n| n > 0)
                .map_err(|e| self.err(e))
        })
    }

    fn steps(&self, run: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.with(|conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1"
                ))
                .map_err(|e| self.err(e))?;
            s.query_map([run], step_row)
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))
        })
    }

    fn journal(
        &self,
        run: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.with(|conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT seq, at_ms, kind, step, data FROM journal WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(|e| self.err(e))?;
            s.query_map(params![run, after, limit as i64], |r| {
                let data: String = r.get(4)?;
                Ok(JournalEntry {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    step: r.get(3)?,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))
        })
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT data FROM blobs WHERE digest = ?1")
                .and_then(|mut s| s.query_row([digest], |r| r.get(0)).optional())
                .map_err(|e| self.err(e))
        })
    }

    fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT output FROM cache WHERE key = ?1 AND (expires_ms IS NULL OR expires_ms > ?2)",
            )
            .and_then(|mut s| s.query_row(params![key, now_ms], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
        })
    }

    fn answer(&self, run: &str, step: &str, answer: &Value) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let rec = get_run(&tx, run)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownRun(run.into()))?;
            let row = tx
                .prepare_cached(&format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 AND step = ?2"
                ))
                .and_then(|mut s| s.query_row([run, step], step_row).optional())
                .map_err(|e| self.err(e))?;
            let step_err = |message: String| StoreError::Step {
                run: run.into(),
                step: step.into(),
                message,
            };
            let Some(mut row) = row else {
                return Err(step_err(
                    "has not started, so there is nothing to answer yet (see `corral show`)".into(),
                ));
            };
            if rec.is_finished() {
                return Err(step_err(format!("the run is already {}", rec.status)));
            }
            if !row.status.awaits_human() {
                return Err(step_err(format!(
                    "is not waiting for a human: its status is `{}`",
                    row.status
                )));
            }
            if row.answer.is_some() {
                return Err(step_err(
                    "was already answered; resume the run to apply the answer".into(),
                ));
            }
            if let Some(deadline) = row.waiting.as_ref().and_then(|w| w["deadline_ms"].as_i64())
                && deadline <= now_ms()
            {
                return Err(step_err(
                    "its approval deadline has passed; resume the run to apply `on_timeout`".into(),
                ));
            }
            row.answer = Some(answer.clone());
            let e = Entry {
                step_state: Some(row),
                ..Entry::new("approval_answered", Some(step.into()), {
                    let mut data = serde_json::Map::new();
                    data.insert("step".into(), Value::String(step.into()));
                    if let Value::Object(a) = answer {
                        data.extend(a.clone());
                    }
                    Value::Object(data).to_string()
                })
            };
            insert_entry(&tx, run, &e).map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))
        })
    }

    fn request_cancel(
        &self,
        run: &str,
        lease: Duration,
        compensate: bool,
    ) -> Result<RunRecord, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let mut rec = get_run(&tx, run)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownRun(run.into()))?;
            if rec.is_finished() {
                return Ok(rec);
            }
            if rec.lease_live(now_ms(), lease) {
                tx.execute(
                    "UPDATE runs SET cancel_requested = ?2 WHERE id = ?1",
                    params![run, if compensate { 2 } else { 1 }],
                )
                .map_err(|e| self.err(e))?;
                rec.cancel_requested = true;
            } else {
                // Nobody live drives it: cancel it here, and fence off a
                // driver whose lease went stale (paused, or cut off from
                // the store) so that it cannot write over the cancel.
                tx.execute(
                    "UPDATE runs SET owner = NULL, heartbeat_ms = NULL, epoch = epoch + 1 WHERE id = ?1",
                    params![run],
                )
                .map_err(|e| self.err(e))?;
                let e = Entry {
                    run_state: Some((
                        RunState::Cancelled,
                        Some("cancelled with `corral cancel`".into()),
                    )),
                    ..Entry::new(
                        "run_finished",
                        None,
                        r#"{"status":"cancelled","fuel_used":0,"error":"cancelled with `corral cancel`"}"#.into(),
                    )
                };
                insert_entry(&tx, run, &e).map_err(|e| self.err(e))?;
                rec.status = RunState::Cancelled;
            }
            tx.commit().map_err(|e| self.err(e))?;
            Ok(rec)
        })
    }

    fn gc(&self, before_ms: i64) -> Result<GcStats, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let mut stats = GcStats::default();
            // A finished run that a live process is retrying is kept.
            let finished = format!(
                "status IN ('completed', 'degraded', 'failed', 'fuel_exhausted', 'cancelled') AND updated_ms < ?1 AND (owner IS NULL OR heartbeat_ms < {})",
                now_ms() - crate::LEASE.as_millis() as i64
            );
            let run = |sql: &str| -> rusqlite::Result<u64> {
                tx.execute(sql, [before_ms]).map(|n| n as u64)
            };
            (|| -> rusqlite::Result<()> {
                stats.journal_entries = run(&format!(
                    "DELETE FROM journal WHERE run_id IN (SELECT id FROM runs WHERE {finished})"
                ))?;
                run(&format!(
                    "DELETE FROM steps WHERE run_id IN (SELECT id FROM runs WHERE {finished})"
                ))?;
                run(&format!(
                    "DELETE FROM run_definitions WHERE run_id IN (SELECT id FROM runs WHERE {finished})"
                ))?;
                stats.runs = run(&format!("DELETE FROM runs WHERE {finished}"))?;
                stats.cache_entries = tx.execute(
                    "DELETE FROM cache WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
                    [now_ms()],
                )? as u64;
                let unreferenced = "NOT EXISTS (SELECT 1 FROM journal j WHERE j.blob = blobs.digest) AND NOT EXISTS (SELECT 1 FROM cache c WHERE c.output = blobs.digest)";
                (stats.blobs, stats.blob_bytes) = tx.query_row(
                    &format!("SELECT count(*), coalesce(sum(length(data)), 0) FROM blobs WHERE {unreferenced}"),
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )?;
                tx.execute(&format!("DELETE FROM blobs WHERE {unreferenced}"), [])?;
                Ok(())
            })()
            .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            // Hand the freed pages back to the file system.
            conn.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| self.err(e))?;
            Ok(stats)
        })
    }
}

#[cfg(test)]
mod tests;
