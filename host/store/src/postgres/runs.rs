//! `Store` for PostgreSQL: each method one transaction on a pooled connection, leases checked against the database's clock and fenced by epoch.

use super::*;

impl Store for PgStore {
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<Lease, StoreError> {
        let (run, owner) = (run.clone(), owner.clone());
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let tx = c.transaction().await.map_err(|e| sql_error(&shown, e))?;
            claims::insert_run(&tx, &run, Some(owner.encode()), &shown).await?;
            tx.commit().await.map_err(|e| sql_error(&shown, e))?;
            Ok(Lease { owner, epoch: 1 })
        })
    }

    fn submit_run(&self, run: &NewRun) -> Result<(), StoreError> {
        let run = run.clone();
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let tx = c.transaction().await.map_err(|e| sql_error(&shown, e))?;
            claims::insert_run(&tx, &run, None, &shown).await?;
            // Sent to the listeners when the transaction commits.
            tx.execute(listen::NOTIFY, &[])
                .await
                .map_err(|e| sql_error(&shown, e))?;
            tx.commit().await.map_err(|e| sql_error(&shown, e))
        })
    }

    fn claim(
        &self,
        run: &str,
        owner: &Owner,
        lease: Duration,
    ) -> Result<(RunRecord, Lease), StoreError> {
        let (id, owner) = (run.to_owned(), owner.clone());
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let fail = |e: RowError| row_error(&shown, e);
            let tx = c.transaction().await.map_err(|e| sql_error(&shown, e))?;
            tx.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(|e| sql_error(&shown, e))?;
            let at = now(&tx).await.map_err(fail)?;
            let rec = get_run(&tx, &id)
                .await
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownRun(id.clone()))?;
            let claimed = claims::take(&tx, rec, owner, lease, at, &shown).await?;
            tx.commit().await.map_err(|e| sql_error(&shown, e))?;
            Ok(claimed)
        })
    }

    fn claim_next(
        &self,
        owner: &Owner,
        lease: Duration,
        tenants: &[String],
    ) -> Result<Option<(RunRecord, Lease)>, StoreError> {
        claims::claim_oldest(self, owner, lease, tenants)
    }

    fn wake(&self, run: &str) -> Result<bool, StoreError> {
        let id = run.to_owned();
        self.rows(move |c| async move {
            let woken = c
                .query(
                    &format!(
                        "WITH woken AS (
                           UPDATE runs SET status = 'running', owner = NULL, heartbeat_ms = NULL
                           WHERE id = $1 AND status IN ('waiting', 'paused') RETURNING 1)
                         SELECT pg_notify('{}', '') FROM woken",
                        listen::CHANNEL
                    ),
                    &[&id],
                )
                .await?;
            Ok(!woken.is_empty())
        })
    }

    fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.listener())
    }

    fn heartbeat(&self, run: &str, lease: &Lease) -> Result<u8, StoreError> {
        let (id, owner, epoch) = (run.to_owned(), lease.owner.encode(), lease.epoch);
        let cancel = self.rows(move |c| async move {
            let s = c
                .prepare_cached(&format!(
                    "UPDATE runs SET heartbeat_ms = {} WHERE id = $1 AND owner = $2 AND epoch = $3 RETURNING cancel_requested",
                    schema::NOW_MS
                ))
                .await?;
            let row = c.query_opt(&s, &[&id, &owner, &epoch]).await?;
            Ok(row.map(|r| r.get::<_, i16>(0).clamp(0, 2) as u8))
        })?;
        cancel.ok_or_else(|| StoreError::LeaseLost(run.into()))
    }

    fn release(&self, run: &str, lease: &Lease) -> Result<(), StoreError> {
        let (id, owner, epoch) = (run.to_owned(), lease.owner.encode(), lease.epoch);
        self.rows(move |c| async move {
            // A run given up unfinished (its process stops) is claimable at
            // once: the listeners hear of it. A finished one wakes no one.
            c.query(
                &format!(
                    "WITH released AS (
                       UPDATE runs SET owner = NULL, heartbeat_ms = NULL
                       WHERE id = $1 AND owner = $2 AND epoch = $3 RETURNING status)
                     SELECT pg_notify('{}', '') FROM released WHERE status = 'running'",
                    listen::CHANNEL
                ),
                &[&id, &owner, &epoch],
            )
            .await?;
            Ok(())
        })
    }

    fn commit(&self, run: &str, lease: &Lease, entries: &[Entry]) -> Result<(), StoreError> {
        let (id, owner, epoch) = (run.to_owned(), lease.owner.encode(), lease.epoch);
        let entries = entries.to_vec();
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let sql = |e: tokio_postgres::Error| sql_error(&shown, e);
            let tx = c.transaction().await.map_err(sql)?;
            // A driver whose lease was taken or fenced off by a cancel
            // writes nothing more: the epoch is the fencing token, and the
            // run's row stays locked until this transaction ends. The check
            // and the writes go out together (one round trip); a check that
            // finds no lease divides by zero, which aborts the transaction
            // before any write runs (no write then takes a lock either).
            let check = tx
                .prepare_cached(
                    "SELECT 1 / (SELECT count(*) FROM (SELECT 1 FROM runs WHERE id = $1 AND owner = $2 AND epoch = $3 FOR UPDATE) held)::int",
                )
                .await
                .map_err(sql)?;
            let mut writes: Vec<rows::Write> = entries
                .iter()
                .flat_map(|e| rows::entry_writes(&id, e))
                .collect();
            // One update of the run's row per batch, not one per call.
            let charge: i64 = entries.iter().map(|e| e.fuel_charge).sum();
            if charge != 0 {
                writes.push((
                    "UPDATE runs SET fuel_charged = greatest(0, fuel_charged + $2) WHERE id = $1",
                    vec![Box::new(id.clone()), Box::new(charge)],
                ));
            }
            let sent = futures::future::try_join(
                async {
                    tx.query_one(&check, &[&id, &owner, &epoch])
                        .await
                        .map_err(RowError::from)
                },
                rows::apply(&tx, &writes),
            )
            .await;
            match sent {
                Ok(_) => {}
                Err(RowError::Sql(e))
                    if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) =>
                {
                    return Err(StoreError::LeaseLost(id.clone()));
                }
                Err(e) => return Err(row_error(&shown, e)),
            }
            // A connection lost during COMMIT leaves the outcome unknown:
            // not `Busy`, so that nobody writes the batch a second time.
            tx.commit().await.map_err(|e| StoreError::Backend {
                path: shown.clone(),
                source: format!("the commit's outcome is unknown (the connection failed during COMMIT): {e}").into(),
            })
        })
    }

    fn run(&self, run: &str) -> Result<RunRecord, StoreError> {
        let id = run.to_owned();
        self.rows(move |c| async move { get_run(&c, &id).await })?
            .ok_or_else(|| StoreError::UnknownRun(run.into()))
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.rows(move |c| async move {
            let rows = c
                .query(
                    &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_ms, id"),
                    &[],
                )
                .await?;
            rows.iter().map(rows::run_row).collect()
        })
    }

    fn tenant_runs(&self, q: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let q = q.clone();
        self.rows(move |c| async move {
            // Newest first; the cursor is the last page's final (created_ms, id).
            let (before_ms, before_id) = q.before.clone().unwrap_or((i64::MAX, String::new()));
            let s = c
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE tenant = $1 AND ($2::text IS NULL OR status = $2)
                       AND (created_ms < $3 OR (created_ms = $3 AND $4 != '' AND id < $4))
                     ORDER BY created_ms DESC, id DESC LIMIT $5"
                ))
                .await?;
            let status = q.status.map(|s| s.as_str());
            let rows = c
                .query(
                    &s,
                    &[
                        &q.tenant,
                        &status,
                        &before_ms,
                        &before_id,
                        &(q.limit as i64),
                    ],
                )
                .await?;
            rows.iter().map(rows::run_row).collect()
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
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let ttl = ttl.as_millis() as i64;
        self.rows(move |mut c| async move {
            let tx = c.transaction().await?;
            // Serialized per key: two holders cannot both take the last slot.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('corral-slots:' || $1))",
                &[&key],
            )
            .await?;
            let at = now(&tx).await?;
            let others: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(held), 0)::int8 FROM slot_holds WHERE key = $1 AND holder != $2 AND expires_ms > $3",
                    &[&key, &holder, &at],
                )
                .await?
                .try_get(0)?;
            let held = crate::rules::slots_granted(want, others, limit);
            tx.execute(
                "DELETE FROM slot_holds WHERE key = $1 AND (holder = $2 OR expires_ms <= $3)",
                &[&key, &holder, &at],
            )
            .await?;
            if held > 0 {
                tx.execute(
                    "INSERT INTO slot_holds (key, holder, held, expires_ms) VALUES ($1, $2, $3, $4)",
                    &[&key, &holder, &(held as i32), &(at + ttl)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(held)
        })
    }

    fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (digest, bytes) = (digest.to_owned(), bytes.to_vec());
        self.rows(move |c| async move {
            c.execute(
                &format!(
                    "INSERT INTO components (digest, data, created_ms) VALUES ($1, $2, {}) ON CONFLICT (digest) DO NOTHING",
                    schema::NOW_MS
                ),
                &[&digest, &bytes],
            )
            .await?;
            Ok(())
        })
    }

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let digest = digest.to_owned();
        self.rows(move |c| async move {
            let row = c
                .query_opt("SELECT data FROM components WHERE digest = $1", &[&digest])
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let a = agent.clone();
        self.rows(move |c| async move {
            c.execute(
                "INSERT INTO agents (tenant, name, digest, info, size, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant, name) DO UPDATE SET digest = excluded.digest, info = excluded.info, size = excluded.size, created_ms = excluded.created_ms",
                &[&a.tenant, &a.name, &a.digest, &a.info.to_string(), &big(a.size), &a.created_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn agents(&self, tenant: &str) -> Result<Vec<AgentRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.rows(move |c| async move {
            let rows = c
                .query(
                    "SELECT tenant, name, digest, info, size, created_ms FROM agents WHERE tenant = $1 ORDER BY name",
                    &[&tenant],
                )
                .await?;
            rows.iter().map(agent_row).collect()
        })
    }

    fn reserve_fuel(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
        want: u64,
    ) -> Result<FuelWindow, StoreError> {
        let tenant = tenant.to_owned();
        self.rows(move |mut c| async move {
            let tx = c.transaction().await?;
            // Every process charges the same window: serialized per tenant.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('corral-fuel:' || $1))",
                &[&tenant],
            )
            .await?;
            let mut w = rows::window_of(&tx, &tenant, window, limit).await?;
            w.granted = want.min(limit.saturating_sub(w.charged));
            if w.granted > 0 {
                tx.execute(
                    "INSERT INTO fuel_windows (tenant, start_ms, charged) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant, start_ms) DO UPDATE SET charged = fuel_windows.charged + excluded.charged",
                    &[&tenant, &w.start_ms, &big(w.granted)],
                )
                .await?;
                w.charged += w.granted;
            }
            tx.commit().await?;
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
        let refund = big(reserved.saturating_sub(used));
        if refund == 0 {
            return Ok(());
        }
        let tenant = tenant.to_owned();
        self.rows(move |c| async move {
            c.execute(
                "UPDATE fuel_windows SET charged = greatest(0, charged - $3) WHERE tenant = $1 AND start_ms = $2",
                &[&tenant, &start_ms, &refund],
            )
            .await?;
            Ok(())
        })
    }

    fn fuel_window(
        &self,
        tenant: &str,
        window: Duration,
        limit: u64,
    ) -> Result<FuelWindow, StoreError> {
        let tenant = tenant.to_owned();
        self.rows(move |c| async move { rows::window_of(&c, &tenant, window, limit).await })
    }

    fn put_workflow(&self, w: &WorkflowRecord) -> Result<(), StoreError> {
        let w = w.clone();
        self.rows(move |c| async move {
            c.execute(
                "INSERT INTO workflows (tenant, name, text, format, digest, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant, name) DO UPDATE SET text = excluded.text, format = excluded.format, digest = excluded.digest, created_ms = excluded.created_ms",
                &[&w.tenant, &w.name, &w.text, &w.format, &w.digest, &w.created_ms],
            )
            .await?;
            Ok(())
        })
    }

    fn workflows(&self, tenant: &str) -> Result<Vec<WorkflowRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.rows(move |c| async move {
            let rows = c
                .query(
                    "SELECT tenant, name, text, format, digest, created_ms FROM workflows WHERE tenant = $1 ORDER BY name",
                    &[&tenant],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(WorkflowRecord {
                        tenant: r.try_get(0)?,
                        name: r.try_get(1)?,
                        text: r.try_get(2)?,
                        format: r.try_get(3)?,
                        digest: r.try_get(4)?,
                        created_ms: r.try_get(5)?,
                    })
                })
                .collect()
        })
    }

    fn delete_agent(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.rows(move |c| async move {
            let n = c
                .execute(
                    "DELETE FROM agents WHERE tenant = $1 AND name = $2",
                    &[&tenant, &name],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn steps(&self, run: &str) -> Result<Vec<StepRecord>, StoreError> {
        let id = run.to_owned();
        self.rows(move |c| async move {
            let s = c
                .prepare_cached(&format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 ORDER BY step"
                ))
                .await?;
            c.query(&s, &[&id])
                .await?
                .iter()
                .map(rows::step_row)
                .collect()
        })
    }

    fn journal(
        &self,
        run: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let id = run.to_owned();
        self.rows(move |c| async move {
            let s = c
                .prepare_cached(
                    "SELECT seq, at_ms, kind, step, data FROM journal WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .await?;
            let rows = c.query(&s, &[&id, &after, &(limit as i64)]).await?;
            rows.iter()
                .map(|r| {
                    let data: String = r.try_get(4)?;
                    Ok(JournalEntry {
                        seq: r.try_get(0)?,
                        at_ms: r.try_get(1)?,
                        kind: r.try_get(2)?,
                        step: r.try_get(3)?,
                        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                    })
                })
                .collect()
        })
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let digest = digest.to_owned();
        self.rows(move |c| async move {
            let s = c
                .prepare_cached("SELECT data FROM blobs WHERE digest = $1")
                .await?;
            Ok(c.query_opt(&s, &[&digest]).await?.map(|r| r.get(0)))
        })
    }

    fn artifact_upload(&self) -> Result<ArtifactUpload, StoreError> {
        super::private_uploads(&self.uploads).map_err(|e| StoreError::Backend {
            path: self.uploads.display().to_string(),
            source: format!("cannot make a directory for uploads: {e}").into(),
        })?;
        ArtifactUpload::create(&self.uploads)
    }

    fn artifact_finish(
        &self,
        run: &str,
        upload: ArtifactUpload,
        media_type: &str,
        limits: ArtifactLimits,
    ) -> Result<Result<ArtifactRow, ArtifactRefusal>, StoreError> {
        let (digest, size, tmp) = upload.seal()?;
        let new = ArtifactRow {
            run: run.to_owned(),
            digest,
            media_type: media_type.to_owned(),
            size,
            created_ms: 0,
        };
        let shown = self.shown.clone();
        let file = tmp.clone();
        let recorded = self.block(move |mut c| async move {
            artifacts::record(&mut c, &new, limits, &file)
                .await
                .map_err(|f| match f {
                    artifacts::Failure::Rows(e) => row_error(&shown, e),
                    artifacts::Failure::Io(e) => StoreError::Backend {
                        path: file.display().to_string(),
                        source: e.into(),
                    },
                })
        });
        // Copied, refused or failed: the upload is not needed any more.
        let _ = std::fs::remove_file(&tmp);
        recorded
    }

    fn artifact(&self, run: &str, digest: &str) -> Result<Option<ArtifactRow>, StoreError> {
        let (run, digest) = (run.to_owned(), digest.to_owned());
        self.rows(move |c| async move { artifacts::get(&c, &run, &digest).await })
    }

    fn artifacts(&self, run: &str) -> Result<Vec<ArtifactRow>, StoreError> {
        let run = run.to_owned();
        self.rows(move |c| async move { artifacts::list(&c, &run).await })
    }

    fn artifact_read(&self, digest: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        let digest = digest.to_owned();
        let max = max.min(artifacts::CHUNK);
        self.rows(move |c| async move { artifacts::read(&c, &digest, offset, max).await })
    }

    fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.rows(move |c| async move {
            let s = c
                .prepare_cached(
                    "SELECT output FROM cache WHERE key = $1 AND (expires_ms IS NULL OR expires_ms > $2)",
                )
                .await?;
            Ok(c.query_opt(&s, &[&key, &now_ms]).await?.map(|r| r.get(0)))
        })
    }

    fn answer(&self, run: &str, step: &str, answer: &Value) -> Result<(), StoreError> {
        let (id, step, answer) = (run.to_owned(), step.to_owned(), answer.clone());
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let fail = |e: RowError| row_error(&shown, e);
            let sql = |e: tokio_postgres::Error| sql_error(&shown, e);
            let tx = c.transaction().await.map_err(sql)?;
            tx.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(sql)?;
            let rec = get_run(&tx, &id)
                .await
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownRun(id.clone()))?;
            let row = tx
                .query_opt(
                    &format!("SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 AND step = $2"),
                    &[&id, &step],
                )
                .await
                .map_err(sql)?;
            let row = row.as_ref().map(rows::step_row).transpose().map_err(fail)?;
            let at = now(&tx).await.map_err(fail)?;
            let row = crate::rules::answer_check(&rec, &id, &step, row, at)?;
            let e = crate::rules::answer_entry(row, &step, &answer);
            insert_entry(&tx, &id, &e).await.map_err(fail)?;
            tx.commit().await.map_err(sql)
        })
    }

    fn request_cancel(
        &self,
        run: &str,
        lease: Duration,
        compensate: bool,
    ) -> Result<RunRecord, StoreError> {
        let id = run.to_owned();
        let shown = self.shown.clone();
        self.block(move |mut c| async move {
            let fail = |e: RowError| row_error(&shown, e);
            let sql = |e: tokio_postgres::Error| sql_error(&shown, e);
            let tx = c.transaction().await.map_err(sql)?;
            tx.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(sql)?;
            let mut rec = get_run(&tx, &id)
                .await
                .map_err(fail)?
                .ok_or_else(|| StoreError::UnknownRun(id.clone()))?;
            if rec.is_finished() {
                return Ok(rec);
            }
            let at = now(&tx).await.map_err(fail)?;
            if rec.lease_live(at, lease) {
                tx.execute(
                    "UPDATE runs SET cancel_requested = $2 WHERE id = $1",
                    &[&id, &(if compensate { 2i16 } else { 1 })],
                )
                .await
                .map_err(sql)?;
                rec.cancel_requested = true;
            } else {
                // Nobody live drives it: cancel it here, and fence off a
                // driver whose lease went stale so that it cannot write over
                // the cancel.
                tx.execute(
                    "UPDATE runs SET owner = NULL, heartbeat_ms = NULL, epoch = epoch + 1 WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(sql)?;
                let mut e = crate::rules::cancel_entry();
                e.at_ms = at;
                insert_entry(&tx, &id, &e).await.map_err(fail)?;
                rec.status = RunState::Cancelled;
            }
            tx.commit().await.map_err(sql)?;
            Ok(rec)
        })
    }

    fn update_rate(
        &self,
        key: &str,
        f: &mut dyn FnMut(Option<u64>) -> Option<u64>,
    ) -> Result<(), StoreError> {
        // `f` stays on this thread (it need not be `Send`), so it cannot run
        // inside a transaction on the store's runtime: read, decide, then
        // write only if the value is still the one read (compare and set),
        // deciding again from the newer value when another process won.
        for _ in 0..16 {
            let k = key.to_owned();
            let old = self.rows(move |c| async move {
                let r = c
                    .query_opt("SELECT value FROM rate_limits WHERE key = $1", &[&k])
                    .await?;
                Ok(r.map(|r| r.get::<_, i64>(0).max(0) as u64))
            })?;
            let Some(new) = f(old) else {
                return Ok(());
            };
            let k = key.to_owned();
            let swapped = self.rows(move |c| async move {
                let n = match old {
                    None => {
                        c.execute(
                            "INSERT INTO rate_limits (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                            &[&k, &big(new)],
                        )
                        .await?
                    }
                    Some(o) => {
                        c.execute(
                            "UPDATE rate_limits SET value = $2 WHERE key = $1 AND value = $3",
                            &[&k, &big(new), &big(o)],
                        )
                        .await?
                    }
                };
                Ok(n == 1)
            })?;
            if swapped {
                return Ok(());
            }
        }
        Err(StoreError::Busy {
            path: self.shown.clone(),
            source: format!("rate state `{key}` kept changing under this process").into(),
        })
    }

    fn enqueue_webhooks(&self, messages: &[WebhookMessage]) -> Result<(), StoreError> {
        let messages = messages.to_vec();
        self.rows(move |mut c| async move { webhooks::enqueue(&mut c, &messages).await })
    }

    fn claim_webhooks(
        &self,
        now_ms: i64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookMessage>, StoreError> {
        self.rows(move |mut c| async move { webhooks::claim(&mut c, now_ms, hold, limit).await })
    }

    fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
        state: DeliveryState,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let attempt = attempt.clone();
        self.rows(
            move |mut c| async move { webhooks::record(&mut c, &attempt, state, next_ms).await },
        )
    }

    fn deliveries(&self, tenant: &str, run: &str) -> Result<Vec<Delivery>, StoreError> {
        let (tenant, run) = (tenant.to_owned(), run.to_owned());
        self.rows(move |c| async move { webhooks::deliveries(&c, &tenant, &run).await })
    }

    fn gc(&self, before_ms: i64) -> Result<GcStats, StoreError> {
        self.rows(move |mut c| async move {
            let tx = c.transaction().await?;
            let at = now(&tx).await?;
            let stats = gc::gc(&tx, before_ms, at).await?;
            tx.commit().await?;
            Ok(stats)
        })
    }
}
