//! Command-line parsing, logging setup and the documented exit codes.

mod approve;
mod artifact;
mod call;
mod history;
mod inspect;
mod new;
mod remote;
mod render;
mod replay;
mod run;
mod serve;
mod validate;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use corral::store::{Durability, PgStore, SqliteStore, Store, StoreError};
use corral::{Budget, EngineConfig, FailureKind, Runtime, RuntimeConfig};

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
 10  the run waits for a human (an approval step, or `on_error: pause`)
 11  the run is driven by another process right now
130  the run was cancelled (Ctrl-C, or `corral cancel`)

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

    /// A directory, besides a workflow file's own, under which workflows may
    /// name components and granted directories. Repeatable; the variable
    /// takes a `:`-separated list.
    #[arg(
        long = "allow-path",
        global = true,
        env = "CORRAL_ALLOW_PATHS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    allow_paths: Vec<PathBuf>,

    /// Wasm stack per call; deeper recursion is a stack overflow.
    #[arg(long, global = true, value_name = "SIZE", default_value = "512KiB", value_parser = parse_bytes)]
    max_stack: u64,

    /// Fuel `describe` may spend when an agent is loaded (the load budget).
    #[arg(long, global = true, value_name = "N", default_value = "1G", value_parser = parse_count)]
    load_fuel: u64,

    /// Memory `describe` may use when an agent is loaded (the load budget).
    #[arg(long, global = true, value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    load_memory: u64,

    /// Wall-clock time `describe` may take when an agent is loaded (the load budget).
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    load_timeout: std::time::Duration,

    /// Where runs are journaled (a SQLite database inside).
    #[arg(
        long,
        global = true,
        env = "CORRAL_STATE_DIR",
        value_name = "DIR",
        default_value = corral::store::DEFAULT_STATE_DIR
    )]
    state_dir: PathBuf,

    /// Journal runs in this PostgreSQL database instead of the state
    /// directory (`postgres://USER@HOST:PORT/DB`): every `corral` process
    /// that names it shares its runs, leases, quotas and artifacts.
    #[arg(long, global = true, env = "CORRAL_DATABASE_URL", value_name = "URL")]
    db: Option<String>,

    /// How hard each journal commit pushes to disk: `normal` survives the
    /// process being killed, `full` also survives power loss (slower).
    #[arg(long, global = true, env = "CORRAL_DURABILITY", value_enum, default_value_t = DurabilityArg::Normal)]
    durability: DurabilityArg,

    /// The model gateway's config (TOML: `[providers.NAME]` with `kind =
    /// "openai"` or `"scripted"`, and `[models.ALIAS]` with `provider` and
    /// `model`); agents of contract 0.2.0 reach the aliases they are granted.
    #[arg(long, global = true, env = "CORRAL_MODELS", value_name = "FILE")]
    models: Option<PathBuf>,

    /// Speak to a `corral serve` at this URL instead of the local state
    /// directory: `run`, `runs`, `show`, `events`, `approve`, `reject` and
    /// `cancel` then act on the server's runs. Example: http://127.0.0.1:8700
    #[arg(long, global = true, env = "CORRAL_SERVER", value_name = "URL")]
    server: Option<String>,

    /// The API token for `--server` (prefer the variable: a flag shows in
    /// the process list and the shell history).
    #[arg(
        long,
        global = true,
        env = "CORRAL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

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
pub(crate) enum Command {
    /// Call an agent once with a JSON payload and print its output packet and receipt.
    #[command(after_help = EXIT_CODES)]
    Call(call::CallArgs),
    /// Show the world, schemas, capabilities and imports of an agent component.
    #[command(after_help = EXIT_CODES)]
    Inspect(inspect::InspectArgs),
    /// Check a workflow without running it: references, types of every edge, cycles, CEL, components; print the plan.
    #[command(after_help = EXIT_CODES)]
    Validate(validate::ValidateArgs),
    /// Validate and run a workflow, journaled in the state directory, printing progress and the run report.
    #[command(after_help = EXIT_CODES)]
    Run(run::RunArgs),
    /// Continue a run that was interrupted, paused, waiting or cancelled; committed steps are not run again.
    #[command(after_help = EXIT_CODES)]
    Resume(run::ResumeArgs),
    /// Run a step of a stored run again (a failed one, typically), then what depends on it.
    #[command(after_help = EXIT_CODES)]
    Retry(run::RetryArgs),
    /// List the runs in the state directory with their status.
    Runs(history::RunsArgs),
    /// Show a run: each step's status, attempts, fuel, memory, time and errors, and waiting approvals.
    Show(history::ShowArgs),
    /// Print a run's journal as JSON lines.
    Events(history::EventsArgs),
    /// Answer a waiting approval (or a paused step) with an input that matches its schema.
    Approve(approve::ApproveArgs),
    /// Reject a waiting approval (or a paused step): the step fails.
    Reject(approve::RejectArgs),
    /// Cancel a run: its driver stops it, or it is marked cancelled if nothing drives it.
    #[command(after_help = EXIT_CODES)]
    Cancel(history::CancelArgs),
    /// Delete finished runs older than a duration, and the blobs and cache entries nothing uses any more.
    Gc(history::GcArgs),
    /// List a run's artifacts, or download one (`corral artifact get RUN DIGEST -o FILE`).
    Artifact(artifact::ArtifactArgs),
    /// Scaffold a new agent project in Rust, Python or JavaScript.
    New(new::NewArgs),
    /// Serve the multi-tenant HTTP API (`/v1`): tenants, their quotas and runs are set in `--config`.
    Serve(serve::ServeArgs),
    /// Drive the service's runs with no HTTP API: claims runs from the database servers share (`--db`).
    Worker(serve::WorkerArgs),
    /// Print a new API token and the hash of it that corral.toml keeps, or (`--webhook-secret`) a webhook signing secret.
    Token(serve::TokenArgs),
}

