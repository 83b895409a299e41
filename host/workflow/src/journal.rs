//! The run journal: events become store commits on a writer thread, batched so the scheduler never waits on the disk.
//!
//! Entries are committed in the order they were recorded, so the stored
//! journal is always a prefix of what happened: a step's completion can be
//! lost to a crash only together with everything recorded after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use corral_runtime::digest::digest;
use corral_store::{Entry, HEARTBEAT, LEASE, Lease, RunState, StepRecord, Store, StoreError};

use super::events::Event;
use super::step_state::StepMachine;

/// Most entries in one transaction: whatever queued up while the previous
/// transaction committed goes into the next (group commit).
const BATCH: usize = 4096;
/// How long the journal keeps trying a store that is unavailable: well
/// within the lease, so that no other process can have taken the run.
const PATIENCE: Duration = Duration::from_millis(LEASE.as_millis() as u64 * 6 / 10);

enum Msg {
    Event(Box<Event>, i64),
    /// An entry that is not an event (a cache store), kept in order with them.
    Entry(Box<Entry>),
    Flush(oneshot::Sender<Result<(), JournalError>>),
}

/// Why a run's journal is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// A commit failed (the store's error, or a lost lease); the run was
    /// cancelled then, since running on unjournaled breaks durability.
    #[error("{0}")]
    Commit(String),
    /// The writer thread is gone (it panicked, or the journal was closed).
    #[error("the journal writer stopped")]
    Stopped,
    /// The run's lease could not be given up.
    #[error("cannot release the run's lease: {0}")]
    Release(String),
}

/// A run's journal: record events, flush before answering anyone.
pub struct Journal {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    error: Arc<OnceLock<String>>,
    compensate: Arc<AtomicBool>,
    store: Arc<dyn Store>,
    run_id: String,
    lease: Lease,
    /// Counts commits, so readers in this process (an event stream) wake
    /// as soon as entries are stored instead of polling.
    commits: tokio::sync::watch::Receiver<u64>,
}

/// What the writer thread needs.
struct Writer {
    store: Arc<dyn Store>,
    run_id: String,
    lease: Lease,
    rows: HashMap<String, StepRecord>,
    machine: StepMachine,
    cancel: CancellationToken,
    compensate: Arc<AtomicBool>,
    error: Arc<OnceLock<String>>,
    commits: tokio::sync::watch::Sender<u64>,
}

