//! Runs coming into the PostgreSQL store and changing hands: a new run (leased, or queued for a claim), a claim of one run or of the oldest claimable one.

use super::*;

/// [`Store::claim_next`] on PostgreSQL: the oldest claimable run of
/// `tenants`, its row locked with `SKIP LOCKED` so that processes claiming
/// at once take different runs.
pub(super) fn claim_oldest(
    store: &PgStore,
    owner: &Owner,
    lease: Duration,
    tenants: &[String],
) -> Result<Option<(RunRecord, Lease)>, StoreError> {
    let (owner, tenants) = (owner.clone(), tenants.to_vec());
    let shown = store.shown.clone();
    let stale = lease.as_millis() as i64;
    store.block(move |mut c| async move {
        let fail = |e: RowError| row_error(&shown, e);
        let tx = c.transaction().await.map_err(|e| sql_error(&shown, e))?;
        let at = now(&tx).await.map_err(fail)?;
        let mut next = oldest_claimable(&tx, "(owner IS NULL OR heartbeat_ms IS NULL OR heartbeat_ms < $1::int8)", &(at - stale), &tenants)
            .await
            .map_err(fail)?;
        if next.is_none() {
            // A process of this host known dead (killed) gives its runs
            // up before its lease ends.
            let owners: Vec<String> = tx
                .query(
                    "SELECT DISTINCT owner FROM runs WHERE tenant != '' AND status = 'running' AND left(owner, length($1)) = $1",
                    &[&crate::rules::this_host()],
                )
                .await
                .map_err(|e| sql_error(&shown, e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let dead = crate::rules::dead(owners);
            if !dead.is_empty() {
                next = oldest_claimable(&tx, "owner = ANY($1::text[])", &dead, &tenants)
                    .await
                    .map_err(fail)?;
            }
        }
        let Some(rec) = next else {
            return Ok(None);
        };
        let claimed = take(&tx, rec, owner, lease, at, &shown).await?;
        tx.commit().await.map_err(|e| sql_error(&shown, e))?;
        Ok(Some(claimed))
    })
}

/// Inserts a new run in `tx`, leased to `owner` (encoded), or queued for
/// the next [`Store::claim_next`] when `None` (no owner, no session yet).
pub(super) async fn insert_run(
    tx: &deadpool_postgres::Transaction<'_>,
    run: &NewRun,
    owner: Option<String>,
    shown: &str,
) -> Result<(), StoreError> {
    let fail = |e: RowError| row_error(shown, e);
    if let Some(max) = run.max_running {
        // Serialized per tenant: two processes cannot both start its last slot.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('corral-runs:' || $1))",
            &[&run.tenant],
        )
        .await
        .map_err(|e| sql_error(shown, e))?;
        let running: i64 = tx
            .query_one(
                "SELECT count(*) FROM runs WHERE tenant = $1 AND status = 'running'",
                &[&run.tenant],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| sql_error(shown, e))?;
        if running >= i64::from(max) {
            return Err(StoreError::TooManyRuns {
                tenant: run.tenant.clone(),
                running: running as u32,
            });
        }
    }
    let at = now(tx).await.map_err(fail)?;
    let inserted = tx
            .execute(
                "INSERT INTO runs (id, workflow, file, digest, params, components, status, created_ms, updated_ms, owner, heartbeat_ms, epoch, tenant, idempotency_key, sessions)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $7, $8, $12, $11, $9, $10, $13) ON CONFLICT DO NOTHING",
                &[
                    &run.id,
                    &run.workflow,
                    &run.file,
                    &run.digest,
                    &run.params.to_string(),
                    &run.components.to_string(),
                    &at,
                    &owner,
                    &run.tenant,
                    &run.idempotency_key,
                    &i64::from(owner.is_some()),
                    &owner.as_ref().map(|_| at),
                    &i32::from(owner.is_some()),
                ],
            )
            .await
            .map_err(|e| sql_error(shown, e))?;
    if inserted == 0 {
        // The same request again, or an id already taken.
        if let Some(key) = &run.idempotency_key {
            let earlier = tx
                .query_opt(
                    "SELECT id FROM runs WHERE tenant = $1 AND idempotency_key = $2",
                    &[&run.tenant, key],
                )
                .await
                .map_err(|e| sql_error(shown, e))?;
            if let Some(r) = earlier {
                return Err(StoreError::SameRequest { run: r.get(0) });
            }
        }
        return Err(StoreError::RunExists(run.id.clone()));
    }
    tx.execute(
        "INSERT INTO run_definitions (run_id, definition) VALUES ($1, $2)",
        &[&run.id, &run.definition],
    )
    .await
    .map_err(|e| sql_error(shown, e))?;
    Ok(())
}

/// Gives `rec` (its row locked by `tx`) to `owner` unless a live owner
/// holds it ([`crate::rules::take`]), and writes the claim in `tx`.
pub(super) async fn take(
    tx: &deadpool_postgres::Transaction<'_>,
    rec: RunRecord,
    owner: Owner,
    lease: Duration,
    at: i64,
    shown: &str,
) -> Result<(RunRecord, Lease), StoreError> {
    let (rec, lease) = crate::rules::take(rec, &owner, lease, at)?;
    tx.execute(
        "UPDATE runs SET owner = $2, heartbeat_ms = $3, sessions = $4, cancel_requested = 0, epoch = $5 WHERE id = $1",
        &[&rec.id, &rec.owner, &at, &(rec.sessions as i32), &rec.epoch],
    )
    .await
    .map_err(|e| sql_error(shown, e))?;
    Ok((rec, lease))
}

/// The oldest run of one of `tenants` that is running and matches `filter` (on `$1`),
/// its row locked; rows another process is claiming are skipped, not
/// waited for, so processes claiming at once take different runs.
async fn oldest_claimable(
    tx: &deadpool_postgres::Transaction<'_>,
    filter: &str,
    p: &(dyn tokio_postgres::types::ToSql + Sync),
    tenants: &Vec<String>,
) -> Rows<Option<RunRecord>> {
    let s = tx
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE tenant != '' AND status = 'running' AND {filter}
               AND tenant = ANY($2::text[])
             ORDER BY created_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    tx.query_opt(&s, &[p, tenants])
        .await?
        .as_ref()
        .map(rows::run_row)
        .transpose()
}
