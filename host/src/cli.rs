//! Command-line parsing, logging setup and the documented exit codes.

mod call;
mod inspect;
mod render;
mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral::{EngineConfig, FailureKind, Runtime, RuntimeConfig};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the agent returned an error of its own
  2  usage error (bad flags, unreadable input file)
  3  a budget was breached (fuel, memory, deadline, stack, output size)
  4  invalid input or output (JSON, schema, packet size or depth)
  5  a requested capability was not granted
  6  the agent trapped (a panic or abort)
  7  the file is not a usable agent (not wasm, not a component, wrong world)
  8  the host itself failed
  9  the workflow file or its params are invalid
 10  the run paused at a step for a human (`on_error: pause`)
130  the run was cancelled (Ctrl-C)

For `corral run`, a failed step exits 1 and a spent workflow fuel budget exits 3.";

/// Run AI agents as sandboxed WebAssembly components under hard budgets.
#[derive(Parser)]
#[command(name = "corral", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Directory of precompiled components [default: $XDG_CACHE_HOME/corral or ~/.cache/corral]
    #[arg(long, global = true, env = "CORRAL_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile components every time instead of using the disk cache.
    #[arg(long, global = true)]
    no_cache: bool,

    /// Wasm stack per call; deeper recursion is a stack overflow.
    #[arg(long, global = true, value_name = "SIZE", default_value = "512KiB", value_parser = parse_bytes)]
    max_stack: u64,

    /// Log filter (tracing's EnvFilter syntax); agents log under `corral::agent`.
    #[arg(
        long,
        global = true,
        env = "CORRAL_LOG",
        default_value = "warn,corral::agent=info"
    )]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Call an agent once with a JSON payload and print its output packet and receipt.
    #[command(after_help = EXIT_CODES)]
    Call(call::CallArgs),
    /// Show the world, schemas, capabilities and imports of an agent component.
    #[command(after_help = EXIT_CODES)]
    Inspect(inspect::InspectArgs),
    /// Check a workflow without running it: references, types of every edge, cycles, CEL, components; print the plan.
    #[command(after_help = EXIT_CODES)]
    Validate(validate::ValidateArgs),
    /// Validate and run a workflow, printing progress and the run report.
    #[command(after_help = EXIT_CODES)]
    Run(run::RunArgs),
}

/// Exit codes, as documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    AgentError = 1,
    Usage = 2,
    Budget = 3,
    Contract = 4,
    Policy = 5,
    Trap = 6,
    NotAnAgent = 7,
    Host = 8,
    InvalidWorkflow = 9,
    Paused = 10,
    Cancelled = 130,
}

impl From<FailureKind> for Exit {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Agent => Exit::AgentError,
            FailureKind::Budget => Exit::Budget,
            FailureKind::Contract => Exit::Contract,
            FailureKind::Policy => Exit::Policy,
            FailureKind::Trap => Exit::Trap,
            FailureKind::Host => Exit::Host,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    let exit = runtime.block_on(async {
        let config = RuntimeConfig {
            engine: EngineConfig {
                max_wasm_stack: cli.max_stack as usize,
                ..EngineConfig::default()
            },
            cache_dir: if cli.no_cache {
                None
            } else {
                cli.cache_dir.clone().or_else(corral::default_cache_dir)
            },
            ..RuntimeConfig::default()
        };
        let rt = match Runtime::new(config) {
            Ok(rt) => rt,
            Err(e) => {
                render::error(e.as_ref());
                return Exit::Host;
            }
        };
        match cli.command {
            Command::Call(args) => call::run(&rt, args).await,
            Command::Inspect(args) => inspect::run(&rt, args).await,
            Command::Validate(args) => validate::run(&rt, args).await,
            Command::Run(args) => run::run(rt, args).await,
        }
    });
    ExitCode::from(exit as u8)
}

pub use corral::workflow::units::{parse_bytes, parse_count};
