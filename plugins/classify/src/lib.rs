//! Agent: a rule-based classifier that labels a text by keyword rules, for routing.

use std::collections::BTreeMap;

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Classify;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to classify.
    pub text: String,
    /// Labels and the words that vote for them. Defaults to a support-ticket
    /// triage set: `bug`, `feature`, `question`, `security`.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Label returned when no rule matches.
    #[serde(default = "default_label")]
    pub default_label: String,
}

fn default_label() -> String {
    "other".into()
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub label: String,
    /// Lowercase words; each occurrence in the text is one vote.
    #[schemars(length(min = 1))]
    pub any_of: Vec<String>,
    /// Votes are multiplied by this weight.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    /// The winning label.
    pub label: String,
    /// Winner's share of all votes, 0 to 1 (0 when nothing matched).
    pub confidence: f64,
    /// Weighted votes per label.
    pub scores: BTreeMap<String, f64>,
    /// The words that matched, in text order.
    pub matched: Vec<String>,
}

fn default_rules() -> Vec<Rule> {
    let rule = |label: &str, words: &[&str]| Rule {
        label: label.into(),
        any_of: words.iter().map(|w| (*w).into()).collect(),
        weight: 1.0,
    };
    vec![
        rule(
            "bug",
            &[
                "bug", "crash", "crashes", "error", "broken", "fails", "panic", "wrong",
            ],
        ),
        rule(
            "feature",
            &[
                "feature", "add", "support", "would", "request", "wish", "please",
            ],
        ),
        rule(
            "question",
            &["how", "why", "what", "question", "help", "docs"],
        ),
        rule(
            "security",
            &[
                "security",
                "vulnerability",
                "cve",
                "leak",
                "exploit",
                "token",
            ],
        ),
    ]
}

impl Agent for Classify {
    type Input = Input;
    type Output = Output;

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let rules = if input.rules.is_empty() {
            default_rules()
        } else {
            input.rules
        };
        let words = textkit::words(&input.text);
        let mut scores: BTreeMap<String, f64> =
            rules.iter().map(|r| (r.label.clone(), 0.0)).collect();
        let mut matched = Vec::new();
        for word in &words {
            for rule in rules.iter().filter(|r| r.any_of.iter().any(|w| w == word)) {
                *scores
                    .get_mut(&rule.label)
                    .expect("every label has a score") += rule.weight;
                if matched.last() != Some(word) {
                    matched.push(word.clone());
                }
            }
        }
        let total: f64 = scores.values().sum();
        // Ties go to the rule listed first, so routing is predictable.
        let best = rules.iter().map(|r| (&r.label, scores[&r.label])).fold(
            None::<(&String, f64)>,
            |best, (l, s)| match best {
                Some((_, bs)) if bs >= s => best,
                _ => Some((l, s)),
            },
        );
        let (label, confidence) = match best {
            Some((label, score)) if score > 0.0 => (label.clone(), score / total),
            _ => (input.default_label, 0.0),
        };
        Ok(Output {
            label,
            confidence: (confidence * 1000.0).round() / 1000.0,
            scores,
            matched,
        })
    }
}

corral_sdk::export_agent!(Classify);
