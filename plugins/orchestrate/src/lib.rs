//! Agent: splits a document (text, or an artifact read a chunk at a time) into sections, delegates each to the `summarize` agent under a carved fuel budget, and merges the summaries; with `levels` above 1 it delegates halves of the document to itself first, an orchestrator of orchestrators.

use std::io::{BufRead, BufReader, Cursor, Read, Write};

use corral_sdk::artifacts::{self, Artifact};
use corral_sdk::delegate::{self, DelegateError};
use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Orchestrate;

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The document as text; paragraphs are separated by blank lines. Give
    /// this or `document`.
    #[serde(default)]
    pub text: Option<String>,
    /// The document as a stored artifact of text, however large: it is read
    /// a megabyte at a time and summarized a batch of sections at a time.
    #[serde(default)]
    pub document: Option<Artifact>,
    /// Levels of orchestrators: 1 delegates sections to `summarize`; more
    /// delegates each half of the document to `orchestrate` with one less.
    #[serde(default = "one")]
    pub levels: u32,
    /// Fuel carved for each section's summarizer; unset, an equal share of
    /// what the orchestrator has left. A sub-orchestrator gets an equal share.
    #[serde(default)]
    pub section_fuel: Option<u64>,
    /// Paragraphs are merged into sections of up to this many bytes (one
    /// summary each); unset, each paragraph is a section.
    #[serde(default)]
    #[schemars(range(max = 262144))]
    pub section_bytes: Option<u32>,
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

/// Sections summarized at once: bounds what the orchestrator holds.
const BATCH: usize = 16;
/// A paragraph (or a line) longer than this is cut: a section must fit the
/// summarizer's packet with room to spare.
const MAX_PARAGRAPH: usize = 256 << 10;

impl Agent for Orchestrate {
    type Input = Input;
    type Output = Output;

    fn run(&self, ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let mut out = Output {
            summary: String::new(),
            sections: 0,
            failed: 0,
        };
        if input.levels > 1 {
            let halves = halves(&input)?;
            if halves.len() == 2 {
                let requests: Vec<delegate::Request> = halves
                    .iter()
                    .map(|half| {
                        let mut sub = json!({ "levels": input.levels - 1,
                                              "section_fuel": input.section_fuel,
                                              "section_bytes": input.section_bytes });
                        sub[half.0] = half.1.clone();
                        // An equal share of what is left; the sub-orchestrator
                        // carves `section_fuel` for its own sections.
                        delegate::request("orchestrate", &sub, delegate::sub_budget())
                    })
                    .collect();
                merge(ctx, &mut out, &requests)?;
                return Ok(out);
            }
        }
        let budget = delegate::SubBudget {
            fuel: input.section_fuel,
            ..delegate::sub_budget()
        };
        let mut sections = Sections::new(open(&input)?, input.section_bytes);
        loop {
            let mut requests = Vec::with_capacity(BATCH);
            while requests.len() < BATCH {
                let Some(s) = sections.next_section()? else {
                    break;
                };
                let sub = json!({ "text": s, "max_sentences": 1 });
                requests.push(delegate::request("summarize", &sub, budget));
            }
            if requests.is_empty() {
                break;
            }
            merge(ctx, &mut out, &requests)?;
        }
        if out.sections + out.failed == 0 {
            return Err(AgentError::permanent("the document has no sections"));
        }
        Ok(out)
    }
}

/// The document, to read from the start.
fn open(input: &Input) -> Result<Box<dyn BufRead + '_>, AgentError> {
    match (&input.text, &input.document) {
        (Some(text), None) => Ok(Box::new(Cursor::new(text.as_bytes()))),
        (None, Some(doc)) => Ok(Box::new(BufReader::with_capacity(
            artifacts::CHUNK,
            artifacts::open(doc),
        ))),
        _ => Err(AgentError::permanent(
            "give the document as `text` or as `document` (an artifact), not both or neither",
        )),
    }
}

