//! The WASI an agent is linked against: the interfaces the `corral:agent` world's guests import, with every network entry point a policy denial.
//!
//! Not `wasmtime_wasi::p2::add_to_linker_async`, which links all of WASI
//! preview 2 and leaves the network closed only through the context's
//! defaults. Guests built with componentize-py import `wasi:sockets`
//! whether they use it or not, so refusing the import would refuse every
//! Python agent; instead each call that could open a socket or resolve a
//! name (`create-tcp-socket`, `create-udp-socket`, `resolve-addresses`) is
//! linked here to answer `access-denied`, whatever a `WasiCtx` allows. The
//! other socket interfaces act only on sockets, which no agent can get.
//! An import outside this list fails the load; `wasi:http` (contract
//! 0.2.0) is linked beside it by `sandbox`, through corral's own hook.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets};
use wasmtime_wasi::p2::{SocketError, SocketResult, TcpSocket, UdpSocket};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView as _};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};

/// Adds the agent's WASI surface to `l`.
pub(crate) fn add_to_linker<T: WasiView>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    // `wasi:io/poll` is linked by `sandbox` through the CPU gate.
    io::streams::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;

    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;

    // Only granted directories are preopened; without grants there are none.
    filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;

    // Stdio goes to the call's log capture; no stdin, no terminal.
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;

    let options = wasmtime_wasi::p2::bindings::LinkOptions::default();
    sockets::network::add_to_linker::<T, WasiSockets>(l, &(&options).into(), T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    tcp_create_socket::add_to_linker::<T, Denied>(l, |_| NoNetwork)?;
    udp_create_socket::add_to_linker::<T, Denied>(l, |_| NoNetwork)?;
    ip_name_lookup::add_to_linker::<T, Denied>(l, |_| NoNetwork)?;
    Ok(())
}

/// The `wasi:io` interfaces act on the resource table alone.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// The host side of every call that could reach the network.
struct NoNetwork;

struct Denied;

impl HasData for Denied {
    type Data<'a> = NoNetwork;
}

/// The socket calls' errors reach the guest through this conversion; the
/// `network` resource itself is served by wasmtime's implementation.
impl sockets::network::Host for NoNetwork {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        error.downcast()
    }

    fn network_error_code(
        &mut self,
        _: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl sockets::network::HostNetwork for NoNetwork {
    fn drop(&mut self, _: Resource<Network>) -> wasmtime::Result<()> {
        // Never called: the `network` interface is linked to wasmtime's.
        Err(wasmtime::Error::msg(
            "the network resource is not served here",
        ))
    }
}

/// The answer to every attempt: a policy denial the guest can read.
fn denied<T>() -> SocketResult<T> {
    Err(ErrorCode::AccessDenied.into())
}

impl tcp_create_socket::Host for NoNetwork {
    fn create_tcp_socket(&mut self, _: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        denied()
    }
}

impl udp_create_socket::Host for NoNetwork {
    async fn create_udp_socket(&mut self, _: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        denied()
    }
}

impl ip_name_lookup::Host for NoNetwork {
    fn resolve_addresses(
        &mut self,
        _: Resource<Network>,
        _: String,
    ) -> SocketResult<Resource<ResolveAddressStream>> {
        denied()
    }
}

/// No stream is ever created, so these are never called with a live one.
impl ip_name_lookup::HostResolveAddressStream for NoNetwork {
    fn resolve_next_address(
        &mut self,
        _: Resource<ResolveAddressStream>,
    ) -> SocketResult<Option<sockets::network::IpAddress>> {
        denied()
    }

    fn subscribe(
        &mut self,
        _: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        Err(wasmtime::Error::msg(
            "name lookup is denied: there is no stream",
        ))
    }

    fn drop(&mut self, _: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        Ok(())
    }
}
