//! Rows to records and back in PostgreSQL: the column lists, the row readers, and how one journal entry is written with the state it implies.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::big;
use super::schema::NOW_MS;
use crate::{AgentRecord, Entry, FuelWindow, RunRecord, StepRecord};

/// A failed read of a row: the database, or a value no corral writes.
#[derive(Debug)]
pub(super) enum RowError {
    Sql(tokio_postgres::Error),
    /// A damaged (or newer) store: the column and why.
    Bad(String),
}

impl From<tokio_postgres::Error> for RowError {
    fn from(e: tokio_postgres::Error) -> Self {
        RowError::Sql(e)
    }
}

pub(super) type Rows<T> = Result<T, RowError>;

fn status<T: std::str::FromStr<Err = crate::UnknownStatus>>(r: &Row, i: usize) -> Rows<T> {
    let text: String = r.try_get(i)?;
    text.parse()
        .map_err(|e: crate::UnknownStatus| RowError::Bad(format!("column {i}: {e}")))
}

fn json(text: Option<String>) -> Option<Value> {
    text.and_then(|s| serde_json::from_str(&s).ok())
}

pub(super) const RUN_COLUMNS: &str = "id, workflow, file, coalesce((SELECT definition FROM run_definitions d WHERE d.run_id = runs.id), ''), digest, params, components, status, error, created_ms, updated_ms, owner, heartbeat_ms, cancel_requested, sessions, epoch, fuel_charged, tenant";

pub(super) fn run_row(r: &Row) -> Rows<RunRecord> {
    Ok(RunRecord {
        id: r.try_get(0)?,
        workflow: r.try_get(1)?,
        file: r.try_get(2)?,
        definition: r.try_get(3)?,
        digest: r.try_get(4)?,
        params: json(r.try_get(5)?).unwrap_or(Value::Null),
        components: json(r.try_get(6)?).unwrap_or(Value::Null),
        status: status(r, 7)?,
        error: r.try_get(8)?,
        created_ms: r.try_get(9)?,
        updated_ms: r.try_get(10)?,
        owner: r.try_get(11)?,
        heartbeat_ms: r.try_get(12)?,
        cancel_requested: r.try_get::<_, i16>(13)? != 0,
        sessions: r.try_get::<_, i32>(14)?.max(0) as u32,
        epoch: r.try_get(15)?,
        fuel_charged: r.try_get::<_, i64>(16)?.max(0) as u64,
        tenant: r.try_get(17)?,
    })
}

pub(super) async fn get_run(c: &impl GenericClient, id: &str) -> Rows<Option<RunRecord>> {
    let s = c
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .await?;
    c.query_opt(&s, &[&id])
        .await?
        .as_ref()
        .map(run_row)
        .transpose()
}

/// The database's clock now, in milliseconds since the Unix epoch.
pub(super) async fn now(c: &impl GenericClient) -> Rows<i64> {
    let s = c.prepare_cached(&format!("SELECT {NOW_MS}")).await?;
    Ok(c.query_one(&s, &[]).await?.try_get(0)?)
}

/// The current window of `tenant` (windows start at multiples of `window`
/// since the epoch, by the database's clock) and what it has charged.
pub(super) async fn window_of(
    c: &impl GenericClient,
    tenant: &str,
    window: std::time::Duration,
    limit: u64,
) -> Rows<FuelWindow> {
    let now = now(c).await?;
    let len = (window.as_millis() as i64).max(1);
    let start_ms = now - now.rem_euclid(len);
    let s = c
        .prepare_cached("SELECT charged FROM fuel_windows WHERE tenant = $1 AND start_ms = $2")
        .await?;
    let charged: i64 = match c.query_opt(&s, &[&tenant, &start_ms]).await? {
        Some(r) => r.try_get(0)?,
        None => 0,
    };
    Ok(FuelWindow {
        start_ms,
        end_ms: start_ms.saturating_add(len),
        charged: charged.max(0) as u64,
        limit,
        granted: 0,
    })
}

