//! The webhook outbox in PostgreSQL: queue, claim with a hold (`FOR UPDATE SKIP LOCKED`, so servers never claim the same message), record attempts, list a run's deliveries.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::rows::{RowError, Rows};
use crate::{Delivery, DeliveryAttempt, DeliveryState, WebhookMessage};

const MESSAGE_COLUMNS: &str =
    "id, tenant, run_id, event, url, payload, created_ms, attempts, state, next_ms";

fn message_row(r: &Row) -> Rows<WebhookMessage> {
    let state: String = r.try_get(8)?;
    Ok(WebhookMessage {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        run: r.try_get(2)?,
        event: r.try_get(3)?,
        url: r.try_get(4)?,
        payload: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        attempts: r.try_get::<_, i32>(7)?.max(0) as u32,
        state: state
            .parse()
            .map_err(|e: crate::UnknownStatus| RowError::Bad(e.to_string()))?,
        next_ms: r.try_get(9)?,
    })
}

pub(super) async fn enqueue(conn: &mut Object, messages: &[WebhookMessage]) -> Rows<()> {
    let tx = conn.transaction().await?;
    let s = tx
        .prepare_cached(
            "INSERT INTO webhook_messages (id, tenant, run_id, event, url, payload, created_ms, attempts, state, next_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    for m in messages {
        tx.execute(
            &s,
            &[
                &m.id,
                &m.tenant,
                &m.run,
                &m.event,
                &m.url,
                &m.payload,
                &m.created_ms,
                &(m.attempts as i32),
                &m.state.as_str(),
                &m.next_ms,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn claim(
    conn: &mut Object,
    now_ms: i64,
    hold: Duration,
    limit: usize,
) -> Rows<Vec<WebhookMessage>> {
    let tx = conn.transaction().await?;
    let until = now_ms + hold.as_millis() as i64;
    // Rows another server is claiming right now are skipped, not waited
    // for. Each is returned as it was when due, as SQLite's store does.
    let s = tx
        .prepare_cached(
            "WITH due AS (
                SELECT id, next_ms AS was FROM webhook_messages
                WHERE state = 'pending' AND next_ms <= $1
                ORDER BY next_ms LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE webhook_messages m SET next_ms = $3 FROM due WHERE m.id = due.id
             RETURNING m.id, m.tenant, m.run_id, m.event, m.url, m.payload, m.created_ms, m.attempts, m.state, due.was",
        )
        .await?;
    let rows = tx.query(&s, &[&now_ms, &(limit as i64), &until]).await?;
    tx.commit().await?;
    let mut due: Vec<WebhookMessage> = rows.iter().map(message_row).collect::<Rows<_>>()?;
    due.sort_by_key(|m| (m.next_ms, m.created_ms));
    Ok(due)
}

pub(super) async fn record(
    conn: &mut Object,
    a: &DeliveryAttempt,
    state: DeliveryState,
    next_ms: Option<i64>,
) -> Rows<()> {
    let tx = conn.transaction().await?;
    let s = tx
        .prepare_cached(
            "INSERT INTO webhook_attempts (message_id, attempt, at_ms, status, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(
        &s,
        &[
            &a.message,
            &(a.attempt as i32),
            &a.at_ms,
            &a.status.map(i32::from),
            &a.error,
            &(a.duration_ms.min(i64::MAX as u64) as i64),
        ],
    )
    .await?;
    let s = tx
        .prepare_cached(
            "UPDATE webhook_messages SET attempts = greatest(attempts, $2), state = $3, next_ms = $4 WHERE id = $1",
        )
        .await?;
    tx.execute(
        &s,
        &[&a.message, &(a.attempt as i32), &state.as_str(), &next_ms],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn deliveries(
    c: &impl GenericClient,
    tenant: &str,
    run: &str,
) -> Rows<Vec<Delivery>> {
    let s = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM webhook_messages
             WHERE tenant = $1 AND run_id = $2 ORDER BY created_ms, id"
        ))
        .await?;
    let messages: Vec<WebhookMessage> = c
        .query(&s, &[&tenant, &run])
        .await?
        .iter()
        .map(message_row)
        .collect::<Rows<_>>()?;
    let tries = c
        .prepare_cached(
            "SELECT message_id, attempt, at_ms, status, error, duration_ms FROM webhook_attempts
             WHERE message_id = $1 ORDER BY attempt",
        )
        .await?;
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        let rows = c.query(&tries, &[&message.id]).await?;
        let tries = rows
            .iter()
            .map(|r| {
                Ok(DeliveryAttempt {
                    message: r.try_get(0)?,
                    attempt: r.try_get::<_, i32>(1)?.max(0) as u32,
                    at_ms: r.try_get(2)?,
                    status: r
                        .try_get::<_, Option<i32>>(3)?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.try_get(4)?,
                    duration_ms: r.try_get::<_, i64>(5)?.max(0) as u64,
                })
            })
            .collect::<Rows<_>>()?;
        out.push(Delivery { message, tries });
    }
    Ok(out)
}
