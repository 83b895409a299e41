//! The `corral` command line: call and inspect agents, validate and run workflows.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
