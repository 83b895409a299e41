//! One sandboxed call: a slot from the admission limit, a fresh store under the budget, the export invoked, and every failure classified.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Instance, Linker, ResourceTable, TypedFunc};
use wasmtime::{
    AsContext, Engine, PoolConcurrencyLimitError, ResourceLimiter, Store, StoreContextMut, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capture::{Capture, CaptureStream, LogRecord, MAX_LOG_FIELDS, Source, log_record_cost};
use crate::contract::Contract;
use crate::delegate::{CallExtras, DelegationRecord};
use crate::delegate_host::DelegateCtx;
use crate::describe::Declared;
use crate::error::CallError;
use crate::gate::{CpuGate, GatedPoll};
use crate::http::{HttpCallRecord, HttpLog, HttpPolicy, HttpQuota};
use crate::lift::{GuestStr, LogFields, OUTPUT_CAP, RunResult};
use crate::model::{Gateway, MemoryPool, ModelLog};
use crate::model_host::ModelCtx;
use crate::wit::latest::corral::agent::host::Level;
use crate::{Budget, Grants};

/// What a call gets besides its export, budget and grants.
#[derive(Default)]
pub(crate) struct Beside {
    /// What its starter gave: pools, delegation, the artifact store.
    pub extras: CallExtras,
    /// Its artifacts, with what its input lets it read.
    pub artifacts: Option<Arc<crate::artifact::CallArtifacts>>,
}

/// The store data of one call.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    meter: MemoryMeter,
    capture: Arc<Mutex<Capture>>,
    progress: Option<u8>,
    /// The model gateway as this call may use it (contract 0.2.0).
    pub(crate) model: Option<Arc<ModelCtx>>,
    /// The model calls made, for the receipt.
    pub(crate) model_log: ModelLog,
    /// Whom the call may delegate to (contract 0.2.0).
    pub(crate) delegate: Option<Arc<DelegateCtx>>,
    /// The delegated calls made, for the receipt.
    pub(crate) delegations: Vec<DelegationRecord>,
    /// The run's artifacts as this call may use them (contract 0.2.0).
    pub(crate) artifacts: Option<Arc<crate::artifact::CallArtifacts>>,
    /// Artifact writers the guest holds (see `MAX_OPEN_WRITERS`).
    pub(crate) artifact_writers: usize,
    http: WasiHttpCtx,
    /// Checks and sends every outbound request (contract 0.2.0).
    http_policy: HttpPolicy,
    /// The call's place among the calls running wasm.
    pub(crate) cpu: CpuGate,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// The longest progress note read; a longer one is logged by its length.
const MAX_PROGRESS_NOTE: usize = 1024;

/// Links what the host offers for every contract version it serves: `host`
/// in each, and `model` and `wasi:http` for 0.2.0 (a 0.1.0 component that
/// imports `wasi:http` is refused at load).
pub(crate) fn add_host_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for version in crate::wit::VERSIONS {
        add_host_interface(linker, version)?;
    }
    crate::gate::add_poll_to_linker(linker, |s: &mut HostState| GatedPoll {
        table: &mut s.table,
        gate: &mut s.cpu,
    })?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    crate::model_host::add_to_linker(linker)?;
    crate::delegate_host::add_to_linker(linker)?;
    crate::artifact_host::add_to_linker(linker)
}

/// Links one version's `host` interface (the same in every version). Its
/// functions are written against the raw lift ([`GuestStr`], [`LogFields`])
/// rather than bindgen's `Host` trait, which would copy every string and
/// field into the host before the log cap could look at it.
fn add_host_interface(linker: &mut Linker<HostState>, version: &str) -> wasmtime::Result<()> {
    // `types` declares types only; the instance must still exist.
    linker.instance(&format!("corral:agent/types@{version}"))?;
    let mut host = linker.instance(&format!("corral:agent/host@{version}"))?;
    host.func_wrap(
        "log",
        |store: StoreContextMut<'_, HostState>,
         (level, message, fields): (Level, GuestStr, LogFields)| {
            log(store, level, message, fields)
        },
    )?;
    host.func_wrap(
        "progress",
        |mut store: StoreContextMut<'_, HostState>, (percent, note): (u8, GuestStr)| {
            let note = if note.bytes <= MAX_PROGRESS_NOTE {
                let text = note.read(&store).map_err(|e| {
                    wasmtime::format_err!(
                        "the agent passed `progress` a note that is not valid UTF-8 ({e})"
                    )
                })?;
                text.into_owned()
            } else {
                format!("({} bytes, not shown)", note.bytes)
            };
            let percent = percent.min(100);
            store.data_mut().progress = Some(percent);
            tracing::debug!(target: "corral::agent", percent, "progress: {note}");
            Ok(())
        },
    )?;
    Ok(())
}

