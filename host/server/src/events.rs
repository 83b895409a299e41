//! `GET /v1/runs/{id}/events`: the run's journal as Server-Sent Events, each with its journal sequence as id, so a client that reconnects with `Last-Event-ID` misses nothing and sees nothing twice.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use corral_store::{JournalEntry, LEASE, now_ms};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::extract::Params;
use crate::problem::{Kind, Problem};
use crate::state::AppState;

/// Entries read from the store per poll.
const PAGE: usize = 256;
/// How often an idle stream looks for new entries of a run another process
/// drives; a run this process drives wakes its streams on every commit.
const POLL: Duration = Duration::from_millis(100);
/// Open event streams across all tenants; more are refused with 503.
pub const MAX_STREAMS: usize = 1024;

/// Open streams, for the limit and the metrics.
pub static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start after this journal sequence (as `Last-Event-ID`).
    after: Option<i64>,
    /// `false`: end the stream once every event so far is sent, even while
    /// the run goes on (`corral events` without `--follow`).
    follow: Option<bool>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(
        ("id" = String, Path),
        ("after" = Option<i64>, Query, description = "Start after this sequence (as `Last-Event-ID`)"),
        ("follow" = Option<bool>, Query, description = "`false`: end once the events so far are sent, even while the run goes on"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received"),
    ),
    responses((status = 200, description = "Server-Sent Events; each `data` is an EventData, the last one an `end` event with the run's status", content_type = "text/event-stream", body = crate::api::EventData),
        (status = 404, body = crate::api::ProblemDoc, content_type = "application/problem+json")))]
pub async fn events(
    State(st): State<Arc<AppState>>,
    Caller(tenant): Caller,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Params(q): Params<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    crate::runs::own_run(&st, &tenant, &id).await?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                Problem::new(
                    Kind::InvalidRequest,
                    "`Last-Event-ID` is not an event id this server sent",
                )
            })?,
        None => q.after.unwrap_or(0),
    };
    let slot =
        StreamSlot::take(&tenant.id, tenant.quota.event_streams).map_err(|(open, limit)| {
            match limit {
                // The tenant's own share is spent: a quota, like any other.
                Some(limit) => crate::quota::Spent {
                    quota: "event_streams",
                    limit: u64::from(limit),
                    used: open as u64,
                    resets_in_secs: None,
                }
                .problem(
                    &tenant.id,
                    format!("{open} event streams are open, the most it may have"),
                ),
                None => Problem::new(
                    Kind::Unavailable,
                    "too many open event streams on this server; try again shortly",
                )
                .retry_after(Duration::from_secs(5)),
            }
        })?;
    let stream = futures::stream::unfold(
        Cursor {
            st,
            run: id,
            after,
            pending: Vec::new().into_iter(),
            ended: false,
            follow: q.follow.unwrap_or(true),
            commits: None,
            _slot: slot,
        },
        Cursor::next,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Open streams per tenant, so one tenant cannot hold them all.
static PER_TENANT: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

/// Counts an open stream, in all and for its tenant, for as long as it lives.
struct StreamSlot {
    tenant: String,
}

impl StreamSlot {
    /// A slot, or the open count and (when it is the tenant's share that is
    /// spent) the tenant's limit.
    fn take(tenant: &str, limit: u32) -> Result<Self, (usize, Option<u32>)> {
        let mut per = PER_TENANT.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per.get(tenant).copied().unwrap_or(0);
        if mine >= limit {
            return Err((mine as usize, Some(limit)));
        }
        OPEN_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .map_err(|n| (n, None))?;
        per.insert(tenant.to_owned(), mine + 1);
        Ok(StreamSlot {
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::AcqRel);
        let mut per = PER_TENANT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
    }
}

struct Cursor {
    st: Arc<AppState>,
    run: String,
    after: i64,
    pending: std::vec::IntoIter<JournalEntry>,
    ended: bool,
    follow: bool,
    /// The journal's commit counter, while this process drives the run.
    commits: Option<tokio::sync::watch::Receiver<u64>>,
    _slot: StreamSlot,
}

impl Cursor {
    /// The next event: a buffered entry, else a page from the store, else
    /// (once the run stopped and everything was sent) the end of the stream.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.pending.next() {
                self.after = e.seq;
                return Some((Ok(event(&e)), self));
            }
            if self.ended {
                return None;
            }
            // Watched before the read, so a commit after it wakes us.
            if self.commits.is_none() {
                self.commits = self.st.drivers.commits(&self.run);
            }
            let store = self.st.store.clone();
            let (run, after) = (self.run.clone(), self.after);
            let page = tokio::task::spawn_blocking(move || {
                let rec = store.run(&run)?;
                let entries = store.journal(&run, after, PAGE)?;
                Ok::<_, corral_store::StoreError>((rec, entries))
            })
            .await;
            let Ok(Ok((rec, entries))) = page else {
                return None;
            };
            if entries.is_empty() {
                // Stopped (finished, waiting for a human, or nobody drives
                // it): everything it will write is written.
                // A queued run will be: a worker claims it.
                let driven = self.st.drivers.is_driving(&self.run)
                    || rec.lease_live(now_ms(), LEASE)
                    || rec.display_status(now_ms(), LEASE) == "queued";
                // A stopping server ends its streams, so shutdown never
                // waits on a reader; the client reconnects with
                // `Last-Event-ID` and misses nothing.
                if self.st.stopping.is_cancelled() {
                    return None;
                }
                if !driven || !self.follow {
                    self.ended = true;
                    return Some((
                        Ok(Event::default().event("end").data(
                            json!({"status": rec.display_status(now_ms(), LEASE)}).to_string(),
                        )),
                        self,
                    ));
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    gone = changed(self.commits.as_mut()) => {
                        if gone {
                            self.commits = None;
                        }
                    }
                    _ = self.st.stopping.cancelled() => {}
                }
                continue;
            }
            self.pending = entries.into_iter();
        }
    }
}

/// Resolves on the next commit, true when the writer is gone (everything
/// it wrote is readable); never without a journal to watch.
async fn changed(commits: Option<&mut tokio::sync::watch::Receiver<u64>>) -> bool {
    match commits {
        Some(rx) => rx.changed().await.is_err(),
        None => std::future::pending().await,
    }
}

fn event(e: &JournalEntry) -> Event {
    let data = json!({
        "seq": e.seq,
        "at_ms": e.at_ms,
        "type": e.kind,
        "step": e.step,
        "data": e.data,
    });
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.clone())
        .data(data.to_string())
}