/// The two halves of the document by sections, as the field and value a
/// sub-orchestrator takes: text for text, a new artifact for an artifact
/// (read twice, so that no more than a section is held). Fewer than two
/// sections give fewer than two halves.
fn halves(input: &Input) -> Result<Vec<(&'static str, Value)>, AgentError> {
    let mut count = 0usize;
    let mut sections = Sections::new(open(input)?, input.section_bytes);
    while sections.next_section()?.is_some() {
        count += 1;
    }
    if count < 2 {
        return Ok(Vec::new());
    }
    let mut sections = Sections::new(open(input)?, input.section_bytes);
    let mut halves = Vec::with_capacity(2);
    for n in [count / 2, count - count / 2] {
        if let Some(doc) = &input.document {
            let mut w = artifacts::Writer::new(&doc.media_type);
            for i in 0..n {
                let s = sections.next_section()?.expect("counted");
                let sep = if i == 0 { "" } else { "\n\n" };
                write!(w, "{sep}{s}").map_err(|e| AgentError::transient(e.to_string()))?;
            }
            halves.push((
                "document",
                serde_json::to_value(w.finish()?).expect("a reference"),
            ));
        } else {
            let mut text = Vec::with_capacity(n);
            for _ in 0..n {
                text.push(sections.next_section()?.expect("counted"));
            }
            halves.push(("text", Value::String(text.join("\n\n"))));
        }
    }
    Ok(halves)
}

/// Delegates `requests` at once and adds their summaries to `out`, in order.
fn merge(
    ctx: &mut Context,
    out: &mut Output,
    requests: &[delegate::Request],
) -> Result<(), AgentError> {
    for answer in ctx.delegate_all(requests) {
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
    Ok(())
}

fn push(summary: &mut String, line: &str) {
    if !line.is_empty() {
        if !summary.is_empty() {
            summary.push('\n');
        }
        summary.push_str(line);
    }
}

/// The sections of a document, read as they are needed: paragraphs (split
/// at blank lines) merged up to `section_bytes`.
struct Sections<R> {
    reader: R,
    section_bytes: usize,
    /// A paragraph read past the end of the last section.
    pending: Option<String>,
}

impl<R: BufRead> Sections<R> {
    fn new(reader: R, section_bytes: Option<u32>) -> Self {
        Sections {
            reader,
            section_bytes: section_bytes.unwrap_or(0) as usize,
            pending: None,
        }
    }

    fn next_section(&mut self) -> Result<Option<String>, AgentError> {
        let Some(mut section) = self
            .pending
            .take()
            .map_or_else(|| self.paragraph(), |p| Ok(Some(p)))?
        else {
            return Ok(None);
        };
        while section.len() < self.section_bytes {
            match self.paragraph()? {
                Some(p) if section.len() + 2 + p.len() <= self.section_bytes => {
                    section.push_str("\n\n");
                    section.push_str(&p);
                }
                Some(p) => {
                    self.pending = Some(p);
                    break;
                }
                None => break,
            }
        }
        Ok(Some(section))
    }

    /// The next paragraph, its lines trimmed at the end; `None` at the end.
    fn paragraph(&mut self) -> Result<Option<String>, AgentError> {
        let mut para = String::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_PARAGRAPH as u64)
                .read_until(b'\n', &mut line)
                .map_err(|e| AgentError::transient(format!("reading the document: {e}")))?;
            if n == 0 {
                return Ok((!para.is_empty()).then_some(para));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.trim().is_empty() {
                if !para.is_empty() {
                    return Ok(Some(para));
                }
                continue;
            }
            if !para.is_empty() {
                para.push('\n');
            }
            para.push_str(if para.is_empty() {
                text.trim_start()
            } else {
                text
            });
            if para.len() >= MAX_PARAGRAPH {
                return Ok(Some(para));
            }
        }
    }
}

corral_sdk::export_agent!(Orchestrate);
