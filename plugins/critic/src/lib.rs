//! Agent: a critic that scores a draft against writing rules and lists each failure.

use corral_sdk::{Agent, AgentError, Context, JsonSchema};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Critic;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The draft to judge.
    pub draft: String,
    #[serde(default)]
    pub rules: Rules,
}

/// Rules a draft must meet. Every rule that fails costs an equal share of the score.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub min_words: usize,
    pub max_words: usize,
    /// Longest allowed sentence, in words.
    pub max_sentence_words: usize,
    /// Terms the draft must mention (case-insensitive).
    pub required_terms: Vec<String>,
    /// Terms the draft must not mention (case-insensitive).
    pub forbidden_terms: Vec<String>,
    /// Score at or above which the draft passes.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub pass_score: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_words: 5,
            max_words: 200,
            max_sentence_words: 35,
            required_terms: Vec::new(),
            forbidden_terms: Vec::new(),
            pass_score: 0.8,
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub struct Output {
    /// Share of checks passed, 0 to 1.
    pub score: f64,
    pub passed: bool,
    /// One entry per failed check.
    pub issues: Vec<Issue>,
    pub checks: usize,
}

#[derive(Serialize, JsonSchema)]
pub struct Issue {
    pub rule: String,
    pub message: String,
    /// The term a `required_terms` or `forbidden_terms` issue is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

impl Agent for Critic {
    type Input = Input;
    type Output = Output;

    fn run(&self, _ctx: &mut Context, input: Input) -> Result<Output, AgentError> {
        let r = &input.rules;
        if r.min_words > r.max_words {
            return Err(AgentError::permanent(format!(
                "rules.min_words ({}) exceeds rules.max_words ({})",
                r.min_words, r.max_words
            )));
        }
        let words = textkit::words(&input.draft);
        let mut issues = Vec::new();
        let mut checks = 0;
        let mut check = |ok: bool, rule: &str, message: String, term: Option<&String>| {
            checks += 1;
            if !ok {
                issues.push(Issue {
                    rule: rule.into(),
                    message,
                    term: term.cloned(),
                });
            }
        };
        let n = words.len();
        check(
            n >= r.min_words,
            "min_words",
            format!("{n} words, need at least {}", r.min_words),
            None,
        );
        check(
            n <= r.max_words,
            "max_words",
            format!("{n} words, allowed at most {}", r.max_words),
            None,
        );
        let longest = textkit::sentences(&input.draft)
            .iter()
            .enumerate()
            .map(|(i, s)| (i + 1, textkit::words(s).len()))
            .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)));
        if let Some((i, len)) = longest {
            check(
                len <= r.max_sentence_words,
                "max_sentence_words",
                format!(
                    "sentence {i} has {len} words, allowed at most {}",
                    r.max_sentence_words
                ),
                None,
            );
        }
        let lower = input.draft.to_lowercase();
        for term in &r.required_terms {
            check(
                lower.contains(&term.to_lowercase()),
                "required_terms",
                format!("missing `{term}`"),
                Some(term),
            );
        }
        for term in &r.forbidden_terms {
            check(
                !lower.contains(&term.to_lowercase()),
                "forbidden_terms",
                format!("mentions `{term}`"),
                Some(term),
            );
        }
        let failed = issues.len();
        let checks = checks.max(1);
        let score =
            ((checks - failed.min(checks)) as f64 / checks as f64 * 1000.0).round() / 1000.0;
        Ok(Output {
            score,
            passed: score >= r.pass_score,
            issues,
            checks,
        })
    }
}

corral_sdk::export_agent!(Critic);
