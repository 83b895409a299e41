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
    /// The critic's verdict on the previous summary, in a quality-gate loop.
    #[serde(default)]
    pub feedback: Option<Feedback>,
}

fn default_max() -> usize {
    2
}

/// A critic's verdict fed back into the next attempt. Only `issues` is read:
/// a `required_terms` issue naming a `term` makes the summary keep the
/// best sentence that mentions it.
#[derive(Deserialize, JsonSchema, Default)]
pub struct Feedback {
    #[serde(default)]
    pub issues: Vec<FeedbackIssue>,
}

#[derive(Deserialize, JsonSchema)]
pub struct FeedbackIssue {
    pub rule: String,
    #[serde(default)]
    pub term: Option<String>,
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
        let required: Vec<String> = input
            .feedback
            .iter()
            .flat_map(|f| &f.issues)
            .filter(|i| i.rule == "required_terms")
            .filter_map(|i| i.term.as_ref().map(|t| t.to_lowercase()))
            .collect();
        // The best sentences, plus the best sentence for each term the critic
        // said was missing.
        let mut kept: Vec<Scored> = scored.iter().take(input.max_sentences).cloned().collect();
        for term in &required {
            let has = |k: &Scored| k.text.to_lowercase().contains(term.as_str());
            if kept.iter().any(has) {
                continue;
            }
            if let Some(s) = scored.iter().find(|s| has(s)) {
                kept.push(s.clone());
            }
        }
        let mut scored = kept;
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
