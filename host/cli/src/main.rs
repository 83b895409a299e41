//! The `corral` command line: call and inspect agents, validate and run workflows.

mod cli;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    cli::main()
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`corral inspect
/// x.wasm | head`) would panic; like other Unix tools, corral ends quietly
/// instead.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