/// Charges a record its full size from the lengths alone, and reads its
/// text only when it is kept, so the host never holds more than the cap.
fn log(
    store: StoreContextMut<'_, HostState>,
    level: Level,
    message: GuestStr,
    fields: LogFields,
) -> wasmtime::Result<()> {
    let field_text = fields.first.iter().map(|(k, v)| k.bytes + v.bytes).sum();
    let cost = log_record_cost(message.bytes, fields.count, field_text);
    let capture = store.data().capture.clone();
    let mut capture = capture.lock().unwrap();
    if fields.count > MAX_LOG_FIELDS {
        capture.drop_record(cost);
        return Ok(());
    }
    if !capture.reserve(cost) {
        return Ok(());
    }
    let read = |s: &GuestStr| {
        let text = s.read(store.as_context()).map_err(|e| {
            wasmtime::format_err!("the agent passed `log` a string that is not valid UTF-8 ({e})")
        })?;
        Ok::<_, wasmtime::Error>(text.into_owned())
    };
    let record = LogRecord {
        source: Source::Log,
        level: Capture::level_name(level).into(),
        message: read(&message)?,
        fields: fields
            .first
            .iter()
            .map(|(k, v)| Ok((read(k)?, read(v)?)))
            .collect::<wasmtime::Result<_>>()?,
    };
    capture.keep(record);
    Ok(())
}

/// Meters linear memory and tables of the whole instance against one limit,
/// and remembers a refused growth: a guest that aborts on a failed
/// allocation traps with `unreachable`, which says nothing about memory.
struct MemoryMeter {
    limit: u64,
    in_use: u64,
    peak: u64,
    refusal: Option<Refusal>,
    capture: Arc<Mutex<Capture>>,
}

/// The last growth the meter refused.
#[derive(Clone, Copy)]
struct Refusal {
    /// Bytes the instance would have held.
    requested: u64,
    /// Where stderr stood at the refusal.
    stderr_mark: u64,
}

/// Bytes charged per table element (a function reference).
const TABLE_ELEMENT_BYTES: u64 = 8;

impl MemoryMeter {
    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let next = self.in_use.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            let stderr_mark = self.capture.lock().unwrap().stderr_mark();
            self.refusal = Some(Refusal {
                requested: next,
                stderr_mark,
            });
            return false;
        }
        self.in_use = next;
        self.peak = self.peak.max(next);
        true
    }
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current as u64 * TABLE_ELEMENT_BYTES,
            desired as u64 * TABLE_ELEMENT_BYTES,
        ))
    }
}

/// Which export to call.
pub(crate) enum Export {
    Describe,
    Run(String),
}

/// What the export returned, before any contract check.
pub(crate) enum Returned {
    Info(Declared),
    Run(RunResult),
}

/// What a call consumed, whatever its outcome.
pub(crate) struct Usage {
    pub fuel_used: u64,
    pub peak_memory: u64,
    pub wall: Duration,
    /// When the call's time is up: checks after the call run against it.
    pub deadline: Instant,
    pub capture: Capture,
    pub progress: Option<u8>,
    pub model_log: ModelLog,
    pub delegations: Vec<DelegationRecord>,
    pub http_calls: Vec<HttpCallRecord>,
    pub http_calls_dropped: u64,
    /// The grant lines of outbound requests refused by policy.
    pub http_refused: Vec<String>,
}

/// Engine-wide facts a call needs.
pub(crate) struct Sandbox<'a> {
    pub engine: &'a Engine,
    pub max_stack: usize,
    /// One permit per instance slot of the pool: a call holds one from
    /// before it instantiates until its store is gone.
    pub admission: &'a Semaphore,
    pub slots: u32,
    /// Places for calls running wasm; see [`crate::gate`].
    pub running: &'a Arc<Semaphore>,
    pub running_places: u32,
    /// The host's model gateway, when one is configured.
    pub models: Option<&'a Arc<Gateway>>,
}