impl Command {
    /// The subcommand as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Call(_) => "call",
            Command::Inspect(_) => "inspect",
            Command::Validate(_) => "validate",
            Command::Run(_) => "run",
            Command::Resume(_) => "resume",
            Command::Retry(_) => "retry",
            Command::Runs(_) => "runs",
            Command::Show(_) => "show",
            Command::Events(_) => "events",
            Command::Approve(_) => "approve",
            Command::Reject(_) => "reject",
            Command::Cancel(_) => "cancel",
            Command::Gc(_) => "gc",
            Command::Artifact(_) => "artifact",
            Command::New(_) => "new",
            Command::Serve(_) => "serve",
            Command::Worker(_) => "worker",
            Command::Token(_) => "token",
        }
    }
}

/// `--durability`: the store's [`Durability`] as the command line spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    /// WAL + `synchronous=NORMAL`: survives the process being killed.
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; survives power loss.
    Full,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::Normal => Durability::Normal,
            DurabilityArg::Full => Durability::Full,
        }
    }
}

/// Where the state store is, and how durable its commits are.
pub struct StateArgs {
    pub dir: PathBuf,
    /// A PostgreSQL database, which takes the place of `dir`.
    pub db: Option<String>,
    pub durability: Durability,
}

impl StateArgs {
    pub fn open(&self) -> Result<Arc<dyn Store>, Exit> {
        self.open_in(&self.dir)
    }

    /// The store: the database if one is named, else SQLite in `dir`.
    pub fn open_in(&self, dir: &std::path::Path) -> Result<Arc<dyn Store>, Exit> {
        let store: Result<Arc<dyn Store>, StoreError> = match &self.db {
            Some(url) => PgStore::connect(url).map(|s| Arc::new(s) as Arc<dyn Store>),
            None => SqliteStore::open(dir, self.durability).map(|s| Arc::new(s) as Arc<dyn Store>),
        };
        store.map_err(|e| store_error(&e))
    }
}

