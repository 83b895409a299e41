//! The embedded store: one SQLite file in WAL mode, migrated by `user_version`, shared safely by many processes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

mod artifacts;
mod claims;
mod rows;
mod schema;
mod webhooks;

use rows::{
    RUN_COLUMNS, STEP_COLUMNS, agent_row, get_run, insert_entry, run_row, step_row, window_of,
};
use schema::migrate;

use super::{
    AgentRecord, ArtifactLimits, ArtifactRefusal, ArtifactRow, ArtifactUpload, Delivery,
    DeliveryAttempt, DeliveryState, Entry, FuelWindow, GcStats, JournalEntry, Lease, NewRun, Owner,
    RunQuery, RunRecord, RunState, StepRecord, Store, StoreError, WebhookMessage, WorkflowRecord,
    now_ms,
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

    /// Artifact files live beside the database.
    fn artifact_dir(&self) -> PathBuf {
        self.path.with_file_name("artifacts")
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

impl Store for SqliteStore {
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<Lease, StoreError> {
        self.insert_run(run, Some(owner))?;
        Ok(Lease {
            owner: owner.clone(),
            epoch: 1,
        })
    }

    fn submit_run(&self, run: &NewRun) -> Result<(), StoreError> {
        self.insert_run(run, None)
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
            let rec = get_run(&tx, run)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StoreError::UnknownRun(run.into()))?;
            let claimed = self.take(&tx, rec, owner, lease, now_ms())?;
            tx.commit().map_err(|e| self.err(e))?;
            Ok(claimed)
        })
    }

    fn claim_next(
        &self,
        owner: &Owner,
        lease: Duration,
        tenants: &[String],
    ) -> Result<Option<(RunRecord, Lease)>, StoreError> {
        self.claim_oldest(owner, lease, tenants)
    }

    fn wake(&self, run: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE runs SET status = 'running', owner = NULL, heartbeat_ms = NULL
                 WHERE id = ?1 AND status IN ('waiting', 'paused')",
            )
            .and_then(|mut s| s.execute([run]))
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
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

    fn hold_slots(
        &self,
        key: &str,
        holder: &str,
        want: u32,
        limit: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let now = now_ms();
            let others: i64 = tx
                .prepare_cached(
                    "SELECT coalesce(sum(held), 0) FROM slot_holds WHERE key = ?1 AND holder != ?2 AND expires_ms > ?3",
                )
                .and_then(|mut s| s.query_row(params![key, holder, now], |r| r.get(0)))
                .map_err(|e| self.err(e))?;
            let held = crate::rules::slots_granted(want, others, limit);
            tx.execute(
                "DELETE FROM slot_holds WHERE key = ?1 AND (holder = ?2 OR expires_ms <= ?3)",
                params![key, holder, now],
            )
            .map_err(|e| self.err(e))?;
            if held > 0 {
                tx.execute(
                    "INSERT INTO slot_holds (key, holder, held, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![key, holder, held, now + ttl.as_millis() as i64],
                )
                .map_err(|e| self.err(e))?;
            }
            tx.commit().map_err(|e| self.err(e))?;
            Ok(held)
        })
    }

    fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO components (digest, data, created_ms) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![digest, bytes, now_ms()]))
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT data FROM components WHERE digest = ?1")
                .and_then(|mut s| s.query_row([digest], |r| r.get(0)).optional())
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

    fn artifact_upload(&self) -> Result<ArtifactUpload, StoreError> {
        ArtifactUpload::create(&self.artifact_dir())
    }

    fn artifact_finish(
        &self,
        run: &str,
        upload: ArtifactUpload,
        media_type: &str,
        limits: ArtifactLimits,
    ) -> Result<Result<ArtifactRow, ArtifactRefusal>, StoreError> {
        let (digest, size, tmp) = upload.seal()?;
        let dir = self.artifact_dir();
        let new = ArtifactRow {
            run: run.to_owned(),
            digest,
            media_type: media_type.to_owned(),
            size,
            created_ms: 0,
        };
        let recorded = self.with(|conn| {
            artifacts::record(conn, &new, limits, || {
                crate::artifact::place(&dir, &new.digest, &tmp)
            })
            .map_err(|f| match f {
                artifacts::Failure::Sql(e) => self.err(e),
                artifacts::Failure::Store(e) => e,
            })
        });
        // Refused, failed or already held: the upload is not needed.
        let _ = std::fs::remove_file(&tmp);
        recorded
    }

    fn artifact(&self, run: &str, digest: &str) -> Result<Option<ArtifactRow>, StoreError> {
        self.with(|conn| artifacts::get(conn, run, digest).map_err(|e| self.err(e)))
    }

    fn artifacts(&self, run: &str) -> Result<Vec<ArtifactRow>, StoreError> {
        self.with(|conn| artifacts::list(conn, run).map_err(|e| self.err(e)))
    }

    fn artifact_read(&self, digest: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        crate::artifact::read(&self.artifact_dir(), digest, offset, max)
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
            let row = crate::rules::answer_check(&rec, run, step, row, now_ms())?;
            let e = crate::rules::answer_entry(row, step, answer);
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
                let e = crate::rules::cancel_entry();
                insert_entry(&tx, run, &e).map_err(|e| self.err(e))?;
                rec.status = RunState::Cancelled;
            }
            tx.commit().map_err(|e| self.err(e))?;
            Ok(rec)
        })
    }

    fn update_rate(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<u64>) -> Option<u64>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            (|| -> rusqlite::Result<()> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let old: Option<i64> = tx
                    .prepare_cached("SELECT value FROM rate_limits WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(new) = f(old.map(|v| v.max(0) as u64)) {
                    tx.prepare_cached(
                        "INSERT INTO rate_limits (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![key, new.min(i64::MAX as u64) as i64])?;
                }
                tx.commit()
            })()
            .map_err(|e| self.err(e))
        })
    }

    fn enqueue_webhooks(&self, messages: &[WebhookMessage]) -> Result<(), StoreError> {
        self.with(|conn| webhooks::enqueue(conn, messages).map_err(|e| self.err(e)))
    }

    fn claim_webhooks(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookMessage>, StoreError> {
        self.with(|conn| webhooks::claim(conn, now_ms, hold, limit).map_err(|e| self.err(e)))
    }

    fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
        state: DeliveryState,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with(|conn| webhooks::record(conn, attempt, state, next_ms).map_err(|e| self.err(e)))
    }

    fn deliveries(&self, tenant: &str, run: &str) -> Result<Vec<Delivery>, StoreError> {
        self.with(|conn| webhooks::deliveries(conn, tenant, run).map_err(|e| self.err(e)))
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
                // A finished run's webhook messages go with it, unless one
                // is still being delivered.
                let settled = format!(
                    "SELECT m.id FROM webhook_messages m WHERE m.state != 'pending' AND m.run_id IN (SELECT id FROM runs WHERE {finished})"
                );
                run(&format!(
                    "DELETE FROM webhook_attempts WHERE message_id IN ({settled})"
                ))?;
                run(&format!("DELETE FROM webhook_messages WHERE id IN ({settled})"))?;
                // Its hold on artifacts too; the files go below once no run holds them.
                run(&format!(
                    "DELETE FROM artifacts WHERE run_id IN (SELECT id FROM runs WHERE {finished})"
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
            // Files no run holds. Only those older than the cut-off: a file
            // placed just now may be about to get its row in another process.
            let before = std::time::UNIX_EPOCH
                + Duration::from_millis(before_ms.max(0) as u64);
            (stats.artifacts, stats.artifact_bytes) =
                crate::artifact::sweep(&self.artifact_dir(), before, &mut |digest| {
                    artifacts::held(conn, digest).map_err(|e| self.err(e))
                })?;
            Ok(stats)
        })
    }
}

#[cfg(test)]
mod tests;
