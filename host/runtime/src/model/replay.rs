//! Answers from a run's journal: each request identical to a recorded one (same alias, same canonical request) gets the answer recorded for it, in order, so a recorded step runs again without the provider.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{ModelCallRecord, ModelRequest, ModelResponse};

/// `sha256:` of `alias` and the canonical form of `req`: equal for equal
/// requests whatever the order of keys in their JSON Schemas.
pub fn request_digest(alias: &str, req: &ModelRequest) -> String {
    let value = serde_json::json!({ "alias": alias, "request": req });
    crate::digest::digest(&crate::digest::canonical_json(&value))
}

/// A recorded answer and the provider model that gave it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub model: String,
    pub response: ModelResponse,
}

/// The recorded answers, by request digest, each used once.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    answers: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Recorded calls whose answer the journal did not keep.
    unkept: usize,
}

impl Recorded {
    pub fn new(records: impl IntoIterator<Item = ModelCallRecord>) -> Self {
        let mut answers: HashMap<String, VecDeque<Answer>> = HashMap::new();
        let mut unkept = 0;
        for r in records {
            if r.request.is_empty() || !r.outcome.answered() {
                continue;
            }
            match r.response {
                Some(response) => answers.entry(r.request).or_default().push_back(Answer {
                    model: r.model,
                    response,
                }),
                None => unkept += 1,
            }
        }
        Self {
            answers: Mutex::new(answers),
            unkept,
        }
    }

    /// The next answer recorded for `digest`, if any is left.
    pub fn take(&self, digest: &str) -> Option<Answer> {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.get_mut(digest)?.pop_front()
    }

    /// Recorded answers in all, still unused.
    pub fn left(&self) -> usize {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.values().map(VecDeque::len).sum()
    }

    /// Why a request found no answer, for the error.
    pub fn why_missing(&self) -> String {
        let mut why = "the run's journal has no unused answer to this exact request (same alias, messages, tools, schema and settings); a replay answers only the requests the run made before".to_owned();
        if self.unkept > 0 {
            why.push_str(&format!(
                "; {} recorded answers were too large to keep",
                self.unkept
            ));
        }
        why
    }
}
