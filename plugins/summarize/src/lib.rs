//! Agent: an extractive summarizer that keeps the sentences richest in the text's frequent words.

use std::collections::HashMap;

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Summarize;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to summarize.
    pub text: String,
    /// How many sentences to keep.
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = 50))]
    pub max_sentences: usize,
}

fn default_max() -> usize {
    2
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    /// The kept sentences joined in their original order.
    pub summary: String,
    /// The kept sentences with their position and score.
    pub sentences: Vec<Scored>,
    /// Kept sentences over all sentences.
    pub compression: f64,
}

#[derive(Serialize, JsonSchema, Clone)]
pub struct Scored {
    pub index: usize,
    pub score: f64,
    pub text: String,
}

impl Agent for Summarize {
    type Input = Input;
    type Output = Output;

    fn run(&self, ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let sentences = textkit::sentences(&input.text);
        if sentences.is_empty() {
            return Err(AgentError::permanent(
                "`text` has no sentences to summarize",
            ));
        }
        let mut freq: HashMap<String, f64> = HashMap::new();
        for w in textkit::words(&input.text)
            .into_iter()
            .filter(|w| !textkit::is_stopword(w))
        {
            *freq.entry(w).or_default() += 1.0;
        }
        let top = freq.values().cloned().fold(1.0, f64::max);
        let mut scored: Vec<Scored> = sentences
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let words = textkit::words(s);
                let sum: f64 = words
                    .iter()
                    .filter_map(|w| freq.get(w))
                    .map(|f| f / top)
                    .sum();
                // Normalise by length so long sentences do not win by size alone.
                let score = sum / (words.len().max(1) as f64).sqrt();
                Scored {
                    index,
                    score: (score * 1000.0).round() / 1000.0,
                    text: s.clone(),
                }
            })
            .collect();
        ctx.progress(50, "scored sentences");
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        scored.truncate(input.max_sentences);
        scored.sort_by_key(|s| s.index);
        let summary = scored
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Output {
            summary,
            compression: ((scored.len() as f64 / sentences.len() as f64) * 1000.0).round() / 1000.0,
            sentences: scored,
        })
    }
}

corral_sdk::export_agent!(Summarize);
