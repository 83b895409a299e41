//! `corral artifact`: list a run's artifacts and download one, streamed in chunks from the state directory.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Exit, StateArgs};

#[derive(Args)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    command: ArtifactCommand,
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// List the artifacts a run holds: digest, media type, size.
    List {
        run_id: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write one of a run's artifacts to a file (or stdout with `-o -`).
    Get {
        run_id: String,
        /// `sha256:<hex>`, as `corral artifact list` or `corral show` prints it.
        digest: String,
        /// Where to write it.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Bytes read from the store at a time.
const CHUNK: usize = 1 << 20;

pub fn run(args: ArtifactArgs, state: &StateArgs) -> Exit {
    let store = match state.open() {
        Ok(s) => s,
        Err(e) => return e,
    };
    match args.command {
        ArtifactCommand::List { run_id, json } => {
            let rows = match store.run(&run_id).and_then(|_| store.artifacts(&run_id)) {
                Ok(rows) => rows,
                Err(e) => return super::store_error(&e),
            };
            for a in rows {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "$artifact": a.digest, "media_type": a.media_type, "size": a.size })
                    );
                } else {
                    println!(
                        "{}  {:<28} {}",
                        a.digest,
                        a.media_type,
                        bytesize::ByteSize(a.size)
                    );
                }
            }
            Exit::Success
        }
        ArtifactCommand::Get {
            run_id,
            digest,
            output,
        } => {
            let held = match store
                .run(&run_id)
                .and_then(|_| store.artifact(&run_id, &digest))
            {
                Ok(a) => a,
                Err(e) => return super::store_error(&e),
            };
            let Some(a) = held else {
                eprintln!(
                    "error: run `{run_id}` holds no artifact `{digest}` (list them with `corral artifact list {run_id}`)"
                );
                return Exit::Usage;
            };
            match copy(store.as_ref(), &a.digest, a.size, &output) {
                Ok(()) => Exit::Success,
                Err(e) => {
                    eprintln!(
                        "error: cannot write artifact {digest} to {}: {e}",
                        output.display()
                    );
                    Exit::Host
                }
            }
        }
    }
}

/// Streams `size` bytes of `digest` to `output`.
fn copy(
    store: &dyn corral::store::Store,
    digest: &str,
    size: u64,
    output: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut out: Box<dyn Write> = if output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(output)?))
    };
    let mut offset = 0u64;
    while offset < size {
        let chunk = store.artifact_read(digest, offset, CHUNK)?;
        if chunk.is_empty() {
            return Err(format!("the stored artifact ends at {offset} of {size} bytes").into());
        }
        out.write_all(&chunk)?;
        offset += chunk.len() as u64;
    }
    out.flush()?;
    Ok(())
}
