//! gc on PostgreSQL: finished runs past their age, their entries and blobs, and the artifacts no run holds any more.

use super::*;

/// Deletes finished runs last updated before `before_ms` (unless a live
/// process is retrying one), their entries, and what nothing uses any more.
/// The runs are chosen once and locked, so that a claim racing `gc` waits
/// and then finds the run gone rather than half deleted.
pub(super) async fn gc(tx: &impl GenericClient, before_ms: i64, at: i64) -> Rows<GcStats> {
    let mut stats = GcStats::default();
    // A large store may take longer than any one request should.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    let stale = at - crate::LEASE.as_millis() as i64;
    let ids: Vec<String> = tx
        .query(
            "SELECT id FROM runs WHERE status IN ('completed', 'degraded', 'failed', 'fuel_exhausted', 'cancelled')
               AND updated_ms < $1 AND (owner IS NULL OR heartbeat_ms < $2)
             FOR UPDATE SKIP LOCKED",
            &[&before_ms, &stale],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let run = |sql: &'static str| {
        let ids = &ids;
        async move { tx.execute(sql, &[ids]).await }
    };
    stats.journal_entries = run("DELETE FROM journal WHERE run_id = ANY($1)").await?;
    run("DELETE FROM steps WHERE run_id = ANY($1)").await?;
    run("DELETE FROM run_definitions WHERE run_id = ANY($1)").await?;
    // A finished run's webhook messages go with it, unless one is still
    // being delivered.
    run("DELETE FROM webhook_attempts WHERE message_id IN (
           SELECT id FROM webhook_messages WHERE state != 'pending' AND run_id = ANY($1))")
    .await?;
    run("DELETE FROM webhook_messages WHERE state != 'pending' AND run_id = ANY($1)").await?;
    // Its hold on artifacts too; the chunks go below once no run holds them.
    run("DELETE FROM artifacts WHERE run_id = ANY($1)").await?;
    stats.runs = run("DELETE FROM runs WHERE id = ANY($1)").await?;
    stats.cache_entries = tx
        .execute(
            "DELETE FROM cache WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
            &[&at],
        )
        .await?;
    // Only blobs a minute old: a commit in flight may be about to name a
    // newer one (a blob stored again is renewed, under its row lock).
    let r = tx
        .query_one(
            "WITH gone AS (
                DELETE FROM blobs b
                WHERE b.created_ms < $1
                  AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.blob = b.digest)
                  AND NOT EXISTS (SELECT 1 FROM cache c WHERE c.output = b.digest)
                RETURNING length(data) AS n)
             SELECT count(*)::bigint, coalesce(sum(n), 0)::bigint FROM gone",
            &[&(at - 60_000)],
        )
        .await?;
    stats.blobs = r.try_get::<_, i64>(0)?.max(0) as u64;
    stats.blob_bytes = r.try_get::<_, i64>(1)?.max(0) as u64;
    (stats.artifacts, stats.artifact_bytes) = artifacts::sweep(tx, before_ms).await?;
    Ok(stats)
}
