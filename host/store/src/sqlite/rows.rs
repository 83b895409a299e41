//! Rows to records and back: the column lists, the row readers, and how one journal entry is written with the state it implies.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::{AgentRecord, Entry, FuelWindow, RunRecord, StepRecord, now_ms};

/// A status column, parsed; an unknown text is a damaged (or newer) store.
pub(super) fn status<T: std::str::FromStr<Err = crate::UnknownStatus>>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) const RUN_COLUMNS: &str = "id, workflow, file, coalesce((SELECT definition FROM run_definitions d WHERE d.run_id = runs.id), ''), digest, params, components, status, error, created_ms, updated_ms, owner, heartbeat_ms, cancel_requested, sessions, epoch, fuel_charged, tenant";

pub(super) fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
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
pub(super) fn window_of(
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

pub(super) fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
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

pub(super) fn get_run(conn: &Connection, id: &str) -> Result<Option<RunRecord>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
        .query_row([id], run_row)
        .optional()
}

pub(super) fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

pub(super) fn insert_entry(conn: &Connection, run: &str, e: &Entry) -> rusqlite::Result<()> {
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
            "INSERT INTO steps (run_id, step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer, tokens_used)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
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
            s.tokens_used as i64,
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
pub(super) const STEP_COLUMNS: &str = "step, status, attempts, retries, fuel_used, peak_memory_bytes, wall_time_us, output, fingerprint, cached, fallback, error, error_kind, completed_order, waiting, answer, tokens_used";

pub(super) fn step_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRecord> {
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
        tokens_used: r.get::<_, i64>(16)? as u64,
    })
}