/// Where a failure happened: before the guest's export ran, or in it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Instantiate,
    Call,
}

/// The deadline of a call that starts now. A timeout beyond the clock's
/// range is as good as none: it is cut to a century.
pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(timeout.min(CENTURY))
        .or_else(|| start.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(start)
}

impl Sandbox<'_> {
    /// Waits for a slot, instantiates `pre` in a fresh store under `budget`
    /// and calls `export`. The wait counts against the deadline; a call
    /// that gets no slot before it is `Overloaded`, never the agent's fault.
    pub async fn invoke(
        &self,
        agent: &str,
        pre: &Contract,
        export: Export,
        budget: &Budget,
        grants: &Grants,
        beside: Beside,
    ) -> (Result<Returned, CallError>, Usage) {
        let start = Instant::now();
        let deadline = deadline_after(start, budget.timeout);
        let usage = |capture: Capture| Usage {
            fuel_used: 0,
            peak_memory: 0,
            wall: start.elapsed(),
            deadline,
            capture,
            progress: None,
            model_log: ModelLog::default(),
            delegations: Vec::new(),
            http_calls: Vec::new(),
            http_calls_dropped: 0,
            http_refused: Vec::new(),
        };
        let deadline_exceeded = || CallError::DeadlineExceeded {
            agent: agent.into(),
            limit: budget.timeout,
        };
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        // The pool has a fixed number of slots; waiting here for one is
        // never the agent's fault, and is bounded by the call's deadline.
        let permit = match tokio::time::timeout_at(tokio_deadline, self.admission.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => unreachable!("the admission semaphore is never closed"),
            // The pool stayed full: the host's limit, not the agent's doing.
            Err(_elapsed) => {
                let err = CallError::Overloaded {
                    agent: agent.into(),
                    reason: format!(
                        "all {} instance slots stayed busy for the call's whole deadline of {}",
                        self.slots,
                        crate::human::duration(budget.timeout)
                    ),
                };
                return (Err(err), usage(Capture::new(agent, 0)));
            }
        };
        let capture = Arc::new(Mutex::new(Capture::new(agent, budget.max_log_bytes)));
        let mut store = match self.store(agent, &capture, budget, grants, beside, deadline) {
            Ok(store) => store,
            Err(e) => return (Err(e), usage(Capture::new(agent, 0))),
        };

        // A place among the running calls, within the deadline as well.
        let entered = tokio::time::timeout_at(tokio_deadline, store.data_mut().cpu.enter()).await;
        if entered.is_err() {
            let err = CallError::Overloaded {
                agent: agent.into(),
                reason: format!(
                    "no place among the {} calls running wasm freed up within the call's deadline of {}",
                    self.running_places,
                    crate::human::duration(budget.timeout)
                ),
            };
            return (Err(err), usage(Capture::new(agent, 0)));
        }

        // The tokio timeout covers what epochs cannot: a guest blocked in an
        // async host call (a WASI sleep or poll) is not running wasm, so
        // only dropping the future ends it.
        let result =
            tokio::time::timeout_at(tokio_deadline, call(&mut store, pre, export, budget)).await;
        let wall = start.elapsed();

        let fuel_used = budget.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        // Dropping the store frees its slot and the WASI context, which
        // holds the stdio streams; only then is the permit given back.
        let HostState {
            meter,
            progress,
            model_log,
            delegations,
            http_policy,
            ..
        } = store.into_data();
        drop(permit);
        // The store is gone, and with it every body that could still count.
        let http_log = std::mem::take(&mut *http_policy.log.lock().unwrap());
        let http_refused = http_log.refused_grants();
        drop(meter.capture);
        let mut capture = Arc::try_unwrap(capture)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|shared| std::mem::take(&mut *shared.lock().unwrap()));
        capture.finish();
        let result = match result {
            Err(_elapsed) => Err(deadline_exceeded()),
            Ok(Ok(returned)) => Ok(returned),
            Ok(Err((phase, e))) => {
                let facts = Facts {
                    budget,
                    fuel_used,
                    refusal: meter.refusal,
                    capture: &capture,
                };
                Err(self.classify(agent, phase, e, facts))
            }
        };
        let usage = Usage {
            fuel_used,
            peak_memory: meter.peak,
            wall,
            deadline,
            capture,
            progress,
            model_log,
            delegations,
            http_calls_dropped: http_log.dropped,
            http_calls: http_log.records,
            http_refused,
        };
        (result, usage)
    }

    /// A fresh store for one call: the grants' WASI context with captured
    /// stdio, the memory meter, fuel and the epoch deadline.
    fn store(
        &self,
        agent: &str,
        capture: &Arc<Mutex<Capture>>,
        budget: &Budget,
        grants: &Grants,
        beside: Beside,
        deadline: Instant,
    ) -> Result<Store<HostState>, CallError> {
        let Beside { extras, artifacts } = beside;
        let tokens = Arc::new(MemoryPool::new(
            "call token budget",
            "budget.tokens",
            budget.tokens,
        ));
        let mut wasi = grants.wasi_builder().map_err(|e| CallError::Host {
            agent: agent.into(),
            message: format!("{e:#}"),
        })?;
        wasi.stdout(CaptureStream::new(capture.clone(), Source::Stdout))
            .stderr(CaptureStream::new(capture.clone(), Source::Stderr));
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            meter: MemoryMeter {
                limit: budget.memory_bytes,
                in_use: 0,
                peak: 0,
                refusal: None,
                capture: capture.clone(),
            },
            capture: capture.clone(),
            progress: None,
            model: self.models.filter(|_| !grants.models.is_empty()).map(|g| {
                Arc::new(ModelCtx {
                    gateway: g.clone(),
                    granted: grants.models.clone(),
                    tokens: tokens.clone(),
                    outer: extras.pools.clone(),
                    deadline,
                })
            }),
            delegate: extras.delegation.map(|delegation| {
                Arc::new(DelegateCtx {
                    delegation,
                    tokens,
                    outer: extras.pools,
                    memory_limit: budget.memory_bytes,
                    deadline,
                })
            }),
            delegations: Vec::new(),
            artifacts,
            artifact_writers: 0,
            model_log: ModelLog::default(),
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy {
                grants: grants.http.clone().into(),
                quota: HttpQuota {
                    requests: budget.http_requests,
                    request_bytes: budget.http_request_bytes,
                    response_bytes: budget.http_response_bytes,
                },
                deadline,
                log: Arc::new(Mutex::new(HttpLog::default())),
            },
            cpu: CpuGate::new(self.running.clone()),
        };
        let mut store = Store::new(self.engine, state);
        store.limiter(|s| &mut s.meter);
        store
            .set_fuel(budget.fuel)
            .expect("fuel is enabled on the engine");
        // Every epoch tick the guest yields to the executor, so a CPU-bound
        // call never holds up the task that polls it (the workflow
        // scheduler, a cancellation); past the deadline it traps.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        Ok(store)
    }

    /// Names a failure by its cause: the budget that was breached, the
    /// trap, or the rule of the component ABI the guest broke.
    fn classify(&self, agent: &str, phase: Phase, err: wasmtime::Error, f: Facts<'_>) -> CallError {
        let agent = agent.to_owned();
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return CallError::FuelExhausted {
                    agent,
                    used: f.fuel_used,
                    limit: f.budget.fuel,
                };
            }
            Some(Trap::Interrupt) => {
                return CallError::DeadlineExceeded {
                    agent,
                    limit: f.budget.timeout,
                };
            }
            Some(Trap::StackOverflow) => {
                return CallError::StackOverflow {
                    agent,
                    max_stack: self.max_stack,
                };
            }
            _ => {}
        }
        if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return CallError::Overloaded {
                agent,
                reason: format!("{err:#}"),
            };
        }
        if let Some(requested) = f.memory_failure(phase) {
            return CallError::MemoryLimit {
                agent,
                limit: f.budget.memory_bytes,
                requested,
            };
        }
        let trap = match (
            err.downcast_ref::<Trap>(),
            err.downcast_ref::<wasmtime_wasi::I32Exit>(),
        ) {
            (Some(t), _) => t.to_string(),
            (None, Some(exit)) => format!("the agent called exit({})", exit.0),
            // Once the export is running, an error that is not a trap comes
            // from lifting what the guest handed the host (a bad
            // discriminant, a pointer outside its memory, invalid UTF-8, a
            // stale resource handle): the guest broke the ABI.
            (None, None) if phase == Phase::Call => {
                return CallError::AbiViolation {
                    agent,
                    reason: without_backtrace(&err),
                };
            }
            // Before it: a host-side failure (an instantiation error).
            (None, None) => {
                return CallError::Host {
                    agent,
                    message: format!("{err:#}"),
                };
            }
        };
        CallError::GuestTrap {
            agent,
            trap,
            message: f.capture.panic_message(),
        }
    }
}