impl Journal {
    /// Starts the writer for `run_id`, which `lease` holds. `rows` is
    /// the stored step state (empty for a new run). A cancel requested
    /// through the store (`corral cancel`), a lost lease or a failed commit
    /// trips `cancel`.
    pub fn start(
        store: Arc<dyn Store>,
        run_id: String,
        lease: Lease,
        rows: Vec<StepRecord>,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let error = Arc::new(OnceLock::new());
        let compensate = Arc::new(AtomicBool::new(false));
        let (commits_tx, commits) = tokio::sync::watch::channel(0);
        let writer = Writer {
            commits: commits_tx,
            store: store.clone(),
            run_id: run_id.clone(),
            lease: lease.clone(),
            machine: StepMachine::new(&rows),
            rows: rows.into_iter().map(|r| (r.step.clone(), r)).collect(),
            cancel,
            compensate: compensate.clone(),
            error: error.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("journal {run_id}"))
            .spawn(move || writer.run(rx))
            .expect("cannot start the journal thread");
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            error,
            compensate,
            store,
            run_id,
            lease,
            commits,
        }
    }

    /// Changes after every commit (and once more when the writer stops).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.clone()
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether `corral cancel --compensate` asked for compensation.
    pub fn compensate_requested(&self) -> bool {
        self.compensate.load(Ordering::Relaxed)
    }

    /// Queues an event; it is committed shortly, in order.
    pub fn record(&self, e: &Event) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(Msg::Event(Box::new(e.clone()), corral_store::now_ms()));
        }
    }

    /// Queues a ready-made entry, in order with the events.
    pub fn append(&self, e: Entry) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(Msg::Entry(Box::new(e)));
        }
    }

    /// Waits until everything recorded so far is committed.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Flush(done)).is_ok());
        if !sent {
            return self.result().and(Err(JournalError::Stopped));
        }
        wait.await.unwrap_or(Err(JournalError::Stopped))
    }

    /// The first commit error, if any.
    pub fn result(&self) -> Result<(), JournalError> {
        match self.error.get() {
            Some(e) => Err(JournalError::Commit(e.clone())),
            None => Ok(()),
        }
    }

    /// Flushes, stops the writer and gives up the run's lease.
    pub async fn close(&self) -> Result<(), JournalError> {
        let flushed = self.flush().await;
        self.tx.lock().unwrap().take();
        let thread = self.thread.lock().unwrap().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let released = self
            .store
            .release(&self.run_id, &self.lease)
            .map_err(|e| JournalError::Release(e.to_string()));
        flushed.and(released)
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut last_beat = Instant::now();
        let mut batch: Vec<Entry> = Vec::new();
        let mut waiting: Vec<oneshot::Sender<Result<(), JournalError>>> = Vec::new();
        loop {
            let first = match rx.recv_timeout(HEARTBEAT) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.heartbeat();
                    last_beat = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = Some(first);
            while let Some(m) = next {
                match m {
                    Msg::Event(e, at) => {
                        let entry = self.entry(*e, at);
                        batch.push(entry);
                    }
                    Msg::Entry(e) => batch.push(*e),
                    Msg::Flush(done) => waiting.push(done),
                }
                next = if batch.len() < BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            // One transaction holds the batch: only each step's last state
            // needs writing.
            let mut last: HashMap<&str, usize> = HashMap::new();
            for (k, e) in batch.iter().enumerate() {
                if let Some(s) = &e.step_state {
                    last.insert(s.step.as_str(), k);
                }
            }
            let keep: Vec<bool> = batch
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    e.step_state
                        .as_ref()
                        .is_none_or(|s| last[s.step.as_str()] == k)
                })
                .collect();
            for (e, keep) in batch.iter_mut().zip(keep) {
                if !keep {
                    e.step_state = None;
                }
            }
            if !batch.is_empty()
                && self.error.get().is_none()
                && let Err(e) =
                    self.patiently(|| self.store.commit(&self.run_id, &self.lease, &batch))
            {
                self.fail(format!("cannot write the journal: {e}"));
            }
            self.commits.send_modify(|n| *n += 1);
            batch.clear();
            let result = match self.error.get() {
                Some(e) => Err(JournalError::Commit(e.clone())),
                None => Ok(()),
            };
            for w in waiting.drain(..) {
                let _ = w.send(result.clone());
            }
            if last_beat.elapsed() >= HEARTBEAT {
                self.heartbeat();
                last_beat = Instant::now();
            }
        }
    }

    fn fail(&self, message: String) {
        tracing::error!(run = %self.run_id, "{message}");
        let _ = self.error.set(message);
        // Running on without a journal would break the promise of durability.
        self.cancel.cancel();
    }

    /// Runs `f`, again while the store is busy or unreachable (a database
    /// restarting, a dropped connection), with backoff for at most
    /// [`PATIENCE`]: past that the lease may be someone else's.
    fn patiently<T>(&self, f: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match f() {
                Err(e @ StoreError::Busy { .. }) if start.elapsed() + pause < PATIENCE => {
                    tracing::warn!(run = %self.run_id, "the store is unavailable, trying again: {e}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn heartbeat(&self) {
        match self.patiently(|| self.store.heartbeat(&self.run_id, &self.lease)) {
            Ok(0) => {}
            Ok(flag) => {
                if flag == 2 {
                    self.compensate.store(true, Ordering::Relaxed);
                }
                self.cancel.cancel();
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// The journal entry for an event, with the state change it implies.
    fn entry(&mut self, e: Event, at_ms: i64) -> Entry {
        let kind = e.kind();
        let step = e.step().map(str::to_owned);
        let mut blob = None;
        let data = match &e {
            Event::StepCompleted {
                step,
                output,
                fingerprint,
                cached,
                stats,
            } => {
                let bytes = serde_json::to_vec(output.as_ref()).unwrap_or_default();
                let d = digest(&bytes);
                let mut data = json!({ "step": step, "output": d, "fingerprint": fingerprint, "cached": cached });
                if let (Value::Object(m), Ok(Value::Object(s))) =
                    (&mut data, serde_json::to_value(stats))
                {
                    m.extend(s);
                }
                blob = Some((d, bytes));
                data
            }
            Event::DelegateFinished { output, .. } => {
                // The output is stored once, as a blob, like a step's.
                let bytes = serde_json::to_vec(output.as_ref()).unwrap_or_default();
                let d = digest(&bytes);
                let mut data = match serde_json::to_value(&e) {
                    Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                data["output"] = Value::String(d.clone());
                blob = Some((d, bytes));
                data
            }
            other => match serde_json::to_value(other) {
                Ok(Value::Object(mut m)) => m.remove("data").unwrap_or(Value::Null),
                _ => Value::Null,
            },
        };
        let mut entry = Entry {
            at_ms,
            blob,
            ..Entry::new(kind, step, data.to_string())
        };
        match &e {
            Event::RunStarted { .. } => {
                entry.run_state = Some((RunState::Running, None));
            }
            Event::RunResumed {
                changed_params,
                params,
                ..
            } => {
                entry.run_state = Some((RunState::Running, None));
                if !changed_params.is_empty() {
                    entry.run_params = Some(params.to_string());
                }
            }
            Event::RunFinished { status, error, .. } => {
                entry.run_state = Some(((*status).into(), error.clone()));
            }
            // Charged now, settled when the call finishes: a call cut off
            // by a crash stays charged its whole reservation.
            Event::CallStarted { fuel_reserved, .. } => {
                entry.fuel_charge = (*fuel_reserved).min(i64::MAX as u64) as i64;
            }
            Event::CallFinished { receipt, .. } => {
                let unused = receipt.fuel_limit.saturating_sub(receipt.fuel_used);
                entry.fuel_charge = -(unused.min(i64::MAX as u64) as i64);
            }
            _ => {}
        }
        if let Some(step) = e.step() {
            let output = entry.blob.as_ref().map(|b| b.0.clone());
            let row = self
                .rows
                .entry(step.to_owned())
                .or_insert_with(|| StepRecord {
                    step: step.to_owned(),
                    ..StepRecord::default()
                });
            if self.machine.apply(row, &e, output) {
                entry.step_state = Some(row.clone());
            }
        }
        entry
    }
}
