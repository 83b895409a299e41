//! `corral inspect`: the world, schemas, capabilities and imports of a component.

use std::path::PathBuf;

use clap::Args;
use corral::Runtime;
use corral::display::guest;
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
    // Everything the agent declared is guest text: escaped and bounded.
    println!(
        "{} {}  ({})",
        guest(&i.name),
        guest(&i.version),
        guest(&i.description)
    );
    println!("  world        {}@{}", i.world, i.world_version);
    println!("  file         {}", i.path);
    println!("  digest       {}", i.digest);
    if i.capabilities.is_empty() {
        println!("  capabilities none requested (the agent gets no grants)");
    } else {
        for c in &i.capabilities {
            println!(
                "  capability   {}",
                guest(&serde_json::to_string(c).unwrap())
            );
        }
        println!("               (only these are given, whatever else is granted)");
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
