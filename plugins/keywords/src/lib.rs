//! Agent: text statistics and the most frequent non-stopword keywords of a text.

use std::collections::HashMap;

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Keywords;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to analyse.
    pub text: String,
    /// How many keywords to return.
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    5
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    pub word_count: usize,
    pub sentence_count: usize,
    pub char_count: usize,
    /// Mean word length in characters, rounded to two decimals.
    pub avg_word_length: f64,
    /// Most frequent keywords, by count then alphabetically.
    pub keywords: Vec<Keyword>,
}

#[derive(Serialize, JsonSchema)]
pub struct Keyword {
    pub word: String,
    pub count: usize,
}

impl Agent for Keywords {
    type Input = Input;
    type Output = Output;

    fn run(&self, ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let words = textkit::words(&input.text);
        if words.is_empty() {
            return Err(AgentError::permanent("`text` has no words to analyse"));
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for w in words
            .iter()
            .filter(|w| w.len() > 2 && !textkit::is_stopword(w))
        {
            *counts.entry(w).or_default() += 1;
        }
        let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.truncate(input.top_k);
        let letters: usize = words.iter().map(|w| w.chars().count()).sum();
        let avg = letters as f64 / words.len() as f64;
        ctx.progress(100, "counted");
        Ok(Output {
            word_count: words.len(),
            sentence_count: textkit::sentences(&input.text).len(),
            char_count: input.text.chars().count(),
            avg_word_length: (avg * 100.0).round() / 100.0,
            keywords: ranked
                .into_iter()
                .map(|(word, count)| Keyword {
                    word: word.to_owned(),
                    count,
                })
                .collect(),
        })
    }
}

corral_sdk::export_agent!(Keywords);