/// The error's chain of causes without the wasm backtrace wasmtime attaches
/// to errors raised in host calls: the reason is what the reader needs.
fn without_backtrace(err: &wasmtime::Error) -> String {
    let outer_backtrace = err.downcast_ref::<wasmtime::WasmBacktrace>().is_some();
    let causes: Vec<String> = err
        .chain()
        .skip(usize::from(outer_backtrace))
        .map(|e| e.to_string())
        .collect();
    causes.join(": ")
}

/// What the classifier knows about a failed call besides the error.
struct Facts<'a> {
    budget: &'a Budget,
    fuel_used: u64,
    refusal: Option<Refusal>,
    capture: &'a Capture,
}

impl Facts<'_> {
    /// The bytes the instance asked for, when the failure follows from a
    /// refused growth.
    ///
    /// A guest may handle a refusal (Rust's `try_reserve`, Python's
    /// `MemoryError`) and fail later for an unrelated reason. The refusal
    /// explains the failure only if the guest did not print a panic after
    /// it: Rust aborts on a failed allocation with "memory allocation of N
    /// bytes failed" and no panic, so a panic after the refusal is a
    /// failure of its own, with its own message. Before the export runs
    /// (an initial memory over the budget), any refusal is the cause.
    fn memory_failure(&self, phase: Phase) -> Option<u64> {
        let refusal = self.refusal?;
        let panicked = phase == Phase::Call && self.capture.panicked_since(refusal.stderr_mark);
        (!panicked).then_some(refusal.requested)
    }
}

