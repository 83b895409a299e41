//! Agent: splits a document into sections (paragraphs), delegates each to the `summarize` agent under a carved fuel budget, and merges the summaries; with `levels` above 1 it delegates halves of the document to itself first, an orchestrator of orchestrators.

use corral_sdk::delegate::{self, DelegateError};
use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Default)]
pub struct Orchestrate;

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The document; sections are separated by blank lines.
    pub text: String,
    /// Levels of orchestrators: 1 delegates sections to `summarize`; more
    /// delegates each half of the document to `orchestrate` with one less.
    #[serde(default = "one")]
    pub levels: u32,
    /// Fuel carved for each section's summarizer; unset, an equal share of
    /// what the orchestrator has left. A sub-orchestrator gets an equal share.
    #[serde(default)]
    pub section_fuel: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Serialize, JsonSchema)]
pub struct Output {
    /// The sections' summaries, in order, one per line.
    pub summary: String,
    /// Sections summarized, over every level.
    pub sections: u32,
    /// Sections whose delegate failed (its error in the log), left out of
    /// the summary.
    pub failed: u32,
}

impl Agent for Orchestrate {
    type Input = Input;
    type Output = Output;

    fn run(&self, ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let sections: Vec<&str> = input
            .text
            .split("\n\n")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if sections.is_empty() {
            return Err(AgentError::permanent("the document has no sections"));
        }
        let budget = delegate::SubBudget {
            fuel: input.section_fuel,
            ..delegate::sub_budget()
        };
        let requests: Vec<delegate::Request> = if input.levels > 1 && sections.len() > 1 {
            let (a, b) = sections.split_at(sections.len() / 2);
            [a, b]
                .iter()
                .map(|half| {
                    let sub = json!({ "text": half.join("\n\n"), "levels": input.levels - 1,
                                      "section_fuel": input.section_fuel });
                    // An equal share of what is left; the sub-orchestrator
                    // carves `section_fuel` for its own sections.
                    delegate::request("orchestrate", &sub, delegate::sub_budget())
                })
                .collect()
        } else {
            sections
                .iter()
                .map(|s| {
                    delegate::request(
                        "summarize",
                        &json!({ "text": s, "max_sentences": 1 }),
                        budget,
                    )
                })
                .collect()
        };
        let mut out = Output {
            summary: String::new(),
            sections: 0,
            failed: 0,
        };
        for answer in ctx.delegate_all(&requests) {
            match answer {
                Ok(v) if v.get("sections").is_some() => {
                    // An orchestrator one level down.
                    out.sections += v["sections"].as_u64().unwrap_or(0) as u32;
                    out.failed += v["failed"].as_u64().unwrap_or(0) as u32;
                    push(&mut out.summary, v["summary"].as_str().unwrap_or(""));
                }
                Ok(v) => {
                    out.sections += 1;
                    push(&mut out.summary, v["summary"].as_str().unwrap_or(""));
                }
                // Past the depth limit nothing below can work: say so.
                Err(e @ DelegateError::LimitReached(_)) => return Err(e.into()),
                Err(DelegateError::Failed(e)) if e.message.contains("levels deep") => {
                    return Err(AgentError::permanent(e.message));
                }
                Err(e) => {
                    out.failed += 1;
                    ctx.info(&format!("a section failed: {e:?}"));
                }
            }
        }
        Ok(out)
    }
}

fn push(summary: &mut String, line: &str) {
    if !line.is_empty() {
        if !summary.is_empty() {
            summary.push('\n');
        }
        summary.push_str(line);
    }
}

corral_sdk::export_agent!(Orchestrate);
