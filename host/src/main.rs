//! The `corral` command line: call and inspect sandboxed agents.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