/// Instantiates and calls the export. `run` is called through a typed
/// function whose result is lifted by [`crate::lift`]: the output's length
/// is checked in guest memory, and only an output within the cap is copied.
async fn call(
    store: &mut Store<HostState>,
    pre: &Contract,
    export: Export,
    budget: &Budget,
) -> Result<Returned, (Phase, wasmtime::Error)> {
    let at = |phase| move |e| (phase, e);
    match export {
        Export::Describe => {
            pre.describe(store)
                .await
                .map(Returned::Info)
                .map_err(|(instantiating, e)| {
                    let phase = if instantiating {
                        Phase::Instantiate
                    } else {
                        Phase::Call
                    };
                    (phase, e)
                })
        }
        Export::Run(packet) => {
            let instance = pre
                .instance_pre()
                .instantiate_async(&mut *store)
                .await
                .map_err(at(Phase::Instantiate))?;
            let run =
                run_func(store, &instance, pre.guest_export()).map_err(at(Phase::Instantiate))?;
            let called = run.call_async(&mut *store, (packet.as_str(),));
            let (result,) = OUTPUT_CAP
                .scope(budget.max_output_bytes, called)
                .await
                .map_err(at(Phase::Call))?;
            Ok(Returned::Run(result))
        }
    }
}

/// The `run` export with the capped result types of [`crate::lift`].
fn run_func<'p>(
    store: &mut Store<HostState>,
    instance: &Instance,
    guest_export: &str,
) -> wasmtime::Result<TypedFunc<(&'p str,), (RunResult,)>> {
    let missing = || wasmtime::format_err!("the component does not export `run`");
    let guest = instance
        .get_export_index(&mut *store, None, guest_export)
        .ok_or_else(missing)?;
    let run = instance
        .get_export_index(&mut *store, Some(&guest), "run")
        .ok_or_else(missing)?;
    instance.get_typed_func(&mut *store, run)
}
