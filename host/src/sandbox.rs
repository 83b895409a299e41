//! One sandboxed call: a fresh store under the budget, the export invoked, and every failure classified.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capture::{Capture, CaptureStream, Source};
use crate::error::CallError;
use crate::wit::latest as wit;
use crate::{Budget, Grants};

/// The store data of one call.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: MemoryMeter,
    capture: Arc<Mutex<Capture>>,
    progress: Option<u8>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::corral::agent::host::Host for HostState {
    fn log(
        &mut self,
        level: wit::corral::agent::host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        self.capture.lock().unwrap().log(level, message, fields);
    }

    fn progress(&mut self, percent: u8, note: String) {
        let percent = percent.min(100);
        self.progress = Some(percent);
        tracing::debug!(target: "corral::agent", percent, "progress: {note}");
    }
}

impl wit::corral::agent::types::Host for HostState {}

/// Meters linear memory and tables of the whole instance against one limit,
/// and remembers a refused growth: a guest that aborts on a failed
/// allocation traps with `unreachable`, which says nothing about memory.
struct MemoryMeter {
    limit: u64,
    in_use: u64,
    peak: u64,
    refused: Option<u64>,
}

/// Bytes charged per table element (a function reference).
const TABLE_ELEMENT_BYTES: u64 = 8;

impl MemoryMeter {
    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let next = self.in_use.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.refused = Some(next);
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
    Info(wit::corral::agent::types::AgentInfo),
    Run(Result<String, wit::corral::agent::types::AgentError>),
}

/// What a call consumed, whatever its outcome.
pub(crate) struct Usage {
    pub fuel_used: u64,
    pub peak_memory: u64,
    pub wall: Duration,
    pub capture: Capture,
    pub progress: Option<u8>,
}

/// Engine-wide facts a call needs.
pub(crate) struct Sandbox<'a> {
    pub engine: &'a Engine,
    pub max_stack: usize,
}

impl Sandbox<'_> {
    /// Instantiates `pre` in a fresh store under `budget` and calls `export`.
    pub async fn invoke(
        &self,
        agent: &str,
        pre: &wit::AgentPre<HostState>,
        export: Export,
        budget: &Budget,
        grants: &Grants,
    ) -> (Result<Returned, CallError>, Usage) {
        let capture = Arc::new(Mutex::new(Capture::new(agent, budget.max_log_bytes)));
        let empty_usage = |capture: Capture| Usage {
            fuel_used: 0,
            peak_memory: 0,
            wall: Duration::ZERO,
            capture,
            progress: None,
        };
        let mut wasi = match grants.wasi_builder() {
            Ok(b) => b,
            Err(e) => {
                let err = CallError::Host {
                    agent: agent.into(),
                    message: format!("{e:#}"),
                };
                return (Err(err), empty_usage(Capture::new(agent, 0)));
            }
        };
        wasi.stdout(CaptureStream::new(capture.clone(), Source::Stdout))
            .stderr(CaptureStream::new(capture.clone(), Source::Stderr));
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            meter: MemoryMeter {
                limit: budget.memory_bytes,
                in_use: 0,
                peak: 0,
                refused: None,
            },
            capture: capture.clone(),
            progress: None,
        };
        let mut store = Store::new(self.engine, state);
        store.limiter(|s| &mut s.meter);
        store
            .set_fuel(budget.fuel)
            .expect("fuel is enabled on the engine");
        // Every epoch tick the guest yields to the executor, so a CPU-bound
        // call never holds up the task that polls it (the workflow
        // scheduler, a cancellation); past the deadline it traps.
        let start = Instant::now();
        let deadline = start + budget.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        // The tokio timeout covers what epochs cannot: a guest blocked in an
        // async host call (a WASI sleep or poll) is not running wasm, so
        // only dropping the future ends it.
        let result = tokio::time::timeout(budget.timeout, async {
            let bindings = pre.instantiate_async(&mut store).await?;
            let guest = bindings.corral_agent_guest();
            match export {
                Export::Describe => guest.call_describe(&mut store).await.map(Returned::Info),
                Export::Run(packet) => guest.call_run(&mut store, &packet).await.map(Returned::Run),
            }
        })
        .await;
        let wall = start.elapsed();

        let fuel_used = budget.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        // Drop the WASI context and table first: they hold the stdio streams.
        let HostState {
            meter, progress, ..
        } = store.into_data();
        let mut capture = Arc::try_unwrap(capture)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|shared| std::mem::take(&mut *shared.lock().unwrap()));
        capture.finish();
        let result = match result {
            Err(_elapsed) => Err(CallError::DeadlineExceeded {
                agent: agent.into(),
                limit: budget.timeout,
            }),
            Ok(Ok(returned)) => Ok(returned),
            Ok(Err(e)) => Err(self.classify(agent, e, budget, fuel_used, &meter, &capture)),
        };
        let usage = Usage {
            fuel_used,
            peak_memory: meter.peak,
            wall,
            capture,
            progress,
        };
        (result, usage)
    }

    /// Names a failure by its cause: the budget that was breached, or the trap.
    fn classify(
        &self,
        agent: &str,
        err: wasmtime::Error,
        budget: &Budget,
        fuel_used: u64,
        meter: &MemoryMeter,
        capture: &Capture,
    ) -> CallError {
        let agent = agent.to_owned();
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return CallError::FuelExhausted {
                    agent,
                    used: fuel_used,
                    limit: budget.fuel,
                };
            }
            Some(Trap::Interrupt) => {
                return CallError::DeadlineExceeded {
                    agent,
                    limit: budget.timeout,
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
        // A refused growth followed by a trap is the guest giving up on
        // memory, whatever instruction it trapped on.
        if let Some(requested) = meter.refused {
            return CallError::MemoryLimit {
                agent,
                limit: budget.memory_bytes,
                requested,
            };
        }
        let trap = match (
            err.downcast_ref::<Trap>(),
            err.downcast_ref::<wasmtime_wasi::I32Exit>(),
        ) {
            (Some(t), _) => t.to_string(),
            (None, Some(exit)) => format!("the agent called exit({})", exit.0),
            // Not the guest's doing: a host-side failure (an exhausted
            // instance pool, an instantiation error).
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
            message: capture.panic_message(),
        }
    }
}
