//! `corral inspect`: the world, schemas, capabilities and imports of a component.

use std::path::PathBuf;

use clap::Args;
use corral::Runtime;
use corral::inspect::Inspection;

use super::{Exit, render};

#[derive(Args)]
pub struct InspectArgs {
    /// The agent component (.wasm).
    agent: PathBuf,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(rt: &Runtime, args: InspectArgs) -> Exit {
    let agent = match rt.load(&args.agent).await {
        Ok(agent) => agent,
        Err(e) => return render::load_error(&e, args.json),
    };
    let i = Inspection::of(&agent, rt.engine());
    if args.json {
        println!("{}", serde_json::to_string(&i).unwrap());
        return Exit::Success;
    }
    println!("{} {}  ({})", i.name, i.version, i.description);
    println!("  world        {}@{}", i.world, i.world_version);
    println!("  file         {}", i.path);
    println!("  digest       {}", i.digest);
    if i.capabilities.is_empty() {
        println!("  capabilities none requested");
    } else {
        for c in &i.capabilities {
            println!("  capability   {}", serde_json::to_string(c).unwrap());
        }
    }
    println!("  imports      {}", i.imports.join("\n               "));
    println!("  exports      {}", i.exports.join(", "));
    println!(
        "  input schema\n{}",
        indent(&serde_json::to_string_pretty(&i.input_schema).unwrap())
    );
    println!(
        "  output schema\n{}",
        indent(&serde_json::to_string_pretty(&i.output_schema).unwrap())
    );
    Exit::Success
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
