//! Artifacts in PostgreSQL: the bytes as 1 MiB chunks (one copy per digest, readable from every machine), and the runs that hold each, recorded under the run's and the tenant's storage limits.

use std::io::Read;
use std::path::Path;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::rows::{Rows, now};
use crate::{ArtifactLimits, ArtifactRefusal, ArtifactRow};

/// The size of a stored chunk; reads are served from at most two.
pub(super) const CHUNK: usize = 1 << 20;

const COLUMNS: &str = "run_id, digest, media_type, size, created_ms";

fn row(r: &Row) -> Rows<ArtifactRow> {
    Ok(ArtifactRow {
        run: r.try_get(0)?,
        digest: r.try_get(1)?,
        media_type: r.try_get(2)?,
        size: r.try_get::<_, i64>(3)?.max(0) as u64,
        created_ms: r.try_get(4)?,
    })
}

pub(super) async fn get(
    c: &impl GenericClient,
    run: &str,
    digest: &str,
) -> Rows<Option<ArtifactRow>> {
    let s = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE run_id = $1 AND digest = $2"
        ))
        .await?;
    c.query_opt(&s, &[&run, &digest])
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

pub(super) async fn list(c: &impl GenericClient, run: &str) -> Rows<Vec<ArtifactRow>> {
    let s = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM artifacts WHERE run_id = $1 ORDER BY created_ms, digest"
        ))
        .await?;
    c.query(&s, &[&run]).await?.iter().map(row).collect()
}

/// Why recording failed: the database, or reading the sealed upload.
pub(super) enum Failure {
    Rows(super::rows::RowError),
    Io(std::io::Error),
}

impl From<super::rows::RowError> for Failure {
    fn from(e: super::rows::RowError) -> Self {
        Failure::Rows(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Rows(e.into())
    }
}

/// Records that `new.run` holds `new.digest` if the limits allow, copying
/// the bytes from `file` into chunks unless they are stored already; one
/// transaction, serialized per tenant so that two processes cannot both
/// fit under the same limit.
pub(super) async fn record(
    conn: &mut Object,
    new: &ArtifactRow,
    limits: ArtifactLimits,
    file: &Path,
) -> Result<Result<ArtifactRow, ArtifactRefusal>, Failure> {
    let tx = conn.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('corral-artifacts:' || coalesce((SELECT tenant FROM runs WHERE id = $1), '')))",
        &[&new.run],
    )
    .await?;
    if let Some(existing) = get(&tx, &new.run, &new.digest).await? {
        return Ok(Ok(existing));
    }
    let used = |sql: &'static str| {
        let tx = &tx;
        async move {
            let r = tx.query_one(sql, &[&new.run]).await?;
            Ok::<u64, tokio_postgres::Error>(r.try_get::<_, i64>(0)?.max(0) as u64)
        }
    };
    let run_used =
        used("SELECT coalesce(sum(size), 0)::bigint FROM artifacts WHERE run_id = $1").await?;
    let tenant_used = used(
        "SELECT coalesce(sum(a.size), 0)::bigint FROM artifacts a JOIN runs r ON r.id = a.run_id
         WHERE r.tenant = (SELECT tenant FROM runs WHERE id = $1)",
    )
    .await?;
    if let Err(refusal) = crate::rules::artifact_fits(new.size, run_used, tenant_used, limits) {
        return Ok(Err(refusal));
    }
    let at = now(&tx).await?;
    // Renewed first, so that a concurrent `gc` sees the bytes as fresh (it
    // waits for this lock, then finds them young); none renewed means
    // none stored, or just swept: write them.
    let renewed = tx
        .execute(
            "UPDATE artifact_chunks SET created_ms = $2 WHERE digest = $1",
            &[&new.digest, &at],
        )
        .await?;
    if renewed == 0 {
        let insert = tx
            .prepare_cached(
                "INSERT INTO artifact_chunks (digest, idx, data, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (digest, idx) DO NOTHING",
            )
            .await?;
        let mut f = std::fs::File::open(file).map_err(Failure::Io)?;
        let mut buf = vec![0u8; CHUNK];
        for idx in 0i32.. {
            let n = fill(&mut f, &mut buf).map_err(Failure::Io)?;
            if n == 0 && idx > 0 {
                break;
            }
            tx.execute(&insert, &[&new.digest, &idx, &&buf[..n], &at])
                .await?;
            if n < CHUNK {
                break;
            }
        }
    }
    let s = tx
        .prepare_cached(&format!(
            "INSERT INTO artifacts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .await?;
    let size = new.size.min(i64::MAX as u64) as i64;
    let stored = row(&tx
        .query_one(&s, &[&new.run, &new.digest, &new.media_type, &size, &at])
        .await?)?;
    tx.commit().await?;
    Ok(Ok(stored))
}

/// Reads until `buf` is full or the file ends.
fn fill(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Up to `max` bytes of `digest` from `offset`; empty past the end.
pub(super) async fn read(
    c: &impl GenericClient,
    digest: &str,
    offset: u64,
    max: usize,
) -> Rows<Vec<u8>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let first = (offset / CHUNK as u64).min(i32::MAX as u64) as i32;
    let last = (offset.saturating_add(max as u64 - 1) / CHUNK as u64).min(i32::MAX as u64) as i32;
    let s = c
        .prepare_cached(
            "SELECT idx, data FROM artifact_chunks WHERE digest = $1 AND idx BETWEEN $2 AND $3 ORDER BY idx",
        )
        .await?;
    let mut out = Vec::with_capacity(max.min(2 * CHUNK));
    let mut skip = (offset % CHUNK as u64) as usize;
    for r in c.query(&s, &[&digest, &first, &last]).await? {
        let data: &[u8] = r.try_get(1)?;
        let take = &data[skip.min(data.len())..];
        skip = 0;
        let room = max - out.len();
        out.extend_from_slice(&take[..take.len().min(room)]);
        if out.len() == max {
            break;
        }
    }
    Ok(out)
}

/// Deletes the chunks of artifacts no run holds, stored before `before_ms`;
/// gives how many artifacts and bytes went.
pub(super) async fn sweep(c: &impl GenericClient, before_ms: i64) -> Rows<(u64, u64)> {
    let r = c
        .query_one(
            "WITH gone AS (
                DELETE FROM artifact_chunks c
                WHERE c.created_ms < $1 AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.digest = c.digest)
                RETURNING digest, length(data) AS n)
             SELECT count(DISTINCT digest)::bigint, coalesce(sum(n), 0)::bigint FROM gone",
            &[&before_ms],
        )
        .await?;
    Ok((
        r.try_get::<_, i64>(0)?.max(0) as u64,
        r.try_get::<_, i64>(1)?.max(0) as u64,
    ))
}
