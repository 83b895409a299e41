//! Runs coming into the SQLite store and changing hands: a new run (leased, or queued for a claim), a claim of one run or of the oldest claimable one.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use super::rows::{RUN_COLUMNS, run_row};
use crate::{Lease, NewRun, Owner, RunRecord, StoreError, now_ms};

impl SqliteStore {
    /// Inserts a new run, leased to `owner`, or queued for the next
    /// [`Store::claim_next`] (no owner, no session yet).
    pub(super) fn insert_run(&self, run: &NewRun, owner: Option<&Owner>) -> Result<(), StoreError> {
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
                    "INSERT OR IGNORE INTO runs (id, workflow, file, digest, params, components, status, created_ms, updated_ms, owner, heartbeat_ms, epoch, tenant, idempotency_key, sessions)
                     VALUES (?1, ?2, ?3, ?5, ?6, ?7, 'running', ?8, ?8, ?9, CASE WHEN ?9 IS NULL THEN NULL ELSE ?8 END, ?12, ?10, ?11, ?12)",
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
                        owner.map(Owner::encode),
                        run.tenant,
                        run.idempotency_key,
                        i64::from(owner.is_some()),
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
            tx.commit().map_err(|e| self.err(e))
        })
    }

    /// [`Store::claim_next`]: the oldest claimable run of `tenants`, in
    /// one write transaction (SQLite has one writer at a time).
    pub(super) fn claim_oldest(
        &self,
        owner: &Owner,
        lease: Duration,
        tenants: &[String],
    ) -> Result<Option<(RunRecord, Lease)>, StoreError> {
        let tenants = serde_json::to_string(tenants).unwrap_or_default();
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let now = now_ms();
            let oldest = |filter: &str, p: &dyn rusqlite::ToSql| {
                tx.prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE tenant != '' AND status = 'running' AND {filter}
                       AND tenant IN (SELECT value FROM json_each(?2))
                     ORDER BY created_ms, id LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![p, tenants], run_row).optional())
                .map_err(|e| self.err(e))
            };
            let stale = now - lease.as_millis() as i64;
            let mut next = oldest("(owner IS NULL OR heartbeat_ms IS NULL OR heartbeat_ms < ?1)", &stale)?;
            if next.is_none() {
                // A process of this host known dead (killed) gives its runs
                // up before its lease ends.
                let owners: Vec<String> = tx
                    .prepare_cached(
                        "SELECT DISTINCT owner FROM runs WHERE tenant != '' AND status = 'running' AND substr(owner, 1, length(?1)) = ?1",
                    )
                    .and_then(|mut s| s.query_map([crate::rules::this_host()], |r| r.get(0))?.collect())
                    .map_err(|e| self.err(e))?;
                let dead = serde_json::to_string(&crate::rules::dead(owners)).unwrap_or_default();
                next = oldest("owner IN (SELECT value FROM json_each(?1))", &dead)?;
            }
            let Some(rec) = next else {
                return Ok(None);
            };
            let claimed = self.take(&tx, rec, owner, lease, now)?;
            tx.commit().map_err(|e| self.err(e))?;
            Ok(Some(claimed))
        })
    }

    /// Gives `rec` (read in `tx`) to `owner` unless a live owner holds it
    /// ([`crate::rules::take`]), and writes the claim in `tx`.
    pub(super) fn take(
        &self,
        tx: &Connection,
        rec: RunRecord,
        owner: &Owner,
        lease: Duration,
        now: i64,
    ) -> Result<(RunRecord, Lease), StoreError> {
        let (rec, lease) = crate::rules::take(rec, owner, lease, now)?;
        tx.execute(
            "UPDATE runs SET owner = ?2, heartbeat_ms = ?3, sessions = ?4, cancel_requested = 0, epoch = ?5 WHERE id = ?1",
            params![rec.id, rec.owner, now, rec.sessions, rec.epoch],
        )
        .map_err(|e| self.err(e))?;
        Ok((rec, lease))
    }
}
