//! Agent: the lead summarizer, the first sentences of a text; cheap and reliable, a fallback for `summarize`.

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Lead;

/// The same input as `summarize`, so it can stand in for it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub text: String,
    #[serde(default = "default_max")]
    #[schemars(range(min = 1, max = 50))]
    pub max_sentences: usize,
    /// Accepted for compatibility with `summarize`; ignored.
    #[serde(default)]
    pub feedback: Option<serde_json::Value>,
}

fn default_max() -> usize {
    2
}

/// The same output as `summarize`.
#[derive(Serialize, JsonSchema)]
pub struct Output {
    pub summary: String,
    pub sentences: Vec<Sentence>,
    pub compression: f64,
}

#[derive(Serialize, JsonSchema)]
pub struct Sentence {
    pub index: usize,
    pub score: f64,
    pub text: String,
}

impl Agent for Lead {
    type Input = Input;
    type Output = Output;

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let all = textkit::sentences(&input.text);
        if all.is_empty() {
            return Err(AgentError::permanent(
                "`text` has no sentences to summarize",
            ));
        }
        let kept: Vec<Sentence> = all
            .iter()
            .take(input.max_sentences)
            .enumerate()
            .map(|(index, s)| Sentence {
                index,
                score: 1.0,
                text: s.clone(),
            })
            .collect();
        Ok(Output {
            summary: kept
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            compression: ((kept.len() as f64 / all.len() as f64) * 1000.0).round() / 1000.0,
            sentences: kept,
        })
    }
}

corral_sdk::export_agent!(Lead);
