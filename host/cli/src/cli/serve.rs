//! `corral serve`: the multi-tenant HTTP service; `corral worker`: a process that drives the service's runs from a shared store; `corral token`: API tokens, the hashes `corral.toml` keeps of them, and webhook secrets.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use corral::Runtime;
use corral::store::Store;
use corral_server::tenant::TokenHash;
use corral_server::{Drive, Server, Worker, config};

use super::Exit;

#[derive(Args)]
pub struct ServeArgs {
    /// The server's config file: settings, tenants, their tokens (hashed), secrets and quotas.
    #[arg(long, env = "CORRAL_CONFIG", default_value = "corral.toml")]
    config: PathBuf,

    /// Address to listen on [default: `server.listen` in the config, else 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Record runs and approval answers only, and leave driving them to
    /// `corral worker` processes on the same database (`--db`).
    #[arg(long, conflicts_with = "max_runs")]
    submit_only: bool,

    /// Take runs over from the store (left by a stopped process, or queued
    /// for workers) only while this server drives fewer than N runs, its own
    /// included; runs submitted to it are driven here whatever this says.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_runs: u32,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The config file the servers use: tenants, their secrets and quotas
    /// (the worker listens on nothing; `server.listen` is ignored).
    #[arg(long, env = "CORRAL_CONFIG", default_value = "corral.toml")]
    config: PathBuf,

    /// The most runs this worker drives at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_runs: u32,
}

/// The config and the store it names (`--db` wins over its state directory).
fn open(
    path: &std::path::Path,
    state: &super::StateArgs,
) -> Result<(config::ServerConfig, Arc<dyn Store>), Exit> {
    let config = config::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("error: {e}");
        }
        Exit::Usage
    })?;
    let store = state.open_in(&config.state_dir)?;
    Ok((config, store))
}

pub async fn worker(rt: Runtime, args: WorkerArgs, state: &super::StateArgs) -> Exit {
    let (config, store) = match open(&args.config, state) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let worker = match Worker::new(config, rt, store, args.max_runs as usize) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    // A script (and the tests) wait for this line.
    println!(
        "corral worker: claiming runs (at most {} at once)",
        args.max_runs
    );
    let _ = std::io::stdout().flush();
    worker.run(shutdown_signal("worker")).await;
    Exit::Success
}

pub async fn run(rt: Runtime, args: ServeArgs, state: &super::StateArgs) -> Exit {
    let (config, store) = match open(&args.config, state) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8700)));
    let drive = if args.submit_only {
        Drive::Workers
    } else {
        Drive::Here {
            max_runs: args.max_runs as usize,
        }
    };
    let server = match Server::bind(config, rt, store, listen, drive).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let addr = server.local_addr().unwrap_or(listen);
    // A script (and the tests) read the bound port from this line.
    println!("corral serve: listening on http://{addr}");
    let _ = std::io::stdout().flush();
    match server.run(shutdown_signal("serve")).await {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Host
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal(who: &'static str) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "corral {who}: shutting down: no new requests or claims; running runs get the grace period"
    );
}

#[derive(Args)]
pub struct TokenArgs {
    /// Read a token from standard input and print only its hash.
    #[arg(long, conflicts_with = "webhook_secret")]
    hash: bool,

    /// Print a new webhook signing secret (`whsec_…`) for a tenant's `[[tenant.webhooks]]`
    /// entry; give the same secret to the receiver, which checks signatures with it.
    #[arg(long)]
    webhook_secret: bool,
}

/// Prints a new random token and the hash to put in `corral.toml`.
pub fn token(args: TokenArgs) -> Exit {
    if args.webhook_secret {
        return match random_bytes() {
            Ok(key) => {
                println!("{}", corral_server::webhooks::Secret::encode(&key));
                Exit::Success
            }
            Err(e) => {
                eprintln!("error: cannot read random bytes: {e}");
                Exit::Host
            }
        };
    }
    let token = if args.hash {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().take(4096).read_to_string(&mut s) {
            eprintln!("error: cannot read the token from standard input: {e}");
            return Exit::Usage;
        }
        s.trim().to_owned()
    } else {
        match random_token() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read random bytes: {e}");
                return Exit::Host;
            }
        }
    };
    let hash = TokenHash::of(&token).to_hex();
    if args.hash {
        println!("{hash}");
    } else {
        println!("token: {token}");
        println!("hash:  {hash}");
        eprintln!(
            "Give the token to the tenant; put only the hash in corral.toml, under the tenant's `tokens`."
        );
    }
    Exit::Success
}

/// 32 bytes from the operating system's generator, as `crl_<hex>`.
fn random_token() -> std::io::Result<String> {
    Ok(format!("crl_{}", hex_lower(&random_bytes()?)))
}

/// 32 bytes from the operating system's generator.
fn random_bytes() -> std::io::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
