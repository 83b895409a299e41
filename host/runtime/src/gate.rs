//! The process-wide limit on calls running wasm at once: a call gives its place up while it waits on the host (a model's answer, an HTTP response, any `wasi:io` wait) and takes one again to go on.
//!
//! Instance slots bound how many calls are alive; this bounds how many
//! compete for the cores. Thousands of agents can wait on models at once
//! while CPU-bound ones run a few at a time.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll;

/// A call's place among the running calls.
pub(crate) struct CpuGate {
    running: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl CpuGate {
    /// A gate with no place held yet.
    pub fn new(running: Arc<Semaphore>) -> Self {
        Self {
            running,
            permit: None,
        }
    }

    /// Waits for a place; the caller bounds the wait by the call's deadline.
    pub async fn enter(&mut self) {
        if self.permit.is_none() {
            let permit = self.running.clone().acquire_owned().await;
            self.permit = Some(permit.expect("the running semaphore is never closed"));
        }
    }

    /// Gives the place up while the call waits on the host.
    pub fn leave(&mut self) {
        self.permit = None;
    }
}

/// What the gated `wasi:io/poll` works on: the table and the call's gate.
pub(crate) struct GatedPoll<'a> {
    pub table: &'a mut ResourceTable,
    pub gate: &'a mut CpuGate,
}

struct Gated;

impl HasData for Gated {
    type Data<'a> = GatedPoll<'a>;
}

/// Links `wasi:io/poll` so that a guest blocked in it holds no place.
pub(crate) fn add_poll_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> GatedPoll<'_>,
) -> wasmtime::Result<()> {
    poll::add_to_linker::<T, Gated>(linker, view)
}

impl poll::Host for GatedPoll<'_> {
    async fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.gate.leave();
        let ready = poll::Host::poll(&mut *self.table, pollables).await;
        self.gate.enter().await;
        ready
    }
}

impl poll::HostPollable for GatedPoll<'_> {
    async fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.gate.leave();
        let done = poll::HostPollable::block(&mut *self.table, pollable).await;
        self.gate.enter().await;
        done
    }

    async fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut *self.table, pollable).await
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