/// Prints a store error and picks its exit code.
pub fn store_error(e: &StoreError) -> Exit {
    eprintln!("error: {e}");
    match e {
        StoreError::UnknownRun(_)
        | StoreError::RunExists(_)
        | StoreError::SameRequest { .. }
        | StoreError::Step { .. } => Exit::Usage,
        StoreError::TooManyRuns { .. } => Exit::Budget,
        StoreError::Leased { .. } | StoreError::LeaseLost(_) => Exit::Leased,
        StoreError::Busy { .. } | StoreError::Corrupt { .. } | StoreError::Backend { .. } => {
            Exit::Host
        }
    }
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
    Leased = 11,
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
    // Colour only for a person at a terminal: never in a file or in CI.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();

    if let Some(url) = &cli.server {
        let exit = match remote::Remote::new(url, cli.token.clone()) {
            Ok(r) => remote::dispatch(&r, cli.command),
            Err(exit) => exit,
        };
        return ExitCode::from(exit as u8);
    }
    let state = StateArgs {
        dir: cli.state_dir.clone(),
        db: cli.db.clone(),
        durability: cli.durability.into(),
    };
    // History commands need no wasm engine.
    let exit = match cli.command {
        Command::Runs(args) => history::runs(args, &state),
        Command::Show(args) => history::show(args, &state),
        Command::Approve(args) => approve::approve(args, &state),
        Command::Reject(args) => approve::reject(args, &state),
        Command::Gc(args) => history::gc(args, &state),
        Command::Artifact(args) => artifact::run(args, &state),
        Command::New(args) => new::run(args),
        Command::Token(args) => serve::token(args),
        command => {
            let load_budget = Budget {
                fuel: cli.load_fuel,
                memory_bytes: cli.load_memory,
                timeout: cli.load_timeout,
                ..Budget::default()
            };
            let engine = EngineConfig {
                max_wasm_stack: cli.max_stack as usize,
                ..EngineConfig::default()
            };
            if load_budget.memory_bytes > engine.max_memory_bytes {
                eprintln!(
                    "error: --load-memory {} is over the engine's maximum of {}",
                    bytesize::ByteSize(load_budget.memory_bytes),
                    bytesize::ByteSize(engine.max_memory_bytes)
                );
                return ExitCode::from(Exit::Usage as u8);
            }
            let models = match &command {
                Command::Retry(a) if a.replay_models => match replay::gateway(a.run_id(), &state) {
                    Ok(g) => Some(g),
                    Err(exit) => return ExitCode::from(exit as u8),
                },
                _ => match cli.models.as_deref().map(load_models).transpose() {
                    Ok(m) => m,
                    Err(errors) => {
                        for e in errors {
                            eprintln!("error: {e}");
                        }
                        return ExitCode::from(Exit::Usage as u8);
                    }
                },
            };
            let config = RuntimeConfig {
                models,
                engine,
                cache_dir: if cli.no_cache {
                    None
                } else {
                    cli.cache_dir.or_else(corral::default_cache_dir)
                },
                describe_budget: load_budget,
                allowed_paths: cli.allow_paths,
                ..RuntimeConfig::default()
            };
            return run_engine(config, command, &state);
        }
    };
    ExitCode::from(exit as u8)
}

fn run_engine(config: RuntimeConfig, command: Command, state: &StateArgs) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    let exit = runtime.block_on(async {
        let rt = match Runtime::new(config) {
            Ok(rt) => rt,
            Err(e) => {
                render::error(e.as_ref());
                return Exit::Host;
            }
        };
        match command {
            Command::Call(args) => call::run(&rt, args).await,
            Command::Inspect(args) => inspect::run(&rt, args).await,
            Command::Validate(args) => validate::run(&rt, args).await,
            Command::Run(args) => run::run(rt, args, state).await,
            Command::Resume(args) => run::resume(rt, args, state).await,
            Command::Retry(args) => run::retry(rt, args, state).await,
            Command::Events(args) => history::events(args, state).await,
            Command::Cancel(args) => history::cancel(rt, args, state).await,
            Command::Serve(args) => serve::run(rt, args, state).await,
            Command::Worker(args) => serve::worker(rt, args, state).await,
            Command::Runs(_)
            | Command::Show(_)
            | Command::Approve(_)
            | Command::Reject(_)
            | Command::Gc(_)
            | Command::Artifact(_)
            | Command::New(_)
            | Command::Token(_) => unreachable!("handled without the engine"),
        }
    });
    ExitCode::from(exit as u8)
}

pub use corral::workflow::units::{parse_bytes, parse_count};

/// Reads `--models`: the providers and aliases of the model gateway.
fn load_models(path: &std::path::Path) -> Result<Arc<corral::model::Gateway>, Vec<String>> {
    let at = |e: String| vec![format!("{}: {e}", path.display())];
    let config = corral::model::ModelConfig::load(path).map_err(at)?;
    corral::model::Gateway::new(&config)
        .map(Arc::new)
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect()
        })
}