pub(super) fn agent_row(r: &Row) -> Rows<AgentRecord> {
    Ok(AgentRecord {
        tenant: r.try_get(0)?,
        name: r.try_get(1)?,
        digest: r.try_get(2)?,
        info: json(r.try_get(3)?).unwrap_or(Value::Null),
        size: r.try_get::<_, i64>(4)?.max(0) as u64,
        created_ms: r.try_get(5)?,
    })
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

/// One statement and its parameters, owned so that several can be in
/// flight at once.
pub(super) type Write = (&'static str, Vec<Box<dyn ToSql + Sync + Send>>);

/// Sends `writes` one after another without waiting for each answer
/// (tokio-postgres pipelines concurrent queries on one connection, in the
/// order they are first polled), then waits for all: one round trip for
/// the lot instead of one each. The first error is the first failed write.
pub(super) async fn apply(c: &impl GenericClient, writes: &[Write]) -> Rows<()> {
    let sent = writes.iter().map(|(sql, params)| async move {
        let s = c.prepare_cached(sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        c.execute(&s, &refs).await
    });
    futures::future::try_join_all(sent).await?;
    Ok(())
}

/// One owned parameter of a [`Write`].
fn p<T: ToSql + Sync + Send + 'static>(v: T) -> Box<dyn ToSql + Sync + Send> {
    Box::new(v)
}

/// Appends one journal entry and applies the state it carries.
pub(super) async fn insert_entry(c: &impl GenericClient, run: &str, e: &Entry) -> Rows<()> {
    apply(c, &entry_writes(run, e)).await
}

/// The writes of one journal entry: the entry, its blob, and the step's,
/// the run's and the cache's state it carries, in that order.
pub(super) fn entry_writes(run: &str, e: &Entry) -> Vec<Write> {
    let mut w: Vec<Write> = vec![(
        "INSERT INTO journal (run_id, at_ms, kind, step, data, blob) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            p(run.to_owned()),
            p(e.at_ms),
            p(e.kind.clone()),
            p(e.step.clone()),
            p(e.data.clone()),
            p(e.blob.as_ref().map(|b| b.0.clone())),
        ],
    )];
    if let Some((digest, bytes)) = &e.blob {
        w.push((
            "INSERT INTO blobs (digest, data, created_ms) VALUES ($1, $2, $3) ON CONFLICT (digest) DO UPDATE SET created_ms = excluded.created_ms",
            vec![p(digest.clone()), p(bytes.clone()), p(e.at_ms)],
        ));
    }
    if let Some(s) = &e.step_state {
        w.push(step_write(run, s));
    }
    if let Some((status, error)) = &e.run_state {
        w.push((
            "UPDATE runs SET status = $2, error = $3, updated_ms = $4 WHERE id = $1",
            vec![
                p(run.to_owned()),
                p(status.as_str()),
                p(error.clone()),
                p(e.at_ms),
            ],
        ));
    }
    if let Some(params) = &e.run_params {
        w.push((
            "UPDATE runs SET params = $2 WHERE id = $1",
            vec![p(run.to_owned()), p(params.clone())],
        ));
    }
    if let Some((key, output, expires)) = &e.cache {
        w.push((
            "INSERT INTO cache (key, output, created_ms, expires_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET output = excluded.output, created_ms = excluded.created_ms, expires_ms = excluded.expires_ms",
            vec![p(key.clone()), p(output.clone()), p(e.at_ms), p(*expires)],
        ));
    }
    w
}

/// A human's answer is written by `answer`, never by a driver's copy of the
/// row: while the step waits, the stored answer is kept.
fn step_write(run: &str, s: &StepRecord) -> Write {
    (
        "INSERT INTO steps (run_id, step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer, tokens_used)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT (run_id, step) DO UPDATE SET
           status = excluded.status, attempts = excluded.attempts, retries = excluded.retries,
           fuel_used = excluded.fuel_used, tokens_used = excluded.tokens_used,
           peak_memory_bytes = excluded.peak_memory_bytes,
           wall_time_us = excluded.wall_time_us, output = excluded.output,
           fingerprint = excluded.fingerprint, cached = excluded.cached, fallback = excluded.fallback,
           error = excluded.error, error_kind = excluded.error_kind,
           completed_order = excluded.completed_order, waiting = excluded.waiting,
           answer = CASE WHEN excluded.status IN ('waiting', 'paused') AND excluded.answer IS NULL
                         THEN steps.answer ELSE excluded.answer END",
        vec![
            p(run.to_owned()),
            p(s.step.clone()),
            p(s.status.as_str()),
            p(s.attempts as i32),
            p(s.retries as i32),
            p(big(s.fuel_used)),
            p(big(s.peak_memory_bytes)),
            p(big(s.wall_time_us)),
            p(s.output.clone()),
            p(s.fingerprint.clone()),
            p(s.cached),
            p(s.fallback.clone()),
            p(s.error.clone()),
            p(s.error_kind.clone()),
            p(s.completed_order.map(big)),
            p(opt_json(&s.waiting)),
            p(opt_json(&s.answer)),
            p(big(s.tokens_used)),
        ],
    )
}

/// The columns `step_row` reads, in its order.
pub(super) const STEP_COLUMNS: &str = "step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer, tokens_used";

pub(super) fn step_row(r: &Row) -> Rows<StepRecord> {
    Ok(StepRecord {
        step: r.try_get(0)?,
        status: status(r, 1)?,
        attempts: r.try_get::<_, i32>(2)?.max(0) as u32,
        retries: r.try_get::<_, i32>(3)?.max(0) as u32,
        fuel_used: r.try_get::<_, i64>(4)?.max(0) as u64,
        peak_memory_bytes: r.try_get::<_, i64>(5)?.max(0) as u64,
        wall_time_us: r.try_get::<_, i64>(6)?.max(0) as u64,
        output: r.try_get(7)?,
        fingerprint: r.try_get(8)?,
        cached: r.try_get(9)?,
        fallback: r.try_get(10)?,
        error: r.try_get(11)?,
        error_kind: r.try_get(12)?,
        completed_order: r.try_get::<_, Option<i64>>(13)?.map(|o| o.max(0) as u64),
        waiting: json(r.try_get(14)?),
        answer: json(r.try_get(15)?),
        tokens_used: r.try_get::<_, i64>(16)?.max(0) as u64,
    })
}
