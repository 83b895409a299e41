//! The webhook outbox in SQLite: queue, claim with a hold, record attempts, list a run's deliveries.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use super::rows::status;
use crate::{Delivery, DeliveryAttempt, DeliveryState, WebhookMessage};

const MESSAGE_COLUMNS: &str =
    "id, tenant, run_id, event, url, payload, created_ms, attempts, state, next_ms";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookMessage> {
    Ok(WebhookMessage {
        id: r.get(0)?,
        tenant: r.get(1)?,
        run: r.get(2)?,
        event: r.get(3)?,
        url: r.get(4)?,
        payload: r.get(5)?,
        created_ms: r.get(6)?,
        attempts: r.get(7)?,
        state: status(r, 8)?,
        next_ms: r.get(9)?,
    })
}

pub(super) fn enqueue(conn: &mut Connection, messages: &[WebhookMessage]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut s = tx.prepare_cached(
            "INSERT INTO webhook_messages (id, tenant, run_id, event, url, payload, created_ms, attempts, state, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
        )?;
        for m in messages {
            s.execute(params![
                m.id,
                m.tenant,
                m.run,
                m.event,
                m.url,
                m.payload,
                m.created_ms,
                m.attempts,
                m.state.as_str(),
                m.next_ms
            ])?;
        }
    }
    tx.commit()
}

pub(super) fn claim(
    conn: &mut Connection,
    now_ms: i64,
    hold: Duration,
    limit: usize,
) -> rusqlite::Result<Vec<WebhookMessage>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due: Vec<WebhookMessage> = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM webhook_messages
             WHERE state = 'pending' AND next_ms <= ?1 ORDER BY next_ms LIMIT ?2"
        ))?
        .query_map(params![now_ms, limit as i64], message_row)?
        .collect::<rusqlite::Result<_>>()?;
    let until = now_ms + hold.as_millis() as i64;
    {
        let mut s = tx.prepare_cached("UPDATE webhook_messages SET next_ms = ?2 WHERE id = ?1")?;
        for m in &due {
            s.execute(params![m.id, until])?;
        }
    }
    tx.commit()?;
    Ok(due)
}

pub(super) fn record(
    conn: &mut Connection,
    a: &DeliveryAttempt,
    state: DeliveryState,
    next_ms: Option<i64>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO webhook_attempts (message_id, attempt, at_ms, status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        a.message,
        a.attempt,
        a.at_ms,
        a.status,
        a.error,
        a.duration_ms.min(i64::MAX as u64) as i64
    ])?;
    tx.prepare_cached(
        "UPDATE webhook_messages SET attempts = max(attempts, ?2), state = ?3, next_ms = ?4 WHERE id = ?1",
    )?
    .execute(params![a.message, a.attempt, state.as_str(), next_ms])?;
    tx.commit()
}

pub(super) fn deliveries(
    conn: &mut Connection,
    tenant: &str,
    run: &str,
) -> rusqlite::Result<Vec<Delivery>> {
    let messages: Vec<WebhookMessage> = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM webhook_messages
             WHERE tenant = ?1 AND run_id = ?2 ORDER BY created_ms, id"
        ))?
        .query_map([tenant, run], message_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut tries = conn.prepare_cached(
        "SELECT message_id, attempt, at_ms, status, error, duration_ms FROM webhook_attempts
         WHERE message_id = ?1 ORDER BY attempt",
    )?;
    messages
        .into_iter()
        .map(|message| {
            let tries = tries
                .query_map([&message.id], |r| {
                    Ok(DeliveryAttempt {
                        message: r.get(0)?,
                        attempt: r.get(1)?,
                        at_ms: r.get(2)?,
                        status: r.get(3)?,
                        error: r.get(4)?,
                        duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Delivery { message, tries })
        })
        .collect()
}
