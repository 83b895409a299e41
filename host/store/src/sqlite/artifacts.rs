//! The runs that hold each artifact, in SQLite: record a finished upload under the run's and the tenant's storage limits, look up, list.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{ArtifactLimits, ArtifactRefusal, ArtifactRow, now_ms};

const COLUMNS: &str = "run_id, digest, media_type, size, created_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactRow> {
    Ok(ArtifactRow {
        run: r.get(0)?,
        digest: r.get(1)?,
        media_type: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        created_ms: r.get(4)?,
    })
}

pub(super) fn get(
    conn: &Connection,
    run: &str,
    digest: &str,
) -> rusqlite::Result<Option<ArtifactRow>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM artifacts WHERE run_id = ?1 AND digest = ?2"),
        params![run, digest],
        row,
    )
    .optional()
}

pub(super) fn list(conn: &Connection, run: &str) -> rusqlite::Result<Vec<ArtifactRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM artifacts WHERE run_id = ?1 ORDER BY created_ms, digest"
    ))?;
    stmt.query_map([run], row)?.collect()
}

/// Whether any run holds `digest`.
pub(super) fn held(conn: &Connection, digest: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM artifacts WHERE digest = ?1)",
        [digest],
        |r| r.get(0),
    )
}

/// Records that `run` holds `digest` if the limits allow; `place` moves the
/// bytes into the store inside the transaction, so that a row never names
/// bytes that are not there.
pub(super) fn record(
    conn: &mut Connection,
    new: &ArtifactRow,
    limits: ArtifactLimits,
    place: impl FnOnce() -> Result<(), crate::StoreError>,
) -> Result<Result<ArtifactRow, ArtifactRefusal>, Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(existing) = get(&tx, &new.run, &new.digest)? {
        return Ok(Ok(existing));
    }
    let run_used: i64 = tx.query_row(
        "SELECT coalesce(sum(size), 0) FROM artifacts WHERE run_id = ?1",
        [&new.run],
        |r| r.get(0),
    )?;
    let tenant_used: i64 = tx.query_row(
        "SELECT coalesce(sum(a.size), 0) FROM artifacts a JOIN runs r ON r.id = a.run_id \
         WHERE r.tenant = (SELECT tenant FROM runs WHERE id = ?1)",
        [&new.run],
        |r| r.get(0),
    )?;
    let (run_used, tenant_used) = (run_used as u64, tenant_used as u64);
    if let Err(refusal) = crate::rules::artifact_fits(new.size, run_used, tenant_used, limits) {
        return Ok(Err(refusal));
    }
    place().map_err(Failure::Store)?;
    tx.execute(
        &format!("INSERT INTO artifacts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            new.run,
            new.digest,
            new.media_type,
            new.size.min(i64::MAX as u64) as i64,
            now_ms()
        ],
    )?;
    let stored = get(&tx, &new.run, &new.digest)?.expect("just inserted");
    tx.commit()?;
    Ok(Ok(stored))
}

/// Why recording failed: the database, or moving the bytes.
pub(super) enum Failure {
    Sql(rusqlite::Error),
    Store(crate::StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}
